//! Palisade sidecar proxy: identity, inbound mTLS termination, outbound mTLS
//! origination, admin and graceful drain.
//!
//! A connection moves through stages, each a module with a small typed
//! target handed to the next: `transport` (accept, sniff, detect, original
//! destination, relay) → `inbound` (handshake, identify, authorize, then
//! `tcp` or `http`) or `outbound` (resolve, authorize, connect, `tcp`).
//! `http` holds what every HTTP side shares; `errors` every failure and, in
//! `errors/respond.rs`, what a client sees for it.

pub mod access;
pub mod admin;
pub mod app_health;
pub mod config;
pub mod control;
pub mod discovery;
pub mod drain;
pub mod errors;
pub mod flows;
pub mod handles;
pub mod http;
pub mod inbound;
pub mod ingress;
pub mod init;
pub mod outbound;
pub mod policy;
pub mod transport;
pub mod wire;

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use mesh_identity::{SpiffeId, Store, TrustBundle};
use tokio::net::TcpListener;

pub use config::RunArgs;

/// What `run` and the ingress read from their flags before anything else.
pub(crate) struct Prepared {
    identity: SpiffeId,
    bundle: TrustBundle,
    local: Arc<policy::LocalWorkload>,
    app_probes: Arc<app_health::AppProbes>,
}

pub(crate) fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let identity = SpiffeId::workload(&args.trust_domain, &args.namespace, &args.service_account)
        .context("--namespace/--service-account do not form a valid SPIFFE ID")?;
    let bundle_pem = std::fs::read(&args.trust_bundle)
        .with_context(|| format!("cannot read --trust-bundle {}", args.trust_bundle.display()))?;
    let bundle = TrustBundle::from_pem(&bundle_pem)
        .with_context(|| format!("--trust-bundle {}", args.trust_bundle.display()))?;
    let mut labels = match &args.labels_file {
        None => Default::default(),
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --labels-file {}", f.display()))?;
            policy::parse_labels_file(&text)
                .map_err(|e| anyhow::anyhow!("--labels-file {}: {e}", f.display()))?
        }
    };
    labels
        .extend(policy::parse_labels(&args.labels).map_err(|e| anyhow::anyhow!("--labels: {e}"))?);
    let app_probes = Arc::new(match &args.app_probes {
        None => app_health::AppProbes::none(args.app_addr),
        Some(json) => app_health::AppProbes::parse(args.app_addr, json)
            .map_err(|e| anyhow::anyhow!("MESH_APP_PROBES: {e}"))?,
    });
    let local = Arc::new(policy::LocalWorkload {
        name: args.workload.clone(),
        namespace: args.namespace.clone(),
        labels,
        ips: workload_ips(args),
        ports: Vec::new(),
    });
    Ok(Prepared {
        identity,
        bundle,
        local,
        app_probes,
    })
}

/// A proxy that holds a certificate, a policy and discovery: what the
/// sidecar and the ingress serve from.
pub(crate) struct Started {
    pub(crate) store: Arc<Store>,
    pub(crate) local: Arc<policy::LocalWorkload>,
    pub(crate) policy: policy::PolicyRx,
    pub(crate) discovery: discovery::DiscoveryRx,
    pub(crate) balancer: Arc<http::balance::Balancer>,
    /// Where the workload went outside the mesh (`/egress`).
    pub(crate) egress_seen: Arc<outbound::egress::Destinations>,
    trigger: drain::Trigger,
    pub(crate) drain: drain::Drain,
}

/// Serves the admin endpoint, gets a certificate, then follows policy and
/// discovery; returns once all three are in hand (`None`: a shutdown
/// signal came first). `inbound_port` is what peers are told to connect to.
pub(crate) async fn start(
    args: &RunArgs,
    prepared: Prepared,
    admin_listener: TcpListener,
    inbound_port: u16,
) -> anyhow::Result<Option<Started>> {
    let Prepared {
        identity,
        bundle,
        local,
        app_probes,
    } = prepared;
    let metrics = mesh_admin::install_metrics().map_err(anyhow::Error::msg)?;
    let store = Arc::new(Store::new(
        identity.clone(),
        bundle,
        mesh_identity::tls::provider(),
    ));
    raise_fd_limit(args.max_connections);
    let (trigger, drain) = drain::with_cap(args.max_connections);
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(None);
    let (discovery_tx, discovery_rx) =
        tokio::sync::watch::channel(Arc::new(discovery::DiscoveryView::default()));
    let balancer = Arc::new(http::balance::Balancer::default());
    let egress_seen = Arc::new(outbound::egress::Destinations::default());
    {
        // Endpoint state follows discovery: a pod that goes and comes back
        // starts afresh.
        let balancer = balancer.clone();
        let mut rx = discovery_rx.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let view = rx.borrow_and_update().clone();
                let live: std::collections::HashSet<std::net::SocketAddr> = view
                    .services
                    .values()
                    .flat_map(|s| {
                        s.endpoints
                            .iter()
                            .map(|e| std::net::SocketAddr::new(e.proxy.ip(), s.target_port))
                    })
                    .collect();
                balancer.retain(|a| live.contains(a));
            }
        });
    }
    tokio::spawn(mesh_admin::serve(
        admin_listener,
        Arc::new(admin::Admin {
            store: store.clone(),
            policy: policy_rx.clone(),
            discovery: discovery_rx.clone(),
            metrics,
            balancer: balancer.clone(),
            app_probes,
            egress: egress_seen.clone(),
            local: local.clone(),
        }),
        drain.receiver(),
    ));
    tokio::spawn(control::export_expiry(store.clone()));

    let control_plane = args.control_plane_addresses()?;
    let channel = control::channel(&store, &control_plane)?;
    let certifier =
        control::ControlPlaneCertifier::new(channel, args.token_file.clone(), args.cert_ttl);
    {
        let store = store.clone();
        tokio::spawn(async move { store.run_renewal(certifier).await });
    }
    tracing::info!(identity = %identity, control_plane = %control_plane, "waiting for a certificate");

    // Nothing is served before we hold a certificate.
    let mut creds = store.subscribe();
    tokio::select! {
        r = creds.wait_for(|c| c.is_some()) => { r.context("credential store closed")?; }
        _ = mesh_admin::shutdown_signal() => return Ok(None),
    }
    if let Some(c) = store.current() {
        tracing::info!(identity = %c.identity, serial = %c.serial, "certificate received; waiting for policy");
    }

    // Policy.Watch authenticates us by our certificate, so its connection is
    // made only now that we hold one.
    let policy_channel = control::channel(&store, &control_plane)?;
    tokio::spawn(policy::run_watch(
        policy_channel.clone(),
        (*local).clone(),
        inbound_port,
        args.trust_domain.clone(),
        policy_tx,
    ));
    tokio::spawn(flows::run_reporter(policy_channel.clone()));
    tokio::spawn(discovery::run_watch(policy_channel, discovery_tx));
    tokio::spawn(control::follow_ca_generation(
        store.clone(),
        discovery_rx.clone(),
    ));
    let mut pol = policy_rx.clone();
    tokio::select! {
        r = pol.wait_for(|p| p.is_some()) => { r.context("policy channel closed")?; }
        _ = mesh_admin::shutdown_signal() => return Ok(None),
    }
    let mut disc = discovery_rx.clone();
    tokio::select! {
        r = disc.wait_for(|d| d.version > 0) => { r.context("discovery channel closed")?; }
        _ = mesh_admin::shutdown_signal() => return Ok(None),
    }
    tracing::info!("policy and discovery received; serving");
    Ok(Some(Started {
        store,
        local,
        policy: policy_rx,
        discovery: discovery_rx,
        balancer,
        egress_seen,
        trigger,
        drain,
    }))
}

impl Started {
    /// The outbound side: the pool of mTLS connections to peer proxies and
    /// the HTTP stack over it.
    pub(crate) fn outbound(
        &self,
        args: &RunArgs,
        access: Arc<access::AccessLog>,
    ) -> Arc<outbound::Outbound> {
        let connector = Arc::new(outbound::connect::MeshConnector::new(
            self.store.clone(),
            args.handshake_timeout,
        ));
        Arc::new(outbound::Outbound {
            pool: http::pool::MeshPool::new(connector.clone(), args.pool_idle_timeout),
            connector,
            egress: outbound::authorize::Egress {
                policy: self.policy.clone(),
                local: self.local.clone(),
            },
            gate: Arc::new(outbound::egress::Gate {
                names: outbound::egress::dns::Names::new(
                    &args.resolv_conf,
                    &args.dns_servers,
                    args.dns_cache_size,
                ),
                hosts: outbound::egress::HostLabels::new(args.egress_host_labels),
                seen: self.egress_seen.clone(),
            }),
            discovery: self.discovery.clone(),
            idle_timeout: args.idle_timeout,
            detect_timeout: args.detect_timeout,
            http: args.http_limits(),
            access,
            opaque_ports: args.opaque_ports.iter().copied().collect(),
            budgets: Default::default(),
            balancer: self.balancer.clone(),
        })
    }

    /// Waits for SIGTERM/SIGINT, then drains.
    pub(crate) async fn until_drained(self, deadline: std::time::Duration) {
        mesh_admin::shutdown_signal().await;
        tracing::info!(deadline = ?deadline, "draining");
        let left = self.trigger.drain(deadline).await;
        if left > 0 {
            tracing::warn!(
                open = left,
                "drain deadline reached; closing remaining connections"
            );
        } else {
            tracing::info!("drained");
        }
    }
}

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args)?;
    // Bind everything first: a port conflict is a startup error, not a
    // surprise after certification.
    let admin_listener = mesh_admin::bind(args.admin)
        .await
        .map_err(anyhow::Error::msg)?;
    let inbound_listener = transport::accept::reserve(args.inbound)
        .with_context(|| format!("cannot listen on --inbound {}", args.inbound))?;
    let outbound_listener = transport::accept::reserve(args.outbound)
        .with_context(|| format!("cannot listen on --outbound {}", args.outbound))?;
    let mut route_listeners = Vec::new();
    for r in &args.static_routes {
        let l = transport::accept::reserve(r.listen)
            .with_context(|| format!("cannot listen on static route {}", r.listen))?;
        route_listeners.push((r.clone(), l));
    }
    let mut service_listeners = Vec::new();
    for r in &args.service_routes {
        let l = transport::accept::reserve(r.listen)
            .with_context(|| format!("cannot listen on service route {}", r.listen))?;
        service_listeners.push((r.clone(), l));
    }
    let mut egress_listeners = Vec::new();
    for (listen, dst) in &args.egress_routes {
        let l = transport::accept::reserve(*listen)
            .with_context(|| format!("cannot listen on egress route {listen}"))?;
        egress_listeners.push((*dst, l));
    }
    let Some(started) = start(&args, prepared, admin_listener, args.inbound.port()).await? else {
        return Ok(());
    };
    let drain = started.drain.clone();

    let mut own_ports: HashSet<u16> =
        [args.inbound.port(), args.outbound.port(), args.admin.port()].into();
    own_ports.extend(args.static_routes.iter().map(|r| r.listen.port()));
    own_ports.extend(args.service_routes.iter().map(|r| r.listen.port()));
    own_ports.extend(args.egress_routes.iter().map(|(l, _)| l.port()));
    let access = Arc::new(
        access::AccessLog::open(&args.access_log)
            .with_context(|| format!("cannot open --access-log {:?}", args.access_log))?,
    );
    let authz = inbound::authorize::Authorizer {
        policy: started.policy.clone(),
        discovery: started.discovery.clone(),
        local: started.local.clone(),
    };
    let inbound = Arc::new(inbound::Inbound {
        tls: mesh_identity::tls::server_config(
            &started.store,
            true,
            &[
                mesh_identity::tls::ALPN_MESH_H2,
                mesh_identity::tls::ALPN_TCP,
            ],
        )?,
        app_addr: args.app_addr,
        handshake_timeout: args.handshake_timeout,
        detect_timeout: args.detect_timeout,
        idle_timeout: args.idle_timeout,
        http: args.http_limits(),
        mesh_http: args.mesh_http_limits(),
        handler: Arc::new(inbound::http::Handler {
            authz: authz.clone(),
            app: http::client::AppClient::new(args.app_addr),
            own_ports: Arc::new(own_ports),
            access: access.clone(),
            max_uri_bytes: args.max_uri_bytes,
            idle_timeout: args.idle_timeout,
            limits: http::ratelimit::Limiters::default(),
        }),
        authz,
    });
    // Listening only now: until here connections were refused, not queued.
    let listen = |r: transport::accept::Reserved, what: &str| {
        r.listen()
            .with_context(|| format!("cannot listen on {what}"))
    };
    let inbound_listener = listen(inbound_listener, "--inbound")?;
    let outbound_listener = listen(outbound_listener, "--outbound")?;
    tokio::spawn(inbound.serve(inbound_listener, drain.clone()));
    let outbound = started.outbound(&args, access);
    tokio::spawn(
        outbound
            .clone()
            .serve_transparent(outbound_listener, drain.clone()),
    );
    for (r, l) in route_listeners {
        let l = listen(l, "a static route")?;
        tokio::spawn(outbound.clone().serve_route(r, l, drain.clone()));
    }
    for (r, l) in service_listeners {
        let l = listen(l, "a service route")?;
        tokio::spawn(outbound.clone().serve_service_route(r, l, drain.clone()));
    }
    for (dst, l) in egress_listeners {
        let l = listen(l, "an egress route")?;
        tokio::spawn(outbound.clone().serve_egress_route(dst, l, drain.clone()));
    }
    started.until_drained(args.drain_timeout).await;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, so the proxy can
/// hold `--max-connections` (each may take two descriptors: the app's and
/// the peer's); warns when even the hard limit is short of that.
fn raise_fd_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256);
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            max_connections,
            "the open-file limit is below what --max-connections may need; connections past it fail at accept"
        );
    }
}

/// The workload's addresses: the inbound listener's when it is bound to one,
/// else the app's.
fn workload_ips(args: &RunArgs) -> Vec<std::net::IpAddr> {
    let ip = args.inbound.ip();
    if ip.is_unspecified() {
        vec![args.app_addr]
    } else {
        vec![ip]
    }
}
