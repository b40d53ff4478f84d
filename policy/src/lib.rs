//! Palisade policy: the resource model (Kubernetes-style YAML), its
//! compilation, and the one evaluator that the proxy, the control plane and
//! `meshctl policy check` share.
//!
//! ```text
//! YAML files ──load_dir──▶ Snapshot ──for_workload──▶ Snapshot (one proxy's share)
//!                            │  ▲                          │
//!                   to_json  ▼  │ from_json                │
//!                          JSON on the wire        Evaluator::compile
//!                                                          │
//!                     Request ──▶ Evaluator::{inbound, outbound, check} ──▶ Decision
//! ```
//!
//! Semantics are Istio's for AuthorizationPolicy and PeerAuthentication and
//! Kubernetes' for NetworkPolicy; docs/policy.md is the reference, and each
//! test names the rule it checks.

mod compile;
mod error;
mod evaluate;
mod load;
mod path;
pub mod resource;
mod select;
mod validate;

pub use compile::anomaly::{Trigger, quarantine_duration, trigger_of};
pub use compile::edge::{EdgeProtocol, Host};
pub use compile::http_route::{
    Backend, BackendPort, DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_CODES, HeaderEdits,
    MAX_RETRY_ATTEMPTS, Permitted, Retry, Timeouts,
};
pub use compile::rate_limit::{MAX_REQUESTS_PER_SECOND, Quota};
pub use compile::reference_grant::RefusedReference;
pub use error::Error;
pub use evaluate::{
    DEFAULT_MTLS_MODE, DEFAULT_TRUST_DOMAIN, DecidedBy, Decision, DryRunDeny, EdgeCertificate,
    EdgeListenerInfo, EdgeRequest, EgressDecision, EgressRequest, Evaluator, Headers, Http, Peer,
    RateLimitMatch, RateLimitRequest, Request, RouteDecision, RouteRequest, Stage, Verdict,
    Workload, idempotent,
};
pub use load::{Loaded, MAX_FILE_BYTES, SNAPSHOT_ORIGIN, load_dir, parse_yaml};
pub use path::normalize_path;
pub use resource::{Labels, MtlsMode, Object, ObjectRef, Snapshot};

/// The proxy shares one compiled snapshot between its workers (behind an
/// `Arc`, swapped through a `watch` channel), and decisions travel into
/// async tasks: both must stay thread-safe.
const _: fn() = || {
    fn thread_safe<T: Send + Sync>() {}
    thread_safe::<Evaluator>();
    thread_safe::<Decision>();
    thread_safe::<Snapshot>();
};
