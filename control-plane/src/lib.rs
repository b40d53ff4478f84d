//! Palisade control plane: the CA and Identity service, and its admin endpoint.

pub mod certify;
pub mod config;
pub mod discovery;
pub mod policy;
pub mod server;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use http::StatusCode;
use mesh_admin::{Reply, Routes};
use mesh_identity::local::LocalCertifier;
use mesh_identity::token::TokenKey;
use mesh_identity::{Ca, Store};
use mesh_proto::discovery::discovery_server::DiscoveryServer;
use mesh_proto::identity::identity_server::IdentityServer;
use mesh_proto::policy::policy_server::PolicyServer;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

pub use config::{Args, Source};

/// Runs the control plane until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.source == Source::Kubernetes {
        bail!("--source kubernetes is not available in this build yet; use --source file");
    }
    mesh_identity::spiffe::validate_trust_domain_name(&args.trust_domain)
        .with_context(|| format!("--trust-domain {:?}", args.trust_domain))?;
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
    let ca = Arc::new(Ca::load_or_generate(
        &args.data_dir.join("ca"),
        &args.trust_domain,
    )?);
    let bundle_path = args.data_dir.join("trust-bundle.pem");
    mesh_identity::secret::write_public_atomic(&bundle_path, ca.bundle().to_pem().as_bytes())?;

    // The control plane's own serving certificate, from its own CA.
    let identity = mesh_identity::control_plane_identity(&args.trust_domain)?;
    let store = Arc::new(Store::new(
        identity.clone(),
        ca.bundle().clone(),
        mesh_identity::tls::provider(),
    ));
    let own = LocalCertifier::new(ca.clone(), identity.clone(), args.cert_ttl);
    store
        .certify_once(&own)
        .await
        .context("cannot issue the control plane's own certificate")?;
    {
        let store = store.clone();
        tokio::spawn(async move { store.run_renewal(own).await });
    }

    let tls = mesh_identity::tls::server_config(&store, false, &[mesh_identity::tls::ALPN_H2])?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    let admin = mesh_admin::bind(args.admin)
        .await
        .map_err(anyhow::Error::msg)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let policies = policy::Policies::new(&args.trust_domain);
    match &args.config_dir {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--config-dir {} is not a directory", dir.display());
            }
            // The first load happens before serving, so proxies never see an
            // empty policy when a folder was given.
            policies.reload(dir);
            tokio::spawn(policy::watch_dir(policies.clone(), dir.clone()));
        }
        None => tracing::warn!(
            "no --config-dir: proxies get an empty policy (mTLS STRICT, no authorization policies)"
        ),
    }

    let (discovery_tx, discovery_rx) = watch::channel(Arc::new(discovery::build(&policies, 0)));
    tokio::spawn(discovery::publish(policies.clone(), discovery_tx));

    let status = Arc::new(Status {
        policies: policies.clone(),
        metrics,
        store: store.clone(),
        ca: ca.clone(),
        trust_domain: args.trust_domain.clone(),
        cert_ttl: args.cert_ttl,
        max_cert_ttl: args.max_cert_ttl,
    });
    tokio::spawn(mesh_admin::serve(admin, status, shutdown_rx.clone()));

    let identity_svc = certify::IdentityService::new(
        ca.clone(),
        tokens,
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
        .add_service(PolicyServer::new(policy::PolicyService::new(policies)))
        .add_service(DiscoveryServer::new(discovery::DiscoveryService::new(
            discovery_rx,
        )))
        .serve_with_incoming_shutdown(server::incoming(listener, tls), async move {
            mesh_admin::stopped(&mut grpc_shutdown).await;
        });
    tokio::select! {
        r = grpc => r.context("gRPC server failed")?,
        _ = mesh_admin::shutdown_signal() => {
            tracing::info!("shutting down");
        }
    }
    let _ = shutdown_tx.send(true);
    Ok(())
}

struct Status {
    policies: Arc<policy::Policies>,
    metrics: PrometheusHandle,
    store: Arc<Store>,
    ca: Arc<Ca>,
    trust_domain: String,
    cert_ttl: std::time::Duration,
    max_cert_ttl: std::time::Duration,
}

impl Routes for Status {
    fn get(&self, path: &str) -> Reply {
        match path {
            "/live" => Reply::text(StatusCode::OK, "live\n"),
            "/ready" => match self.store.current() {
                Some(c) if c.is_valid_at(SystemTime::now()) => {
                    Reply::text(StatusCode::OK, "ready\n")
                }
                _ => Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no valid serving certificate\n",
                ),
            },
            "/metrics" => Reply {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4",
                body: self.metrics.render(),
            },
            "/status" => {
                let cert = self.store.current();
                Reply::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "trust_domain": self.trust_domain,
                        "identity": self.store.identity().as_str(),
                        "serving_certificate": cert.as_ref().map(|c| serde_json::json!({
                            "serial": c.serial,
                            "not_after": unix(c.not_after),
                        })),
                        "issuer_not_after": unix(self.ca.issuer_not_after()),
                        "trust_bundle_roots": self.ca.bundle().len(),
                        "cert_ttl_seconds": self.cert_ttl.as_secs(),
                        "max_cert_ttl_seconds": self.max_cert_ttl.as_secs(),
                        "policy": self.policy_status(),
                    }),
                )
            }
            _ => Reply::not_found(),
        }
    }
}

impl Status {
    fn policy_status(&self) -> serde_json::Value {
        let st = self.policies.current();
        let proxies: Vec<_> = self
            .policies
            .registry
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        serde_json::json!({
            "version": st.version,
            "objects": st.snapshot.objects.iter().map(|o| o.object_ref().to_string()).collect::<Vec<_>>(),
            "error": st.error,
            "warnings": st.warnings,
            "loaded_at": st.loaded_at.map(unix),
            "connected_proxies": proxies,
        })
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
