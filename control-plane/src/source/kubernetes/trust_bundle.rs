//! The trust bundle in every meshed namespace. A pod can mount a ConfigMap
//! of its own namespace only, so the control plane keeps a
//! `palisade-trust-bundle` ConfigMap (key `trust-bundle.pem`) in each
//! namespace labelled for injection or holding an injected pod — including
//! pods still waiting for it to be mounted.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Api, ApiError};

/// The ConfigMap the injector mounts (mesh-injector's default).
pub const CONFIGMAP: &str = "palisade-trust-bundle";
pub const KEY: &str = "trust-bundle.pem";
/// A namespace whose write failed is tried again after this.
const DEFAULT_RETRY: Duration = Duration::from_secs(5);

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    Unchanged,
}

/// Makes `namespace`'s ConfigMap hold `pem`.
pub async fn ensure(api: &Api, namespace: &str, pem: &str) -> Result<Written, ApiError> {
    let path = format!("/api/v1/namespaces/{namespace}/configmaps/{CONFIGMAP}");
    let body = |resource_version: Option<&str>| {
        let mut meta = json!({
            "name": CONFIGMAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "palisade"},
        });
        if let Some(rv) = resource_version {
            meta["resourceVersion"] = Value::from(rv);
        }
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {KEY: pem}})
    };
    match api.json("GET", &path, None).await {
        Err(e) if e.status() == Some(http::StatusCode::NOT_FOUND) => {
            let create = format!("/api/v1/namespaces/{namespace}/configmaps");
            api.json("POST", &create, Some(&body(None))).await?;
            Ok(Written::Created)
        }
        Err(e) => Err(e),
        Ok(current) if current["data"][KEY] == pem => Ok(Written::Unchanged),
        Ok(current) => {
            // The resourceVersion makes the update conditional: a concurrent
            // writer (the other replica) gets a conflict, not a lost write.
            let rv = current["metadata"]["resourceVersion"].as_str();
            api.json("PUT", &path, Some(&body(rv))).await?;
            Ok(Written::Updated)
        }
    }
}

/// Keeps the ConfigMap in every namespace of `namespaces`, as it changes.
pub async fn keep(api: Api, pem: String, mut namespaces: watch::Receiver<BTreeSet<String>>) {
    let mut done = BTreeSet::new();
    loop {
        let wanted = namespaces.borrow_and_update().clone();
        let mut failed = false;
        for ns in wanted.difference(&done.clone()) {
            match ensure(&api, ns, &pem).await {
                Ok(w) => {
                    tracing::info!(namespace = %ns, written = ?w, "trust bundle ConfigMap in place");
                    done.insert(ns.clone());
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "cannot write the trust bundle ConfigMap; retrying");
                    failed = true;
                }
            }
        }
        done.retain(|ns| wanted.contains(ns));
        if failed {
            let _ = tokio::time::timeout(DEFAULT_RETRY, namespaces.changed()).await;
        } else if namespaces.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::replay;
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfTCCASOgAwIBAgIUPalisadeTestRoot\n-----END CERTIFICATE-----\n";

    #[tokio::test]
    async fn created_updated_or_left_as_it_is() {
        let (addr, recorded) = replay("trust-bundle.json").await;
        let api = Api::plain(&format!("http://{addr}")).unwrap();
        assert_eq!(ensure(&api, "shop", PEM).await.unwrap(), Written::Created);
        assert_eq!(ensure(&api, "blog", PEM).await.unwrap(), Written::Updated);
        assert_eq!(ensure(&api, "news", PEM).await.unwrap(), Written::Unchanged);
        let e = ensure(&api, "locked", PEM).await.unwrap_err();
        assert_eq!(e.status(), Some(http::StatusCode::FORBIDDEN));

        let bodies = recorded.bodies();
        assert_eq!(bodies.len(), 2, "one create, one update: {bodies:#?}");
        assert_eq!(bodies[0]["data"][KEY], PEM);
        assert_eq!(bodies[0]["metadata"]["namespace"], "shop");
        // The update is conditional on what was read.
        assert_eq!(bodies[1]["metadata"]["resourceVersion"], "812");
    }
}
