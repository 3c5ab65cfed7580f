//! When to try again after the service could not be reached: exponential
//! backoff with full jitter. Each failure doubles the longest wait, up to a
//! cap; the wait itself is drawn at random between zero and that ceiling.
//!
//! Without the draw, a fleet that lost the service at the same moment (it
//! restarted) comes back at the same moments too, 0.5 s, 1.5 s, 3.5 s later,
//! and each wave knocks the service over again. With it, the fleet spreads
//! over the whole window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest wait after the first failure.
const FIRST: Duration = Duration::from_millis(500);

pub struct Backoff {
    failures: u32,
    /// The longest wait ever (8 s unless `--backoff-cap` says otherwise):
    /// past it, doubling only makes a device slow to come back once the
    /// service is there again.
    cap: Duration,
    jitter: bool,
    random: u64,
}

impl Backoff {
    /// `jitter: false` only to measure what a fleet without it does.
    pub fn new(cap: Duration, jitter: bool) -> Backoff {
        // Seeded by the clock and the process: two agents started in the
        // same nanosecond still draw differently.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        Backoff {
            failures: 0,
            cap,
            jitter,
            random: (nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1,
        }
    }

    /// A connection worked: the next failure starts from the first wait.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        if !self.jitter {
            return ceiling;
        }
        // The draw comes after the cap: capping after it would pile every
        // late attempt onto the cap itself.
        ceiling.mul_f64(self.fraction())
    }

    /// A number in [0, 1), from xorshift64: no crate for one random number.
    fn fraction(&mut self) -> f64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        (self.random >> 11) as f64 / (1u64 << 53) as f64
    }
}
