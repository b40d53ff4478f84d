//! The route a request to a Service takes: the HTTPRoute rule the evaluator
//! picks (mesh-policy decides, as it does authorization), the backend
//! Service drawn by weight, the header edits, timeouts and retry policy.
//! A Service without routes keeps Palisade's defaults: its own endpoints,
//! no retries, no request timeout. [`Router`] is the layer: the rest of the
//! stack is built for the [`RouteTarget`] it picks.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_util::future::{Either, Ready, ready};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use mesh_policy::{Backend, HeaderEdits, Retry, RouteRequest, Timeouts};

use super::retry::random;
use super::telemetry::Notes;
use super::{Body, BoxFuture};
use crate::errors::{Error, HttpError};
use crate::outbound::resolve::ServiceKey;
use crate::policy::PolicyView;

/// What a matched rule asks of one request.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    /// `HTTPRoute ns/name rule N`: named in errors, logs and metrics.
    pub name: Arc<str>,
    /// The backend drawn for this request; `None` when the rule has none
    /// with weight (the Gateway API answers 500).
    pub backend: Option<Backend>,
    pub request_headers: HeaderEdits,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
    /// The rule's match named the method (a POST may then be retried).
    pub method_named: bool,
}

/// The route for a request to `service` (one that has routes), if one
/// applies.
pub fn select<B>(
    policy: &PolicyView,
    client_namespace: &str,
    service: &ServiceKey,
    req: &http::Request<B>,
) -> Result<Option<RouteTarget>, Error> {
    let evaluator = &policy.evaluator;
    let path = mesh_policy::normalize_path(req.uri().path())
        .map_err(|e| HttpError::BadRequest(e.to_string()))?;
    Ok(evaluator
        .route(&RouteRequest {
            client_namespace: Some(client_namespace),
            service_namespace: &service.namespace,
            service_name: &service.name,
            port: service.port,
            method: req.method().as_str(),
            path: &path,
            query: req.uri().query(),
            headers: req.headers(),
            now: SystemTime::now(),
        })
        .map(|d| RouteTarget::of(&d)))
}

impl RouteTarget {
    /// What the evaluator's rule asks, the backend drawn by weight.
    pub fn of(d: &mesh_policy::RouteDecision<'_>) -> Self {
        RouteTarget {
            name: Arc::from(format!("{} rule {}", d.route, d.rule)),
            backend: pick(d.backends, random()).cloned(),
            request_headers: d.request_headers.clone(),
            timeouts: d.timeouts,
            retry: d.retry.cloned(),
            method_named: d.method_named,
        }
    }
}

/// The typed target of the route layer.
pub enum Logical<'a> {
    /// A request to a Service that has routes: the Service, the client's
    /// namespace and the policy the routes come from; the rule is picked
    /// per request.
    Service {
        policy: &'a PolicyView,
        client_namespace: &'a str,
        service: &'a ServiceKey,
    },
    /// The rule was picked before the stack (the ingress's Gateway route or
    /// Ingress rule).
    Chosen(Box<RouteTarget>),
}

/// Builds the stack below the route layer for the route a request takes.
pub trait NewRoute {
    type Service: tower::Service<Request<Body>, Response = Response<Body>, Error = Error>
        + Send
        + 'static;

    /// `None`: no route took the request (the destination's own
    /// endpoints, Palisade's defaults).
    fn new_route(&self, route: Option<&RouteTarget>) -> Result<Self::Service, Error>;
}

/// The route layer's service: picks the rule (and, by weight, the backend)
/// for a request to a Service that has routes, applies the rule's header
/// edits, notes the rule for the log line and hands the request to the
/// stack built for it.
pub struct Router<'a, N> {
    logical: Option<Logical<'a>>,
    notes: &'a Notes,
    new: N,
}

impl<'a, N: NewRoute> Router<'a, N> {
    /// `logical`: `None` when the destination is not a Service with routes.
    pub fn new(logical: Option<Logical<'a>>, notes: &'a Notes, new: N) -> Self {
        Self {
            logical,
            notes,
            new,
        }
    }
}

impl<N: NewRoute> tower::Service<Request<Body>> for Router<'_, N>
where
    <N::Service as tower::Service<Request<Body>>>::Future: Send,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<Ready<super::Result>, BoxFuture>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let route = match &self.logical {
            None => None,
            Some(Logical::Service {
                policy,
                client_namespace,
                service,
            }) => match select(policy, client_namespace, service, &req) {
                Ok(r) => r,
                Err(e) => return Either::Left(ready(Err(e))),
            },
            Some(Logical::Chosen(r)) => Some(RouteTarget::clone(r)),
        };
        if let Some(r) = &route {
            self.notes.routed(&r.name);
            apply(&r.request_headers, req.headers_mut());
        }
        match self.new.new_route(route.as_ref()) {
            Ok(svc) => Either::Right(Box::pin(super::oneshot(svc, req))),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

/// Draws a backend in proportion to the weights with `draw` (uniform);
/// none when every weight is 0.
pub fn pick(backends: &[Backend], draw: u64) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut at = draw % total;
    for b in backends {
        let w = u64::from(b.weight);
        if at < w {
            return Some(b);
        }
        at -= w;
    }
    None
}

/// `RequestHeaderModifier`: set replaces, add appends, remove deletes.
/// Names and values were checked when the route was loaded.
pub fn apply(edits: &HeaderEdits, headers: &mut http::HeaderMap) {
    for (name, value) in &edits.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &edits.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    for name in &edits.remove {
        headers.remove(name.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str, weight: u32) -> Backend {
        Backend {
            namespace: "shop".into(),
            name: name.into(),
            port: mesh_policy::BackendPort::Number(80),
            weight,
            permitted: mesh_policy::Permitted::Yes,
        }
    }

    #[test]
    fn weights_split_the_draws() {
        let backends = [b("v1", 90), b("v2", 10), b("off", 0)];
        let mut v2 = 0;
        for draw in 0..1000u64 {
            match pick(&backends, draw).map(|b| b.name.as_str()) {
                Some("v2") => v2 += 1,
                Some("v1") => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(v2, 100);
        assert!(pick(&[b("off", 0)], 3).is_none());
        assert!(pick(&[], 3).is_none());
    }

    #[test]
    fn header_edits() {
        let mut h = http::HeaderMap::new();
        h.insert("x-env", "prod".parse().unwrap());
        h.insert("x-debug", "1".parse().unwrap());
        h.insert("x-tag", "a".parse().unwrap());
        let edits = HeaderEdits {
            set: vec![("x-env".into(), "canary".into())],
            add: vec![("x-tag".into(), "b".into())],
            remove: vec!["x-debug".into()],
        };
        apply(&edits, &mut h);
        assert_eq!(h["x-env"], "canary");
        assert!(!h.contains_key("x-debug"));
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
    }
}
