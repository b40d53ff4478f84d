//! The resource model: Kubernetes-style objects exactly as users write them.
//!
//! These types keep the user's spelling (strings stay strings, ports stay
//! `"9000"`), so a snapshot serializes back to the same objects the operator
//! wrote. Checking and turning them into something fast is the job of
//! [`crate::compile`]; here we only describe the shape.
//!
//! Serialization is the Kubernetes shape (`apiVersion`, `kind`, `metadata`,
//! `spec`), in JSON as well: that is what the control plane sends to proxies.
//! Deserialization goes through the same checks as the YAML loader, so a
//! snapshot that arrives over the wire cannot hold anything a file could not.

pub mod anomaly;
mod authorization;
pub mod egress;
pub mod gateway;
pub mod grpc_route;
pub mod http_route;
pub mod ingress;
pub mod istio_egress;
mod namespace;
mod network_policy;
mod peer_authentication;
pub mod rate_limit;
pub mod reference_grant;
mod scalar;
pub mod secret;
mod service;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use anomaly::{AnomalyRule, Quarantine};
pub use authorization::{
    Action, AuthorizationPolicy, AuthorizationPolicySpec, Condition, Operation, Rule, RuleFrom,
    RuleTo, Source, WorkloadSelector,
};
pub use egress::EgressPolicy;
pub use gateway::Gateway;
pub use grpc_route::GrpcRoute;
pub use http_route::HttpRoute;
pub use ingress::Ingress;
pub use istio_egress::{ServiceEntry, Sidecar};
pub use namespace::Namespace;
pub use network_policy::{
    EgressRule, IngressRule, IntOrString, IpBlock, LabelSelector, LabelSelectorRequirement,
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, PolicyType,
};
pub use peer_authentication::{Mtls, MtlsMode, PeerAuthentication, PeerAuthenticationSpec};
pub use rate_limit::RateLimitPolicy;
pub use reference_grant::ReferenceGrant;
pub use scalar::Scalar;
pub use secret::TlsSecret;
pub use service::{Service, ServicePort, ServiceSpec};

/// Labels of a workload or a namespace (`metadata.labels`).
pub type Labels = BTreeMap<String, String>;

/// The root namespace: policies here apply to the whole mesh, as in Istio.
/// Palisade's control plane runs in `mesh-system`, so that is its root.
pub const ROOT_NAMESPACE: &str = "mesh-system";

/// The namespace of an object that names none. Kubernetes tooling puts such an
/// object in the current context's namespace, which is `default` unless the
/// user changed it; a folder of YAML has no context, so we use that default.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The trust domain `cluster.local` in a policy means "this mesh's trust
/// domain", as in Istio, so policies copied from a default install keep working.
pub const TRUST_DOMAIN_ALIAS: &str = "cluster.local";

/// Annotation: `"true"` evaluates and reports the object, never enforces it.
pub const ANNOTATION_DRY_RUN: &str = "palisade.dev/dry-run";

/// Annotation: an RFC 3339 instant after which the object no longer applies.
pub const ANNOTATION_EXPIRES_AT: &str = "palisade.dev/expires-at";

/// When a dry run began (RFC 3339), for objects without a
/// `metadata.creationTimestamp` (files of the local mesh): `meshctl policy
/// lint` flags dry runs that last too long.
pub const ANNOTATION_DRY_RUN_SINCE: &str = "palisade.dev/dry-run-since";

/// The label Kubernetes puts on every namespace (since 1.21), so a
/// namespaceSelector can pick one namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// apiVersions accepted for the Istio-compatible kinds.
pub const SECURITY_API_VERSIONS: [&str; 3] = [
    "security.palisade.dev/v1",
    "security.istio.io/v1",
    "security.istio.io/v1beta1",
];

/// apiVersion of Kubernetes NetworkPolicy.
pub const NETWORKING_API_VERSION: &str = "networking.k8s.io/v1";

/// apiVersion of the Kubernetes core kinds (Namespace, Service).
pub const CORE_API_VERSION: &str = "v1";

/// The Gateway API's group and version (HTTPRoute, GRPCRoute).
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// apiVersion of Palisade's own policy kinds (RateLimitPolicy, EgressPolicy).
pub const POLICY_API_VERSION: &str = "policy.palisade.dev/v1alpha1";

/// `metadata` of any object. Fields the mesh does not use (uid,
/// resourceVersion, managedFields...) are accepted and dropped, so objects
/// exported from a cluster load as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar::string_map"
    )]
    pub labels: Labels,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar::string_map"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Set by the API server; kept so `meshctl policy lint` can tell how
    /// long a dry run has lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

impl ObjectMeta {
    /// The namespace the object lives in, with the documented default.
    pub fn namespace_or_default(&self) -> &str {
        // Kubernetes reads an empty namespace as the default one too.
        self.namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// The kinds Palisade models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    AuthorizationPolicy,
    PeerAuthentication,
    NetworkPolicy,
    Namespace,
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
    RateLimitPolicy,
    Gateway,
    Ingress,
    EgressPolicy,
    ServiceEntry,
    Sidecar,
    ReferenceGrant,
    AnomalyRule,
    Quarantine,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Namespace => "Namespace",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::RateLimitPolicy => "RateLimitPolicy",
            Kind::Gateway => "Gateway",
            Kind::Ingress => "Ingress",
            Kind::EgressPolicy => "EgressPolicy",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::AnomalyRule => "AnomalyRule",
            Kind::Quarantine => "Quarantine",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which object: what a decision names and what errors point at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds (Namespace).
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// `<kind> <namespace>/<name>`, the form DESIGN.md fixes for denials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One policy object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Object {
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    NetworkPolicy(NetworkPolicy),
    Namespace(Namespace),
    #[serde(rename = "HTTPRoute")]
    HttpRoute(HttpRoute),
    #[serde(rename = "GRPCRoute")]
    GrpcRoute(GrpcRoute),
    RateLimitPolicy(RateLimitPolicy),
    Gateway(Gateway),
    Ingress(Ingress),
    EgressPolicy(EgressPolicy),
    ServiceEntry(ServiceEntry),
    Sidecar(Sidecar),
    ReferenceGrant(ReferenceGrant),
    AnomalyRule(AnomalyRule),
    Quarantine(Quarantine),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::Namespace(_) => Kind::Namespace,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::RateLimitPolicy(_) => Kind::RateLimitPolicy,
            Object::Gateway(_) => Kind::Gateway,
            Object::Ingress(_) => Kind::Ingress,
            Object::EgressPolicy(_) => Kind::EgressPolicy,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::Sidecar(_) => Kind::Sidecar,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::AnomalyRule(_) => Kind::AnomalyRule,
            Object::Quarantine(_) => Kind::Quarantine,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::RateLimitPolicy(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::EgressPolicy(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::Sidecar(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::AnomalyRule(o) => &o.metadata,
            Object::Quarantine(o) => &o.metadata,
        }
    }

    /// Whether `palisade.dev/dry-run` is `"true"`: reported, never enforced.
    /// An EgressPolicy in `mode: dry-run` is one too.
    pub fn is_dry_run(&self) -> bool {
        self.metadata()
            .annotations
            .get(ANNOTATION_DRY_RUN)
            .is_some_and(|v| v == "true")
            || matches!(self, Object::EgressPolicy(p) if p.spec.mode == egress::EgressMode::DryRun)
    }

    /// `kind namespace/name`; namespaced kinds get the default namespace when
    /// they name none.
    pub fn object_ref(&self) -> ObjectRef {
        let metadata = self.metadata();
        let namespace = match self {
            Object::Namespace(_) => String::new(),
            _ => metadata.namespace_or_default().to_owned(),
        };
        ObjectRef {
            kind: self.kind(),
            namespace,
            name: metadata.name.clone(),
        }
    }
}

/// The whole policy in force: what the control plane holds, pushes (a
/// per-workload subset of it) and what a proxy compiles.
///
/// JSON form: `{"objects": [<Kubernetes-shaped objects>...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub objects: Vec<Object>,
}

impl Snapshot {
    /// JSON for the wire (the control plane embeds it in its protobuf message).
    pub fn to_json(&self) -> String {
        // Serializing plain data (strings, maps, vectors) cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
