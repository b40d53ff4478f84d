//! Checks on a request before anything is decided or forwarded: its target
//! length, and on HTTP/1.1 the framing ambiguities that request smuggling
//! relies on (RFC 9112 §6.3). A refused HTTP/1.1 request closes its
//! connection: after a framing error nothing that follows can be trusted.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Request, Version};

use crate::errors::HttpError;

/// Refuses what must not be forwarded.
pub fn check<B>(req: &Request<B>, max_uri_bytes: usize) -> Result<(), HttpError> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    if uri_len > max_uri_bytes {
        return Err(HttpError::UriTooLong(max_uri_bytes));
    }
    if req.version() <= Version::HTTP_11 {
        let h = req.headers();
        if h.contains_key(TRANSFER_ENCODING) && h.contains_key(CONTENT_LENGTH) {
            return Err(HttpError::BadRequest(
                "both Content-Length and Transfer-Encoding".into(),
            ));
        }
        if h.get_all(CONTENT_LENGTH).iter().count() > 1 {
            return Err(HttpError::BadRequest("more than one Content-Length".into()));
        }
    }
    Ok(())
}

/// A gRPC request (`content-type: application/grpc…`): its failures are
/// answered with gRPC statuses.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    // RFC 9112 §6.3: a request with both is a smuggling attempt.
    #[test]
    fn ambiguous_framing_is_refused() {
        assert!(
            check(
                &req(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
                8192
            )
            .is_err()
        );
        assert!(
            check(
                &req(&[("content-length", "5"), ("content-length", "5")]),
                8192
            )
            .is_err()
        );
        assert!(check(&req(&[("content-length", "5")]), 8192).is_ok());
    }

    #[test]
    fn long_targets_are_refused() {
        let long = format!("/{}", "a".repeat(9000));
        let r = Request::builder().uri(long.as_str()).body(()).unwrap();
        assert!(matches!(check(&r, 8192), Err(HttpError::UriTooLong(8192))));
    }
}
