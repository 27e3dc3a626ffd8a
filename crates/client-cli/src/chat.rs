//! The chat view: which room is current and what is on screen.
//!
//! [`Chat`] holds no protocol logic: ordering, dedupe, gap filling, the
//! outbox, resends and reconnects all belong to the session. It decides
//! what the user sees, and turns the user's lines into [`Action`]s on the
//! session. It does no I/O and reads no clock: it consumes session events
//! and input lines, and returns [`Out`]s for the caller to carry out, so it
//! is tested with plain values.
//!
//! The user's own messages are shown as the session reports them: a line
//! the server stores quickly appears once, plainly (`SessionEvent::Delivered`);
//! one that waits (offline, slow server) appears marked `(pending)` at
//! `SessionEvent::SendPending`, then a `✓ delivered` line with the server's
//! time. The session also marks the echo of a send from this client
//! (`sent_here`), which is therefore never shown a second time. The chat
//! keeps no list of sends of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use confab_protocol::names::{MessageId, ReactionKey};
use confab_protocol::read::ReadCounts;
use confab_protocol::relation::{RelationKind, ValidRelation};
use confab_protocol::session::{
    ClientSession, CommandError, ConnectionState, OfflineReason, OutboxEntry, RequestKind,
    SessionEvent,
};
use confab_protocol::timeline::{Change, Shown, Timeline};
use confab_protocol::wire::{
    self, ErrorCode, RoomInfo, presence::Kind as PresenceKind,
    room_list_update::Kind as UpdateKind, room_resume::Status as ResumeStatus,
};

use crate::commands::{self, DEFAULT_HISTORY, Input};
use crate::render::{self, Activity, Mark, RoomMark};
use crate::style::Style;

/// Something for the caller to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Print these lines above the prompt.
    Print(String),
    /// Run this on the session.
    Do(Action),
    /// The outbox changed: write it to disk.
    SaveOutbox,
    /// The user entered this room: remember it, to reopen it after a restart.
    SaveLastRoom(String),
    /// Exit.
    Quit,
    /// Log out (HTTP), forget the saved token, exit.
    Logout,
    /// The saved token was refused: forget it and show the login screen.
    LoginAgain,
    /// Ring the terminal's bell (a mention in a room not on screen).
    Bell,
}

/// A command on the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue a message in the outbox.
    Send {
        /// Room.
        room: String,
        /// Text.
        text: String,
        /// `/me`.
        action: bool,
        /// Idempotency key (§8.5), fixed when the user hit enter.
        client_msg_id: String,
    },
    /// Queue an edit, deletion, reply or reaction (§8.6) in the outbox.
    Relate {
        /// Room.
        room: String,
        /// What it does to which message.
        relation: ValidRelation,
        /// An edit's new text or a reply's answer; empty otherwise.
        text: String,
        /// Idempotency key (§8.5), fixed when the user hit enter.
        client_msg_id: String,
    },
    /// JoinRoom.
    Join(String),
    /// CreateRoom.
    Create {
        /// Name.
        name: String,
        /// Topic.
        topic: String,
    },
    /// LeaveRoom.
    Leave(String),
    /// ListMembers.
    Members(String),
    /// FetchHistory of the newest `limit` messages.
    History {
        /// Room.
        room: String,
        /// Page size.
        limit: u32,
    },
    /// Open the view of a room: its newest `limit` messages, then its
    /// live ones (`ClientSession::open_view`).
    OpenView {
        /// Room.
        room: String,
        /// Page size.
        limit: u32,
    },
    /// ListRooms with subscribe (§7.1).
    ListRooms,
    /// SetTyping.
    Typing {
        /// Room.
        room: String,
        /// Started or stopped.
        active: bool,
    },
    /// Skip the rest of the reconnect backoff (§14.2).
    ReconnectNow,
    /// The user has seen `room` up to `seq` (§11.3).
    MarkRead {
        /// Room.
        room: String,
        /// Highest seq shown.
        seq: u64,
    },
}

/// What an action returned that the caller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to report.
    Done,
    /// A send was queued; the outbox as it is now, to be written before
    /// the message is shown as pending.
    Queued(Vec<OutboxEntry>),
    /// A room was marked read: its counts as the session has them now.
    /// The session's `ReadState` event says the same, but it reaches the
    /// chat through the driver's event channel, after the editor may have
    /// taken the next line; a `/rooms` typed at once must already agree.
    Read {
        /// The room.
        room: String,
        /// Its counts after the mark.
        counts: ReadCounts,
    },
}

impl Action {
    /// Runs the action on the session.
    pub fn apply(self, session: &mut ClientSession, now: Instant) -> Result<Applied, CommandError> {
        match self {
            Action::Send {
                room,
                text,
                action,
                client_msg_id,
            } => {
                let id = confab_protocol::names::ClientMsgId::parse(client_msg_id)?;
                session.send_message(now, &room, &text, action, id)?;
                return Ok(Applied::Queued(session.outbox().cloned().collect()));
            }
            Action::Relate {
                room,
                relation,
                text,
                client_msg_id,
            } => {
                let id = confab_protocol::names::ClientMsgId::parse(client_msg_id)?;
                session.send_relation(now, &room, &relation, &text, id)?;
                return Ok(Applied::Queued(session.outbox().cloned().collect()));
            }
            Action::Join(room) => session.join_room(now, &room).map(drop)?,
            Action::Create { name, topic } => session.create_room(now, &name, &topic).map(drop)?,
            Action::Leave(room) => session.leave_room(now, &room).map(drop)?,
            Action::Members(room) => session.list_members(now, &room).map(drop)?,
            Action::History { room, limit } => {
                session.fetch_history(now, &room, None, limit).map(drop)?
            }
            Action::OpenView { room, limit } => session.open_view(now, &room, limit).map(drop)?,
            Action::ListRooms => session.list_rooms(now, true).map(drop)?,
            Action::Typing { room, active } => session.set_typing(&room, active).map(drop)?,
            Action::MarkRead { room, seq } => {
                session.mark_read(now, &room, seq)?;
                if let Some(read) = session.read_state(&room) {
                    return Ok(Applied::Read {
                        room,
                        counts: read.counts(),
                    });
                }
            }
            Action::ReconnectNow => session.reconnect_now(),
        }
        Ok(Applied::Done)
    }
}

/// What a request the user is waiting for is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Busy {
    Join(String),
    Create(String),
    Leave(String),
    Members(String),
    /// Loading the view of a room (its recent history) after join or switch.
    View(String),
    History(String),
}

/// Messages kept per room for `/edit`, `/reply` and friends to name.
const KEPT_PER_ROOM: usize = 2000;

/// Whether a message is a line of its own (a plain message or a reply),
/// not an edit, deletion or reaction of another (§8.6.6).
fn shows_as_line(message: &wire::Message) -> bool {
    confab_protocol::read::counts_as_message(message)
}

/// The chat view. See the module docs.
#[derive(Debug)]
pub struct Chat {
    style: Style,
    /// Formats a server timestamp (ms since the Unix epoch) as a time of day.
    clock: fn(i64) -> String,
    /// The calendar day of a timestamp, as a divider names it.
    day: fn(i64) -> String,
    /// The day of the last message printed, so a change of day gets a
    /// divider line (irssi's "Day changed").
    last_day: Option<String>,
    /// The current wall time in ms since the Unix epoch.
    wall: fn() -> i64,
    server: String,
    me: String,
    state: ConnectionState,
    welcomed: bool,
    connect_failures: u32,
    current: Option<String>,
    joined: BTreeSet<String>,
    rooms: Vec<RoomInfo>,
    rooms_known: bool,
    show_rooms_when_listed: bool,
    /// The session's read state per room (§11.3), as its last
    /// `SessionEvent::ReadState` told it: the server's counts kept current.
    reads: BTreeMap<String, ReadCounts>,
    /// The room to open once connected: the one the user was in before a
    /// restart.
    reopen: Option<String>,
    /// The marker of the room being entered, to mark where its unread
    /// messages start ("new since you left").
    entering_read_seq: Option<u64>,
    /// `/history N` requests in flight, oldest first (replies come in
    /// request order, §4.3), with their N.
    history_waiting: VecDeque<(String, u32)>,
    busy: Option<Busy>,
    /// Per room, its messages as they stand (§8.6.6): what `/edit`,
    /// `/delete`, `/reply` and `/react` look numbers up in, and what a
    /// relation's line shows. At most [`KEPT_PER_ROOM`] messages each.
    timelines: HashMap<String, Timeline>,
    typing_seen: HashMap<String, Instant>,
    my_typing: Option<(String, Instant)>,
    typing_ttl: Duration,
}

impl Chat {
    /// A chat view for `me` on `server`, before the first connection.
    pub fn new(
        style: Style,
        server: &str,
        me: &str,
        clock: fn(i64) -> String,
        day: fn(i64) -> String,
        wall: fn() -> i64,
    ) -> Self {
        Self {
            style,
            clock,
            day,
            last_day: None,
            wall,
            server: server.to_owned(),
            me: me.to_owned(),
            state: ConnectionState::Connecting,
            welcomed: false,
            connect_failures: 0,
            current: None,
            joined: BTreeSet::new(),
            rooms: Vec::new(),
            rooms_known: false,
            show_rooms_when_listed: true,
            reads: BTreeMap::new(),
            reopen: None,
            entering_read_seq: None,
            history_waiting: VecDeque::new(),
            busy: None,
            timelines: HashMap::new(),
            typing_seen: HashMap::new(),
            my_typing: None,
            typing_ttl: Duration::from_millis(6000),
        }
    }

    // ----- what the prompt and the completer read --------------------------

    /// The connection state.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// The current room.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Every room name known, for completion.
    pub fn room_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.rooms.iter().map(|r| r.name.clone()).collect();
        names.extend(self.joined.iter().cloned());
        names.into_iter().collect()
    }

    /// Rooms the user has joined, for completion.
    pub fn joined_rooms(&self) -> Vec<String> {
        self.joined.iter().cloned().collect()
    }

    /// Joined rooms other than the current one with unread messages, for
    /// the status line: those with mentions first, then by name.
    pub fn activity(&self) -> Vec<Activity> {
        let mut rooms: Vec<Activity> = self
            .joined
            .iter()
            .filter(|room| self.current.as_deref() != Some(room.as_str()))
            .filter_map(|room| {
                let read = self.reads.get(room)?;
                (read.unread > 0).then(|| Activity {
                    room: room.clone(),
                    unread: read.unread,
                    mentions: read.mentions,
                })
            })
            .collect();
        rooms.sort_by(|a, b| {
            (b.mentions > 0)
                .cmp(&(a.mentions > 0))
                .then(a.room.cmp(&b.room))
        });
        rooms
    }

    /// Who is typing in the current room at `now`, by name.
    pub fn typing(&self, now: Instant) -> Vec<String> {
        let mut names: Vec<String> = self
            .typing_seen
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// When the status line changes by itself: a typing indicator runs out,
    /// or the reconnect countdown ticks.
    pub fn status_deadline(&self, now: Instant) -> Option<Instant> {
        let typing = self
            .typing_seen
            .values()
            .copied()
            .filter(|until| *until > now)
            .min();
        let countdown = match self.state {
            ConnectionState::Reconnecting { at, .. } if at > now => {
                let left = at - now;
                // The next whole second of the countdown.
                let fraction = Duration::from_nanos(u64::from(left.subsec_nanos()));
                Some(
                    now + if fraction.is_zero() {
                        Duration::from_secs(1)
                    } else {
                        fraction
                    },
                )
            }
            _ => None,
        };
        [typing, countdown].into_iter().flatten().min()
    }

    /// Whether the next line may be read: no request the user waits for is
    /// outstanding (a `/join` shows the room before the next prompt).
    pub fn input_ready(&self) -> bool {
        self.busy.is_none()
    }

    /// Whether the first connection attempt has had an outcome: connected,
    /// or waiting to retry, or stopped.
    pub fn settled(&self) -> bool {
        self.welcomed
            || matches!(
                self.state,
                ConnectionState::Reconnecting { .. } | ConnectionState::Offline(_)
            )
    }

    // ----- inputs ----------------------------------------------------------

    /// Messages left in the outbox by an earlier run: said here; each is
    /// shown as pending when the session reports it (`SendPending`).
    pub fn restore(&mut self, entries: &[OutboxEntry]) -> Vec<Out> {
        if entries.is_empty() {
            return Vec::new();
        }
        vec![self.notice(&format!(
            "{} unsent message{} from last time; {} sent when connected:",
            entries.len(),
            if entries.len() == 1 { "" } else { "s" },
            if entries.len() == 1 {
                "it is"
            } else {
                "they are"
            }
        ))]
    }

    /// A line the user entered.
    pub fn handle_line(&mut self, line: &str) -> Vec<Out> {
        match commands::parse(line) {
            Ok(None) => Vec::new(),
            Ok(Some(input)) => self.handle_input(input),
            Err(sentence) => vec![self.error(&sentence)],
        }
    }

    fn handle_input(&mut self, input: Input) -> Vec<Out> {
        match input {
            Input::Say(text) => self.say(text, false),
            Input::Me(text) => self.say(text, true),
            Input::Edit { target, text } => self.relate_mine(target, RelationKind::Edit, text),
            Input::Delete(target) => self.relate_mine(target, RelationKind::Redact, String::new()),
            Input::Reply { target, text } => self.reply(target, text),
            Input::React { target, key } => self.react(target, &key),
            Input::Join(room) => {
                self.busy = Some(Busy::Join(room.clone()));
                vec![Out::Do(Action::Join(room))]
            }
            Input::Create { name, topic } => {
                self.busy = Some(Busy::Create(name.clone()));
                vec![Out::Do(Action::Create { name, topic })]
            }
            Input::Switch(room) => self.switch(room),
            Input::Leave(room) => {
                let Some(room) = room.or_else(|| self.current.clone()) else {
                    return vec![self.error("you are in no room; /leave NAME names one")];
                };
                self.busy = Some(Busy::Leave(room.clone()));
                vec![Out::Do(Action::Leave(room))]
            }
            Input::Who => {
                let Some(room) = self.current.clone() else {
                    return vec![self.no_room()];
                };
                self.busy = Some(Busy::Members(room.clone()));
                vec![Out::Do(Action::Members(room))]
            }
            Input::History(limit) => {
                let Some(room) = self.current.clone() else {
                    return vec![self.no_room()];
                };
                self.busy = Some(Busy::History(room.clone()));
                self.history_waiting.push_back((room.clone(), limit));
                vec![Out::Do(Action::History { room, limit })]
            }
            Input::Rooms => self.show_rooms(),
            Input::Help => vec![Out::Print(format!(
                "{}\n{}",
                self.style
                    .bold("Commands (Tab completes commands and room names):"),
                commands::help_text().trim_end()
            ))],
            Input::Logout => vec![Out::Logout],
            Input::Quit => vec![Out::Quit],
            Input::Reconnect => match self.state {
                ConnectionState::Reconnecting { .. } => {
                    vec![
                        self.notice("reconnecting now"),
                        Out::Do(Action::ReconnectNow),
                    ]
                }
                ConnectionState::Online => vec![self.notice("already connected")],
                _ => vec![self.notice("already connecting; wait for it")],
            },
        }
    }

    fn say(&mut self, text: String, action: bool) -> Vec<Out> {
        let Some(room) = self.current.clone() else {
            return vec![self.no_room()];
        };
        // A message ends typing on the server (§11.2).
        self.my_typing = None;
        let client_msg_id = uuid::Uuid::now_v7().to_string();
        vec![Out::Do(Action::Send {
            room,
            text: text.replace("\r\n", "\n"),
            action,
            client_msg_id,
        })]
    }

    /// `/edit` or `/delete`: of the user's message `target`, or of their
    /// last one in the room.
    fn relate_mine(&mut self, target: Option<u64>, kind: RelationKind, text: String) -> Vec<Out> {
        let Some(room) = self.current.clone() else {
            return vec![self.no_room()];
        };
        let verb = if kind == RelationKind::Edit {
            "edit"
        } else {
            "delete"
        };
        let found = match target {
            Some(seq) => self.shown(&room, seq).and_then(|shown| {
                if shown.message.sender == self.me {
                    Ok(shown)
                } else {
                    Err(format!(
                        "#{seq} is {}'s message; you can only {verb} your own",
                        shown.message.sender
                    ))
                }
            }),
            None => self
                .timelines
                .get(&room)
                .and_then(|t| {
                    t.iter()
                        .rev()
                        .find(|s| s.message.sender == self.me && !s.deleted)
                })
                .ok_or_else(|| {
                    format!(
                        "no message of yours in #{room} on screen to {verb}; /history shows older ones, /{verb} #N names one"
                    )
                }),
        };
        match found {
            Ok(shown) => {
                let id = shown.message.message_id.clone();
                self.relation_action(room, &id, kind, text)
            }
            Err(e) => vec![self.error(&e)],
        }
    }

    /// `/reply #N TEXT`.
    fn reply(&mut self, target: u64, text: String) -> Vec<Out> {
        let Some(room) = self.current.clone() else {
            return vec![self.no_room()];
        };
        match self.shown(&room, target) {
            Ok(shown) => {
                let id = shown.message.message_id.clone();
                self.relation_action(room, &id, RelationKind::Reply, text)
            }
            Err(e) => vec![self.error(&e)],
        }
    }

    /// `/react [#N] EMOJI`: adds it, or takes the user's own back (a
    /// second click on a reaction, as in Slack and Element).
    fn react(&mut self, target: Option<u64>, key: &str) -> Vec<Out> {
        let Some(room) = self.current.clone() else {
            return vec![self.no_room()];
        };
        let key = match ReactionKey::parse(key) {
            Ok(key) => key,
            Err(e) => return vec![self.error(&e.to_string())],
        };
        let found = match target {
            Some(seq) => self.shown(&room, seq),
            None => self
                .timelines
                .get(&room)
                .and_then(|t| t.iter().rev().find(|s| !s.deleted))
                .ok_or_else(|| format!("no message in #{room} on screen to react to")),
        };
        match found {
            Ok(shown) => {
                let mine = shown
                    .reactions(&self.me)
                    .iter()
                    .any(|(k, _, mine)| *k == key.as_str() && *mine);
                let id = shown.message.message_id.clone();
                let kind = RelationKind::React { key, remove: mine };
                self.relation_action(room, &id, kind, String::new())
            }
            Err(e) => vec![self.error(&e)],
        }
    }

    /// The message `seq` of `room` as it stands, if it is on screen and not
    /// deleted; else why not, as a sentence.
    fn shown(&self, room: &str, seq: u64) -> Result<&Shown, String> {
        match self.timelines.get(room).and_then(|t| t.get(seq)) {
            Some(shown) if shown.deleted => Err(format!("#{seq} was deleted")),
            Some(shown) => Ok(shown),
            None => Err(format!(
                "no message #{seq} in #{room} on screen (numbers are those before each message; /history shows older ones)"
            )),
        }
    }

    fn relation_action(
        &mut self,
        room: String,
        message_id: &str,
        kind: RelationKind,
        text: String,
    ) -> Vec<Out> {
        let target = match MessageId::parse(message_id) {
            Ok(id) => id,
            Err(e) => return vec![self.error(&e.to_string())],
        };
        self.my_typing = None;
        vec![Out::Do(Action::Relate {
            room,
            relation: ValidRelation { target, kind },
            text: text.replace("\r\n", "\n"),
            client_msg_id: uuid::Uuid::now_v7().to_string(),
        })]
    }

    /// What a send is, in words, for its pending, delivered and failed
    /// lines: its text, or for a relation what it does to which message.
    fn describe(&self, entry: &OutboxEntry) -> String {
        use confab_protocol::wire::relation::Kind;
        let Some(relation) = &entry.relation else {
            return entry.text.clone();
        };
        let target = self
            .timelines
            .get(&entry.room)
            .and_then(|t| t.by_message_id(&relation.target_id))
            .map_or("a message".to_owned(), |s| format!("#{}", s.seq()));
        match &relation.kind {
            Some(Kind::Edit(_)) => format!("edit {target}: {}", entry.text),
            Some(Kind::Redact(_)) => format!("delete {target}"),
            Some(Kind::Reply(_)) => format!("reply to {target}: {}", entry.text),
            Some(Kind::React(r)) if r.remove => format!("take back {} from {target}", r.key),
            Some(Kind::React(r)) => format!("react {} to {target}", r.key),
            None => entry.text.clone(),
        }
    }

    /// Records a message of `room` in its timeline; what that changed.
    fn remember(&mut self, message: &wire::Message) -> Change {
        let timeline = self.timelines.entry(message.room.clone()).or_default();
        let change = timeline.apply(message.clone());
        timeline.keep_last(KEPT_PER_ROOM);
        change
    }

    /// The line a live relation adds (§8.6.6): a terminal cannot redraw an
    /// old line, so an edit shows the message again as it now stands, a
    /// reaction its counts, a deletion says so.
    fn relation_line(&mut self, message: &wire::Message, change: Change) -> Vec<Out> {
        use confab_protocol::wire::relation::Kind;
        let Some(relation) = &message.relation else {
            return Vec::new();
        };
        let time = (self.clock)(message.server_ts_ms);
        let target = self
            .timelines
            .get(&message.room)
            .and_then(|t| t.get(relation.target_seq));
        let who = &message.sender;
        let n = relation.target_seq;
        let about = |shown: Option<&Shown>| {
            shown
                .filter(|s| !s.deleted)
                .map(|s| format!(" (\"{}\")", render::excerpt(&s.text, 30)))
                .unwrap_or_default()
        };
        let line = match &relation.kind {
            Some(Kind::Edit(_)) => match target {
                Some(shown) if change == Change::Updated(n) => {
                    Out::Print(render::shown_line(self.style, &time, shown, &self.me))
                }
                _ => self.notice(&format!("{who} edited #{n}: {}", message.text)),
            },
            Some(Kind::Redact(_)) => self.notice(&format!("{who} deleted #{n}")),
            Some(Kind::React(r)) => {
                let counts = target
                    .map(|s| render::reactions_text(s, &self.me))
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default();
                if r.remove {
                    self.notice(&format!("{who} took back {} from #{n}{counts}", r.key))
                } else {
                    self.notice(&format!(
                        "{who} reacted {} to #{n}{}{counts}",
                        r.key,
                        about(target)
                    ))
                }
            }
            Some(Kind::Reply(_)) | None => return self.message_lines(message),
        };
        vec![line]
    }

    fn switch(&mut self, room: String) -> Vec<Out> {
        if !self.joined.contains(&room) {
            return vec![self.error(&format!(
                "you have not joined #{room}; /join {room} enters it"
            ))];
        }
        if self.current.as_deref() == Some(room.as_str()) {
            return vec![self.notice(&format!("already in #{room}"))];
        }
        let mut out = self.stop_typing();
        let unread = self.unread(&room);
        out.push(self.notice(&format!("now in #{room}")));
        out.extend(self.enter_view(&room, unread.clamp(5, 100)));
        out
    }

    /// Makes `room` current and asks for its newest `limit` messages.
    fn enter_view(&mut self, room: &str, limit: u32) -> Vec<Out> {
        self.current = Some(room.to_owned());
        self.entering_read_seq = self
            .reads
            .get(room)
            .filter(|read| read.unread > 0)
            .map(|read| read.read_seq);
        self.typing_seen.clear();
        self.last_day = None;
        self.busy = Some(Busy::View(room.to_owned()));
        vec![
            Out::SaveLastRoom(room.to_owned()),
            Out::Do(Action::OpenView {
                room: room.to_owned(),
                limit,
            }),
        ]
    }

    /// Unread messages of `room`, as the session counts them.
    fn unread(&self, room: &str) -> u32 {
        self.reads.get(room).map_or(0, |read| read.unread)
    }

    /// Opens `room` at the first connection, as it was before a restart,
    /// if the user is still in it.
    pub fn reopen(&mut self, room: Option<String>) {
        self.reopen = room;
    }

    fn show_rooms(&mut self) -> Vec<Out> {
        if !self.rooms_known {
            if self.state == ConnectionState::Online {
                self.show_rooms_when_listed = true;
                return vec![Out::Do(Action::ListRooms)];
            }
            return vec![self.notice("not connected yet; the room list shows once connected")];
        }
        let mut out = vec![Out::Print(self.rooms_table())];
        if self.state != ConnectionState::Online {
            out.push(self.notice("(as of the last connection)"));
        }
        out
    }

    fn rooms_table(&self) -> String {
        let marks: BTreeMap<String, RoomMark> = self
            .joined
            .iter()
            .map(|room| {
                (
                    room.clone(),
                    RoomMark {
                        joined: true,
                        unread: self.unread(room),
                        mentions: self.reads.get(room).map_or(0, |read| read.mentions),
                        current: self.current.as_deref() == Some(room.as_str()),
                    },
                )
            })
            .collect();
        render::rooms_table(self.style, &self.rooms, &marks, (self.wall)())
    }

    /// The edited line changed: `has_text` when it holds message text
    /// (not a command). Sends SetTyping, renewed every half TTL (§11.2).
    pub fn handle_editing(&mut self, has_text: bool, now: Instant) -> Vec<Out> {
        if self.state != ConnectionState::Online {
            return Vec::new();
        }
        let Some(room) = self.current.clone() else {
            return Vec::new();
        };
        if !has_text {
            return self.stop_typing();
        }
        let due = match &self.my_typing {
            Some((typing_room, at)) => *typing_room != room || now >= *at + self.typing_ttl / 2,
            None => true,
        };
        if !due {
            return Vec::new();
        }
        self.my_typing = Some((room.clone(), now));
        vec![Out::Do(Action::Typing { room, active: true })]
    }

    fn stop_typing(&mut self) -> Vec<Out> {
        match self.my_typing.take() {
            Some((room, _)) if self.state == ConnectionState::Online => {
                vec![Out::Do(Action::Typing {
                    room,
                    active: false,
                })]
            }
            _ => Vec::new(),
        }
    }

    /// An action ran on the session.
    pub fn handle_applied(
        &mut self,
        action: &Action,
        result: Result<Applied, CommandError>,
    ) -> Vec<Out> {
        match (action, result) {
            (_, Ok(Applied::Read { room, counts })) => {
                if self.joined.contains(&room) {
                    self.reads.insert(room, counts);
                }
                Vec::new()
            }
            (_, Ok(_)) => Vec::new(),
            (Action::Send { .. }, Err(err)) => vec![self.error(&format!("not sent: {err}"))],
            (Action::Typing { .. }, Err(_)) => Vec::new(),
            (action, Err(err)) => {
                self.busy = None;
                if let Action::History { room, .. } = action {
                    self.forget_history_request(room);
                }
                let what = describe(action);
                let text = match err {
                    CommandError::NotOnline => {
                        format!("{what}: not connected; try again when the prompt says online")
                    }
                    err => format!("{what}: {err}"),
                };
                vec![self.error(&text)]
            }
        }
    }

    /// The oldest outstanding history request of `room` ended without a page.
    fn forget_history_request(&mut self, room: &str) -> Vec<Out> {
        let Some(pos) = self.history_waiting.iter().position(|(r, _)| r == room) else {
            return Vec::new();
        };
        self.history_waiting.remove(pos);
        Vec::new()
    }

    /// A session event.
    pub fn handle_event(&mut self, event: SessionEvent, now: Instant) -> Vec<Out> {
        match event {
            SessionEvent::StateChanged(state) => self.on_state(state),
            SessionEvent::Welcome(welcome) => self.on_welcome(welcome),
            SessionEvent::Message {
                message, sent_here, ..
            } => self.on_message(message, sent_here),
            SessionEvent::SendPending(entry) => vec![self.pending_line(&entry)],
            SessionEvent::Delivered {
                entry,
                seq,
                server_ts_ms,
                was_pending,
            } => self.delivered(&entry, seq, server_ts_ms, was_pending),
            SessionEvent::SendFailed { entry, error } => {
                vec![self.error(&format!(
                    "not delivered to #{}: {} (\"{}\")",
                    entry.room,
                    error.message,
                    render::excerpt(&self.describe(&entry), 40)
                ))]
            }
            SessionEvent::OutboxChanged => vec![Out::SaveOutbox],
            SessionEvent::RoomList(rooms) => {
                self.rooms = rooms;
                sort_rooms(&mut self.rooms);
                self.rooms_known = true;
                if std::mem::take(&mut self.show_rooms_when_listed) {
                    vec![Out::Print(self.rooms_table())]
                } else {
                    Vec::new()
                }
            }
            SessionEvent::RoomListUpdate(update) => self.on_room_update(update),
            SessionEvent::Joined(info) => self.on_joined(info),
            SessionEvent::Left(room) => self.on_left(&room),
            SessionEvent::Members(list) => {
                if self.busy == Some(Busy::Members(list.room.clone())) {
                    self.busy = None;
                }
                vec![Out::Print(render::members_line(self.style, &list))]
            }
            SessionEvent::History(page) => self.on_history(page),
            SessionEvent::View {
                room,
                messages,
                has_more,
            } => self.on_view(room, &messages, has_more),
            SessionEvent::Resumed(outcome) => {
                let status =
                    ResumeStatus::try_from(outcome.status).unwrap_or(ResumeStatus::Unspecified);
                if status == ResumeStatus::NotAMember {
                    return self.lost_room(&outcome.room);
                }
                Vec::new()
            }
            SessionEvent::EpochChanged { room, .. } => {
                vec![self.notice(&format!(
                    "the server reset the history of #{room}; earlier messages of it belong to its old history"
                ))]
            }
            SessionEvent::GapSkipped { room, from, to } => vec![self.notice(&format!(
                "messages {from}-{to} of #{room} could not be fetched from the server and are skipped"
            ))],
            SessionEvent::Presence(presence) => self.on_presence(&presence),
            SessionEvent::Typing(typing) => self.on_typing(&typing, now),
            SessionEvent::ReadState { room, counts } => self.on_read_state(room, counts),
            SessionEvent::RequestFailed { kind, error, .. } => self.on_request_failed(kind, &error),
            SessionEvent::RequestTimedOut { kind, .. } => self.on_request_lost(
                kind,
                "the server did not answer in time; check the connection and try again",
            ),
            SessionEvent::RequestAborted { kind, .. } => self.on_request_lost(
                kind,
                "the connection dropped before the server answered; try again once online",
            ),
            SessionEvent::ServerError(error) => vec![self.error(&error.message)],
            // Pong answers nothing the user asked; a stale transport is the
            // driver's to drop, and the state change that follows is shown.
            _ => Vec::new(),
        }
    }

    /// Opening a connection failed; `reason` says why. Said once per streak.
    pub fn handle_connect_failed(&mut self, reason: &str) -> Vec<Out> {
        self.connect_failures += 1;
        if self.connect_failures == 1 {
            vec![self.error(reason)]
        } else {
            Vec::new()
        }
    }

    fn on_state(&mut self, state: ConnectionState) -> Vec<Out> {
        let previous = std::mem::replace(&mut self.state, state.clone());
        let mut out = Vec::new();
        match &state {
            ConnectionState::Connecting => {
                if !self.welcomed && matches!(previous, ConnectionState::Connecting) {
                    out.push(self.notice(&format!("connecting to {}…", self.server)));
                }
            }
            ConnectionState::Authenticating | ConnectionState::Online => {}
            ConnectionState::Reconnecting { .. } => {
                self.lose_connection();
                // Said once; the attempts and their countdown are the
                // status line's, not the scrollback's.
                if previous == ConnectionState::Online {
                    out.push(self.notice(
                        "connection lost; reconnecting. Messages you send meanwhile wait in the outbox",
                    ));
                }
            }
            ConnectionState::Offline(reason) => {
                self.lose_connection();
                out.push(self.error(&render::offline_sentence(*reason)));
                if matches!(
                    reason,
                    OfflineReason::AuthRejected(_) | OfflineReason::LoggedOut
                ) {
                    out.push(Out::LoginAgain);
                }
            }
        }
        out
    }

    fn lose_connection(&mut self) {
        self.my_typing = None;
        self.typing_seen.clear();
    }

    fn on_welcome(&mut self, welcome: wire::Welcome) -> Vec<Out> {
        self.me = welcome.username.clone();
        self.connect_failures = 0;
        if let Some(limits) = &welcome.limits
            && limits.typing_ttl_ms > 0
        {
            self.typing_ttl = Duration::from_millis(u64::from(limits.typing_ttl_ms));
        }
        self.joined = welcome.rooms.iter().map(|r| r.name.clone()).collect();
        for room in &welcome.rooms {
            upsert(&mut self.rooms, room.clone());
        }
        let mut out = Vec::new();
        if self.welcomed {
            out.push(self.notice("reconnected; catching up on what was missed"));
        } else {
            self.welcomed = true;
            out.push(self.notice(&format!(
                "connected to {} as {}. /help lists the commands",
                self.server, self.me
            )));
        }
        if let Some(current) = self.current.clone()
            && !self.joined.contains(&current)
        {
            out.extend(self.lost_room(&current));
        }
        if self.current.is_none()
            && let Some(room) = self.reopen.take()
            && self.joined.contains(&room)
        {
            out.push(self.notice(&format!("back in #{room}, where you were")));
            out.extend(self.enter_view(&room, self.unread(&room).clamp(5, 100)));
        }
        // The room-list subscription belongs to the connection (§7.1).
        out.push(Out::Do(Action::ListRooms));
        out
    }

    /// The session's counts of a room changed. A room not on screen shows
    /// them in the status line's activity list; a new mention there also
    /// rings the bell (irssi's and weechat's habit).
    fn on_read_state(&mut self, room: String, counts: ReadCounts) -> Vec<Out> {
        let before = self.reads.insert(room.clone(), counts).unwrap_or_default();
        if self.current.as_deref() == Some(room.as_str()) || !self.joined.contains(&room) {
            return Vec::new();
        }
        if counts.mentions > before.mentions {
            return vec![Out::Bell];
        }
        Vec::new()
    }

    fn on_message(&mut self, message: wire::Message, sent_here: bool) -> Vec<Out> {
        self.typing_seen.remove(&message.sender);
        let change = self.remember(&message);
        if sent_here && message.relation.is_none() {
            // Shown at its `Delivered`; only the marker moves past it.
            return self.mark_if_current(&message);
        }
        if self.current.as_deref() == Some(message.room.as_str()) {
            return self.show_live(message, change);
        }
        // Other rooms: the session counts them (SessionEvent::ReadState).
        Vec::new()
    }

    /// A live message of the room on screen: the session shows each once,
    /// after the view's page.
    fn show_live(&mut self, message: wire::Message, change: Change) -> Vec<Out> {
        let mark = Out::Do(Action::MarkRead {
            room: message.room.clone(),
            seq: message.seq,
        });
        let mut out = if message.relation.is_some() {
            self.relation_line(&message, change)
        } else {
            self.message_lines(&message)
        };
        out.push(mark);
        out
    }

    /// A message's line, after a divider when its day differs from the
    /// last one printed, or, first in a view, from today.
    fn message_lines(&mut self, message: &wire::Message) -> Vec<Out> {
        let day = (self.day)(message.server_ts_ms);
        let previous = self
            .last_day
            .replace(day.clone())
            .unwrap_or_else(|| (self.day)((self.wall)()));
        let time = (self.clock)(message.server_ts_ms);
        let line = match self
            .timelines
            .get(&message.room)
            .and_then(|t| t.get(message.seq))
        {
            Some(shown) => Out::Print(render::shown_line(self.style, &time, shown, &self.me)),
            None => Out::Print(render::message_line(self.style, &time, message)),
        };
        if previous == day {
            vec![line]
        } else {
            vec![self.notice(&format!("--- {day} ---")), line]
        }
    }

    /// One of the user's sends, not stored yet: shown marked pending, with
    /// its room when that is not the one on screen.
    fn pending_line(&self, entry: &OutboxEntry) -> Out {
        let line = render::chat_line(
            self.style,
            &(self.clock)((self.wall)()),
            None,
            &self.me,
            &self.describe(entry),
            entry.action,
            Mark::Pending,
        );
        if self.current.as_deref() == Some(entry.room.as_str()) {
            Out::Print(line)
        } else {
            Out::Print(format!(
                "{} {line}",
                self.style.dim(&format!("#{}", entry.room))
            ))
        }
    }

    /// One of the user's sends is stored, at `server_ts_ms`. Shown once:
    /// plainly when it was not shown pending and its room is on screen, else
    /// as a `✓ delivered` line naming it.
    fn delivered(
        &self,
        entry: &OutboxEntry,
        seq: u64,
        server_ts_ms: i64,
        was_pending: bool,
    ) -> Vec<Out> {
        let time = (self.clock)(server_ts_ms);
        if was_pending || self.current.as_deref() != Some(entry.room.as_str()) {
            return vec![Out::Print(render::delivered_line(
                self.style,
                &entry.room,
                &self.describe(entry),
                &time,
            ))];
        }
        if entry.relation.is_some() {
            // Its echo shows what it did (`relation_line`).
            return Vec::new();
        }
        vec![Out::Print(render::chat_line(
            self.style,
            &time,
            Some(seq),
            &self.me,
            &entry.text,
            entry.action,
            Mark::Delivered,
        ))]
    }

    /// Moves the read marker past a message of the room on screen.
    fn mark_if_current(&self, message: &wire::Message) -> Vec<Out> {
        if self.current.as_deref() != Some(message.room.as_str()) {
            return Vec::new();
        }
        vec![Out::Do(Action::MarkRead {
            room: message.room.clone(),
            seq: message.seq,
        })]
    }

    fn on_room_update(&mut self, update: wire::RoomListUpdate) -> Vec<Out> {
        let Some(room) = update.room else {
            return Vec::new();
        };
        match UpdateKind::try_from(update.kind).unwrap_or(UpdateKind::Unspecified) {
            UpdateKind::Added => {
                let name = room.name.clone();
                let topic = room.topic.clone();
                let ours =
                    self.busy == Some(Busy::Create(name.clone())) || self.joined.contains(&name);
                upsert(&mut self.rooms, room);
                if ours {
                    return Vec::new();
                }
                let topic = if topic.is_empty() {
                    String::new()
                } else {
                    format!(": {}", render::excerpt(&topic, 60))
                };
                vec![self.notice(&format!("new room #{name}{topic} (/join {name})"))]
            }
            UpdateKind::Changed => {
                upsert(&mut self.rooms, room);
                Vec::new()
            }
            UpdateKind::Removed => {
                self.rooms.retain(|r| r.name != room.name);
                Vec::new()
            }
            UpdateKind::Unspecified => Vec::new(),
        }
    }

    fn on_joined(&mut self, info: RoomInfo) -> Vec<Out> {
        let name = info.name.clone();
        let created = self.busy == Some(Busy::Create(name.clone()));
        let asked = created || self.busy == Some(Busy::Join(name.clone()));
        self.joined.insert(name.clone());
        upsert(&mut self.rooms, info.clone());
        if !asked {
            return Vec::new();
        }
        let mut out = self.stop_typing();
        let topic = if info.topic.is_empty() {
            String::new()
        } else {
            format!(" - {}", info.topic)
        };
        let verb = if created { "created" } else { "joined" };
        out.push(self.notice(&format!(
            "{verb} #{name}{topic} ({} member{}, {} online)",
            info.member_count,
            if info.member_count == 1 { "" } else { "s" },
            info.online_count
        )));
        out.extend(self.enter_view(&name, DEFAULT_HISTORY));
        out
    }

    fn on_left(&mut self, room: &str) -> Vec<Out> {
        if self.busy == Some(Busy::Leave(room.to_owned())) {
            self.busy = None;
        }
        self.joined.remove(room);
        self.reads.remove(room);
        let mut text = format!("left #{room}");
        if self.current.as_deref() == Some(room) {
            self.current = None;
            self.my_typing = None;
            if !self.joined.is_empty() {
                let others: Vec<&str> = self.joined.iter().map(String::as_str).collect();
                text.push_str(&format!("; /switch to one of: {}", others.join(", ")));
            } else {
                text.push_str("; /join or /create a room to chat");
            }
        }
        vec![self.notice(&text)]
    }

    /// The user is no longer a member of `room` (left from elsewhere).
    fn lost_room(&mut self, room: &str) -> Vec<Out> {
        self.joined.remove(room);
        self.reads.remove(room);
        if self.current.as_deref() == Some(room) {
            self.current = None;
            return vec![self.notice(&format!(
                "you are no longer a member of #{room}; /join {room} to return"
            ))];
        }
        Vec::new()
    }

    /// The view of a room opened (`ClientSession::open_view`): its newest
    /// messages and those that came meanwhile, each once, in order.
    fn on_view(&mut self, room: String, messages: &[wire::Message], has_more: bool) -> Vec<Out> {
        if self.busy == Some(Busy::View(room.clone())) {
            self.busy = None;
        }
        if self.current.as_deref() != Some(room.as_str()) {
            // Switched away before it came: nothing of it is on screen.
            return Vec::new();
        }
        let mut out = Vec::new();
        if has_more {
            out.push(self.notice(&format!(
                "recent messages of #{room} (/history N shows more):"
            )));
        } else if messages.is_empty() {
            out.push(self.notice(&format!("no messages in #{room} yet; say hello")));
        }
        let mut new_from = self.entering_read_seq.take();
        for message in messages {
            self.remember(message);
        }
        // Relations are folded into the messages they name (§8.6.6).
        for message in messages.iter().filter(|m| shows_as_line(m)) {
            if new_from.is_some_and(|read| message.seq > read && message.sender != self.me) {
                new_from = None;
                out.push(self.notice("--- new since you left ---"));
            }
            out.extend(self.message_lines(message));
        }
        if let Some(last) = messages.last() {
            out.push(Out::Do(Action::MarkRead {
                room,
                seq: last.seq,
            }));
        }
        out
    }

    /// The page of a `/history N`.
    fn on_history(&mut self, page: wire::HistoryPage) -> Vec<Out> {
        let Some(pos) = self
            .history_waiting
            .iter()
            .position(|(room, _)| *room == page.room)
        else {
            return Vec::new();
        };
        let Some((room, limit)) = self.history_waiting.remove(pos) else {
            return Vec::new();
        };
        if self.busy == Some(Busy::History(room.clone())) {
            self.busy = None;
        }
        let mut out = vec![self.notice(&format!(
            "last {} message{} of #{room}:",
            page.messages.len(),
            if page.messages.len() == 1 { "" } else { "s" }
        ))];
        self.last_day = None;
        for message in &page.messages {
            self.remember(message);
        }
        for message in page.messages.iter().filter(|m| shows_as_line(m)) {
            out.extend(self.message_lines(message));
        }
        // The live lines after it follow the view, not this page.
        self.last_day = None;
        let more = if page.has_more {
            format!(
                " (older ones exist; /history {} shows more)",
                limit.saturating_mul(2).min(100)
            )
        } else {
            String::new()
        };
        out.push(self.notice(&format!("end of history{more}")));
        out
    }

    fn on_presence(&mut self, presence: &wire::Presence) -> Vec<Out> {
        if presence.username == self.me || self.current.as_deref() != Some(presence.room.as_str()) {
            return Vec::new();
        }
        let user = &presence.username;
        let room = &presence.room;
        let text = match PresenceKind::try_from(presence.kind).unwrap_or(PresenceKind::Unspecified)
        {
            PresenceKind::Online => format!("{user} is online"),
            PresenceKind::Offline => {
                self.typing_seen.remove(user);
                format!("{user} went offline")
            }
            PresenceKind::Joined => format!("{user} joined #{room}"),
            PresenceKind::Left => {
                self.typing_seen.remove(user);
                format!("{user} left #{room}")
            }
            PresenceKind::Unspecified => return Vec::new(),
        };
        vec![self.notice(&text)]
    }

    fn on_typing(&mut self, typing: &wire::Typing, now: Instant) -> Vec<Out> {
        if typing.username == self.me || self.current.as_deref() != Some(typing.room.as_str()) {
            return Vec::new();
        }
        if !typing.active {
            self.typing_seen.remove(&typing.username);
            return Vec::new();
        }
        // Shown in the status line until it runs out or the user sends.
        let ttl = Duration::from_millis(u64::from(typing.ttl_ms.max(1)));
        self.typing_seen.insert(typing.username.clone(), now + ttl);
        Vec::new()
    }

    fn on_request_failed(&mut self, kind: RequestKind, error: &wire::Error) -> Vec<Out> {
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
        let mut out = self.settle(&kind);
        let text = match (&kind, code) {
            (RequestKind::JoinRoom(room), ErrorCode::RoomNotFound) => {
                format!("there is no room #{room}; /create {room} [TOPIC] starts it")
            }
            (RequestKind::CreateRoom(room), ErrorCode::RoomExists) => {
                format!("#{room} exists already; /join {room} enters it")
            }
            // Leaving a room one is not in: nothing to do, and no point
            // suggesting to join or create it.
            (RequestKind::LeaveRoom(room), ErrorCode::NotAMember | ErrorCode::RoomNotFound) => {
                if self.joined.is_empty() {
                    format!("you are not in #{room}, so there is nothing to leave")
                } else {
                    let mine: Vec<&str> = self.joined.iter().map(String::as_str).collect();
                    format!(
                        "you are not in #{room}, so there is nothing to leave; your rooms: {}",
                        mine.join(", ")
                    )
                }
            }
            (
                RequestKind::ListMembers(room)
                | RequestKind::History(room)
                | RequestKind::View(room),
                ErrorCode::NotAMember,
            ) => format!("you are not a member of #{room}; /join {room} first"),
            (RequestKind::GapFill(room), _) => format!(
                "could not fetch the messages #{room} missed: {}",
                error.message
            ),
            (kind, _) => format!("{}: {}", describe_kind(kind), error.message),
        };
        out.push(self.error(&text));
        out
    }

    fn on_request_lost(&mut self, kind: RequestKind, why: &str) -> Vec<Out> {
        let mut out = self.settle(&kind);
        match kind {
            // The session keeps the send in the outbox and resends it.
            RequestKind::Send(_) => out.push(self.notice(
                "the server has not acknowledged a message in time; it stays pending and is sent again with the same id",
            )),
            // Internal requests: the session retries them on the next connection.
            RequestKind::Auth | RequestKind::Ping | RequestKind::Resume | RequestKind::GapFill(_) => {}
            RequestKind::SetTyping(_) | RequestKind::ListRooms => {}
            kind => out.push(self.error(&format!("{}: {why}", describe_kind(&kind)))),
        }
        out
    }

    /// A request ended without its reply: stop waiting for it.
    fn settle(&mut self, kind: &RequestKind) -> Vec<Out> {
        let busy = match kind {
            RequestKind::JoinRoom(r) => Some(Busy::Join(r.clone())),
            RequestKind::CreateRoom(r) => Some(Busy::Create(r.clone())),
            RequestKind::LeaveRoom(r) => Some(Busy::Leave(r.clone())),
            RequestKind::ListMembers(r) => Some(Busy::Members(r.clone())),
            RequestKind::View(r) => Some(Busy::View(r.clone())),
            RequestKind::History(r) => {
                if self.busy == Some(Busy::View(r.clone())) {
                    self.busy = None;
                }
                Some(Busy::History(r.clone()))
            }
            _ => None,
        };
        if busy.is_some() && self.busy == busy {
            self.busy = None;
        }
        if let RequestKind::History(room) = kind {
            return self.forget_history_request(room);
        }
        Vec::new()
    }

    fn notice(&self, text: &str) -> Out {
        Out::Print(render::notice(self.style, text))
    }

    fn error(&self, text: &str) -> Out {
        Out::Print(render::error(self.style, text))
    }

    fn no_room(&self) -> Out {
        if self.joined.is_empty() {
            self.error("you are in no room; /join NAME or /create NAME first (/rooms lists them)")
        } else {
            // After a /leave, say, the user still has rooms to go back to.
            let mine: Vec<&str> = self.joined.iter().map(String::as_str).collect();
            self.error(&format!(
                "you are in no room now; /switch to one of: {} (or /join NAME)",
                mine.join(", ")
            ))
        }
    }
}

/// Keeps the server's order: most recent activity first, then by name (§7.1).
fn sort_rooms(rooms: &mut [RoomInfo]) {
    rooms.sort_by(|a, b| {
        b.last_activity_ms
            .cmp(&a.last_activity_ms)
            .then_with(|| a.name.cmp(&b.name))
    });
}

fn upsert(rooms: &mut Vec<RoomInfo>, info: RoomInfo) {
    match rooms.iter_mut().find(|r| r.name == info.name) {
        Some(slot) => *slot = info,
        None => rooms.push(info),
    }
    sort_rooms(rooms);
}

fn describe(action: &Action) -> String {
    match action {
        Action::Send { room, .. } => format!("sending to #{room}"),
        Action::Relate { relation, .. } => format!("/{}", relation.kind.name()),
        Action::Join(room) => format!("/join {room}"),
        Action::Create { name, .. } => format!("/create {name}"),
        Action::Leave(room) => format!("/leave {room}"),
        Action::Members(_) => "/who".to_owned(),
        Action::History { .. } => "fetching history".to_owned(),
        Action::OpenView { room, .. } => format!("opening #{room}"),
        Action::ListRooms => "/rooms".to_owned(),
        Action::Typing { .. } => "typing".to_owned(),
        Action::MarkRead { room, .. } => format!("marking #{room} read"),
        Action::ReconnectNow => "/reconnect".to_owned(),
    }
}

fn describe_kind(kind: &RequestKind) -> String {
    match kind {
        RequestKind::CreateRoom(room) => format!("/create {room}"),
        RequestKind::JoinRoom(room) => format!("/join {room}"),
        RequestKind::LeaveRoom(room) => format!("/leave {room}"),
        RequestKind::ListMembers(_) => "/who".to_owned(),
        RequestKind::History(room) => format!("history of #{room}"),
        RequestKind::View(room) => format!("opening #{room}"),
        RequestKind::ListRooms => "listing rooms".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "alice";

    fn chat() -> Chat {
        let mut chat = Chat::new(
            Style::plain(),
            "http://server",
            ME,
            |ms| format!("t{ms}"),
            |ms| format!("day {}", ms / 1000),
            || 5,
        );
        let now = Instant::now();
        chat.handle_event(SessionEvent::StateChanged(ConnectionState::Online), now);
        let welcome = wire::Welcome {
            username: ME.into(),
            rooms: vec![room("general"), room("ops")],
            ..Default::default()
        };
        chat.handle_event(SessionEvent::Welcome(welcome), now);
        chat.handle_event(
            SessionEvent::RoomList(vec![room("general"), room("ops")]),
            now,
        );
        chat
    }

    fn room(name: &str) -> RoomInfo {
        RoomInfo {
            name: name.into(),
            member_count: 2,
            online_count: 1,
            epoch: "e1".into(),
            ..Default::default()
        }
    }

    fn message(
        room: &str,
        seq: u64,
        sender: &str,
        text: &str,
        client_msg_id: &str,
    ) -> wire::Message {
        wire::Message {
            room: room.into(),
            seq,
            message_id: format!("m{seq}"),
            sender: sender.into(),
            client_msg_id: client_msg_id.into(),
            text: text.into(),
            kind: wire::MessageKind::Text as i32,
            server_ts_ms: 100 + seq as i64,
            redacted: false,
            relation: None,
        }
    }

    #[test]
    fn a_command_outside_a_room_names_the_rooms_to_go_back_to() {
        let mut chat = chat();
        let told = printed(&chat.handle_line("/who")).join("\n");
        assert!(
            told.contains("/switch to one of: general, ops") && !told.contains("yet"),
            "{told}"
        );
        let mut fresh = Chat::new(
            Style::plain(),
            "http://server",
            ME,
            |ms| format!("t{ms}"),
            |ms| format!("day {}", ms / 1000),
            || 5,
        );
        let told = printed(&fresh.handle_line("/who")).join("\n");
        assert!(told.contains("/join NAME or /create NAME first"), "{told}");
    }

    #[test]
    fn leaving_a_room_one_is_not_in_suggests_nothing_to_join_or_create() {
        let mut chat = chat();
        for code in [ErrorCode::RoomNotFound, ErrorCode::NotAMember] {
            let outs = chat.handle_event(
                SessionEvent::RequestFailed {
                    kind: RequestKind::LeaveRoom("nosuch".into()),
                    error: wire::Error {
                        code: code as i32,
                        message: "from the server".into(),
                        ..Default::default()
                    },
                    request_id: 7,
                },
                Instant::now(),
            );
            let told = printed(&outs).join("\n");
            assert!(
                told.contains("you are not in #nosuch, so there is nothing to leave"),
                "{told}"
            );
            assert!(
                !told.contains("/join nosuch") && !told.contains("create"),
                "{told}"
            );
        }
    }

    /// A relation of `kind` from `sender` naming message `target` (seq;
    /// its id is `m{target}`, as [`message`] makes them).
    fn related(
        seq: u64,
        sender: &str,
        text: &str,
        target: u64,
        kind: wire::relation::Kind,
    ) -> wire::Message {
        wire::Message {
            relation: Some(wire::Relation {
                target_id: format!("m{target}"),
                kind: Some(kind),
                target_seq: target,
            }),
            ..message("general", seq, sender, text, &format!("c{seq}"))
        }
    }

    /// The one relation the outs ask the session for: (target id, kind, text).
    fn relation_of(outs: &[Out]) -> (String, RelationKind, String) {
        match &actions(outs)[..] {
            [Action::Relate { relation, text, .. }] => (
                relation.target.as_str().to_owned(),
                relation.kind.clone(),
                text.clone(),
            ),
            other => panic!("one relation: {other:?} ({outs:?})"),
        }
    }

    fn live(chat: &mut Chat, message: wire::Message) -> Vec<String> {
        printed(&chat.handle_event(
            SessionEvent::Message {
                from_self: message.sender == ME,
                message,
                sent_here: false,
                epoch: "e1".into(),
            },
            Instant::now(),
        ))
    }

    /// §8.6.6 in a terminal: a view folds relations into the messages they
    /// name; live ones add a line saying what changed; /edit, /delete,
    /// /reply and /react name messages by their number.
    #[test]
    fn relations_show_as_they_stand_and_commands_name_messages_by_number() {
        use wire::relation::Kind;
        let mut chat = chat();
        let react = |key: &str, remove| {
            Kind::React(wire::React {
                key: key.into(),
                remove,
            })
        };
        let shown = enter(
            &mut chat,
            "general",
            vec![
                message("general", 1, "bob", "helo", "b1"),
                message("general", 2, ME, "my typo", "a1"),
                related(3, "bob", "hello", 1, Kind::Edit(wire::Edit {})),
                related(4, ME, "", 1, react("👍", false)),
                related(5, "carol", "", 1, react("👍", false)),
                related(
                    6,
                    "carol",
                    "welcome",
                    1,
                    Kind::Reply(wire::Reply {
                        quote: "hello".into(),
                    }),
                ),
            ],
        );
        assert_eq!(
            shown[shown.len() - 3..],
            [
                "t101 #1 <bob> hello (edited) [👍*2]",
                "t102 #2 <alice> my typo",
                "t106 #6 <carol> [re #1 \"hello\"] welcome",
            ]
        );
        // Live: an edit shows the message again, a reaction its counts, a
        // deletion says so.
        assert_eq!(
            live(
                &mut chat,
                related(7, "bob", "hello!", 1, Kind::Edit(wire::Edit {}))
            ),
            ["t107 #1 <bob> hello! (edited) [👍*2]"]
        );
        assert_eq!(
            live(&mut chat, related(8, "carol", "", 1, react("👍", true))),
            ["-- carol took back 👍 from #1: 👍*1"]
        );
        assert_eq!(
            live(&mut chat, related(9, "bob", "", 2, react("🎉", false))),
            ["-- bob reacted 🎉 to #2 (\"my typo\"): 🎉 1"]
        );
        // /edit without a number: my last message; /react without one: the
        // last message; a second /react of mine takes it back.
        assert_eq!(
            relation_of(&chat.handle_line("/edit my fix")),
            ("m2".into(), RelationKind::Edit, "my fix".into())
        );
        let (target, kind, _) = relation_of(&chat.handle_line("/react #1 👍"));
        assert_eq!(target, "m1");
        assert!(
            matches!(kind, RelationKind::React { remove: true, .. }),
            "{kind:?}"
        );
        let (_, kind, _) = relation_of(&chat.handle_line("/react #1 🚀"));
        assert!(
            matches!(kind, RelationKind::React { remove: false, .. }),
            "{kind:?}"
        );
        assert_eq!(
            relation_of(&chat.handle_line("/reply #1 thanks")),
            ("m1".into(), RelationKind::Reply, "thanks".into())
        );
        // Refused here, before the server: another's message, an unknown one.
        let refused = printed(&chat.handle_line("/edit #1 mine now"));
        assert!(refused[0].contains("bob's message"), "{refused:?}");
        let refused = printed(&chat.handle_line("/delete #99"));
        assert!(refused[0].contains("no message #99"), "{refused:?}");
        let refused = printed(&chat.handle_line("/react #1 thumbs"));
        assert!(actions(&chat.handle_line("/react #1 a b")).is_empty());
        assert_eq!(refused.len(), 0, "a word is a valid key: {refused:?}");
        // A deletion.
        assert_eq!(
            live(
                &mut chat,
                related(10, ME, "", 2, Kind::Redact(wire::Redact {}))
            ),
            ["-- alice deleted #2"]
        );
        let refused = printed(&chat.handle_line("/reply #2 what was it"));
        assert!(refused[0].contains("#2 was deleted"), "{refused:?}");
        assert!(
            printed(&chat.handle_line("/delete"))[0].contains("no message of yours"),
            "my only message is gone"
        );
    }

    fn printed(outs: &[Out]) -> Vec<String> {
        outs.iter()
            .filter_map(|out| match out {
                Out::Print(text) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn actions(outs: &[Out]) -> Vec<Action> {
        outs.iter()
            .filter_map(|out| match out {
                Out::Do(action) => Some(action.clone()),
                _ => None,
            })
            .collect()
    }

    /// Enters `name` by /join and answers its view's history with `page`.
    fn enter(chat: &mut Chat, name: &str, page: Vec<wire::Message>) -> Vec<String> {
        let now = Instant::now();
        chat.handle_line(&format!("/join {name}"));
        let mut outs = chat.handle_event(SessionEvent::Joined(room(name)), now);
        assert!(!chat.input_ready(), "the prompt waits for the view");
        outs.extend(chat.handle_event(
            SessionEvent::View {
                room: name.into(),
                messages: page,
                has_more: false,
            },
            now,
        ));
        assert!(chat.input_ready());
        printed(&outs)
    }

    /// Types `text`, lets the session queue it; returns its client_msg_id.
    fn say(chat: &mut Chat, text: &str) -> (OutboxEntry, Vec<String>) {
        let outs = chat.handle_line(text);
        let [
            Action::Send {
                client_msg_id,
                room,
                text,
                action,
            },
        ] = &actions(&outs)[..]
        else {
            panic!("one send: {outs:?}");
        };
        let entry = OutboxEntry {
            client_msg_id: client_msg_id.clone(),
            room: room.clone(),
            text: text.clone(),
            action: *action,
            relation: None,
        };
        let action = actions(&outs).remove(0);
        let shown = chat.handle_applied(&action, Ok(Applied::Queued(Vec::new())));
        (entry, printed(&shown))
    }

    fn delivered(entry: &OutboxEntry, seq: u64, was_pending: bool) -> SessionEvent {
        SessionEvent::Delivered {
            entry: entry.clone(),
            seq,
            server_ts_ms: 100 + seq as i64,
            was_pending,
        }
    }

    #[test]
    fn a_quickly_delivered_message_is_shown_once_and_its_echo_is_not() {
        let mut chat = chat();
        enter(&mut chat, "general", Vec::new());
        let now = Instant::now();
        let (entry, shown) = say(&mut chat, "hi");
        assert!(shown.is_empty(), "shown when the session reports it");
        let shown = printed(&chat.handle_event(delivered(&entry, 1, false), now));
        assert_eq!(shown, ["t101 #1 <alice> hi"]);
        let echo = SessionEvent::Message {
            message: message("general", 1, ME, "hi", &entry.client_msg_id),
            from_self: true,
            sent_here: true,
            epoch: "e1".into(),
        };
        let outs = chat.handle_event(echo, now);
        assert!(printed(&outs).is_empty());
        assert_eq!(
            actions(&outs),
            [Action::MarkRead {
                room: "general".into(),
                seq: 1
            }],
            "the marker still moves past it"
        );
    }

    #[test]
    fn the_same_users_message_from_another_device_is_shown() {
        let mut chat = chat();
        enter(&mut chat, "general", Vec::new());
        let echo = SessionEvent::Message {
            message: message("general", 1, ME, "from my phone", "other-device"),
            from_self: true,
            sent_here: false,
            epoch: "e1".into(),
        };
        assert_eq!(
            printed(&chat.handle_event(echo, Instant::now())),
            ["t101 #1 <alice> from my phone"]
        );
    }

    #[test]
    fn a_pending_send_is_marked_then_a_delivered_line_gives_the_servers_time() {
        let mut chat = chat();
        enter(&mut chat, "general", Vec::new());
        let now = Instant::now();
        let (entry, _) = say(&mut chat, "slow");
        let shown = printed(&chat.handle_event(SessionEvent::SendPending(entry.clone()), now));
        assert_eq!(shown, ["t5 <alice> slow (pending)"]);
        let shown = printed(&chat.handle_event(delivered(&entry, 1, true), now));
        assert_eq!(
            shown,
            ["✓ delivered #general: slow (stored t101)"],
            "the server's time"
        );
    }

    #[test]
    fn restored_sends_are_announced_and_shown_pending_with_their_room() {
        let mut chat = chat();
        let entry = OutboxEntry {
            client_msg_id: "old-1".into(),
            room: "general".into(),
            text: "from before".into(),
            action: false,
            relation: None,
        };
        let shown = printed(&chat.restore(std::slice::from_ref(&entry)));
        assert_eq!(
            shown,
            ["-- 1 unsent message from last time; it is sent when connected:"]
        );
        let now = Instant::now();
        let shown = printed(&chat.handle_event(SessionEvent::SendPending(entry.clone()), now));
        assert_eq!(shown, ["#general t5 <alice> from before (pending)"]);
        let shown = printed(&chat.handle_event(delivered(&entry, 9, true), now));
        assert_eq!(shown, ["✓ delivered #general: from before (stored t109)"]);
    }

    #[test]
    fn other_rooms_show_in_the_activity_list_and_a_mention_rings_once() {
        let mut chat = chat();
        enter(&mut chat, "general", Vec::new());
        let now = Instant::now();
        let counts = |read_seq, unread, mentions| SessionEvent::ReadState {
            room: "ops".into(),
            counts: ReadCounts {
                read_seq,
                unread,
                mentions,
            },
        };
        let activity = |unread, mentions| {
            vec![Activity {
                room: "ops".into(),
                unread,
                mentions,
            }]
        };
        for unread in 1..=2 {
            let outs = chat.handle_event(counts(0, unread, 0), now);
            assert!(outs.is_empty(), "not a line per message: {outs:?}");
            assert_eq!(chat.activity(), activity(unread, 0));
        }
        assert_eq!(chat.handle_event(counts(0, 3, 1), now), [Out::Bell]);
        assert_eq!(chat.activity(), activity(3, 1));
        assert!(
            chat.handle_event(counts(0, 3, 1), now).is_empty(),
            "the bell rings for a new mention only"
        );
        let table = printed(&chat.handle_line("/rooms")).join("\n");
        let ops = table.lines().find(|l| l.contains("#ops")).unwrap();
        assert_eq!(ops.split_whitespace().nth(4), Some("3@1"), "{table}");
        // Read on another device up to 1, then switched to here.
        chat.handle_event(counts(1, 3, 1), now);
        assert_eq!(chat.activity(), activity(3, 1));
        // Switching shows the room with at least the unread messages.
        let outs = chat.handle_line("/switch ops");
        assert_eq!(
            actions(&outs),
            [Action::OpenView {
                room: "ops".into(),
                limit: 5
            }]
        );
        assert!(
            chat.activity().is_empty(),
            "the room on screen is not listed"
        );
        // The view marks where the unread messages start, and that they are read.
        let view = SessionEvent::View {
            room: "ops".into(),
            messages: (1..=4)
                .map(|seq| message("ops", seq, if seq == 2 { ME } else { "bob" }, "x", ""))
                .collect(),
            has_more: false,
        };
        let outs = chat.handle_event(view, now);
        let lines = printed(&outs);
        let marker = lines
            .iter()
            .position(|l| l.contains("new since you left"))
            .expect("a marker line");
        assert!(
            lines[marker - 1].contains(ME) && lines[marker + 1].contains("bob"),
            "{lines:?}"
        );
        assert_eq!(
            actions(&outs),
            [Action::MarkRead {
                room: "ops".into(),
                seq: 4
            }]
        );
        // The mark's counts count from the moment it is applied, before
        // the session's ReadState event comes through the driver.
        let read = ReadCounts {
            read_seq: 4,
            unread: 0,
            mentions: 0,
        };
        let applied = Applied::Read {
            room: "ops".into(),
            counts: read,
        };
        assert!(
            chat.handle_applied(&actions(&outs)[0], Ok(applied))
                .is_empty()
        );
        let table = printed(&chat.handle_line("/rooms")).join("\n");
        let ops = table.lines().find(|l| l.contains("#ops")).unwrap();
        assert_eq!(ops.split_whitespace().nth(4), Some("0"), "{table}");
    }

    #[test]
    fn reconnect_skips_the_wait_and_says_why_not_when_there_is_none() {
        let mut chat = chat();
        let now = Instant::now();
        assert_eq!(
            printed(&chat.handle_line("/reconnect")),
            ["-- already connected"]
        );
        let waiting = ConnectionState::Reconnecting {
            at: now + Duration::from_secs(30),
            attempt: 3,
        };
        chat.handle_event(SessionEvent::StateChanged(waiting), now);
        let outs = chat.handle_line("/reconnect");
        assert_eq!(printed(&outs), ["-- reconnecting now"]);
        assert_eq!(actions(&outs), [Action::ReconnectNow]);
    }

    #[test]
    fn a_change_of_day_gets_a_divider_and_old_days_are_named() {
        let mut chat = chat();
        // The test clock's days are seconds; "today" (wall 5 ms) is day 0.
        let at = |seq, ms| wire::Message {
            server_ts_ms: ms,
            ..message("general", seq, "bob", "x", "")
        };
        let lines = enter(
            &mut chat,
            "general",
            vec![at(1, 1_000), at(2, 1_500), at(3, 2_000)],
        );
        let dividers: Vec<&String> = lines.iter().filter(|l| l.contains("--- day")).collect();
        assert_eq!(
            dividers,
            ["-- --- day 1 ---", "-- --- day 2 ---"],
            "{lines:?}"
        );
        // A live message on the same day as the last one needs no divider.
        let live = printed(&chat.handle_event(
            SessionEvent::Message {
                message: at(4, 2_500),
                from_self: false,
                sent_here: false,
                epoch: "e1".into(),
            },
            Instant::now(),
        ));
        assert!(!live.iter().any(|l| l.contains("--- day")), "{live:?}");
    }

    #[test]
    fn a_request_without_an_answer_ends_with_a_sentence_and_frees_the_prompt() {
        let mut chat = chat();
        let now = Instant::now();
        chat.handle_line("/join lounge");
        assert!(!chat.input_ready());
        let timed_out = SessionEvent::RequestTimedOut {
            request_id: 7,
            kind: RequestKind::JoinRoom("lounge".into()),
        };
        let shown = printed(&chat.handle_event(timed_out, now));
        assert_eq!(
            shown,
            [
                "!! /join lounge: the server did not answer in time; check the connection and try again"
            ]
        );
        assert!(chat.input_ready());
    }

    #[test]
    fn typing_is_sent_once_per_half_ttl_and_stopped_when_the_line_empties() {
        let mut chat = chat();
        enter(&mut chat, "general", Vec::new());
        let now = Instant::now();
        let start = Action::Typing {
            room: "general".into(),
            active: true,
        };
        assert_eq!(
            actions(&chat.handle_editing(true, now)),
            std::slice::from_ref(&start)
        );
        assert!(actions(&chat.handle_editing(true, now + Duration::from_secs(1))).is_empty());
        assert_eq!(
            actions(&chat.handle_editing(true, now + Duration::from_secs(3))),
            [start]
        );
        assert_eq!(
            actions(&chat.handle_editing(false, now + Duration::from_secs(4))),
            [Action::Typing {
                room: "general".into(),
                active: false
            }]
        );
        assert!(actions(&chat.handle_editing(false, now + Duration::from_secs(5))).is_empty());
    }

    #[test]
    fn others_typing_is_in_the_status_line_until_it_runs_out() {
        let mut chat = chat();
        enter(&mut chat, "general", Vec::new());
        let now = Instant::now();
        let typing = |active| {
            SessionEvent::Typing(wire::Typing {
                room: "general".into(),
                username: "bob".into(),
                active,
                ttl_ms: 6000,
            })
        };
        assert!(
            chat.handle_event(typing(true), now).is_empty(),
            "not a line"
        );
        assert_eq!(chat.typing(now), ["bob"]);
        assert_eq!(
            chat.status_deadline(now),
            Some(now + Duration::from_secs(6))
        );
        let later = now + Duration::from_secs(3);
        chat.handle_event(typing(true), later);
        assert_eq!(
            chat.status_deadline(later),
            Some(later + Duration::from_secs(6))
        );
        assert_eq!(
            chat.typing(later + Duration::from_secs(5)),
            ["bob"],
            "renewed"
        );
        assert!(
            chat.typing(later + Duration::from_secs(6)).is_empty(),
            "ran out"
        );
        chat.handle_event(typing(true), now);
        chat.handle_event(typing(false), now);
        assert!(chat.typing(now).is_empty(), "stopped");
        // Their message ends it too.
        chat.handle_event(typing(true), now);
        let said = SessionEvent::Message {
            message: message("general", 1, "bob", "done", "b1"),
            from_self: false,
            sent_here: false,
            epoch: "e1".into(),
        };
        chat.handle_event(said, now);
        assert!(chat.typing(now).is_empty());
        assert_eq!(chat.status_deadline(now), None);
    }

    #[test]
    fn reconnect_attempts_are_counted_down_in_the_status_line_not_the_chat() {
        let mut chat = chat();
        let now = Instant::now();
        let waiting = |attempt, secs| {
            SessionEvent::StateChanged(ConnectionState::Reconnecting {
                at: now + Duration::from_millis(secs),
                attempt,
            })
        };
        let lost = printed(&chat.handle_event(waiting(0, 2500), now));
        assert_eq!(lost.len(), 1);
        assert!(lost[0].contains("connection lost"), "{lost:?}");
        assert_eq!(
            chat.status_deadline(now),
            Some(now + Duration::from_millis(500)),
            "the countdown's next whole second"
        );
        chat.handle_event(SessionEvent::StateChanged(ConnectionState::Connecting), now);
        for attempt in 1..5 {
            assert!(printed(&chat.handle_event(waiting(attempt, 4000), now)).is_empty());
            chat.handle_event(SessionEvent::StateChanged(ConnectionState::Connecting), now);
        }
    }

    #[test]
    fn a_refused_saved_token_asks_for_a_new_login() {
        let mut chat = chat();
        let offline =
            ConnectionState::Offline(OfflineReason::AuthRejected(ErrorCode::TokenRevoked));
        let outs = chat.handle_event(SessionEvent::StateChanged(offline), Instant::now());
        assert!(outs.contains(&Out::LoginAgain), "{outs:?}");
    }
}
