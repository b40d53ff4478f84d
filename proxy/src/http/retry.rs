//! Retries that cannot become a storm: a route's `retry` says which
//! statuses are retried and how often, and a budget per backend Service caps
//! retries at a share of the requests (plus a small floor per second), as
//! Linkerd's retry budget does. A request body is kept for a retry only up
//! to [`MAX_REPLAY_BYTES`]; larger ones stream once and are not retried.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use mesh_policy::{Backend, Retry};

use super::telemetry::Notes;
use super::timeout::Expires;
use super::{Body, BoxFuture};
use crate::errors::{Error, HttpError, RouteError};

/// Largest request body kept so the request can be sent again.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;
/// Retries may add this share of the requests to a backend...
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// ...plus this many per second, so a quiet service can still retry.
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// The window the budget counts requests and retries over.
const BUDGET_WINDOW_SECS: u64 = 10;
/// Backoff never grows past this, whatever the attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A retry budget for one backend.
pub struct Budget {
    ratio: f64,
    min_per_second: u32,
    epoch: Instant,
    /// Per second of the window: (second, requests, retries).
    slots: Mutex<Slots>,
}

impl Budget {
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio,
            min_per_second,
            epoch: Instant::now(),
            slots: Mutex::new([(u64::MAX, 0, 0); BUDGET_WINDOW_SECS as usize]),
        }
    }

    fn second(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Counts a request (every first try).
    pub fn deposit(&self) {
        let now = self.second();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = current(&mut slots, now);
        slot.1 = slot.1.saturating_add(1);
    }

    /// Takes one retry from the budget, if it has one.
    pub fn withdraw(&self) -> bool {
        let now = self.second();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let (mut requests, mut retries) = (0u64, 0u64);
        for (sec, req, ret) in slots.iter() {
            if *sec != u64::MAX && now.saturating_sub(*sec) < BUDGET_WINDOW_SECS {
                requests += u64::from(*req);
                retries += u64::from(*ret);
            }
        }
        let allowed = self.ratio * requests as f64
            + f64::from(self.min_per_second) * BUDGET_WINDOW_SECS as f64;
        if (retries as f64) >= allowed {
            return false;
        }
        let slot = current(&mut slots, now);
        slot.2 = slot.2.saturating_add(1);
        true
    }
}

type Slots = [(u64, u32, u32); BUDGET_WINDOW_SECS as usize];

/// The slot of second `now`, emptied when it last counted an older second.
fn current(slots: &mut Slots, now: u64) -> &mut (u64, u32, u32) {
    let slot = &mut slots[(now % BUDGET_WINDOW_SECS) as usize];
    if slot.0 != now {
        *slot = (now, 0, 0);
    }
    slot
}

/// Exponential backoff from `base` with full jitter: a random wait in
/// [0, base × 2^attempt], capped.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random() % nanos)
}

/// A cheap per-thread random number (xorshift), for jitter and weights.
pub fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (t ^ (std::process::id() as u64).rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Methods that may be sent twice without a route saying so.
pub fn idempotent(method: &http::Method) -> bool {
    mesh_policy::idempotent(method.as_str())
}

/// The status a retry decision looks at: a gRPC trailers-only response
/// carries its failure in `grpc-status` under HTTP 200, so UNAVAILABLE reads
/// as 503 and DEADLINE_EXCEEDED as 504.
pub fn effective_status<B>(resp: &http::Response<B>) -> u16 {
    let status = resp.status().as_u16();
    if status != 200 {
        return status;
    }
    match resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
    {
        Some("14") => 503,
        Some("4") => 504,
        _ => status,
    }
}

/// A request body ready for (possibly) more than one try.
pub enum Replay {
    /// Small enough to keep: every try gets a copy.
    Kept {
        data: Vec<Bytes>,
        trailers: Option<http::HeaderMap>,
    },
    /// Too large (or failed while read): sent once, never retried.
    Once(Body),
}

impl Replay {
    /// Reads up to [`MAX_REPLAY_BYTES`] of `body`; past that, what was read
    /// goes out first and the rest streams behind it.
    pub async fn prepare(mut body: Body) -> Replay {
        if body.is_end_stream() {
            return Replay::Kept {
                data: vec![],
                trailers: None,
            };
        }
        if body.size_hint().lower() > MAX_REPLAY_BYTES as u64 {
            return Replay::Once(body);
        }
        let mut frames = VecDeque::new();
        let mut size = 0usize;
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        size += d.len();
                    }
                    frames.push_back(frame);
                    if size > MAX_REPLAY_BYTES {
                        return Replay::Once(
                            Prefixed {
                                frames,
                                rest: Some(body),
                            }
                            .boxed(),
                        );
                    }
                }
                Some(Err(e)) => {
                    // The client broke its body: the one try will fail the
                    // same way, and the exchange blames the client.
                    let failed =
                        http_body_util::StreamBody::new(futures_util::stream::iter([Err::<
                            Frame<Bytes>,
                            _,
                        >(
                            e
                        )]));
                    return Replay::Once(
                        Prefixed {
                            frames,
                            rest: Some(failed.boxed()),
                        }
                        .boxed(),
                    );
                }
            }
        }
        let mut data = Vec::new();
        let mut trailers = None;
        for f in frames {
            match f.into_data() {
                Ok(d) => data.push(d),
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        Replay::Kept { data, trailers }
    }

    pub fn replayable(&self) -> bool {
        matches!(self, Replay::Kept { .. })
    }

    /// The body for one try: a copy when kept, else the one stream.
    pub fn take(&mut self) -> Option<Body> {
        match self {
            Replay::Kept { data, trailers } => {
                let mut frames: VecDeque<Frame<Bytes>> =
                    data.iter().cloned().map(Frame::data).collect();
                if let Some(t) = trailers {
                    frames.push_back(Frame::trailers(t.clone()));
                }
                Some(Prefixed { frames, rest: None }.boxed())
            }
            // Spent by the first take: later ones send an empty body,
            // and the caller never retries a body that was not kept.
            Replay::Once(b) => Some(std::mem::replace(b, crate::http::empty())),
        }
    }
}

/// Frames already read, then the rest of the body.
struct Prefixed {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Body>,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        match &self.rest {
            None => SizeHint::with_exact(queued),
            Some(r) => {
                let h = r.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + queued);
                if let Some(u) = h.upper() {
                    out.set_upper(u + queued);
                }
                out
            }
        }
    }
}

/// Retry budgets by backend Service (namespace, name, port), kept across
/// requests and routes. A proxy sends to few routed backends: a list
/// scanned without allocating.
#[derive(Default)]
pub struct Budgets(Mutex<Vec<(Backend, Arc<Budget>)>>);

impl Budgets {
    /// The budget of requests to `backend` (every route to it shares one).
    pub fn of(&self, backend: &Backend) -> Arc<Budget> {
        let mut budgets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let same = |b: &Backend| {
            b.port == backend.port && b.name == backend.name && b.namespace == backend.namespace
        };
        if let Some((_, budget)) = budgets.iter().find(|(b, _)| same(b)) {
            return budget.clone();
        }
        let budget = Arc::new(Budget::new(
            DEFAULT_BUDGET_RATIO,
            DEFAULT_BUDGET_MIN_PER_SECOND,
        ));
        budgets.push((backend.clone(), budget.clone()));
        budget
    }
}

/// The typed target of the retry layer: what a route rule says about
/// retries, and the budget of the backend it sends to.
#[derive(Clone)]
pub struct RetryTarget {
    /// `None`: the request counts towards the budget and is sent once.
    pub policy: Option<Retry>,
    /// The rule's match named the method, so a POST may be retried too.
    pub method_named: bool,
    pub budget: Arc<Budget>,
    /// Where the access log finds how many retries were sent.
    pub notes: Arc<Notes>,
}

/// The endpoint a try went to, so the next try starts elsewhere (a request
/// extension: the retry layer sets it, the balancer reads and fills it).
#[derive(Clone, Default)]
pub struct Tried(Arc<Mutex<Option<SocketAddr>>>);

impl Tried {
    pub fn get(&self) -> Option<SocketAddr> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, endpoint: SocketAddr) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoint);
    }
}

pub struct RetryLayer(Option<RetryTarget>);

impl RetryLayer {
    /// `None`: requests pass through (no route, so no retries).
    pub fn new(target: Option<RetryTarget>) -> Self {
        Self(target)
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retrying<S>;

    fn layer(&self, inner: S) -> Retrying<S> {
        Retrying {
            inner,
            target: self.0.clone(),
        }
    }
}

pub struct Retrying<S> {
    inner: S,
    target: Option<RetryTarget>,
}

impl<S> tower::Service<Request<Body>> for Retrying<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<BoxFuture, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(target) = self.target.clone() else {
            return Either::Right(self.inner.call(req));
        };
        Either::Left(Box::pin(tries(self.inner.clone(), target, req)))
    }
}

/// The tries of one request: the first, then retries while the status is
/// one the rule retries, attempts are left and the budget allows.
async fn tries<S>(inner: S, target: RetryTarget, req: Request<Body>) -> super::Result
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone,
{
    target.budget.deposit();
    let policy = target
        .policy
        .as_ref()
        .filter(|_| idempotent(req.method()) || target.method_named);
    let (parts, body) = req.into_parts();
    let mut replay = match policy {
        Some(_) => Replay::prepare(body).await,
        None => Replay::Once(body),
    };
    let (Some(p), true) = (policy, replay.replayable()) else {
        // Sent once: the request as it came (its deadline already passed on).
        let body = replay.take().unwrap_or_else(super::empty);
        return super::oneshot(inner, Request::from_parts(parts, body)).await;
    };
    let attempts = p.attempts;
    let tried = Tried::default();
    let mut attempt = 0;
    loop {
        let mut req = Request::from_parts(
            copy_parts(&parts),
            replay.take().unwrap_or_else(super::empty),
        );
        req.extensions_mut().insert(tried.clone());
        if attempt > 0 {
            // What is left of the deadline, for a retry.
            super::timeout::pass_on(&mut req);
        }
        let sent = super::oneshot(inner.clone(), req).await;
        let status = match &sent {
            Ok(resp) => effective_status(resp),
            Err(e) => status_of(e),
        };
        if !p.codes.contains(&status) {
            if attempt > 0 {
                metrics::counter!("mesh_retries_total", "result" => "succeeded").increment(1);
            }
            return sent;
        }
        if attempt >= attempts {
            if attempt > 0 {
                metrics::counter!("mesh_retries_total", "result" => "exhausted").increment(1);
            }
            return sent;
        }
        if !target.budget.withdraw() {
            metrics::counter!("mesh_retries_total", "result" => "budget_exhausted").increment(1);
            return sent;
        }
        drop(sent);
        metrics::counter!("mesh_retries_total", "result" => "retried").increment(1);
        tokio::time::sleep(backoff(p.backoff, attempt)).await;
        attempt += 1;
        target.notes.retried(attempt);
    }
}

/// What a failed try counts as for a route's retry codes (and for the
/// balancer's view of the endpoint).
pub fn status_of(e: &Error) -> u16 {
    match e {
        Error::Connect(_) | Error::Http(HttpError::Unavailable(_)) => 503,
        Error::Route(RouteError::NoEndpoints(_)) => 503,
        Error::Http(HttpError::RouteTimeout { .. }) | Error::Http(HttpError::Timeout(_)) => 504,
        Error::Http(HttpError::Upstream(_)) => 502,
        // Refusals (authorization, bad requests) are not retried.
        _ => 0,
    }
}

/// A try's head: the request's, with the deadline it is under.
fn copy_parts(p: &http::request::Parts) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = p.method.clone();
    parts.uri = p.uri.clone();
    parts.version = p.version;
    parts.headers = p.headers.clone();
    if let Some(e) = p.extensions.get::<Expires>() {
        parts.extensions.insert(*e);
    }
    if let Some(proto) = p.extensions.get::<hyper::ext::Protocol>() {
        parts.extensions.insert(proto.clone());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
            .map_err(|e| match e {})
            .boxed()
    }

    #[tokio::test]
    async fn a_small_body_is_kept_for_every_try() {
        let mut r = Replay::prepare(body(&[b"hello ", b"world"])).await;
        assert!(r.replayable());
        for _ in 0..3 {
            let b = r.take().unwrap().collect().await.unwrap().to_bytes();
            assert_eq!(b, "hello world");
        }
    }

    #[tokio::test]
    async fn a_large_body_streams_once_whole() {
        static CHUNK: [u8; 16 * 1024] = [7u8; 16 * 1024];
        let chunks: Vec<&'static [u8]> = (0..6).map(|_| &CHUNK[..]).collect();
        let mut r = Replay::prepare(body(&chunks)).await;
        assert!(!r.replayable());
        let b = r.take().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(b.len(), 6 * 16 * 1024);
    }

    #[test]
    fn the_budget_allows_its_share_and_floor_then_refuses() {
        let b = Budget::new(0.2, 1);
        for _ in 0..100 {
            b.deposit();
        }
        // 20% of 100 requests plus 1 per second over the 10 s window.
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 30);
    }

    #[test]
    fn a_quiet_backend_still_gets_the_floor() {
        let b = Budget::new(0.2, 10);
        let granted = (0..500).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 100);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 0..20 {
            let d = backoff(Duration::from_millis(25), attempt);
            assert!(d <= MAX_BACKOFF, "{d:?}");
            assert!(d <= Duration::from_millis(25) * (1 << attempt.min(10)));
        }
        let distinct: std::collections::HashSet<_> = (0..20)
            .map(|_| backoff(Duration::from_millis(100), 3))
            .collect();
        assert!(distinct.len() > 10, "not jittered: {distinct:?}");
    }

    #[test]
    fn grpc_unavailable_reads_as_503() {
        let mut r = http::Response::new(());
        r.headers_mut().insert("grpc-status", "14".parse().unwrap());
        assert_eq!(effective_status(&r), 503);
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        assert_eq!(effective_status(&r), 502);
        assert!(idempotent(&http::Method::GET));
        assert!(!idempotent(&http::Method::POST));
    }
}
