//! `meshctl policy`: ask the mesh's own evaluator about a folder of policy
//! (`check`), review it for risky patterns (`lint`), and read the snapshot a
//! running proxy enforces (`get`).
//!
//! `check` and `lint` load the folder with `mesh_policy::load_dir`, exactly as
//! the control plane does, so a folder that meshctl accepts is one the mesh
//! accepts, and an answer from `check` is the answer the proxies give.

pub mod check;
pub mod cli;
pub mod get;
pub mod lint;
pub mod preview;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh_policy::{Labels, Loaded, ObjectRef};

pub use check::{Call, Caller, CheckReport, HttpCall};
pub use get::{PolicyDocument, PolicyGetError};
pub use lint::{Finding, LintReport, Severity};

/// Why a policy folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The loader's messages already name the file, the object and the
    /// field, one problem per line; they are shown as they are.
    #[error("policy in {} does not load ({} {}):\n{}",
        .dir.display(),
        .error.errors().len(),
        if .error.errors().len() == 1 { "problem" } else { "problems" },
        indent(&.error.to_string()))]
    Load {
        dir: PathBuf,
        error: mesh_policy::Error,
    },
    /// Cannot happen for a folder that loaded (the loader runs the same
    /// checks), but the evaluator says so itself rather than be trusted blindly.
    #[error("policy in {} does not compile: {error}", .dir.display())]
    Compile {
        dir: PathBuf,
        error: mesh_policy::Error,
    },
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `dir` as the control plane would. `Loaded::warnings` lists what was
/// skipped (kinds that are not policy) for the caller to show.
pub fn load(dir: &Path) -> Result<Loaded, PolicyError> {
    mesh_policy::load_dir(dir).map_err(|error| PolicyError::Load {
        dir: dir.to_path_buf(),
        error,
    })
}

/// The file each object of `dir` came from, for messages that point at it.
///
/// `load_dir` returns one snapshot without origins; reading each file again
/// with `parse_yaml` recovers them. Only called after `load_dir` accepted the
/// folder, so a file that fails here (edited in between) is simply left out:
/// the findings lose a file name, never their correctness.
pub fn origins(dir: &Path) -> BTreeMap<ObjectRef, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        // The loader's own selection: visible *.yaml / *.yml files.
        .filter(|n| !n.starts_with('.') && (n.ends_with(".yaml") || n.ends_with(".yml")))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let shown = path.display().to_string();
        let fits = std::fs::metadata(&path)
            .is_ok_and(|m| m.is_file() && m.len() <= mesh_policy::MAX_FILE_BYTES);
        if !fits {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(parsed) = mesh_policy::parse_yaml(&shown, &text) {
            for object in &parsed.snapshot.objects {
                out.entry(object.object_ref())
                    .or_insert_with(|| shown.clone());
            }
        }
    }
    out
}

/// Why a `k=v,…` or `K=V` argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(String);

/// Parses `--to-labels` / `--from-labels`: `app=api,tier=backend`. An empty
/// string is a workload without labels. A label value may be empty (`k=`),
/// as in Kubernetes; a key may not, and may not repeat.
pub fn parse_labels(text: &str) -> Result<Labels, ArgError> {
    let mut labels = Labels::new();
    if text.trim().is_empty() {
        return Ok(labels);
    }
    for item in text.split(',') {
        let item = item.trim();
        let Some((key, value)) = item.split_once('=') else {
            return Err(ArgError(format!(
                "label {item:?} is not key=value (e.g. app=api,tier=backend)"
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(ArgError(format!("label {item:?} has an empty key")));
        }
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(ArgError(format!("label {key:?} is given twice")));
        }
    }
    Ok(labels)
}

/// Parses one `--header K=V`. The value is kept as written (it may hold
/// `=`, commas or spaces); the name must be an HTTP token.
pub fn parse_header(text: &str) -> Result<(String, String), ArgError> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(ArgError(format!(
            "header {text:?} is not NAME=VALUE (e.g. x-tenant=acme)"
        )));
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(ArgError(format!(
            "header name {name:?} is not a valid HTTP header name"
        )));
    }
    Ok((name.to_ascii_lowercase(), value.to_owned()))
}

#[cfg(test)]
mod tests;
