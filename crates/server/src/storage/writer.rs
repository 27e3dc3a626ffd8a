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

use confab_protocol::batch::Refusal;
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

/// A batch being gathered: the messages, as `Store::append_batch` takes
/// them (so they are not copied), and beside each who waits for its ack.
struct Batch {
    messages: Vec<NewMessage>,
    waiters: Vec<Waiter>,
}

struct Waiter {
    received: Instant,
    reply: oneshot::Sender<AckResult>,
}

async fn run(
    mut rx: mpsc::Receiver<Command>,
    store: Arc<dyn Store>,
    sink: Arc<dyn CommitSink>,
    batch_max: usize,
    metrics: Arc<Metrics>,
) {
    let mut batch = Batch {
        messages: Vec::with_capacity(batch_max),
        waiters: Vec::with_capacity(batch_max),
    };
    let mut stop: Option<oneshot::Sender<()>> = None;
    while let Some(first) = rx.recv().await {
        // Drain without waiting: whatever queued while the last batch was
        // committing joins this one.
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append(request) => {
                    batch.messages.push(request.message);
                    batch.waiters.push(Waiter {
                        received: request.received,
                        reply: request.reply,
                    });
                }
                Command::Stop(done) => stop = Some(done),
            }
            if batch.messages.len() < batch_max && stop.is_none() {
                next = rx.try_recv().ok();
            }
        }
        if !batch.messages.is_empty() {
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

async fn commit(store: &dyn Store, sink: &dyn CommitSink, batch: &mut Batch, metrics: &Metrics) {
    let result = store.append_batch(&batch.messages).await;
    Metrics::inc(&metrics.write_batches);
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(err) => {
            // Nothing of the batch is stored; every sender may retry with the
            // same client_msg_id, which stays idempotent.
            tracing::error!(error = %err, batch = batch.messages.len(), "message batch failed to commit");
            batch.messages.clear();
            for waiter in batch.waiters.drain(..) {
                let rejection = Rejection::new(
                    ErrorCode::Internal,
                    "storage failed; retry with the same client_msg_id",
                );
                waiter.reply.send(Err(rejection)).ok();
            }
            return;
        }
    };
    let committed: Vec<Committed> = batch
        .waiters
        .iter()
        .zip(&outcomes)
        .filter_map(|(waiter, outcome)| match outcome {
            AppendOutcome::Stored(message) => Some(Committed {
                message: message.clone(),
                received: waiter.received,
            }),
            _ => None,
        })
        .collect();
    metrics
        .messages_stored
        .fetch_add(committed.len() as u64, std::sync::atomic::Ordering::Relaxed);
    // Tests only: a crash between COMMIT and any fan-out or ack.
    #[cfg(feature = "fault-hooks")]
    if !committed.is_empty() {
        crate::fault::after_commit();
    }
    sink.publish(&committed);
    for ((waiter, message), outcome) in batch
        .waiters
        .drain(..)
        .zip(batch.messages.drain(..))
        .zip(outcomes)
    {
        let reply = match outcome {
            AppendOutcome::Stored(m) => Ok(ack(&m, false)),
            AppendOutcome::Duplicate(m) => {
                Metrics::inc(&metrics.duplicate_sends);
                Ok(ack(&m, true))
            }
            AppendOutcome::Conflict => Err(Rejection::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "client_msg_id {} was already used for another room, text or relation; use a fresh id for a new message",
                    message.client_msg_id
                ),
            )),
            AppendOutcome::Refused(refusal) => Err(refused(refusal, &message)),
        };
        // The sender may have disconnected meanwhile; the message is stored regardless.
        waiter.reply.send(reply).ok();
    }
}

/// The Error for a relation the plan refused (§8.6).
fn refused(refusal: Refusal, message: &NewMessage) -> Rejection {
    let target = message.relation.as_ref().map_or("", |r| r.target.as_str());
    let kind = message
        .relation
        .as_ref()
        .map_or("relation", |r| r.kind.name());
    match refusal {
        Refusal::NotAuthor => Rejection::new(
            ErrorCode::NotAuthor,
            format!("message {target} was sent by another user; only its sender may {kind} it"),
        ),
        Refusal::ReactionNotFound => Rejection::new(
            ErrorCode::NotFound,
            format!("you have no such reaction on message {target} to remove; nothing was changed"),
        ),
        // TargetNotFound, and any refusal added later.
        _ => Rejection::new(
            ErrorCode::NotFound,
            format!(
                "no message {target} in room {} that a {kind} may name: it does not exist, was deleted, or is itself an edit, deletion or reaction",
                message.room
            ),
        ),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use confab_protocol::names::{ClientMsgId, RoomName, Username};
    use confab_protocol::rules::HistoryRange;
    use confab_protocol::wire::MessageKind;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::storage::{
        HistorySlice, RoomId, RoomRecord, StoreError, StoreFuture, TokenRecord, UserCredentials,
        UserId,
    };

    /// A store that records batch sizes and holds each append until the
    /// test hands it a permit, so requests pile up behind a commit.
    #[derive(Debug)]
    struct GatedStore {
        entered: tokio::sync::Notify,
        gate: Semaphore,
        batches: Mutex<Vec<usize>>,
    }

    fn unused<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
        Box::pin(async { Err(StoreError::Database("not used by the writer".into())) })
    }

    impl Store for GatedStore {
        fn create_user<'a>(
            &'a self,
            _: &'a Username,
            _: &'a str,
            _: i64,
        ) -> StoreFuture<'a, UserId> {
            unused()
        }
        fn user_credentials<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<UserCredentials>> {
            unused()
        }
        fn insert_token<'a>(
            &'a self,
            _: &'a str,
            _: UserId,
            _: i64,
            _: i64,
        ) -> StoreFuture<'a, ()> {
            unused()
        }
        fn token<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
            unused()
        }
        fn revoke_token<'a>(&'a self, _: &'a str, _: i64) -> StoreFuture<'a, bool> {
            unused()
        }
        fn load_rooms(&self) -> StoreFuture<'_, Vec<RoomRecord>> {
            unused()
        }
        fn create_room<'a>(
            &'a self,
            _: &'a RoomName,
            _: &'a str,
            _: &'a str,
            _: UserId,
            _: i64,
        ) -> StoreFuture<'a, RoomId> {
            unused()
        }
        fn add_member(&self, _: RoomId, _: UserId, _: i64) -> StoreFuture<'_, u64> {
            unused()
        }
        fn remove_member(&self, _: RoomId, _: UserId) -> StoreFuture<'_, u64> {
            unused()
        }
        fn room_record<'a>(&'a self, _: &'a RoomName) -> StoreFuture<'a, Option<RoomRecord>> {
            unused()
        }
        fn room_versions(&self) -> StoreFuture<'_, Vec<crate::storage::RoomVersion>> {
            unused()
        }
        fn read_states<'a>(
            &'a self,
            _: UserId,
            _: &'a confab_protocol::names::Username,
        ) -> StoreFuture<'a, Vec<confab_protocol::wire::ReadState>> {
            unused()
        }
        fn mark_read<'a>(
            &'a self,
            _: RoomId,
            _: UserId,
            _: &'a confab_protocol::names::Username,
            _: u64,
        ) -> StoreFuture<'a, (confab_protocol::wire::ReadState, bool)> {
            unused()
        }
        fn rooms_of_user(&self, _: UserId) -> StoreFuture<'_, Vec<RoomName>> {
            unused()
        }
        fn history<'a>(
            &'a self,
            _: &'a RoomName,
            _: HistoryRange,
            _: u32,
            _: UserId,
        ) -> StoreFuture<'a, HistorySlice> {
            unused()
        }
        fn messages_between<'a>(
            &'a self,
            _: &'a RoomName,
            _: u64,
            _: u64,
            _: u32,
        ) -> StoreFuture<'a, Vec<StoredMessage>> {
            unused()
        }
        fn sent_message<'a>(
            &'a self,
            _: UserId,
            _: &'a ClientMsgId,
        ) -> StoreFuture<'a, Option<StoredMessage>> {
            unused()
        }
        fn close(&self) -> StoreFuture<'_, ()> {
            unused()
        }

        fn append_batch<'a>(
            &'a self,
            batch: &'a [NewMessage],
        ) -> StoreFuture<'a, Vec<AppendOutcome>> {
            Box::pin(async move {
                self.entered.notify_one();
                self.gate.acquire().await.expect("gate open").forget();
                let start = {
                    let mut batches = self.batches.lock().expect("lock");
                    batches.push(batch.len());
                    batches.iter().sum::<usize>() - batch.len()
                };
                Ok(batch
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        AppendOutcome::Stored(StoredMessage {
                            room: m.room.clone(),
                            seq: (start + i + 1) as u64,
                            message_id: format!("id-{}", start + i + 1),
                            sender: m.sender.to_string(),
                            client_msg_id: m.client_msg_id.to_string(),
                            text: m.text.clone(),
                            kind: m.kind as i32,
                            server_ts_ms: m.server_ts_ms,
                            relation: None,
                            redacted: false,
                        })
                    })
                    .collect())
            })
        }
    }

    #[derive(Default)]
    struct Published(Mutex<Vec<u64>>);

    impl CommitSink for Published {
        fn publish(&self, committed: &[Committed]) {
            self.0
                .lock()
                .expect("lock")
                .extend(committed.iter().map(|c| c.message.seq));
        }
    }

    fn message(i: usize) -> NewMessage {
        NewMessage {
            room_id: 1,
            room: RoomName::parse("general").expect("name"),
            sender_id: 1,
            sender: Username::parse("alice").expect("name"),
            client_msg_id: ClientMsgId::parse(format!("c{i}")).expect("id"),
            text: format!("text {i}"),
            kind: MessageKind::Text,
            server_ts_ms: 0,
            relation: None,
        }
    }

    /// Requests that queue while a commit is in progress are written
    /// together in the next transaction, acked after it, and published in
    /// seq order before their acks.
    #[tokio::test]
    async fn requests_queued_during_a_commit_share_the_next_transaction() {
        let store = Arc::new(GatedStore {
            entered: tokio::sync::Notify::new(),
            gate: Semaphore::new(0),
            batches: Mutex::new(Vec::new()),
        });
        let published = Arc::new(Published::default());
        let (writer, task) = spawn(
            store.clone(),
            published.clone(),
            100,
            Arc::new(Metrics::default()),
        );
        let first = writer.submit(message(0), Instant::now()).await;
        // The writer holds the first request in a (gated) commit while ten more queue.
        store.entered.notified().await;
        let mut rest = Vec::new();
        for i in 1..=10 {
            rest.push(writer.submit(message(i), Instant::now()).await);
        }
        store.gate.add_permits(2);
        assert_eq!(first.await.expect("answered").expect("stored").seq, 1);
        for (i, ack) in rest.into_iter().enumerate() {
            let ack = ack.await.expect("answered").expect("stored");
            assert_eq!((ack.seq, ack.duplicate), (i as u64 + 2, false));
        }
        assert_eq!(
            *store.batches.lock().expect("lock"),
            vec![1, 10],
            "one transaction for the ten"
        );
        assert_eq!(
            *published.0.lock().expect("lock"),
            (1..=11).collect::<Vec<u64>>()
        );
        writer.stop().await;
        task.await.expect("writer ends");
        let late = writer.submit(message(99), Instant::now()).await;
        assert_eq!(
            late.await.expect("answered").unwrap_err().code,
            ErrorCode::Unavailable
        );
    }
}
