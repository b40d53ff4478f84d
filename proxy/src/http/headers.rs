//! Header rules: hop-by-hop headers are not forwarded (RFC 9110 §7.6.1), and
//! identity headers come only from the proxy.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The verified SPIFFE ID of the caller, set by the inbound proxy for the app.
pub const PEER_IDENTITY_HEADER: &str = "x-palisade-peer-identity";
/// Set by the client proxy on every request between proxies: the port of
/// the app the request is for (docs/wire.md).
pub const TARGET_PORT_HEADER: &str = "x-palisade-target-port";
/// Set by the client proxy: the protocol the calling app spoke (`HTTP/1.1`
/// or `HTTP/2`), so the server proxy speaks the same to its app.
pub const ORIG_PROTO_HEADER: &str = "x-palisade-orig-proto";

/// Hop-by-hop headers (RFC 9110 §7.6.1, and the obsolete `proxy-connection`
/// and `keep-alive`): they describe one connection, not the request.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// The target of a request sent as HTTP/2: scheme, `:authority` and the
/// path and query, which is reused, not copied.
pub fn h2_uri(
    authority: &str,
    path_and_query: http::uri::PathAndQuery,
) -> Result<http::Uri, crate::errors::HttpError> {
    let bad = || crate::errors::HttpError::BadRequest("invalid authority or path".into());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(http::uri::Authority::try_from(authority).map_err(|_| bad())?);
    parts.path_and_query = Some(path_and_query);
    http::Uri::from_parts(parts).map_err(|_| bad())
}

/// Removes hop-by-hop headers, including every header the `Connection`
/// header names. hyper frames the body itself (`transfer-encoding`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    // `te: trailers` is the one TE value HTTP/2 allows, and gRPC needs it.
    let trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    if trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
}

/// Removes identity headers a client could forge: ours and
/// `x-forwarded-client-cert`.
pub fn strip_untrusted(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            k.as_str().starts_with("x-palisade-") || k.as_str() == "x-forwarded-client-cert"
        })
        .cloned()
        .collect();
    for k in forged {
        headers.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forged_identity_is_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            PEER_IDENTITY_HEADER,
            "spiffe://x/ns/a/sa/b".parse().unwrap(),
        );
        h.insert("x-forwarded-client-cert", "By=x".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        strip_untrusted(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-other"]
        );
    }
}
