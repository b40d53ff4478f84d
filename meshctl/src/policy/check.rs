//! `meshctl policy check`: would this call be allowed, and what decides it?
//!
//! The question is put to `mesh_policy::Evaluator::check`, the evaluator the
//! proxies run: the source's NetworkPolicy egress (what its proxy checks),
//! then the destination's PeerAuthentication, NetworkPolicy ingress and
//! AuthorizationPolicy (what the destination's proxy checks). HTTP paths go
//! through `normalize_path` first, as at the proxy, which answers a path it
//! refuses with 400 before any policy is consulted.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use mesh_identity::SpiffeId;
use mesh_policy::{
    DecidedBy, Decision, Evaluator, Headers, Http, Labels, Peer, Quota, RateLimitRequest, Request,
    RouteRequest, Verdict, Workload, normalize_path,
};
use serde::Serialize;

use super::{PolicyError, load};

/// The `stage` of a request the proxy refuses before evaluating policy.
pub const STAGE_REQUEST: &str = "request";

/// The caller, as the destination's proxy would identify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An mTLS caller: its certificate names `spiffe://TD/ns/NS/sa/SA`.
    Mtls {
        namespace: String,
        service_account: String,
    },
    /// No client certificate. `namespace` is where the calling pod runs, if
    /// known; it matters only with source labels (NetworkPolicy).
    Plaintext { namespace: Option<String> },
}

impl Caller {
    fn namespace(&self) -> Option<&str> {
        match self {
            Caller::Mtls { namespace, .. } => Some(namespace),
            Caller::Plaintext { namespace } => namespace.as_deref(),
        }
    }
}

/// The HTTP part of a call; absent for plain TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCall {
    pub method: String,
    /// As the client sends it; normalized before matching.
    pub path: String,
    pub host: Option<String>,
    /// `(name, value)`; names compare case-insensitively.
    pub headers: Vec<(String, String)>,
}

/// One call from a source to a destination, as `policy check` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub caller: Caller,
    /// The source pod's labels. With them the source's egress is checked too
    /// and ingress podSelectors can match it; without them the source is
    /// known only by its identity, as at a proxy with no discovery data.
    pub from_labels: Option<Labels>,
    pub source_ip: Option<IpAddr>,
    pub to_namespace: String,
    pub to_labels: Labels,
    pub to_ip: Option<IpAddr>,
    pub port: u16,
    pub http: Option<HttpCall>,
    /// The Service the caller calls (`name`, Service port), for the route
    /// its request takes; the Service is in `to_namespace`.
    pub service: Option<(String, u16)>,
}

/// Why a call could not even be asked about.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Boxed: a load error carries every problem found, and would make
    /// every `Result` of this module as large.
    #[error(transparent)]
    Policy(Box<PolicyError>),
    #[error("invalid caller identity: {0}")]
    Identity(String),
    #[error("{0}")]
    Call(String),
}

impl From<PolicyError> for CheckError {
    fn from(error: PolicyError) -> Self {
        CheckError::Policy(Box::new(error))
    }
}

/// The answer, in the words of the proxy's 403 body and access log.
///
/// JSON (`-o json`), field names are a contract:
/// `{"decision": "allow"|"deny", "label": "allow"|"deny"|"dry_run_deny",
///   "stage": "PeerAuthentication"|"NetworkPolicy"|"AuthorizationPolicy"|"request",
///   "decided_by": "...", "direction": "outbound"|"inbound",
///   "dry_run": null | {"decision": "deny", "stage": ..., "decided_by": ...},
///   "audit": null | "...", "principal": null | "spiffe://...",
///   "path": null | "/normalized", "status": null | 400 | 403}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub decision: &'static str,
    /// The `decision` label of `mesh_authz_decisions_total`.
    pub label: &'static str,
    pub stage: &'static str,
    pub decided_by: String,
    /// Which proxy decides: the source's (`outbound`, NetworkPolicy egress)
    /// or the destination's (`inbound`).
    pub direction: &'static str,
    pub dry_run: Option<DryRun>,
    pub audit: Option<String>,
    /// The caller's SPIFFE ID; `null` for a plaintext caller.
    pub principal: Option<String>,
    /// The path the rules were matched against, after normalization.
    pub path: Option<String>,
    /// What an HTTP client gets instead of a response: 400 for a refused
    /// path, 403 for an inbound denial; `null` when allowed, for TCP, and for
    /// an egress denial (the source's proxy refuses the connection).
    pub status: Option<u16>,
    /// With `--to-service` and an HTTP request: the route it takes at the
    /// caller's proxy (`null`: none, Palisade's defaults). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Option<RouteReport>>,
    /// For an HTTP request: the RateLimitPolicies it counts against at the
    /// destination's proxy. Absent when none applies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitReport>,
}

/// The route rule a request takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    /// `HTTPRoute <namespace>/<name> rule <n>`.
    pub name: String,
    pub backends: Vec<BackendReport>,
    pub request_timeout_ms: Option<u64>,
    pub backend_request_timeout_ms: Option<u64>,
    pub retry: Option<RetryReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendReport {
    /// `namespace/name`.
    pub service: String,
    /// A number, or the Service port's name (an Ingress `port.name`).
    pub port: mesh_policy::BackendPort,
    pub weight: u32,
    /// Why requests drawn to it get 500 (another namespace without a
    /// ReferenceGrant), when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    pub attempts: u32,
    pub codes: Vec<u16>,
    pub backoff_ms: u64,
    /// Whether this request's method may be retried (idempotent, or named
    /// by the rule's match).
    pub applies: bool,
}

/// One limit a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimitReport {
    /// `RateLimitPolicy <namespace>/<name>`.
    pub policy: String,
    pub dry_run: bool,
    pub total: Option<LimitReport>,
    /// The caller's own limit: an override's or `perClient`.
    pub per_client: Option<LimitReport>,
    /// The index in `spec.overrides` that set `per_client`.
    #[serde(rename = "override")]
    pub by_override: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitReport {
    pub requests_per_second: u32,
    pub burst: u32,
}

impl RouteReport {
    fn describe(&self) -> String {
        let backends = if self.backends.is_empty() {
            "no backend with weight (the caller gets 500)".to_owned()
        } else {
            self.backends
                .iter()
                .map(|b| {
                    let refused = b.refused.as_deref().map(|r| format!(", 500: {r}"));
                    format!(
                        "{}:{} (weight {}{})",
                        b.service,
                        b.port,
                        b.weight,
                        refused.unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!("{} -> {backends}", self.name);
        if let Some(t) = self.request_timeout_ms {
            out.push_str(&format!("; timeouts.request {t}ms"));
        }
        if let Some(t) = self.backend_request_timeout_ms {
            out.push_str(&format!("; timeouts.backendRequest {t}ms"));
        }
        if let Some(r) = &self.retry {
            out.push_str(&format!(
                "; retry {} attempts on {:?}, backoff {}ms{}",
                r.attempts,
                r.codes,
                r.backoff_ms,
                if r.applies {
                    ""
                } else {
                    " (not for this method)"
                }
            ));
        }
        out
    }
}

impl RateLimitReport {
    fn describe(&self) -> String {
        let limit = |l: &LimitReport| format!("{}/s burst {}", l.requests_per_second, l.burst);
        let mut parts = Vec::new();
        if let Some(t) = &self.total {
            parts.push(format!("total {}", limit(t)));
        }
        if let Some(c) = &self.per_client {
            let by = self
                .by_override
                .map(|i| format!(" (override {i})"))
                .unwrap_or_default();
            parts.push(format!("per client {}{by}", limit(c)));
        }
        format!(
            "{}: {}{}",
            self.policy,
            parts.join(", "),
            if self.dry_run {
                " (dry run: counted, never refused)"
            } else {
                ""
            }
        )
    }
}

/// What a dry-run object would have done if enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRun {
    /// Always `deny`: a dry run is reported only when it would deny.
    pub decision: &'static str,
    pub stage: &'static str,
    pub decided_by: String,
}

impl CheckReport {
    pub fn is_allowed(&self) -> bool {
        self.decision == Verdict::Allow.as_str()
    }

    /// First line as in docs/policy.md (`allow: <decided by>`, with the
    /// dry-run deny in parentheses), then one `label: value` line per detail.
    pub fn to_table(&self) -> String {
        let mut out = format!("{}: {}", self.decision, self.decided_by);
        if let Some(dry) = &self.dry_run {
            out.push_str(&format!(" (dry run would deny: {})", dry.decided_by));
        }
        out.push('\n');
        let side = match self.direction {
            "outbound" => "at the source's proxy",
            _ => "at the destination's proxy",
        };
        let stage = if self.stage == STAGE_REQUEST {
            "request (the proxy answers 400 Bad Request; no policy is evaluated)".to_owned()
        } else {
            format!("{} ({}, {side})", self.stage, self.direction)
        };
        let mut rows = vec![("stage", stage)];
        if let Some(dry) = &self.dry_run {
            rows.push((
                "dry run",
                format!("would deny: {} (stage {})", dry.decided_by, dry.stage),
            ));
        }
        if let Some(audit) = &self.audit {
            rows.push(("audit", audit.clone()));
        }
        rows.push((
            "caller",
            self.principal
                .clone()
                .unwrap_or_else(|| "plaintext (no identity)".to_owned()),
        ));
        if let Some(path) = &self.path {
            rows.push(("path", path.clone()));
        }
        if let Some(status) = self.status {
            rows.push(("status", status.to_string()));
        }
        match &self.route {
            None => {}
            Some(None) => rows.push((
                "route",
                "none (the Service's endpoints, no retries, no request timeout)".to_owned(),
            )),
            Some(Some(r)) => rows.push(("route", r.describe())),
        }
        for l in &self.rate_limits {
            rows.push(("limit", l.describe()));
        }
        for (label, value) in rows {
            out.push_str(&format!("  {:<9}{value}\n", format!("{label}:")));
        }
        out
    }

    pub fn to_json(&self) -> String {
        // Plain strings and numbers: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    fn from_decision(decision: &Decision, direction: &'static str, call: &Asked) -> CheckReport {
        let allowed = decision.is_allowed();
        CheckReport {
            decision: decision.verdict.as_str(),
            label: decision.label(),
            stage: decision.stage.as_str(),
            decided_by: decision.decided_by.to_string(),
            direction,
            dry_run: decision.dry_run.as_ref().map(|d| DryRun {
                decision: Verdict::Deny.as_str(),
                stage: d.stage.as_str(),
                decided_by: d.decided_by.to_string(),
            }),
            audit: decision.audit.as_ref().map(DecidedBy::to_string),
            principal: call.principal.clone(),
            path: call.path.clone(),
            // The destination's proxy answers a denied HTTP request with 403;
            // the source's proxy refuses the connection, so there is no status.
            status: (call.path.is_some() && !allowed && direction == "inbound").then_some(403),
            route: None,
            rate_limits: Vec::new(),
        }
    }
}

/// What is derived from a [`Call`] before asking.
struct Asked {
    principal: Option<String>,
    path: Option<String>,
}

/// Loads `config_dir` and answers `call` at `now` for a mesh whose trust
/// domain is `trust_domain`.
pub fn check_dir(
    config_dir: &Path,
    trust_domain: &str,
    call: &Call,
    now: SystemTime,
) -> Result<(CheckReport, Vec<String>), CheckError> {
    // The call is checked before the folder, so a typo in a flag is reported
    // as such and not hidden behind a policy problem.
    let principal = principal(trust_domain, &call.caller)?;
    validate(call)?;
    let loaded = load(config_dir)?;
    let evaluator = Evaluator::compile(&loaded.snapshot, trust_domain).map_err(|error| {
        PolicyError::Compile {
            dir: config_dir.to_path_buf(),
            error,
        }
    })?;
    let report = evaluate(&evaluator, call, principal, now);
    Ok((report, loaded.warnings))
}

/// The trust domain checked on its own, so a plaintext check with a bad
/// `--trust-domain` is refused as well.
fn principal(trust_domain: &str, caller: &Caller) -> Result<Option<String>, CheckError> {
    SpiffeId::parse(&format!("spiffe://{trust_domain}"))
        .map_err(|e| CheckError::Identity(format!("--trust-domain {trust_domain:?}: {e}")))?;
    match caller {
        Caller::Mtls {
            namespace,
            service_account,
        } => SpiffeId::workload(trust_domain, namespace, service_account)
            .map(|id| Some(id.to_string()))
            .map_err(|e| {
                CheckError::Identity(format!(
                    "--from-namespace {namespace:?} --from-service-account \
                     {service_account:?}: {e}"
                ))
            }),
        Caller::Plaintext { .. } => Ok(None),
    }
}

fn validate(call: &Call) -> Result<(), CheckError> {
    let bad = |m: String| Err(CheckError::Call(m));
    if call.to_namespace.is_empty() || call.to_namespace.contains('/') {
        return bad(format!(
            "--to-namespace {:?} is not a namespace name",
            call.to_namespace
        ));
    }
    if call.port == 0 {
        return bad("--port must be 1-65535".to_owned());
    }
    if call.from_labels.is_some() && call.caller.namespace().is_none() {
        return bad(
            "--from-labels describes the source pod, which needs --from-namespace".to_owned(),
        );
    }
    if let Some(http) = &call.http
        && (http.method.is_empty() || !http.method.bytes().all(|b| b.is_ascii_graphic()))
    {
        return bad(format!("--method {:?} is not an HTTP method", http.method));
    }
    Ok(())
}

/// Asks `evaluator` about `call`, as both proxies would at `now`.
pub fn evaluate(
    evaluator: &Evaluator,
    call: &Call,
    principal: Option<String>,
    now: SystemTime,
) -> CheckReport {
    let mut asked = Asked {
        principal,
        path: None,
    };
    if let Some(http) = &call.http {
        match normalize_path(&http.path) {
            Ok(path) => asked.path = Some(path),
            Err(e) => return refused(&e, asked),
        }
    }
    let headers: Vec<(&str, &str)> = call
        .http
        .iter()
        .flat_map(|h| h.headers.iter())
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let http = match (&call.http, &asked.path) {
        (Some(h), Some(path)) => Some(Http {
            method: &h.method,
            path,
            host: h.host.as_deref(),
            headers: Headers::Pairs(&headers),
            request_principal: None,
            remote_ip: None,
        }),
        _ => None,
    };
    let source = match (&call.from_labels, call.caller.namespace()) {
        (Some(labels), Some(namespace)) => Some(Workload { namespace, labels }),
        _ => None,
    };
    let request = Request {
        peer: match &asked.principal {
            Some(principal) => Peer::Mtls { principal },
            None => Peer::Plaintext,
        },
        source_ip: call.source_ip,
        source,
        destination: Some(Workload {
            namespace: &call.to_namespace,
            labels: &call.to_labels,
        }),
        destination_ip: call.to_ip,
        destination_port: call.port,
        http,
        now,
    };
    let decision = evaluator.check(&request);
    // `check` returns the egress decision when the source's proxy denies;
    // asking the outbound side alone tells which proxy it was.
    let direction = if evaluator.outbound(&request).is_allowed() {
        "inbound"
    } else {
        "outbound"
    };
    let mut report = CheckReport::from_decision(&decision, direction, &asked);
    if let (Some(h), Some(path)) = (&call.http, &asked.path) {
        report.rate_limits = rate_limits(evaluator, call, h, path, &asked, now);
        if let Some((name, port)) = &call.service {
            report.route = Some(route(evaluator, call, h, path, name, *port, now));
        }
    }
    report
}

fn rate_limits(
    evaluator: &Evaluator,
    call: &Call,
    http: &HttpCall,
    path: &str,
    asked: &Asked,
    now: SystemTime,
) -> Vec<RateLimitReport> {
    let quota = |q: Quota| LimitReport {
        requests_per_second: q.requests_per_second,
        burst: q.burst,
    };
    evaluator
        .rate_limits(&RateLimitRequest {
            destination: Workload {
                namespace: &call.to_namespace,
                labels: &call.to_labels,
            },
            port: call.port,
            method: &http.method,
            path,
            principal: asked.principal.as_deref(),
            host: http.host.as_deref(),
            route: None,
            now,
        })
        .map(|m| RateLimitReport {
            policy: m.policy.to_string(),
            dry_run: m.dry_run,
            total: m.total.map(quota),
            per_client: m.per_client.map(quota),
            by_override: m.by_override,
        })
        .collect()
}

fn route(
    evaluator: &Evaluator,
    call: &Call,
    http: &HttpCall,
    path: &str,
    service: &str,
    port: u16,
    now: SystemTime,
) -> Option<RouteReport> {
    let mut headers = http::HeaderMap::new();
    for (n, v) in &http.headers {
        if let (Ok(n), Ok(v)) = (
            http::header::HeaderName::from_bytes(n.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.append(n, v);
        }
    }
    let query = http.path.split_once('?').map(|(_, q)| q);
    let d = evaluator.route(&RouteRequest {
        client_namespace: call.caller.namespace(),
        service_namespace: &call.to_namespace,
        service_name: service,
        port,
        method: &http.method,
        path,
        query,
        headers: &headers,
        now,
    })?;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let method_retried = mesh_policy::idempotent(&http.method) || d.method_named;
    Some(RouteReport {
        name: format!("{} rule {}", d.route, d.rule),
        backends: d
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| BackendReport {
                service: format!("{}/{}", b.namespace, b.name),
                port: b.port.clone(),
                weight: b.weight,
                refused: b.refusal(now),
            })
            .collect(),
        request_timeout_ms: d.timeouts.request.map(ms),
        backend_request_timeout_ms: d.timeouts.backend_request.map(ms),
        retry: d.retry.map(|r| RetryReport {
            attempts: r.attempts,
            codes: r.codes.clone(),
            backoff_ms: ms(r.backoff),
            applies: method_retried,
        }),
    })
}

/// The proxy's answer to a path it cannot match safely: 400, no policy asked.
fn refused(error: &mesh_policy::Error, asked: Asked) -> CheckReport {
    CheckReport {
        decision: Verdict::Deny.as_str(),
        label: "deny",
        stage: STAGE_REQUEST,
        decided_by: error.to_string(),
        direction: "inbound",
        dry_run: None,
        audit: None,
        principal: asked.principal,
        path: None,
        status: Some(400),
        route: None,
        rate_limits: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
