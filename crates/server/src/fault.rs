//! Fault hooks for the multi-process tests (`tests/cluster.rs`), compiled
//! only with the `fault-hooks` feature, into the `confab-server-fault`
//! binary. A release build has none of this.

use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable: abort after the COMMIT of the N-th batch that
/// stored at least one message, before that batch is delivered, published
/// to the cluster or acknowledged.
pub const ABORT_AFTER_COMMIT: &str = "CONFAB_FAULT_ABORT_AFTER_COMMIT";

static COMMITS: AtomicU64 = AtomicU64::new(0);

/// Called by the writer right after a commit that stored messages.
pub fn after_commit() {
    let n = COMMITS.fetch_add(1, Ordering::SeqCst) + 1;
    let at = std::env::var(ABORT_AFTER_COMMIT)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if at == Some(n) {
        eprintln!("{ABORT_AFTER_COMMIT}={n}: aborting after the commit, before publishing it");
        std::process::abort();
    }
}
