//! The stack ceiling: the least a broadcast chat server on Confab's stack
//! can do, to show how far the reference server is from its own
//! foundations.
//!
//! Same stack as `confab-server` (tokio, tokio-tungstenite 0.29 under
//! axum), same confab.v1 frames in and out, and fan-out encodes each push
//! once and shares the bytes, as the reference server does. What it leaves
//! out is everything that makes Confab a chat *system*: no accounts or
//! tokens (Auth is answered without a check), no storage (a seq is a
//! counter, nothing is durable), no rules (no validation, rate limits,
//! membership, resume). Each socket's writer feeds every frame that is
//! queued and flushes once, which is what this stack does best.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use confab_protocol::codec::{decode_client_frame, encode_server_frame};
use confab_protocol::wire::{
    self, ClientFrame, ServerFrame, client_frame::Body as ClientBody,
    server_frame::Body as ServerBody,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// tungstenite read buffer per socket, as in the reference server.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Frames queued per socket, like the reference server's default (§12.4).
const QUEUE_FRAMES: usize = 1024;

#[derive(Debug, Default)]
struct Room {
    seq: u64,
    members: Vec<(u64, mpsc::Sender<Bytes>)>,
}

#[derive(Debug, Default)]
struct Rooms {
    // std Mutex: held only for in-memory updates and try_sends, never across an await.
    rooms: Mutex<HashMap<String, Room>>,
}

/// Binds `addr`; the returned future serves until dropped.
pub async fn bind(
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, serve(listener)))
}

async fn serve(listener: TcpListener) {
    let rooms = Arc::new(Rooms::default());
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        stream.set_nodelay(true).ok();
        next_id += 1;
        tokio::spawn(connection(stream, next_id, Arc::clone(&rooms)));
    }
}

/// Selects confab.v1 like the reference server, so the same client works.
// The signature, error type included, is tungstenite's callback contract.
#[allow(clippy::result_large_err)]
fn select(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(confab_protocol::SUBPROTOCOL),
    );
    Ok(response)
}

async fn connection(stream: TcpStream, id: u64, rooms: Arc<Rooms>) {
    // The reference server's read buffer size, so idle memory compares
    // state, not a tungstenite default (its 128 KiB is touched in full).
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, select, Some(config)).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_FRAMES);
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = Some(first);
            while let Some(bytes) = batch.take() {
                if sink.feed(Message::Binary(bytes)).await.is_err() {
                    return;
                }
                batch = rx.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let sender = format!("c{id}");
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(message)) = source.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        let Ok(ClientFrame { request_id, body }) = decode_client_frame(&bytes, usize::MAX) else {
            continue;
        };
        let reply = match body {
            Some(ClientBody::Auth(_)) => ServerBody::Welcome(wire::Welcome::default()),
            Some(ClientBody::Ping(ping)) => ServerBody::Pong(wire::Pong { nonce: ping.nonce }),
            Some(ClientBody::JoinRoom(wire::JoinRoom { name }))
            | Some(ClientBody::CreateRoom(wire::CreateRoom { name, .. })) => {
                let head_seq = join(&rooms, &name, id, &tx);
                joined.push(name.clone());
                ServerBody::RoomJoined(wire::RoomJoined {
                    room: Some(wire::RoomInfo {
                        name,
                        head_seq,
                        epoch: "ceiling".to_owned(),
                        ..wire::RoomInfo::default()
                    }),
                })
            }
            // A user's further sockets resume rooms instead of joining them
            // (§10.1); with no history here, resuming is joining.
            Some(ClientBody::Resume(resume)) => {
                let mut resumed = Vec::with_capacity(resume.rooms.len());
                for position in resume.rooms {
                    let head_seq = join(&rooms, &position.room, id, &tx);
                    joined.push(position.room.clone());
                    resumed.push(wire::RoomResume {
                        room: position.room,
                        status: wire::room_resume::Status::Replayed as i32,
                        head_seq,
                        epoch: "ceiling".to_owned(),
                        replayed: 0,
                    });
                }
                ServerBody::Resumed(wire::Resumed { rooms: resumed })
            }
            Some(ClientBody::SendMessage(send)) => publish(&rooms, &sender, send),
            _ => continue,
        };
        let frame = encode_server_frame(&ServerFrame::reply(request_id, reply));
        if tx.send(frame).await.is_err() {
            break;
        }
    }
    {
        let mut rooms = rooms.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for name in joined {
            if let Some(room) = rooms.get_mut(&name) {
                room.members.retain(|(member, _)| *member != id);
            }
        }
    }
    drop(tx);
    writer.await.ok();
}

/// Adds socket `id` to `room`; returns the room's head seq.
fn join(rooms: &Rooms, room: &str, id: u64, tx: &mpsc::Sender<Bytes>) -> u64 {
    let mut rooms = rooms.rooms.lock().unwrap_or_else(|e| e.into_inner());
    let room = rooms.entry(room.to_owned()).or_default();
    room.members.push((id, tx.clone()));
    room.seq
}

/// Numbers the message, fans one encoding out to the room, and returns the ack.
fn publish(rooms: &Rooms, sender: &str, send: wire::SendMessage) -> ServerBody {
    let mut rooms = rooms.rooms.lock().unwrap_or_else(|e| e.into_inner());
    let room = rooms.entry(send.room.clone()).or_default();
    room.seq += 1;
    let seq = room.seq;
    // Field sizes like the reference server's (a UUID-sized message id), so
    // both put the same bytes on the wire.
    let message_id = format!("{seq:036}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let push = encode_server_frame(&ServerFrame::push(ServerBody::Message(wire::Message {
        room: send.room.clone(),
        seq,
        message_id: message_id.clone(),
        sender: sender.to_owned(),
        client_msg_id: send.client_msg_id.clone(),
        text: send.text,
        kind: wire::MessageKind::Text as i32,
        server_ts_ms: now_ms,
        redacted: false,
        relation: None,
    })));
    for (_, member) in &room.members {
        // A full queue drops the push; the generator reports it as a drop.
        member.try_send(push.clone()).ok();
    }
    ServerBody::SendAck(wire::SendAck {
        room: send.room,
        client_msg_id: send.client_msg_id,
        seq,
        message_id,
        server_ts_ms: now_ms,
        duplicate: false,
    })
}
