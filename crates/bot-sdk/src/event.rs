//! What a bot sees: typed events built from the session's events.

pub use confab_protocol::read::ReadCounts;
use confab_protocol::session::{ConnectionState, RequestKind};
use confab_protocol::wire::{
    self, MessageKind, RoomInfo, RoomPosition, presence::Kind as WirePresenceKind,
};

/// Something that happened, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A room message: each is delivered once, in seq order per room,
    /// including after reconnects and restarts (with a position store).
    Message(Message),
    /// Someone came online, went offline, joined or left a room (§11.1).
    Presence {
        /// The room.
        room: String,
        /// Who.
        user: String,
        /// What happened.
        kind: PresenceKind,
    },
    /// The bot's read state in a room changed (§11.3): a message counted,
    /// the bot's user read on another connection, or the server's counts
    /// arrived after connecting.
    ReadState {
        /// The room.
        room: String,
        /// Marker, unread and mention counts now.
        counts: ReadCounts,
    },
    /// Someone started or stopped typing (§11.2).
    Typing {
        /// The room.
        room: String,
        /// Who.
        user: String,
        /// Started (true) or stopped.
        active: bool,
    },
    /// The bot joined or created a room.
    RoomJoined(RoomInfo),
    /// The bot left a room.
    RoomLeft(String),
    /// A room was added or changed (§7.1; needs a subscribed room list).
    RoomListChanged(wire::RoomListUpdate),
    /// The connection state changed (connecting, online, reconnecting, offline).
    Connection(ConnectionState),
    /// Something went wrong; the bot keeps running unless the state goes offline.
    Error(ErrorEvent),
}

/// What a presence push says (§11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceKind {
    /// The user's first connection opened.
    Online,
    /// The user's last connection closed.
    Offline,
    /// The user joined the room.
    Joined,
    /// The user left the room.
    Left,
}

/// Errors reported as events: nothing the bot author has to retry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorEvent {
    /// The server refused a message for good (not a rate limit: those are retried).
    SendFailed {
        /// Target room.
        room: String,
        /// The text that was not stored.
        text: String,
        /// The server's error.
        error: wire::Error,
    },
    /// A request (join, list, ...) was refused.
    RequestFailed {
        /// What it was.
        kind: RequestKind,
        /// The server's error.
        error: wire::Error,
    },
    /// A request got no answer in time, or was lost with the connection.
    RequestLost {
        /// What it was.
        kind: RequestKind,
    },
    /// An error frame answering nothing of ours.
    Server(wire::Error),
    /// A room's history was reset on the server (§10.5); the bot continues
    /// from its new head.
    EpochChanged {
        /// The room.
        room: String,
        /// Its head in the new epoch.
        head_seq: u64,
    },
    /// Messages the server could not supply were skipped (a server bug).
    GapSkipped {
        /// The room.
        room: String,
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// Opening a connection failed; the SDK retries with backoff.
    ConnectFailed(String),
    /// The connection ended; the SDK reconnects unless the state goes offline.
    Disconnected {
        /// The server's close code, if any (§13.2).
        close_code: Option<u16>,
        /// Why.
        reason: String,
    },
    /// The server sent something undecodable; it was skipped.
    InvalidFrame(String),
    /// Logging in again after the server rejected the token failed; the
    /// session stays offline.
    LoginFailed(String),
    /// Saving a position failed; a restart may handle a message again.
    PositionNotSaved(String),
    /// Saving the outbox failed; the sends are still queued, but those not
    /// yet acknowledged are lost if the bot dies before the next save.
    OutboxNotSaved(String),
    /// A handler returned an error (the bot goes on with the next event).
    Handler(String),
}

/// A room message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    message: wire::Message,
    from_self: bool,
    /// The epoch its seq counts in, as the session reported it.
    epoch: String,
}

impl Message {
    pub(crate) fn new(message: wire::Message, from_self: bool, epoch: String) -> Self {
        Self {
            message,
            from_self,
            epoch,
        }
    }

    /// Where a position store puts the room once this message is handled.
    pub(crate) fn position(&self) -> RoomPosition {
        RoomPosition {
            room: self.message.room.clone(),
            last_seq: self.message.seq,
            epoch: self.epoch.clone(),
        }
    }

    /// The room.
    pub fn room(&self) -> &str {
        &self.message.room
    }

    /// Position in the room (§8.2): 1, 2, 3, ... without gaps.
    pub fn seq(&self) -> u64 {
        self.message.seq
    }

    /// Who sent it.
    pub fn sender(&self) -> &str {
        &self.message.sender
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.message.text
    }

    /// Whether it is an action (`/me waves`).
    pub fn is_action(&self) -> bool {
        self.message.kind == MessageKind::Action as i32
    }

    /// Whether this bot's user sent it (from any connection). A bot that
    /// answers messages ignores these, so it never answers itself.
    pub fn from_self(&self) -> bool {
        self.from_self
    }

    /// Server time of storage, milliseconds since the Unix epoch.
    pub fn server_ts_ms(&self) -> i64 {
        self.message.server_ts_ms
    }

    /// The wire message, e.g. to serialize with its proto3 JSON mapping.
    pub fn wire(&self) -> &wire::Message {
        &self.message
    }

    /// Its globally unique id: what [`crate::Room::edit`], `delete`,
    /// `reply_to` and `react` name it by.
    pub fn message_id(&self) -> &str {
        &self.message.message_id
    }

    /// What it does to an earlier message (§8.6), if anything. A plain
    /// message (and one whose relation this version does not know) has none.
    pub fn relation(&self) -> Option<Relation> {
        use wire::relation::Kind;
        let rel = self.message.relation.as_ref()?;
        let target = Target {
            message_id: rel.target_id.clone(),
            seq: rel.target_seq,
        };
        Some(match rel.kind.as_ref()? {
            Kind::Edit(_) => Relation::Edit(target),
            Kind::Redact(_) => Relation::Delete(target),
            Kind::Reply(reply) => Relation::Reply {
                to: target,
                quote: reply.quote.clone(),
            },
            Kind::React(react) => Relation::React {
                to: target,
                key: react.key.clone(),
                removed: react.remove,
            },
        })
    }

    /// Whether it was deleted (§8.6.3): its text is then empty. Live
    /// messages are never deleted yet; history and replays can be.
    pub fn is_deleted(&self) -> bool {
        self.message.redacted
    }
}

/// The message a relation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its message_id.
    pub message_id: String,
    /// Its seq in the room.
    pub seq: u64,
}

/// What a message does to an earlier one (§8.6).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Relation {
    /// §8.6.2: its text replaces the target's.
    Edit(Target),
    /// §8.6.3: deletes the target.
    Delete(Target),
    /// §8.6.4: answers the target, quoting the start of its text.
    Reply {
        /// What it answers.
        to: Target,
        /// Up to 128 bytes of the target's text when the reply was stored.
        quote: String,
    },
    /// §8.6.5: the sender added (or removed) a reaction.
    React {
        /// The message reacted to.
        to: Target,
        /// The reaction, e.g. an emoji.
        key: String,
        /// Removed rather than added.
        removed: bool,
    },
}

pub(crate) fn presence_kind(kind: i32) -> Option<PresenceKind> {
    match WirePresenceKind::try_from(kind).ok()? {
        WirePresenceKind::Online => Some(PresenceKind::Online),
        WirePresenceKind::Offline => Some(PresenceKind::Offline),
        WirePresenceKind::Joined => Some(PresenceKind::Joined),
        WirePresenceKind::Left => Some(PresenceKind::Left),
        WirePresenceKind::Unspecified => None,
    }
}
