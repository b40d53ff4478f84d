//! Control plane settings, parsed from flags (and `MESH_*` environment variables).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Shortest certificate lifetime: below this, renewal traffic and clock skew
/// dominate and a control plane restart could outlive every certificate.
pub const MIN_CERT_TTL: Duration = Duration::from_secs(30);

/// Where policy and workloads come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// A watched folder of YAML (local mode).
    File,
    /// The Kubernetes API server.
    Kubernetes,
}

/// mesh-control-plane: issues workload certificates (SPIFFE X.509-SVIDs) and
/// serves the Identity API over TLS.
#[derive(Debug, Clone, Parser)]
#[command(name = "mesh-control-plane", version, about, long_about = None)]
pub struct Args {
    /// Data directory: CA material (ca/), the join-token key (token.key) and
    /// trust-bundle.pem. Created on first start; keys are mode 0600.
    #[arg(long, env = "MESH_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Folder of policy YAML to watch (local mode).
    #[arg(long, env = "MESH_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,

    /// gRPC over TLS (Identity, Policy).
    #[arg(long, env = "MESH_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Plain-HTTP admin endpoint: /live, /ready, /metrics, /status.
    #[arg(long, env = "MESH_ADMIN", default_value = "127.0.0.1:9990")]
    pub admin: SocketAddr,

    /// The mesh's SPIFFE trust domain.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// Lifetime of issued workload certificates (e.g. 1m, 1h, 24h); at least 1m.
    #[arg(long, env = "MESH_CERT_TTL", default_value = "24h", value_parser = parse_ttl)]
    pub cert_ttl: Duration,

    /// Longest lifetime a workload may ask for; longer requests are clamped to it.
    #[arg(long, env = "MESH_MAX_CERT_TTL", default_value = "7d", value_parser = parse_ttl)]
    pub max_cert_ttl: Duration,

    /// Where policy comes from.
    #[arg(long, env = "MESH_SOURCE", value_enum, default_value = "file")]
    pub source: SourceKind,

    /// With --source kubernetes: a plain-HTTP API server URL (e.g. `kubectl
    /// proxy`'s http://127.0.0.1:8001). Without it, the in-cluster API server
    /// with the pod's ServiceAccount.
    #[arg(long, env = "MESH_KUBERNETES_API", value_name = "URL", value_parser = parse_plain_url)]
    pub kubernetes_api: Option<String>,

    /// The ingress's SPIFFE ID (repeatable): only a proxy with this identity
    /// receives Gateways, Ingresses and the TLS Secrets they name. Default:
    /// spiffe://<trust-domain>/ns/mesh-system/sa/ingress.
    #[arg(
        long = "ingress-identity",
        env = "MESH_INGRESS_IDENTITY",
        value_delimiter = ','
    )]
    pub ingress_identities: Vec<String>,

    /// With --source kubernetes: the Secret (cert-manager layout: tls.crt,
    /// tls.key, ca.crt) every replica signs with, as NAMESPACE/NAME.
    #[arg(long, env = "MESH_CA_SECRET", value_name = "NAMESPACE/NAME",
          default_value = crate::source::kubernetes::ca_secret::DEFAULT_CA_SECRET)]
    pub ca_secret: String,

    /// Local mode: how long a proxy's registration outlives the replica it
    /// is connected to. Each registration is a lease file in
    /// DATA_DIR/registrations/, renewed at a third of this; replicas sharing
    /// the data directory read each other's, so their discovery agrees.
    #[arg(long, env = "MESH_REGISTRATION_LEASE", default_value = "10s", value_parser = parse_lease)]
    pub registration_lease: Duration,

    /// SPIFFE IDs an AnomalyRule never quarantines (repeatable), besides the
    /// control plane's own and the ingress's.
    #[arg(
        long = "protected-identity",
        env = "MESH_PROTECTED_IDENTITY",
        value_delimiter = ','
    )]
    pub protected_identities: Vec<String>,

    /// Quarantines active at once; a rule that fires beyond this only
    /// alerts (the event says why).
    #[arg(long, env = "MESH_MAX_QUARANTINES", default_value_t = crate::anomaly::DEFAULT_MAX_QUARANTINES)]
    pub max_quarantines: usize,

    /// POST every anomaly event (alert, quarantine) as JSON to this
    /// http:// URL, retried with backoff from a bounded queue.
    #[arg(long, env = "MESH_EVENT_WEBHOOK", value_name = "URL")]
    pub event_webhook: Option<String>,
}

impl Args {
    /// `--ingress-identity`, or the default for the trust domain.
    pub fn ingress_identities(&self) -> Vec<String> {
        if self.ingress_identities.is_empty() {
            vec![format!(
                "spiffe://{}/ns/{}/sa/ingress",
                self.trust_domain,
                mesh_policy::resource::ROOT_NAMESPACE
            )]
        } else {
            self.ingress_identities.clone()
        }
    }
}

fn parse_plain_url(s: &str) -> Result<String, String> {
    if !s.starts_with("http://") {
        return Err(format!(
            "{s} is not an http:// URL (the in-cluster API server is used over TLS when the flag is not given)"
        ));
    }
    Ok(s.to_owned())
}

/// Shortest registration lease: renewals at a third of it, from every
/// replica for every proxy, must stay rare next to the traffic they serve.
pub const MIN_REGISTRATION_LEASE: Duration = Duration::from_secs(1);

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = mesh_identity::duration::parse_duration(s)?;
    if d < MIN_REGISTRATION_LEASE {
        return Err(format!("{s} is shorter than the minimum lease of 1s"));
    }
    Ok(d)
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = mesh_identity::duration::parse_duration(s)?;
    if d < MIN_CERT_TTL {
        return Err(format!(
            "{s} is shorter than the minimum certificate TTL of 30s"
        ));
    }
    Ok(d)
}
