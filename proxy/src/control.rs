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

/// True while we hold a certificate that is valid now.
pub fn has_valid_certificate(store: &Store) -> bool {
    store
        .current()
        .is_some_and(|c| c.is_valid_at(SystemTime::now()))
}
