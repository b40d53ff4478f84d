//! What every injected proxy shares: its image, where the control plane is,
//! the trust domain and default resources. One per injector (flags of
//! `mesh-injector`, or of `meshctl inject`).

/// The proxy image of this release: the injector and the proxy are released
/// together, so a cluster never runs a proxy older than its injector.
pub const DEFAULT_PROXY_IMAGE: &str =
    concat!("ghcr.io/palisade-mesh/proxy:", env!("CARGO_PKG_VERSION"));
/// The control plane's gRPC Service, as `deploy/` installs it.
pub const DEFAULT_CONTROL_PLANE: &str = "mesh-control-plane.mesh-system.svc:8443";
/// The mesh's trust domain unless the operator names another (DESIGN.md).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The ConfigMap (in the pod's namespace) holding `trust-bundle.pem`.
pub const DEFAULT_TRUST_BUNDLE_CONFIGMAP: &str = "palisade-trust-bundle";
/// CPU request of a proxy: an idle proxy uses a few millicores; 100m lets
/// the scheduler account for a busy one. No CPU limit is set: throttling
/// the data path adds latency to every request of the app.
pub const DEFAULT_PROXY_CPU: &str = "100m";
/// Memory request and limit of a proxy: a proxy's resident memory is about
/// 10 MiB plus its connection buffers; 128Mi leaves room for bursts while a
/// leak still ends in an OOM kill of the proxy, not of the node.
pub const DEFAULT_PROXY_MEMORY: &str = "128Mi";
/// Lifetime of the projected ServiceAccount token: the kubelet refreshes it
/// at 80%, and a stolen token is useless an hour later. 10 minutes is the
/// API server's minimum; an hour keeps token churn low.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// Settings shared by every injected pod (flags of `mesh-injector` and
/// `meshctl inject`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Settings {
    /// The image of the proxy and of its init container
    #[arg(long, env = "MESH_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE, value_name = "IMAGE")]
    pub proxy_image: String,
    /// The control plane's gRPC address, as proxies reach it
    #[arg(long, env = "MESH_CONTROL_PLANE", default_value = DEFAULT_CONTROL_PLANE, value_name = "HOST:PORT")]
    pub control_plane: String,
    /// The mesh's SPIFFE trust domain
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The ConfigMap, in the pod's namespace, whose trust-bundle.pem the proxy trusts
    #[arg(long, env = "MESH_TRUST_BUNDLE_CONFIGMAP", default_value = DEFAULT_TRUST_BUNDLE_CONFIGMAP, value_name = "NAME")]
    pub trust_bundle_configmap: String,
    /// CPU request of each proxy, unless the pod's palisade.dev/proxy-cpu says otherwise
    #[arg(long, env = "MESH_PROXY_CPU", default_value = DEFAULT_PROXY_CPU, value_name = "QUANTITY")]
    pub proxy_cpu: String,
    /// Memory request and limit of each proxy, unless palisade.dev/proxy-memory says otherwise
    #[arg(long, env = "MESH_PROXY_MEMORY", default_value = DEFAULT_PROXY_MEMORY, value_name = "QUANTITY")]
    pub proxy_memory: String,
    /// Lifetime of the proxy's projected ServiceAccount token, in seconds (at least 600)
    #[arg(long, env = "MESH_TOKEN_EXPIRATION_SECONDS", default_value_t = DEFAULT_TOKEN_EXPIRATION_SECONDS,
          value_parser = clap::value_parser!(i64).range(600..), value_name = "SECONDS")]
    pub token_expiration_seconds: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.to_owned(),
            control_plane: DEFAULT_CONTROL_PLANE.to_owned(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            trust_bundle_configmap: DEFAULT_TRUST_BUNDLE_CONFIGMAP.to_owned(),
            proxy_cpu: DEFAULT_PROXY_CPU.to_owned(),
            proxy_memory: DEFAULT_PROXY_MEMORY.to_owned(),
            token_expiration_seconds: DEFAULT_TOKEN_EXPIRATION_SECONDS,
        }
    }
}
