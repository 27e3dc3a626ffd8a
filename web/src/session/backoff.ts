// Reconnect backoff: exponential growth with full jitter.
//
// Spec: §14.2. The delay before attempt n (from 0) is drawn uniformly from
// 0..=min(cap, base * 2^n). Full jitter spreads a crowd of clients that
// lost the same server, so their reconnects do not come as one wave.
// Randomness is passed in; nothing here reads a clock. Port of
// crates/protocol/src/session/backoff.rs; all durations are milliseconds.

/** Backoff parameters, in milliseconds. */
export class Backoff {
  /** Ceiling of the first delay. */
  readonly base: number;
  /** Largest ceiling any delay can have. */
  readonly cap: number;

  constructor(base = 250, cap = 30_000) {
    this.base = base;
    this.cap = cap;
  }

  /** The upper bound of the delay before attempt `attempt`. */
  ceiling(attempt: number): number {
    // 2^20 * base already exceeds any sensible cap; clamping the exponent
    // keeps the product finite and exact.
    const factor = 2 ** Math.min(Math.max(0, attempt), 20);
    return Math.min(this.base * factor, this.cap);
  }

  /**
   * A delay for attempt `attempt`, uniform in whole ms over 0..=ceiling.
   * `random` returns [0, 1) like Math.random; a bad source returning 1 or
   * more is clamped rather than trusted.
   */
  delay(attempt: number, random: () => number): number {
    const ceiling = Math.floor(this.ceiling(attempt));
    const ms = Math.floor(random() * (ceiling + 1));
    return Math.min(Math.max(0, ms), ceiling);
  }
}
