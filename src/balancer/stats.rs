//! The balancer's figures, counted with atomics on the request path and read by the metrics
//! endpoint and `show`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds (Prometheus' `le`).
pub const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The whole balancer's figures.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections open now.
    pub connections: AtomicI64,
    /// Requests sent again to another instance after a failed connect.
    pub retries: AtomicU64,
    /// Answers the balancer gave itself: no instance ready (503), broken (502), timed out (504).
    pub unavailable: AtomicU64,
    pub bad_gateway: AtomicU64,
    pub timeouts: AtomicU64,
    /// Time to the answer's headers: a count per bucket (the last for over 5 s), the sum in µs.
    pub latency: [AtomicU64; BUCKETS.len() + 1],
    pub latency_sum_us: AtomicU64,
}

impl Stats {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// One instance's figures.
#[derive(Debug, Default)]
pub struct MemberStats {
    /// Answers by status class: 1xx … 5xx.
    pub responses: [AtomicU64; 5],
    /// Connect errors, errors before the answer, timeouts.
    pub failures: AtomicU64,
}

impl MemberStats {
    pub fn answered(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.responses.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}
