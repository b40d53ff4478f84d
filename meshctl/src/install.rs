//! `meshctl install` / `uninstall`: the manifests of `deploy/`, with the
//! operator's `--set` values applied and the secrets they need (the mesh CA,
//! the webhook's serving certificate) generated or reused, printed so that
//! `meshctl install | kubectl apply -f -` installs Palisade.

pub mod cli;
mod material;

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

pub use material::Material;

use crate::yaml;

/// The manifests, in the order they must be applied (namespace and CRDs
/// before what lives in them; the webhook configuration last, so pods are
/// not sent to an injector that is not running yet).
pub const MANIFESTS: [(&str, &str); 6] = [
    (
        "deploy/00-namespace.yaml",
        include_str!("../../deploy/00-namespace.yaml"),
    ),
    (
        "deploy/10-crds.yaml",
        include_str!("../../deploy/10-crds.yaml"),
    ),
    (
        "deploy/20-rbac.yaml",
        include_str!("../../deploy/20-rbac.yaml"),
    ),
    (
        "deploy/30-control-plane.yaml",
        include_str!("../../deploy/30-control-plane.yaml"),
    ),
    (
        "deploy/35-ingress.yaml",
        include_str!("../../deploy/35-ingress.yaml"),
    ),
    (
        "deploy/40-injector.yaml",
        include_str!("../../deploy/40-injector.yaml"),
    ),
];

/// The mesh's namespace (DESIGN.md): fixed, the injector refuses it.
pub const NAMESPACE: &str = "mesh-system";
/// The CA Secret, in cert-manager's layout (tls.crt, tls.key, ca.crt).
pub const CA_SECRET: &str = "palisade-ca";
pub const WEBHOOK_SECRET: &str = "mesh-injector-tls";
pub const WEBHOOK_CONFIGURATION: &str = "palisade-injector";
/// The images of this release: meshctl installs the mesh it was built with.
pub const DEFAULT_IMAGE_PREFIX: &str = "ghcr.io/palisade-mesh/";
/// Two of each, so one can be drained or fail without stopping the mesh.
pub const DEFAULT_REPLICAS: u32 = 2;

/// What `--set` can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    pub trust_domain: String,
    pub cert_ttl: String,
    pub control_plane_replicas: u32,
    pub injector_replicas: u32,
    pub control_plane_image: String,
    pub injector_image: String,
    pub proxy_image: String,
}

/// `--set` keys, with what they change.
pub const KEYS: [(&str, &str); 7] = [
    (
        "trustDomain",
        "the mesh's SPIFFE trust domain (cluster.local)",
    ),
    ("certTTL", "lifetime of workload certificates (24h)"),
    ("controlPlane.replicas", "control plane replicas (2)"),
    ("injector.replicas", "injector replicas (2)"),
    ("controlPlane.image", "control plane image"),
    ("injector.image", "injector image"),
    ("proxy.image", "proxy image the injector adds to pods"),
];

impl Default for Values {
    fn default() -> Self {
        let image =
            |name: &str| format!("{DEFAULT_IMAGE_PREFIX}{name}:{}", env!("CARGO_PKG_VERSION"));
        Self {
            trust_domain: mesh_identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            cert_ttl: "24h".to_owned(),
            control_plane_replicas: DEFAULT_REPLICAS,
            injector_replicas: DEFAULT_REPLICAS,
            control_plane_image: image("control-plane"),
            injector_image: image("injector"),
            proxy_image: image("proxy"),
        }
    }
}

/// Why the manifests cannot be produced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--set {0}: expected KEY=VALUE")]
    NotKeyValue(String),
    #[error("--set {key}: unknown key; known keys: {}", KEYS.map(|(k, _)| k).join(", "))]
    UnknownKey { key: String },
    #[error("--set {key}={value}: {message}")]
    BadValue {
        key: String,
        value: String,
        message: String,
    },
    #[error(transparent)]
    Yaml(#[from] yaml::Error),
    #[error("{0}")]
    Material(String),
    /// deploy/ lacks an object this code edits: a build of meshctl whose
    /// manifests and code disagree.
    #[error("deploy/ has no {0}")]
    Missing(String),
}

impl Values {
    /// Applies one `KEY=VALUE`.
    pub fn set(&mut self, pair: &str) -> Result<(), Error> {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::NotKeyValue(pair.to_owned()))?;
        let bad = |message: String| Error::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            message,
        };
        let replicas = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("expected a whole number of at least 1".to_owned()))
        };
        let image = |v: &str| {
            if v.is_empty() || v.contains(char::is_whitespace) {
                Err(bad("expected an image reference".to_owned()))
            } else {
                Ok(v.to_owned())
            }
        };
        match key {
            "trustDomain" => {
                mesh_identity::spiffe::validate_trust_domain_name(value)
                    .map_err(|e| bad(e.to_string()))?;
                self.trust_domain = value.to_owned();
            }
            "certTTL" => {
                mesh_identity::duration::parse_duration(value).map_err(bad)?;
                self.cert_ttl = value.to_owned();
            }
            "controlPlane.replicas" => self.control_plane_replicas = replicas(value)?,
            "injector.replicas" => self.injector_replicas = replicas(value)?,
            "controlPlane.image" => self.control_plane_image = image(value)?,
            "injector.image" => self.injector_image = image(value)?,
            "proxy.image" => self.proxy_image = image(value)?,
            _ => {
                return Err(Error::UnknownKey {
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The manifests of deploy/, as shipped.
pub fn shipped() -> Result<Vec<Value>, Error> {
    let mut docs = Vec::new();
    for (name, text) in MANIFESTS {
        docs.extend(yaml::parse(name, text)?);
    }
    Ok(docs)
}

/// Every object to apply.
pub fn manifests(values: &Values, material: &Material) -> Result<Vec<Value>, Error> {
    let mut docs = shipped()?;
    {
        let cp = find(&mut docs, "Deployment", "mesh-control-plane")?;
        cp["spec"]["replicas"] = json!(values.control_plane_replicas);
        let c = container(cp)?;
        c["image"] = json!(values.control_plane_image);
        set_env(c, "MESH_TRUST_DOMAIN", &values.trust_domain)?;
        set_env(c, "MESH_CERT_TTL", &values.cert_ttl)?;
    }
    {
        let ingress = find(&mut docs, "Deployment", "mesh-ingress")?;
        let c = container(ingress)?;
        c["image"] = json!(values.proxy_image);
        set_env(c, "MESH_TRUST_DOMAIN", &values.trust_domain)?;
    }
    {
        let inj = find(&mut docs, "Deployment", "mesh-injector")?;
        inj["spec"]["replicas"] = json!(values.injector_replicas);
        let c = container(inj)?;
        c["image"] = json!(values.injector_image);
        set_env(c, "MESH_PROXY_IMAGE", &values.proxy_image)?;
        set_env(c, "MESH_TRUST_DOMAIN", &values.trust_domain)?;
    }
    {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&material.webhook_ca_pem);
        let webhooks = find(
            &mut docs,
            "MutatingWebhookConfiguration",
            WEBHOOK_CONFIGURATION,
        )?
        .get_mut("webhooks")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Error::Missing(format!("webhooks in {WEBHOOK_CONFIGURATION}")))?;
        for w in webhooks {
            w["clientConfig"]["caBundle"] = json!(b64);
        }
    }
    // Secrets and the trust bundle go right after RBAC, before the
    // Deployments that mount or read them.
    let at = docs
        .iter()
        .position(|d| d["kind"] == "Deployment")
        .unwrap_or(docs.len());
    let generated = [
        tls_secret(
            CA_SECRET,
            &material.issuer_cert_pem,
            &material.issuer_key_pem,
            &material.root_pem,
        ),
        tls_secret(
            WEBHOOK_SECRET,
            &material.webhook_cert_pem,
            &material.webhook_key_pem,
            &material.webhook_ca_pem,
        ),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": mesh_injector::settings::DEFAULT_TRUST_BUNDLE_CONFIGMAP, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "palisade"}},
            "data": {mesh_injector::sidecar::TRUST_BUNDLE_KEY: material.root_pem},
        }),
    ];
    docs.splice(at..at, generated);
    Ok(docs)
}

/// What `meshctl uninstall` prints for `kubectl delete -f -`: every object
/// of the install, newest first, by reference only. CRDs (and with them
/// every policy object in the cluster) only when asked.
pub fn uninstall(include_crds: bool) -> Result<Vec<Value>, Error> {
    let material = Material::placeholder();
    let docs = manifests(&Values::default(), &material)?;
    Ok(docs
        .iter()
        .rev()
        .filter(|d| include_crds || d["kind"] != "CustomResourceDefinition")
        .map(|d| {
            let mut meta = json!({"name": d["metadata"]["name"]});
            if let Some(ns) = d["metadata"].get("namespace") {
                meta["namespace"] = ns.clone();
            }
            json!({"apiVersion": d["apiVersion"], "kind": d["kind"], "metadata": meta})
        })
        .collect())
}

fn tls_secret(name: &str, cert: &str, key: &str, ca: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "palisade"}},
        "data": {"tls.crt": b64(cert), "tls.key": b64(key), "ca.crt": b64(ca)},
    })
}

fn find<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> Result<&'a mut Value, Error> {
    docs.iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .ok_or_else(|| Error::Missing(format!("{kind} {name}")))
}

fn container(deployment: &mut Value) -> Result<&mut Value, Error> {
    deployment
        .pointer_mut("/spec/template/spec/containers/0")
        .ok_or_else(|| Error::Missing("container in a Deployment".to_owned()))
}

fn set_env(container: &mut Value, name: &str, value: &str) -> Result<(), Error> {
    let entry = container
        .get_mut("env")
        .and_then(Value::as_array_mut)
        .and_then(|env| env.iter_mut().find(|e| e["name"] == name))
        .ok_or_else(|| Error::Missing(format!("env {name}")))?;
    entry["value"] = json!(value);
    Ok(())
}

/// The material in `dir` (created there when missing), or fresh material
/// when no directory is given.
pub fn material(dir: Option<&Path>, trust_domain: &str) -> Result<Material, Error> {
    match dir {
        Some(dir) => Material::load_or_generate(dir, trust_domain),
        None => {
            // The keys pass through a private directory removed on return.
            let tmp = tempfile::tempdir().map_err(|e| {
                Error::Material(format!("cannot create a private temporary directory: {e}"))
            })?;
            Material::load_or_generate(tmp.path(), trust_domain)
        }
    }
}

#[cfg(test)]
mod tests;
