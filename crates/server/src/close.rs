//! The decision to end one connection (§12.4 and the teardown of
//! `ws::connection`): made once, by whoever decides first (the reader, the
//! writer, the hub on a full queue, a logout), and seen by both halves of
//! the connection even when its outbound queue is full.
//!
//! Why not a `tokio::sync::watch`: each half waits on the decision for the
//! socket's whole life, and a watch's wait future (its `Notified` and the
//! `wait_for` state around it) is 168 bytes inside every idle socket's task,
//! twice. Here the waiting state lives once, in the shared signal: one
//! [`AtomicWaker`] per half, and a wait is a reference to the signal.
//! Each half has a single task polling it, which is what an `AtomicWaker`
//! (one waker, the last registered) needs.

use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::hub::Ending;

/// Which half of a connection is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// The task reading client frames.
    Reader,
    /// The task writing the outbound queue.
    Writer,
}

#[derive(Debug, Default)]
struct Shared {
    ending: Mutex<Option<Ending>>,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// A connection's close decision; clones share it.
#[derive(Debug, Clone, Default)]
pub struct CloseSignal(Arc<Shared>);

impl CloseSignal {
    /// Not decided yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records why the connection ends unless that is already decided (the
    /// first decision wins) and wakes both halves; returns whether this
    /// call decided it.
    pub fn decide(&self, ending: Ending) -> bool {
        let decided = {
            // A panic elsewhere while holding the lock cannot leave an
            // `Option<Ending>` half-written, so a poisoned lock is usable.
            let mut current = self.0.ending.lock().unwrap_or_else(PoisonError::into_inner);
            if current.is_some() {
                false
            } else {
                *current = Some(ending);
                true
            }
        };
        if decided {
            self.0.reader.wake();
            self.0.writer.wake();
        }
        decided
    }

    /// The decision, if one was made.
    pub fn get(&self) -> Option<Ending> {
        *self.0.ending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ready once decided. `half` says whose task to wake; only that half's
    /// task may poll with it.
    pub fn poll_decided(&self, cx: &mut Context<'_>, half: Half) -> Poll<Ending> {
        if let Some(ending) = self.get() {
            return Poll::Ready(ending);
        }
        let waker = match half {
            Half::Reader => &self.0.reader,
            Half::Writer => &self.0.writer,
        };
        waker.register(cx.waker());
        // Checked again after registering: a decision made in between woke
        // the previous waker, not this one.
        match self.get() {
            Some(ending) => Poll::Ready(ending),
            None => Poll::Pending,
        }
    }

    /// Completes with the decision once there is one.
    pub fn decided(&self, half: Half) -> impl Future<Output = Ending> + Send + '_ {
        poll_fn(move |cx| self.poll_decided(cx, half))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_protocol::error::CloseCode;

    #[test]
    fn the_first_decision_wins() {
        let signal = CloseSignal::new();
        assert_eq!(signal.get(), None);
        assert!(signal.decide(Ending::Close(CloseCode::SlowConsumer)));
        assert!(!signal.decide(Ending::PeerGone));
        assert_eq!(signal.get(), Some(Ending::Close(CloseCode::SlowConsumer)));
    }

    #[tokio::test]
    async fn both_halves_wake_on_a_decision_from_another_task() {
        let signal = CloseSignal::new();
        let waiters = [Half::Reader, Half::Writer].map(|half| {
            let signal = signal.clone();
            tokio::spawn(async move { signal.decided(half).await })
        });
        // Both are parked (or about to be) before the decision: the decision
        // must wake whichever waker each registered.
        tokio::task::yield_now().await;
        let decider = signal.clone();
        tokio::spawn(async move { decider.decide(Ending::PeerGone) })
            .await
            .expect("decider");
        for waiter in waiters {
            let ending = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("woken")
                .expect("waiter");
            assert_eq!(ending, Ending::PeerGone);
        }
    }
}
