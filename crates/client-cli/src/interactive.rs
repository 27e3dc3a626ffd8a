//! The chat loop: wires the SDK's connection driver, the [`Chat`] view and
//! the editor together, and keeps the outbox file in step with the session.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use confab_bot_sdk::driver::{self, DriverEvent, DriverHandle, DriverOptions};
use confab_bot_sdk::http;
use confab_bot_sdk::{FileOutboxStore, OutboxStore, ServerUrl};
use confab_protocol::session::{Backoff, ClientSession, ConnectionState, SessionConfig};
use tokio::sync::mpsc;

use crate::chat::{Applied, Chat, Out};
use crate::editor::{self, EditorInput, PromptInfo, Screen, SharedPrompt};
use crate::render;
use crate::store::{SavedLogin, Store, StoreError};
use crate::style::Style;

/// Client name sent in Auth (§6.1), for the server's logs.
pub const CLIENT_NAME: &str = concat!("confab-cli/", env!("CARGO_PKG_VERSION"));

/// How long the prompt waits for a command's reply before it comes back
/// anyway; the session's own request timeout normally answers first.
const BUSY_LIMIT: Duration = Duration::from_secs(15);

/// How long `/quit` waits for sends on their way to be stored.
const QUIT_GRACE: Duration = Duration::from_secs(3);

/// How a chat session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatEnd {
    /// `/quit` or end of input.
    Quit,
    /// `/logout` succeeded.
    LoggedOut,
    /// The saved token was refused: log in again.
    LoginAgain,
}

/// Settings of a chat session.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Colour.
    pub style: Style,
    /// Largest reconnect delay (§14.2); tests shorten it.
    pub reconnect_cap: Option<Duration>,
}

/// A session config for this client.
pub fn session_config(token: &str, reconnect_cap: Option<Duration>) -> SessionConfig {
    let mut config = SessionConfig::new(token);
    config.client_name = CLIENT_NAME.to_owned();
    if let Some(cap) = reconnect_cap {
        config.backoff = Backoff {
            base: Backoff::default().base.min(cap),
            cap,
        };
    }
    config
}

/// Local time of day of a server timestamp, `12:04`.
pub fn clock(ms: i64) -> String {
    local_time(ms, "%H:%M")
}

/// The local calendar day of a server timestamp, `Tuesday 1 December 2026`.
pub fn day(ms: i64) -> String {
    local_time(ms, "%A %-d %B %Y")
}

/// Local time of day of a server timestamp with seconds, `12:04:05`.
pub fn clock_seconds(ms: i64) -> String {
    local_time(ms, "%H:%M:%S")
}

fn local_time(ms: i64, format: &str) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format(format).to_string()
        }
        chrono::LocalResult::None => "--:--".to_owned(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the chat until the user quits, logs out, or must log in again.
pub async fn run(
    server: &ServerUrl,
    login: &SavedLogin,
    store: &Store,
    options: &ChatOptions,
) -> Result<ChatEnd, StoreError> {
    let style = options.style;
    let outbox_path = store.outbox_path(&login.username, server.host(), server.port());
    let restored = FileOutboxStore::new(&outbox_path).load()?;
    let mut config = session_config(&login.token, options.reconnect_cap);
    // The chat folds relations into what it shows (§8.6.6), so it takes
    // them as they are; `send` and `tail` get their readable fallbacks.
    config.capabilities.extend(
        confab_protocol::capability::RELATIONS
            .iter()
            .map(|c| (*c).to_owned()),
    );
    let mut session = ClientSession::new(config);
    session.restore_outbox(restored.clone());
    let (handle, events) = driver::spawn(server.clone(), session, DriverOptions::default());

    let mut chat = Chat::new(
        style,
        &server.to_string(),
        &login.username,
        clock,
        day,
        wall_ms,
    );
    chat.reopen(store.last_room(&login.username, server.host(), server.port())?);
    let prompt = SharedPrompt::new(prompt_info(&chat, Instant::now()));
    // Lines from a pipe or file are meant for a connected chat: read the
    // first once the first connection attempt is over. A person at a
    // terminal may type at once, online or not.
    let piped = !std::io::stdin().is_terminal();
    let (editor, screen, inputs) = editor::start(style, prompt.clone(), piped);
    let mut app = App {
        style,
        chat,
        handle,
        screen,
        prompt,
        outbox_path,
        username: login.username.clone(),
        server: server.clone(),
        token: login.token.clone(),
        store: store.clone(),
        end: None,
        editor_idle: piped,
        first_line_held: piped,
        end_on_enter: None,
        shown_status: String::new(),
    };
    let first = app.chat.restore(&restored);
    app.carry_out(first).await;
    let end = app.run(events, inputs, &editor).await;
    app.handle.shutdown().await;
    editor.stop(app.screen);
    Ok(end)
}

fn prompt_info(chat: &Chat, now: Instant) -> PromptInfo {
    PromptInfo {
        state: chat.state().clone(),
        room: chat.current().map(str::to_owned),
        rooms: chat.room_names(),
        joined: chat.joined_rooms(),
        activity: chat.activity(),
        typing: chat.typing(now),
    }
}

struct App {
    style: Style,
    chat: Chat,
    handle: DriverHandle,
    screen: Screen,
    prompt: SharedPrompt,
    outbox_path: PathBuf,
    username: String,
    server: ServerUrl,
    token: String,
    store: Store,
    end: Option<ChatEnd>,
    /// Whether the editor is between lines (waiting for the go-ahead, or
    /// gone). The chat may only end then: otherwise the editor still owns
    /// the terminal.
    editor_idle: bool,
    /// The editor waits for a go-ahead before its first line.
    first_line_held: bool,
    /// How the chat ends on the next line the user enters, when it cannot
    /// go on (token refused, driver gone) while the editor is reading.
    end_on_enter: Option<ChatEnd>,
    /// The status line as last drawn (plain), to redraw it when it changes.
    shown_status: String,
}

impl App {
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<DriverEvent>,
        mut inputs: mpsc::UnboundedReceiver<EditorInput>,
        editor: &editor::EditorThread,
    ) -> ChatEnd {
        // Since when a read line waits for the chat to let the editor go on.
        let mut waiting_since: Option<Instant> = None;
        let mut events_open = true;
        loop {
            let busy_deadline = waiting_since.map(|t| t + BUSY_LIMIT);
            let status_deadline = self.chat.status_deadline(Instant::now());
            let outs = tokio::select! {
                event = events.recv(), if events_open => match event {
                    Some(event) => self.on_driver_event(event),
                    None => {
                        events_open = false;
                        self.driver_gone();
                        Vec::new()
                    }
                },
                input = inputs.recv() => match input {
                    Some(EditorInput::Line(line)) => {
                        waiting_since = Some(Instant::now());
                        self.editor_idle = true;
                        if let Some(end) = self.end_on_enter {
                            self.end = Some(end);
                            Vec::new()
                        } else {
                            self.chat.handle_line(&line)
                        }
                    }
                    Some(EditorInput::Editing(has_text)) => {
                        self.chat.handle_editing(has_text, Instant::now())
                    }
                    Some(EditorInput::Interrupted) => vec![Out::Print(render::notice(
                        self.style,
                        "line discarded; /quit or Ctrl-D exits",
                    ))],
                    Some(EditorInput::Eof) | None => {
                        self.editor_idle = true;
                        self.end = Some(self.end_on_enter.unwrap_or(ChatEnd::Quit));
                        Vec::new()
                    }
                },
                // The countdown ticked or a typing indicator ran out: the
                // status line is redrawn below.
                () = sleep_until(status_deadline), if status_deadline.is_some() => Vec::new(),
                () = sleep_until(busy_deadline), if busy_deadline.is_some() => {
                    waiting_since = None;
                    self.editor_idle = false;
                    editor.ready();
                    Vec::new()
                }
            };
            // The prompt is redrawn as soon as a line is printed: let it
            // show the state the chat is in now, then again after actions.
            *self.prompt.lock() = prompt_info(&self.chat, Instant::now());
            self.carry_out(outs).await;
            if let Some(end) = self.end {
                if end == ChatEnd::Quit {
                    self.drain_outbox(&mut events).await;
                    self.say_goodbye().await;
                }
                return end;
            }
            self.show_status();
            if self.first_line_held && self.chat.settled() {
                self.first_line_held = false;
                self.editor_idle = false;
                editor.ready();
            }
            if waiting_since.is_some() && self.chat.input_ready() {
                waiting_since = None;
                self.editor_idle = false;
                editor.ready();
            }
        }
    }

    /// Brings the prompt up to date, and redraws it if its status line
    /// changed (a printed line redraws it too; once more does no harm).
    fn show_status(&mut self) {
        let now = Instant::now();
        let info = prompt_info(&self.chat, now);
        let status = info.status_line(Style::plain(), now, usize::MAX);
        *self.prompt.lock() = info;
        if status != self.shown_status {
            self.shown_status = status;
            self.screen.refresh();
        }
    }

    fn on_driver_event(&mut self, event: DriverEvent) -> Vec<Out> {
        let now = Instant::now();
        match event {
            DriverEvent::Session(event) => self.chat.handle_event(event, now),
            DriverEvent::ConnectFailed(err) => self.chat.handle_connect_failed(&err.to_string()),
            DriverEvent::InvalidFrame(what) => vec![Out::Print(render::error(
                self.style,
                &format!("ignored a frame this client cannot read: {what}"),
            ))],
            // The session's state change that follows says what matters.
            _ => Vec::new(),
        }
    }

    /// Ends the chat now if the editor is between lines, else on the next line.
    fn end_with(&mut self, end: ChatEnd) {
        if self.editor_idle {
            self.end = Some(end);
            return;
        }
        self.end_on_enter = Some(end);
        let then = match end {
            ChatEnd::LoginAgain => "log in again",
            ChatEnd::Quit | ChatEnd::LoggedOut => "exit",
        };
        self.screen.print(render::notice(
            self.style,
            &format!("press Enter to {then}"),
        ));
    }

    fn driver_gone(&mut self) {
        self.screen.print(render::error(
            self.style,
            "the connection driver stopped unexpectedly; restart confab (unsent messages are kept)",
        ));
        self.end_with(ChatEnd::Quit);
    }

    fn store_failed(&self, err: &impl std::fmt::Display) {
        self.screen.print(render::error(
            self.style,
            &format!("{err}; unsent messages may be lost if confab stops now"),
        ));
    }

    /// Carries out `outs`, and what the chat asks for in response, in order.
    async fn carry_out(&mut self, outs: Vec<Out>) {
        let mut queue: std::collections::VecDeque<Out> = outs.into();
        while let Some(out) = queue.pop_front() {
            match out {
                Out::Print(text) => self.screen.print(text),
                Out::Do(action) => {
                    let run = action.clone();
                    let result = self
                        .handle
                        .call(move |session, now| run.apply(session, now))
                        .await;
                    let Ok(result) = result else {
                        self.driver_gone();
                        return;
                    };
                    if let Ok(Applied::Queued(entries)) = &result {
                        // On disk before it is shown as pending: a message
                        // shown as pending survives a crash.
                        if let Err(err) = FileOutboxStore::new(&self.outbox_path).save(entries) {
                            self.store_failed(&err);
                        }
                    }
                    let more = self.chat.handle_applied(&action, result);
                    for (i, out) in more.into_iter().enumerate() {
                        queue.insert(i, out);
                    }
                }
                Out::SaveOutbox => self.save_outbox().await,
                Out::SaveLastRoom(room) => {
                    let saved = self.store.save_last_room(
                        &self.username,
                        self.server.host(),
                        self.server.port(),
                        &room,
                    );
                    if let Err(err) = saved {
                        self.store_failed(&err);
                    }
                }
                Out::Quit => self.end_with(ChatEnd::Quit),
                Out::Logout => self.logout().await,
                Out::LoginAgain => self.end_with(ChatEnd::LoginAgain),
                Out::Bell => self.screen.bell(),
            }
        }
    }

    async fn save_outbox(&mut self) {
        let entries = self
            .handle
            .call(|session, _| session.outbox().cloned().collect::<Vec<_>>())
            .await;
        // When the driver is gone the file keeps the last saved state.
        if let Ok(entries) = entries
            && let Err(err) = FileOutboxStore::new(&self.outbox_path).save(&entries)
        {
            self.store_failed(&err);
        }
    }

    async fn logout(&mut self) {
        match http::logout(&self.server, &self.token).await {
            // Unauthorized: the token was revoked already; forgetting it is all that is left.
            Ok(()) | Err(http::Error::Unauthorized { .. }) => {
                let forgotten = match self.store.delete_login() {
                    Ok(()) => "no longer saved".to_owned(),
                    Err(err) => format!("still in the config directory ({err}); delete it by hand"),
                };
                self.screen.print(render::notice(
                    self.style,
                    &format!("logged out: the token is revoked and {forgotten}. Run confab to log in again"),
                ));
                self.end_with(ChatEnd::LoggedOut);
            }
            Err(err) => self.screen.print(render::error(
                self.style,
                &format!(
                    "could not log out ({err}); the token still works and stays saved. Try /logout again"
                ),
            )),
        }
    }

    /// Before quitting while online, gives sends already on their way a
    /// moment to be stored, so a line typed just before `/quit` is not left
    /// in the outbox for next time.
    async fn drain_outbox(&mut self, events: &mut mpsc::Receiver<DriverEvent>) {
        let deadline = Instant::now() + QUIT_GRACE;
        while *self.chat.state() == ConnectionState::Online && self.unsent().await > 0 {
            let outs = tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_driver_event(event),
                    None => return,
                },
                () = sleep_until(Some(deadline)) => return,
            };
            self.carry_out(outs).await;
        }
        // The outbox is empty once the session saw the last ack; the
        // `Delivered` lines it made may still wait in the channel, and the
        // user should see what was confirmed.
        while let Ok(event) = events.try_recv() {
            let outs = self.on_driver_event(event);
            self.carry_out(outs).await;
        }
    }

    /// Sends in the session's outbox: not yet acknowledged by the server.
    async fn unsent(&self) -> usize {
        self.handle
            .call(|session, _| session.outbox().count())
            .await
            .unwrap_or(0)
    }

    async fn say_goodbye(&mut self) {
        let unsent = self.unsent().await;
        if unsent > 0 {
            self.screen.print(render::notice(
                self.style,
                &format!(
                    "{unsent} message{} not yet delivered; {} sent the next time you start confab",
                    if unsent == 1 { "" } else { "s" },
                    if unsent == 1 { "it is" } else { "they are" }
                ),
            ));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
