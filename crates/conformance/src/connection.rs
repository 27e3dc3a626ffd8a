//! One WebSocket connection of an actor: open, send, and an ordered stream
//! of events read by a background task.
//!
//! Opening is the bot SDK's connector ([`confab_bot_sdk::net`]), given
//! whatever the scenario offers (subprotocols, Origin, a query, a fault
//! proxy to dial); frames on the socket, malformed ones included, are
//! this module's own.
//!
//! The reader task never interprets frames: it decodes them and queues them
//! in arrival order, so steps consume exactly what the server sent, in the
//! order it sent it. Nothing here waits for time to pass except a step's
//! own deadline for the next event.

use std::time::Duration;

use bytes::Bytes;
use confab_bot_sdk::ServerUrl;
use confab_bot_sdk::net::{self, ConnectError, ConnectOptions, Stream, WebSocketOptions};
use confab_protocol::codec::{decode_server_frame, encode_client_frame};
use confab_protocol::wire::{ClientFrame, ServerFrame};
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

/// Something that happened on a connection, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// A binary message that decoded as a ServerFrame.
    Frame(ServerFrame),
    /// A binary message that is not a valid ServerFrame.
    Undecodable {
        /// Why.
        reason: String,
        /// Its length.
        len: usize,
    },
    /// A text message (confab.v1 servers send binary only, §3.3).
    Text(String),
    /// The server sent a close frame.
    Closed {
        /// The close code, if the frame had one.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
    /// The connection ended without a close frame.
    Ended {
        /// What the transport reported.
        reason: String,
    },
}

impl Event {
    /// Whether the connection is over after this event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Event::Closed { .. } | Event::Ended { .. })
    }
}

/// Why a connection could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// TCP connect or the WebSocket handshake failed, other than by an HTTP refusal.
    #[error(transparent)]
    Connect(ConnectError),
    /// Writing a message failed (the connection is gone).
    #[error("cannot send: {0}")]
    Send(String),
    /// No response within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// How to open a connection.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The server (its name and whether it speaks TLS).
    pub server: ServerUrl,
    /// The `ws://` URL (used for the request line and Host header).
    pub ws_url: String,
    /// Where to connect TCP (the server, or a fault proxy in front of it).
    pub connect_to: String,
    /// Subprotocols offered (§3.2).
    pub subprotocols: Vec<String>,
    /// Origin header, as a browser would send (§15).
    pub origin: Option<String>,
    /// Handshake deadline.
    pub timeout: Duration,
}

/// Result of an upgrade attempt.
#[derive(Debug)]
pub enum Opened {
    /// 101: the connection is open.
    Upgraded(Connection),
    /// The server refused the upgrade with an HTTP response.
    Refused {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: Vec<u8>,
    },
}

type Sink = SplitSink<WebSocketStream<Stream>, Message>;

/// An open WebSocket connection.
#[derive(Debug)]
pub struct Connection {
    sink: Sink,
    events: mpsc::UnboundedReceiver<Event>,
    cancel: CancellationToken,
    /// The subprotocol the server selected.
    pub subprotocol: Option<String>,
    /// Whether a terminal event was already delivered.
    pub finished: bool,
    /// Count of WebSocket Ping control frames received (§12.1 heartbeats).
    /// Kept apart from the event stream: tungstenite answers them itself,
    /// and only heartbeat scenarios care.
    pings: tokio::sync::watch::Receiver<u64>,
}

impl Connection {
    /// Opens a connection; an HTTP refusal is a result, not an error.
    pub async fn open(options: &OpenOptions) -> Result<Opened, ConnectionError> {
        tokio::time::timeout(options.timeout, Self::open_inner(options))
            .await
            .map_err(|_| ConnectionError::Timeout(options.timeout))?
    }

    async fn open_inner(options: &OpenOptions) -> Result<Opened, ConnectionError> {
        let mut connect = WebSocketOptions::default();
        connect.connect = ConnectOptions::default()
            .timeout(options.timeout)
            .via(options.connect_to.clone());
        connect.url = Some(options.ws_url.clone());
        connect.subprotocols = options.subprotocols.clone();
        connect.origin = options.origin.clone();
        // The suite must be able to receive anything a server sends, so it
        // imposes no size limit of its own.
        connect.config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        match net::connect_websocket(&options.server, &connect).await {
            Ok(socket) => Ok(Opened::Upgraded(Self::start(
                socket.stream,
                socket.subprotocol,
            ))),
            Err(ConnectError::Refused { status, body, .. }) => Ok(Opened::Refused { status, body }),
            Err(err) => Err(ConnectionError::Connect(err)),
        }
    }

    fn start(ws: WebSocketStream<Stream>, subprotocol: Option<String>) -> Self {
        let (sink, mut stream) = ws.split();
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let (ping_count, pings) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    () = token.cancelled() => return,
                    next = stream.next() => next,
                };
                let event = match next {
                    Some(Ok(Message::Binary(bytes))) => {
                        match decode_server_frame(&bytes, usize::MAX) {
                            Ok(frame) => Event::Frame(frame),
                            Err(e) => Event::Undecodable {
                                reason: e.to_string(),
                                len: bytes.len(),
                            },
                        }
                    }
                    Some(Ok(Message::Text(text))) => Event::Text(text.to_string()),
                    Some(Ok(Message::Close(frame))) => Event::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    },
                    // Control frames are answered by tungstenite itself.
                    Some(Ok(Message::Ping(_))) => {
                        ping_count.send_modify(|n| *n += 1);
                        continue;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Err(e)) => Event::Ended {
                        reason: e.to_string(),
                    },
                    None => Event::Ended {
                        reason: "connection closed without a close frame".into(),
                    },
                };
                let terminal = event.is_terminal();
                if tx.send(event).is_err() || terminal {
                    return;
                }
            }
        });
        Self {
            sink,
            events,
            cancel,
            subprotocol,
            finished: false,
            pings,
        }
    }

    /// Waits until at least `count` WebSocket Pings have arrived in total;
    /// false if the deadline passes first.
    pub async fn await_pings(&mut self, count: u64, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.pings.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Sends one ClientFrame as a binary message.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ConnectionError> {
        self.send_message(Message::Binary(encode_client_frame(frame)))
            .await
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ConnectionError> {
        self.send_message(Message::Text(text.into())).await
    }

    /// Sends a text message with an arbitrary payload, bypassing the UTF-8
    /// check a `Message::Text` would need (§3.3 invalid-UTF-8 tests).
    pub async fn send_text_bytes(&mut self, bytes: Vec<u8>) -> Result<(), ConnectionError> {
        use tungstenite::protocol::frame::Frame;
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        let frame = Frame::message(Bytes::from(bytes), OpCode::Data(Data::Text), true);
        self.send_message(Message::Frame(frame)).await
    }

    /// Sends arbitrary binary bytes.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ConnectionError> {
        self.send_message(Message::Binary(Bytes::from(bytes))).await
    }

    async fn send_message(&mut self, message: Message) -> Result<(), ConnectionError> {
        self.sink
            .send(message)
            .await
            .map_err(|e| ConnectionError::Send(e.to_string()))
    }

    /// The next event, or `None` if none arrives within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        if self.finished {
            return None;
        }
        let event = tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten();
        if event.as_ref().is_some_and(Event::is_terminal) {
            self.finished = true;
        }
        event
    }

    /// An event already received, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        let event = self.events.try_recv().ok();
        if event.as_ref().is_some_and(Event::is_terminal) {
            self.finished = true;
        }
        event
    }

    /// Sends a normal close (1000). The caller reads the server's close.
    pub async fn start_close(&mut self) -> Result<(), ConnectionError> {
        let frame = CloseFrame {
            code: WsCloseCode::Normal,
            reason: "bye".into(),
        };
        self.send_message(Message::Close(Some(frame))).await
    }

    /// Drops the connection without a close frame.
    pub fn abort(self) {
        // Cancelling ends the reader task, which drops its half; dropping
        // `self` drops the other half, closing the socket.
        self.cancel.cancel();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
