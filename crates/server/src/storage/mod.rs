//! Persistent state behind the [`Store`] trait.
//!
//! The trait speaks in validated protocol names and plain records, never in
//! SQL, so a PostgreSQL implementation can be added without touching the
//! socket, fan-out or protocol code. [`sqlite`] is the reference
//! implementation; [`postgres`] is the same contract on PostgreSQL. [`writer`] is the storage-agnostic group-commit task that
//! serialises every message append through [`Store::append_batch`].

pub mod postgres;
pub mod sqlite;
mod sqlite_append;
pub mod writer;

use std::future::Future;
use std::pin::Pin;

use confab_protocol::batch::{RefKind, RelationRef};
use confab_protocol::names::{ClientMsgId, RoomName, Username};
use confab_protocol::relation::{RelationKind, ValidRelation};
use confab_protocol::rules::HistoryRange;
use confab_protocol::wire::{self, MessageKind, relation::Kind};

/// A boxed future, so `Store` can be used as `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A uniqueness rule was violated (username or room name taken).
    #[error("already exists")]
    AlreadyExists,
    /// The referenced row does not exist.
    #[error("not found")]
    NotFound,
    /// The database failed; the request may be retried.
    #[error("database error: {0}")]
    Database(String),
}

/// A stored (signed) integer as a seq; a negative one, which no store
/// writes, reads as 0.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A seq as the databases' signed 64-bit integer (saturating).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A user id; stable, never reused.
pub type UserId = i64;
/// A room id; stable, never reused.
pub type RoomId = i64;

/// A registered user's credentials.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// Id.
    pub id: UserId,
    /// Canonical name.
    pub username: Username,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// What a token hash resolves to.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Owner id.
    pub user_id: UserId,
    /// Owner name.
    pub username: Username,
    /// Expiry, ms since the Unix epoch.
    pub expires_ms: i64,
    /// Revoked by logout.
    pub revoked: bool,
}

/// A room and everything the hub keeps in memory about it.
#[derive(Debug, Clone)]
pub struct RoomRecord {
    /// Id.
    pub id: RoomId,
    /// Name.
    pub name: RoomName,
    /// Topic.
    pub topic: String,
    /// Epoch of its sequence space (§10.2).
    pub epoch: String,
    /// Highest stored seq.
    pub head_seq: u64,
    /// Last message time (or creation), ms since the Unix epoch.
    pub last_activity_ms: i64,
    /// Member names.
    pub members: Vec<Username>,
    /// Bumped by every change of `members` (see [`Store::add_member`]).
    pub member_version: u64,
}

/// What a cluster node compares with its own view of a room (the heads and
/// membership poll of `cluster::sync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomVersion {
    /// Id.
    pub id: RoomId,
    /// Name.
    pub name: RoomName,
    /// Highest stored seq.
    pub head_seq: u64,
    /// When the message at `head_seq` was stored (ms since the Unix
    /// epoch), or the room was created: a node that learns of the head
    /// from here learns its time with it (§7.1 orders by it).
    pub last_activity_ms: i64,
    /// Membership version.
    pub member_version: u64,
}

/// How a message row keeps its relation (§8.6): `relation_kind` holds one
/// of these codes, beside `target_seq`, `target_id`, `quote` (a reply's)
/// and `reaction_key` (a reaction's), all NULL for a plain message.
pub mod relation_code {
    /// A plain message.
    pub const NONE: i32 = 0;
    /// An edit.
    pub const EDIT: i32 = 1;
    /// A deletion.
    pub const REDACT: i32 = 2;
    /// A reply.
    pub const REPLY: i32 = 3;
    /// A reaction added.
    pub const REACT: i32 = 4;
    /// A reaction removed.
    pub const UNREACT: i32 = 5;

    /// Whether a relation may name a message with this code (§8.6: a
    /// plain message or a reply).
    pub fn nameable(code: i32) -> bool {
        code == NONE || code == REPLY
    }

    /// SQL condition on `relation_kind` for what read state counts as a
    /// message (§11.3): what a user sees as a new line.
    pub const COUNTED: &str = "relation_kind IN (0, 3)";
}

/// The code of a relation kind (see [`relation_code`]).
pub(crate) fn relation_code_of(kind: &RelationKind) -> i32 {
    match kind {
        RelationKind::Edit => relation_code::EDIT,
        RelationKind::Redact => relation_code::REDACT,
        RelationKind::Reply => relation_code::REPLY,
        RelationKind::React { remove: false, .. } => relation_code::REACT,
        RelationKind::React { remove: true, .. } => relation_code::UNREACT,
    }
}

/// The relation columns of a stored row, as read back.
#[derive(Debug, Clone, Default)]
pub struct RelationColumns {
    /// `relation_kind`.
    pub code: i32,
    /// `target_seq`.
    pub target_seq: Option<i64>,
    /// `target_id`.
    pub target_id: Option<String>,
    /// `quote`.
    pub quote: Option<String>,
    /// `reaction_key`.
    pub reaction_key: Option<String>,
}

impl RelationColumns {
    /// The columns a wire relation is stored in (the inverse of
    /// [`RelationColumns::to_wire`]).
    pub fn of_wire(relation: Option<&wire::Relation>) -> Self {
        let Some(relation) = relation else {
            return Self::default();
        };
        let (code, quote, reaction_key) = match &relation.kind {
            Some(Kind::Edit(_)) => (relation_code::EDIT, None, None),
            Some(Kind::Redact(_)) => (relation_code::REDACT, None, None),
            Some(Kind::Reply(r)) => (relation_code::REPLY, Some(r.quote.clone()), None),
            Some(Kind::React(r)) if r.remove => (relation_code::UNREACT, None, Some(r.key.clone())),
            Some(Kind::React(r)) => (relation_code::REACT, None, Some(r.key.clone())),
            None => (relation_code::NONE, None, None),
        };
        Self {
            code,
            target_seq: Some(to_i64(relation.target_seq)),
            target_id: Some(relation.target_id.clone()),
            quote,
            reaction_key,
        }
    }

    /// The wire relation these columns hold; `None` for a plain message
    /// (or an unknown code, which no version of the server writes).
    pub fn to_wire(&self) -> Option<wire::Relation> {
        let key = || self.reaction_key.clone().unwrap_or_default();
        let kind = match self.code {
            relation_code::EDIT => Kind::Edit(wire::Edit {}),
            relation_code::REDACT => Kind::Redact(wire::Redact {}),
            relation_code::REPLY => Kind::Reply(wire::Reply {
                quote: self.quote.clone().unwrap_or_default(),
            }),
            relation_code::REACT => Kind::React(wire::React {
                key: key(),
                remove: false,
            }),
            relation_code::UNREACT => Kind::React(wire::React {
                key: key(),
                remove: true,
            }),
            _ => return None,
        };
        Some(wire::Relation {
            target_id: self.target_id.clone().unwrap_or_default(),
            kind: Some(kind),
            target_seq: self.target_seq.map_or(0, to_u64),
        })
    }

    /// The relation as the batch plan compares it.
    pub fn as_ref(&self) -> Option<RelationRef<'_>> {
        let kind = match self.code {
            relation_code::EDIT => RefKind::Edit,
            relation_code::REDACT => RefKind::Redact,
            relation_code::REPLY => RefKind::Reply,
            relation_code::REACT | relation_code::UNREACT => RefKind::React {
                key: self.reaction_key.as_deref().unwrap_or_default(),
                remove: self.code == relation_code::UNREACT,
            },
            _ => return None,
        };
        Some(RelationRef {
            target: self.target_id.as_deref().unwrap_or_default(),
            kind,
        })
    }
}

/// A message to append, already validated (§8.1) and authorised.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Room id.
    pub room_id: RoomId,
    /// Room name.
    pub room: RoomName,
    /// Sender id.
    pub sender_id: UserId,
    /// Sender name.
    pub sender: Username,
    /// Idempotency key.
    pub client_msg_id: ClientMsgId,
    /// Text.
    pub text: String,
    /// Kind.
    pub kind: MessageKind,
    /// Server timestamp to store, ms since the Unix epoch.
    pub server_ts_ms: i64,
    /// What it does to an earlier message (§8.6), if anything.
    pub relation: Option<ValidRelation>,
}

impl NewMessage {
    /// What [`confab_protocol::batch::plan_batch`] is given for this
    /// message: the same for every backend.
    pub fn batch_request(&self) -> confab_protocol::batch::BatchRequest<'_, RoomId, UserId> {
        confab_protocol::batch::BatchRequest {
            room: self.room_id,
            sender: self.sender_id,
            client_msg_id: self.client_msg_id.as_str(),
            text: self.text.as_str(),
            relation: self.relation.as_ref().map(RelationRef::of),
        }
    }

    /// The code of its relation (see [`relation_code`]).
    pub(crate) fn relation_code(&self) -> i32 {
        self.relation
            .as_ref()
            .map_or(relation_code::NONE, |r| relation_code_of(&r.kind))
    }

    /// Its reaction key, for a reaction.
    pub(crate) fn reaction_key(&self) -> Option<&str> {
        match &self.relation {
            Some(ValidRelation {
                kind: RelationKind::React { key, .. },
                ..
            }) => Some(key.as_str()),
            _ => None,
        }
    }

    /// The stored message this request becomes as row `seq` with
    /// `message_id`, its relation completed by the plan.
    pub(crate) fn stored(
        &self,
        seq: u64,
        message_id: String,
        target_seq: Option<u64>,
        quote: &str,
    ) -> StoredMessage {
        StoredMessage {
            room: self.room.clone(),
            seq,
            message_id,
            sender: self.sender.as_str().to_owned(),
            client_msg_id: self.client_msg_id.as_str().to_owned(),
            text: self.text.clone(),
            kind: self.kind as i32,
            server_ts_ms: self.server_ts_ms,
            relation: self
                .relation
                .as_ref()
                .map(|r| r.to_wire(target_seq.unwrap_or_default(), quote)),
            redacted: false,
        }
    }

    /// The users this message mentions, by the protocol's rule (§11.3,
    /// `confab_protocol::read::mentions`), without its sender: what a store
    /// writes beside the message so `mention_count` is a count of rows.
    pub fn mentions(&self) -> Vec<Username> {
        // Only what read state counts as a message mentions (§11.3): an
        // edit's new text does not mention anyone a second time.
        if !relation_code::nameable(self.relation_code()) {
            return Vec::new();
        }
        let mut names = confab_protocol::read::mentions(&self.text);
        names.retain(|name| *name != self.sender);
        names
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Room name.
    pub room: RoomName,
    /// Per-room seq.
    pub seq: u64,
    /// UUIDv7.
    pub message_id: String,
    /// Sender name.
    pub sender: String,
    /// Idempotency key.
    pub client_msg_id: String,
    /// Text.
    pub text: String,
    /// Kind as the wire enum value.
    pub kind: i32,
    /// Server timestamp.
    pub server_ts_ms: i64,
    /// Its relation (§8.6), if any.
    pub relation: Option<wire::Relation>,
    /// Deleted (§8.6.3): `text` is empty.
    pub redacted: bool,
}

impl StoredMessage {
    /// From the wire form (as another cluster node sent it); `None` when the
    /// room name is invalid.
    pub fn from_wire(message: wire::Message) -> Option<Self> {
        Some(Self {
            room: RoomName::parse(message.room).ok()?,
            seq: message.seq,
            message_id: message.message_id,
            sender: message.sender,
            client_msg_id: message.client_msg_id,
            text: message.text,
            kind: message.kind,
            server_ts_ms: message.server_ts_ms,
            relation: message.relation,
            redacted: message.redacted,
        })
    }

    /// The wire form a connection with relation capabilities `caps` gets
    /// (§8.6.1, R-3.4.4): the fallback where one applies.
    pub fn to_wire_for(&self, caps: confab_protocol::relation::RelationCaps) -> wire::Message {
        let message = self.to_wire();
        confab_protocol::relation::fallback(&message, caps).unwrap_or(message)
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::Message {
        wire::Message {
            room: self.room.as_str().to_owned(),
            seq: self.seq,
            message_id: self.message_id.clone(),
            sender: self.sender.clone(),
            client_msg_id: self.client_msg_id.clone(),
            text: self.text.clone(),
            kind: self.kind,
            server_ts_ms: self.server_ts_ms,
            relation: self.relation.clone(),
            redacted: self.redacted,
        }
    }
}

/// The outcome of appending one message (§8.5).
#[derive(Debug, Clone)]
pub enum AppendOutcome {
    /// Newly stored; fan it out.
    Stored(StoredMessage),
    /// A repeat of an earlier send with the same room and text: the original.
    Duplicate(StoredMessage),
    /// The client_msg_id was used before for another room or text.
    Conflict,
    /// A relation the rules of §8.6 refuse; nothing was stored.
    Refused(confab_protocol::batch::Refusal),
}

/// A row of a reaction count query, (target seq, key, count, viewer has
/// it), as the wire's `ReactionCount`.
pub(crate) fn reaction_count(
    (seq, key, count, mine): (i64, String, i64, bool),
) -> wire::ReactionCount {
    wire::ReactionCount {
        seq: to_u64(seq),
        key,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        mine,
    }
}

/// A page of history with the room's head at the time of reading (§9).
#[derive(Debug, Clone)]
pub struct HistorySlice {
    /// Messages in ascending seq order.
    pub messages: Vec<StoredMessage>,
    /// More exist beyond the page in its direction.
    pub has_more: bool,
    /// Room head when read.
    pub head_seq: u64,
    /// Room epoch.
    pub epoch: String,
    /// The reactions that count on the page's messages, by seq then key,
    /// with `mine` for the viewer.
    pub reactions: Vec<wire::ReactionCount>,
}

/// Persistent state of a Confab server.
///
/// Implementations must make [`Store::append_batch`] atomic and durable:
/// when it returns `Ok`, every `Stored` outcome survives a crash, and the
/// per-room seqs it assigned are gapless and continue the room's head.
/// Which requests get a row, their seqs, and which are duplicates or
/// conflicts is decided by [`confab_protocol::batch::plan_batch`], so every
/// backend applies §8.2 and §8.5 identically; the behaviour every backend
/// must show is checked by `tests/store_contract.rs`.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Registers a user; `AlreadyExists` when the name is taken.
    fn create_user<'a>(
        &'a self,
        username: &'a Username,
        password_hash: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, UserId>;

    /// Looks a user up by name.
    fn user_credentials<'a>(
        &'a self,
        username: &'a str,
    ) -> StoreFuture<'a, Option<UserCredentials>>;

    /// Stores a token hash.
    fn insert_token<'a>(
        &'a self,
        token_hash: &'a str,
        user_id: UserId,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreFuture<'a, ()>;

    /// Resolves a token hash.
    fn token<'a>(&'a self, token_hash: &'a str) -> StoreFuture<'a, Option<TokenRecord>>;

    /// Marks a token revoked; returns whether a live (unrevoked, unexpired) token was revoked.
    fn revoke_token<'a>(&'a self, token_hash: &'a str, now_ms: i64) -> StoreFuture<'a, bool>;

    /// Every room with its members, to seed the hub at startup.
    fn load_rooms(&self) -> StoreFuture<'_, Vec<RoomRecord>>;

    /// Creates a room with `creator` as its first member; `AlreadyExists` when taken.
    fn create_room<'a>(
        &'a self,
        name: &'a RoomName,
        topic: &'a str,
        epoch: &'a str,
        creator: UserId,
        now_ms: i64,
    ) -> StoreFuture<'a, RoomId>;

    /// Adds a member (idempotent). Returns the room's membership version
    /// after the call: bumped by one, in the same statement, when the user
    /// was not a member; unchanged otherwise. A new member's read marker
    /// moves to the room's head (§11.3: what was said before one joined is
    /// not unread).
    fn add_member(&self, room: RoomId, user: UserId, now_ms: i64) -> StoreFuture<'_, u64>;

    /// Removes a member (idempotent); returns the membership version as
    /// [`Store::add_member`] does.
    fn remove_member(&self, room: RoomId, user: UserId) -> StoreFuture<'_, u64>;

    /// Names of the rooms `user` is a member of, sorted.
    fn rooms_of_user(&self, user: UserId) -> StoreFuture<'_, Vec<RoomName>>;

    /// One room with its members, as [`Store::load_rooms`] reads them.
    fn room_record<'a>(&'a self, name: &'a RoomName) -> StoreFuture<'a, Option<RoomRecord>>;

    /// Every room's head and membership version, by id: what a cluster node
    /// polls to repair what NATS lost.
    fn room_versions(&self) -> StoreFuture<'_, Vec<RoomVersion>>;

    /// Appends messages in one atomic, durable transaction, in order. Repeats
    /// are detected against stored messages and earlier ones in the batch.
    fn append_batch<'a>(&'a self, batch: &'a [NewMessage]) -> StoreFuture<'a, Vec<AppendOutcome>>;

    /// Reads a page of history (§9), with the reaction counts of its
    /// messages as `viewer` sees them, in one snapshot.
    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        range: HistoryRange,
        limit: u32,
        viewer: UserId,
    ) -> StoreFuture<'a, HistorySlice>;

    /// Messages with `after < seq <= up_to`, ascending, at most `limit`.
    fn messages_between<'a>(
        &'a self,
        room: &'a RoomName,
        after: u64,
        up_to: u64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;

    /// The message stored under an idempotency key (§8.5), if any: lets a
    /// repeat be answered without a rate-limit token (§12.5).
    fn sent_message<'a>(
        &'a self,
        sender: UserId,
        client_msg_id: &'a ClientMsgId,
    ) -> StoreFuture<'a, Option<StoredMessage>>;

    /// The user's read state (§11.3) in every room they are a member of,
    /// sorted by room name: the marker (0 without a row), and above it the
    /// messages not sent by the user and the mentions of `username`, each
    /// count at most `confab_protocol::read::COUNT_CAP`, all as of
    /// `counted_seq` (the head read in the same snapshot).
    fn read_states<'a>(
        &'a self,
        user: UserId,
        username: &'a Username,
    ) -> StoreFuture<'a, Vec<wire::ReadState>>;

    /// Moves the user's marker in `room` to
    /// `confab_protocol::read::marker_after(current, seq, head)`: never
    /// back, never past the head. Returns the read state after the call,
    /// counted as [`Store::read_states`] does, and whether the marker moved.
    /// `NotFound` for an unknown room.
    fn mark_read<'a>(
        &'a self,
        room: RoomId,
        user: UserId,
        username: &'a Username,
        seq: u64,
    ) -> StoreFuture<'a, (wire::ReadState, bool)>;

    /// Flushes and closes; called once, after the writer stopped.
    fn close(&self) -> StoreFuture<'_, ()>;
}
