//! 10,000 random and mutated frames against a real server, spread over many
//! sockets (authenticated and not). Every frame gets typed replies and/or a
//! clean close with a code of §13.2: never a reset (a close without a close
//! frame), never a hang (every wait is bounded), never a server panic (a
//! panic hook records any). Meanwhile an honest pair keeps chatting, and
//! every one of its messages must be acked and delivered.
//!
//! Seeded: the seed is printed, and `CONFAB_FUZZ_SEED=<n>` replays a run.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Client, Event, TestServer, register_and_login, within};
use confab_protocol::codec::{DEFAULT_MAX_FRAME_BYTES, encode_client_frame};
use confab_protocol::error::CloseCode;
use confab_protocol::wire::{
    self, ClientFrame, ErrorCode, client_frame::Body as C, server_frame::Body as S,
};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Frames in all.
const FRAMES: u64 = 10_000;
/// Concurrent fuzzing sockets.
const WORKERS: u64 = 16;
/// Request ids of our own barrier Pings live above this; generated frames
/// stay below it (a mutation could in principle reach it; the Pong's nonce
/// is checked as well).
const BARRIER_IDS: u64 = 1 << 62;

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn string(&mut self) -> String {
        const PARTS: [&str; 10] = [
            "lobby", "general", "r1", "Bad Name", "", "x", "ü", "\u{202e}", "a-b", "zz",
        ];
        match self.below(4) {
            0 => {
                let len = self.below(40) as usize;
                String::from_utf8_lossy(&self.bytes(len)).into_owned()
            }
            1 => "y".repeat(self.below(5000) as usize),
            _ => PARTS[self.below(PARTS.len() as u64) as usize].to_owned(),
        }
    }
}

/// A well-formed ClientFrame of a random kind with random fields.
fn valid_frame(rng: &mut Rng) -> ClientFrame {
    let body = match rng.below(11) {
        0 => C::Auth(wire::Auth {
            token: rng.string(),
            capabilities: vec![rng.string()],
            client_name: rng.string(),
        }),
        1 => C::Ping(wire::Ping { nonce: rng.next() }),
        2 => C::ListRooms(wire::ListRooms {
            subscribe: rng.below(2) == 0,
            cursor: rng.string(),
            limit: rng.below(1000) as u32,
        }),
        3 => C::CreateRoom(wire::CreateRoom {
            name: rng.string(),
            topic: rng.string(),
        }),
        4 => C::JoinRoom(wire::JoinRoom { name: rng.string() }),
        5 => C::LeaveRoom(wire::LeaveRoom { name: rng.string() }),
        6 => C::ListMembers(wire::ListMembers { room: rng.string() }),
        7 => C::SendMessage(wire::SendMessage {
            room: rng.string(),
            client_msg_id: rng.string(),
            text: rng.string(),
            kind: rng.below(4) as i32,
            relation: None,
        }),
        8 => C::FetchHistory(wire::FetchHistory {
            room: rng.string(),
            anchor: None,
            limit: rng.next() as u32,
        }),
        9 => C::Resume(wire::Resume {
            rooms: (0..rng.below(4))
                .map(|_| wire::RoomPosition {
                    room: rng.string(),
                    last_seq: rng.next(),
                    epoch: rng.string(),
                })
                .collect(),
        }),
        _ => C::SetTyping(wire::SetTyping {
            room: rng.string(),
            active: rng.below(2) == 0,
        }),
    };
    let request_id = match rng.below(8) {
        0 => 0,
        _ => rng.below(BARRIER_IDS),
    };
    ClientFrame::request(request_id, body)
}

/// One fuzz message: random, mutated, or one of the awkward shapes.
fn fuzz_message(rng: &mut Rng) -> Message {
    let valid = || encode_client_frame(&ClientFrame::request(1, C::Ping(wire::Ping { nonce: 1 })));
    let mut bytes = encode_client_frame(&valid_frame(rng)).to_vec();
    match rng.below(100) {
        // Random bytes.
        0..=14 => {
            let len = rng.below(200) as usize;
            Message::Binary(rng.bytes(len).into())
        }
        // Truncated valid frames.
        15..=29 => {
            let keep = rng.below(bytes.len() as u64) as usize;
            bytes.truncate(keep);
            Message::Binary(bytes.into())
        }
        // Flipped bytes.
        30..=44 => {
            for _ in 0..=rng.below(3) {
                let i = rng.below(bytes.len() as u64) as usize;
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            Message::Binary(bytes.into())
        }
        // Huge or overlong varints: a length or a request id of 10+ bytes.
        45..=52 => {
            let mut v = vec![if rng.below(2) == 0 { 0x08 } else { 0x0a }];
            v.extend(std::iter::repeat_n(0xff, 9 + rng.below(3) as usize));
            v.push(rng.below(2) as u8);
            Message::Binary(v.into())
        }
        // Unknown fields appended (must be ignored: §4.4).
        53..=62 => {
            bytes.extend([0xf8, 0x07, rng.next() as u8 & 0x7f]); // field 127, varint
            bytes.extend([0x92, 0x7d, 0x02, b'h', b'i']); // field 2002, bytes
            Message::Binary(bytes.into())
        }
        // Wrong wire types for known fields.
        63..=70 => {
            let shapes: [&[u8]; 4] = [
                &[0x0a, 0x01, 0x00],       // request_id as bytes
                &[0x0d, 1, 2, 3, 4],       // request_id as fixed32
                &[0x08, 0x01, 0x10, 0x05], // a message field as varint
                &[0x08, 0x01, 0x1b, 0x1c], // start/end group
            ];
            Message::Binary(shapes[rng.below(4) as usize].to_vec().into())
        }
        // Text messages, valid and not.
        71..=76 => Message::Text(rng.string().into()),
        77..=80 => Message::Frame(Frame::message(
            vec![b'a', 0xc3, 0x28, 0xff],
            OpCode::Data(Data::Text),
            true,
        )),
        // Empty messages.
        81..=85 => Message::Binary(Vec::new().into()),
        // Oversize.
        86 => Message::Binary(
            vec![0x0a; DEFAULT_MAX_FRAME_BYTES + 1 + rng.below(1000) as usize].into(),
        ),
        // Valid frames as they are.
        _ => {
            if rng.below(10) == 0 {
                Message::Binary(valid())
            } else {
                Message::Binary(bytes.into())
            }
        }
    }
}

/// What one socket did with one fuzz frame.
enum Outcome {
    Open,
    Closed(u16),
}

/// Reads until our barrier Pong or a close; every frame must have decoded
/// (the client panics otherwise) and every close must carry a §13.2 code.
async fn settle(client: &mut Client, barrier: Option<(u64, u64)>) -> Outcome {
    loop {
        match client.read().await {
            Event::Frame(frame) => {
                if let Some((id, nonce)) = barrier
                    && frame.request_id == id
                    && matches!(frame.body, Some(S::Pong(wire::Pong { nonce: n })) if n == nonce)
                {
                    return Outcome::Open;
                }
                if let Some(S::Error(e)) = &frame.body {
                    let code = ErrorCode::try_from(e.code).expect("a known error code");
                    assert_ne!(code, ErrorCode::Unspecified, "R-13.1.1");
                }
            }
            Event::Closed(code) => {
                // Answer the Close, as a client should; the socket may be gone.
                within("close reply", client.ws.close(None)).await.ok();
                let code = code.expect("a close frame, not a reset or a bare TCP close");
                assert!(
                    CloseCode::from_u16(code).is_some(),
                    "close code {code} is not in §13.2"
                );
                return Outcome::Closed(code);
            }
        }
    }
}

struct Tally {
    frames: AtomicU64,
    sockets: AtomicU64,
    /// Closes seen, by code.
    closes: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

async fn worker(addr: std::net::SocketAddr, token: String, seed: u64, tally: Arc<Tally>) {
    let mut rng = Rng(seed);
    let mut barrier_id = BARRIER_IDS + (seed << 32 >> 8);
    while tally.frames.fetch_add(1, Ordering::Relaxed) < FRAMES {
        // A third of the sockets stay unauthenticated.
        let authed = rng.below(3) != 0;
        let mut client = if authed {
            Client::authed(addr, "fuzzer", &token, &[]).await.0
        } else {
            Client::connect(addr).await
        };
        tally.sockets.fetch_add(1, Ordering::Relaxed);
        loop {
            let message = fuzz_message(&mut rng);
            // A write may fail once the server has closed; the read says why.
            within("fuzz send", client.ws.send(message)).await.ok();
            let outcome = if authed {
                barrier_id += 1;
                let nonce = rng.next();
                let ping = ClientFrame::request(barrier_id, C::Ping(wire::Ping { nonce }));
                within(
                    "barrier send",
                    client.ws.send(Message::Binary(encode_client_frame(&ping))),
                )
                .await
                .ok();
                settle(&mut client, Some((barrier_id, nonce))).await
            } else {
                // Before Auth nothing but Auth is accepted, so the frame
                // closes the socket; a frame that did not (an Auth with
                // request_id 0 gets an Error and may try again) is followed
                // by text, which always closes.
                within("text send", client.ws.send(Message::Text("x".into())))
                    .await
                    .ok();
                settle(&mut client, None).await
            };
            match outcome {
                Outcome::Closed(code) => {
                    *tally
                        .closes
                        .lock()
                        .expect("tally lock")
                        .entry(code)
                        .or_default() += 1;
                    break;
                }
                Outcome::Open => {
                    if tally.frames.fetch_add(1, Ordering::Relaxed) >= FRAMES {
                        return;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_frames_get_typed_answers_and_honest_users_chat_on() {
    let seed = std::env::var("CONFAB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("fuzz seed {seed} (replay: CONFAB_FUZZ_SEED={seed})");

    // Any panic, in the server's tasks or ours, is recorded here.
    static PANICKED: AtomicBool = AtomicBool::new(false);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        default_hook(info);
    }));

    let server = TestServer::start(|c| {
        // Sockets refused with unread input are held for a moment after
        // their close; they must not hit the per-user cap here, nor the
        // per-address cap (every fuzz socket comes from 127.0.0.1): this
        // test is about frames, admission has tests of its own.
        c.max_sockets_per_user = 10_000;
        c.max_connections_per_ip = 0;
    })
    .await;
    let addr = server.addr;
    let token = register_and_login(addr, "fuzzer").await;
    let (mut sender, _) = Client::new_user(addr, "honest-a").await;
    let (mut receiver, _) = Client::new_user(addr, "honest-b").await;
    sender.create_room("honest-room").await;
    receiver.join_room("honest-room").await;

    let done = Arc::new(AtomicBool::new(false));
    let honest = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut received = Vec::new();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) || i < 5 {
                i += 1;
                let ack = sender
                    .say("honest-room", &format!("h-{i}"), &format!("still here {i}"))
                    .await;
                acked.push(ack.seq);
                let seq = ack.seq;
                receiver
                    .expect(&format!("honest message {seq}"), |f| {
                        matches!(&f.body, Some(S::Message(m)) if m.room == "honest-room" && m.seq == seq)
                    })
                    .await;
                received.push(seq);
            }
            (acked, received)
        })
    };

    let tally = Arc::new(Tally {
        frames: AtomicU64::new(0),
        sockets: AtomicU64::new(0),
        closes: std::sync::Mutex::new(std::collections::BTreeMap::new()),
    });
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        workers.spawn(worker(
            addr,
            token.clone(),
            seed.wrapping_add(w.wrapping_mul(0x9e37_79b9)),
            Arc::clone(&tally),
        ));
    }
    while let Some(result) = workers.join_next().await {
        result.expect("fuzz worker");
    }
    done.store(true, Ordering::Relaxed);
    let (acked, received) = within("honest pair", honest).await.expect("honest task");
    let closes = tally.closes.lock().expect("tally lock").clone();
    println!(
        "fuzz: {} frames over {} sockets, closes by code {closes:?}; honest pair exchanged {} messages",
        tally.frames.load(Ordering::Relaxed).min(FRAMES),
        tally.sockets.load(Ordering::Relaxed),
        acked.len()
    );
    // The generator reaches every refusal path, in both phases.
    for code in [1003, 1007, 1009, 4400, 4401, 4403] {
        assert!(
            closes.contains_key(&code),
            "no close {code} in this run: {closes:?}"
        );
    }
    assert_eq!(acked, received, "every honest message acked and delivered");
    let expected: Vec<u64> = (1..=acked.len() as u64).collect();
    assert_eq!(acked, expected, "honest seqs are consecutive: nothing lost");
    // The server still serves a fresh client.
    let (mut late, _) = Client::new_user(addr, "late").await;
    late.barrier().await;
    server.stop().await;
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "a panic happened (see above); seed {seed}"
    );
}
