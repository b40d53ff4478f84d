//! When each request of an open-loop run is meant to be sent.
//!
//! An open-loop generator sends on a timetable that does not depend on how
//! fast the system answers. Request `i` is due at `start + i / rate`; latency
//! is measured from that due time, so a stall shows up as the full wait of
//! every request queued behind it (no coordinated omission).

use std::time::{Duration, Instant};

/// The timetable of a fixed-rate run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Requests per second, > 0.
    rate: f64,
    /// Requests in the whole run (warm-up included).
    total: u64,
    /// Requests due before this index are warm-up and not recorded.
    first_recorded: u64,
}

impl Schedule {
    /// A run of `warmup + measure` at `rate` requests per second, from `start`.
    pub fn new(start: Instant, rate: f64, warmup: Duration, measure: Duration) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        // Rounded, so a 1,000 req/s run of 10 s is exactly 10,000 requests.
        let first_recorded = (warmup.as_secs_f64() * rate).round() as u64;
        let total = first_recorded + (measure.as_secs_f64() * rate).round() as u64;
        Self {
            start,
            rate,
            total,
            first_recorded,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `i` is due. Computed from `i` directly rather than by
    /// adding a period each time, so rounding never accumulates into drift.
    pub fn due(&self, i: u64) -> Instant {
        let nanos = (i as f64 * 1e9 / self.rate).round() as u64;
        self.start + Duration::from_nanos(nanos)
    }

    /// Whether request `i` counts (it is past the warm-up).
    pub fn is_recorded(&self, i: u64) -> bool {
        i >= self.first_recorded && i < self.total
    }

    /// Which of `connections` carries request `i`: round robin, so each
    /// connection sees an even share and its own fixed-rate timetable.
    pub fn connection_of(i: u64, connections: usize) -> usize {
        (i % connections.max(1) as u64) as usize
    }

    /// When the measured part begins.
    pub fn measure_start(&self) -> Instant {
        self.due(self.first_recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_exact_and_do_not_drift() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0, Duration::ZERO, Duration::from_secs(10));
        assert_eq!(s.total(), 10_000);
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(1), t0 + Duration::from_millis(1));
        // After a million periods the timetable is still on the millisecond grid.
        assert_eq!(s.due(1_000_000), t0 + Duration::from_secs(1000));
        // A rate whose period is not a whole number of nanoseconds: 3 req/s.
        let s = Schedule::new(t0, 3.0, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(s.due(3), t0 + Duration::from_secs(1));
        assert_eq!(s.due(3_000_000), t0 + Duration::from_secs(1_000_000));
    }

    #[test]
    fn warmup_is_not_recorded() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 100.0, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(s.total(), 300);
        assert!(!s.is_recorded(99));
        assert!(s.is_recorded(100));
        assert!(s.is_recorded(299));
        assert!(!s.is_recorded(300));
        assert_eq!(s.measure_start(), t0 + Duration::from_secs(1));
    }

    #[test]
    fn round_robin_gives_each_connection_an_even_share() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[Schedule::connection_of(i, 16)] += 1;
        }
        assert!(counts.iter().all(|c| *c == 1000));
        // Zero connections is treated as one rather than dividing by zero.
        assert_eq!(Schedule::connection_of(5, 0), 0);
    }

    #[test]
    fn nonsense_rate_is_clamped() {
        let s = Schedule::new(
            Instant::now(),
            f64::NAN,
            Duration::ZERO,
            Duration::from_secs(2),
        );
        assert_eq!(s.rate(), 1.0);
        assert_eq!(s.total(), 2);
    }
}
