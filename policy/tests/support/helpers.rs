//! Shared by the integration tests: compile YAML, describe a call briefly.
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use mesh_policy::{
    Decision, Evaluator, Headers, Http, Labels, Peer, Request, Workload, parse_yaml,
};

/// A fixed "now" so expiry tests do not depend on the clock: 2030-01-01T00:00:00Z.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

pub fn mesh(yaml: &str) -> Evaluator {
    mesh_in(yaml, "cluster.local")
}

pub fn mesh_in(yaml: &str, trust_domain: &str) -> Evaluator {
    let loaded = parse_yaml("test.yaml", yaml).unwrap_or_else(|e| panic!("test policy: {e}"));
    Evaluator::compile(&loaded.snapshot, trust_domain).unwrap_or_else(|e| panic!("compile: {e}"))
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One call, written the way a test reads: who, to what, how.
#[derive(Clone)]
pub struct Call {
    principal: Option<String>,
    source_ip: Option<IpAddr>,
    source: Option<(String, Labels)>,
    destination: Option<(String, Labels)>,
    destination_ip: Option<IpAddr>,
    port: u16,
    http: Option<(String, String)>,
    host: Option<String>,
    headers: Vec<(String, String)>,
    request_principal: Option<String>,
    remote_ip: Option<IpAddr>,
    now: SystemTime,
}

impl Call {
    /// An mTLS caller with identity `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub fn from_sa(namespace: &str, sa: &str) -> Call {
        Call::from_principal(&format!("spiffe://cluster.local/ns/{namespace}/sa/{sa}"))
    }

    pub fn from_principal(principal: &str) -> Call {
        Call {
            principal: Some(principal.to_owned()),
            ..Call::plaintext()
        }
    }

    pub fn plaintext() -> Call {
        Call {
            principal: None,
            source_ip: None,
            source: None,
            destination: Some(("default".to_owned(), Labels::new())),
            destination_ip: None,
            port: 8080,
            http: None,
            host: None,
            headers: Vec::new(),
            request_principal: None,
            remote_ip: None,
            now: now(),
        }
    }

    pub fn source_ip(mut self, ip: &str) -> Call {
        self.source_ip = Some(ip.parse().expect("test ip"));
        self
    }

    pub fn source_workload(mut self, namespace: &str, pairs: &[(&str, &str)]) -> Call {
        self.source = Some((namespace.to_owned(), labels(pairs)));
        self
    }

    pub fn to(mut self, namespace: &str, pairs: &[(&str, &str)]) -> Call {
        self.destination = Some((namespace.to_owned(), labels(pairs)));
        self
    }

    pub fn outside_mesh(mut self) -> Call {
        self.destination = None;
        self
    }

    pub fn destination_ip(mut self, ip: &str) -> Call {
        self.destination_ip = Some(ip.parse().expect("test ip"));
        self
    }

    pub fn port(mut self, port: u16) -> Call {
        self.port = port;
        self
    }

    pub fn http(mut self, method: &str, path: &str) -> Call {
        self.http = Some((method.to_owned(), path.to_owned()));
        self
    }

    pub fn host(mut self, host: &str) -> Call {
        self.host = Some(host.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn request_principal(mut self, p: &str) -> Call {
        self.request_principal = Some(p.to_owned());
        self
    }

    pub fn remote_ip(mut self, ip: &str) -> Call {
        self.remote_ip = Some(ip.parse().expect("test ip"));
        self
    }

    pub fn at(mut self, now: SystemTime) -> Call {
        self.now = now;
        self
    }

    fn with_request<T>(&self, f: impl FnOnce(&Request<'_>) -> T) -> T {
        let pairs: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let http = self.http.as_ref().map(|(method, path)| Http {
            method,
            path,
            host: self.host.as_deref(),
            headers: Headers::Pairs(&pairs),
            request_principal: self.request_principal.as_deref(),
            remote_ip: self.remote_ip,
        });
        let request = Request {
            peer: match &self.principal {
                Some(principal) => Peer::Mtls { principal },
                None => Peer::Plaintext,
            },
            source_ip: self.source_ip,
            source: self
                .source
                .as_ref()
                .map(|(namespace, labels)| Workload { namespace, labels }),
            destination: self
                .destination
                .as_ref()
                .map(|(namespace, labels)| Workload { namespace, labels }),
            destination_ip: self.destination_ip,
            destination_port: self.port,
            http,
            now: self.now,
        };
        f(&request)
    }

    pub fn inbound(&self, evaluator: &Evaluator) -> Decision {
        self.with_request(|r| evaluator.inbound(r))
    }

    pub fn outbound(&self, evaluator: &Evaluator) -> Decision {
        self.with_request(|r| evaluator.outbound(r))
    }

    pub fn check(&self, evaluator: &Evaluator) -> Decision {
        self.with_request(|r| evaluator.check(r))
    }
}

/// `"allow"` / `"deny"` and what decided, as one comparable string.
pub fn outcome(decision: &Decision) -> String {
    format!("{}: {}", decision.verdict.as_str(), decision.decided_by)
}
