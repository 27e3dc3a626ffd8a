//! The single storage writer: group commit of messages.
//!
//! Every SendMessage goes through one task. It waits for a request, then
//! drains everything else already queued (up to `batch_max`), appends the
//! whole batch in ONE transaction, and only after the commit answers each
//! request's oneshot and hands the stored messages, in seq order, to the
//! [`CommitSink`] (the hub) for fan-out.
//!
//! Why one writer: SQLite has one write lock anyway, and a single writer
//! turns N concurrent senders into one fsync instead of N, which is what
//! makes `synchronous=FULL` affordable. It also makes seq assignment and the
//! order of fan-out trivially the commit order.

use std::sync::Arc;
use std::time::Instant;

use confab_protocol::error::Rejection;
use confab_protocol::wire::{ErrorCode, SendAck};
use tokio::sync::{mpsc, oneshot};

use super::{AppendOutcome, NewMessage, Store, StoredMessage};
use crate::metrics::Metrics;

/// Requests queued to the writer before `submit` waits; bounds memory and
/// pushes back on senders when storage is slower than they are.
const QUEUE_CAPACITY: usize = 4096;

/// What a sender gets back once its message is durable (or refused).
pub type AckResult = Result<SendAck, Rejection>;

/// A message that committed, with when its SendMessage arrived (for the
/// send-to-deliver latency metric).
#[derive(Debug, Clone)]
pub struct Committed {
    /// The stored message.
    pub message: StoredMessage,
    /// When the request was received.
    pub received: Instant,
}

/// Receives committed messages in commit (and so per-room seq) order.
pub trait CommitSink: Send + Sync + 'static {
    /// Called once per batch, after the commit and before the acks go out.
    fn publish(&self, committed: &[Committed]);
}

struct Request {
    message: NewMessage,
    received: Instant,
    reply: oneshot::Sender<AckResult>,
}

enum Command {
    Append(Request),
    /// Finish everything queued before this, then stop.
    Stop(oneshot::Sender<()>),
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append(r) => {
                write!(f, "Append({}/{})", r.message.room, r.message.client_msg_id)
            }
            Command::Stop(_) => f.write_str("Stop"),
        }
    }
}

fn unavailable() -> Rejection {
    Rejection::new(
        ErrorCode::Unavailable,
        "the server is shutting down; reconnect and resend",
    )
}

impl WriterHandle {
    /// Queues a message; the receiver resolves once it is durable or refused.
    pub async fn submit(
        &self,
        message: NewMessage,
        received: Instant,
    ) -> oneshot::Receiver<AckResult> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            message,
            received,
            reply,
        };
        if let Err(mpsc::error::SendError(Command::Append(request))) =
            self.tx.send(Command::Append(request)).await
        {
            // The writer is gone (shutdown); answer right away.
            request.reply.send(Err(unavailable())).ok();
        }
        rx
    }

    /// Lets the writer finish every queued request, then stops it.
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Stop(done)).await.is_ok() {
            // An error means the writer already stopped, which is the goal.
            rx.await.ok();
        }
    }
}

/// Starts the writer task.
pub fn spawn(
    store: Arc<dyn Store>,
    sink: Arc<dyn CommitSink>,
    batch_max: usize,
    metrics: Arc<Metrics>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let task = tokio::spawn(run(rx, store, sink, batch_max.max(1), metrics));
    (WriterHandle { tx }, task)
}

async fn run(
    mut rx: mpsc::Receiver<Command>,
    store: Arc<dyn Store>,
    sink: Arc<dyn CommitSink>,
    batch_max: usize,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(batch_max);
    let mut stop: Option<oneshot::Sender<()>> = None;
    while let Some(first) = rx.recv().await {
        // Drain without waiting: whatever queued while the last batch was
        // committing joins this one.
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append(request) => batch.push(request),
                Command::Stop(done) => stop = Some(done),
            }
            if batch.len() < batch_max && stop.is_none() {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit(&*store, &*sink, &mut batch, &metrics).await;
        }
        if let Some(done) = stop.take() {
            // Requests that raced in after Stop are refused so their senders
            // do not wait forever.
            rx.close();
            while let Some(cmd) = rx.recv().await {
                if let Command::Append(request) = cmd {
                    request.reply.send(Err(unavailable())).ok();
                }
            }
            done.send(()).ok();
            tracing::debug!("storage writer stopped");
            return;
        }
    }
}

async fn commit(
    store: &dyn Store,
    sink: &dyn CommitSink,
    batch: &mut Vec<Request>,
    metrics: &Metrics,
) {
    let messages: Vec<NewMessage> = batch.iter().map(|r| r.message.clone()).collect();
    let result = store.append_batch(&messages).await;
    Metrics::inc(&metrics.write_batches);
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(err) => {
            // Nothing of the batch is stored; every sender may retry with the
            // same client_msg_id, which stays idempotent.
            tracing::error!(error = %err, batch = batch.len(), "message batch failed to commit");
            for request in batch.drain(..) {
                let rejection = Rejection::new(
                    ErrorCode::Internal,
                    "storage failed; retry with the same client_msg_id",
                );
                request.reply.send(Err(rejection)).ok();
            }
            return;
        }
    };
    let committed: Vec<Committed> = batch
        .iter()
        .zip(&outcomes)
        .filter_map(|(request, outcome)| match outcome {
            AppendOutcome::Stored(message) => Some(Committed {
                message: message.clone(),
                received: request.received,
            }),
            _ => None,
        })
        .collect();
    metrics
        .messages_stored
        .fetch_add(committed.len() as u64, std::sync::atomic::Ordering::Relaxed);
    sink.publish(&committed);
    for (request, outcome) in batch.drain(..).zip(outcomes) {
        let reply = match outcome {
            AppendOutcome::Stored(m) => Ok(ack(&m, false)),
            AppendOutcome::Duplicate(m) => {
                Metrics::inc(&metrics.duplicate_sends);
                Ok(ack(&m, true))
            }
            AppendOutcome::Conflict => Err(Rejection::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "client_msg_id {} was already used for another room or text; use a fresh id for a new message",
                    request.message.client_msg_id
                ),
            )),
        };
        // The sender may have disconnected meanwhile; the message is stored regardless.
        request.reply.send(reply).ok();
    }
}

fn ack(message: &StoredMessage, duplicate: bool) -> SendAck {
    SendAck {
        room: message.room.as_str().to_owned(),
        client_msg_id: message.client_msg_id.clone(),
        seq: message.seq,
        message_id: message.message_id.clone(),
        server_ts_ms: message.server_ts_ms,
        duplicate,
    }
}
