//! The proxy's side of the control plane: the watch loop every stream
//! shares, and the certificate's expiry as a metric. The channel and the
//! certifier are in mesh-control-client, shared with meshctl and the benches.

pub mod watch;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use mesh_control_client::{ControlPlaneCertifier, channel};
use mesh_identity::Store;

/// Keeps `mesh_identity_cert_expiry_timestamp_seconds` current.
pub async fn export_expiry(store: Arc<Store>) {
    let mut rx = store.subscribe();
    loop {
        if let Some(c) = rx.borrow_and_update().as_ref() {
            let t = c
                .not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            metrics::gauge!("mesh_identity_cert_expiry_timestamp_seconds").set(t);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Renews at once when the control plane announces a CA generation other
/// than the one of our bundle and certificate (a trust-anchor rotation step:
/// a new root published, the issuer switched, the old root removed), each
/// announced generation once, after a short random delay so a fleet does not
/// ask the CA all in the same instant.
pub async fn follow_ca_generation(store: Arc<Store>, mut discovery: crate::discovery::DiscoveryRx) {
    let mut announced = String::new();
    loop {
        let generation = discovery.borrow_and_update().ca_generation.clone();
        if !generation.is_empty() && generation != announced {
            announced = generation;
            if store.generation().as_deref() != Some(announced.as_str()) {
                tokio::time::sleep(spread()).await;
                tracing::info!(generation = %announced, "the CA changed; renewing the certificate");
                metrics::counter!("mesh_identity_ca_renewals_total").increment(1);
                store.request_renewal();
            }
        }
        if discovery.changed().await.is_err() {
            return;
        }
    }
}

/// Up to 500 ms, from the clock's sub-second digits.
fn spread() -> std::time::Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::time::Duration::from_millis(u64::from(nanos % 500))
}

/// True while we hold a certificate that is valid now.
pub fn has_valid_certificate(store: &Store) -> bool {
    store
        .current()
        .is_some_and(|c| c.is_valid_at(SystemTime::now()))
}
