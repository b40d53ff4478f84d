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

/// A name's addresses and until when they hold (their TTL).
type Answer = (Arc<[IpAddr]>, Instant);

pub struct Names {
    resolv_conf: std::path::PathBuf,
    servers: Vec<SocketAddr>,
    cache: u64,
    /// Built at the first name to check (a proxy whose egress is never
    /// decided by name keeps none): the resolver, or why there is none
    /// (named in every refusal).
    resolver: std::sync::OnceLock<Result<TokioResolver, String>>,
    /// Answers until their TTL ends, at most `max` names: a connection
    /// to a name already looked up costs a map lookup, not a resolver call.
    answers: std::sync::Mutex<HashMap<String, Answer>>,
    max: usize,
}

impl Names {
    /// The resolver of `resolv_conf`, or of `servers` (IP:PORT) when given;
    /// `cache` names at most. A configuration that cannot be read leaves a
    /// resolver that resolves nothing, and says why.
    pub fn new(resolv_conf: &Path, servers: &[SocketAddr], cache: u64) -> Self {
        Names {
            resolv_conf: resolv_conf.to_path_buf(),
            servers: servers.to_vec(),
            cache,
            resolver: std::sync::OnceLock::new(),
            answers: Default::default(),
            max: usize::try_from(cache).unwrap_or(usize::MAX).max(1),
        }
    }

    fn build(&self) -> Result<TokioResolver, String> {
        let resolv_conf = &self.resolv_conf;
        let parsed = if self.servers.is_empty() {
            std::fs::read(resolv_conf)
                .map_err(|e| format!("{}: {e}", resolv_conf.display()))
                .and_then(|bytes| {
                    hickory_resolver::system_conf::parse_resolv_conf(bytes)
                        .map_err(|e| format!("{}: {e}", resolv_conf.display()))
                })
        } else {
            let servers = self
                .servers
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
            opts.cache_size = self.cache.max(1);
            opts.timeout = Duration::from_secs(2);
            opts.attempts = 2;
            hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| e.to_string())
        });
        if let Err(e) = &built {
            tracing::warn!(error = %e, "no egress resolver: connections allowed by name are refused");
        }
        built
    }

    /// The addresses `host` resolves to now (A and AAAA).
    pub async fn addresses(&self, host: &str) -> Result<Arc<[IpAddr]>, String> {
        let resolver = match self.resolver.get_or_init(|| self.build()) {
            Ok(r) => r,
            Err(e) => return Err(e.clone()),
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
        let found =
            match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name.as_str())).await {
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
