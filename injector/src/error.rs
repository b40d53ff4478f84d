//! Why a pod cannot be injected: a user's annotation is wrong, or the object
//! is not what it claims to be.

/// A refusal, with a message naming the object's field or annotation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An annotation has a value Palisade cannot use.
    #[error("annotation {annotation}: {message}")]
    Annotation {
        annotation: &'static str,
        message: String,
    },
    /// The object does not parse as its kind.
    #[error("{what} does not parse: {message}")]
    Object { what: String, message: String },
    /// The pod was injected by an incompatible copy: its proxy container
    /// lacks what `uninject` needs to restore it.
    #[error("{0}")]
    Injected(String),
}
