//! The bot client: log in, connect, join, then handle events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use confab_protocol::names::{MessageId, ReactionKey, ValidationError};
use confab_protocol::relation::{RelationKind, ValidRelation};
use confab_protocol::session::{
    ClientSession, CommandError, ConnectionState, OfflineReason, RequestKind, SessionConfig,
    SessionEvent,
};
use confab_protocol::wire::{self, ErrorCode, RoomInfo, RoomPosition, room_resume::Status};
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::driver::{self, DriverEvent, DriverHandle, DriverOptions};
use crate::error::{Error, HandlerError};
use crate::event::ReadCounts;
use crate::event::{ErrorEvent, Event, Message, presence_kind};
use crate::store::{OutboxStore, PositionStore};
use crate::url::ServerUrl;

/// Handles events; implemented by closures `Fn(Context, Event) -> impl Future`
/// and by [`Commands`](crate::Commands).
pub trait Handler: Send + Sync + 'static {
    /// Handles one event. Events are handled one at a time, in order; a
    /// message counts as handled (and its position is saved) when this returns.
    fn handle(&self, ctx: Context, event: Event) -> BoxFuture<'static, Result<(), HandlerError>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context, Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, ctx: Context, event: Event) -> BoxFuture<'static, Result<(), HandlerError>> {
        Box::pin(self(ctx, event))
    }
}

/// Username and password, kept to log in again when the token is rejected.
#[derive(Clone)]
struct Credentials {
    server: ServerUrl,
    username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never appears in logs (§15.4).
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Configures and connects a [`Client`]; see [`Client::builder`].
#[derive(Debug)]
pub struct ClientBuilder {
    server: ServerUrl,
    credentials: Option<Credentials>,
    token: Option<String>,
    register_if_missing: bool,
    join: Vec<String>,
    create_missing_rooms: bool,
    skip_backlog: bool,
    store: Option<Arc<dyn PositionStore>>,
    outbox: Option<Arc<dyn OutboxStore>>,
    client_name: String,
    connect_timeout: Duration,
    driver: DriverOptions,
}

impl ClientBuilder {
    /// Logs in with a username and password (§5.3). They are kept in
    /// memory: when the server rejects the token later (expired or revoked,
    /// close 4403) the client logs in again and carries on where it was.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            server: self.server.clone(),
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Uses a token from an earlier login. With [`credentials`](Self::credentials)
    /// as well, the token is tried first and the credentials log in again
    /// once it is rejected.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Registers the account first if logging in says the credentials are
    /// unknown (§5.2). Default: false.
    pub fn register_if_missing(mut self, yes: bool) -> Self {
        self.register_if_missing = yes;
        self
    }

    /// Rooms to join on start (in addition to those the account is a member of).
    pub fn join<I, S>(mut self, rooms: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.join.extend(rooms.into_iter().map(Into::into));
        self
    }

    /// Creates rooms of [`join`](Self::join) that do not exist yet. Default: false.
    pub fn create_missing_rooms(mut self, yes: bool) -> Self {
        self.create_missing_rooms = yes;
        self
    }

    /// Skips everything sent before this start: saved positions are not
    /// loaded and each room is followed from its current head. Default:
    /// false, the bot handles what it missed since its last handled message
    /// (rooms with no saved position start at their head either way).
    pub fn skip_backlog(mut self, yes: bool) -> Self {
        self.skip_backlog = yes;
        self
    }

    /// Where to save the position of each handled message, so a restarted
    /// bot neither misses nor re-handles messages. Without one, positions
    /// live as long as the client (enough across reconnects).
    pub fn position_store(mut self, store: impl PositionStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Where to keep the sends the server has not acknowledged yet, so a
    /// bot killed (or crashed) with sends in flight delivers each of them
    /// once after a restart with the same store. The outbox is saved each
    /// time it changes, and a send is queued (the first step of
    /// [`Room::send`]) only once it is saved; [`connect`](Self::connect)
    /// restores the saved entries, which the session resends with their
    /// original `client_msg_id`, so the server stores each once (§8.5,
    /// §14.1). Without one, unacknowledged sends survive reconnects but not
    /// restarts.
    ///
    /// One store per account: entries are sent as whoever connects.
    pub fn outbox_store(mut self, store: impl OutboxStore) -> Self {
        self.outbox = Some(Arc::new(store));
        self
    }

    /// The client name the server logs (§6.1). Default: `confab-bot-sdk/<version>`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// How long [`connect`](Self::connect) waits for the first connection. Default: 30 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Tunables of the connection driver (event channel capacity, timeouts).
    pub fn driver_options(mut self, options: DriverOptions) -> Self {
        self.driver = options;
        self
    }

    /// Logs in (registering if asked), restores saved positions, connects,
    /// waits until online and joins the rooms asked for.
    pub async fn connect(self) -> Result<Client, Error> {
        let token = match (self.token, &self.credentials) {
            (Some(token), _) => token,
            (None, Some(c)) => {
                login(
                    &c.server,
                    &c.username,
                    &c.password,
                    self.register_if_missing,
                )
                .await?
            }
            (None, None) => return Err(Error::MissingCredentials),
        };
        let mut saved = HashMap::new();
        if let Some(store) = &self.store
            && !self.skip_backlog
        {
            for position in store.load()? {
                saved.insert(position.room.clone(), position);
            }
        }
        let mut config = SessionConfig::new(token);
        config.client_name = self.client_name;
        // Bots get relations as they are (`Message::relation`), not their
        // fallback text.
        config.capabilities.extend(
            confab_protocol::capability::RELATIONS
                .iter()
                .map(|c| (*c).to_owned()),
        );
        let mut session = ClientSession::new(config);
        session.restore_positions(saved.values().cloned());
        let mut driver_options = self.driver;
        if let Some(store) = self.outbox {
            session.restore_outbox(store.load()?);
            driver_options.outbox = Some(store);
        }
        let (driver, events) = driver::spawn(self.server, session, driver_options);
        let mut client = Client {
            driver: driver.clone(),
            events,
            backlog: VecDeque::new(),
            synthesized: VecDeque::new(),
            store: self.store,
            saved,
            unsaved: None,
            username: String::new(),
            stop: Arc::new(Notify::new()),
            credentials: self.credentials,
            relogin: None,
            offline: None,
        };
        let welcome = match tokio::time::timeout(self.connect_timeout, client.wait_online()).await {
            Ok(Ok(welcome)) => welcome,
            Ok(Err(err)) => {
                driver.shutdown().await;
                return Err(err);
            }
            Err(_) => {
                driver.shutdown().await;
                return Err(Error::ConnectTimeout(self.connect_timeout));
            }
        };
        client.username = welcome.username.clone();
        let member: HashSet<&str> = welcome.rooms.iter().map(|r| r.name.as_str()).collect();
        let ctx = client.context();
        for room in self.join.iter().filter(|r| !member.contains(r.as_str())) {
            match ctx.join(room).await {
                Err(Error::Refused { error, .. })
                    if self.create_missing_rooms
                        && error.code == ErrorCode::RoomNotFound as i32 =>
                {
                    match ctx.create_room(room, "").await {
                        Ok(_) => {}
                        // Someone else created it meanwhile: join theirs.
                        Err(Error::Refused { error, .. })
                            if error.code == ErrorCode::RoomExists as i32 =>
                        {
                            ctx.join(room).await?;
                        }
                        Err(err) => return Err(err),
                    }
                }
                Err(err) => return Err(err),
                Ok(_) => {}
            }
        }
        Ok(client)
    }
}

async fn login(
    server: &ServerUrl,
    username: &str,
    password: &str,
    register_if_missing: bool,
) -> Result<String, Error> {
    match crate::http::login(server, username, password).await {
        Ok(login) => Ok(login.token),
        Err(crate::http::Error::InvalidCredentials { message }) if register_if_missing => {
            match crate::http::register(server, username, password).await {
                Ok(_) => Ok(crate::http::login(server, username, password).await?.token),
                // The account exists: the password was wrong after all.
                Err(crate::http::Error::UsernameTaken { .. }) => {
                    Err(crate::http::Error::InvalidCredentials { message }.into())
                }
                Err(err) => Err(err.into()),
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// Logs in after the token was rejected, waiting out login throttling (§5.3).
async fn relogin(c: &Credentials) -> Result<String, Error> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        match crate::http::login(&c.server, &c.username, &c.password).await {
            Ok(login) => return Ok(login.token),
            Err(crate::http::Error::Throttled { retry_after, .. }) if attempt < ATTEMPTS => {
                tokio::time::sleep(retry_after).await;
                attempt += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

async fn poll_relogin(relogin: &mut Option<JoinHandle<Result<(), Error>>>) -> Result<(), Error> {
    let Some(task) = relogin.as_mut() else {
        return std::future::pending().await;
    };
    match task.await {
        Ok(result) => result,
        Err(err) => {
            // Only a panic in the login path ends the task this way.
            tracing::warn!(error = %err, "login task failed");
            Err(Error::Stopped(OfflineReason::AuthRejected(
                ErrorCode::TokenInvalid,
            )))
        }
    }
}

/// A connected bot. Handle events with [`run`](Self::run) (or
/// [`run_until_ctrl_c`](Self::run_until_ctrl_c)) and a [`Handler`], or pull
/// them with [`next_event`](Self::next_event).
///
/// Messages arrive once each, in seq order per room. After a handled
/// message the client saves its position to the position store, so a
/// restart resumes right after the last handled message.
#[derive(Debug)]
pub struct Client {
    driver: DriverHandle,
    events: mpsc::Receiver<DriverEvent>,
    /// Driver events read while connecting, not yet handed out.
    backlog: VecDeque<DriverEvent>,
    /// Events made by the client itself (e.g. a failed save), handed out first.
    synthesized: VecDeque<Event>,
    store: Option<Arc<dyn PositionStore>>,
    /// Last saved position per room.
    saved: HashMap<String, RoomPosition>,
    /// The last message handed out, saved when the next event is asked for.
    unsaved: Option<RoomPosition>,
    username: String,
    stop: Arc<Notify>,
    /// For logging in again after the token is rejected.
    credentials: Option<Credentials>,
    /// A login in progress after the token was rejected.
    relogin: Option<JoinHandle<Result<(), Error>>>,
    /// Why the session is offline, while it is.
    offline: Option<OfflineReason>,
}

impl Client {
    /// Starts configuring a client for `server`.
    pub fn builder(server: ServerUrl) -> ClientBuilder {
        ClientBuilder {
            server,
            credentials: None,
            token: None,
            register_if_missing: false,
            join: Vec::new(),
            create_missing_rooms: false,
            skip_backlog: false,
            store: None,
            outbox: None,
            client_name: concat!("confab-bot-sdk/", env!("CARGO_PKG_VERSION")).to_owned(),
            connect_timeout: Duration::from_secs(30),
            driver: DriverOptions::default(),
        }
    }

    /// The bot's username, as the server spells it.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// A cloneable handle for sending and joining, also given to handlers.
    pub fn context(&self) -> Context {
        Context {
            driver: self.driver.clone(),
            username: Arc::from(self.username.as_str()),
            stop: Arc::clone(&self.stop),
        }
    }

    /// A room to send to.
    pub fn room(&self, name: impl Into<String>) -> Room {
        self.context().room(name)
    }

    /// The next event, or `None` once the client has shut down.
    ///
    /// Calling this marks the message returned by the previous call as
    /// handled and saves its position. Cancel-safe.
    ///
    /// When the server rejects the token, the client (given credentials)
    /// logs in again: `Connection(Offline(AuthRejected))` is then followed
    /// by `Connection(Connecting)`, or by `Error(LoginFailed)` if that failed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.save_handled();
        loop {
            if let Some(event) = self.synthesized.pop_front() {
                return Some(event);
            }
            let raw = match self.backlog.pop_front() {
                Some(raw) => raw,
                None => tokio::select! {
                    raw = self.events.recv() => raw?,
                    outcome = poll_relogin(&mut self.relogin) => {
                        self.relogin = None;
                        match outcome {
                            // The session is connecting again.
                            Ok(()) => self.offline = None,
                            Err(err) => {
                                let event = Event::Error(ErrorEvent::LoginFailed(err.to_string()));
                                self.synthesized.push_back(event);
                            }
                        }
                        continue;
                    }
                },
            };
            if let Some(event) = self.translate(raw) {
                if let Event::Message(message) = &event {
                    self.unsaved = Some(message.position());
                }
                return Some(event);
            }
        }
    }

    /// Handles events with `handler` until [`Context::stop`] is called or
    /// the session stops for good (then the error says why).
    pub async fn run(self, handler: impl Handler) -> Result<(), Error> {
        self.run_until(handler, std::future::pending()).await
    }

    /// Like [`run`](Self::run), and also shuts down gracefully on ctrl-c.
    pub async fn run_until_ctrl_c(self, handler: impl Handler) -> Result<(), Error> {
        let ctrl_c = async {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %err, "cannot listen for ctrl-c; run until stopped");
                std::future::pending::<()>().await;
            }
        };
        self.run_until(handler, ctrl_c).await
    }

    /// Like [`run`](Self::run), and also shuts down gracefully when `stop`
    /// completes. The event being handled then is finished first.
    pub async fn run_until(
        mut self,
        handler: impl Handler,
        stop: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        tokio::pin!(stop);
        let ctx = self.context();
        let stop_requested = Arc::clone(&self.stop);
        let result = loop {
            let event = tokio::select! {
                biased;
                () = &mut stop => break Ok(()),
                () = stop_requested.notified() => break Ok(()),
                event = self.next_event() => event,
            };
            let Some(event) = event else {
                break Ok(());
            };
            if let Err(err) = handler.handle(ctx.clone(), event).await {
                tracing::warn!(error = %err, "handler failed");
                self.synthesized
                    .push_back(Event::Error(ErrorEvent::Handler(err.to_string())));
            }
            self.save_handled();
            // Offline for good, unless a new login is under way.
            match self.offline {
                _ if self.relogin.is_some() => {}
                Some(OfflineReason::Closed) => break Ok(()),
                Some(reason) => break Err(Error::Stopped(reason)),
                None => {}
            }
        };
        self.shutdown().await;
        result
    }

    /// Saves the last handed-out message's position, closes the socket with
    /// 1000 and stops the connection task.
    pub async fn shutdown(mut self) {
        self.save_handled();
        self.driver.shutdown().await;
    }

    /// Waits for the first Welcome; keeps every event for [`next_event`].
    async fn wait_online(&mut self) -> Result<wire::Welcome, Error> {
        let mut welcome = None;
        loop {
            let raw = self
                .events
                .recv()
                .await
                .ok_or(Error::DriverClosed(driver::DriverClosed))?;
            match &raw {
                DriverEvent::Session(SessionEvent::Welcome(w)) => welcome = Some(w.clone()),
                DriverEvent::Session(SessionEvent::StateChanged(ConnectionState::Offline(
                    reason,
                ))) => return Err(Error::Stopped(*reason)),
                _ => {}
            }
            let online = matches!(
                raw,
                DriverEvent::Session(SessionEvent::StateChanged(ConnectionState::Online))
            );
            self.backlog.push_back(raw);
            if online && let Some(welcome) = welcome {
                return Ok(welcome);
            }
        }
    }

    /// Logs in again in the background and hands the session the new token.
    fn start_relogin(&mut self) {
        let Some(credentials) = self.credentials.clone() else {
            return;
        };
        if self.relogin.is_some() {
            return;
        }
        let driver = self.driver.clone();
        self.relogin = Some(tokio::spawn(async move {
            let token = relogin(&credentials).await?;
            driver
                .call(move |session, _| session.reauthenticate(token))
                .await?
                .map_err(|err| Error::Request(err.into()))
        }));
    }

    fn save_handled(&mut self) {
        if let Some(position) = self.unsaved.take() {
            self.save(position);
        }
    }

    fn save(&mut self, position: RoomPosition) {
        if position.epoch.is_empty() {
            // Without its epoch a position would be read as another
            // sequence space on resume (§10.3 row 2); better not to save.
            self.synthesized
                .push_back(Event::Error(ErrorEvent::PositionNotSaved(format!(
                    "room {}: epoch unknown",
                    position.room
                ))));
            return;
        }
        if self.saved.get(&position.room) == Some(&position) {
            return;
        }
        if let Some(store) = &self.store
            && let Err(err) = store.save(&position)
        {
            tracing::warn!(error = %err, "position not saved");
            self.synthesized
                .push_back(Event::Error(ErrorEvent::PositionNotSaved(err.to_string())));
            return;
        }
        self.saved.insert(position.room.clone(), position);
    }

    /// Saves a room's head as its position when nothing is saved for it in
    /// this epoch: every message up to the head is, by design, not for us.
    fn save_head(&mut self, room: &str, head_seq: u64, epoch: &str) {
        let known = self.saved.get(room).is_some_and(|p| p.epoch == epoch);
        if !known {
            self.save(RoomPosition {
                room: room.to_owned(),
                last_seq: head_seq,
                epoch: epoch.to_owned(),
            });
        }
    }

    /// Turns a driver event into a bot event, saving positions as the
    /// session reports them.
    fn translate(&mut self, raw: DriverEvent) -> Option<Event> {
        let event = match raw {
            DriverEvent::Session(event) => event,
            DriverEvent::ConnectFailed(err) => {
                return Some(Event::Error(ErrorEvent::ConnectFailed(err.to_string())));
            }
            DriverEvent::Disconnected { close_code, reason } => {
                return Some(Event::Error(ErrorEvent::Disconnected {
                    close_code,
                    reason,
                }));
            }
            DriverEvent::InvalidFrame(detail) => {
                return Some(Event::Error(ErrorEvent::InvalidFrame(detail)));
            }
            DriverEvent::OutboxNotSaved(err) => {
                return Some(Event::Error(ErrorEvent::OutboxNotSaved(err.to_string())));
            }
        };
        Some(match event {
            SessionEvent::Message {
                message,
                from_self,
                epoch,
                ..
            } => Event::Message(Message::new(message, from_self, epoch)),
            SessionEvent::StateChanged(state) => {
                self.offline = match state {
                    ConnectionState::Offline(reason) => Some(reason),
                    _ => None,
                };
                if let ConnectionState::Offline(OfflineReason::AuthRejected(_)) = state {
                    self.start_relogin();
                }
                Event::Connection(state)
            }
            SessionEvent::Welcome(_) => return None,
            SessionEvent::Resumed(outcome) => {
                match Status::try_from(outcome.status) {
                    Ok(Status::Replayed) => {
                        // Everything replayed was handed out before this event.
                        self.save_head(&outcome.room, outcome.head_seq, &outcome.epoch);
                    }
                    Ok(Status::EpochChanged) => {
                        self.saved.remove(&outcome.room);
                        self.save_head(&outcome.room, outcome.head_seq, &outcome.epoch);
                    }
                    // The session pages the gap in; each message carries its epoch.
                    _ => {}
                }
                return None;
            }
            SessionEvent::Joined(room) => {
                self.save_head(&room.name, room.head_seq, &room.epoch);
                Event::RoomJoined(room)
            }
            SessionEvent::Left(room) => Event::RoomLeft(room),
            SessionEvent::RoomListUpdate(update) => Event::RoomListChanged(update),
            SessionEvent::Presence(p) => Event::Presence {
                kind: presence_kind(p.kind)?,
                room: p.room,
                user: p.username,
            },
            SessionEvent::ReadState { room, counts } => Event::ReadState { room, counts },
            SessionEvent::Typing(t) => Event::Typing {
                room: t.room,
                user: t.username,
                active: t.active,
            },
            SessionEvent::SendFailed { entry, error } => Event::Error(ErrorEvent::SendFailed {
                room: entry.room,
                text: entry.text,
                error,
            }),
            SessionEvent::RequestFailed { kind, error, .. } => {
                Event::Error(ErrorEvent::RequestFailed { kind, error })
            }
            SessionEvent::RequestTimedOut { kind, .. }
            | SessionEvent::RequestAborted { kind, .. } => {
                // The keepalive Ping's fate shows as TransportStale, Auth's as
                // a state change; a send stays in the outbox and is resent.
                if matches!(
                    kind,
                    RequestKind::Ping | RequestKind::Auth | RequestKind::Send(_)
                ) {
                    return None;
                }
                Event::Error(ErrorEvent::RequestLost { kind })
            }
            SessionEvent::ServerError(error) => Event::Error(ErrorEvent::Server(error)),
            SessionEvent::EpochChanged { room, head_seq } => {
                Event::Error(ErrorEvent::EpochChanged { room, head_seq })
            }
            SessionEvent::GapSkipped { room, from, to } => {
                Event::Error(ErrorEvent::GapSkipped { room, from, to })
            }
            // Acks resolve `Room::send`; the rest are replies to explicit requests.
            _ => return None,
        })
    }
}

/// A cheap, cloneable handle for acting from handlers: send, join, stop.
#[derive(Debug, Clone)]
pub struct Context {
    driver: DriverHandle,
    username: Arc<str>,
    stop: Arc<Notify>,
}

impl Context {
    /// The bot's username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// A room to send to.
    pub fn room(&self, name: impl Into<String>) -> Room {
        Room {
            driver: self.driver.clone(),
            name: name.into(),
        }
    }

    /// Joins a room (§7.3) and returns it once joined.
    pub async fn join(&self, room: &str) -> Result<RoomInfo, Error> {
        let name = room.to_owned();
        let what = format!("join room {room}");
        let reply = self
            .driver
            .request(move |session, now| session.join_room(now, &name), {
                let room = room.to_owned();
                move |id, event| match event {
                    SessionEvent::Joined(info) if info.name == room => Some(Ok(info.clone())),
                    other => request_failure(id, other).map(Err),
                }
            })
            .await?;
        reply.map_err(|failure| failure.into_error(what))
    }

    /// Creates a room (§7.2) and returns it; the bot is its first member.
    pub async fn create_room(&self, room: &str, topic: &str) -> Result<RoomInfo, Error> {
        let (name, topic) = (room.to_owned(), topic.to_owned());
        let what = format!("create room {room}");
        let reply = self
            .driver
            .request(
                move |session, now| session.create_room(now, &name, &topic),
                {
                    let room = room.to_owned();
                    move |id, event| match event {
                        SessionEvent::Joined(info) if info.name == room => Some(Ok(info.clone())),
                        other => request_failure(id, other).map(Err),
                    }
                },
            )
            .await?;
        reply.map_err(|failure| failure.into_error(what))
    }

    /// Leaves a room (§7.4).
    pub async fn leave(&self, room: &str) -> Result<(), Error> {
        let name = room.to_owned();
        let what = format!("leave room {room}");
        let reply = self
            .driver
            .request(move |session, now| session.leave_room(now, &name), {
                let room = room.to_owned();
                move |id, event| match event {
                    SessionEvent::Left(left) if *left == room => Some(Ok(())),
                    other => request_failure(id, other).map(Err),
                }
            })
            .await?;
        reply.map_err(|failure| failure.into_error(what))
    }

    /// Asks [`Client::run`] to stop after the current event.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// The connection driver, for anything the bot layer does not wrap.
    pub fn driver(&self) -> &DriverHandle {
        &self.driver
    }
}

enum RequestFailure {
    Refused(wire::Error),
    NoAnswer,
}

impl RequestFailure {
    fn into_error(self, what: String) -> Error {
        match self {
            RequestFailure::Refused(error) => Error::Refused { what, error },
            RequestFailure::NoAnswer => Error::NoAnswer { what },
        }
    }
}

/// The failure events that carry request `id`.
fn request_failure(id: u64, event: &SessionEvent) -> Option<RequestFailure> {
    match event {
        SessionEvent::RequestFailed {
            request_id, error, ..
        } if *request_id == id => Some(RequestFailure::Refused(error.clone())),
        SessionEvent::RequestTimedOut { request_id, .. }
        | SessionEvent::RequestAborted { request_id, .. }
            if *request_id == id =>
        {
            Some(RequestFailure::NoAnswer)
        }
        _ => None,
    }
}

/// A field of a relation that failed validation, as the send error it is.
fn invalid(err: ValidationError) -> Error {
    Error::Send(driver::SendError::Command(CommandError::Invalid(err)))
}

/// A room to send to.
#[derive(Debug, Clone)]
pub struct Room {
    driver: DriverHandle,
    name: String,
}

impl Room {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `text` and returns its seq once the server has stored it (§8.3).
    /// The message survives reconnects (resent with the same id, §14.1) and
    /// rate limits (resent after `retry_after_ms`, §12.5) without any error.
    pub async fn send(&self, text: &str) -> Result<u64, Error> {
        self.send_kind(text, false).await
    }

    /// Sends `text` like [`Room::send`] and returns the stored message's
    /// seq and `message_id`, the id [`Room::edit`], [`Room::delete`],
    /// [`Room::reply_to`] and [`Room::react`] name it by.
    pub async fn send_with_id(&self, text: &str) -> Result<(u64, String), Error> {
        let pending = self.driver.send_message(&self.name, text, false).await?;
        let ack = pending.acked().await?;
        Ok((ack.seq, ack.message_id))
    }

    /// Sends an action (`/me waves`) and returns its seq once stored.
    pub async fn send_action(&self, text: &str) -> Result<u64, Error> {
        self.send_kind(text, true).await
    }

    async fn send_kind(&self, text: &str, action: bool) -> Result<u64, Error> {
        let pending = self.driver.send_message(&self.name, text, action).await?;
        Ok(pending.acked().await?.seq)
    }

    /// A page of the room's history (§9): the oldest `limit` messages
    /// after `after_seq` (0: from the start), in seq order, with relations
    /// as stored (a deleted message comes with `is_deleted` and no text).
    /// Fold them into a `confab_protocol::timeline::Timeline` to see each
    /// message as it stands now.
    pub async fn history(&self, after_seq: u64, limit: u32) -> Result<Vec<Message>, Error> {
        use confab_protocol::wire::fetch_history::Anchor;
        let name = self.name.clone();
        let what = format!("read the history of {}", self.name);
        let reply = self
            .driver
            .request(
                move |session, now| {
                    session.fetch_history(now, &name, Some(Anchor::AfterSeq(after_seq)), limit)
                },
                {
                    let room = self.name.clone();
                    move |id, event| match event {
                        SessionEvent::History(page) if page.room == room => Some(Ok(page.clone())),
                        other => request_failure(id, other).map(Err),
                    }
                },
            )
            .await?;
        let page = reply.map_err(|failure| failure.into_error(what))?;
        let epoch = page.epoch.clone();
        Ok(page
            .messages
            .into_iter()
            .map(|m| Message::new(m, false, epoch.clone()))
            .collect())
    }

    /// Replaces the text of the bot's own message `message_id` (§8.6.2)
    /// and returns the edit's seq once stored. Another user's message is
    /// refused with `NOT_AUTHOR`, an unknown or deleted one with `NOT_FOUND`.
    pub async fn edit(&self, message_id: &str, text: &str) -> Result<u64, Error> {
        self.relate(message_id, RelationKind::Edit, text).await
    }

    /// Deletes the bot's own message `message_id` (§8.6.3): its text (and
    /// its edits') leaves the server. Returns the deletion's seq.
    pub async fn delete(&self, message_id: &str) -> Result<u64, Error> {
        self.relate(message_id, RelationKind::Redact, "").await
    }

    /// Answers the message `message_id` with `text` (§8.6.4); the server
    /// adds the quote. Returns the reply's seq.
    pub async fn reply_to(&self, message_id: &str, text: &str) -> Result<u64, Error> {
        self.relate(message_id, RelationKind::Reply, text).await
    }

    /// Adds the bot's reaction `key` (an emoji) to `message_id` (§8.6.5).
    /// Adding one it already has changes nothing and returns the seq of
    /// the reaction that stands.
    pub async fn react(&self, message_id: &str, key: &str) -> Result<u64, Error> {
        let key = ReactionKey::parse(key).map_err(invalid)?;
        self.relate(message_id, RelationKind::React { key, remove: false }, "")
            .await
    }

    /// Removes the bot's reaction `key` from `message_id` (§8.6.5).
    pub async fn unreact(&self, message_id: &str, key: &str) -> Result<u64, Error> {
        let key = ReactionKey::parse(key).map_err(invalid)?;
        self.relate(message_id, RelationKind::React { key, remove: true }, "")
            .await
    }

    async fn relate(&self, message_id: &str, kind: RelationKind, text: &str) -> Result<u64, Error> {
        let target = MessageId::parse(message_id).map_err(invalid)?;
        let pending = self
            .driver
            .send_relation(&self.name, ValidRelation { target, kind }, text)
            .await?;
        Ok(pending.acked().await?.seq)
    }

    /// Moves the bot's read marker here to `seq` (§11.3): the counts drop
    /// at once, and the server (hence the user's other connections) learns
    /// it when online, after a reconnect if need be. A marker never moves
    /// back.
    pub async fn mark_read(&self, seq: u64) -> Result<(), Error> {
        let name = self.name.clone();
        self.driver
            .call(move |session, now| session.mark_read(now, &name, seq))
            .await?
            .map_err(|err| Error::Request(err.into()))?;
        Ok(())
    }

    /// The bot's marker, unread and mention counts here (§11.3), or `None`
    /// when the server reported no read state for the room.
    pub async fn read_counts(&self) -> Result<Option<ReadCounts>, Error> {
        let name = self.name.clone();
        Ok(self
            .driver
            .call(move |session, _| session.read_state(&name).map(|read| read.counts()))
            .await?)
    }

    /// Says the bot started or stopped typing (§11.2).
    pub async fn set_typing(&self, active: bool) -> Result<(), Error> {
        let name = self.name.clone();
        self.driver
            .call(move |session, _| session.set_typing(&name, active))
            .await?
            .map_err(|err| Error::Request(err.into()))?;
        Ok(())
    }
}
