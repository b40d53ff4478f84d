//! Local rate limits (RateLimitPolicy) at the inbound: every request a
//! policy takes counts against the policy's total limit and against the
//! calling client's own limit (`perClient`, or the override naming it),
//! with GCRA (the `governor` crate). A refused request gets 429 with
//! `Retry-After` (gRPC RESOURCE_EXHAUSTED) naming the policy; a dry-run
//! policy counts and reports but never refuses.
//!
//! Counters outlive policy updates: a limiter is keyed by its policy, its
//! slot (total, per client, override n) and its quota, so a push that
//! leaves a limit unchanged keeps its state and a changed limit starts
//! afresh. Limiters unused for [`IDLE`] are dropped when another is made.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, RateLimiter};
use mesh_policy::{ObjectRef, Quota, RateLimitMatch, RateLimitRequest};

use super::Body;
use crate::errors::{AuthzError, Error};
use crate::policy::PolicyView;

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type Keyed = RateLimiter<Arc<str>, HashMapStateStore<Arc<str>>, DefaultClock>;

/// A limiter not used for this long is forgotten.
const IDLE: Duration = Duration::from_secs(300);
/// Clients a keyed limiter tracks before idle ones are swept.
const SWEEP_CLIENTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Total,
    Client(Option<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    policy: Arc<ObjectRef>,
    slot: Slot,
    quota: Quota,
}

struct Entry<L> {
    limiter: Arc<L>,
    /// Seconds since `Limiters::epoch` at the last use.
    used: AtomicU64,
}

/// A request refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `RateLimitPolicy <namespace>/<name>`.
    pub policy: String,
    pub retry_after: Duration,
}

/// Every limiter of one proxy.
pub struct Limiters {
    clock: DefaultClock,
    epoch: Instant,
    total: Mutex<HashMap<Key, Entry<Direct>>>,
    clients: Mutex<HashMap<Key, Entry<Keyed>>>,
}

impl Default for Limiters {
    fn default() -> Self {
        Limiters {
            clock: DefaultClock::default(),
            epoch: Instant::now(),
            total: Mutex::default(),
            clients: Mutex::default(),
        }
    }
}

fn gcra(q: Quota) -> governor::Quota {
    // Policies hold rates and bursts of at least 1 (checked at compile).
    let rate = NonZeroU32::new(q.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    governor::Quota::per_second(rate).allow_burst(burst)
}

impl Limiters {
    /// Counts a request from `client` (its SPIFFE ID, or its address for a
    /// plaintext caller) against every limit in `matches`. Refused: the
    /// first enforced policy whose limit is spent. Every limited request,
    /// enforced or dry-run, is counted in `mesh_ratelimited_total{policy}`.
    pub fn check<'e>(
        &self,
        matches: impl Iterator<Item = RateLimitMatch<'e>>,
        client: &Arc<str>,
    ) -> Result<(), Limited> {
        let mut refused = None;
        for m in matches {
            let mut wait = None;
            if let Some(q) = m.per_client {
                let slot = Slot::Client(m.by_override);
                let limiter = self.keyed(m.policy, slot, q);
                if let Err(n) = limiter.check_key(client) {
                    wait = Some(self.wait(&n));
                }
                if limiter.len() > SWEEP_CLIENTS {
                    limiter.retain_recent();
                }
            }
            // A request the client's own limit refused does not spend the
            // total: one noisy client cannot use up everyone's share.
            if wait.is_none()
                && let Some(q) = m.total
                && let Err(n) = self.direct(m.policy, q).check()
            {
                wait = Some(self.wait(&n));
            }
            let Some(wait) = wait else { continue };
            let policy = m.policy.to_string();
            metrics::counter!(
                "mesh_ratelimited_total",
                "policy" => policy.clone(),
                "mode" => if m.dry_run { "dry_run" } else { "enforced" },
            )
            .increment(1);
            if m.dry_run {
                tracing::debug!(%policy, client = &**client, "would be rate limited (dry run)");
            } else if refused.is_none() {
                refused = Some(Limited {
                    policy,
                    retry_after: wait,
                });
            }
        }
        refused.map_or(Ok(()), Err)
    }

    fn wait(&self, n: &NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
        n.wait_time_from(self.clock.now())
    }

    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn direct(&self, policy: &Arc<ObjectRef>, quota: Quota) -> Arc<Direct> {
        let key = Key {
            policy: policy.clone(),
            slot: Slot::Total,
            quota,
        };
        let mut map = self.total.lock().unwrap_or_else(|p| p.into_inner());
        self.entry(&mut map, key, || {
            RateLimiter::direct_with_clock(gcra(quota), self.clock.clone())
        })
    }

    fn keyed(&self, policy: &Arc<ObjectRef>, slot: Slot, quota: Quota) -> Arc<Keyed> {
        let key = Key {
            policy: policy.clone(),
            slot,
            quota,
        };
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        self.entry(&mut map, key, || {
            RateLimiter::hashmap_with_clock(gcra(quota), self.clock.clone())
        })
    }

    fn entry<L>(
        &self,
        map: &mut HashMap<Key, Entry<L>>,
        key: Key,
        make: impl FnOnce() -> L,
    ) -> Arc<L> {
        let now = self.now_secs();
        if let Some(e) = map.get(&key) {
            e.used.store(now, Ordering::Relaxed);
            return e.limiter.clone();
        }
        // A new limit (a new policy, or a changed quota): the ones no
        // request used for a while belong to policies that are gone.
        map.retain(|_, e| now.saturating_sub(e.used.load(Ordering::Relaxed)) < IDLE.as_secs());
        let limiter = Arc::new(make());
        map.insert(
            key,
            Entry {
                limiter: limiter.clone(),
                used: AtomicU64::new(now),
            },
        );
        limiter
    }

    /// How many limiters are held (tests, admin).
    pub fn held(&self) -> usize {
        self.total.lock().map_or(0, |m| m.len()) + self.clients.lock().map_or(0, |m| m.len())
    }
}

/// The typed target of the rate-limit layer: the request's facts as
/// RateLimitPolicies match them, the policy in force, and the client the
/// per-client limits count it for.
pub struct RateLimitTarget<'a> {
    pub limiters: &'a Limiters,
    pub policy: Arc<PolicyView>,
    pub request: RateLimitRequest<'a>,
    /// The client's SPIFFE ID, or its address for a plaintext caller.
    pub client: Arc<str>,
}

pub struct RateLimitLayer<'a>(Option<RateLimitTarget<'a>>);

impl<'a> RateLimitLayer<'a> {
    /// `None`: no RateLimitPolicy could take the request.
    pub fn new(target: Option<RateLimitTarget<'a>>) -> Self {
        Self(target)
    }
}

impl<'a, S> tower::Layer<S> for RateLimitLayer<'a> {
    type Service = RateLimit<'a, S>;

    fn layer(&self, inner: S) -> RateLimit<'a, S> {
        RateLimit {
            inner,
            target: self.0.as_ref().map(|t| RateLimitTarget {
                limiters: t.limiters,
                policy: t.policy.clone(),
                request: t.request,
                client: t.client.clone(),
            }),
        }
    }
}

/// Counts each request against the limits that take it; a spent enforced
/// limit answers 429 (gRPC RESOURCE_EXHAUSTED) before the app sees it.
pub struct RateLimit<'a, S> {
    inner: S,
    target: Option<RateLimitTarget<'a>>,
}

impl<S> tower::Service<Request<Body>> for RateLimit<'_, S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<Ready<super::Result>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(t) = &self.target {
            let matches = t.policy.evaluator.rate_limits(&t.request);
            if let Err(l) = t.limiters.check(matches, &t.client) {
                return Either::Left(ready(Err(AuthzError::RateLimited {
                    policy: l.policy,
                    retry_after: l.retry_after,
                }
                .into())));
            }
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_policy::resource::Kind;

    fn policy(name: &str) -> Arc<ObjectRef> {
        Arc::new(ObjectRef {
            kind: Kind::RateLimitPolicy,
            namespace: "shop".into(),
            name: name.into(),
        })
    }

    fn q(rps: u32, burst: u32) -> Quota {
        Quota {
            requests_per_second: rps,
            burst,
        }
    }

    fn m(
        p: &Arc<ObjectRef>,
        total: Option<Quota>,
        per_client: Option<Quota>,
    ) -> RateLimitMatch<'_> {
        RateLimitMatch {
            policy: p,
            dry_run: false,
            total,
            per_client,
            by_override: None,
        }
    }

    // The burst passes back to back, the next is refused with the wait
    // until the next slot (1/rate), naming the policy.
    #[test]
    fn a_total_limit_passes_its_burst_then_refuses() {
        let l = Limiters::default();
        let p = policy("api");
        for i in 0..3 {
            assert!(
                l.check([m(&p, Some(q(2, 3)), None)].into_iter(), &Arc::from("a"))
                    .is_ok(),
                "{i}"
            );
        }
        let e = l
            .check([m(&p, Some(q(2, 3)), None)].into_iter(), &Arc::from("b"))
            .unwrap_err();
        assert_eq!(e.policy, "RateLimitPolicy shop/api");
        assert!(
            e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_millis(500),
            "{e:?}"
        );
    }

    // One client spending its limit leaves another's untouched, and does
    // not spend the total either.
    #[test]
    fn per_client_limits_are_independent() {
        let l = Limiters::default();
        let p = policy("api");
        let both = || [m(&p, Some(q(1, 3)), Some(q(1, 1)))].into_iter();
        assert!(l.check(both(), &Arc::from("a")).is_ok());
        assert!(l.check(both(), &Arc::from("a")).is_err());
        assert!(l.check(both(), &Arc::from("a")).is_err());
        assert!(l.check(both(), &Arc::from("b")).is_ok());
        assert!(
            l.check(both(), &Arc::from("c")).is_ok(),
            "a's refusals did not spend the total"
        );
        assert!(
            l.check(both(), &Arc::from("d")).is_err(),
            "the total (burst 3) is spent"
        );
    }

    // A dry-run policy never refuses.
    #[test]
    fn dry_run_never_refuses() {
        let l = Limiters::default();
        let p = policy("trial");
        let dry = || {
            let mut x = m(&p, Some(q(1, 1)), None);
            x.dry_run = true;
            [x].into_iter()
        };
        for _ in 0..5 {
            assert!(l.check(dry(), &Arc::from("a")).is_ok());
        }
    }

    // An unchanged limit keeps its state across a policy push; a changed
    // one starts afresh.
    #[test]
    fn state_survives_an_unchanged_push() {
        let l = Limiters::default();
        let p = policy("api");
        assert!(
            l.check([m(&p, Some(q(1, 1)), None)].into_iter(), &Arc::from("a"))
                .is_ok()
        );
        let pushed = policy("api");
        assert!(
            l.check(
                [m(&pushed, Some(q(1, 1)), None)].into_iter(),
                &Arc::from("a")
            )
            .is_err()
        );
        assert!(
            l.check(
                [m(&pushed, Some(q(1, 2)), None)].into_iter(),
                &Arc::from("a")
            )
            .is_ok()
        );
        assert_eq!(l.held(), 2);
    }
}
