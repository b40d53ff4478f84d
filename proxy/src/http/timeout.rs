//! Deadlines as a layer: a request (or one try of it) that has no answer
//! within its [`Deadline`] is answered 504 (gRPC DEADLINE_EXCEEDED) naming
//! the timeout that fired. The same layer serves a route's
//! `timeouts.request` (over every try), its `timeouts.backendRequest` (per
//! try) and the caller's own `grpc-timeout`; the app downstream is told what
//! is left, not the whole budget.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use http::header::HeaderValue;
use http::{Request, Response};
use tokio::time::Instant;

use super::{Body, BoxFuture};
use crate::errors::{Error, HttpError};

pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The typed target of the layer: which timeout, and how long.
#[derive(Debug, Clone)]
pub struct Deadline {
    /// `timeouts.request`, `timeouts.backendRequest` or `grpc-timeout`.
    pub which: &'static str,
    pub after: Duration,
    /// The route rule that set it; `None` for a caller's `grpc-timeout` on
    /// a request that took no route.
    pub route: Option<Arc<str>>,
}

impl Deadline {
    /// A request's deadline over all its tries: the route's
    /// `timeouts.request`, or the caller's `grpc-timeout` when that is
    /// shorter (or the only one).
    pub fn request(
        route: Option<&Arc<str>>,
        configured: Option<Duration>,
        headers: &http::HeaderMap,
    ) -> Option<Deadline> {
        let grpc = grpc_timeout(headers);
        let (which, after) = match (configured, grpc) {
            (Some(r), Some(g)) if g < r => ("grpc-timeout", g),
            (Some(r), _) => ("timeouts.request", r),
            (None, Some(g)) => ("grpc-timeout", g),
            (None, None) => return None,
        };
        Some(Deadline {
            which,
            after,
            route: route.cloned(),
        })
    }

    fn error(&self) -> Error {
        match &self.route {
            None => HttpError::GrpcTimeout(self.after).into(),
            Some(route) => HttpError::RouteTimeout {
                which: self.which,
                after: self.after,
                route: route.to_string(),
            }
            .into(),
        }
    }
}

/// When the innermost deadline a request is under expires (a request
/// extension the layer sets, and a retry copies to each try).
#[derive(Debug, Clone, Copy)]
pub struct Expires(pub Instant);

/// Tells the app downstream how long is left: a request that carries
/// `grpc-timeout` has it replaced by the time to its deadline.
pub fn pass_on<B>(req: &mut Request<B>) {
    let Some(Expires(at)) = req.extensions().get::<Expires>().copied() else {
        return;
    };
    if !req.headers().contains_key(GRPC_TIMEOUT) {
        return;
    }
    let left = at.saturating_duration_since(Instant::now());
    if let Ok(v) = HeaderValue::from_str(&format!("{}m", left.as_millis().max(1))) {
        req.headers_mut().insert(GRPC_TIMEOUT, v);
    }
}

/// Which timeout a layer applies.
#[derive(Debug, Clone)]
enum Kind {
    /// Over every try: the route's `timeouts.request` and the caller's
    /// `grpc-timeout`, whichever is shorter.
    Request {
        route: Option<Arc<str>>,
        after: Option<Duration>,
    },
    /// One try: the route's `timeouts.backendRequest`.
    Try(Option<Deadline>),
}

#[derive(Clone)]
pub struct TimeoutLayer(Kind);

impl TimeoutLayer {
    /// A request's timeout; `route`: the rule that took it, if any.
    pub fn request(route: Option<&Arc<str>>, after: Option<Duration>) -> Self {
        Self(Kind::Request {
            route: route.cloned(),
            after,
        })
    }

    /// A try's timeout under the rule `route`.
    pub fn per_try(route: Option<&Arc<str>>, after: Option<Duration>) -> Self {
        Self(Kind::Try(route.zip(after).map(|(route, after)| Deadline {
            which: "timeouts.backendRequest",
            after,
            route: Some(route.clone()),
        })))
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            kind: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    kind: Kind,
}

impl<S> tower::Service<Request<Body>> for Timeout<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<BoxFuture, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let deadline = match &self.kind {
            Kind::Request { route, after } => {
                Deadline::request(route.as_ref(), *after, req.headers())
            }
            Kind::Try(d) => d.clone(),
        };
        let Some(d) = deadline else {
            return Either::Right(self.inner.call(req));
        };
        let at = Instant::now() + d.after;
        // A deadline inside a longer one is the one that counts.
        let sooner = req
            .extensions()
            .get::<Expires>()
            .is_none_or(|Expires(outer)| at < *outer);
        if sooner {
            req.extensions_mut().insert(Expires(at));
        }
        pass_on(&mut req);
        let fut = self.inner.call(req);
        Either::Left(Box::pin(async move {
            tokio::time::timeout(d.after, fut)
                .await
                .unwrap_or_else(|_| Err(d.error()))
        }))
    }
}

/// `grpc-timeout` (gRPC over HTTP/2: an integer of at most 8 digits and a
/// unit, H M S m u n).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    if n.is_empty() || n.len() > 8 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        let h = |v: &'static str| {
            let mut m = http::HeaderMap::new();
            m.insert(GRPC_TIMEOUT, HeaderValue::from_static(v));
            grpc_timeout(&m)
        };
        assert_eq!(h("100m"), Some(Duration::from_millis(100)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "100", "123456789m", "10x", "-1m", "1.5S"] {
            assert_eq!(h(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_shorter_of_route_and_grpc_timeout_holds() {
        let name: Arc<str> = Arc::from("HTTPRoute shop/r rule 0");
        let two = Some(Duration::from_secs(2));
        let mut h = http::HeaderMap::new();
        assert!(Deadline::request(None, None, &h).is_none());
        assert!(Deadline::request(Some(&name), None, &h).is_none());
        let d = Deadline::request(Some(&name), two, &h).unwrap();
        assert_eq!(
            (d.which, d.after),
            ("timeouts.request", Duration::from_secs(2))
        );
        h.insert(GRPC_TIMEOUT, HeaderValue::from_static("500m"));
        let d = Deadline::request(Some(&name), two, &h).unwrap();
        assert_eq!(
            (d.which, d.after),
            ("grpc-timeout", Duration::from_millis(500))
        );
        let d = Deadline::request(None, None, &h).unwrap();
        assert!(d.route.is_none());
        assert!(matches!(d.error(), Error::Http(HttpError::GrpcTimeout(_))));
    }

    /// An inner service that never answers, and reports the grpc-timeout
    /// it was sent.
    struct Stall(Arc<std::sync::Mutex<Option<String>>>);

    impl tower::Service<Request<Body>> for Stall {
        type Response = Response<Body>;
        type Error = Error;
        type Future = BoxFuture;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<Body>) -> BoxFuture {
            *self.0.lock().unwrap() = req
                .headers()
                .get(GRPC_TIMEOUT)
                .map(|v| v.to_str().unwrap().to_string());
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_try_fails_at_its_deadline_naming_it() {
        let seen = Arc::default();
        let name: Arc<str> = Arc::from("HTTPRoute shop/r rule 0");
        let svc = tower::Layer::layer(
            &TimeoutLayer::per_try(Some(&name), Some(Duration::from_millis(300))),
            Stall(Arc::clone(&seen)),
        );
        let mut req = Request::new(crate::http::empty());
        req.headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_static("10S"));
        let started = tokio::time::Instant::now();
        let err = super::super::oneshot(svc, req).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        match err {
            Error::Http(HttpError::RouteTimeout { which, route, .. }) => {
                assert_eq!(which, "timeouts.backendRequest");
                assert_eq!(route, "HTTPRoute shop/r rule 0");
            }
            other => panic!("{other:?}"),
        }
        // The app was told what is left of the try, not the caller's 10 s.
        assert_eq!(seen.lock().unwrap().as_deref(), Some("300m"));
    }
}
