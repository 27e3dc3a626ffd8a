//! Reconnect backoff: exponential growth with full jitter.
//!
//! Spec: §14.2. The delay before attempt `n` (counting from 0) is drawn
//! uniformly from `0..=min(cap, base * 2^n)`. Full jitter spreads a crowd of
//! clients that lost the same server, so their reconnects do not arrive as
//! one synchronized wave. Randomness is passed in; nothing here reads a clock.

use std::time::Duration;

use rand_core::RngCore;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling any delay can have.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before attempt `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^20 * base already exceeds any sensible cap; clamping the
        // exponent keeps the multiplication from overflowing.
        let factor = 1u32 << attempt.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A delay for attempt `attempt`, uniform in `0..=ceiling(attempt)`.
    pub fn delay(&self, attempt: u32, rng: &mut impl RngCore) -> Duration {
        let ceiling_ms = self.ceiling(attempt).as_millis() as u64;
        let ms = rng.next_u64() % (ceiling_ms + 1);
        Duration::from_millis(ms)
    }
}
