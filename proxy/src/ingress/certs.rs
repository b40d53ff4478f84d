//! The ingress's server certificates: built from the `kubernetes.io/tls`
//! Secrets its Gateways and Ingresses name, chosen per handshake by port
//! and SNI. A new set is published on a watch channel whenever the policy
//! changes, so a renewed Secret serves new connections at once while open
//! ones keep the certificate they were made with. A Secret whose key does
//! not load (or does not match its certificate) is refused, named in the
//! log (never its contents), counted, and its last good version kept.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use mesh_policy::{EdgeCertificate, Host};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// `namespace/name` of a Secret.
pub type SecretName = (String, String);

struct Entry {
    port: u16,
    hosts: Vec<Host>,
    secret: SecretName,
    key: Arc<CertifiedKey>,
}

/// The certificates in force.
#[derive(Default)]
pub struct CertSet {
    entries: Vec<Entry>,
    /// For a server name nothing claims (`--default-certificate`); `None`:
    /// such a handshake is refused.
    default: Option<(SecretName, Arc<CertifiedKey>)>,
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSet")
            .field("certificates", &self.entries.len())
            .field("default", &self.default.as_ref().map(|(n, _)| n))
            .finish()
    }
}

/// Keys loaded so far, by Secret: a Secret that has not changed is not
/// loaded again, and one that no longer loads keeps its last good key.
#[derive(Default)]
pub struct KeyCache {
    loaded: HashMap<SecretName, (u64, Arc<CertifiedKey>)>,
}

fn fingerprint(s: &mesh_policy::resource::TlsSecret) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.cert_pem.hash(&mut h);
    s.key_pem.hash(&mut h);
    h.finish()
}

impl KeyCache {
    /// The key of `name` from `secrets`: loaded (or the cached one if the
    /// Secret is unchanged, or the last good one if it no longer loads).
    fn key(
        &mut self,
        name: &SecretName,
        secrets: &[mesh_policy::resource::TlsSecret],
        provider: &CryptoProvider,
    ) -> Option<Arc<CertifiedKey>> {
        let Some(secret) = secrets
            .iter()
            .find(|s| s.namespace == name.0 && s.name == name.1)
        else {
            // Named but not delivered: nothing to serve for it.
            self.loaded.remove(name);
            return None;
        };
        let print = fingerprint(secret);
        if let Some((p, key)) = self.loaded.get(name)
            && *p == print
        {
            return Some(key.clone());
        }
        let loaded = secret
            .key()
            .ok_or_else(|| "tls.key is not a private key".to_owned())
            .and_then(|key| {
                CertifiedKey::from_der(secret.chain(), key, provider).map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "tls.key does not belong to the certificate in tls.crt".to_owned()
                    }
                    _ => "tls.key or tls.crt could not be loaded".to_owned(),
                })
            });
        match loaded {
            Ok(key) => {
                let key = Arc::new(key);
                self.loaded.insert(name.clone(), (print, key.clone()));
                tracing::info!(secret = %format!("{}/{}", name.0, name.1), "certificate loaded");
                Some(key)
            }
            Err(message) => {
                metrics::counter!("mesh_ingress_certificate_errors_total").increment(1);
                let kept = self.loaded.get(name).map(|(_, k)| k.clone());
                tracing::error!(
                    secret = %format!("{}/{}", name.0, name.1),
                    error = %message,
                    kept_previous = kept.is_some(),
                    "certificate refused"
                );
                kept
            }
        }
    }
}

impl CertSet {
    /// The set for `wanted` (what the Gateways and Ingresses name), from
    /// the delivered `secrets`.
    pub fn build(
        wanted: &[EdgeCertificate],
        default: Option<&SecretName>,
        secrets: &[mesh_policy::resource::TlsSecret],
        cache: &mut KeyCache,
        provider: &CryptoProvider,
    ) -> CertSet {
        let mut entries = Vec::new();
        for w in wanted {
            if let Some(key) = cache.key(&w.secret, secrets, provider) {
                entries.push(Entry {
                    port: w.port,
                    hosts: w.hosts.clone(),
                    secret: w.secret.clone(),
                    key,
                });
            }
        }
        let default = default.and_then(|name| {
            cache
                .key(name, secrets, provider)
                .map(|key| (name.clone(), key))
        });
        CertSet { entries, default }
    }

    /// The certificate for a handshake on `port` naming `sni`: the most
    /// specific host match on the port, else one on the port that names
    /// no host, else the default (`None`: refuse the handshake).
    pub fn resolve(
        &self,
        port: u16,
        sni: Option<&str>,
    ) -> Option<(&SecretName, &Arc<CertifiedKey>)> {
        let on_port = || self.entries.iter().filter(|e| e.port == port);
        let named = sni.and_then(|name| {
            on_port()
                .filter_map(|e| {
                    e.hosts
                        .iter()
                        .filter(|h| h.matches(name))
                        .map(|h| h.rank())
                        .min()
                        .map(|rank| (rank, e))
                })
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, e)| e)
        });
        named
            .or_else(|| on_port().find(|e| e.hosts.is_empty()))
            .map(|e| (&e.secret, &e.key))
            .or(self.default.as_ref().map(|(n, k)| (n, k)))
    }

    /// The Secret a request for `host` on `port` would be served with,
    /// when a Gateway or Ingress names `host` itself (not the port's
    /// catch-all or the default).
    pub fn claimed(&self, port: u16, host: &str) -> Option<&SecretName> {
        self.entries
            .iter()
            .filter(|e| e.port == port)
            .filter_map(|e| {
                e.hosts
                    .iter()
                    .filter(|h| h.matches(host))
                    .map(|h| h.rank())
                    .min()
                    .map(|rank| (rank, &e.secret))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, s)| s)
    }
}

/// rustls' view of the set, for the listener on one port.
pub struct Resolver {
    pub port: u16,
    pub set: watch::Receiver<Arc<CertSet>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("port", &self.port)
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.borrow().clone();
        // rustls has lowercased and validated the name.
        let found = set
            .resolve(self.port, hello.server_name())
            .map(|(_, k)| k.clone());
        if found.is_none() {
            metrics::counter!("mesh_ingress_unknown_sni_total").increment(1);
            tracing::info!(
                port = self.port,
                sni = hello.server_name().unwrap_or("-"),
                "no certificate for this server name; handshake refused"
            );
        }
        found
    }
}
