//! The proxy pairs under test, each `client proxy (A) → mTLS → server proxy
//! (B) → upstream`, started as processes pinned to the proxies' CPU, with
//! the same certificates and one worker each.
//!
//! Every pair exposes three routes on A: `http` (to the upstream's HTTP
//! port), `bulk` (to its sink) and `probe` (through a [`crate::tls_probe`]
//! relay to B's HTTP listener, to see the negotiated TLS group).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::certs::{HOP_NAME, PalisadeIssuer, PeerCert};
use crate::http1::{REQUEST, parse_head};
use crate::procs::{self, Child, free_port, loopback};

/// A pair gets this long from start to carrying a request.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// The namespace of every benchmark workload.
pub const NAMESPACE: &str = "bench";

/// Which pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// No proxy: the generator talks to the upstream.
    Direct,
    Palisade,
    /// `palisade-l7` with RUST_LOG=warn: no access-log line per inbound
    /// HTTP request (the default `info` writes one). Not in the default set;
    /// an A/B of what the access log costs.
    PalisadeQuiet,
    /// Palisade whose server side has an L7 rule (principal, method and
    /// path): every request is parsed and authorized on B. Not in the
    /// default set.
    PalisadeL7,
    /// `palisade-l7` run with the mesh-proxy of `--baseline-bin-dir` (an
    /// earlier build): a data-path change measured before and after in one
    /// run. Not in the default set.
    PalisadeL7Base,
    /// `palisade-l7` whose HTTP path goes to a Service (`--service-route`)
    /// with an HTTPRoute (timeout and retry policy) and whose server has a
    /// RateLimitPolicy that is never hit: what traffic management costs a
    /// request. Not in the default set.
    PalisadeL7Routed,
    /// `palisade-l7-routed` without the route and the rate limit: the same
    /// Service hop (`--service-route`, discovery, balancing), nothing in
    /// force. The routed pair's baseline. Not in the default set.
    PalisadeL7Service,
    /// `palisade-l7-routed` run with the mesh-proxy of `--baseline-bin-dir`:
    /// a change to the traffic layers measured before and after in one run.
    /// Not in the default set.
    PalisadeL7RoutedBase,
    /// Palisade with the upstream's HTTP port in `--opaque-ports`: HTTP is
    /// relayed as opaque TCP (`palisade/tcp1`), as before the HTTP path.
    /// Not in the default set.
    PalisadeOpaque,
    Haproxy,
    Nginx,
    Stunnel,
    /// HAProxy `mode http` with `http-reuse always`: an L7 peer that keeps
    /// pooled TLS connections between the pair. Not in the default set.
    HaproxyHttp,
    /// nginx `http` with `proxy_http_version 1.1` and `keepalive` upstream
    /// pools on both hops. Not in the default set.
    NginxHttp,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Palisade => "palisade",
            Kind::PalisadeQuiet => "palisade-quiet",
            Kind::PalisadeL7 => "palisade-l7",
            Kind::PalisadeL7Base => "palisade-l7-base",
            Kind::PalisadeL7Routed => "palisade-l7-routed",
            Kind::PalisadeL7Service => "palisade-l7-service",
            Kind::PalisadeL7RoutedBase => "palisade-l7-routed-base",
            Kind::PalisadeOpaque => "palisade-opaque",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
            Kind::Stunnel => "stunnel",
            Kind::HaproxyHttp => "haproxy-http",
            Kind::NginxHttp => "nginx-http",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct (no proxy)",
            Kind::Palisade => "Palisade",
            Kind::PalisadeQuiet => "Palisade, L7 rule on B, RUST_LOG=warn",
            Kind::PalisadeL7 => "Palisade, L7 rule on B",
            Kind::PalisadeL7Base => "Palisade, L7 rule on B, baseline build",
            Kind::PalisadeL7Routed => "Palisade, L7 rule on B, route + retry + rate limit",
            Kind::PalisadeL7Service => "Palisade, L7 rule on B, Service hop, no route",
            Kind::PalisadeL7RoutedBase => {
                "Palisade, L7 rule on B, route + retry + rate limit, baseline build"
            }
            Kind::PalisadeOpaque => "Palisade, --opaque-ports (tcp1)",
            Kind::Haproxy => "HAProxy tcp",
            Kind::Nginx => "nginx stream",
            Kind::Stunnel => "stunnel",
            Kind::HaproxyHttp => "HAProxy http, http-reuse always",
            Kind::NginxHttp => "nginx http, upstream keepalive",
        }
    }

    /// The program a peer pair needs on PATH.
    pub fn program(self) -> Option<&'static str> {
        match self {
            Kind::Haproxy | Kind::HaproxyHttp => Some("haproxy"),
            Kind::Nginx | Kind::NginxHttp => Some("nginx"),
            Kind::Stunnel => Some("stunnel4"),
            Kind::Direct
            | Kind::Palisade
            | Kind::PalisadeQuiet
            | Kind::PalisadeL7
            | Kind::PalisadeL7Base
            | Kind::PalisadeL7Routed
            | Kind::PalisadeL7Service
            | Kind::PalisadeL7RoutedBase
            | Kind::PalisadeOpaque => None,
        }
    }
}

/// Where things are, shared by every pair of a run.
pub struct Setup {
    pub work: PathBuf,
    pub bin_dir: PathBuf,
    /// Where the baseline build's mesh-proxy is (`palisade-l7-base`).
    pub baseline_bin_dir: Option<PathBuf>,
    pub upstream_http: SocketAddr,
    pub upstream_sink: SocketAddr,
    /// CPU for proxies (and the upstream, and the control plane).
    pub cpu: Option<usize>,
    pub control_plane: ControlPlane,
    pub issuer: PalisadeIssuer,
    /// Most connections a proxy must carry at once (S6), for peer configs.
    pub max_conns: usize,
}

/// The run's control plane: Palisade proxies get their SVIDs from it, and
/// its CA issues the peers' certificates.
pub struct ControlPlane {
    pub child: Child,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl ControlPlane {
    pub fn start(bin_dir: &Path, work: &Path, cpu: Option<usize>) -> anyhow::Result<Self> {
        let data_dir = work.join("cp-data");
        let config_dir = work.join("cp-policy");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::write(config_dir.join("bench-l7.yaml"), l7_policy())?;
        let listen = loopback(free_port()?);
        let admin = loopback(free_port()?);
        let args = vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--config-dir".into(),
            config_dir.display().to_string(),
            "--listen".into(),
            listen.to_string(),
            "--admin".into(),
            admin.to_string(),
        ];
        let mut child = procs::spawn(
            "mesh-control-plane",
            cpu,
            &bin_dir.join("mesh-control-plane"),
            &args,
            &[],
            work.join("control-plane.log"),
        )?;
        procs::wait_for("control plane /ready", READY_DEADLINE, || {
            child.check_alive()?;
            Ok((procs::http_status(admin, "/ready") == Some(200)).then_some(()))
        })?;
        Ok(Self {
            child,
            data_dir,
            listen,
            admin,
        })
    }

    pub fn trust_bundle(&self) -> PathBuf {
        self.data_dir.join("trust-bundle.pem")
    }
}

/// Labels of the `palisade-l7` server proxy, which only the L7 policy selects.
const L7_LABELS: &str = "app=bench-l7";
/// The label that only the `palisade-l7-routed` server adds.
const ROUTED_LABEL: &str = "variant=routed";
/// The Service the routed pair's HTTP goes to.
const ROUTED_SERVICE: &str = "bench-routed";
/// The label that only the `palisade-l7-service` server adds.
const SERVICE_LABEL: &str = "variant=service";
/// The Service the `palisade-l7-service` pair's HTTP goes to.
const PLAIN_SERVICE: &str = "bench-service";

/// The `palisade-l7-service` pair's Service, and nothing else: no route,
/// no rate limit.
fn service_config(upstream_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {PLAIN_SERVICE}, namespace: {NAMESPACE}}}\n\
         spec:\n  clusterIP: 10.96.0.98\n  selector: {{variant: service}}\n  ports: [{{port: 80, targetPort: {upstream_port}}}]\n"
    )
}

/// The routed pairs run side by side, each with a Service of its own
/// (name, clusterIP, the `variant` label only its server has).
fn routed_service(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        Kind::PalisadeL7RoutedBase => ("bench-routed-base", "10.96.0.97", "routed-base"),
        _ => (ROUTED_SERVICE, "10.96.0.99", "routed"),
    }
}

/// A routed pair's Service (its one endpoint: that pair's server), an
/// HTTPRoute with a request timeout and a retry policy, and a
/// RateLimitPolicy on the server far above any load the runs offer.
fn routed_config(upstream_port: u16, kind: Kind) -> String {
    let (name, ip, variant) = routed_service(kind);
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
         spec:\n  clusterIP: {ip}\n  selector: {{variant: {variant}}}\n  ports: [{{port: 80, targetPort: {upstream_port}}}]\n\
         ---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
         spec:\n  parentRefs: [{{kind: Service, group: \"\", name: {name}, port: 80}}]\n  rules:\n\
         \x20   - backendRefs: [{{name: {name}, port: 80}}]\n\
         \x20     timeouts: {{request: 30s}}\n\
         \x20     retry: {{attempts: 2, codes: [502, 503], backoff: 25ms}}\n\
         ---\n\
         apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
         spec:\n  selector: {{matchLabels: {{variant: {variant}}}}}\n\
         \x20 total: {{requestsPerSecond: 1000000}}\n  perClient: {{requestsPerSecond: 1000000}}\n"
    )
}

/// The one policy of a run. It selects only the `palisade-l7` server (the
/// other Palisade pairs have no policy and relay after one L4 decision):
/// its client's identity, GET, any path.
fn l7_policy() -> String {
    format!(
        "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: bench-l7\n  namespace: {NAMESPACE}\nspec:\n  selector:\n    matchLabels: {{app: bench-l7}}\n  rules:\n    - from:\n        - source:\n            principals: [\"cluster.local/ns/{NAMESPACE}/sa/palisade-l7-client\"]\n      to:\n        - operation:\n            methods: [GET]\n            paths: [\"/*\"]\n"
    )
}

/// A running pair.
pub struct Pair {
    pub kind: Kind,
    pub http: SocketAddr,
    pub bulk: SocketAddr,
    pub probe: Option<SocketAddr>,
    /// Where A's probe route connects (the relay listens here).
    pub tap_listen: Option<SocketAddr>,
    /// B's HTTP listener, where the relay forwards.
    pub tap_target: Option<SocketAddr>,
    /// (role, process): "client" is A, "server" is B.
    pub procs: Vec<(&'static str, Child)>,
}

impl Pair {
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.procs.iter().map(|(r, c)| (*r, c.pid())).collect()
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (_, c) in &mut self.procs {
            c.check_alive()?;
        }
        Ok(())
    }

    /// Stops both proxies by PID.
    pub fn stop(&mut self) {
        for (_, c) in &mut self.procs {
            c.stop();
        }
    }
}

/// Listener ports of one pair.
struct Ports {
    a_http: u16,
    a_bulk: u16,
    a_probe: u16,
    tap: u16,
    b_http: u16,
    b_bulk: u16,
}

impl Ports {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            a_http: free_port()?,
            a_bulk: free_port()?,
            a_probe: free_port()?,
            tap: free_port()?,
            b_http: free_port()?,
            b_bulk: free_port()?,
        })
    }
}

fn spiffe(sa: &str) -> String {
    format!(
        "spiffe://{}/ns/{NAMESPACE}/sa/{sa}",
        mesh_identity::DEFAULT_TRUST_DOMAIN
    )
}

/// Starts `kind` and waits until a request passes through it.
pub fn start(kind: Kind, setup: &Setup) -> anyhow::Result<Pair> {
    let mut pair = match kind {
        Kind::Direct => Pair {
            kind,
            http: setup.upstream_http,
            bulk: setup.upstream_sink,
            probe: None,
            tap_listen: None,
            tap_target: None,
            procs: vec![],
        },
        Kind::Palisade
        | Kind::PalisadeQuiet
        | Kind::PalisadeL7
        | Kind::PalisadeL7Base
        | Kind::PalisadeL7Routed
        | Kind::PalisadeL7Service
        | Kind::PalisadeL7RoutedBase
        | Kind::PalisadeOpaque => start_palisade(kind, setup)?,
        Kind::Haproxy | Kind::Nginx | Kind::Stunnel | Kind::HaproxyHttp | Kind::NginxHttp => {
            start_peer(kind, setup)?
        }
    };
    let http = pair.http;
    procs::wait_for(
        &format!("a request through {}", kind.name()),
        READY_DEADLINE,
        || {
            pair.check_alive()?;
            Ok(blocking_get(http).ok())
        },
    )?;
    Ok(pair)
}

/// One mesh-proxy of a run.
pub struct ProxySpec<'a> {
    pub bin: &'a Path,
    /// `client` or `server`: names its token and log files.
    pub role: &'a str,
    pub service_account: &'a str,
    pub inbound: SocketAddr,
    /// `--static-route` values.
    pub routes: Vec<String>,
    pub extra: Vec<String>,
    pub env: &'a [(&'a str, &'a str)],
}

/// Starts one mesh-proxy (one worker, pinned like the rest of the run) with
/// a token for its service account in `dir`; returns it and its admin
/// address. Readiness is the caller's to wait for.
pub fn start_proxy(
    setup: &Setup,
    dir: &Path,
    spec: &ProxySpec<'_>,
) -> anyhow::Result<(Child, SocketAddr)> {
    let cp = &setup.control_plane;
    let key = mesh_identity::token::TokenKey::load_or_generate(&cp.data_dir)
        .context("the control plane's token key")?;
    let token = dir.join(format!("{}.token", spec.role));
    std::fs::write(
        &token,
        key.create(
            NAMESPACE,
            spec.service_account,
            Duration::from_secs(24 * 3600),
        ),
    )?;
    let admin = loopback(free_port()?);
    let mut args: Vec<String> = vec![
        "run".into(),
        "--control-plane".into(),
        cp.listen.to_string(),
        "--trust-bundle".into(),
        cp.trust_bundle().display().to_string(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--service-account".into(),
        spec.service_account.into(),
        "--token-file".into(),
        token.display().to_string(),
        "--inbound".into(),
        spec.inbound.to_string(),
        "--outbound".into(),
        loopback(free_port()?).to_string(),
        "--admin".into(),
        admin.to_string(),
        "--workers".into(),
        "1".into(),
        "--drain-timeout".into(),
        "1s".into(),
    ];
    for r in &spec.routes {
        // `service:LISTEN=NAME`: that listener is the Service NAME.
        match r.strip_prefix("service:").and_then(|r| r.split_once('=')) {
            Some((listen, name)) => {
                args.push("--service-route".into());
                args.push(format!("{listen}={NAMESPACE}/{name}:80"));
            }
            None => {
                args.push("--static-route".into());
                args.push(r.clone());
            }
        }
    }
    args.extend(spec.extra.iter().cloned());
    let child = procs::spawn(
        &format!("mesh-proxy ({})", spec.role),
        setup.cpu,
        spec.bin,
        &args,
        spec.env,
        dir.join(format!("{}.log", spec.role)),
    )?;
    Ok((child, admin))
}

/// Waits until a proxy started by [`start_proxy`] answers `/ready`.
pub fn wait_ready(proxy: &mut Child, admin: SocketAddr) -> anyhow::Result<()> {
    procs::wait_for("mesh-proxy /ready", READY_DEADLINE, || {
        proxy.check_alive()?;
        Ok((procs::http_status(admin, "/ready") == Some(200)).then_some(()))
    })
}

/// Both proxies of a Palisade pair. The servers of `palisade-l7` and
/// `palisade-quiet` are selected by the L7 policy (same identities and
/// labels); `palisade-quiet` logs at `warn` (the default is `info`).
fn start_palisade(kind: Kind, setup: &Setup) -> anyhow::Result<Pair> {
    let name = kind.name();
    let l7 = matches!(
        kind,
        Kind::PalisadeL7
            | Kind::PalisadeQuiet
            | Kind::PalisadeL7Base
            | Kind::PalisadeL7Routed
            | Kind::PalisadeL7Service
            | Kind::PalisadeL7RoutedBase
    );
    // The pairs whose HTTP goes to a Service: its name, its config and the
    // label its server adds.
    let service = match kind {
        Kind::PalisadeL7Routed | Kind::PalisadeL7RoutedBase => Some((
            routed_service(kind).0,
            routed_config(setup.upstream_http.port(), kind),
            match kind {
                Kind::PalisadeL7RoutedBase => "variant=routed-base",
                _ => ROUTED_LABEL,
            },
        )),
        Kind::PalisadeL7Service => Some((
            PLAIN_SERVICE,
            service_config(setup.upstream_http.port()),
            SERVICE_LABEL,
        )),
        _ => None,
    };
    if let Some((name, config, _)) = &service {
        // The control plane picks the file up within a second; the pair is
        // used only once a request has crossed it (below).
        std::fs::write(
            setup.work.join("cp-policy").join(format!("{name}.yaml")),
            config,
        )?;
    }
    let proxy_bin = match (kind, &setup.baseline_bin_dir) {
        (Kind::PalisadeL7Base | Kind::PalisadeL7RoutedBase, Some(d)) => d.join("mesh-proxy"),
        (Kind::PalisadeL7Base | Kind::PalisadeL7RoutedBase, None) => {
            anyhow::bail!("{} needs --baseline-bin-dir", kind.name())
        }
        _ => setup.bin_dir.join("mesh-proxy"),
    };
    let dir = setup.work.join(name);
    std::fs::create_dir_all(&dir)?;
    let p = Ports::new()?;
    let start_one =
        |role: &'static str, routes: Vec<String>| -> anyhow::Result<(Child, SocketAddr, u16)> {
            let sa = if l7 {
                format!("palisade-l7-{role}")
            } else {
                format!("palisade-{role}")
            };
            let inbound = free_port()?;
            let mut extra = Vec::new();
            if l7 && role == "server" {
                extra.push("--labels".into());
                extra.push(match &service {
                    Some((_, _, label)) => format!("{L7_LABELS},{label}"),
                    None => L7_LABELS.into(),
                });
            }
            if kind == Kind::PalisadeOpaque && role == "client" {
                extra.push("--opaque-ports".into());
                extra.push(setup.upstream_http.port().to_string());
            }
            let env: &[(&str, &str)] = match kind {
                Kind::PalisadeQuiet => &[("RUST_LOG", "warn")],
                _ => &[],
            };
            let (child, admin) = start_proxy(
                setup,
                &dir,
                &ProxySpec {
                    bin: &proxy_bin,
                    role,
                    service_account: &sa,
                    inbound: loopback(inbound),
                    routes,
                    extra,
                    env,
                },
            )?;
            Ok((child, admin, inbound))
        };
    let (mut server, server_admin, server_inbound) = start_one("server", vec![])?;
    let id = if l7 {
        spiffe("palisade-l7-server")
    } else {
        spiffe("palisade-server")
    };
    // A Service pair's HTTP goes to the Service (`--service-route`); the
    // others' to the server directly.
    let http_route = match &service {
        Some((name, _, _)) => format!("service:127.0.0.1:{}={name}", p.a_http),
        None => format!(
            "127.0.0.1:{}=127.0.0.1:{server_inbound}/{}@{id}",
            p.a_http,
            setup.upstream_http.port()
        ),
    };
    let (mut client, client_admin, _) = start_one(
        "client",
        vec![
            http_route,
            format!(
                "127.0.0.1:{}=127.0.0.1:{server_inbound}/{}@{id}",
                p.a_bulk,
                setup.upstream_sink.port()
            ),
            format!(
                "127.0.0.1:{}=127.0.0.1:{}/{}@{id}",
                p.a_probe,
                p.tap,
                setup.upstream_http.port()
            ),
        ],
    )?;
    wait_ready(&mut server, server_admin)?;
    wait_ready(&mut client, client_admin)?;
    if service.is_some() {
        // Discovery names the Service's endpoint a moment after both are ready.
        let a = loopback(p.a_http);
        procs::wait_for("a request through the Service", READY_DEADLINE, || {
            client.check_alive()?;
            Ok((procs::http_status(a, "/") == Some(200)).then_some(()))
        })?;
    }
    Ok(Pair {
        kind,
        http: loopback(p.a_http),
        bulk: loopback(p.a_bulk),
        probe: Some(loopback(p.a_probe)),
        tap_listen: Some(loopback(p.tap)),
        tap_target: Some(loopback(server_inbound)),
        procs: vec![("client", client), ("server", server)],
    })
}

/// Everything a peer's config needs.
pub struct PeerConfig<'a> {
    pub dir: &'a Path,
    pub role: &'static str,
    pub cert: &'a PeerCert,
    pub trust_bundle: &'a Path,
    /// (listen port, connect port, TLS on the listen side, TLS on the connect side)
    pub routes: Vec<(&'static str, u16, u16)>,
    pub max_conns: usize,
}

impl PeerConfig<'_> {
    fn is_client(&self) -> bool {
        self.role == "client"
    }
}

/// HAProxy in TCP mode, one thread. A's servers and B's binds use TLS 1.3
/// with the peer certificate and require the other side's (chain to the
/// Palisade root).
pub fn haproxy_config(c: &PeerConfig<'_>) -> String {
    let mut s = format!(
        "global\n    nbthread 1\n    maxconn {max}\n    ssl-default-bind-options ssl-min-ver TLSv1.3\n    ssl-default-server-options ssl-min-ver TLSv1.3\n\ndefaults\n    mode tcp\n    maxconn {max}\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n",
        max = c.max_conns
    );
    let tls = format!(
        "ssl crt {} ca-file {} verify required",
        c.cert.combined.display(),
        c.trust_bundle.display()
    );
    for (name, listen, connect) in &c.routes {
        if c.is_client() {
            s += &format!(
                "\nlisten {name}\n    bind 127.0.0.1:{listen}\n    server peer 127.0.0.1:{connect} {tls}\n"
            );
        } else {
            s += &format!(
                "\nlisten {name}\n    bind 127.0.0.1:{listen} {tls}\n    server upstream 127.0.0.1:{connect}\n"
            );
        }
    }
    s
}

/// HAProxy in HTTP mode, one thread: HTTP/1.1 keep-alive on both hops and
/// `http-reuse always`, so requests share pooled TLS connections between the
/// pair (without it HAProxy opens a connection per request). The bulk
/// route stays TCP.
pub fn haproxy_http_config(c: &PeerConfig<'_>) -> String {
    let mut s = format!(
        "global\n    nbthread 1\n    maxconn {max}\n    ssl-default-bind-options ssl-min-ver TLSv1.3\n    ssl-default-server-options ssl-min-ver TLSv1.3\n\ndefaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n    maxconn {max}\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n    timeout http-keep-alive 1h\n",
        max = c.max_conns
    );
    let tls = format!(
        "ssl crt {} ca-file {} verify required",
        c.cert.combined.display(),
        c.trust_bundle.display()
    );
    for (name, listen, connect) in &c.routes {
        let mode = if *name == "bulk" {
            "    mode tcp\n"
        } else {
            ""
        };
        if c.is_client() {
            s += &format!(
                "\nlisten {name}\n{mode}    bind 127.0.0.1:{listen}\n    server peer 127.0.0.1:{connect} {tls}\n"
            );
        } else {
            s += &format!(
                "\nlisten {name}\n{mode}    bind 127.0.0.1:{listen} {tls}\n    server upstream 127.0.0.1:{connect}\n"
            );
        }
    }
    s
}

/// nginx `http`, one worker process: `proxy_http_version 1.1` with
/// `keepalive` upstream pools on both hops and TLS between the pair; the
/// bulk route in a `stream` block.
pub fn nginx_http_config(c: &PeerConfig<'_>) -> String {
    let mut s = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\ndaemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile {fds};\npid {dir}/nginx-{role}.pid;\nerror_log stderr warn;\n\nevents {{\n    worker_connections {fds};\n}}\n\n",
        fds = c.max_conns * 2 + 64,
        dir = c.dir.display(),
        role = c.role
    );
    let chain = c.cert.chain.display();
    let key = c.cert.key.display();
    let root = c.trust_bundle.display();
    let dir = c.dir.display();
    s += &format!(
        "http {{\n    access_log off;\n    client_body_temp_path {dir}/body;\n    proxy_temp_path {dir}/proxy;\n    keepalive_requests 1000000;\n    keepalive_timeout 1h;\n    proxy_buffering off;\n"
    );
    let mut stream =
        String::from("stream {\n    proxy_timeout 1h;\n    proxy_connect_timeout 5s;\n");
    for (name, listen, connect) in &c.routes {
        let upstream = format!(
            "    upstream {name}_up {{\n        server 127.0.0.1:{connect};\n        keepalive 256;\n        keepalive_requests 1000000;\n        keepalive_timeout 1h;\n    }}\n"
        );
        match (*name == "bulk", c.is_client()) {
            (true, _) => stream += &nginx_stream_server(c, *listen, *connect),
            (false, true) => {
                s += &upstream;
                s += &format!(
                    "    server {{\n        listen 127.0.0.1:{listen};\n        location / {{\n            proxy_pass https://{name}_up;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_ssl_protocols TLSv1.3;\n            proxy_ssl_certificate {chain};\n            proxy_ssl_certificate_key {key};\n            proxy_ssl_trusted_certificate {root};\n            proxy_ssl_verify on;\n            proxy_ssl_verify_depth 3;\n            proxy_ssl_name {HOP_NAME};\n            proxy_ssl_server_name on;\n            proxy_ssl_session_reuse on;\n        }}\n    }}\n"
                );
            }
            (false, false) => {
                s += &upstream;
                s += &format!(
                    "    server {{\n        listen 127.0.0.1:{listen} ssl;\n        ssl_protocols TLSv1.3;\n        ssl_certificate {chain};\n        ssl_certificate_key {key};\n        ssl_client_certificate {root};\n        ssl_verify_client on;\n        ssl_verify_depth 3;\n        location / {{\n            proxy_pass http://{name}_up;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }}\n    }}\n"
                );
            }
        }
    }
    s += "}\n";
    s += &stream;
    s += "}\n";
    s
}

/// nginx `stream`, one worker process.
pub fn nginx_config(c: &PeerConfig<'_>) -> String {
    let mut s = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\ndaemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile {fds};\npid {dir}/nginx-{role}.pid;\nerror_log stderr warn;\n\nevents {{\n    worker_connections {fds};\n}}\n\nstream {{\n    proxy_timeout 1h;\n    proxy_connect_timeout 5s;\n",
        fds = c.max_conns * 2 + 64,
        dir = c.dir.display(),
        role = c.role
    );
    for (_, listen, connect) in &c.routes {
        s += &nginx_stream_server(c, *listen, *connect);
    }
    s += "}\n";
    s
}

/// One nginx `stream` server of a pair: TLS 1.3 with client certificates
/// between A and B, plain TCP to the upstream.
fn nginx_stream_server(c: &PeerConfig<'_>, listen: u16, connect: u16) -> String {
    let chain = c.cert.chain.display();
    let key = c.cert.key.display();
    let root = c.trust_bundle.display();
    if c.is_client() {
        format!(
            "    server {{\n        listen 127.0.0.1:{listen};\n        proxy_pass 127.0.0.1:{connect};\n        proxy_ssl on;\n        proxy_ssl_protocols TLSv1.3;\n        proxy_ssl_certificate {chain};\n        proxy_ssl_certificate_key {key};\n        proxy_ssl_trusted_certificate {root};\n        proxy_ssl_verify on;\n        proxy_ssl_verify_depth 3;\n        proxy_ssl_name {HOP_NAME};\n        proxy_ssl_server_name on;\n        proxy_ssl_session_reuse on;\n    }}\n"
        )
    } else {
        format!(
            "    server {{\n        listen 127.0.0.1:{listen} ssl;\n        ssl_protocols TLSv1.3;\n        ssl_certificate {chain};\n        ssl_certificate_key {key};\n        ssl_client_certificate {root};\n        ssl_verify_client on;\n        ssl_verify_depth 3;\n        proxy_pass 127.0.0.1:{connect};\n    }}\n"
        )
    }
}

/// stunnel: no worker setting exists (it runs a thread per connection).
/// Per-connection logging is turned down to warnings, as the other pairs
/// log nothing per connection; TCP_NODELAY as the other pairs set it.
pub fn stunnel_config(c: &PeerConfig<'_>) -> String {
    let mut s = format!(
        "foreground = yes\npid = {dir}/stunnel-{role}.pid\ndebug = 4\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
        dir = c.dir.display(),
        role = c.role
    );
    for (name, listen, connect) in &c.routes {
        s += &format!(
            "\n[{name}]\naccept = 127.0.0.1:{listen}\nconnect = 127.0.0.1:{connect}\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nsslVersionMin = TLSv1.3\n",
            c.cert.chain.display(),
            c.cert.key.display(),
            c.trust_bundle.display()
        );
        if c.is_client() {
            s += "client = yes\n";
        } else {
            s += "requireCert = yes\n";
        }
    }
    s
}

fn start_peer(kind: Kind, setup: &Setup) -> anyhow::Result<Pair> {
    let name = kind.name();
    let dir = setup.work.join(name);
    std::fs::create_dir_all(&dir)?;
    let p = Ports::new()?;
    let tb = setup.control_plane.trust_bundle();
    let client_cert = setup
        .issuer
        .issue(&dir, "client", &spiffe(&format!("{name}-client")))?;
    let server_cert = setup
        .issuer
        .issue(&dir, "server", &spiffe(&format!("{name}-server")))?;
    let server_cfg = PeerConfig {
        dir: &dir,
        role: "server",
        cert: &server_cert,
        trust_bundle: &tb,
        routes: vec![
            ("http", p.b_http, setup.upstream_http.port()),
            ("bulk", p.b_bulk, setup.upstream_sink.port()),
        ],
        max_conns: setup.max_conns,
    };
    let client_cfg = PeerConfig {
        dir: &dir,
        role: "client",
        cert: &client_cert,
        trust_bundle: &tb,
        routes: vec![
            ("http", p.a_http, p.b_http),
            ("bulk", p.a_bulk, p.b_bulk),
            ("probe", p.a_probe, p.tap),
        ],
        max_conns: setup.max_conns,
    };
    let mut procs_v = Vec::new();
    for cfg in [&server_cfg, &client_cfg] {
        let (text, file) = match kind {
            Kind::Haproxy => (haproxy_config(cfg), format!("haproxy-{}.cfg", cfg.role)),
            Kind::Nginx => (nginx_config(cfg), format!("nginx-{}.conf", cfg.role)),
            Kind::HaproxyHttp => (
                haproxy_http_config(cfg),
                format!("haproxy-http-{}.cfg", cfg.role),
            ),
            Kind::NginxHttp => (
                nginx_http_config(cfg),
                format!("nginx-http-{}.conf", cfg.role),
            ),
            _ => (stunnel_config(cfg), format!("stunnel-{}.conf", cfg.role)),
        };
        let path = dir.join(file);
        std::fs::write(&path, text)?;
        let path_s = path.display().to_string();
        let (program, args): (&str, Vec<String>) = match kind {
            // -db: stay in the foreground, one process.
            Kind::Haproxy | Kind::HaproxyHttp => {
                ("haproxy", vec!["-db".into(), "-f".into(), path_s])
            }
            Kind::Nginx | Kind::NginxHttp => (
                "nginx",
                vec![
                    "-e".into(),
                    "stderr".into(),
                    "-p".into(),
                    dir.display().to_string(),
                    "-c".into(),
                    path_s,
                ],
            ),
            _ => ("stunnel4", vec![path_s]),
        };
        let program = which(program).with_context(|| format!("{program} is not installed"))?;
        let child = procs::spawn(
            &format!("{name} ({})", cfg.role),
            setup.cpu,
            &program,
            &args,
            &[],
            dir.join(format!("{}.log", cfg.role)),
        )?;
        procs_v.push((cfg.role, child));
    }
    procs_v.reverse();
    Ok(Pair {
        kind,
        http: loopback(p.a_http),
        bulk: loopback(p.a_bulk),
        probe: Some(loopback(p.a_probe)),
        tap_listen: Some(loopback(p.tap)),
        tap_target: Some(loopback(p.b_http)),
        procs: procs_v,
    })
}

/// The full path of `program` on PATH (and in /usr/sbin, where Debian puts
/// haproxy and nginx).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// One blocking GET through `addr`; Ok when a complete 200 came back.
pub fn blocking_get(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(REQUEST)?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(h) = parse_head(&buf, true)?
            && buf.len() >= h.len + h.content_length
        {
            anyhow::ensure!(h.status == 200, "status {}", h.status);
            return Ok(());
        }
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "closed before a complete response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's config file as the control plane loads and compiles it.
    fn compiled(file: &str, yaml: &str) -> (mesh_policy::Loaded, mesh_policy::Evaluator) {
        let loaded = match mesh_policy::parse_yaml(file, yaml) {
            Ok(l) => l,
            Err(e) => panic!("{file} does not load: {e}"),
        };
        match mesh_policy::Evaluator::compile(&loaded.snapshot, mesh_identity::DEFAULT_TRUST_DOMAIN)
        {
            Ok(m) => (loaded, m),
            Err(e) => panic!("{file} does not compile: {e}"),
        }
    }

    /// Whether a route takes the benchmark's GET to `service`, and with a
    /// retry policy and a request timeout.
    fn routes_get(m: &mesh_policy::Evaluator, service: &str) -> Option<(bool, bool)> {
        let headers = http::HeaderMap::new();
        m.route(&mesh_policy::RouteRequest {
            client_namespace: Some(NAMESPACE),
            service_namespace: NAMESPACE,
            service_name: service,
            port: 80,
            method: "GET",
            path: "/1k",
            query: None,
            headers: &headers,
            now: std::time::SystemTime::now(),
        })
        .map(|d| (d.retry.is_some(), d.timeouts.request.is_some()))
    }

    // The routed pair's objects load; the route takes GETs to its Service
    // with a retry policy, and the rate limit selects only the routed
    // server, far above any load (the L7 server has none).
    #[test]
    fn the_routed_config_routes_and_limits_only_the_routed_pair() {
        use mesh_policy::{Labels, RateLimitRequest, Workload};
        let (_, m) = compiled(
            "bench-routed.yaml",
            &routed_config(8080, Kind::PalisadeL7Routed),
        );
        assert_eq!(routes_get(&m, ROUTED_SERVICE), Some((true, true)));
        let labels = |pairs: &[&str]| -> Labels {
            pairs
                .iter()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let limits = |l: &Labels| {
            m.rate_limits(&RateLimitRequest {
                destination: Workload {
                    namespace: NAMESPACE,
                    labels: l,
                },
                port: 8080,
                method: "GET",
                path: "/1k",
                principal: None,
                host: None,
                route: None,
                now: std::time::SystemTime::now(),
            })
            .filter_map(|x| x.total)
            .map(|q| q.requests_per_second)
            .collect::<Vec<_>>()
        };
        assert_eq!(limits(&labels(&[L7_LABELS, ROUTED_LABEL])), [1_000_000]);
        assert!(limits(&labels(&[L7_LABELS])).is_empty());
        // The baseline build's routed pair has a Service of its own.
        let (_, base) = compiled(
            "bench-routed-base.yaml",
            &routed_config(8080, Kind::PalisadeL7RoutedBase),
        );
        assert_eq!(routes_get(&base, "bench-routed-base"), Some((true, true)));
        assert_eq!(routes_get(&base, ROUTED_SERVICE), None);
    }

    // The routed pair's baseline differs from it only in what is in force:
    // its config is a Service and nothing else.
    #[test]
    fn the_service_config_has_a_service_and_nothing_in_force() {
        let (loaded, m) = compiled("bench-service.yaml", &service_config(8080));
        assert_eq!(loaded.services.len(), 1);
        assert!(!m.has_rate_limits());
        assert!(!m.has_routes(NAMESPACE, PLAIN_SERVICE));
        assert_eq!(routes_get(&m, PLAIN_SERVICE), None);
    }

    #[test]
    fn the_l7_policy_selects_only_the_l7_server_and_reads_http() {
        use mesh_policy::{Headers, Http, Labels, Peer, Request, Workload};
        let (_, m) = compiled("bench-l7.yaml", &l7_policy());
        let (key, value) = L7_LABELS.split_once('=').unwrap();
        let l7_server: Labels = [(key.to_owned(), value.to_owned())].into();
        let other: Labels = Labels::new();
        let client = spiffe("palisade-l7-client");
        let call = |labels: &Labels, method: &'static str| {
            m.inbound(&Request {
                peer: Peer::Mtls { principal: &client },
                source_ip: None,
                source: None,
                destination: Some(Workload {
                    namespace: NAMESPACE,
                    labels,
                }),
                destination_ip: None,
                destination_port: 8080,
                http: Some(Http {
                    method,
                    path: "/1k",
                    host: Some("upstream"),
                    headers: Headers::Pairs(&[]),
                    request_principal: None,
                    remote_ip: None,
                }),
                now: std::time::SystemTime::now(),
            })
            .is_allowed()
        };
        assert!(call(&l7_server, "GET"));
        assert!(!call(&l7_server, "POST"), "the rule must read the method");
        assert!(call(&other, "POST"), "no policy may select the other pairs");
    }

    fn cert() -> PeerCert {
        PeerCert {
            chain: "/c/chain.pem".into(),
            key: "/c/key.pem".into(),
            combined: "/c/combined.pem".into(),
            spiffe_id: spiffe("x"),
        }
    }

    #[test]
    fn peer_configs_require_tls13_and_mutual_verification() {
        let c = cert();
        let tb = PathBuf::from("/c/root.pem");
        let mk = |role| PeerConfig {
            dir: Path::new("/w"),
            role,
            cert: &c,
            trust_bundle: &tb,
            routes: vec![("http", 1000, 2000)],
            max_conns: 100,
        };
        let (client, server) = (mk("client"), mk("server"));
        let h = haproxy_config(&client);
        assert!(h.contains(
            "server peer 127.0.0.1:2000 ssl crt /c/combined.pem ca-file /c/root.pem verify required"
        ));
        assert!(h.contains("nbthread 1") && h.contains("ssl-min-ver TLSv1.3"));
        assert!(haproxy_config(&server).contains("bind 127.0.0.1:1000 ssl crt"));
        let n = nginx_config(&server);
        assert!(n.contains("ssl_verify_client on;") && n.contains("ssl_protocols TLSv1.3;"));
        assert!(n.contains("worker_processes 1;"));
        let n = nginx_config(&client);
        assert!(
            n.contains("proxy_ssl_verify on;") && n.contains("proxy_ssl_certificate /c/chain.pem;")
        );
        let s = stunnel_config(&server);
        assert!(s.contains("requireCert = yes") && s.contains("verifyChain = yes"));
        assert!(stunnel_config(&client).contains("client = yes"));
    }

    // The L7 peers are fair peers: HTTP mode with pooled upstream
    // connections on both hops, and the same mutual TLS 1.3.
    #[test]
    fn l7_peer_configs_pool_and_verify() {
        let c = cert();
        let tb = PathBuf::from("/c/root.pem");
        let mk = |role| PeerConfig {
            dir: Path::new("/w"),
            role,
            cert: &c,
            trust_bundle: &tb,
            routes: vec![("http", 1000, 2000), ("bulk", 1001, 2001)],
            max_conns: 100,
        };
        let (client, server) = (mk("client"), mk("server"));
        let h = haproxy_http_config(&client);
        assert!(h.contains("mode http") && h.contains("http-reuse always"));
        assert!(h.contains(
            "server peer 127.0.0.1:2000 ssl crt /c/combined.pem ca-file /c/root.pem verify required"
        ));
        assert!(h.contains("listen bulk\n    mode tcp"), "{h}");
        assert!(haproxy_http_config(&server).contains("bind 127.0.0.1:1000 ssl crt"));
        let n = nginx_http_config(&client);
        assert!(n.contains("proxy_pass https://http_up;") && n.contains("keepalive 256;"));
        assert!(
            n.contains("proxy_http_version 1.1;")
                && n.contains("proxy_set_header Connection \"\";")
        );
        assert!(n.contains("proxy_ssl_verify on;") && n.contains("proxy_ssl_protocols TLSv1.3;"));
        let n = nginx_http_config(&server);
        assert!(n.contains("ssl_verify_client on;") && n.contains("proxy_pass http://http_up;"));
        assert!(n.contains("stream {"), "the bulk route stays TCP: {n}");
    }
}
