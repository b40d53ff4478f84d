//! Loading policy from YAML: one file, or a directory of them.
//!
//! A load either succeeds completely or returns every error it found; the
//! caller keeps its last good snapshot in the second case (DESIGN.md: "the
//! last good configuration stays in force").

use std::collections::BTreeSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;
use crate::compile::check_object;
use crate::resource::secret::{self, ParsedSecret};
use crate::resource::{
    AuthorizationPolicy, CORE_API_VERSION, EgressPolicy, GATEWAY_API_VERSION, Gateway, GrpcRoute,
    HttpRoute, Ingress, NETWORKING_API_VERSION, Namespace, NetworkPolicy, Object,
    POLICY_API_VERSION, PeerAuthentication, RateLimitPolicy, SECURITY_API_VERSIONS, Snapshot,
};
use crate::resource::{Service, TlsSecret};
use crate::validate::{check_duplicates, check_name, duplicates};
use serde::Deserialize;

/// What errors name when the objects came over the wire instead of from a file.
pub const SNAPSHOT_ORIGIN: &str = "<snapshot>";

/// Largest policy file read. Policy files are small; a multi-megabyte file in
/// the config directory is a mistake (or an attack on the control plane's
/// memory), and refusing it keeps the last good policy in force.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// A successful load: the objects, and notes about what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// Services (discovery, not policy), in file order.
    pub services: Vec<Service>,
    /// `kubernetes.io/tls` Secrets (for the ingress only, never in the
    /// snapshot), in file order.
    pub secrets: Vec<TlsSecret>,
    /// Documents that were read but are not policy (unknown kinds...), one
    /// line each, naming the file and the object.
    pub warnings: Vec<String>,
}

/// Parses one YAML file (several documents separated by `---`). `file` is
/// only used in messages.
pub fn parse_yaml(file: &str, text: &str) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    parse_into(file, text, &mut loaded, &mut errors);
    errors.extend(check_duplicates(file, &loaded.snapshot.objects));
    match Error::from_list(errors) {
        Some(error) => Err(error),
        None => Ok(loaded),
    }
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (not its subdirectories),
/// in file-name order. Hidden files are skipped: Kubernetes ConfigMap mounts
/// keep their bookkeeping in `..data`-style entries.
pub fn load_dir(dir: &Path) -> Result<Loaded, Error> {
    let io = |path: &Path, e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        names.insert(name.to_owned());
    }
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    // The file of each object, so a duplicate names both files.
    let mut origins: Vec<String> = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let shown = path.display().to_string();
        // Follows symlinks, as ConfigMap mounts are made of them.
        match std::fs::metadata(&path) {
            Ok(m) if !m.is_file() => continue,
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                errors.push(Error::Io {
                    path: shown,
                    message: format!("larger than {MAX_FILE_BYTES} bytes; refusing to read it"),
                });
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                errors.push(io(&path, e));
                continue;
            }
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_into(&shown, &text, &mut loaded, &mut errors),
            Err(e) => errors.push(io(&path, e)),
        }
        origins.resize(loaded.snapshot.objects.len(), shown);
    }
    errors.extend(duplicates(&loaded.snapshot.objects, |i| {
        origins.get(i).map_or("", String::as_str)
    }));
    match Error::from_list(errors) {
        Some(error) => Err(error),
        None => Ok(loaded),
    }
}

fn parse_into(file: &str, text: &str, loaded: &mut Loaded, errors: &mut Vec<Error>) {
    // YAML 1.2 booleans only: with YAML 1.1's, a label `env: n` or a name
    // `no` would silently become `false`.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let documents: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, options) {
        Ok(documents) => documents,
        Err(e) => {
            errors.push(Error::Syntax {
                file: file.to_owned(),
                message: yaml_message(&e),
            });
            return;
        }
    };
    for (index, document) in documents.into_iter().enumerate() {
        if is_service(&document) {
            match parse_service(file, document) {
                Ok(s) => loaded.services.push(s),
                Err(e) => errors.push(e),
            }
            continue;
        }
        if document.get("kind").and_then(Value::as_str) == Some("Secret") {
            match parse_secret(file, &document) {
                Ok(ParsedSecret::Tls(s)) => loaded.secrets.push(s),
                Ok(ParsedSecret::Other(t)) => loaded.warnings.push(format!(
                    "{file}: {}: a Secret of type {t} is not a kubernetes.io/tls Secret; ignored",
                    secret_object(&document)
                )),
                Err(e) => errors.push(e),
            }
            continue;
        }
        match parse_value(file, index + 1, document, &mut loaded.warnings) {
            Ok(objects) => loaded.snapshot.objects.extend(objects),
            Err(e) => errors.extend(e),
        }
    }
}

fn is_service(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Service")
}

/// A Service document, with errors naming the file, object and field.
fn parse_service(file: &str, mut value: Value) -> Result<Service, Error> {
    let (name, namespace) = name_and_namespace(&value);
    let (name, namespace) = (name.to_owned(), namespace.to_owned());
    let object = format!("Service {namespace}/{name}");
    let field_error = |field: String, message: String| Error::Field {
        file: file.to_owned(),
        object: object.clone(),
        field,
        message,
    };
    core_api_version(file, &object, "Service", &value)?;
    if name.is_empty() {
        return Err(field_error("metadata.name".into(), "is required".into()));
    }
    if let Err(message) = check_name(&name, 63, false) {
        return Err(field_error("metadata.name".into(), message));
    }
    if let Value::Object(map) = &mut value {
        map.remove("kind");
        map.remove("status");
    }
    let service: Service = deserialize(value).map_err(|(f, m)| field_error(f, m))?;
    service.check().map_err(|(f, m)| field_error(f, m))?;
    Ok(service)
}

/// The name and namespace (with the documented default) of a document.
fn name_and_namespace(value: &Value) -> (&str, &str) {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(crate::resource::DEFAULT_NAMESPACE);
    (name, namespace)
}

/// `Secret ns/name` as errors name it.
fn secret_object(value: &Value) -> String {
    let (name, namespace) = name_and_namespace(value);
    format!("Secret {namespace}/{name}")
}

/// A core (`v1`) document of another apiVersion is refused, naming it.
fn core_api_version(file: &str, object: &str, kind: &str, value: &Value) -> Result<(), Error> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if api_version == CORE_API_VERSION {
        return Ok(());
    }
    Err(Error::Object {
        file: file.to_owned(),
        object: object.to_owned(),
        message: format!(
            "apiVersion {api_version:?} is not supported for {kind}; use {CORE_API_VERSION}"
        ),
    })
}

/// A Secret document: a checked TLS Secret, or another type to skip.
/// Errors name the field, never the data.
fn parse_secret(file: &str, value: &Value) -> Result<ParsedSecret, Error> {
    let object = secret_object(value);
    core_api_version(file, &object, "Secret", value)?;
    let (name, namespace) = name_and_namespace(value);
    let field_error = |field: String, message: String| Error::Field {
        file: file.to_owned(),
        object: object.clone(),
        field,
        message,
    };
    if let Err(message) = check_name(name, 253, true) {
        return Err(field_error("metadata.name".into(), message));
    }
    secret::parse(namespace, name, value).map_err(|(f, m)| field_error(f, m))
}

/// One line with the position, without the source snippet the crate can draw.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let message = e.without_snippet().to_string();
    let first = message.lines().next().unwrap_or("invalid YAML").to_owned();
    match e.location() {
        Some(at) if !first.contains("line") => {
            format!("line {} column {}: {first}", at.line(), at.column())
        }
        _ => first,
    }
}

fn str_field<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// Turns one document into objects (a `List` holds several; an empty
/// document holds none), with every check applied.
pub(crate) fn parse_value(
    file: &str,
    document: usize,
    value: Value,
    warnings: &mut Vec<String>,
) -> Result<Vec<Object>, Vec<Error>> {
    let doc_error = |message: String| {
        vec![Error::Document {
            file: file.to_owned(),
            document,
            message,
        }]
    };
    let mut map = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => map,
        _ => {
            return Err(doc_error(
                "expected a Kubernetes object (a mapping with apiVersion, kind and metadata)"
                    .to_owned(),
            ));
        }
    };
    let Some(kind) = str_field(&map, "kind").map(str::to_owned) else {
        return Err(doc_error("missing `kind`".to_owned()));
    };
    let api_version = str_field(&map, "apiVersion").unwrap_or_default().to_owned();
    let metadata = map.get("metadata").and_then(Value::as_object);
    let name = match metadata.and_then(|m| m.get("name")) {
        Some(Value::String(name)) => name.clone(),
        None | Some(Value::Null) => String::new(),
        // Shown as written so the error can say which object it is.
        Some(other) => other.to_string(),
    };
    let namespace = metadata
        .and_then(|m| str_field(m, "namespace"))
        .filter(|ns| !ns.is_empty())
        .unwrap_or(crate::resource::DEFAULT_NAMESPACE)
        .to_owned();

    if kind == "List" && api_version == CORE_API_VERSION {
        let Some(Value::Array(items)) = map.remove("items") else {
            return Err(doc_error("a List needs `items`".to_owned()));
        };
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for item in items {
            match parse_value(file, document, item, warnings) {
                Ok(o) => objects.extend(o),
                Err(e) => errors.extend(e),
            }
        }
        return if errors.is_empty() {
            Ok(objects)
        } else {
            Err(errors)
        };
    }

    let cluster_scoped = kind == "Namespace";
    let object = if name.is_empty() {
        format!("{kind} (unnamed)")
    } else if cluster_scoped {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    };
    let object_error = |message: String| {
        vec![Error::Object {
            file: file.to_owned(),
            object: object.clone(),
            message,
        }]
    };
    let accepted: &[&str] = match kind.as_str() {
        "AuthorizationPolicy" | "PeerAuthentication" => &SECURITY_API_VERSIONS,
        "NetworkPolicy" => &[NETWORKING_API_VERSION],
        "Namespace" => &[CORE_API_VERSION],
        "HTTPRoute" | "GRPCRoute" | "Gateway" => &[GATEWAY_API_VERSION],
        "Ingress" => &[NETWORKING_API_VERSION],
        "RateLimitPolicy" | "EgressPolicy" | "AnomalyRule" | "Quarantine" => &[POLICY_API_VERSION],
        "ServiceEntry" | "Sidecar" => &crate::resource::istio_egress::ISTIO_NETWORKING_API_VERSIONS,
        "ReferenceGrant" => &crate::resource::reference_grant::REFERENCE_GRANT_API_VERSIONS,
        other => {
            warnings.push(format!(
                "{file}: {object}: kind {other} ({api_version}) is not policy; ignored"
            ));
            return Ok(Vec::new());
        }
    };
    if !accepted.contains(&api_version.as_str()) {
        return Err(object_error(format!(
            "apiVersion {api_version:?} is not supported for {kind}; use {}",
            accepted.join(" or ")
        )));
    }
    if name.is_empty() {
        return Err(object_error("metadata.name is required".to_owned()));
    }
    if let Err(message) = check_name(&name, 253, true) {
        return Err(object_error(format!("metadata.name: {message}")));
    }
    if !cluster_scoped
        && let Some(Value::String(ns)) = metadata.and_then(|m| m.get("namespace"))
        && !ns.is_empty()
        && let Err(message) = check_name(ns, 63, false)
    {
        return Err(object_error(format!("metadata.namespace: {message}")));
    }
    // `kind` selected the type; `status` is written by controllers, not users.
    map.remove("kind");
    map.remove("status");
    let value = Value::Object(map);
    let typed = |result: Result<Object, (String, String)>| match result {
        Ok(o) => Ok(o),
        Err((field, message)) => Err(vec![Error::Field {
            file: file.to_owned(),
            object: object.clone(),
            field,
            message,
        }]),
    };
    let parsed = match kind.as_str() {
        "AuthorizationPolicy" => {
            typed(deserialize::<AuthorizationPolicy>(value).map(Object::AuthorizationPolicy))?
        }
        "PeerAuthentication" => {
            typed(deserialize::<PeerAuthentication>(value).map(Object::PeerAuthentication))?
        }
        "NetworkPolicy" => typed(deserialize::<NetworkPolicy>(value).map(Object::NetworkPolicy))?,
        "HTTPRoute" => typed(deserialize::<HttpRoute>(value).map(Object::HttpRoute))?,
        "GRPCRoute" => typed(deserialize::<GrpcRoute>(value).map(Object::GrpcRoute))?,
        "RateLimitPolicy" => {
            typed(deserialize::<RateLimitPolicy>(value).map(Object::RateLimitPolicy))?
        }
        "EgressPolicy" => typed(deserialize::<EgressPolicy>(value).map(Object::EgressPolicy))?,
        "ServiceEntry" => {
            typed(deserialize::<crate::resource::ServiceEntry>(value).map(Object::ServiceEntry))?
        }
        "Sidecar" => typed(deserialize::<crate::resource::Sidecar>(value).map(Object::Sidecar))?,
        "Gateway" => typed(deserialize::<Gateway>(value).map(Object::Gateway))?,
        "Ingress" => typed(deserialize::<Ingress>(value).map(Object::Ingress))?,
        "ReferenceGrant" => typed(
            deserialize::<crate::resource::ReferenceGrant>(value).map(Object::ReferenceGrant),
        )?,
        "AnomalyRule" => {
            typed(deserialize::<crate::resource::AnomalyRule>(value).map(Object::AnomalyRule))?
        }
        "Quarantine" => {
            typed(deserialize::<crate::resource::Quarantine>(value).map(Object::Quarantine))?
        }
        _ => typed(deserialize::<Namespace>(value).map(Object::Namespace))?,
    };
    // Gateways and Ingresses of another class belong to another
    // implementation.
    let class = match &parsed {
        Object::Gateway(g) => Some(g.spec.gateway_class_name.as_str()),
        Object::Ingress(i) => Some(i.class().unwrap_or("")),
        _ => None,
    };
    // A ServiceEntry inside the mesh describes workloads, not egress.
    if let Object::ServiceEntry(se) = &parsed
        && !se.is_external()
    {
        warnings.push(format!(
            "{file}: {object}: location MESH_INTERNAL describes workloads of the mesh, not egress; ignored"
        ));
        return Ok(Vec::new());
    }
    if let Some(class) = class
        && class != crate::resource::gateway::GATEWAY_CLASS
    {
        warnings.push(format!(
            "{file}: {object}: class {class:?} is not {:?}; left to its own implementation",
            crate::resource::gateway::GATEWAY_CLASS
        ));
        return Ok(Vec::new());
    }
    let errors = check_object(file, &parsed);
    if errors.is_empty() {
        Ok(vec![parsed])
    } else {
        Err(errors)
    }
}

/// Deserializes with the path of the offending field in the error.
fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

/// A snapshot entry goes through the loader's checks: a JSON snapshot is
/// held to the same rules as a YAML file.
impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let mut warnings = Vec::new();
        match parse_value(SNAPSHOT_ORIGIN, 1, value, &mut warnings) {
            Ok(mut objects) if objects.len() == 1 => objects
                .pop()
                .ok_or_else(|| serde::de::Error::custom("empty object")),
            Ok(_) => Err(serde::de::Error::custom(
                "a snapshot entry must be exactly one policy object (AuthorizationPolicy, \
                 PeerAuthentication, NetworkPolicy, Namespace, HTTPRoute, GRPCRoute, \
                 RateLimitPolicy, EgressPolicy, ServiceEntry, Sidecar, Gateway, Ingress, ReferenceGrant, AnomalyRule or Quarantine of \
                 class palisade)",
            )),
            Err(errors) => Err(serde::de::Error::custom(
                Error::from_list(errors).map_or_else(String::new, |e| e.to_string()),
            )),
        }
    }
}

impl Snapshot {
    /// Reads a snapshot received from the control plane, with every check the
    /// YAML loader applies; errors name `<snapshot>`, the object and the field.
    pub fn from_json(text: &str) -> Result<Snapshot, Error> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Syntax {
            file: SNAPSHOT_ORIGIN.to_owned(),
            message: e.to_string(),
        })?;
        let items = match value {
            serde_json::Value::Object(mut map) => match map.remove("objects") {
                Some(serde_json::Value::Array(items)) => items,
                None => Vec::new(),
                Some(_) => {
                    return Err(Error::Syntax {
                        file: SNAPSHOT_ORIGIN.to_owned(),
                        message: "`objects` must be a list".to_owned(),
                    });
                }
            },
            _ => {
                return Err(Error::Syntax {
                    file: SNAPSHOT_ORIGIN.to_owned(),
                    message: "a snapshot is a JSON object with an `objects` list".to_owned(),
                });
            }
        };
        let mut objects = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match parse_value(SNAPSHOT_ORIGIN, index + 1, item, &mut warnings) {
                Ok(parsed) => objects.extend(parsed),
                Err(e) => errors.extend(e),
            }
        }
        errors.extend(check_duplicates(SNAPSHOT_ORIGIN, &objects));
        match Error::from_list(errors) {
            Some(error) => Err(error),
            None => Ok(Snapshot { objects }),
        }
    }
}
