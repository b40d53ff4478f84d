//! The one mapping from failures to what a client sees and what is counted:
//! HTTP status, gRPC status (for gRPC requests) and the metric reason label.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::{AuthzError, ConnectError, Error, HttpError, RouteError};
use crate::http::Body;

/// gRPC status codes (grpc/doc/statuscodes.md) the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Internal = 13,
    Unavailable = 14,
}

impl Error {
    /// The HTTP status of this failure.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::Authz(AuthzError::Denied(_)) => StatusCode::FORBIDDEN,
            Error::Authz(AuthzError::NoPolicy) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Authz(AuthzError::RateLimited { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Error::Http(HttpError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            Error::Http(HttpError::UriTooLong(_)) => StatusCode::URI_TOO_LONG,
            Error::Http(HttpError::HeadersTooLarge(_)) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Error::Http(HttpError::ConnectRefused) => StatusCode::FORBIDDEN,
            Error::Http(HttpError::Misdirected(_)) => StatusCode::MISDIRECTED_REQUEST,
            Error::Http(HttpError::BodyTooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Route(RouteError::NoRoute(_)) => StatusCode::NOT_FOUND,
            Error::Http(HttpError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            Error::Http(HttpError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Http(HttpError::Upstream(_)) => StatusCode::BAD_GATEWAY,
            Error::Http(HttpError::RouteTimeout { .. })
            | Error::Http(HttpError::GrpcTimeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            Error::Route(RouteError::NoEndpoints(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Route(RouteError::NoBackend(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Route(_) => StatusCode::BAD_GATEWAY,
            Error::Connect(ConnectError::Handshake { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Connect(ConnectError::Recent(e)) if !e.is_unreachable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Connect(ConnectError::ConnectTimeout { .. })
            | Error::Connect(ConnectError::HandshakeTimeout { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Connect(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The gRPC status of this failure.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            Error::Authz(AuthzError::Denied(_)) | Error::Http(HttpError::ConnectRefused) => {
                GrpcCode::PermissionDenied
            }
            Error::Http(HttpError::BadRequest(_)) => GrpcCode::InvalidArgument,
            Error::Http(HttpError::UriTooLong(_))
            | Error::Http(HttpError::HeadersTooLarge(_))
            | Error::Http(HttpError::BodyTooLarge(_))
            | Error::Authz(AuthzError::RateLimited { .. }) => GrpcCode::ResourceExhausted,
            Error::Route(RouteError::NoRoute(_)) => GrpcCode::NotFound,
            Error::Http(HttpError::Timeout(_))
            | Error::Http(HttpError::RouteTimeout { .. })
            | Error::Http(HttpError::GrpcTimeout(_)) => GrpcCode::DeadlineExceeded,
            Error::Route(RouteError::NoBackend(_)) => GrpcCode::Internal,
            Error::Connect(ConnectError::Tls(_)) => GrpcCode::Internal,
            _ => GrpcCode::Unavailable,
        }
    }

    fn reason_of_connect(e: &ConnectError) -> &'static str {
        match e {
            ConnectError::Recent(inner) => Error::reason_of_connect(inner),
            ConnectError::Connect { .. } | ConnectError::Resolve(_) => "peer_connect",
            ConnectError::ConnectTimeout { .. } => "peer_connect_timeout",
            ConnectError::Handshake { .. } | ConnectError::HandshakeTimeout { .. } => "handshake",
            ConnectError::Preamble { .. } => "peer_write",
            ConnectError::H2Handshake { .. } => "h2_handshake",
            ConnectError::Tls(_) => "internal",
        }
    }

    /// `reason` label of `mesh_tcp_connection_errors_total` and of logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Connect(e) => Error::reason_of_connect(e),
            Error::Route(RouteError::NoOriginalDestination) => "no_original_destination",
            Error::Route(RouteError::NoEndpoints(_)) => "no_endpoints",
            Error::Route(RouteError::Loop(_)) => "loop",
            Error::Route(RouteError::NoBackend(_)) => "no_backend",
            Error::Route(RouteError::NoRoute(_)) => "no_route",
            Error::Http(HttpError::Misdirected(_)) => "misdirected",
            Error::Http(HttpError::BodyTooLarge(_)) => "body_too_large",
            Error::Authz(AuthzError::Denied(_)) => "denied",
            Error::Authz(AuthzError::NoPolicy) => "no_policy",
            Error::Authz(AuthzError::RateLimited { .. }) => "rate_limited",
            Error::Http(HttpError::BadRequest(_)) => "bad_request",
            Error::Http(HttpError::UriTooLong(_)) => "uri_too_long",
            Error::Http(HttpError::HeadersTooLarge(_)) => "headers_too_large",
            Error::Http(HttpError::ConnectRefused) => "connect_refused",
            Error::Http(HttpError::Unavailable(_)) => "upstream_unavailable",
            Error::Http(HttpError::Upstream(_)) => "upstream_failed",
            Error::Http(HttpError::Timeout(_)) => "timeout",
            Error::Http(HttpError::GrpcTimeout(_)) => "grpc_timeout",
            Error::Http(HttpError::RouteTimeout { which, .. }) => match *which {
                "timeouts.request" => "request_timeout",
                "grpc-timeout" => "grpc_timeout",
                _ => "backend_request_timeout",
            },
        }
    }

    /// The response a client gets: a short text body for HTTP, a
    /// trailers-only response with `grpc-status` and `grpc-message` for gRPC.
    pub fn to_response(&self, grpc: bool) -> Response<Body> {
        self.respond(grpc, self.to_string())
    }

    /// What a client outside the mesh gets (at the ingress): a refusal
    /// still names its rule, but a failure behind the border (5xx) says only
    /// its status and reason, never the mesh's addresses or identities;
    /// the access log and the ingress's log keep the whole error.
    pub fn to_public_response(&self, grpc: bool) -> Response<Body> {
        let status = self.http_status();
        if !status.is_server_error() {
            return self.to_response(grpc);
        }
        let what = status.canonical_reason().unwrap_or("server error");
        self.respond(grpc, format!("{what} ({})", self.reason()))
    }

    fn respond(&self, grpc: bool, message: String) -> Response<Body> {
        let mut resp = if grpc {
            grpc_status(self.grpc_code(), &message)
        } else {
            text(self.http_status(), format!("{message}\n"))
        };
        if let Error::Authz(AuthzError::RateLimited { retry_after, .. }) = self {
            // RFC 9110 §10.2.3: whole seconds; a client waiting less would
            // only be refused again.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A gRPC trailers-only response (HTTP 200, the status in the headers).
pub fn grpc_status(code: GrpcCode, message: &str) -> Response<Body> {
    let mut r = Response::new(crate::http::empty());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    r
}

/// `grpc-message` is percent-encoded UTF-8 (gRPC over HTTP/2, "Responses").
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_answer_keeps_the_mesh_behind_the_border_to_itself() {
        let e = Error::from(HttpError::Unavailable(
            "mTLS handshake with 10.1.2.3:4143 failed: peer is spiffe://cluster.local/ns/a/sa/b"
                .into(),
        ));
        let r = e.to_public_response(false);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = futures_util::FutureExt::now_or_never(r.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"Service Unavailable (upstream_unavailable)\n");
        let g = e.to_public_response(true);
        assert_eq!(
            g.headers()["grpc-message"],
            "Service Unavailable (upstream_unavailable)"
        );
        // A refusal still names its rule.
        let d = Error::from(AuthzError::Denied("AuthorizationPolicy a/b rule 0".into()));
        let body = futures_util::FutureExt::now_or_never(
            d.to_public_response(false).into_body().collect(),
        )
        .unwrap()
        .unwrap()
        .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("AuthorizationPolicy a/b rule 0"));
    }

    // Policy denials are 403 / PERMISSION_DENIED and name the rule.
    #[test]
    fn denial_names_the_rule_in_both_protocols() {
        let e = Error::from(AuthzError::Denied(
            "AuthorizationPolicy default/deny-admin rule 0".into(),
        ));
        let r = e.to_response(false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let g = e.to_response(true);
        assert_eq!(g.status(), StatusCode::OK);
        assert_eq!(g.headers()["grpc-status"], "7");
        assert_eq!(
            g.headers()["grpc-message"],
            "access denied: AuthorizationPolicy default/deny-admin rule 0"
        );
    }

    #[test]
    fn statuses_by_failure() {
        let cases: [(Error, u16, GrpcCode); 5] = [
            (
                HttpError::Timeout(std::time::Duration::from_secs(1)).into(),
                504,
                GrpcCode::DeadlineExceeded,
            ),
            (
                HttpError::Upstream("reset".into()).into(),
                502,
                GrpcCode::Unavailable,
            ),
            (
                RouteError::NoEndpoints("default/api".into()).into(),
                503,
                GrpcCode::Unavailable,
            ),
            (
                HttpError::HeadersTooLarge(65536).into(),
                431,
                GrpcCode::ResourceExhausted,
            ),
            (
                HttpError::BadRequest("x".into()).into(),
                400,
                GrpcCode::InvalidArgument,
            ),
        ];
        for (e, http, grpc) in cases {
            assert_eq!(e.http_status().as_u16(), http, "{e}");
            assert_eq!(e.grpc_code(), grpc, "{e}");
        }
    }

    // A rate limit is 429 (gRPC RESOURCE_EXHAUSTED), names the policy and
    // says when to come back, in whole seconds rounded up.
    #[test]
    fn rate_limits_name_the_policy_and_say_when_to_retry() {
        let e = Error::from(AuthzError::RateLimited {
            policy: "RateLimitPolicy shop/api".into(),
            retry_after: std::time::Duration::from_millis(1200),
        });
        let r = e.to_response(false);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let g = e.to_response(true);
        assert_eq!(g.headers()["grpc-status"], "8");
        assert_eq!(
            g.headers()["grpc-message"],
            "rate limited by RateLimitPolicy shop/api"
        );
        assert_eq!(g.headers()[header::RETRY_AFTER], "2");
        assert_eq!(e.reason(), "rate_limited");
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }
}
