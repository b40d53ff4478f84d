//! One request at the edge: its host (421 when the connection's TLS server
//! name belongs to another certificate), the Gateway route or Ingress rule
//! that takes it (404 when none), the AuthorizationPolicies of the ingress
//! workload (403 naming the rule), the forwarding headers, then the mesh:
//! `Outbound::forward_edge` sends it to the backend endpoint's sidecar over
//! mTLS, verifying its SPIFFE ID.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_policy::{EdgeRequest, Headers, Http, Peer};

use super::listen::Edge;
use crate::errors::{AuthzError, Error, HttpError, RouteError};
use crate::http::headers as hdr;
use crate::http::route::RouteTarget;
use crate::http::telemetry::{EdgeTls, Exchange};
use crate::http::{Body, guard};

/// One client connection.
pub struct Conn {
    pub peer: SocketAddr,
    /// The port it arrived on.
    pub port: u16,
    pub tls: Arc<EdgeTls>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

impl Edge {
    pub async fn handle(self: &Arc<Self>, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        let grpc = guard::is_grpc(&req);
        let h1 = req.version() <= http::Version::HTTP_11;
        let mut ex = Exchange::start("ingress", conn.peer, None, &req, &self.access);
        ex.at_edge(&conn.tls, conn.peer.ip());
        let mut resp = match self.serve(conn, req, &mut ex).await {
            Ok(resp) => ex.finish(resp, None),
            Err(e) => {
                let e = ex.blame(e);
                let mut resp = e.to_public_response(grpc);
                if h1
                    && matches!(
                        e,
                        Error::Http(HttpError::BadRequest(_) | HttpError::BodyTooLarge(_))
                    )
                {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                tracing::info!(peer = %conn.peer, reason = e.reason(), error = %e, "ingress request refused or failed");
                ex.finish(resp, Some(e.to_string()))
            }
        };
        if self.hsts_max_age > 0
            && let Ok(v) = HeaderValue::from_str(&format!("max-age={}", self.hsts_max_age))
        {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
        resp
    }

    async fn serve(
        self: &Arc<Self>,
        conn: &Conn,
        mut req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        guard::check(&req, self.limits.max_uri_bytes)?;
        let host = request_host(&req)?;
        // RFC 9110 §15.5.20 (and RFC 9113 §9.1.1): a connection made for one
        // certificate's names does not serve another's.
        let certs = self.certs.borrow().clone();
        if let Some(claimed) = certs.claimed(conn.port, &host) {
            let served = certs
                .resolve(conn.port, conn.tls.sni.as_deref())
                .map(|(name, _)| name);
            if served != Some(claimed) {
                return Err(HttpError::Misdirected(host).into());
            }
        }
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > self.max_request_body_bytes
        {
            return Err(HttpError::BodyTooLarge(self.max_request_body_bytes).into());
        }
        let client_ip = client_ip(conn.peer.ip(), req.headers(), self.trusted_hops);
        ex.at_edge(&conn.tls, client_ip);
        let view = self.policy.borrow().clone().ok_or(AuthzError::NoPolicy)?;
        let path = mesh_policy::normalize_path(req.uri().path())
            .map_err(|e| HttpError::BadRequest(e.to_string()))?;
        let now = SystemTime::now();
        let decided = view
            .evaluator
            .edge_route(&EdgeRequest {
                port: conn.port,
                ingress: conn.port == self.https_port,
                host: &host,
                method: req.method().as_str(),
                path: &path,
                query: req.uri().query(),
                headers: req.headers(),
                now,
            })
            .ok_or_else(|| RouteError::NoRoute(format!("{host}{path}")))?;
        let route = RouteTarget::of(&decided);
        let route_ref = decided.route.clone();
        drop(decided);
        let decision = view.evaluator.edge(&mesh_policy::Request {
            peer: Peer::Plaintext,
            source_ip: Some(conn.peer.ip()),
            source: None,
            destination: Some(self.local.as_workload()),
            destination_ip: self.local.ips.first().copied(),
            destination_port: conn.port,
            http: Some(Http {
                method: req.method().as_str(),
                path: &path,
                host: Some(&host),
                headers: Headers::Map(req.headers()),
                request_principal: None,
                remote_ip: Some(client_ip),
            }),
            now,
        });
        crate::policy::record("ingress", &decision);
        ex.decided(&decision);
        if !decision.is_allowed() {
            return Err(AuthzError::Denied(decision.decided_by.to_string()).into());
        }
        // RateLimitPolicies that select the ingress: per client address
        // (from trusted hops or the PROXY header), per port, method, path,
        // host and route.
        if view.evaluator.has_rate_limits() {
            let request = mesh_policy::RateLimitRequest {
                destination: self.local.as_workload(),
                port: conn.port,
                method: req.method().as_str(),
                path: &path,
                principal: None,
                host: Some(&host),
                route: Some(&route_ref),
                now,
            };
            let client: Arc<str> = Arc::from(client_ip.to_string());
            if let Err(l) = self
                .rate_limits
                .check(view.evaluator.rate_limits(&request), &client)
            {
                return Err(AuthzError::RateLimited {
                    policy: l.policy,
                    retry_after: l.retry_after,
                }
                .into());
            }
        }
        drop(view);
        // The backend app speaks HTTP/1.1 unless the request is gRPC (which
        // is HTTP/2 only), whatever the outside client negotiated with us.
        *req.version_mut() = if guard::is_grpc(&req) {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        forwarding_headers(
            req.headers_mut(),
            conn.peer.ip(),
            &host,
            self.trusted_hops > 0,
        );
        // A body without a length is counted as it streams; one with a
        // length was checked above (and hyper holds it to that length),
        // and an empty one needs nothing.
        use http_body::Body as _;
        if req.body().is_end_stream() || req.headers().contains_key(header::CONTENT_LENGTH) {
            return self.out.forward_edge(route, req, ex).await;
        }
        let cap = ex.cap_request_body(self.max_request_body_bytes);
        tokio::select! {
            r = self.out.forward_edge(route, req, ex) => r,
            () = cap.exceeded() => Err(HttpError::BodyTooLarge(cap.max()).into()),
        }
    }
}

/// The request's host, lowercase, without a port: `Host` (HTTP/1.1) or
/// `:authority` (HTTP/2); a request without one is refused.
fn request_host<B>(req: &Request<B>) -> Result<String, Error> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .ok_or_else(|| HttpError::BadRequest("no Host".into()))?;
    let authority: http::uri::Authority = raw
        .parse()
        .map_err(|_| HttpError::BadRequest("invalid Host".into()))?;
    if authority.as_str().contains('@') {
        return Err(HttpError::BadRequest("invalid Host".into()).into());
    }
    Ok(authority.host().trim_end_matches('.').to_ascii_lowercase())
}

/// The address a request is decided by: the connection's, or, behind
/// `trusted` hops that append to X-Forwarded-For, the `trusted`-th entry
/// from the right. A header with fewer entries than that, or one that does
/// not parse, cannot be trusted: the connection's address stands.
pub fn client_ip(peer: IpAddr, headers: &http::HeaderMap, trusted: usize) -> IpAddr {
    if trusted == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(trusted)
        .and_then(|i| entries.get(i))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// What the backend learns of the hop: X-Forwarded-For / -Proto / -Host and
/// `Forwarded` (RFC 7239), added to what trusted hops sent or, from an
/// untrusted client, replacing it; identity headers a client could forge
/// are removed (the backend's sidecar adds the ingress's own); a W3C
/// `traceparent` is started when the client sent none.
fn forwarding_headers(headers: &mut http::HeaderMap, peer: IpAddr, host: &str, trusted: bool) {
    hdr::strip_untrusted(headers);
    let prior_xff = trusted
        .then(|| {
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty());
    let prior_forwarded = trusted
        .then(|| {
            headers
                .get_all(&FORWARDED)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty());
    let xff = match prior_xff {
        Some(p) => format!("{p}, {peer}"),
        None => peer.to_string(),
    };
    let node = match peer {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let this = format!("for={node};proto=https;host={host}");
    let forwarded = match prior_forwarded {
        Some(p) => format!("{p}, {this}"),
        None => this,
    };
    let set = |headers: &mut http::HeaderMap, name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        } else {
            headers.remove(name);
        }
    };
    set(headers, X_FORWARDED_FOR, &xff);
    set(headers, FORWARDED, &forwarded);
    set(headers, X_FORWARDED_PROTO, "https");
    set(headers, X_FORWARDED_HOST, host);
    if !headers
        .get(&TRACEPARENT)
        .is_some_and(|v| valid_traceparent(v.as_bytes()))
    {
        let trace =
            crate::http::retry::random() as u128 | ((crate::http::retry::random() as u128) << 64);
        let span = crate::http::retry::random() | 1;
        set(
            headers,
            TRACEPARENT,
            &format!("00-{trace:032x}-{span:016x}-01"),
        );
    }
}

/// W3C Trace Context `version-traceid-parentid-flags`, version 00, ids not
/// all zero.
fn valid_traceparent(v: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(v) else {
        return false;
    };
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// The plain-HTTP listener's only answer: 308 to the same host and path
/// over HTTPS (on `https_port` when it is not 443).
pub fn redirect<B>(req: &Request<B>, https_port: u16) -> Response<Body> {
    let Ok(host) = request_host(req) else {
        return crate::errors::respond::text(StatusCode::BAD_REQUEST, "no Host\n".into());
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut resp = crate::errors::respond::text(StatusCode::PERMANENT_REDIRECT, String::new());
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    metrics::counter!("mesh_ingress_redirects_total").increment(1);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(X_FORWARDED_FOR, v.parse().unwrap());
        h
    }

    #[test]
    fn the_client_address_comes_from_trusted_hops_only() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = xff("6.6.6.6, 203.0.113.7");
        // Untrusted: a client's own header changes nothing.
        assert_eq!(client_ip(peer, &h, 0), peer);
        // One load balancer appended the client it saw.
        assert_eq!(
            client_ip(peer, &h, 1),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &h, 2), "6.6.6.6".parse::<IpAddr>().unwrap());
        // Fewer entries than hops, or garbage: the connection's address.
        assert_eq!(client_ip(peer, &h, 3), peer);
        assert_eq!(client_ip(peer, &xff("not-an-ip"), 1), peer);
        assert_eq!(client_ip(peer, &http::HeaderMap::new(), 1), peer);
    }

    #[test]
    fn forwarding_headers_replace_what_an_untrusted_client_sent() {
        let mut h = xff("6.6.6.6");
        h.insert(
            "x-palisade-peer-identity",
            "spiffe://cluster.local/ns/x/sa/admin".parse().unwrap(),
        );
        h.insert("x-forwarded-client-cert", "By=evil".parse().unwrap());
        h.insert(FORWARDED, "for=6.6.6.6".parse().unwrap());
        let peer: IpAddr = "198.51.100.2".parse().unwrap();
        forwarding_headers(&mut h, peer, "shop.example", false);
        assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.2");
        assert_eq!(
            h[&FORWARDED],
            "for=198.51.100.2;proto=https;host=shop.example"
        );
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example");
        assert!(!h.contains_key("x-palisade-peer-identity"));
        assert!(!h.contains_key("x-forwarded-client-cert"));
        assert!(
            valid_traceparent(h[&TRACEPARENT].as_bytes()),
            "{:?}",
            h[&TRACEPARENT]
        );

        // Behind a trusted hop the chain grows; a client's trace goes on.
        let mut h = xff("203.0.113.7");
        h.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        forwarding_headers(&mut h, "10.0.0.1".parse().unwrap(), "shop.example", true);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7, 10.0.0.1");
        assert_eq!(
            h[&TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(!valid_traceparent(
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
    }

    #[test]
    fn hosts_and_redirects() {
        let req = Request::builder()
            .uri("/cart?x=1")
            .header(header::HOST, "Shop.Example:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).unwrap(), "shop.example");
        let r = redirect(&req, 443);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://shop.example/cart?x=1"
        );
        assert_eq!(
            redirect(&req, 8443).headers()[header::LOCATION],
            "https://shop.example:8443/cart?x=1"
        );
        let bad = Request::builder()
            .uri("/")
            .header(header::HOST, "a@b")
            .body(())
            .unwrap();
        assert!(request_host(&bad).is_err());
    }
}
