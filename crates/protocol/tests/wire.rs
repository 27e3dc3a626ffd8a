//! Pins the wire format: every frame kind round-trips, and insta snapshots
//! hold the exact bytes (hex) and the proto3 JSON of one canonical frame per
//! kind. A snapshot change is a wire change and needs a spec change (§4).

use confab_protocol::codec::{
    DecodeError, decode_client_frame, decode_server_frame, encode_client_frame, encode_server_frame,
};
use confab_protocol::wire::{
    self, ClientFrame, ServerFrame, client_frame::Body as C, server_frame::Body as S,
};

const MAX: usize = 64 * 1024;

fn room_info() -> wire::RoomInfo {
    wire::RoomInfo {
        name: "general".into(),
        topic: "Anything goes".into(),
        member_count: 3,
        online_count: 2,
        last_activity_ms: 1_764_000_000_000,
        head_seq: 42,
        epoch: "9f2c1a7e".into(),
    }
}

fn message() -> wire::Message {
    wire::Message {
        room: "general".into(),
        seq: 42,
        message_id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        sender: "alice".into(),
        client_msg_id: "c-1".into(),
        text: "hello".into(),
        kind: wire::MessageKind::Text as i32,
        server_ts_ms: 1_764_000_000_000,
        redacted: false,
        relation: None,
    }
}

/// One canonical frame per client body kind.
fn client_frames() -> Vec<ClientFrame> {
    vec![
        ClientFrame::request(
            1,
            C::Auth(wire::Auth {
                token: "cft_0123456789abcdef".into(),
                capabilities: vec!["typing".into(), "presence".into()],
                client_name: "confab-cli/0.1".into(),
            }),
        ),
        ClientFrame::request(2, C::Ping(wire::Ping { nonce: 7 })),
        ClientFrame::request(
            3,
            C::ListRooms(wire::ListRooms {
                subscribe: true,
                cursor: "r1.1764547200000.general".into(),
                limit: 50,
            }),
        ),
        ClientFrame::request(
            4,
            C::CreateRoom(wire::CreateRoom {
                name: "general".into(),
                topic: "Anything goes".into(),
            }),
        ),
        ClientFrame::request(
            5,
            C::JoinRoom(wire::JoinRoom {
                name: "general".into(),
            }),
        ),
        ClientFrame::request(
            6,
            C::LeaveRoom(wire::LeaveRoom {
                name: "general".into(),
            }),
        ),
        ClientFrame::request(
            7,
            C::ListMembers(wire::ListMembers {
                room: "general".into(),
            }),
        ),
        ClientFrame::request(
            8,
            C::SendMessage(wire::SendMessage {
                room: "general".into(),
                client_msg_id: "c-1".into(),
                text: "hello".into(),
                kind: wire::MessageKind::Text as i32,
                relation: None,
            }),
        ),
        ClientFrame::request(
            9,
            C::FetchHistory(wire::FetchHistory {
                room: "general".into(),
                anchor: Some(wire::fetch_history::Anchor::BeforeSeq(40)),
                limit: 20,
            }),
        ),
        ClientFrame::request(
            10,
            C::Resume(wire::Resume {
                rooms: vec![wire::RoomPosition {
                    room: "general".into(),
                    last_seq: 40,
                    epoch: "9f2c1a7e".into(),
                }],
            }),
        ),
        ClientFrame::request(
            11,
            C::SetTyping(wire::SetTyping {
                room: "general".into(),
                active: true,
            }),
        ),
        ClientFrame::request(
            12,
            C::MarkRead(wire::MarkRead {
                room: "general".into(),
                seq: 41,
            }),
        ),
    ]
}

/// One canonical frame per server body kind.
fn server_frames() -> Vec<ServerFrame> {
    vec![
        ServerFrame::reply(
            1,
            S::Welcome(wire::Welcome {
                username: "alice".into(),
                session_id: "s-1".into(),
                server_name: "confab-server/0.1.0".into(),
                limits: Some(confab_protocol::limits::ServerLimits::default().to_wire()),
                capabilities: vec!["typing".into(), "read-state".into()],
                token_expires_at_ms: 1_766_592_000_000,
                rooms: vec![room_info()],
                read_states: vec![read_state()],
            }),
        ),
        ServerFrame::reply(2, S::Pong(wire::Pong { nonce: 7 })),
        confab_protocol::error::Rejection::rate_limited(250).into_frame(8),
        ServerFrame::reply(
            3,
            S::RoomList(wire::RoomList {
                rooms: vec![room_info()],
                next_cursor: "r1.1764547200000.general".into(),
            }),
        ),
        ServerFrame::push(S::RoomListUpdate(wire::RoomListUpdate {
            kind: wire::room_list_update::Kind::Changed as i32,
            room: Some(room_info()),
        })),
        ServerFrame::reply(
            5,
            S::RoomJoined(wire::RoomJoined {
                room: Some(room_info()),
            }),
        ),
        ServerFrame::reply(
            6,
            S::RoomLeft(wire::RoomLeft {
                name: "general".into(),
            }),
        ),
        ServerFrame::reply(
            7,
            S::MemberList(wire::MemberList {
                room: "general".into(),
                members: vec![wire::Member {
                    username: "alice".into(),
                    online: true,
                }],
            }),
        ),
        ServerFrame::reply(
            8,
            S::SendAck(wire::SendAck {
                room: "general".into(),
                client_msg_id: "c-1".into(),
                seq: 42,
                message_id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
                server_ts_ms: 1_764_000_000_000,
                duplicate: false,
            }),
        ),
        ServerFrame::push(S::Message(message())),
        ServerFrame::reply(
            9,
            S::HistoryPage(wire::HistoryPage {
                room: "general".into(),
                messages: vec![message()],
                has_more: true,
                head_seq: 42,
                epoch: "9f2c1a7e".into(),
                reactions: vec![],
            }),
        ),
        ServerFrame::reply(
            10,
            S::Resumed(wire::Resumed {
                rooms: vec![wire::RoomResume {
                    room: "general".into(),
                    status: wire::room_resume::Status::Replayed as i32,
                    head_seq: 42,
                    epoch: "9f2c1a7e".into(),
                    replayed: 2,
                }],
            }),
        ),
        ServerFrame::push(S::Presence(wire::Presence {
            room: "general".into(),
            username: "bob".into(),
            kind: wire::presence::Kind::Online as i32,
        })),
        ServerFrame::push(S::Typing(wire::Typing {
            room: "general".into(),
            username: "bob".into(),
            active: true,
            ttl_ms: 6000,
        })),
        ServerFrame::reply(12, S::ReadState(read_state())),
    ]
}

fn read_state() -> wire::ReadState {
    wire::ReadState {
        room: "general".into(),
        read_seq: 40,
        unread_count: 2,
        mention_count: 1,
        counted_seq: 42,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_kind_is_covered() {
    // The fixtures above hold exactly one frame per oneof variant.
    let mut client: Vec<_> = client_frames()
        .iter()
        .map(|f| f.body.as_ref().unwrap().name())
        .collect();
    client.dedup();
    assert_eq!(client.len(), 12);
    let mut server: Vec<_> = server_frames()
        .iter()
        .map(|f| f.body.as_ref().unwrap().name())
        .collect();
    server.dedup();
    assert_eq!(server.len(), 15);
}

#[test]
fn client_frames_round_trip_and_are_pinned() {
    for frame in client_frames() {
        let bytes = encode_client_frame(&frame);
        assert_eq!(decode_client_frame(&bytes, MAX).unwrap(), frame);
        let name = frame.body.as_ref().unwrap().name();
        let json = serde_json::to_string(&frame).unwrap();
        let back: ClientFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back, frame, "JSON round trip of {name}");
        insta::assert_snapshot!(
            format!("client_{name}"),
            format!("hex:  {}\njson: {json}", hex(&bytes))
        );
    }
}

#[test]
fn server_frames_round_trip_and_are_pinned() {
    for frame in server_frames() {
        let bytes = encode_server_frame(&frame);
        assert_eq!(decode_server_frame(&bytes, MAX).unwrap(), frame);
        let name = frame.body.as_ref().unwrap().name();
        let json = serde_json::to_string(&frame).unwrap();
        let back: ServerFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(back, frame, "JSON round trip of {name}");
        insta::assert_snapshot!(
            format!("server_{name}"),
            format!("hex:  {}\njson: {json}", hex(&bytes))
        );
    }
}

/// One relation per kind (§8.6), as sent and as stored.
fn relations() -> Vec<(&'static str, wire::relation::Kind)> {
    use wire::relation::Kind;
    vec![
        ("edit", Kind::Edit(wire::Edit {})),
        ("redact", Kind::Redact(wire::Redact {})),
        (
            "reply",
            Kind::Reply(wire::Reply {
                quote: "hello".into(),
            }),
        ),
        (
            "react",
            Kind::React(wire::React {
                key: "👍".into(),
                remove: true,
            }),
        ),
    ]
}

/// The relation fields pinned like a frame kind: a SendMessage and a
/// stored Message of each relation kind, bytes and proto3 JSON.
#[test]
fn relations_round_trip_and_are_pinned() {
    for (name, kind) in relations() {
        let relation = wire::Relation {
            target_id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            kind: Some(kind),
            target_seq: 42,
        };
        let send = ClientFrame::request(
            8,
            C::SendMessage(wire::SendMessage {
                room: "general".into(),
                client_msg_id: format!("c-{name}"),
                text: if name == "edit" || name == "reply" {
                    "hi".into()
                } else {
                    String::new()
                },
                kind: 0,
                relation: Some(wire::Relation {
                    target_seq: 0,
                    ..relation.clone()
                }),
            }),
        );
        // The stored edit is pinned as one whose target was deleted since:
        // no text, `redacted` set.
        let stored = ServerFrame::push(S::Message(wire::Message {
            seq: 43,
            text: if name == "reply" {
                "hi".into()
            } else {
                String::new()
            },
            relation: Some(relation),
            redacted: name == "edit",
            ..message()
        }));
        let bytes = encode_client_frame(&send);
        assert_eq!(decode_client_frame(&bytes, MAX).unwrap(), send);
        let json = serde_json::to_string(&send).unwrap();
        assert_eq!(serde_json::from_str::<ClientFrame>(&json).unwrap(), send);
        let stored_bytes = encode_server_frame(&stored);
        assert_eq!(decode_server_frame(&stored_bytes, MAX).unwrap(), stored);
        let stored_json = serde_json::to_string(&stored).unwrap();
        assert_eq!(
            serde_json::from_str::<ServerFrame>(&stored_json).unwrap(),
            stored
        );
        insta::assert_snapshot!(
            format!("relation_{name}"),
            format!(
                "send hex:  {}\nsend json: {json}\nstored hex:  {}\nstored json: {stored_json}",
                hex(&bytes),
                hex(&stored_bytes)
            )
        );
    }
}

/// Checks that an error is the expected kind.
type ErrorCheck = fn(&DecodeError) -> bool;

/// Bad input, one driver: (label, bytes, max, expected error).
#[test]
fn bad_input_gets_typed_errors() {
    let send = encode_client_frame(&client_frames()[7]);
    let cases: Vec<(&str, Vec<u8>, usize, ErrorCheck)> = vec![
        ("oversize", vec![0u8; 101], 100, |e| {
            matches!(
                e,
                DecodeError::Oversize {
                    size: 101,
                    max: 100
                }
            )
        }),
        (
            "truncated mid-string",
            send[..send.len() - 3].to_vec(),
            MAX,
            |e| matches!(e, DecodeError::Malformed { .. }),
        ),
        ("garbage", vec![0xff; 16], MAX, |e| {
            matches!(e, DecodeError::Malformed { .. })
        }),
        ("empty envelope", vec![], MAX, |e| {
            matches!(e, DecodeError::UnknownBody { request_id: 0 })
        }),
        // request_id 9 plus an unknown field 99 (varint 1): a newer client's body kind.
        (
            "unknown body",
            vec![0x08, 0x09, 0x98, 0x06, 0x01],
            MAX,
            |e| matches!(e, DecodeError::UnknownBody { request_id: 9 }),
        ),
    ];
    for (label, bytes, max, check) in cases {
        let err = decode_client_frame(&bytes, max).expect_err(label);
        assert!(check(&err), "{label}: got {err:?}");
        let err = decode_server_frame(&bytes, max).expect_err(label);
        assert!(check(&err), "{label} (server side): got {err:?}");
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn any_client_frame() -> impl Strategy<Value = ClientFrame> {
        let text = "\\PC{0,64}";
        (
            any::<u64>(),
            0usize..12,
            text,
            text,
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(request_id, which, a, b, n, flag)| {
                let mut frame = client_frames()[which].clone();
                frame.request_id = request_id;
                match frame.body.as_mut().unwrap() {
                    C::Auth(x) => {
                        x.token = a;
                        x.client_name = b;
                    }
                    C::Ping(x) => x.nonce = n,
                    C::ListRooms(x) => x.subscribe = flag,
                    C::CreateRoom(x) => {
                        x.name = a;
                        x.topic = b;
                    }
                    C::JoinRoom(x) => x.name = a,
                    C::LeaveRoom(x) => x.name = a,
                    C::ListMembers(x) => x.room = a,
                    C::SendMessage(x) => {
                        x.room = a;
                        x.text = b;
                    }
                    C::FetchHistory(x) => {
                        x.room = a;
                        x.anchor = Some(wire::fetch_history::Anchor::AfterSeq(n));
                    }
                    C::Resume(x) => x.rooms[0].last_seq = n,
                    C::SetTyping(x) => {
                        x.room = a;
                        x.active = flag;
                    }
                    C::MarkRead(x) => {
                        x.room = a;
                        x.seq = n;
                    }
                }
                frame
            })
    }

    proptest! {
        #[test]
        fn client_frames_round_trip(frame in any_client_frame()) {
            let bytes = encode_client_frame(&frame);
            prop_assert_eq!(decode_client_frame(&bytes, usize::MAX).unwrap(), frame);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Any outcome is fine except a panic; errors must be typed.
            let _client = decode_client_frame(&bytes, 256);
            let _server = decode_server_frame(&bytes, 256);
        }
    }
}
