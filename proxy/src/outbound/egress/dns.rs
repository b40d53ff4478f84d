//! The proxy's own resolver for egress names (hickory-resolver, with the
//! pod's resolv.conf): a connection allowed by name is admitted only to an
//! address the name resolves to, so a client cannot put an allowed name in
//! its SNI or Host while connecting somewhere else (domain fronting).
//! Answers are cached for their TTL, in a bounded cache; a failed lookup
//! admits nothing (fail closed).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// One lookup, all servers and attempts included, takes at most this.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Names {
    resolver: Option<TokioResolver>,
    /// Why there is no resolver (named in every refusal).
    missing: Option<String>,
    /// Answers until their TTL ends, at most `max` names: a connection
    /// to a name already looked up costs a map lookup, not a resolver call.
    answers: std::sync::Mutex<HashMap<String, (Arc<[IpAddr]>, Instant)>>,
    max: usize,
}

impl Names {
    /// The resolver of `resolv_conf`, or of `servers` (IP:PORT) when given;
    /// `cache` names at most. A configuration that cannot be read leaves a
    /// resolver that resolves nothing, and says why.
    pub fn new(resolv_conf: &Path, servers: &[SocketAddr], cache: u64) -> Self {
        let parsed = if servers.is_empty() {
            std::fs::read(resolv_conf)
                .map_err(|e| format!("{}: {e}", resolv_conf.display()))
                .and_then(|bytes| {
                    hickory_resolver::system_conf::parse_resolv_conf(bytes)
                        .map_err(|e| format!("{}: {e}", resolv_conf.display()))
                })
        } else {
            let servers = servers
                .iter()
                .map(|s| {
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    for c in &mut ns.connections {
                        c.port = s.port();
                    }
                    ns
                })
                .collect();
            Ok((
                ResolverConfig::from_name_servers(servers),
                ResolverOpts::default(),
            ))
        };
        let built = parsed.and_then(|(config, mut opts)| {
            opts.cache_size = cache.max(1);
            opts.timeout = Duration::from_secs(2);
            opts.attempts = 2;
            hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| e.to_string())
        });
        match built {
            Ok(r) => Names {
                resolver: Some(r),
                missing: None,
                answers: Default::default(),
                max: usize::try_from(cache).unwrap_or(usize::MAX).max(1),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no egress resolver: connections allowed by name will be refused");
                Names {
                    resolver: None,
                    missing: Some(e),
                    answers: Default::default(),
                    max: 1,
                }
            }
        }
    }

    /// The addresses `host` resolves to now (A and AAAA).
    pub async fn addresses(&self, host: &str) -> Result<Arc<[IpAddr]>, String> {
        let Some(resolver) = &self.resolver else {
            return Err(self.missing.clone().unwrap_or_default());
        };
        let now = Instant::now();
        if let Ok(answers) = self.answers.lock()
            && let Some((ips, until)) = answers.get(host)
            && now < *until
        {
            return Ok(ips.clone());
        }
        // Absolute: the client asked for exactly this name, not one under
        // a search domain.
        let name = format!("{host}.");
        let found = match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name.as_str())).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(format!("{host}: {e}")),
            Err(_) => return Err(format!("{host}: no answer within {LOOKUP_TIMEOUT:?}")),
        };
        let ips: Arc<[IpAddr]> = found.iter().collect();
        if let Ok(mut answers) = self.answers.lock() {
            if answers.len() >= self.max {
                answers.retain(|_, (_, until)| now < *until);
                if answers.len() >= self.max
                    && let Some(k) = answers.keys().next().cloned()
                {
                    answers.remove(&k);
                }
            }
            answers.insert(host.to_owned(), (ips.clone(), found.valid_until()));
        }
        Ok(ips)
    }

    /// Whether `host` resolves to `ip`: `Err` says why that is unknown.
    pub async fn resolves_to(&self, host: &str, ip: IpAddr) -> Result<bool, String> {
        let canonical = |a: IpAddr| match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        };
        Ok(self
            .addresses(host)
            .await?
            .iter()
            .any(|a| canonical(*a) == canonical(ip)))
    }
}
