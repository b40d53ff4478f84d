//! Checks that need no compiling: Kubernetes names, RFC 3339 instants and
//! duplicate objects. The resource model stays plain data; the loader and
//! the compiler call down into these.

use std::time::SystemTime;

use crate::Error;
use crate::resource::{ANNOTATION_EXPIRES_AT, Object};

/// An RFC 3339 instant (`palisade.dev/expires-at`).
pub(crate) fn parse_rfc3339(text: &str) -> Result<SystemTime, ()> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ())?;
    Ok(SystemTime::from(at))
}

impl Object {
    /// The instant `palisade.dev/expires-at` names (`None` when absent; a
    /// loaded object never holds an unparsable one).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.metadata()
            .annotations
            .get(ANNOTATION_EXPIRES_AT)
            .and_then(|text| parse_rfc3339(text).ok())
    }

    /// When its dry run began: `palisade.dev/dry-run-since`, else
    /// `metadata.creationTimestamp` (`None`: unknown or unparsable).
    pub fn dry_run_since(&self) -> Option<SystemTime> {
        let meta = self.metadata();
        meta.annotations
            .get(crate::resource::ANNOTATION_DRY_RUN_SINCE)
            .or(meta.creation_timestamp.as_ref())
            .and_then(|text| parse_rfc3339(text).ok())
    }
}

/// Kubernetes object names: DNS-1123 subdomains (names) or labels
/// (namespaces). Anything else could not exist in a cluster, and a `/` or a
/// space would make `<kind> <namespace>/<name>` in a denial ambiguous.
pub(crate) fn check_name(name: &str, max: usize, dots: bool) -> Result<(), String> {
    let valid_char =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.');
    let bytes = name.as_bytes();
    let ends_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.len() > max
        || !bytes.iter().all(|b| valid_char(*b))
        || !ends_ok(bytes.first())
        || !ends_ok(bytes.last())
    {
        return Err(format!(
            "{name:?} is not a valid Kubernetes name (lowercase letters, digits, '-'{}; at most \
             {max} characters; starting and ending with a letter or digit)",
            if dots { ", '.'" } else { "" }
        ));
    }
    Ok(())
}

/// Kubernetes allows one object per kind, namespace and name; two files
/// defining the same one would make the result depend on file order.
pub(crate) fn check_duplicates(origin: &str, objects: &[Object]) -> Vec<Error> {
    duplicates(objects, |_| origin)
}

pub(crate) fn duplicates<'a>(objects: &[Object], origin: impl Fn(usize) -> &'a str) -> Vec<Error> {
    let mut seen = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let id = object.object_ref();
        match seen.get(&id) {
            None => {
                seen.insert(id, i);
            }
            Some(&first) => {
                let (file, first_file) = (origin(i), origin(first));
                errors.push(Error::Object {
                    file: file.to_owned(),
                    object: id.to_string(),
                    message: if file == first_file {
                        "defined more than once".to_owned()
                    } else {
                        format!("defined more than once (also in {first_file})")
                    },
                });
            }
        }
    }
    errors
}
