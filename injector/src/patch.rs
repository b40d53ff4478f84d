//! The patch: what meshing a pod template changes, as JSONPatch operations
//! on the object that holds it (a Pod, or a workload's pod template), and
//! the operations that undo it.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use serde::Serialize;
use serde_json::Value;

use crate::annotations::{self, Choice, NEVER_INJECTED, Overrides};
use crate::probes::{self, APP_PROBES_ENV, AppProbe};
use crate::sidecar::{self, INIT_CONTAINER, PROXY_CONTAINER, VOLUMES};
use crate::{Error, Settings};

/// What injection does with one pod template.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Left alone, and why.
    Skip(String),
    /// These operations mesh it.
    Patch(Vec<PatchOperation>),
}

/// Where the pod template of a kind lives in its object: `meshctl inject`
/// meshes these kinds and passes every other object through unchanged.
pub fn template_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    match (api_version, kind) {
        ("v1", "Pod") => Some(""),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch/v1", "Job") => Some("/spec/template"),
        ("batch/v1", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// The template at `at` (`""` for a Pod, whose metadata and spec sit where a
/// template's do), typed. Fields the types do not know are ignored here and
/// kept in the object: the patch only adds and replaces what it names.
pub fn template(object: &Value, at: &str) -> Result<PodTemplateSpec, Error> {
    let value = object.pointer(at).ok_or_else(|| Error::Object {
        what: describe(object),
        message: format!("it has no pod template at {at}"),
    })?;
    serde_json::from_value(value.clone()).map_err(|e| Error::Object {
        what: describe(object),
        message: e.to_string(),
    })
}

/// `Kind namespace/name` for messages.
pub fn describe(object: &Value) -> String {
    let s = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    let name = match s("/metadata/name") {
        "" => format!("{}(generated)", s("/metadata/generateName")),
        n => n.to_owned(),
    };
    match s("/metadata/namespace") {
        "" => format!("{} {name}", s("/kind")),
        ns => format!("{} {ns}/{name}", s("/kind")),
    }
}

/// Decides and plans injection of the template at `at`. `namespace` is the
/// namespace the pod will run in.
pub fn plan(
    template: &PodTemplateSpec,
    at: &str,
    namespace: &str,
    settings: &Settings,
) -> Result<Outcome, Error> {
    let meta = template.metadata.as_ref();
    let labels = meta.and_then(|m| m.labels.as_ref());
    let annotations = meta.and_then(|m| m.annotations.as_ref());
    let Some(spec) = template.spec.as_ref() else {
        return Ok(Outcome::Skip("no pod spec".to_owned()));
    };
    if NEVER_INJECTED.contains(&namespace) {
        return Ok(Outcome::Skip(format!(
            "namespace {namespace} is never meshed"
        )));
    }
    if is_injected(spec) {
        return Ok(Outcome::Skip("already injected".to_owned()));
    }
    if annotations::choice(labels, annotations)? == Choice::Disabled {
        return Ok(Outcome::Skip(format!("{}: disabled", annotations::INJECT)));
    }
    if spec.host_network == Some(true) {
        return Ok(Outcome::Skip(
            "hostNetwork: the pod shares the node's network, which a sidecar cannot redirect"
                .to_owned(),
        ));
    }
    let overrides = Overrides::parse(annotations)?;
    let rewrites = probes::plan(&spec.containers);
    let app_probes: Vec<AppProbe> = rewrites.iter().map(|(_, p)| p.clone()).collect();

    let spec_at = format!("{at}/spec");
    let mut ops = Vec::new();
    let init = sidecar::init_container(settings, &overrides);
    let proxy = sidecar::proxy_container(settings, &overrides, probes::env_value(&app_probes));
    match &spec.init_containers {
        // The proxy starts right after the redirection and before the app's
        // own init containers, whose traffic it then already carries.
        Some(_) => {
            ops.push(add(&format!("{spec_at}/initContainers/0"), &init));
            ops.push(add(&format!("{spec_at}/initContainers/1"), &proxy));
        }
        None => ops.push(add(&format!("{spec_at}/initContainers"), &[init, proxy])),
    }
    let volumes = sidecar::volumes(settings);
    match &spec.volumes {
        Some(_) => ops.extend(
            volumes
                .iter()
                .map(|v| add(&format!("{spec_at}/volumes/-"), v)),
        ),
        None => ops.push(add(&format!("{spec_at}/volumes"), &volumes)),
    }
    for (i, probe) in &rewrites {
        let path = format!("{spec_at}/containers/{i}/{}/httpGet", probe.kind.field());
        ops.push(replace(&path, &probe.rewritten()));
    }
    Ok(Outcome::Patch(ops))
}

/// The operations that remove what [`plan`] added and restore the probes.
/// Empty when the template is not injected.
pub fn plan_removal(template: &PodTemplateSpec, at: &str) -> Result<Vec<PatchOperation>, Error> {
    let Some(spec) = template.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let spec_at = format!("{at}/spec");
    let mut ops = Vec::new();
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    if let Some(proxy) = inits.iter().find(|c| c.name == PROXY_CONTAINER) {
        for probe in recorded_probes(proxy)? {
            let Some(i) = spec
                .containers
                .iter()
                .position(|c| c.name == probe.container)
            else {
                continue;
            };
            let path = format!("{spec_at}/containers/{i}/{}/httpGet", probe.kind.field());
            ops.push(replace(&path, &probe.original));
        }
    }
    let ours = |name: &str| name == INIT_CONTAINER || name == PROXY_CONTAINER;
    ops.extend(removals(
        &format!("{spec_at}/initContainers"),
        inits.iter().map(|c| ours(&c.name)),
    ));
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    ops.extend(removals(
        &format!("{spec_at}/volumes"),
        volumes.iter().map(|v| VOLUMES.contains(&v.name.as_str())),
    ));
    Ok(ops)
}

/// Whether a Palisade proxy is already in the pod (as a native sidecar, or
/// as a container when someone moved it there).
pub fn is_injected(spec: &PodSpec) -> bool {
    let named = |c: &Container| c.name == PROXY_CONTAINER || c.name == INIT_CONTAINER;
    spec.init_containers.iter().flatten().any(named) || spec.containers.iter().any(named)
}

fn recorded_probes(proxy: &Container) -> Result<Vec<AppProbe>, Error> {
    let Some(value) = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == APP_PROBES_ENV)
        .and_then(|e| e.value.as_deref())
    else {
        return Ok(Vec::new());
    };
    serde_json::from_str(value).map_err(|e| {
        Error::Injected(format!(
            "{PROXY_CONTAINER} env {APP_PROBES_ENV} does not parse ({e}); the app's probes cannot be restored"
        ))
    })
}

/// Removes the flagged items of the array at `array`, last first so the
/// indices stay right; the whole field when every item goes.
fn removals(array: &str, flagged: impl Iterator<Item = bool>) -> Vec<PatchOperation> {
    let flags: Vec<bool> = flagged.collect();
    if flags.is_empty() || !flags.contains(&true) {
        return Vec::new();
    }
    if flags.iter().all(|f| *f) {
        return vec![remove(array)];
    }
    flags
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, f)| **f)
        .map(|(i, _)| remove(&format!("{array}/{i}")))
        .collect()
}

/// Injects the object in place (`meshctl inject`): a Pod or a workload.
/// Returns what happened; other kinds are `Skip`.
pub fn inject(object: &mut Value, settings: &Settings) -> Result<Outcome, Error> {
    let Some(at) = kind_pointer(object) else {
        return Ok(Outcome::Skip("not a workload".to_owned()));
    };
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned();
    let outcome = plan(&template(object, at)?, at, &namespace, settings)?;
    if let Outcome::Patch(ops) = &outcome {
        apply(object, ops)?;
    }
    Ok(outcome)
}

/// Removes the injection in place (`meshctl uninject`). Returns whether
/// anything changed.
pub fn uninject(object: &mut Value) -> Result<bool, Error> {
    let Some(at) = kind_pointer(object) else {
        return Ok(false);
    };
    let ops = plan_removal(&template(object, at)?, at)?;
    apply(object, &ops)?;
    Ok(!ops.is_empty())
}

fn kind_pointer(object: &Value) -> Option<&'static str> {
    let s = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("");
    template_pointer(s("apiVersion"), s("kind"))
}

/// Applies operations planned from the same object; a failure means the
/// object changed shape between planning and applying.
pub fn apply(object: &mut Value, ops: &[PatchOperation]) -> Result<(), Error> {
    json_patch::patch(object, ops).map_err(|e| Error::Object {
        what: describe(object),
        message: format!("the patch does not apply: {e}"),
    })
}

fn pointer(path: &str) -> PointerBuf {
    // Paths are built here from field names and indices; a Pod field name
    // never contains `~` or `/`, so parsing cannot fail, and the fallback
    // (the root) would make the patch fail loudly rather than misapply.
    PointerBuf::parse(path).unwrap_or_default()
}

fn json(value: &impl Serialize) -> Value {
    // Kubernetes types are plain data; serializing them cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn add(path: &str, value: &impl Serialize) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(path),
        value: json(value),
    })
}

fn replace(path: &str, value: &impl Serialize) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: pointer(path),
        value: json(value),
    })
}

fn remove(path: &str) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation {
        path: pointer(path),
    })
}

#[cfg(test)]
mod tests;
