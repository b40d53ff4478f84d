//! `meshctl route get --admin URL`: the routes and rate limits a running
//! proxy holds and the endpoints its requests went to, from its admin
//! `GET /routes`:
//!
//! `{"version": N | null, "routes": [HTTPRoute...], "grpc_routes":
//!   [GRPCRoute...], "rate_limits":
//!   [RateLimitPolicy...], "endpoints": [{"address", "rtt_ms", "in_flight",
//!   "state", "ejected_for_ms"}]}`

pub mod cli;

use std::fmt::Write as _;
use std::time::Duration;

use hyper::StatusCode;
use mesh_policy::resource::grpc_route::{GrpcRoute, GrpcRouteMatch};
use mesh_policy::resource::http_route::{BackendRef, HttpRoute, HttpRouteMatch, ParentRef};
use mesh_policy::resource::rate_limit::{Limit, RateLimitPolicy};
use serde::Deserialize;

use crate::cert::AdminError;
use crate::cert::admin::{Target, get_within, quote};

const ROUTES_PATH: &str = "/routes";
/// Largest `/routes` answer read (a proxy's share of the snapshot).
const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RouteGetError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("{url} did not answer with a /routes document: {reason}")]
    Document { url: String, reason: String },
}

/// What `/routes` says, plus the body as sent (printed by `-o json`).
#[derive(Debug, Clone)]
pub struct RoutesDocument {
    pub version: Option<u64>,
    pub routes: Vec<HttpRoute>,
    pub grpc_routes: Vec<GrpcRoute>,
    pub rate_limits: Vec<RateLimitPolicy>,
    pub endpoints: Vec<Endpoint>,
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Endpoint {
    pub address: String,
    pub rtt_ms: f64,
    pub in_flight: u32,
    pub state: String,
    pub ejected_for_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Document {
    version: Option<u64>,
    #[serde(default)]
    routes: Vec<serde_json::Value>,
    #[serde(default)]
    grpc_routes: Vec<serde_json::Value>,
    #[serde(default)]
    rate_limits: Vec<serde_json::Value>,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

/// Fetches `/routes` from the proxy admin at `url` within `timeout`.
pub async fn fetch(url: &str, timeout: Duration) -> Result<RoutesDocument, RouteGetError> {
    let target = Target::endpoint(url, ROUTES_PATH)?;
    let (status, body) = get_within(&target, MAX_BYTES, timeout).await?;
    from_response(&target, status, &body)
}

fn from_response(
    target: &Target,
    status: StatusCode,
    body: &[u8],
) -> Result<RoutesDocument, RouteGetError> {
    let url = target.url();
    if status != StatusCode::OK {
        return Err(AdminError::Status {
            url,
            status: status.as_u16(),
            body: quote(body),
        }
        .into());
    }
    let bad = |reason: String| RouteGetError::Document {
        url: url.clone(),
        reason,
    };
    let raw = std::str::from_utf8(body)
        .map_err(|_| bad("the body is not UTF-8".to_owned()))?
        .to_owned();
    let doc: Document = serde_json::from_str(&raw).map_err(|e| bad(e.to_string()))?;
    Ok(RoutesDocument {
        version: doc.version,
        routes: objects(doc.routes, "routes").map_err(bad)?,
        grpc_routes: objects(doc.grpc_routes, "grpc_routes").map_err(bad)?,
        rate_limits: objects(doc.rate_limits, "rate_limits").map_err(bad)?,
        endpoints: doc.endpoints,
        raw,
    })
}

/// The objects of one list, each without its `kind` (the list says it).
fn objects<T: serde::de::DeserializeOwned>(
    list: Vec<serde_json::Value>,
    field: &str,
) -> Result<Vec<T>, String> {
    list.into_iter()
        .enumerate()
        .map(|(i, mut o)| {
            if let Some(map) = o.as_object_mut() {
                map.remove("kind");
            }
            serde_json::from_value(o).map_err(|e| format!("{field}[{i}]: {e}"))
        })
        .collect()
}

fn grpc_matches(m: &[GrpcRouteMatch]) -> String {
    if m.is_empty() {
        return "*".into();
    }
    m.iter()
        .map(|m| {
            let mut parts = Vec::new();
            if let Some(method) = &m.method {
                parts.push(format!(
                    "{}/{}",
                    method.service.as_deref().unwrap_or("*"),
                    method.method.as_deref().unwrap_or("*")
                ));
            }
            parts.extend(m.headers.iter().map(|h| format!("{}={}", h.name, h.value)));
            if parts.is_empty() {
                "*".into()
            } else {
                parts.join(" ")
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn parents(refs: &[ParentRef], ns: &str) -> String {
    refs.iter()
        .map(|p| {
            let pns = p.namespace.as_deref().unwrap_or(ns);
            match p.port {
                Some(port) => format!("{pns}/{}:{port}", p.name),
                None => format!("{pns}/{}", p.name),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn backends(refs: &[BackendRef], ns: &str) -> String {
    let list = refs
        .iter()
        .map(|b| {
            let bns = b.namespace.as_deref().unwrap_or(ns);
            format!(
                "{bns}/{}:{} ({})",
                b.name,
                b.port.map_or("-".into(), |p| p.to_string()),
                b.weight.unwrap_or(1)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if list.is_empty() {
        "(the parent)".into()
    } else {
        list
    }
}

fn limit(l: &Limit) -> String {
    let burst = l.burst.unwrap_or(l.requests_per_second);
    format!("{}/s burst {burst}", l.requests_per_second)
}

fn matches(m: &[HttpRouteMatch]) -> String {
    if m.is_empty() {
        return "*".into();
    }
    m.iter()
        .map(|m| {
            let mut parts = Vec::new();
            if let Some(p) = &m.path {
                parts.push(format!(
                    "{} {}",
                    p.match_type.as_deref().unwrap_or("PathPrefix"),
                    p.value.as_deref().unwrap_or("/")
                ));
            }
            if let Some(method) = &m.method {
                parts.push(method.clone());
            }
            parts.extend(m.headers.iter().map(|h| format!("{}={}", h.name, h.value)));
            parts.extend(
                m.query_params
                    .iter()
                    .map(|q| format!("?{}={}", q.name, q.value)),
            );
            if parts.is_empty() {
                "*".into()
            } else {
                parts.join(" ")
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Aligned columns, two spaces apart.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in [&header].into_iter().chain(rows) {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

impl RoutesDocument {
    pub fn to_json(&self) -> String {
        let mut out = self.raw.trim_end().to_owned();
        out.push('\n');
        out
    }

    /// A line of counts, then a table each of route rules, rate limits and
    /// endpoints (those that are not empty).
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "policy version: {}\nroutes: {}, rate limits: {}, endpoints: {}\n",
            self.version.map_or("none yet".into(), |v| v.to_string()),
            self.routes.len() + self.grpc_routes.len(),
            self.rate_limits.len(),
            self.endpoints.len(),
        );
        let mut rows = Vec::new();
        for r in &self.routes {
            let ns = r.metadata.namespace.as_deref().unwrap_or("default");
            let name = format!("HTTPRoute {ns}/{}", r.metadata.name);
            let parents = parents(&r.spec.parent_refs, ns);
            for (i, rule) in r.spec.rules.iter().enumerate() {
                let timeouts = rule.timeouts.as_ref().map_or("-".into(), |t| {
                    let mut v = Vec::new();
                    if let Some(r) = &t.request {
                        v.push(format!("request {r}"));
                    }
                    if let Some(b) = &t.backend_request {
                        v.push(format!("backendRequest {b}"));
                    }
                    if v.is_empty() {
                        "-".into()
                    } else {
                        v.join(", ")
                    }
                });
                let retry = rule.retry.as_ref().map_or("-".into(), |r| {
                    format!(
                        "{} attempts on {:?}{}",
                        r.attempts.unwrap_or(0),
                        r.codes,
                        r.backoff
                            .as_deref()
                            .map(|b| format!(", backoff {b}"))
                            .unwrap_or_default()
                    )
                });
                rows.push(vec![
                    if i == 0 { name.clone() } else { String::new() },
                    if i == 0 {
                        parents.clone()
                    } else {
                        String::new()
                    },
                    i.to_string(),
                    matches(&rule.matches),
                    backends(&rule.backend_refs, ns),
                    timeouts,
                    retry,
                ]);
            }
        }
        for r in &self.grpc_routes {
            let ns = r.metadata.namespace.as_deref().unwrap_or("default");
            let name = format!("GRPCRoute {ns}/{}", r.metadata.name);
            let parents = parents(&r.spec.parent_refs, ns);
            for (i, rule) in r.spec.rules.iter().enumerate() {
                rows.push(vec![
                    if i == 0 { name.clone() } else { String::new() },
                    if i == 0 {
                        parents.clone()
                    } else {
                        String::new()
                    },
                    i.to_string(),
                    grpc_matches(&rule.matches),
                    backends(&rule.backend_refs, ns),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
        if !rows.is_empty() {
            out.push('\n');
            table(
                &mut out,
                &[
                    "ROUTE",
                    "PARENTS",
                    "RULE",
                    "MATCHES",
                    "BACKENDS (WEIGHT)",
                    "TIMEOUTS",
                    "RETRY",
                ],
                &rows,
            );
        }
        let rows: Vec<Vec<String>> = self
            .rate_limits
            .iter()
            .map(|p| {
                let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                let s = &p.spec;
                let selector = s.selector.as_ref().map_or("(all)".into(), |sel| {
                    sel.match_labels
                        .iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let scope = [
                    (!s.ports.is_empty()).then(|| format!("ports {:?}", s.ports)),
                    (!s.paths.is_empty()).then(|| format!("paths {:?}", s.paths)),
                    (!s.methods.is_empty()).then(|| format!("methods {:?}", s.methods)),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
                let dry = p
                    .metadata
                    .annotations
                    .get(mesh_policy::resource::ANNOTATION_DRY_RUN)
                    .is_some_and(|v| v == "true");
                vec![
                    format!("RateLimitPolicy {ns}/{}", p.metadata.name),
                    selector,
                    if scope.is_empty() { "*".into() } else { scope },
                    s.total.as_ref().map_or("-".into(), limit),
                    s.per_client.as_ref().map_or("-".into(), limit),
                    s.overrides.len().to_string(),
                    if dry { "yes".into() } else { "-".into() },
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push('\n');
            table(
                &mut out,
                &[
                    "RATE LIMIT",
                    "SELECTOR",
                    "REQUESTS",
                    "TOTAL",
                    "PER CLIENT",
                    "OVERRIDES",
                    "DRY-RUN",
                ],
                &rows,
            );
        }
        let rows: Vec<Vec<String>> = self
            .endpoints
            .iter()
            .map(|e| {
                let state = match e.ejected_for_ms {
                    Some(ms) => format!("{} ({:.1}s left)", e.state, ms as f64 / 1000.0),
                    None => e.state.clone(),
                };
                vec![
                    e.address.clone(),
                    format!("{:.1}ms", e.rtt_ms),
                    e.in_flight.to_string(),
                    state,
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push('\n');
            table(
                &mut out,
                &["ENDPOINT", "LATENCY", "IN FLIGHT", "STATE"],
                &rows,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
