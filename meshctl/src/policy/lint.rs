//! `meshctl policy lint`: policy that loads fine but is probably not what
//! the operator meant, or leaves a door open.
//!
//! Each finding has a stable `code` (scripts may filter on it), a severity,
//! the object it is about and, for objects, the file it came from.
//!
//! | code | severity | finding |
//! |---|---|---|
//! | `allow-all` | warning (error mesh-wide) | an ALLOW rule with no `from`, `to` or `when`, or whose `from` only holds wildcards (`principals: ["*"]`, `namespaces: ["*"]`, `0.0.0.0/0`); a NetworkPolicy ingress rule `{}` |
//! | `no-default-deny` | warning | a namespace where a request that no policy mentions is allowed (see [`has_default_deny`]) |
//! | `unrestricted-egress` | warning / info | no Egress NetworkPolicy in a namespace (warning); Egress policies that leave some pods out (info); an egress rule to any destination (no `to`, or `0.0.0.0/0` / `::/0` without `except`): warning on every port, info when limited to ports |
//! | `expired` | warning | `palisade.dev/expires-at` has passed: the object no longer applies |
//! | `expires-soon` | info | it passes within `--soon` |
//! | `dry-run` | warning | `palisade.dev/dry-run: "true"`: evaluated and reported, never enforced |
//! | `per-client-above-total` | info | a RateLimitPolicy whose `perClient` (or an override) allows as much as its `total`: the total refuses first |
//! | `permissive-mtls` | warning / info | PeerAuthentication PERMISSIVE or DISABLE (plaintext admitted); info when it has an expiry |
//! | `unrestricted-egress` (outside the mesh) | warning | no EgressPolicy with `default: deny` for the whole namespace (or mesh-wide): its pods may reach any host on the internet; an EgressPolicy rule allowing every address (`0.0.0.0/0`, `::/0`) |
//! | `wide-egress-wildcard` | warning | an EgressPolicy host wildcard over a public suffix (`*.com`, `*.co.uk`, `*.amazonaws.com`): wider than one registrable domain |
//! | `old-dry-run` | warning | an EgressPolicy in dry-run for longer than `DRY_RUN_MAX_AGE` (by `palisade.dev/dry-run-since` or `metadata.creationTimestamp`): decide, then enforce or delete it |
//!
//! Dry-run and expired objects never count as a default deny or an egress
//! restriction: they enforce nothing.

mod reach;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use mesh_policy::resource::{
    Action, AuthorizationPolicy, NetworkPolicy, PeerAuthentication, ROOT_NAMESPACE,
};
use mesh_policy::{Loaded, Object, ObjectRef, Snapshot};

use super::{PolicyError, load, origins};
use crate::cert::report::{format_span, rfc3339};
use reach::{
    admits_plaintext, allows_everything, any_destination, is_none_or_empty, isolates, port_list,
    selector_is_empty, selects_all,
};
pub use report::{Finding, LintReport, Severity};

/// How far ahead `expires-soon` looks by default: a week gives a team that
/// runs lint in CI a few working days to extend or drop an exception.
pub const DEFAULT_SOON: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long an EgressPolicy may stay in dry-run before `old-dry-run`: two
/// weeks of telemetry show a workload's destinations, weekly jobs included.
pub const DRY_RUN_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// Public suffixes under which anyone may register a name: a wildcard
/// over one of them spans unrelated owners. Every single label (a TLD)
/// is one; beyond those, the multi-label suffixes of the Public Suffix
/// List that egress rules meet most (country second levels and the large
/// shared hosting domains). Not the whole list.
const MULTI_LABEL_PUBLIC_SUFFIXES: &[&str] = &[
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "me.uk",
    "com.au",
    "net.au",
    "org.au",
    "co.jp",
    "ne.jp",
    "or.jp",
    "co.nz",
    "co.za",
    "co.in",
    "com.br",
    "com.cn",
    "com.mx",
    "com.tr",
    "com.sg",
    "com.hk",
    "co.kr",
    "com.tw",
    "com.ar",
    "co.il",
    "github.io",
    "gitlab.io",
    "herokuapp.com",
    "appspot.com",
    "blogspot.com",
    "cloudfront.net",
    "amazonaws.com",
    "s3.amazonaws.com",
    "azurewebsites.net",
    "cloudapp.net",
    "web.app",
    "firebaseapp.com",
    "netlify.app",
    "vercel.app",
    "pages.dev",
    "workers.dev",
    "ngrok.io",
    "ngrok-free.app",
];

/// Whether `suffix` (lowercase, no leading dot) is a public suffix.
pub fn is_public_suffix(suffix: &str) -> bool {
    !suffix.contains('.') || MULTI_LABEL_PUBLIC_SUFFIXES.contains(&suffix)
}

/// Loads `dir` and lints it at `now`; loader warnings (skipped kinds) are
/// returned for the caller to show.
pub fn lint_dir(
    dir: &Path,
    now: SystemTime,
    soon: Duration,
) -> Result<(LintReport, Vec<String>), PolicyError> {
    let loaded = load(dir)?;
    let files = origins(dir);
    Ok((lint(&loaded, &files, now, soon), loaded.warnings))
}

/// Lints a loaded folder. `files` names the file of each object, if known.
pub fn lint(
    loaded: &Loaded,
    files: &BTreeMap<ObjectRef, String>,
    now: SystemTime,
    soon: Duration,
) -> LintReport {
    let snapshot = &loaded.snapshot;
    let mut lint = Lint {
        files,
        now,
        services: loaded
            .services
            .iter()
            .map(|s| {
                (
                    s.metadata.namespace_or_default().to_owned(),
                    s.metadata.name.clone(),
                )
            })
            .collect(),
        port_names: loaded
            .services
            .iter()
            .flat_map(|s| {
                let ns = s.metadata.namespace_or_default();
                s.spec.ports.iter().filter_map(move |p| {
                    Some((ns.to_owned(), s.metadata.name.clone(), p.name.clone()?))
                })
            })
            .collect(),
        gateways: snapshot
            .objects
            .iter()
            .filter(|o| matches!(o, Object::Gateway(_)))
            .map(|o| {
                (
                    o.metadata().namespace_or_default().to_owned(),
                    o.metadata().name.clone(),
                )
            })
            .collect(),
        secrets: loaded
            .secrets
            .iter()
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect(),
        findings: Vec::new(),
    };
    for object in &snapshot.objects {
        lint.object(object, soon);
    }
    // Cross-namespace references the ReferenceGrants do not allow: the
    // compiled snapshot knows them (a snapshot that loaded compiles).
    if let Ok(evaluator) = mesh_policy::Evaluator::compile(snapshot, "cluster.local") {
        for r in evaluator.refused_references(now) {
            let why = if r.lapsed {
                "the ReferenceGrant that allowed it has expired"
            } else {
                "no ReferenceGrant in its namespace allows it"
            };
            let effect = if r.target.starts_with("Secret") {
                "the listener has no certificate from it"
            } else {
                "its share of requests gets 500"
            };
            lint.findings.push(Finding {
                severity: Severity::Error,
                code: "ref-not-permitted",
                object: r.object.to_string(),
                file: lint.files.get(&r.object).cloned(),
                message: format!(
                    "{}: {} is in another namespace and {why}: {effect}",
                    r.at, r.target
                ),
            });
        }
    }
    for namespace in namespaces(loaded) {
        lint.default_deny(snapshot, &namespace);
        lint.egress_isolation(snapshot, &namespace);
    }
    let mut findings = lint.findings;
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| (&a.object, a.code, &a.message).cmp(&(&b.object, b.code, &b.message)))
    });
    LintReport { findings }
}

struct Lint<'a> {
    files: &'a BTreeMap<ObjectRef, String>,
    now: SystemTime,
    /// (namespace, name) of every Service in the folder.
    services: std::collections::BTreeSet<(String, String)>,
    /// (namespace, name, port name) of every named Service port.
    port_names: std::collections::BTreeSet<(String, String, String)>,
    /// (namespace, name) of every Gateway of class palisade.
    gateways: std::collections::BTreeSet<(String, String)>,
    /// (namespace, name) of every kubernetes.io/tls Secret.
    secrets: std::collections::BTreeSet<(String, String)>,
    findings: Vec<Finding>,
}

impl Lint<'_> {
    fn about(&mut self, object: &Object, severity: Severity, code: &'static str, message: String) {
        let id = object.object_ref();
        self.findings.push(Finding {
            severity,
            code,
            object: id.to_string(),
            file: self.files.get(&id).cloned(),
            message,
        });
    }

    fn about_namespace(
        &mut self,
        namespace: &str,
        severity: Severity,
        code: &'static str,
        message: String,
    ) {
        self.findings.push(Finding {
            severity,
            code,
            object: format!("Namespace {namespace}"),
            file: None,
            message,
        });
    }

    fn object(&mut self, object: &Object, soon: Duration) {
        // Namespaces carry no policy: the annotations mean nothing there.
        if matches!(object, Object::Namespace(_)) {
            return;
        }
        if let Some(at) = object.expires_at() {
            let when = rfc3339(at.into());
            match at.duration_since(self.now) {
                // Judged as the evaluator does: it applies while now < at.
                Err(_) | Ok(Duration::ZERO) => {
                    let ago = self.now.duration_since(at).unwrap_or_default();
                    self.about(
                        object,
                        Severity::Warning,
                        "expired",
                        format!(
                            "expired at {when} ({} ago) and no longer applies; delete it, or \
                             move palisade.dev/expires-at if the exception is still needed",
                            format_span(ago.as_secs())
                        ),
                    );
                    // It enforces nothing any more; whatever else it says is moot.
                    return;
                }
                Ok(left) if left <= soon => self.about(
                    object,
                    Severity::Info,
                    "expires-soon",
                    format!(
                        "expires at {when} (in {}); after that it no longer applies",
                        format_span(left.as_secs())
                    ),
                ),
                Ok(_) => {}
            }
        }
        if object.is_dry_run() {
            let message = match object {
                Object::EgressPolicy(p)
                    if p.spec.mode == mesh_policy::resource::egress::EgressMode::DryRun =>
                {
                    "spec.mode is dry-run: its denials are counted and logged but nothing is \
                     refused; set mode: enforce once `meshctl egress report` shows what it \
                     would cut off"
                }
                _ => {
                    "palisade.dev/dry-run is \"true\": it is evaluated and reported but \
                     enforces nothing; remove the annotation to enforce it, or delete it"
                }
            };
            self.about(object, Severity::Warning, "dry-run", message.to_owned());
        }
        match object {
            Object::AuthorizationPolicy(p) => self.authorization(object, p),
            Object::NetworkPolicy(p) => self.network_policy(object, p),
            Object::PeerAuthentication(p) => self.peer_authentication(object, p),
            Object::Namespace(_) => {}
            Object::HttpRoute(r) => self.route(
                object,
                &r.spec.parent_refs,
                r.spec.rules.iter().map(|x| x.backend_refs.as_slice()),
            ),
            Object::GrpcRoute(r) => self.route(
                object,
                &r.spec.parent_refs,
                r.spec.rules.iter().map(|x| x.backend_refs.as_slice()),
            ),
            Object::RateLimitPolicy(p) => self.rate_limit(object, p),
            Object::EgressPolicy(p) => self.egress_policy(object, p),
            Object::ServiceEntry(se) => {
                for (j, host) in se.spec.hosts.iter().enumerate() {
                    self.wildcard(object, &format!("spec.hosts[{j}]"), host);
                }
            }
            Object::Sidecar(_) | Object::AnomalyRule(_) | Object::Quarantine(_) => {}
            Object::ReferenceGrant(g) => {
                for (i, to) in g.spec.to.iter().enumerate() {
                    if to.name.is_none() {
                        self.about(
                            object,
                            Severity::Warning,
                            "wide-reference-grant",
                            format!(
                                "spec.to[{i}] names no object: it lets the namespaces in spec.from \
                                 reach every {} of {}; name the one they need",
                                to.kind,
                                object.metadata().namespace_or_default()
                            ),
                        );
                    }
                }
            }
            Object::Gateway(g) => {
                let own = object.metadata().namespace_or_default().to_owned();
                let refs: Vec<(usize, String, String)> = g
                    .spec
                    .listeners
                    .iter()
                    .enumerate()
                    .flat_map(|(i, l)| {
                        let own = &own;
                        l.tls
                            .iter()
                            .flat_map(|t| t.certificate_refs.iter())
                            .map(move |r| {
                                let ns = r.namespace.clone().unwrap_or_else(|| own.clone());
                                (i, ns, r.name.clone())
                            })
                    })
                    .collect();
                for (i, ns, name) in refs {
                    self.secret(object, &ns, &name, &format!("listener {i}"));
                }
            }
            Object::Ingress(ing) => {
                let own = object.metadata().namespace_or_default().to_owned();
                let backends: Vec<(String, Option<String>)> = ing
                    .spec
                    .rules
                    .iter()
                    .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
                    .map(|p| &p.backend)
                    .chain(ing.spec.default_backend.iter())
                    .filter_map(|b| {
                        b.service
                            .as_ref()
                            .map(|s| (s.name.clone(), s.port.name.clone()))
                    })
                    .collect();
                for (name, port_name) in backends {
                    if !self.services.contains(&(own.clone(), name.clone())) {
                        self.about(
                            object,
                            Severity::Error,
                            "unknown-backend",
                            format!(
                                "backend Service {own}/{name} does not exist: its requests get 503"
                            ),
                        );
                    } else if let Some(port) = port_name
                        && !self
                            .port_names
                            .contains(&(own.clone(), name.clone(), port.clone()))
                    {
                        self.about(
                            object,
                            Severity::Error,
                            "unknown-backend",
                            format!(
                                "backend Service {own}/{name} has no port named {port:?}: its requests get 503"
                            ),
                        );
                    }
                }
                let secrets: Vec<String> = ing
                    .spec
                    .tls
                    .iter()
                    .filter_map(|t| t.secret_name.clone())
                    .collect();
                for name in secrets {
                    self.secret(object, &own, &name, "tls");
                }
            }
        }
    }

    /// A certificate Secret that is not in the folder: the ingress has no
    /// certificate for those hosts and refuses their handshakes.
    fn secret(&mut self, object: &Object, ns: &str, name: &str, at: &str) {
        if !self.secrets.contains(&(ns.to_owned(), name.to_owned())) {
            self.about(
                object,
                Severity::Error,
                "unknown-secret",
                format!(
                    "{at}: kubernetes.io/tls Secret {ns}/{name} is not in the folder: the \
                     ingress has no certificate for it"
                ),
            );
        }
    }

    fn wildcard(&mut self, object: &Object, field: &str, host: &str) {
        if let Some(suffix) = host.strip_prefix("*.")
            && is_public_suffix(suffix)
        {
            self.about(
                object,
                Severity::Warning,
                "wide-egress-wildcard",
                format!(
                    "{field} {host:?} matches every name under the public suffix {suffix:?}, \
                     not one registrable domain; name the domain (\"*.example.{suffix}\")"
                ),
            );
        }
    }

    fn egress_policy(&mut self, object: &Object, policy: &mesh_policy::resource::EgressPolicy) {
        for (i, rule) in policy.spec.allow.iter().enumerate() {
            for (j, host) in rule.hosts.iter().enumerate() {
                self.wildcard(object, &format!("spec.allow[{i}].hosts[{j}]"), host);
            }
            for (j, cidr) in rule.cidrs.iter().enumerate() {
                if cidr.ends_with("/0") {
                    self.about(
                        object,
                        Severity::Warning,
                        "unrestricted-egress",
                        format!(
                            "spec.allow[{i}].cidrs[{j}] {cidr} allows every address outside \
                             the mesh"
                        ),
                    );
                }
            }
        }
        if object.is_dry_run()
            && let Some(since) = object.dry_run_since()
            && let Ok(age) = self.now.duration_since(since)
            && age > DRY_RUN_MAX_AGE
        {
            self.about(
                object,
                Severity::Warning,
                "old-dry-run",
                format!(
                    "in dry-run for {}: its would-be denials are in \
                         mesh_egress_connections_total{{decision=\"dry_run_deny\"}} and \
                         `meshctl egress report`; enforce it (spec.mode: enforce) or delete it",
                    format_span(age.as_secs())
                ),
            );
        }
    }

    /// A per-client limit at or above the total can never be what refuses
    /// a request: the total is reached first.
    fn rate_limit(&mut self, object: &Object, policy: &mesh_policy::resource::RateLimitPolicy) {
        let Some(total) = &policy.spec.total else {
            return;
        };
        let client = policy
            .spec
            .per_client
            .iter()
            .map(|l| ("perClient".to_owned(), l.requests_per_second));
        let overrides = policy
            .spec
            .overrides
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("overrides[{i}]"), o.requests_per_second));
        for (field, rps) in client.chain(overrides).collect::<Vec<_>>() {
            if rps >= total.requests_per_second {
                self.about(
                    object,
                    Severity::Info,
                    "per-client-above-total",
                    format!(
                        "spec.{field} allows {rps}/s, not less than spec.total's {}/s: the total \
                         limit is reached first",
                        total.requests_per_second
                    ),
                );
            }
        }
    }

    /// Routes that cannot work as written: a parent or backend Service that
    /// is not in the folder (its share of requests gets 500), or a rule
    /// whose weights sum to 0 (every request it matches gets 500).
    /// HTTPRoute and GRPCRoute: parents and backends that exist, rules with
    /// a backend of weight above 0 (`rules`: each rule's backends).
    fn route<'o>(
        &mut self,
        object: &Object,
        parents: &[mesh_policy::resource::http_route::ParentRef],
        rules: impl Iterator<Item = &'o [mesh_policy::resource::http_route::BackendRef]>,
    ) {
        let own = object.metadata().namespace_or_default().to_owned();
        for p in parents {
            let ns = p.namespace.clone().unwrap_or_else(|| own.clone());
            let (kind, known) = if p.kind.as_deref() == Some("Service") {
                ("Service", &self.services)
            } else {
                ("Gateway", &self.gateways)
            };
            if !known.contains(&(ns.clone(), p.name.clone())) {
                self.about(
                    object,
                    Severity::Warning,
                    "unknown-parent",
                    format!(
                        "parent {kind} {ns}/{} is not in the folder: the route applies to nothing",
                        p.name
                    ),
                );
            }
        }
        for (i, backends) in rules.enumerate() {
            let total: u64 = backends
                .iter()
                .map(|b| u64::from(b.weight.unwrap_or(1)))
                .sum();
            if total == 0 {
                self.about(
                    object,
                    Severity::Error,
                    "no-backend",
                    format!(
                        "rule {i} has no backend with a weight above 0: every request it matches gets 500"
                    ),
                );
            }
            for b in backends.iter() {
                let ns = b.namespace.clone().unwrap_or_else(|| own.clone());
                if !self.services.contains(&(ns.clone(), b.name.clone())) {
                    self.about(
                        object,
                        Severity::Error,
                        "unknown-backend",
                        format!(
                            "rule {i}: backend Service {ns}/{} does not exist: its share of requests gets 500",
                            b.name
                        ),
                    );
                }
            }
        }
    }

    fn authorization(&mut self, object: &Object, policy: &AuthorizationPolicy) {
        if !matches!(policy.spec.action, None | Some(Action::Allow)) {
            return;
        }
        let namespace = object.metadata().namespace_or_default();
        let everywhere = selects_all(policy.spec.selector.as_ref());
        let (severity, scope) = match (namespace == ROOT_NAMESPACE, everywhere) {
            (true, true) => (Severity::Error, "every workload of the mesh".to_owned()),
            (true, false) => (
                Severity::Warning,
                "the workloads it selects in every namespace".to_owned(),
            ),
            (false, true) => (
                Severity::Warning,
                format!("every workload of namespace {namespace}"),
            ),
            (false, false) => (
                Severity::Warning,
                format!("the workloads it selects in namespace {namespace}"),
            ),
        };
        for (i, rule) in policy.spec.rules.iter().flatten().enumerate() {
            if let Some(what) = allows_everything(rule) {
                self.about(
                    object,
                    severity,
                    "allow-all",
                    format!("rule {i} {what}, to {scope}"),
                );
            }
        }
    }

    fn network_policy(&mut self, object: &Object, policy: &NetworkPolicy) {
        let spec = &policy.spec;
        let (ingress, egress) = isolates(policy);
        if ingress {
            for (i, rule) in spec.ingress.iter().flatten().enumerate() {
                if is_none_or_empty(&rule.from) && is_none_or_empty(&rule.ports) {
                    self.about(
                        object,
                        Severity::Warning,
                        "allow-all",
                        format!(
                            "ingress rule {i} has no from and no ports: it admits every source \
                             on every port to the pods it selects"
                        ),
                    );
                }
            }
        }
        if egress {
            for (i, rule) in spec.egress.iter().flatten().enumerate() {
                let Some(to) = any_destination(rule.to.as_deref()) else {
                    continue;
                };
                let (severity, ports) = match rule.ports.as_deref() {
                    None | Some([]) => (Severity::Warning, "on every port".to_owned()),
                    Some(ports) => (Severity::Info, format!("on ports {}", port_list(ports))),
                };
                self.about(
                    object,
                    severity,
                    "unrestricted-egress",
                    format!("egress rule {i} allows {to} {ports}"),
                );
            }
        }
    }

    fn peer_authentication(&mut self, object: &Object, policy: &PeerAuthentication) {
        let mut open: Vec<String> = Vec::new();
        if let Some(mode) = policy.spec.mtls.as_ref().and_then(|m| m.mode)
            && admits_plaintext(mode)
        {
            open.push(format!("mtls.mode {}", mode.as_str()));
        }
        for (port, mtls) in policy.spec.port_level_mtls.iter().flatten() {
            if let Some(mode) = mtls.mode
                && admits_plaintext(mode)
            {
                open.push(format!("port {port} {}", mode.as_str()));
            }
        }
        if open.is_empty() {
            return;
        }
        let what = format!(
            "{} admits plaintext callers (no identity, no encryption)",
            open.join(", ")
        );
        // An exception with an end date is the documented way to migrate.
        match object.expires_at() {
            Some(at) => self.about(
                object,
                Severity::Info,
                "permissive-mtls",
                format!("{what} until {}", rfc3339(at.into())),
            ),
            None => self.about(
                object,
                Severity::Warning,
                "permissive-mtls",
                format!("{what}; give it a palisade.dev/expires-at or make it STRICT"),
            ),
        }
    }

    /// See [`has_default_deny`].
    fn default_deny(&mut self, snapshot: &Snapshot, namespace: &str) {
        if has_default_deny(snapshot, namespace, self.now) {
            return;
        }
        let mut message = format!(
            "no default deny: no ALLOW AuthorizationPolicy without a selector applies here \
             (e.g. `spec: {{}}` in {namespace} or {ROOT_NAMESPACE}) and no NetworkPolicy \
             isolates all its pods for ingress, so a request that no policy mentions is allowed"
        );
        let partial: Vec<String> = snapshot
            .objects
            .iter()
            .filter(|o| self.in_force(o) && o.metadata().namespace_or_default() == namespace)
            .filter(|o| match o {
                Object::AuthorizationPolicy(p) => {
                    matches!(p.spec.action, None | Some(Action::Allow))
                        && !selects_all(p.spec.selector.as_ref())
                }
                _ => false,
            })
            .map(|o| o.object_ref().to_string())
            .collect();
        if !partial.is_empty() {
            message.push_str(&format!(
                " (only the workloads selected by {} are default-deny)",
                partial.join(", ")
            ));
        }
        self.about_namespace(namespace, Severity::Warning, "no-default-deny", message);
    }

    fn egress_isolation(&mut self, snapshot: &Snapshot, namespace: &str) {
        let egress: Vec<&NetworkPolicy> = snapshot
            .objects
            .iter()
            .filter(|o| self.in_force(o))
            .filter_map(|o| match o {
                Object::NetworkPolicy(p) if o.metadata().namespace_or_default() == namespace => {
                    Some(p)
                }
                _ => None,
            })
            .filter(|p| isolates(p).1)
            .collect();
        let outside = snapshot.objects.iter().any(|o| match o {
            Object::EgressPolicy(p) => {
                let ns = o.metadata().namespace_or_default();
                self.in_force(o)
                    && (ns == namespace || ns == ROOT_NAMESPACE)
                    && p.spec.default == mesh_policy::resource::egress::EgressDefault::Deny
                    && p.spec
                        .selector
                        .as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        .is_none_or(|l| l.is_empty())
            }
            Object::Sidecar(s) => {
                let ns = o.metadata().namespace_or_default();
                self.in_force(o)
                    && (ns == namespace || ns == ROOT_NAMESPACE)
                    && s.spec
                        .outbound_traffic_policy
                        .as_ref()
                        .and_then(|p| p.mode.as_deref())
                        == Some("REGISTRY_ONLY")
                    && s.spec
                        .workload_selector
                        .as_ref()
                        .is_none_or(|w| w.labels.is_empty())
            }
            _ => false,
        });
        let isolated = egress
            .iter()
            .any(|p| selector_is_empty(&p.spec.pod_selector));
        if isolated {
            // Every pod's egress is limited to what the NetworkPolicies
            // name, outside the mesh included.
            return;
        }
        if outside {
            // Outside the mesh is governed by name and address; inside it,
            // the destinations' own policies decide.
            return;
        }
        if egress.is_empty() {
            self.about_namespace(
                namespace,
                Severity::Warning,
                "unrestricted-egress",
                "neither a NetworkPolicy nor an EgressPolicy restricts egress here: its pods may \
                 connect anywhere, any host on the internet included (add an EgressPolicy \
                 without a selector and with default: deny, rolled out in mode: dry-run first \
                 (docs/egress.md), or a NetworkPolicy with podSelector: {} and policyTypes: \
                 [Egress])"
                    .to_owned(),
            );
        } else {
            self.about_namespace(
                namespace,
                Severity::Info,
                "unrestricted-egress",
                "pods that no Egress NetworkPolicy selects may connect anywhere (no policy with \
                 podSelector: {} and policyTypes: [Egress], and no EgressPolicy with default: \
                 deny for the whole namespace)"
                    .to_owned(),
            );
        }
    }

    /// Enforced at `now`: not dry-run, not expired.
    fn in_force(&self, object: &Object) -> bool {
        in_force(object, self.now)
    }
}

fn in_force(object: &Object, now: SystemTime) -> bool {
    !object.is_dry_run() && object.expires_at().is_none_or(|at| now < at)
}

/// A namespace has a default deny when every workload in it denies what no
/// policy allows: an ALLOW AuthorizationPolicy without a selector (or with
/// an empty one) is in force in the namespace or in the root namespace
/// `mesh-system` (then every workload has an ALLOW policy, and Istio denies
/// what none of them matches) and none of its rules allows everything
/// (`allow-all`), or a NetworkPolicy in the namespace with an empty
/// `podSelector` isolates all its pods for ingress. Dry-run and expired
/// objects do not count.
pub fn has_default_deny(snapshot: &Snapshot, namespace: &str, now: SystemTime) -> bool {
    snapshot.objects.iter().any(|o| {
        let in_namespace = o.metadata().namespace_or_default();
        in_force(o, now)
            && match o {
                Object::AuthorizationPolicy(p) => {
                    (in_namespace == namespace || in_namespace == ROOT_NAMESPACE)
                        && matches!(p.spec.action, None | Some(Action::Allow))
                        && selects_all(p.spec.selector.as_ref())
                        && !p
                            .spec
                            .rules
                            .iter()
                            .flatten()
                            .any(|r| allows_everything(r).is_some())
                }
                Object::NetworkPolicy(p) => {
                    in_namespace == namespace
                        && selector_is_empty(&p.spec.pod_selector)
                        && isolates(p).0
                }
                _ => false,
            }
    })
}

/// Namespaces the folder knows: Namespace objects, and the namespace of every
/// other object, Services included (which may not have a Namespace object in
/// the folder).
fn namespaces(loaded: &Loaded) -> BTreeSet<String> {
    let policy = loaded.snapshot.objects.iter().map(|o| match o {
        Object::Namespace(n) => n.metadata.name.clone(),
        other => other.metadata().namespace_or_default().to_owned(),
    });
    let services = loaded
        .services
        .iter()
        .map(|s| s.metadata.namespace_or_default().to_owned());
    policy.chain(services).collect()
}

#[cfg(test)]
mod tests;
