//! `confab send` and `confab tail`: the client without a prompt, for scripts.
//!
//! Both connect through the SDK driver like the chat does, so they get the
//! same reconnects, resume and dedupe from the session.

use std::io::Write;
use std::time::{Duration, Instant};

use confab_bot_sdk::ServerUrl;
use confab_bot_sdk::driver::{self, DriverEvent, DriverHandle, DriverOptions, SendError};
use confab_protocol::session::{ClientSession, ConnectionState, RequestKind, SessionEvent};
use confab_protocol::wire::{self, ErrorCode};
use tokio::sync::mpsc;

use crate::interactive::{clock_seconds, session_config};
use crate::render;
use crate::style::Style;

/// Why a scripted command failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The server was not reached before the deadline.
    #[error("could not connect to {server} within {after:?}{last}")]
    Unreachable {
        /// The server.
        server: String,
        /// How long it tried.
        after: Duration,
        /// The last connection error, prefixed with ": ".
        last: String,
    },
    /// The token was refused.
    #[error(
        "the server refused the token (expired or revoked); run `confab login` or pass a fresh --token"
    )]
    TokenRefused,
    /// The session stopped for another reason.
    #[error("{0}")]
    Stopped(String),
    /// A request was refused.
    #[error("{0}")]
    Refused(String),
    /// Writing to stdout failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// A connected session for a script.
struct Connection {
    handle: DriverHandle,
    events: mpsc::Receiver<DriverEvent>,
    server: ServerUrl,
    /// Rooms the user is a member of, from Welcome.
    member_of: Vec<String>,
}

impl Connection {
    /// Connects and waits for Welcome until `timeout` passes.
    async fn open(
        server: &ServerUrl,
        token: &str,
        reconnect_cap: Option<Duration>,
        timeout: Duration,
    ) -> Result<Self, ScriptError> {
        let session = ClientSession::new(session_config(token, reconnect_cap));
        let (handle, events) = driver::spawn(server.clone(), session, DriverOptions::default());
        let mut connection = Self {
            handle,
            events,
            server: server.clone(),
            member_of: Vec::new(),
        };
        let mut last = String::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, connection.events.recv()).await;
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => {
                    return Err(ScriptError::Stopped("the connection driver stopped".into()));
                }
                Err(_) => {
                    connection.handle.shutdown().await;
                    return Err(ScriptError::Unreachable {
                        server: server.to_string(),
                        after: timeout,
                        last,
                    });
                }
            };
            match event {
                DriverEvent::ConnectFailed(err) => last = format!(": {err}"),
                DriverEvent::Session(SessionEvent::Welcome(welcome)) => {
                    connection.member_of = welcome.rooms.iter().map(|r| r.name.clone()).collect();
                    return Ok(connection);
                }
                DriverEvent::Session(SessionEvent::StateChanged(ConnectionState::Offline(
                    reason,
                ))) => {
                    return Err(stopped(reason));
                }
                _ => {}
            }
        }
    }

    /// Joins `room` unless the user is a member already; waits for the reply.
    async fn ensure_member(&mut self, room: &str) -> Result<(), ScriptError> {
        if self.member_of.iter().any(|r| r == room) {
            return Ok(());
        }
        let name = room.to_owned();
        self.handle
            .call(move |session, now| session.join_room(now, &name))
            .await
            .map_err(|e| ScriptError::Stopped(e.to_string()))?
            .map_err(|e| ScriptError::Refused(e.to_string()))?;
        loop {
            match self.next_session_event().await? {
                SessionEvent::Joined(info) if info.name == room => return Ok(()),
                SessionEvent::RequestFailed {
                    kind: RequestKind::JoinRoom(_),
                    error,
                    ..
                } => {
                    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                    return Err(ScriptError::Refused(if code == ErrorCode::RoomNotFound {
                        format!("there is no room #{room} on {}", self.server)
                    } else {
                        format!("cannot join #{room}: {}", error.message)
                    }));
                }
                SessionEvent::RequestTimedOut {
                    kind: RequestKind::JoinRoom(_),
                    ..
                } => {
                    return Err(ScriptError::Refused(format!(
                        "the server did not answer joining #{room} in time"
                    )));
                }
                _ => {}
            }
        }
    }

    async fn next_session_event(&mut self) -> Result<SessionEvent, ScriptError> {
        loop {
            match self.events.recv().await {
                Some(DriverEvent::Session(SessionEvent::StateChanged(
                    ConnectionState::Offline(reason),
                ))) => return Err(stopped(reason)),
                Some(DriverEvent::Session(event)) => return Ok(event),
                Some(_) => {}
                None => return Err(ScriptError::Stopped("the connection driver stopped".into())),
            }
        }
    }
}

fn stopped(reason: confab_protocol::session::OfflineReason) -> ScriptError {
    use confab_protocol::session::OfflineReason;
    match reason {
        OfflineReason::AuthRejected(_) | OfflineReason::LoggedOut => ScriptError::TokenRefused,
        other => ScriptError::Stopped(render::offline_sentence(other)),
    }
}

/// `confab send`: queues one message, waits until the server stored it.
pub async fn send(
    server: &ServerUrl,
    token: &str,
    room: &str,
    text: &str,
    action: bool,
    timeout: Duration,
    reconnect_cap: Option<Duration>,
) -> Result<wire::SendAck, ScriptError> {
    let started = Instant::now();
    let mut connection = Connection::open(server, token, reconnect_cap, timeout).await?;
    connection.ensure_member(room).await?;
    let receipt = connection
        .handle
        .send_message(room, text, action)
        .await
        .map_err(send_error)?;
    // Keep the event channel drained while waiting for the ack.
    let left = timeout.saturating_sub(started.elapsed());
    let wait = async {
        tokio::select! {
            ack = receipt.acked() => ack.map_err(send_error),
            error = drain(&mut connection.events) => Err(error),
        }
    };
    let result = match tokio::time::timeout(left, wait).await {
        Ok(result) => result,
        Err(_) => Err(ScriptError::Stopped(format!(
            "the server did not store the message within {timeout:?}; it was not delivered"
        ))),
    };
    connection.handle.shutdown().await;
    result
}

/// Reads events until the session stops for good; returns why.
async fn drain(events: &mut mpsc::Receiver<DriverEvent>) -> ScriptError {
    loop {
        match events.recv().await {
            Some(DriverEvent::Session(SessionEvent::StateChanged(ConnectionState::Offline(
                reason,
            )))) => return stopped(reason),
            Some(_) => {}
            None => return ScriptError::Stopped("the connection driver stopped".into()),
        }
    }
}

fn send_error(err: SendError) -> ScriptError {
    match err {
        SendError::Refused(error) => {
            ScriptError::Refused(format!("not delivered: {}", error.message))
        }
        SendError::Stopped(reason) => stopped(reason),
        other => ScriptError::Refused(format!("not delivered: {other}")),
    }
}

/// Output format of `confab tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFormat {
    /// `12:04:05 <alice> hello`.
    Text(Style),
    /// One Message per line in the canonical proto3 JSON mapping.
    Json,
}

/// `confab tail`: prints the last `history` messages, then every new one,
/// until interrupted or stdout closes.
pub async fn tail(
    server: &ServerUrl,
    token: &str,
    room: &str,
    history: u32,
    format: TailFormat,
    timeout: Duration,
    reconnect_cap: Option<Duration>,
) -> Result<(), ScriptError> {
    let mut connection = Connection::open(server, token, reconnect_cap, timeout).await?;
    connection.ensure_member(room).await?;
    // Welcome's Resume (or the JoinRoom just answered) activated the room
    // before this request is processed (§10.6), so nothing falls between
    // the page and the live messages; overlap is skipped by seq below.
    let mut printed_upto = 0u64;
    let mut waiting_for_page = history > 0;
    if waiting_for_page {
        let name = room.to_owned();
        connection
            .handle
            .call(move |session, now| session.fetch_history(now, &name, None, history))
            .await
            .map_err(|e| ScriptError::Stopped(e.to_string()))?
            .map_err(|e| ScriptError::Refused(e.to_string()))?;
    }
    let mut held: Vec<wire::Message> = Vec::new();
    eprintln!("following #{room} on {server} (Ctrl-C stops)");
    let mut stdout = std::io::stdout();
    let result = loop {
        let event = tokio::select! {
            event = connection.next_session_event() => event,
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        let event = match event {
            Ok(event) => event,
            Err(err) => break Err(err),
        };
        let mut batch = Vec::new();
        match event {
            SessionEvent::History(page) if waiting_for_page && page.room == room => {
                waiting_for_page = false;
                batch.extend(page.messages);
                batch.append(&mut held);
            }
            SessionEvent::Message { message, .. } if message.room == room => {
                if waiting_for_page {
                    held.push(message);
                } else {
                    batch.push(message);
                }
            }
            SessionEvent::StateChanged(ConnectionState::Reconnecting { at, .. }) => {
                let wait = at.saturating_duration_since(Instant::now()).as_secs_f64();
                eprintln!("connection lost; reconnecting in {wait:.1}s");
            }
            SessionEvent::Welcome(_) => eprintln!("reconnected"),
            SessionEvent::RequestFailed { error, .. } => eprintln!("error: {}", error.message),
            _ => {}
        }
        let write = || -> std::io::Result<()> {
            for message in batch {
                if message.seq <= printed_upto {
                    continue;
                }
                printed_upto = message.seq;
                match format {
                    TailFormat::Json => {
                        // pbjson's mapping of a plain message cannot fail.
                        let line = serde_json::to_string(&message).unwrap_or_default();
                        writeln!(stdout, "{line}")?;
                    }
                    TailFormat::Text(style) => {
                        let time = clock_seconds(message.server_ts_ms);
                        writeln!(stdout, "{}", render::message_line(style, &time, &message))?;
                    }
                }
            }
            stdout.flush()
        };
        if let Err(err) = write() {
            // A closed pipe (`confab tail | head`) is a normal way to stop.
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                break Ok(());
            }
            break Err(ScriptError::Output(err));
        }
    };
    connection.handle.shutdown().await;
    result
}
