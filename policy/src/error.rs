//! The one error type of mesh-policy.
//!
//! Every message names where the problem is so an operator can fix it without
//! reading code: the file (or `<snapshot>` for policy that arrived over the
//! wire), the object as `<kind> <namespace>/<name>`, and the field path.

use std::fmt;

/// What went wrong while loading, compiling or normalizing policy input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file is not YAML (or not JSON), so no object in it could be read.
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },

    /// A document could not be identified as an object (no `kind`, no name...).
    #[error("{file}: document {document}: {message}")]
    Document {
        file: String,
        /// 1-based position of the document in the file, as an editor counts them.
        document: usize,
        message: String,
    },

    /// The object as a whole is refused (unknown apiVersion, CUSTOM action,
    /// duplicate name...).
    #[error("{file}: {object}: {message}")]
    Object {
        file: String,
        object: String,
        message: String,
    },

    /// One field of an object holds a value Palisade cannot use.
    #[error("{file}: {object}: {field}: {message}")]
    Field {
        file: String,
        object: String,
        field: String,
        message: String,
    },

    /// A policy file or directory could not be read.
    #[error("{path}: {message}")]
    Io { path: String, message: String },

    /// An HTTP request path that cannot be matched safely; the request is refused.
    #[error("request path {path:?} refused: {reason}")]
    Path { path: String, reason: &'static str },

    /// Several of the above: a load reports every problem it found, not just the first.
    #[error("{}", Many(.0))]
    Many(Vec<Error>),
}

impl Error {
    /// The individual problems: one for a simple error, all of them for [`Error::Many`].
    pub fn errors(&self) -> &[Error] {
        match self {
            Error::Many(errors) => errors,
            single => std::slice::from_ref(single),
        }
    }

    /// Collapses a list of problems into one error (`None` when the list is empty).
    pub(crate) fn from_list(mut errors: Vec<Error>) -> Option<Error> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Error::Many(errors)),
        }
    }
}

/// Renders a list one problem per line, so a log line or a CLI shows all of them.
struct Many<'a>(&'a [Error]);

impl fmt::Display for Many<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
