//! A connection's outbound queue (spec §12.4): bounded in items and in
//! bytes, many senders (fan-out, the reader), one receiver (the writer).
//!
//! Why not `tokio::sync::mpsc`: its bounded channel allocates its first
//! block of 32 slots when created, and every socket has a queue, idle or
//! not, so that block was ~1.8 KB of each idle socket's ~9 KB (issue #15,
//! BENCHMARKS.md "idle"). This queue is a `VecDeque` behind a mutex that
//! holds nothing until something is queued, and gives back a grown buffer
//! once it is drained. Each critical section is a push or a pop plus a waker
//! hand-off, never an await, so a blocking mutex is right here; fan-out
//! already runs under the hub's one lock, so the sender side never contends
//! with another sender, only with the socket's own writer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crate::metrics::Metrics;

/// A drained buffer with more slots than this is freed, so that one burst
/// does not keep its memory for the socket's lifetime; a smaller one is
/// kept, so that steady traffic does not allocate per item.
const KEEP_SLOTS: usize = 8;

/// What an item counts against the byte bound.
pub trait Cost {
    /// Bytes the item holds for the socket (0 for control items).
    fn cost(&self) -> usize;
}

/// Why [`QueueTx::try_send`] refused an item, which it gives back.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refused<T> {
    /// Over the item bound or the byte bound: the reader is too slow.
    Full(T),
    /// The receiver is gone: the connection is ending.
    Closed(T),
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// The receiver, parked on an empty queue.
    waker: Option<Waker>,
    senders: usize,
    receiver: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    /// Reserved and not yet written; see [`QueueTx::try_send`].
    bytes: AtomicUsize,
    max_items: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic under this lock leaves the deque itself sound: take it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sending end; clone it for each sender.
#[derive(Debug)]
pub struct QueueTx<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end; [`QueueRx::written`] gives an item's bytes back once
/// it is on its way to the socket.
#[derive(Debug)]
pub struct QueueRx<T> {
    shared: Arc<Shared<T>>,
}

/// A queue of at most `max_items` items and `max_bytes` bytes (an item of
/// cost 0, such as a Close, always fits the byte bound).
pub fn queue<T: Cost>(
    max_items: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
) -> (QueueTx<T>, QueueRx<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            senders: 1,
            receiver: true,
        }),
        bytes: AtomicUsize::new(0),
        max_items: max_items.max(1),
        max_bytes,
        metrics,
    });
    (
        QueueTx {
            shared: Arc::clone(&shared),
        },
        QueueRx { shared },
    )
}

impl<T: Cost> QueueTx<T> {
    /// Queues `item` without waiting.
    ///
    /// The bytes are reserved with one `fetch_add` and the sum it returns is
    /// what is compared, so concurrent senders can never together pass the
    /// byte bound: each sees every reservation made before its own. The item
    /// bound is checked under the lock. A refused reservation is given back.
    pub fn try_send(&self, item: T) -> Result<(), Refused<T>> {
        let cost = item.cost();
        let total = self.shared.bytes.fetch_add(cost, Ordering::AcqRel) + cost;
        if cost > 0 && total > self.shared.max_bytes {
            self.shared.bytes.fetch_sub(cost, Ordering::AcqRel);
            return Err(Refused::Full(item));
        }
        let waker = {
            let mut state = self.shared.lock();
            let closed = !state.receiver;
            if closed || state.items.len() >= self.shared.max_items {
                drop(state);
                self.shared.bytes.fetch_sub(cost, Ordering::AcqRel);
                return Err(if closed {
                    Refused::Closed(item)
                } else {
                    Refused::Full(item)
                });
            }
            state.items.push_back(item);
            state.waker.take()
        };
        // Woken outside the lock, so the writer does not wake into it.
        if let Some(waker) = waker {
            waker.wake();
        }
        // Fan-out runs this once per recipient: read the shared gauge first
        // so the common case (no new peak) leaves its cache line shared.
        let peak = &self.shared.metrics.outbound_queue_bytes_peak;
        if total as u64 > peak.load(Ordering::Relaxed) {
            peak.fetch_max(total as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Bytes queued now (reserved and not yet written).
    pub fn queued_bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Acquire)
    }
}

impl<T> Clone for QueueTx<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for QueueTx<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        // The last sender gone: a parked receiver learns the queue ended.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> QueueRx<T> {
    /// The next item; `None` once it is empty and every sender is gone.
    /// Cancel-safe: an item is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(item) = Self::pop(&mut state) {
                return Poll::Ready(Some(item));
            }
            if state.senders == 0 {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        Self::pop(&mut self.shared.lock())
    }

    /// The writer has handed `bytes` (an item's [`Cost::cost`]) to the
    /// socket: they no longer count against the bound.
    pub fn written(&self, bytes: usize) {
        if bytes > 0 {
            self.shared.bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    fn pop(state: &mut State<T>) -> Option<T> {
        let item = state.items.pop_front()?;
        if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
            state.items = VecDeque::new();
        }
        Some(item)
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.shared.lock().items.capacity()
    }
}

#[cfg(test)]
impl<T: Cost> QueueRx<T> {
    /// The bytes of the items in the queue now. The reservation counter can
    /// pass the bound for an instant (a refused reservation is added, then
    /// taken back); what is queued never does.
    fn queued_cost(&self) -> usize {
        self.shared.lock().items.iter().map(Cost::cost).sum()
    }
}

impl<T> Drop for QueueRx<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.lock();
            state.receiver = false;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: an item's drop may be arbitrary work.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(usize);

    impl Cost for Item {
        fn cost(&self) -> usize {
            self.0
        }
    }

    fn new(max_items: usize, max_bytes: usize) -> (QueueTx<Item>, QueueRx<Item>) {
        queue(max_items, max_bytes, Arc::new(Metrics::default()))
    }

    #[test]
    fn an_unused_queue_holds_no_buffer_and_a_drained_burst_gives_its_buffer_back() {
        let (tx, mut rx) = new(1024, usize::MAX);
        assert_eq!(rx.capacity(), 0);
        for i in 0..100 {
            tx.try_send(Item(i)).expect("fits");
        }
        assert!(rx.capacity() >= 100);
        for i in 0..100 {
            assert_eq!(rx.try_recv(), Some(Item(i)), "in order");
        }
        assert_eq!(rx.capacity(), 0, "freed once drained");
        // Steady one-at-a-time traffic keeps its small buffer.
        tx.try_send(Item(1)).expect("fits");
        assert_eq!(rx.try_recv(), Some(Item(1)));
        assert!((1..=KEEP_SLOTS).contains(&rx.capacity()));
    }

    #[test]
    fn both_bounds_refuse_and_give_the_item_back() {
        let (tx, mut rx) = new(2, 10);
        tx.try_send(Item(4)).expect("fits");
        assert!(
            matches!(tx.try_send(Item(7)), Err(Refused::Full(Item(7)))),
            "11 bytes > 10"
        );
        tx.try_send(Item(6)).expect("10 bytes fit");
        assert!(
            matches!(tx.try_send(Item(0)), Err(Refused::Full(Item(0)))),
            "third item > 2"
        );
        assert_eq!(tx.queued_bytes(), 10, "refusals reserved nothing");
        assert_eq!(rx.try_recv(), Some(Item(4)));
        rx.written(4);
        tx.try_send(Item(4)).expect("room again once written");
        drop(rx);
        assert!(matches!(
            tx.try_send(Item(0)),
            Err(Refused::Closed(Item(0)))
        ));
    }

    #[test]
    fn concurrent_senders_never_pass_either_bound() {
        const CAP_BYTES: usize = 1000;
        let (tx, mut rx) = new(64, CAP_BYTES);
        let mut taken = (0, 0);
        let accepted: Vec<(usize, usize)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let mut ok = (0, 0);
                        for i in 0..10_000 {
                            let cost = 1 + (i * 7 + w) % 50;
                            if tx.try_send(Item(cost)).is_ok() {
                                ok.0 += 1;
                                ok.1 += cost;
                            }
                        }
                        ok
                    })
                })
                .collect();
            // Meanwhile the writer drains, checking the bounds as it goes.
            while workers.iter().any(|w| !w.is_finished()) {
                assert!(rx.queued_cost() <= CAP_BYTES);
                assert!(rx.shared.lock().items.len() <= 64);
                if let Some(item) = rx.try_recv() {
                    rx.written(item.0);
                    taken.0 += 1;
                    taken.1 += item.0;
                }
            }
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        let mut left = 0;
        let mut left_bytes = 0;
        while let Some(item) = rx.try_recv() {
            left += 1;
            left_bytes += item.0;
        }
        assert!(left <= 64, "{left} items queued");
        assert!(left_bytes <= CAP_BYTES);
        assert_eq!(tx.queued_bytes(), left_bytes, "every byte accounted for");
        // Nothing accepted was lost or duplicated on the way.
        let sent = accepted
            .iter()
            .fold((0, 0), |(n, b), &(an, ab)| (n + an, b + ab));
        assert_eq!(sent, (taken.0 + left, taken.1 + left_bytes));
        assert!(sent.0 > 0, "an empty queue takes the first item");
    }

    #[tokio::test]
    async fn recv_wakes_on_a_push_and_ends_when_the_last_sender_goes() {
        let (tx, mut rx) = new(8, 100);
        let tx2 = tx.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = rx.recv().await {
                got.push(item.0);
            }
            got
        });
        tx.try_send(Item(1)).expect("fits");
        drop(tx);
        tx2.try_send(Item(2)).expect("fits");
        drop(tx2);
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the reader ends")
            .expect("no panic");
        assert_eq!(got, vec![1, 2]);
    }
}
