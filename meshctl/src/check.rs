//! `meshctl check`: what a user runs before installing Palisade (`--pre`)
//! and after: the API server is reachable and new enough, the CA is valid
//! and not near expiry, the webhook is configured, the injector and the
//! control plane are available, and the proxies' certificates are fresh.
//! Everything is read through the API server (the proxies' admin `/certs`
//! through its pod proxy), so `kubectl proxy` is all it needs.

pub mod cli;

use base64::Engine;
use mesh_kube_api::Api;
use serde_json::json;
use time::OffsetDateTime;

use crate::cert::chain;

/// Native sidecars (init containers with `restartPolicy: Always`) are on
/// by default from Kubernetes 1.29; the injected proxy is one.
pub const MIN_KUBERNETES_MINOR: u64 = 29;
/// A CA closer than this to its expiry is a warning: enough time to
/// introduce a new root next to the old one before proxies stop trusting.
pub const DEFAULT_CA_WARNING: time::Duration = time::Duration::days(30);
/// Proxies whose certificates are read; each is one request through the
/// API server, and a sample this size finds a systemic renewal problem.
pub const MAX_PROXIES_CHECKED: usize = 100;

const NAMESPACE: &str = "mesh-system";
const ADMIN_PORT: u16 = 4191;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

fn finding(check: &'static str, outcome: Outcome, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        outcome,
        detail: detail.into(),
    }
}

/// Before installing: the API server and what would conflict.
pub async fn pre_install(api: &Api) -> Vec<Finding> {
    let mut out = vec![version(api).await];
    if out[0].outcome == Outcome::Fail {
        return out;
    }
    let path =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/palisade-injector";
    out.push(match api.json("GET", path, None).await {
        Err(e) if e.status() == Some(http::StatusCode::NOT_FOUND) => {
            finding("not-installed", Outcome::Ok, "no palisade-injector webhook yet")
        }
        Ok(_) => finding(
            "not-installed",
            Outcome::Warn,
            "Palisade is already installed: meshctl install upgrades it (keep the same --secrets-dir)",
        ),
        Err(e) => finding("not-installed", Outcome::Fail, e.to_string()),
    });
    out
}

/// After installing: every part of the mesh.
pub async fn post_install(api: &Api, now: OffsetDateTime) -> Vec<Finding> {
    let mut out = vec![version(api).await];
    if out[0].outcome == Outcome::Fail {
        return out;
    }
    out.push(ca(api, now).await);
    out.push(webhook(api).await);
    out.push(deployment(api, "injector", "mesh-injector").await);
    out.push(deployment(api, "control-plane", "mesh-control-plane").await);
    out.push(proxies(api, now).await);
    out
}

async fn version(api: &Api) -> Finding {
    let v = match api.json("GET", "/version", None).await {
        Ok(v) => v,
        Err(e) => return finding("kubernetes-api", Outcome::Fail, format!("unreachable: {e}")),
    };
    let git = v["gitVersion"].as_str().unwrap_or("?").to_owned();
    let minor = v["minor"]
        .as_str()
        .map(|m| m.trim_end_matches('+'))
        .and_then(|m| m.parse::<u64>().ok());
    match (v["major"].as_str(), minor) {
        (Some("1"), Some(m)) if m >= MIN_KUBERNETES_MINOR => {
            finding("kubernetes-api", Outcome::Ok, git)
        }
        (Some("1"), Some(_)) => finding(
            "kubernetes-api",
            Outcome::Fail,
            format!("{git}: Palisade needs 1.{MIN_KUBERNETES_MINOR} or newer (native sidecars)"),
        ),
        _ => finding(
            "kubernetes-api",
            Outcome::Warn,
            format!("{git}: version not recognized"),
        ),
    }
}

async fn ca(api: &Api, now: OffsetDateTime) -> Finding {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/palisade-ca");
    let secret = match api.json("GET", &path, None).await {
        Ok(s) => s,
        Err(e) => return finding("ca", Outcome::Fail, format!("{NAMESPACE}/palisade-ca: {e}")),
    };
    let mut soonest: Option<(OffsetDateTime, &str)> = None;
    for (key, what) in [("ca.crt", "root"), ("tls.crt", "issuer")] {
        let pem = secret["data"][key]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        let info = pem
            .as_deref()
            .and_then(|p| chain::from_pem(p, key).ok())
            .and_then(|certs| certs.first().and_then(|c| chain::describe(c, 0, key).ok()));
        let Some(info) = info else {
            return finding(
                "ca",
                Outcome::Fail,
                format!("{NAMESPACE}/palisade-ca: data.{key} holds no certificate"),
            );
        };
        if soonest.is_none_or(|(t, _)| info.not_after < t) {
            soonest = Some((info.not_after, what));
        }
    }
    let Some((until, what)) = soonest else {
        return finding("ca", Outcome::Fail, "no certificate");
    };
    let left = until - now;
    let detail = format!(
        "{what} valid until {} ({} days left)",
        crate::cert::report::rfc3339(until),
        left.whole_days()
    );
    if left <= time::Duration::ZERO {
        finding(
            "ca",
            Outcome::Fail,
            format!("{what} expired at {}", crate::cert::report::rfc3339(until)),
        )
    } else if left < DEFAULT_CA_WARNING {
        finding("ca", Outcome::Warn, detail)
    } else {
        finding("ca", Outcome::Ok, detail)
    }
}

async fn webhook(api: &Api) -> Finding {
    let path =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/palisade-injector";
    let config = match api.json("GET", path, None).await {
        Ok(c) => c,
        Err(e) => return finding("webhook", Outcome::Fail, e.to_string()),
    };
    let hooks = config["webhooks"].as_array().cloned().unwrap_or_default();
    if hooks.is_empty() {
        return finding(
            "webhook",
            Outcome::Fail,
            "palisade-injector has no webhooks",
        );
    }
    for h in &hooks {
        let name = h["name"].as_str().unwrap_or("?");
        if h["clientConfig"]["caBundle"]
            .as_str()
            .unwrap_or("")
            .is_empty()
        {
            return finding(
                "webhook",
                Outcome::Fail,
                format!("{name} has no caBundle: the API server cannot verify the injector"),
            );
        }
        if h["failurePolicy"] != "Fail" {
            return finding(
                "webhook",
                Outcome::Warn,
                format!(
                    "{name}: failurePolicy is not Fail, so pods can start unmeshed when the injector is down"
                ),
            );
        }
    }
    finding(
        "webhook",
        Outcome::Ok,
        format!(
            "palisade-injector: {} webhooks, failurePolicy Fail",
            hooks.len()
        ),
    )
}

async fn deployment(api: &Api, check: &'static str, name: &str) -> Finding {
    let path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}");
    let d = match api.json("GET", &path, None).await {
        Ok(d) => d,
        Err(e) => return finding(check, Outcome::Fail, e.to_string()),
    };
    let want = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let available = d["status"]["availableReplicas"].as_u64().unwrap_or(0);
    let detail = format!("{name}: {available}/{want} available");
    match available {
        0 => finding(check, Outcome::Fail, detail),
        a if a < want => finding(check, Outcome::Warn, detail),
        _ => finding(check, Outcome::Ok, detail),
    }
}

/// Meshed running pods, and what their proxies' admin `/certs` says.
async fn proxies(api: &Api, now: OffsetDateTime) -> Finding {
    let pods = match api.json("GET", "/api/v1/pods?limit=500", None).await {
        Ok(p) => p,
        Err(e) => return finding("proxies", Outcome::Fail, e.to_string()),
    };
    let meshed: Vec<(String, String)> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter(|p| {
            p["spec"]["initContainers"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["name"] == mesh_injector::sidecar::PROXY_CONTAINER)
            })
        })
        .filter_map(|p| {
            let m = &p["metadata"];
            Some((
                m["namespace"].as_str()?.to_owned(),
                m["name"].as_str()?.to_owned(),
            ))
        })
        .take(MAX_PROXIES_CHECKED)
        .collect();
    if meshed.is_empty() {
        return finding("proxies", Outcome::Ok, "no meshed pods yet");
    }
    let mut problems = Vec::new();
    let mut oldest = time::Duration::ZERO;
    for (ns, name) in &meshed {
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}:{ADMIN_PORT}/proxy/certs");
        let certs = match api.json("GET", &path, None).await {
            Ok(c) => c,
            Err(e) => {
                problems.push((
                    Outcome::Warn,
                    format!("{ns}/{name}: admin not reachable ({e})"),
                ));
                continue;
            }
        };
        let t = |k: &str| {
            certs[k].as_str().and_then(|s| {
                OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
        };
        let (Some(from), Some(until)) = (t("not_before"), t("not_after")) else {
            problems.push((Outcome::Fail, format!("{ns}/{name}: holds no certificate")));
            continue;
        };
        oldest = oldest.max(now - from);
        // Proxies renew at about half their lifetime: under a quarter left
        // means renewal has been failing for a while.
        let lifetime = until - from;
        if until <= now {
            problems.push((Outcome::Fail, format!("{ns}/{name}: certificate expired")));
        } else if until - now < lifetime / 4 {
            problems.push((
                Outcome::Warn,
                format!(
                    "{ns}/{name}: certificate not renewed ({} min left)",
                    (until - now).whole_minutes()
                ),
            ));
        }
    }
    let outcome = problems
        .iter()
        .map(|(o, _)| *o)
        .max_by_key(|o| *o as u8)
        .unwrap_or(Outcome::Ok);
    let mut detail = format!(
        "{} meshed pods checked, oldest certificate {} min old",
        meshed.len(),
        oldest.whole_minutes()
    );
    for (_, p) in &problems {
        detail.push_str("; ");
        detail.push_str(p);
    }
    finding("proxies", outcome, detail)
}

/// Whether any check failed.
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.outcome == Outcome::Fail)
}

/// `ok    check  detail` lines, or one JSON object.
pub fn render(findings: &[Finding], json_output: bool) -> String {
    if json_output {
        return format!("{}\n", json!({"ok": !failed(findings), "checks": findings}));
    }
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    findings
        .iter()
        .map(|f| {
            let mark = match f.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Warn => "warn",
                Outcome::Fail => "FAIL",
            };
            format!("{mark}  {:width$}  {}\n", f.check, f.detail)
        })
        .collect()
}

#[cfg(test)]
mod tests;
