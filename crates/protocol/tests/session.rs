//! Deterministic tests of the client session state machine: no sockets, no
//! sleeps, no clock. Time is a variable the test advances; the "server" is
//! the test feeding frames.

use std::time::{Duration, Instant};

use confab_protocol::names::ClientMsgId;
use confab_protocol::session::{
    Backoff, ClientSession, ConnectionState, OfflineReason, OutboxEntry, SessionConfig,
    SessionEvent,
};
use confab_protocol::wire::{
    self, ClientFrame, ServerFrame, client_frame::Body as C, fetch_history::Anchor,
    room_resume::Status, server_frame::Body as S,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const EPOCH: &str = "e1";

struct Harness {
    session: ClientSession,
    now: Instant,
    rng: StdRng,
}

fn msg(room: &str, seq: u64, sender: &str) -> wire::Message {
    wire::Message {
        room: room.into(),
        seq,
        message_id: format!("m-{room}-{seq}"),
        sender: sender.into(),
        client_msg_id: format!("c-{room}-{seq}"),
        text: format!("text {seq}"),
        kind: wire::MessageKind::Text as i32,
        server_ts_ms: 0,
        redacted: false,
        relation: None,
    }
}

fn room(name: &str, head_seq: u64) -> wire::RoomInfo {
    wire::RoomInfo {
        name: name.into(),
        head_seq,
        epoch: EPOCH.into(),
        ..Default::default()
    }
}

impl Harness {
    fn new() -> Self {
        Self::with_config(SessionConfig::new("token"))
    }

    fn with_config(config: SessionConfig) -> Self {
        Self {
            session: ClientSession::new(config),
            now: Instant::now(),
            rng: StdRng::seed_from_u64(7),
        }
    }

    fn transmit(&mut self) -> Vec<ClientFrame> {
        std::iter::from_fn(|| self.session.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    fn feed(&mut self, frame: ServerFrame) {
        self.session.handle_frame(self.now, frame);
    }

    /// Connects, answers Auth with a Welcome listing `rooms`, returns what
    /// the session sent after Welcome (Resume first).
    fn connect(&mut self, rooms: Vec<wire::RoomInfo>) -> Vec<ClientFrame> {
        self.session.handle_connected(self.now);
        let auth = self.transmit();
        assert!(
            matches!(auth[0].body, Some(C::Auth(_))),
            "first frame is Auth: {auth:?}"
        );
        self.feed(ServerFrame::reply(
            auth[0].request_id,
            S::Welcome(wire::Welcome {
                username: "me".into(),
                rooms,
                ..Default::default()
            }),
        ));
        assert_eq!(self.session.state(), &ConnectionState::Online);
        self.transmit()
    }

    fn resumed(&mut self, resume: &ClientFrame, outcomes: Vec<(&str, Status, u64)>) {
        let rooms = outcomes
            .into_iter()
            .map(|(room, status, head_seq)| wire::RoomResume {
                room: room.into(),
                status: status as i32,
                head_seq,
                epoch: EPOCH.into(),
                replayed: 0,
            })
            .collect();
        self.feed(ServerFrame::reply(
            resume.request_id,
            S::Resumed(wire::Resumed { rooms }),
        ));
    }

    fn shown(&mut self) -> Vec<(String, u64)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::Message { message, .. } => Some((message.room, message.seq)),
                _ => None,
            })
            .collect()
    }

    fn disconnect(&mut self, code: Option<u16>) {
        self.session
            .handle_disconnected(self.now, code, &mut self.rng);
        let ConnectionState::Reconnecting { at, .. } = *self.session.state() else {
            panic!("expected Reconnecting, got {:?}", self.session.state());
        };
        self.now = at;
        self.session.handle_timeout(self.now);
        assert_eq!(self.session.state(), &ConnectionState::Connecting);
    }
}

fn seqs(room: &str, range: std::ops::RangeInclusive<u64>) -> Vec<(String, u64)> {
    range.map(|s| (room.to_owned(), s)).collect()
}

#[test]
fn resume_after_welcome_names_every_room_at_its_head() {
    let mut h = Harness::new();
    let sent = h.connect(vec![room("a", 5), room("b", 0)]);
    let Some(C::Resume(resume)) = &sent[0].body else {
        panic!("expected Resume, got {sent:?}")
    };
    let got: Vec<_> = resume
        .rooms
        .iter()
        .map(|p| (p.room.as_str(), p.last_seq, p.epoch.as_str()))
        .collect();
    assert_eq!(got, vec![("a", 5, EPOCH), ("b", 0, EPOCH)]);
}

#[test]
fn a_duplicate_delivery_is_shown_once() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.events();
    for seq in [1, 2, 2, 1, 3, 3] {
        h.feed(ServerFrame::push(S::Message(msg("a", seq, "bob"))));
    }
    assert_eq!(h.shown(), seqs("a", 1..=3));
}

#[test]
fn a_gap_triggers_exactly_one_history_request_then_all_in_order() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 2)]);
    h.events();
    // 3 and 4 are lost; 5, 6, 7 arrive live.
    for seq in [5, 6, 7] {
        h.feed(ServerFrame::push(S::Message(msg("a", seq, "bob"))));
    }
    assert!(h.shown().is_empty(), "nothing is shown across a gap");
    let requests = h.transmit();
    assert_eq!(
        requests.len(),
        1,
        "exactly one history request: {requests:?}"
    );
    let Some(C::FetchHistory(fetch)) = &requests[0].body else {
        panic!("{requests:?}")
    };
    assert_eq!(fetch.anchor, Some(Anchor::AfterSeq(2)));
    // The server answers with 3..=6; 5 and 6 are duplicates of held ones.
    h.feed(ServerFrame::reply(
        requests[0].request_id,
        S::HistoryPage(wire::HistoryPage {
            room: "a".into(),
            messages: (3..=6).map(|s| msg("a", s, "bob")).collect(),
            has_more: true,
            head_seq: 7,
            epoch: EPOCH.into(),
            reactions: Default::default(),
        }),
    ));
    assert_eq!(h.shown(), seqs("a", 3..=7));
    // has_more was true but nothing is missing any more: no further request.
    assert!(h.transmit().is_empty());
    h.feed(ServerFrame::push(S::Message(msg("a", 8, "bob"))));
    assert_eq!(h.shown(), seqs("a", 8..=8));
}

#[test]
fn gap_too_large_pages_history_forward_until_has_more_is_false() {
    let mut h = Harness::new();
    h.session.restore_positions([wire::RoomPosition {
        room: "a".into(),
        last_seq: 1,
        epoch: EPOCH.into(),
    }]);
    let sent = h.connect(vec![room("a", 250)]);
    h.resumed(&sent[0], vec![("a", Status::GapTooLarge, 250)]);
    let mut shown = Vec::new();
    let mut after = 1;
    for _ in 0..3 {
        let req = h.transmit();
        assert_eq!(req.len(), 1, "one page request at a time: {req:?}");
        let Some(C::FetchHistory(f)) = &req[0].body else {
            panic!()
        };
        assert_eq!(f.anchor, Some(Anchor::AfterSeq(after)));
        let last = (after + 100).min(250);
        h.feed(ServerFrame::reply(
            req[0].request_id,
            S::HistoryPage(wire::HistoryPage {
                room: "a".into(),
                messages: (after + 1..=last).map(|s| msg("a", s, "bob")).collect(),
                has_more: last < 250,
                head_seq: 250,
                epoch: EPOCH.into(),
                reactions: Default::default(),
            }),
        ));
        shown.extend(h.shown());
        after = last;
    }
    assert_eq!(shown, seqs("a", 2..=250));
    assert!(h.transmit().is_empty());
}

#[test]
fn outbox_survives_reconnect_and_is_resent_in_order_with_the_same_ids() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    let ids: Vec<ClientMsgId> = (1..=3)
        .map(|i| ClientMsgId::parse(format!("cid-{i}")).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        h.session
            .send_message(h.now, "a", &format!("hello {i}"), false, id.clone())
            .unwrap();
    }
    let first = h.transmit();
    assert_eq!(first.len(), 1, "one send in flight by default");
    // The connection drops before any ack.
    h.disconnect(None);
    assert_eq!(h.session.outbox().count(), 3);
    let resent = h.connect(vec![room("a", 0)]);
    let mut sent_ids = Vec::new();
    let mut frames = resent;
    loop {
        let sends: Vec<_> = frames
            .iter()
            .filter_map(|f| match &f.body {
                Some(C::SendMessage(s)) => {
                    Some((f.request_id, s.client_msg_id.clone(), s.room.clone()))
                }
                _ => None,
            })
            .collect();
        if sends.is_empty() {
            break;
        }
        for (request_id, client_msg_id, room) in sends {
            sent_ids.push(client_msg_id.clone());
            h.feed(ServerFrame::reply(
                request_id,
                S::SendAck(wire::SendAck {
                    room,
                    client_msg_id,
                    seq: sent_ids.len() as u64,
                    ..Default::default()
                }),
            ));
        }
        frames = h.transmit();
    }
    let want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(sent_ids, want);
    assert_eq!(h.session.outbox().count(), 0);
}

#[test]
fn restored_outbox_is_sent_after_welcome() {
    let mut h = Harness::new();
    h.session.restore_outbox([OutboxEntry {
        client_msg_id: "saved-1".into(),
        room: "a".into(),
        text: "typed offline".into(),
        action: false,
        relation: None,
    }]);
    let sent = h.connect(vec![room("a", 0)]);
    assert!(matches!(sent[0].body, Some(C::Resume(_))));
    let Some(C::SendMessage(s)) = &sent[1].body else {
        panic!("{sent:?}")
    };
    assert_eq!(s.client_msg_id, "saved-1");
}

#[test]
fn an_ack_for_an_unknown_id_is_ignored() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.session
        .send_message(h.now, "a", "x", false, ClientMsgId::parse("mine").unwrap())
        .unwrap();
    h.transmit();
    h.events();
    h.feed(ServerFrame::reply(
        999,
        S::SendAck(wire::SendAck {
            room: "a".into(),
            client_msg_id: "not-mine".into(),
            seq: 1,
            ..Default::default()
        }),
    ));
    assert!(h.events().is_empty());
    assert_eq!(h.session.outbox().count(), 1);
}

#[test]
fn a_rate_limited_send_is_retried_after_retry_after_without_surfacing_an_error() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.session
        .send_message(h.now, "a", "x", false, ClientMsgId::parse("rl-1").unwrap())
        .unwrap();
    let first = h.transmit();
    h.events();
    h.feed(confab_protocol::error::Rejection::rate_limited(300).into_frame(first[0].request_id));
    assert!(
        h.events()
            .iter()
            .all(|e| matches!(e, SessionEvent::OutboxChanged)),
        "no error for the user"
    );
    assert!(h.transmit().is_empty(), "nothing resent before retry_after");
    let due = h.session.poll_timeout().unwrap();
    assert_eq!(due, h.now + Duration::from_millis(300));
    h.now = due;
    h.session.handle_timeout(h.now);
    let again = h.transmit();
    let Some(C::SendMessage(s)) = &again[0].body else {
        panic!("{again:?}")
    };
    assert_eq!(s.client_msg_id, "rl-1");
}

#[test]
fn a_rejected_token_stops_the_session() {
    let mut h = Harness::new();
    h.session.handle_connected(h.now);
    let auth = h.transmit();
    h.feed(
        confab_protocol::error::Rejection::new(wire::ErrorCode::TokenExpired, "expired")
            .into_frame(auth[0].request_id),
    );
    assert!(matches!(h.session.state(), ConnectionState::Offline(_)));
    // The close that follows does not start a reconnect.
    h.session.handle_disconnected(h.now, Some(4403), &mut h.rng);
    assert!(matches!(h.session.state(), ConnectionState::Offline(_)));
}

#[test]
fn a_new_token_after_rejection_reconnects_with_positions_and_outbox() {
    let mut h = Harness::new();
    let resume = h.connect(vec![room("lobby", 4)]);
    h.resumed(&resume[0], vec![("lobby", Status::Replayed, 4)]);
    h.feed(ServerFrame::push(S::Message(msg("lobby", 5, "bob"))));
    assert_eq!(h.shown(), seqs("lobby", 5..=5));
    // The token expires; a send queued afterwards waits in the outbox.
    h.feed(
        confab_protocol::error::Rejection::new(wire::ErrorCode::TokenExpired, "expired")
            .into_frame(0),
    );
    h.session.handle_disconnected(h.now, Some(4403), &mut h.rng);
    assert!(matches!(
        h.session.state(),
        ConnectionState::Offline(OfflineReason::AuthRejected(_))
    ));
    h.events();
    let queued = h.session.send_message(
        h.now,
        "lobby",
        "hi",
        false,
        ClientMsgId::parse("c1").unwrap(),
    );
    assert!(queued.is_err(), "an offline session takes no sends");
    h.session.reauthenticate("token-2").unwrap();
    assert_eq!(h.session.state(), &ConnectionState::Connecting);
    h.session
        .send_message(
            h.now,
            "lobby",
            "hi",
            false,
            ClientMsgId::parse("c1").unwrap(),
        )
        .unwrap();
    h.session.handle_connected(h.now);
    let auth = h.transmit();
    let Some(C::Auth(sent)) = &auth[0].body else {
        panic!("expected Auth, got {auth:?}");
    };
    assert_eq!(sent.token, "token-2");
    h.feed(ServerFrame::reply(
        auth[0].request_id,
        S::Welcome(wire::Welcome {
            username: "me".into(),
            rooms: vec![room("lobby", 6)],
            ..Default::default()
        }),
    ));
    let after = h.transmit();
    let Some(C::Resume(resume)) = &after[0].body else {
        panic!("expected Resume, got {after:?}");
    };
    assert_eq!(
        resume.rooms[0].last_seq, 5,
        "resumes from the last shown seq"
    );
    assert!(
        matches!(&after[1].body, Some(C::SendMessage(m)) if m.client_msg_id == "c1"),
        "{after:?}"
    );
}

#[test]
fn only_a_rejected_token_can_be_replaced_after_stopping() {
    let mut h = Harness::new();
    h.session.close();
    assert_eq!(
        h.session.reauthenticate("token-2"),
        Err(confab_protocol::session::CommandError::Stopped)
    );
    let mut h = Harness::new();
    h.session.reauthenticate("token-2").unwrap();
    assert_eq!(h.session.state(), &ConnectionState::Connecting);
    h.session.handle_connected(h.now);
    let auth = h.transmit();
    assert!(matches!(&auth[0].body, Some(C::Auth(a)) if a.token == "token-2"));
}

#[test]
fn epoch_change_resets_the_position() {
    let mut h = Harness::new();
    h.session.restore_positions([wire::RoomPosition {
        room: "a".into(),
        last_seq: 90,
        epoch: "old".into(),
    }]);
    let sent = h.connect(vec![room("a", 3)]);
    h.resumed(&sent[0], vec![("a", Status::EpochChanged, 3)]);
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, SessionEvent::EpochChanged { head_seq: 3, .. }))
    );
    h.feed(ServerFrame::push(S::Message(msg("a", 4, "bob"))));
    assert_eq!(h.shown(), seqs("a", 4..=4));
}

#[test]
fn backoff_grows_and_stays_bounded() {
    let backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
    };
    let ceilings: Vec<u128> = (0..10).map(|a| backoff.ceiling(a).as_millis()).collect();
    assert_eq!(
        ceilings,
        vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
    );
    assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(5));
    let mut rng = StdRng::seed_from_u64(1);
    for attempt in 0..40 {
        for _ in 0..50 {
            assert!(backoff.delay(attempt, &mut rng) <= backoff.ceiling(attempt));
        }
    }
    // Full jitter: delays spread over the whole range rather than clustering at the top.
    let samples: Vec<Duration> = (0..200).map(|_| backoff.delay(8, &mut rng)).collect();
    assert!(samples.iter().any(|d| *d < Duration::from_millis(1000)));
    assert!(samples.iter().any(|d| *d > Duration::from_millis(4000)));
}

#[test]
fn reconnect_attempts_back_off_and_reset_on_welcome() {
    let mut h = Harness::new();
    let mut attempts = Vec::new();
    for _ in 0..4 {
        h.session.handle_connect_failed(h.now, &mut h.rng);
        let ConnectionState::Reconnecting { at, attempt } = *h.session.state() else {
            panic!()
        };
        attempts.push(attempt);
        h.now = at;
        h.session.handle_timeout(h.now);
    }
    assert_eq!(attempts, vec![0, 1, 2, 3]);
    h.connect(vec![]);
    h.session.handle_disconnected(h.now, Some(1001), &mut h.rng);
    assert!(matches!(
        h.session.state(),
        ConnectionState::Reconnecting { attempt: 0, .. }
    ));
}

/// a socket refused at the per-user cap (TOO_MANY_CONNECTIONS, then
/// 1013) is retried with growing backoff, not in a tight loop: without a
/// Welcome the attempt counter is never reset.
#[test]
fn refusals_at_the_socket_cap_back_off() {
    let mut h = Harness::new();
    let mut attempts = Vec::new();
    for _ in 0..5 {
        h.session.handle_connected(h.now);
        let auth = h.transmit();
        assert!(matches!(auth[0].body, Some(C::Auth(_))), "{auth:?}");
        h.feed(
            confab_protocol::error::Rejection::too_many_connections(32)
                .into_frame(auth[0].request_id),
        );
        h.session.handle_disconnected(h.now, Some(1013), &mut h.rng);
        let ConnectionState::Reconnecting { at, attempt } = *h.session.state() else {
            panic!("1013 reconnects, got {:?}", h.session.state());
        };
        attempts.push(attempt);
        h.now = at;
        h.session.handle_timeout(h.now);
        assert_eq!(h.session.state(), &ConnectionState::Connecting);
    }
    assert_eq!(
        attempts,
        vec![0, 1, 2, 3, 4],
        "each refusal backs off further"
    );
}

/// §13.2: which closes lead to an automatic reconnect. One driver, many codes;
/// `None` is a transport failure without a close frame.
#[test]
fn close_codes_decide_whether_to_reconnect() {
    let cases = [
        (None, true),
        (Some(1000), false),
        (Some(1001), true),
        (Some(1003), false),
        (Some(1007), false),
        (Some(1009), false),
        (Some(1011), true),
        (Some(1013), true),
        (Some(4400), false),
        (Some(4401), false),
        (Some(4403), false),
        (Some(4408), true),
        (Some(4410), false),
        (Some(4429), true),
        (Some(4504), true),
    ];
    for (code, reconnects) in cases {
        let mut h = Harness::new();
        h.connect(vec![]);
        h.session.handle_disconnected(h.now, code, &mut h.rng);
        let reconnecting = matches!(h.session.state(), ConnectionState::Reconnecting { .. });
        assert_eq!(
            reconnecting,
            reconnects,
            "close {code:?}: {:?}",
            h.session.state()
        );
    }
}

#[test]
fn an_unanswered_request_times_out() {
    let mut h = Harness::new();
    h.connect(vec![]);
    h.events();
    let id = h.session.join_room(h.now, "a").unwrap();
    h.now += Duration::from_secs(11);
    h.session.handle_timeout(h.now);
    assert!(h.events().iter().any(
        |e| matches!(e, SessionEvent::RequestTimedOut { request_id, .. } if *request_id == id)
    ));
}

#[test]
fn a_timed_out_gap_fill_is_asked_for_again_and_the_late_reply_is_harmless() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.events();
    h.feed(ServerFrame::push(S::Message(msg("a", 3, "bob"))));
    let first = h.transmit();
    assert_eq!(first.len(), 1);
    h.now += Duration::from_secs(11);
    h.session.handle_timeout(h.now);
    let again = h.transmit();
    assert_eq!(again.len(), 1, "the fill is requested again: {again:?}");
    let Some(C::FetchHistory(f)) = &again[0].body else {
        panic!("{again:?}")
    };
    assert_eq!(f.anchor, Some(Anchor::AfterSeq(0)));
    let page = |id| {
        ServerFrame::reply(
            id,
            S::HistoryPage(wire::HistoryPage {
                room: "a".into(),
                messages: (1..=2).map(|s| msg("a", s, "bob")).collect(),
                has_more: false,
                head_seq: 3,
                epoch: EPOCH.into(),
                reactions: Default::default(),
            }),
        )
    };
    // The late reply to the first request is ignored; the second fills the gap.
    h.feed(page(first[0].request_id));
    h.feed(page(again[0].request_id));
    assert_eq!(h.shown(), seqs("a", 1..=3));
}

#[test]
fn a_timed_out_send_is_resent_with_the_same_id_and_acked_once() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.session
        .send_message(
            h.now,
            "a",
            "x",
            false,
            ClientMsgId::parse("slow-1").unwrap(),
        )
        .unwrap();
    let first = h.transmit();
    h.events();
    h.now += Duration::from_secs(11);
    h.session.handle_timeout(h.now);
    let again = h.transmit();
    let Some(C::SendMessage(s)) = &again[0].body else {
        panic!("{again:?}")
    };
    assert_eq!(s.client_msg_id, "slow-1");
    assert_ne!(again[0].request_id, first[0].request_id);
    let ack = wire::SendAck {
        room: "a".into(),
        client_msg_id: "slow-1".into(),
        seq: 1,
        ..Default::default()
    };
    h.feed(ServerFrame::reply(
        first[0].request_id,
        S::SendAck(ack.clone()),
    ));
    h.feed(ServerFrame::reply(
        again[0].request_id,
        S::SendAck(wire::SendAck {
            duplicate: true,
            ..ack
        }),
    ));
    let acks = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, SessionEvent::Acked(_)))
        .count();
    assert_eq!(acks, 1);
    assert_eq!(h.session.outbox().count(), 0);
}

#[test]
fn list_rooms_follows_next_cursor_and_reports_every_room_once() {
    let mut h = Harness::new();
    h.connect(vec![]);
    h.events();
    h.session.list_rooms(h.now, true).expect("online");
    let first = h.transmit();
    let Some(C::ListRooms(list)) = &first[0].body else {
        panic!("expected ListRooms, got {first:?}")
    };
    assert!(list.subscribe && list.cursor.is_empty() && list.limit == 0);
    // Page 1 of 2: the session asks for the next page itself, unsubscribed.
    h.feed(ServerFrame::reply(
        first[0].request_id,
        S::RoomList(wire::RoomList {
            rooms: vec![room("b", 0), room("a", 0)],
            next_cursor: "c1".into(),
        }),
    ));
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, SessionEvent::RoomList(_))),
        "nothing reported before the last page"
    );
    let second = h.transmit();
    let Some(C::ListRooms(next)) = &second[0].body else {
        panic!("expected the next ListRooms, got {second:?}")
    };
    assert_eq!((next.cursor.as_str(), next.subscribe), ("c1", false));
    // Page 2 repeats "a" (its activity moved it) and ends the list.
    h.feed(ServerFrame::reply(
        second[0].request_id,
        S::RoomList(wire::RoomList {
            rooms: vec![room("a", 1), room("c", 0)],
            next_cursor: String::new(),
        }),
    ));
    let lists: Vec<Vec<String>> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::RoomList(rooms) => Some(rooms.into_iter().map(|r| r.name).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(lists, vec![vec!["b", "a", "c"]]);
    assert!(h.transmit().is_empty(), "no further page asked for");
}

// ----- read state (§11.3) ---------------------------------------------------

fn read_state(
    room: &str,
    read_seq: u64,
    unread: u32,
    mentions: u32,
    counted: u64,
) -> wire::ReadState {
    wire::ReadState {
        room: room.into(),
        read_seq,
        unread_count: unread,
        mention_count: mentions,
        counted_seq: counted,
    }
}

impl Harness {
    /// Like `connect`, with read states in Welcome.
    fn connect_with_reads(
        &mut self,
        rooms: Vec<wire::RoomInfo>,
        reads: Vec<wire::ReadState>,
    ) -> Vec<ClientFrame> {
        self.session.handle_connected(self.now);
        let auth = self.transmit();
        self.feed(ServerFrame::reply(
            auth[0].request_id,
            S::Welcome(wire::Welcome {
                username: "me".into(),
                capabilities: vec!["read-state".into()],
                rooms,
                read_states: reads,
                ..Default::default()
            }),
        ));
        self.transmit()
    }

    fn counts(&self, room: &str) -> (u64, u32, u32) {
        let read = self.session.read_state(room).expect("a read state");
        (read.read_seq(), read.unread_count(), read.mention_count())
    }
}

fn marks(frames: &[ClientFrame]) -> Vec<(u64, String, u64)> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(C::MarkRead(m)) => Some((f.request_id, m.room.clone(), m.seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn welcome_counts_then_live_messages_add_to_them() {
    let mut h = Harness::new();
    let sent = h.connect_with_reads(
        vec![room("lobby", 5)],
        vec![read_state("lobby", 3, 2, 1, 5)],
    );
    assert_eq!(h.counts("lobby"), (3, 2, 1));
    // A replayed message the Welcome counts already counted changes nothing.
    h.feed(ServerFrame::push(S::Message(msg("lobby", 5, "ann"))));
    let mut mention = msg("lobby", 6, "ann");
    mention.text = "hey @me".into();
    h.feed(ServerFrame::push(S::Message(mention)));
    h.feed(ServerFrame::push(S::Message(msg("lobby", 7, "me"))));
    assert_eq!(
        h.counts("lobby"),
        (3, 3, 2),
        "ann's two count, my own does not"
    );
    drop(sent);
}

#[test]
fn marks_are_coalesced_one_in_flight_per_room() {
    let mut h = Harness::new();
    h.connect_with_reads(
        vec![room("lobby", 9)],
        vec![read_state("lobby", 0, 9, 0, 9)],
    );
    h.events();
    h.session.mark_read(h.now, "lobby", 3).expect("mark");
    h.session.mark_read(h.now, "lobby", 5).expect("mark");
    h.session.mark_read(h.now, "lobby", 4).expect("mark");
    let first = marks(&h.transmit());
    assert_eq!(first.len(), 1, "one MarkRead in flight: {first:?}");
    assert_eq!(first[0].2, 3);
    h.feed(ServerFrame::reply(
        first[0].0,
        S::ReadState(read_state("lobby", 3, 6, 0, 9)),
    ));
    assert_eq!(
        h.counts("lobby").0,
        5,
        "the reply is older than the user's read"
    );
    let second = marks(&h.transmit());
    assert_eq!(
        second.iter().map(|m| m.2).collect::<Vec<_>>(),
        [5],
        "the rest goes as one"
    );
    h.feed(ServerFrame::reply(
        second[0].0,
        S::ReadState(read_state("lobby", 5, 4, 0, 9)),
    ));
    assert!(marks(&h.transmit()).is_empty());
    assert_eq!(h.counts("lobby"), (5, 4, 0));
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, SessionEvent::ReadState { room, .. } if room == "lobby"))
    );
}

#[test]
fn a_push_from_another_device_moves_the_marker_but_never_back() {
    let mut h = Harness::new();
    h.connect_with_reads(
        vec![room("lobby", 4)],
        vec![read_state("lobby", 0, 4, 1, 4)],
    );
    h.feed(ServerFrame::push(S::Message(msg("lobby", 5, "ann"))));
    // Read elsewhere up to 4 when the head was 4; seq 5 came after.
    h.feed(ServerFrame::push(S::ReadState(read_state(
        "lobby", 4, 0, 0, 4,
    ))));
    assert_eq!(h.counts("lobby"), (4, 1, 0));
    h.feed(ServerFrame::push(S::ReadState(read_state(
        "lobby", 2, 2, 0, 4,
    ))));
    assert_eq!(h.counts("lobby").0, 4, "a stale state is ignored");
}

#[test]
fn a_mark_made_offline_is_sent_after_reconnect() {
    let mut h = Harness::new();
    h.connect_with_reads(
        vec![room("lobby", 6)],
        vec![read_state("lobby", 0, 6, 0, 6)],
    );
    h.session.handle_disconnected(h.now, None, &mut h.rng);
    h.session
        .mark_read(h.now, "lobby", 6)
        .expect("mark offline");
    assert_eq!(h.counts("lobby"), (6, 0, 0), "the counts drop at once");
    if let ConnectionState::Reconnecting { at, .. } = *h.session.state() {
        h.now = at;
    }
    h.session.handle_timeout(h.now);
    let sent = h.connect_with_reads(
        vec![room("lobby", 6)],
        vec![read_state("lobby", 0, 6, 0, 6)],
    );
    assert_eq!(
        h.counts("lobby"),
        (6, 0, 0),
        "Welcome's older marker does not undo it"
    );
    assert_eq!(marks(&sent).iter().map(|m| m.2).collect::<Vec<_>>(), [6]);
}

#[test]
fn reconnect_now_skips_the_backoff_wait_only_while_waiting() {
    let mut h = Harness::new();
    h.session.reconnect_now();
    assert_eq!(
        h.session.state(),
        &ConnectionState::Connecting,
        "nothing to skip yet"
    );
    h.connect(vec![]);
    h.session.reconnect_now();
    assert_eq!(
        h.session.state(),
        &ConnectionState::Online,
        "online stays online"
    );
    h.session.handle_disconnected(h.now, None, &mut h.rng);
    assert!(matches!(
        h.session.state(),
        ConnectionState::Reconnecting { .. }
    ));
    h.session.reconnect_now();
    assert_eq!(h.session.state(), &ConnectionState::Connecting);
}

#[test]
fn a_view_merges_its_page_with_what_came_live_and_never_repeats() {
    let mut h = Harness::new();
    h.connect(vec![room("general", 1)]);
    h.events();
    let id = h.session.open_view(h.now, "general", 20).expect("online");
    h.transmit();
    // Live 2 and 3 arrive before the page that also holds them: held.
    for seq in [2, 3] {
        h.feed(ServerFrame::push(S::Message(msg("general", seq, "bob"))));
    }
    assert!(h.shown().is_empty(), "held until the view opens");
    let page = wire::HistoryPage {
        room: "general".into(),
        messages: (1..=3).map(|seq| msg("general", seq, "bob")).collect(),
        head_seq: 3,
        ..Default::default()
    };
    h.feed(ServerFrame::reply(id, S::HistoryPage(page)));
    let views: Vec<Vec<u64>> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::View { messages, .. } => Some(messages.iter().map(|m| m.seq).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(views, [vec![1, 2, 3]]);
    // Seq 3 pushed again (stored before the page was read, pushed after):
    // not shown twice; seq 4 is.
    h.feed(ServerFrame::push(S::Message(msg("general", 3, "bob"))));
    h.feed(ServerFrame::push(S::Message(msg("general", 4, "bob"))));
    assert_eq!(h.shown(), [("general".to_owned(), 4)]);
}

#[test]
fn a_view_that_fails_releases_what_it_held() {
    let mut h = Harness::new();
    h.connect(vec![room("general", 1)]);
    h.events();
    h.session.open_view(h.now, "general", 20).expect("online");
    h.feed(ServerFrame::push(S::Message(msg("general", 2, "bob"))));
    h.session.handle_disconnected(h.now, None, &mut h.rng);
    assert_eq!(
        h.shown(),
        [("general".to_owned(), 2)],
        "nothing is lost with the view"
    );
}

/// What the session told about own sends: (event, client_msg_id, extra).
fn own_send_events(events: &[SessionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::SendPending(entry) => Some(format!("pending {}", entry.client_msg_id)),
            SessionEvent::Delivered {
                entry,
                seq,
                was_pending,
                ..
            } => Some(format!(
                "delivered {} seq {seq} was_pending {was_pending}",
                entry.client_msg_id
            )),
            SessionEvent::Message {
                message,
                from_self,
                sent_here,
                ..
            } => Some(format!(
                "message {} from_self {from_self} sent_here {sent_here}",
                message.client_msg_id
            )),
            _ => None,
        })
        .collect()
}

fn echo(client_msg_id: &str, seq: u64) -> ServerFrame {
    let mut message = msg("a", seq, "me");
    message.client_msg_id = client_msg_id.into();
    ServerFrame::push(S::Message(message))
}

fn ack_of(frame: &ClientFrame, seq: u64) -> ServerFrame {
    let Some(C::SendMessage(send)) = &frame.body else {
        panic!("not a send: {frame:?}")
    };
    ServerFrame::reply(
        frame.request_id,
        S::SendAck(wire::SendAck {
            room: send.room.clone(),
            client_msg_id: send.client_msg_id.clone(),
            seq,
            server_ts_ms: 1_000 + seq as i64,
            ..Default::default()
        }),
    )
}

#[test]
fn an_own_send_is_delivered_once_whether_its_echo_or_its_ack_comes_first() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.events();
    // Echo first (§8.4 pushes before acking): delivered at the echo.
    h.session
        .send_message(h.now, "a", "one", false, ClientMsgId::parse("one").unwrap())
        .unwrap();
    let send = h.transmit().remove(0);
    h.feed(echo("one", 1));
    h.feed(ack_of(&send, 1));
    assert_eq!(
        own_send_events(&h.events()),
        [
            "delivered one seq 1 was_pending false",
            "message one from_self true sent_here true",
        ]
    );
    // Ack first: delivered at the ack; the echo after it is still ours.
    h.session
        .send_message(h.now, "a", "two", false, ClientMsgId::parse("two").unwrap())
        .unwrap();
    let send = h.transmit().remove(0);
    h.feed(ack_of(&send, 2));
    h.feed(echo("two", 2));
    assert_eq!(
        own_send_events(&h.events()),
        [
            "delivered two seq 2 was_pending false",
            "message two from_self true sent_here true",
        ]
    );
    // The same user's send from another device is only a message.
    h.feed(echo("elsewhere", 3));
    assert_eq!(
        own_send_events(&h.events()),
        ["message elsewhere from_self true sent_here false"]
    );
}

#[test]
fn a_slow_send_is_pending_after_the_grace_then_delivered() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.events();
    h.session
        .send_message(
            h.now,
            "a",
            "slow",
            false,
            ClientMsgId::parse("slow").unwrap(),
        )
        .unwrap();
    let send = h.transmit().remove(0);
    assert!(
        own_send_events(&h.events()).is_empty(),
        "not pending at once"
    );
    let due = h.session.poll_timeout().expect("a deadline");
    assert_eq!(due, h.now + SessionConfig::new("t").pending_after);
    h.now = due;
    h.session.handle_timeout(h.now);
    assert_eq!(own_send_events(&h.events()), ["pending slow"]);
    h.now += Duration::from_secs(1);
    h.session.handle_timeout(h.now);
    assert!(own_send_events(&h.events()).is_empty(), "pending once");
    h.feed(ack_of(&send, 1));
    assert_eq!(
        own_send_events(&h.events()),
        ["delivered slow seq 1 was_pending true"]
    );
}

#[test]
fn sends_queued_offline_or_restored_are_pending_at_once_and_delivered_after_reconnect() {
    let mut h = Harness::new();
    h.session.restore_outbox([OutboxEntry {
        client_msg_id: "saved".into(),
        room: "a".into(),
        text: "from last time".into(),
        action: false,
        relation: None,
    }]);
    h.session
        .send_message(
            h.now,
            "a",
            "typed",
            false,
            ClientMsgId::parse("typed").unwrap(),
        )
        .unwrap();
    assert_eq!(
        own_send_events(&h.events()),
        ["pending saved", "pending typed"]
    );
    let sent = h.connect(vec![room("a", 0)]);
    let saved = sent
        .iter()
        .find(|f| matches!(&f.body, Some(C::SendMessage(_))))
        .expect("the restored send goes out")
        .clone();
    h.feed(ack_of(&saved, 1));
    h.feed(echo("saved", 1));
    let typed = h.transmit().remove(0);
    h.feed(echo("typed", 2));
    h.feed(ack_of(&typed, 2));
    assert_eq!(
        own_send_events(&h.events()),
        [
            "delivered saved seq 1 was_pending true",
            "message saved from_self true sent_here true",
            "delivered typed seq 2 was_pending true",
            "message typed from_self true sent_here true",
        ]
    );
}

#[test]
fn a_send_refused_for_good_lets_the_next_one_go_at_once() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    for id in ["first", "second"] {
        h.session
            .send_message(h.now, "a", id, false, ClientMsgId::parse(id).unwrap())
            .unwrap();
    }
    let first = h.transmit();
    assert_eq!(first.len(), 1, "one send in flight");
    h.feed(ServerFrame::reply(
        first[0].request_id,
        S::Error(wire::Error {
            code: wire::ErrorCode::TextTooLong as i32,
            message: "too long".into(),
            ..Default::default()
        }),
    ));
    let next = h.transmit();
    let [
        ClientFrame {
            body: Some(C::SendMessage(send)),
            ..
        },
    ] = &next[..]
    else {
        panic!("the second send goes out at once: {next:?}");
    };
    assert_eq!(send.client_msg_id, "second");
}

#[test]
fn a_refused_send_is_never_delivered() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.session
        .send_message(h.now, "a", "no", false, ClientMsgId::parse("no").unwrap())
        .unwrap();
    let send = h.transmit().remove(0);
    h.events();
    h.feed(ServerFrame::reply(
        send.request_id,
        S::Error(wire::Error {
            code: wire::ErrorCode::NotAMember as i32,
            message: "not a member".into(),
            ..Default::default()
        }),
    ));
    let events = h.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::SendFailed { .. }))
    );
    h.now += Duration::from_secs(5);
    h.session.handle_timeout(h.now);
    assert!(own_send_events(&h.events()).is_empty());
}

#[test]
fn each_message_carries_the_epoch_its_seq_counts_in() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.events();
    h.feed(ServerFrame::push(S::Message(msg("a", 1, "bob"))));
    let epochs: Vec<(u64, String)> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::Message { message, epoch, .. } => Some((message.seq, epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, [(1, EPOCH.to_owned())]);
}

#[test]
fn no_deadline_is_left_in_the_past_once_the_token_is_refused_while_online() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.transmit();
    // The keepalive comes due while the token expires.
    h.now += Duration::from_secs(60);
    h.feed(ServerFrame::push(S::Error(wire::Error {
        code: wire::ErrorCode::TokenExpired as i32,
        message: "expired".into(),
        ..Default::default()
    })));
    assert!(matches!(h.session.state(), ConnectionState::Offline(_)));
    for _ in 0..3 {
        if let Some(at) = h.session.poll_timeout() {
            assert!(at > h.now, "a deadline already due would spin the driver");
            h.session.handle_timeout(h.now);
        }
    }
}

#[test]
fn a_send_on_the_connection_whose_token_was_refused_goes_first_after_a_new_login() {
    let mut h = Harness::new();
    h.connect(vec![room("a", 0)]);
    h.session
        .send_message(
            h.now,
            "a",
            "x",
            false,
            ClientMsgId::parse("in-flight").unwrap(),
        )
        .unwrap();
    assert_eq!(h.transmit().len(), 1, "on the wire");
    h.feed(ServerFrame::push(S::Error(wire::Error {
        code: wire::ErrorCode::TokenRevoked as i32,
        message: "revoked".into(),
        ..Default::default()
    })));
    h.session.reauthenticate("new-token").unwrap();
    let after = h.connect(vec![room("a", 0)]);
    assert!(
        after.iter().any(|f| matches!(
            &f.body,
            Some(C::SendMessage(s)) if s.client_msg_id == "in-flight"
        )),
        "resent at once, not after its old request timed out: {after:?}"
    );
}
