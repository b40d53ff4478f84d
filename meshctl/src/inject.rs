//! `meshctl inject` / `meshctl uninject`: the webhook's patch, offline, on
//! multi-document YAML. Pods, Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, Jobs and CronJobs (also inside a `v1 List`) are meshed in
//! their pod template; every other document passes through unchanged.

pub mod cli;

use mesh_injector::{Outcome, Settings};
use serde_json::Value;

/// What happened to one object, for the report on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Kind namespace/name`.
    pub object: String,
    pub changed: bool,
    /// Why an object of a meshable kind was left alone.
    pub reason: Option<String>,
}

pub use crate::yaml::{parse, render};

/// Why a stream of documents cannot be processed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{source_name}: document {document}: {error}")]
    Object {
        source_name: String,
        document: usize,
        error: mesh_injector::Error,
    },
}

/// Meshes every workload of `docs` in place.
pub fn inject(
    source_name: &str,
    docs: &mut [Value],
    settings: &Settings,
) -> Result<Vec<Note>, Error> {
    each(source_name, docs, |object| {
        Ok(match mesh_injector::inject(object, settings)? {
            Outcome::Patch(_) => (true, None),
            Outcome::Skip(reason) => (false, Some(reason)),
        })
    })
}

/// Removes the mesh from every workload of `docs` in place.
pub fn uninject(source_name: &str, docs: &mut [Value]) -> Result<Vec<Note>, Error> {
    each(source_name, docs, |object| {
        Ok((mesh_injector::uninject(object)?, None))
    })
}

/// Whether an object changed, and why not when it did not.
type Step = Result<(bool, Option<String>), mesh_injector::Error>;

/// Runs `step` on every object (the items of a `List` one by one).
fn each(
    source_name: &str,
    docs: &mut [Value],
    mut step: impl FnMut(&mut Value) -> Step,
) -> Result<Vec<Note>, Error> {
    let mut notes = Vec::new();
    for (i, doc) in docs.iter_mut().enumerate() {
        let mut objects: Vec<&mut Value> = match doc {
            Value::Object(m) if m.get("kind").and_then(Value::as_str) == Some("List") => m
                .get_mut("items")
                .and_then(Value::as_array_mut)
                .map(|items| items.iter_mut().collect())
                .unwrap_or_default(),
            other => vec![other],
        };
        for object in objects.iter_mut() {
            let meshable = {
                let s = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("");
                mesh_injector::patch::template_pointer(s("apiVersion"), s("kind")).is_some()
            };
            let (changed, reason) = step(object).map_err(|error| Error::Object {
                source_name: source_name.to_owned(),
                document: i + 1,
                error,
            })?;
            if meshable {
                notes.push(Note {
                    object: mesh_injector::patch::describe(object),
                    changed,
                    reason,
                });
            }
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests;
