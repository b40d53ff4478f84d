//! Load balancing across a Service's endpoints at the client's proxy:
//! power of two choices over peak-EWMA latency, and outlier ejection.
//!
//! Each request draws two endpoints at random and takes the one with the
//! lower load: its latency estimate times its requests in flight plus one.
//! The estimate (peak EWMA) starts at [`DEFAULT_RTT`], takes the first
//! answer's latency, jumps to a slower response at once and decays
//! towards faster ones with a time constant of [`DECAY`], and towards zero
//! while the endpoint gets no traffic, so a slow endpoint is avoided until
//! it has had time to recover and is then tried again.
//!
//! An endpoint whose responses fail [`EJECT_AFTER`] times in a row (5xx,
//! gRPC UNAVAILABLE, connection errors) is ejected for [`BASE_EJECTION`],
//! doubled at each ejection that follows its re-admission without a long
//! healthy spell, up to [`MAX_EJECTION`]. When the time is up one request
//! probes it: success re-admits it, a failure ejects it again. When every
//! endpoint is ejected they all take traffic again (the panic threshold):
//! a Service never gets none because of its own errors.
//!
//! Endpoints have no weights of their own (traffic between Services is
//! split by route `backendRefs` weights before balancing).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};

use super::retry::{Tried, effective_status, random, status_of};
use super::{Body, BoxFuture};
use crate::errors::{Error, RouteError};

/// The latency estimate's time constant.
pub const DECAY: Duration = Duration::from_secs(10);
/// An endpoint's estimate before its first response.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Consecutive failures that eject an endpoint.
pub const EJECT_AFTER: u32 = 5;
pub const BASE_EJECTION: Duration = Duration::from_secs(1);
pub const MAX_EJECTION: Duration = Duration::from_secs(10);
/// Healthy this long after re-admission, an endpoint's next ejection is
/// short again.
const HEALTHY_RESET: Duration = Duration::from_secs(60);
/// Endpoint stats kept before unused ones are swept.
const SWEEP_ENDPOINTS: usize = 1024;
/// Stats unused this long are dropped at a sweep.
const IDLE: Duration = Duration::from_secs(600);

/// What a balanced endpoint is known by: its workload address (endpoint
/// and port).
pub trait Endpoint {
    fn address(&self) -> SocketAddr;
}

impl Endpoint for SocketAddr {
    fn address(&self) -> SocketAddr {
        *self
    }
}

/// Endpoint state of one proxy, by workload address (endpoint and port).
pub struct Balancer {
    epoch: Instant,
    endpoints: RwLock<HashMap<SocketAddr, Arc<Stats>>>,
    /// Endpoints ejected (or due a probe): when none, a pick reads only
    /// the two it draws.
    ejected: Arc<AtomicUsize>,
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer {
            epoch: Instant::now(),
            endpoints: RwLock::default(),
            ejected: Arc::default(),
        }
    }
}

/// One endpoint's load and health.
pub struct Stats {
    dst: SocketAddr,
    pending: AtomicU32,
    /// Seconds since the balancer's epoch at the last pick.
    used: AtomicU64,
    state: Mutex<State>,
}

struct State {
    /// Peak-EWMA latency estimate, in nanoseconds, as of `stamp`.
    rtt_ns: f64,
    /// Whether `rtt_ns` comes from an answer (else it is [`DEFAULT_RTT`]).
    measured: bool,
    stamp: Instant,
    failures: u32,
    health: Health,
    /// Ejections since the last long healthy spell.
    level: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Health {
    Healthy {
        since: Instant,
    },
    Ejected {
        until: Instant,
    },
    /// The ejection is over and one request is probing.
    Probing,
}

/// How a request to an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// A response's outcome: 5xx (gRPC UNAVAILABLE counts as 503) fails.
    pub fn of_status(status: u16) -> Self {
        if (500..600).contains(&status) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

impl Stats {
    fn new(dst: SocketAddr, now: Instant) -> Self {
        Stats {
            dst,
            pending: AtomicU32::new(0),
            used: AtomicU64::new(0),
            state: Mutex::new(State {
                rtt_ns: DEFAULT_RTT.as_nanos() as f64,
                measured: false,
                stamp: now,
                failures: 0,
                health: Health::Healthy { since: now },
                level: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Estimate × (in flight + 1). An endpoint that never answered and has
    /// nothing in flight costs nothing: it takes the next request, so its
    /// latency is learnt rather than guessed for the next ten seconds.
    fn load(&self, now: Instant) -> f64 {
        let st = self.lock();
        let pending = self.pending.load(Ordering::Relaxed);
        if !st.measured && pending == 0 {
            return 0.0;
        }
        st.decayed(now) * f64::from(pending + 1)
    }
}

impl State {
    fn decayed(&self, now: Instant) -> f64 {
        self.rtt_ns * decay(now.saturating_duration_since(self.stamp))
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        // The first answer replaces the default guess: real latency is known.
        if !self.measured || rtt > self.rtt_ns {
            self.measured = true;
            self.rtt_ns = rtt;
        } else {
            let w = decay(now.saturating_duration_since(self.stamp));
            self.rtt_ns = self.rtt_ns * w + rtt * (1.0 - w);
        }
        self.stamp = now;
    }
}

fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

/// Whether an endpoint may take a request now: `Some(true)` when it is due
/// a probe, `Some(false)` when healthy, `None` while ejected or probing.
fn available(state: &State, now: Instant) -> Option<bool> {
    match state.health {
        Health::Healthy { .. } => Some(false),
        Health::Ejected { until } if now >= until => Some(true),
        Health::Ejected { .. } | Health::Probing => None,
    }
}

impl Balancer {
    fn stats(&self, dst: SocketAddr) -> Arc<Stats> {
        let now_secs = self.epoch.elapsed().as_secs();
        if let Some(s) = self
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&dst)
        {
            s.used.store(now_secs, Ordering::Relaxed);
            return s.clone();
        }
        let mut map = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_ENDPOINTS {
            map.retain(|_, s| {
                now_secs.saturating_sub(s.used.load(Ordering::Relaxed)) < IDLE.as_secs()
                    || s.pending.load(Ordering::Relaxed) > 0
            });
            self.ejected.store(
                map.values()
                    .filter(|s| !matches!(s.lock().health, Health::Healthy { .. }))
                    .count(),
                Ordering::Relaxed,
            );
        }
        let s = map
            .entry(dst)
            .or_insert_with(|| Arc::new(Stats::new(dst, Instant::now())));
        s.used.store(now_secs, Ordering::Relaxed);
        s.clone()
    }

    /// Picks one of `endpoints` (by workload address) that `excluded` does
    /// not rule out, and starts a call to it; `None` when every one is
    /// excluded. A single candidate is taken as it is.
    pub fn pick<E: Endpoint>(
        &self,
        endpoints: &[E],
        excluded: impl Fn(usize) -> bool,
    ) -> Option<(usize, Call)> {
        let now = Instant::now();
        let n = endpoints.len();
        // The common case, nothing ejected and nothing excluded: two draws,
        // no list of candidates built.
        if n >= 2 && self.ejected.load(Ordering::Relaxed) == 0 {
            let a = (random() % n as u64) as usize;
            let b = (a + 1 + (random() % (n as u64 - 1)) as usize) % n;
            if !excluded(a) && !excluded(b) {
                return Some(self.lower_of(endpoints, a, b, now));
            }
        }
        let candidates: Vec<usize> = (0..n).filter(|i| !excluded(*i)).collect();
        match candidates.len() {
            0 => return None,
            1 => {
                let i = candidates[0];
                return Some((i, self.call(endpoints[i].address())));
            }
            _ => {}
        }
        let mut eligible = candidates;
        if self.ejected.load(Ordering::Relaxed) > 0 {
            let stats: Vec<Arc<Stats>> = eligible
                .iter()
                .map(|i| self.stats(endpoints[*i].address()))
                .collect();
            let states: Vec<Option<bool>> =
                stats.iter().map(|s| available(&s.lock(), now)).collect();
            // An endpoint whose ejection is over takes the next request,
            // its probe, if no other request took it first.
            for (k, a) in states.iter().enumerate() {
                if *a == Some(true) {
                    let mut st = stats[k].lock();
                    if available(&st, now) == Some(true) {
                        st.health = Health::Probing;
                        drop(st);
                        return Some((eligible[k], self.call_with(stats[k].clone())));
                    }
                }
            }
            let healthy: Vec<usize> = eligible
                .iter()
                .zip(&states)
                .filter(|(_, a)| a.is_some())
                .map(|(i, _)| *i)
                .collect();
            if healthy.is_empty() {
                // Every endpoint is out: all of them take traffic again.
                metrics::counter!("mesh_balancer_panics_total").increment(1);
            } else {
                eligible = healthy;
            }
            if eligible.len() == 1 {
                let i = eligible[0];
                return Some((i, self.call(endpoints[i].address())));
            }
        }
        let n = eligible.len() as u64;
        let a = (random() % n) as usize;
        let b = (a + 1 + (random() % (n - 1)) as usize) % eligible.len();
        Some(self.lower_of(endpoints, eligible[a], eligible[b], now))
    }

    /// Power of two choices: of endpoints `a` and `b`, the lower load.
    fn lower_of<E: Endpoint>(
        &self,
        endpoints: &[E],
        a: usize,
        b: usize,
        now: Instant,
    ) -> (usize, Call) {
        let (sa, sb) = (
            self.stats(endpoints[a].address()),
            self.stats(endpoints[b].address()),
        );
        let (i, s) = if sb.load(now) < sa.load(now) {
            (b, sb)
        } else {
            (a, sa)
        };
        (i, self.call_with(s))
    }

    fn call(&self, dst: SocketAddr) -> Call {
        self.call_with(self.stats(dst))
    }

    fn call_with(&self, stats: Arc<Stats>) -> Call {
        stats.pending.fetch_add(1, Ordering::Relaxed);
        Call {
            stats,
            ejected: self.ejected.clone(),
            started: Instant::now(),
            done: false,
            sampled: true,
        }
    }

    /// Forgets the endpoints `keep` does not name (they left discovery): one
    /// that comes back is new, measured afresh and not still ejected.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut map = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|a, s| keep(a) || s.pending.load(Ordering::Relaxed) > 0);
        self.ejected.store(
            map.values()
                .filter(|s| !matches!(s.lock().health, Health::Healthy { .. }))
                .count(),
            Ordering::Relaxed,
        );
    }

    /// Every endpoint requests went to, by address (admin `/routes`).
    pub fn endpoints(&self) -> Vec<EndpointState> {
        let now = Instant::now();
        let map = self.endpoints.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<EndpointState> = map
            .values()
            .map(|s| {
                let st = s.lock();
                let (state, ejected_for) = match st.health {
                    Health::Healthy { .. } => ("healthy", None),
                    Health::Ejected { until } if until > now => {
                        ("ejected", Some(until.saturating_duration_since(now)))
                    }
                    Health::Ejected { .. } => ("due a probe", None),
                    Health::Probing => ("probing", None),
                };
                EndpointState {
                    address: s.dst,
                    rtt: Duration::from_nanos(st.decayed(now) as u64),
                    in_flight: s.pending.load(Ordering::Relaxed),
                    state,
                    ejected_for,
                }
            })
            .collect();
        out.sort_by_key(|e| e.address);
        out
    }

    /// The endpoints ejected or waiting for their probe (admin, tests).
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }
}

/// What the admin shows of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointState {
    pub address: SocketAddr,
    /// The latency estimate now.
    pub rtt: Duration,
    pub in_flight: u32,
    /// `healthy`, `ejected`, `due a probe` or `probing`.
    pub state: &'static str,
    pub ejected_for: Option<Duration>,
}

/// A request on its way to an endpoint: its latency and outcome are
/// recorded when it ends, or (dropped unfinished) its latency only.
pub struct Call {
    stats: Arc<Stats>,
    ejected: Arc<AtomicUsize>,
    started: Instant,
    done: bool,
    /// Whether the request's latency counts (not for an unreachable endpoint).
    sampled: bool,
}

impl Call {
    /// The request is on its way: its latency counts from now, so making a
    /// connection to the endpoint is not mistaken for the endpoint's slowness.
    pub fn sent(&mut self) {
        self.started = Instant::now();
    }

    /// Records how the request ended (at its response headers).
    pub fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.record(Some(outcome), Instant::now());
    }

    /// The endpoint could not be reached: a failure, but no latency sample
    /// (a connect that timed out says nothing of how fast it serves once
    /// it is back).
    pub fn unreachable(mut self) {
        self.done = true;
        self.sampled = false;
        self.record(Some(Outcome::Failure), Instant::now());
    }

    fn record(&self, outcome: Option<Outcome>, now: Instant) {
        let stats = &self.stats;
        stats.pending.fetch_sub(1, Ordering::Relaxed);
        let mut st = stats.lock();
        if self.sampled {
            st.observe(now.saturating_duration_since(self.started), now);
        }
        let Some(outcome) = outcome else {
            // Cancelled (a timeout, or the client left): the latency counts,
            // the outcome is unknown; a probe is released for another request.
            if st.health == Health::Probing {
                st.health = Health::Ejected { until: now };
            }
            return;
        };
        match (outcome, st.health) {
            (Outcome::Success, Health::Probing) => {
                st.failures = 0;
                st.health = Health::Healthy { since: now };
                self.ejected.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(endpoint = %stats.dst, "endpoint re-admitted: its probe succeeded");
            }
            (Outcome::Success, _) => st.failures = 0,
            (Outcome::Failure, Health::Probing) => eject(&mut st, stats.dst, now),
            (Outcome::Failure, Health::Healthy { since }) => {
                st.failures += 1;
                if st.failures >= EJECT_AFTER {
                    if now.saturating_duration_since(since) > HEALTHY_RESET {
                        st.level = 0;
                    }
                    self.ejected.fetch_add(1, Ordering::Relaxed);
                    eject(&mut st, stats.dst, now);
                }
            }
            // Requests that were in flight when it was ejected.
            (Outcome::Failure, Health::Ejected { .. }) => {}
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            self.record(None, Instant::now());
        }
    }
}

fn eject(st: &mut State, dst: SocketAddr, now: Instant) {
    let time = BASE_EJECTION
        .saturating_mul(1 << st.level.min(16))
        .min(MAX_EJECTION);
    st.level += 1;
    st.failures = 0;
    st.health = Health::Ejected { until: now + time };
    metrics::counter!("mesh_endpoint_ejections_total").increment(1);
    tracing::info!(endpoint = %dst, ejected_for = ?time, "endpoint ejected after consecutive failures");
}

/// The endpoints of one destination as the balancer reaches them: the
/// typed target of [`Balance`]. Connecting is apart from sending, so an
/// endpoint that cannot be reached costs a connect and the request goes to
/// another.
pub trait Endpoints: Clone + Send + Sync + 'static {
    type Endpoint: Endpoint + Sync;
    type Conn: Send;

    fn endpoints(&self) -> &[Self::Endpoint];

    /// A connection to endpoint `i`, once it may be used.
    fn connect(&self, i: usize) -> impl Future<Output = Result<Self::Conn, Error>> + Send;

    fn send(
        &self,
        i: usize,
        conn: Self::Conn,
        req: Request<Body>,
    ) -> impl Future<Output = super::Result> + Send;
}

/// The balancing layer's service: each request goes to the endpoint the
/// balancer picks (a single endpoint is not balanced); a retry's try
/// ([`Tried`]) starts at another endpoint than the try before it.
#[derive(Clone)]
pub struct Balance<E> {
    balancer: Arc<Balancer>,
    endpoints: E,
}

impl<E: Endpoints> Balance<E> {
    pub fn new(balancer: Arc<Balancer>, endpoints: E) -> Self {
        Self {
            balancer,
            endpoints,
        }
    }

    async fn send(self, req: Request<Body>) -> super::Result {
        let tried = req.extensions().get::<Tried>().cloned();
        let endpoints = self.endpoints.endpoints();
        if let [ep] = endpoints {
            if let Some(t) = &tried {
                t.set(ep.address());
            }
            let conn = self.endpoints.connect(0).await?;
            return self.endpoints.send(0, conn, req).await;
        }
        let mut req = Some(req);
        let mut last = None;
        let mut unreachable: Vec<usize> = Vec::new();
        let avoid = tried
            .as_ref()
            .and_then(Tried::get)
            .and_then(|a| endpoints.iter().position(|e| e.address() == a));
        while let Some((i, mut call)) = self.balancer.pick(endpoints, |i| {
            unreachable.contains(&i)
                || (Some(i) == avoid && unreachable.len() + 2 <= endpoints.len())
        }) {
            let ep = &endpoints[i];
            if let Some(t) = &tried {
                t.set(ep.address());
            }
            match self.endpoints.connect(i).await {
                Ok(conn) => {
                    let Some(r) = req.take() else { break };
                    call.sent();
                    let sent = self.endpoints.send(i, conn, r).await;
                    call.finish(match &sent {
                        Ok(resp) => Outcome::of_status(effective_status(resp)),
                        Err(e) => Outcome::of_status(status_of(e)),
                    });
                    return sent;
                }
                Err(Error::Connect(e)) if e.is_unreachable() => {
                    // A dead endpoint: counted, and another is picked.
                    call.unreachable();
                    metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => "endpoint_failover").increment(1);
                    tracing::info!(endpoint = %ep.address(), error = %e, "endpoint unreachable; trying another");
                    last = Some(Error::Connect(e));
                    unreachable.push(i);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RouteError::NoEndpoints("-".into()).into()))
    }
}

impl<E: Endpoints> tower::Service<Request<Body>> for Balance<E> {
    type Response = Response<Body>;
    type Error = Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Readiness is per endpoint, decided when one is picked.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> BoxFuture {
        Box::pin(self.clone().send(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    /// A request to the endpoint `pick` chose that took `rtt`.
    fn respond(
        b: &Balancer,
        e: &[SocketAddr],
        rtt: impl Fn(usize) -> Duration,
        ok: impl Fn(usize) -> bool,
    ) -> usize {
        let (i, mut call) = b.pick(e, |_| false).expect("a pick");
        call.started = Instant::now() - rtt(i);
        call.finish(if ok(i) {
            Outcome::Success
        } else {
            Outcome::Failure
        });
        i
    }

    fn fast_first(i: usize) -> Duration {
        Duration::from_micros(if i == 0 { 100 } else { 5000 })
    }

    fn expire_ejection(b: &Balancer, dst: SocketAddr) {
        let s = b.stats(dst);
        let mut st = s.lock();
        if let Health::Ejected { until } = &mut st.health {
            *until = Instant::now() - Duration::from_millis(1);
        }
    }

    // One of three endpoints 10x slower gets few requests: its estimate
    // jumps to its first slow answer.
    #[test]
    fn a_slow_endpoint_gets_few_requests() {
        let b = Balancer::default();
        let e = eps(3);
        let mut to_slow = 0;
        for _ in 0..1000 {
            let i = respond(
                &b,
                &e,
                |i| Duration::from_millis(if i == 2 { 100 } else { 10 }),
                |_| true,
            );
            to_slow += usize::from(i == 2);
        }
        assert!(to_slow < 100, "{to_slow} of 1000 to the slow endpoint");
    }

    // Requests in flight count: an endpoint holding many gets the next
    // ones only when the other holds more.
    #[test]
    fn requests_in_flight_weigh_in() {
        let b = Balancer::default();
        let e = eps(2);
        let held: Vec<Call> = (0..10)
            .filter_map(|_| {
                let (i, c) = b.pick(&e, |_| false)?;
                Some((i, c))
            })
            .map(|(_, c)| c)
            .collect();
        let per = |i: usize| held.iter().filter(|c| c.stats.dst == e[i]).count();
        assert_eq!(
            (per(0), per(1)),
            (5, 5),
            "equal estimates: in-flight decides"
        );
    }

    // An endpoint that always fails is out after 5 failures in a row, takes
    // nothing while ejected, is probed when the time is up, and a probe
    // that succeeds re-admits it.
    #[test]
    fn a_failing_endpoint_is_ejected_probed_and_readmitted() {
        let b = Balancer::default();
        let e = eps(3);
        let mut failed = 0;
        for _ in 0..10_000 {
            failed += usize::from(respond(&b, &e, fast_first, |i| i != 0) == 0);
            if b.ejected() > 0 {
                break;
            }
        }
        for _ in 0..100 {
            assert_ne!(respond(&b, &e, fast_first, |_| true), 0, "ejected");
        }
        assert_eq!(
            failed, EJECT_AFTER as usize,
            "ejected after exactly {EJECT_AFTER} failures"
        );
        assert_eq!(b.ejected(), 1);
        expire_ejection(&b, e[0]);
        let (i, probe) = b.pick(&e, |_| false).expect("a pick");
        assert_eq!(i, 0, "the next request is the probe");
        // While the probe is out, nothing else goes there.
        for _ in 0..50 {
            assert_ne!(respond(&b, &e, fast_first, |_| true), 0);
        }
        probe.finish(Outcome::Success);
        assert_eq!(b.ejected(), 0);
        let back = (0..300)
            .filter(|_| respond(&b, &e, fast_first, |_| true) == 0)
            .count();
        assert!(back > 0, "re-admitted: {back} of 300");
    }

    // The admin's view: each endpoint's state, estimate and time left.
    #[test]
    fn endpoints_are_listed_with_their_state() {
        let b = Balancer::default();
        let e = eps(2);
        // The failing endpoint answers fastest: it is picked until ejected.
        while b.ejected() == 0 {
            respond(&b, &e, fast_first, |i| i != 0);
        }
        let listed = b.endpoints();
        assert_eq!(listed.len(), 2);
        assert_eq!((listed[0].address, listed[0].state), (e[0], "ejected"));
        assert!(listed[0].ejected_for.is_some_and(|d| d <= BASE_EJECTION));
        assert_eq!((listed[1].address, listed[1].state), (e[1], "healthy"));
        assert!(listed[1].rtt > Duration::ZERO && listed[1].rtt <= DEFAULT_RTT);
    }

    // A probe that fails ejects again at once, for twice as long.
    #[test]
    fn a_failed_probe_ejects_for_longer() {
        let b = Balancer::default();
        let e = eps(2);
        // The failing endpoint answers fastest: it is picked until ejected.
        while b.ejected() == 0 {
            respond(&b, &e, fast_first, |i| i != 0);
        }
        let until = |b: &Balancer| match b.stats(e[0]).lock().health {
            Health::Ejected { until } => until.saturating_duration_since(Instant::now()),
            _ => Duration::ZERO,
        };
        assert!(until(&b) <= BASE_EJECTION && until(&b) > BASE_EJECTION / 2);
        expire_ejection(&b, e[0]);
        let (i, probe) = b.pick(&e, |_| false).expect("a pick");
        assert_eq!(i, 0);
        probe.finish(Outcome::Failure);
        assert!(
            until(&b) > BASE_EJECTION && until(&b) <= 2 * BASE_EJECTION,
            "{:?}",
            until(&b)
        );
        assert_eq!(b.ejected(), 1);
    }

    // A probe cancelled (timed out, client gone) lets the next request probe.
    #[test]
    fn a_cancelled_probe_is_released() {
        let b = Balancer::default();
        let e = eps(2);
        // The failing endpoint answers fastest: it is picked until ejected.
        while b.ejected() == 0 {
            respond(&b, &e, fast_first, |i| i != 0);
        }
        expire_ejection(&b, e[0]);
        let (i, probe) = b.pick(&e, |_| false).expect("a pick");
        assert_eq!(i, 0);
        drop(probe);
        assert_eq!(b.pick(&e, |_| false).map(|(i, _)| i), Some(0));
    }

    // Every endpoint ejected: they all take traffic again (requests held
    // open spread by in-flight count, as among healthy endpoints).
    #[test]
    fn every_endpoint_ejected_still_gets_traffic() {
        let b = Balancer::default();
        let e = eps(2);
        while b.ejected() < 2 {
            respond(&b, &e, |_| Duration::from_millis(1), |_| false);
        }
        let held: Vec<(usize, Call)> = (0..10).filter_map(|_| b.pick(&e, |_| false)).collect();
        assert_eq!(held.len(), 10, "a request per pick");
        let to_first = held.iter().filter(|(i, _)| *i == 0).count();
        assert!((4..=6).contains(&to_first), "{to_first} of 10 to the first");
    }

    // Exclusions (the endpoint a retry left, one that did not connect) are
    // honoured; nothing left is None.
    #[test]
    fn excluded_endpoints_are_not_picked() {
        let b = Balancer::default();
        let e = eps(3);
        for _ in 0..50 {
            let (i, _) = b.pick(&e, |i| i == 1).expect("a pick");
            assert_ne!(i, 1);
        }
        assert!(b.pick(&e, |_| true).is_none());
    }

    #[test]
    fn outcomes_by_status() {
        assert_eq!(Outcome::of_status(200), Outcome::Success);
        assert_eq!(Outcome::of_status(404), Outcome::Success);
        assert_eq!(Outcome::of_status(429), Outcome::Success);
        assert_eq!(Outcome::of_status(503), Outcome::Failure);
        assert_eq!(Outcome::of_status(500), Outcome::Failure);
    }
}
