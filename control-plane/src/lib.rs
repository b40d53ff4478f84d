//! Palisade control plane: the CA and Identity service, policy and discovery
//! for the proxies, and its admin endpoint.
//!
//! ```text
//! Source ──watch<Update>──▶ State ──watch<PolicyState>──▶ grpc::policy (per proxy)
//!  (file | fake)            (compile, version,            grpc::discovery ◀── Registry
//!                            last good in force)          (Services + workloads)
//! ```

pub mod anomaly;
pub mod ca;
pub mod config;
pub mod credential;
pub mod error;
pub mod flows;
pub mod grpc;
pub mod registry;
pub mod source;
pub mod state;
pub mod status;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::{Context, bail};
use mesh_identity::token::TokenKey;
use mesh_identity::{Ca, Store};
use mesh_proto::discovery::discovery_server::DiscoveryServer;
use mesh_proto::identity::identity_server::IdentityServer;
use mesh_proto::policy::policy_server::PolicyServer;
use mesh_proto::telemetry::telemetry_server::TelemetryServer;
use tokio::sync::watch;

pub use config::{Args, SourceKind};
use source::Source;

/// Runs the control plane until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    mesh_identity::spiffe::validate_trust_domain_name(&args.trust_domain)
        .with_context(|| format!("--trust-domain {:?}", args.trust_domain))?;
    for id in args.ingress_identities() {
        mesh_identity::SpiffeId::parse(&id)
            .with_context(|| format!("--ingress-identity {id:?}"))?;
    }
    if args.cert_ttl > args.max_cert_ttl {
        bail!(
            "--cert-ttl ({:?}) is longer than --max-cert-ttl ({:?})",
            args.cert_ttl,
            args.max_cert_ttl
        );
    }
    let metrics = mesh_admin::install_metrics().map_err(anyhow::Error::msg)?;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let tokens = Arc::new(TokenKey::load_or_generate(&args.data_dir)?);
    let api = match args.source {
        SourceKind::File => None,
        SourceKind::Kubernetes => Some(match &args.kubernetes_api {
            Some(url) => source::kubernetes::Api::plain(url)?,
            None => source::kubernetes::Api::in_cluster()?,
        }),
    };
    if let Some(api) = &api {
        source::kubernetes::ca_secret::fetch(api, &args.ca_secret, &args.data_dir.join("ca"))
            .await?;
    }
    let ca_dir = args.data_dir.join("ca");
    let first = Ca::load_or_generate(&ca_dir, &args.trust_domain)?;
    let bundle_path = args.data_dir.join("trust-bundle.pem");
    mesh_identity::secret::write_public_atomic(&bundle_path, first.bundle().to_pem().as_bytes())?;
    let live_ca = ca::LiveCa::new(ca_dir, &args.trust_domain, bundle_path.clone(), first);
    tokio::spawn(live_ca.clone().follow());
    let first_ca = live_ca.current();

    // The control plane's own serving certificate, from its own CA.
    let identity = mesh_identity::control_plane_identity(&args.trust_domain)?;
    let store = Arc::new(Store::new(
        identity.clone(),
        first_ca.bundle().clone(),
        mesh_identity::tls::provider(),
    ));
    let own = ca::OwnCertifier {
        ca: live_ca.clone(),
        identity: identity.clone(),
        ttl: args.cert_ttl,
    };
    store
        .certify_once(&own)
        .await
        .context("cannot issue the control plane's own certificate")?;
    {
        let store = store.clone();
        tokio::spawn(async move { store.run_renewal(own).await });
    }
    {
        // A new CA (a rotation step): the control plane's own certificate
        // and bundle follow at once, like every proxy's.
        let store = store.clone();
        let mut changes = live_ca.subscribe();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                store.request_renewal();
            }
        });
    }

    let tls = mesh_identity::tls::server_config(&store, false, &[mesh_identity::tls::ALPN_H2])?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    let admin = mesh_admin::bind(args.admin)
        .await
        .map_err(anyhow::Error::msg)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let state = state::State::new(&args.trust_domain);
    // The first view is in force before anything is served, so proxies never
    // see an empty policy when a folder was given.
    let workloads = if api.is_some() {
        grpc::policy::Workloads::FromPods
    } else {
        grpc::policy::Workloads::Claimed
    };
    let (updates, credentials) = match api {
        None => (
            source::file::Folder::new(args.config_dir.clone())
                .start()
                .await?,
            credential::Credentials::JoinTokens(tokens),
        ),
        Some(api) => {
            let cluster = source::kubernetes::Cluster::new(api.clone(), &args.trust_domain);
            tokio::spawn(source::kubernetes::trust_bundle::keep(
                api.clone(),
                first_ca.bundle().to_pem(),
                cluster.meshed_namespaces(),
            ));
            (
                cluster.start().await?,
                credential::Credentials::TokenReview(api),
            )
        }
    };
    state.start(updates);
    // In local mode the proxies register themselves: replicas sharing the
    // data directory share the registrations. In Kubernetes mode the Pods
    // are the workloads, the same for every replica.
    let registry = match workloads {
        grpc::policy::Workloads::Claimed => registry::Registry::shared(
            registry::lease::Leases::open(&args.data_dir, args.registration_lease)?,
        ),
        grpc::policy::Workloads::FromPods => registry::Registry::new(),
    };
    tokio::spawn(registry.clone().follow_leases());

    let (discovery_tx, discovery_rx) =
        watch::channel(Arc::new(grpc::discovery::build(&state, &registry, 0)));
    tokio::spawn(grpc::discovery::publish(
        state.clone(),
        registry.clone(),
        live_ca.subscribe(),
        discovery_tx,
    ));

    let flows = flows::FlowStore::new();
    let mut protected = vec![identity.to_string()];
    protected.extend(args.ingress_identities());
    protected.extend(args.protected_identities.iter().cloned());
    for id in &args.protected_identities {
        mesh_identity::SpiffeId::parse(id)
            .with_context(|| format!("--protected-identity {id:?}"))?;
    }
    let anomalies = anomaly::Engine::new(
        state.clone(),
        flows.clone(),
        registry.clone(),
        args.data_dir.clone(),
        protected,
        args.max_quarantines,
        match &args.event_webhook {
            Some(url) => Some(anomaly::webhook::Webhook::start(
                anomaly::webhook::parse(url)
                    .map_err(anyhow::Error::msg)
                    .context("--event-webhook")?,
            )),
            None => None,
        },
    );
    tokio::spawn(anomalies.clone().maintain());
    let status = Arc::new(status::Status {
        state: state.clone(),
        registry: registry.clone(),
        flows: flows.clone(),
        anomalies: anomalies.clone(),
        metrics,
        store: store.clone(),
        ca: live_ca.clone(),
        cert_ttl: args.cert_ttl,
        max_cert_ttl: args.max_cert_ttl,
    });
    tokio::spawn(mesh_admin::serve(admin, status, shutdown_rx.clone()));

    let identity_svc = grpc::identity::IdentityService::new(
        live_ca.clone(),
        credentials,
        args.trust_domain.clone(),
        args.cert_ttl,
        args.max_cert_ttl,
    );
    tracing::info!(
        listen = %args.listen,
        admin = %args.admin,
        trust_domain = %args.trust_domain,
        trust_bundle = %bundle_path.display(),
        "control plane serving"
    );
    let mut grpc_shutdown = shutdown_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity_svc))
        .add_service(PolicyServer::new(
            grpc::policy::PolicyService::new(state, registry.clone())
                .with_workloads(workloads)
                .with_ingress(args.ingress_identities()),
        ))
        .add_service(TelemetryServer::new(
            grpc::telemetry::TelemetryService::new(flows).on_report(Arc::new(
                move |destination, touched, now| anomalies.on_report(destination, touched, now),
            )),
        ))
        .add_service(DiscoveryServer::new(
            grpc::discovery::DiscoveryService::new(discovery_rx),
        ))
        .serve_with_incoming_shutdown(grpc::incoming(listener, tls), async move {
            mesh_admin::stopped(&mut grpc_shutdown).await;
        });
    tokio::select! {
        r = grpc => r.context("gRPC server failed")?,
        _ = mesh_admin::shutdown_signal() => {
            tracing::info!("shutting down");
        }
    }
    let _ = shutdown_tx.send(true);
    registry.leave();
    Ok(())
}
