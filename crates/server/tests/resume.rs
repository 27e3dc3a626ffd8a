//! Resume after a dropped connection (§10): replay exactly what was missed,
//! then live; GAP_TOO_LARGE past max_resume_replay; EPOCH_CHANGED and
//! NOT_A_MEMBER.

mod common;

use common::{Client, TestServer, message_seqs, register_and_login};
use confab_protocol::wire::{
    self, client_frame::Body as C, room_resume::Status, server_frame::Body as S,
};

fn status(r: &wire::RoomResume) -> Status {
    Status::try_from(r.status).expect("known status")
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_messages_then_goes_live() {
    let server = TestServer::start(|c| c.limits.max_resume_replay = 5).await;
    let addr = server.addr;
    let (mut alice, _) = Client::new_user(addr, "alice").await;
    let bob_token = register_and_login(addr, "bob").await;
    let (mut bob, _) = Client::authed(addr, "bob", &bob_token, &[]).await;
    let info = alice.create_room("general").await;
    bob.join_room("general").await;
    let epoch = info.epoch.clone();

    for i in 1..=3 {
        alice
            .say("general", &format!("a{i}"), &format!("before drop {i}"))
            .await;
    }
    let seen = message_seqs(&bob.barrier().await);
    assert_eq!(seen.last(), Some(&("general".to_owned(), 3)));

    // Bob's connection drops; Alice keeps talking.
    drop(bob);
    for i in 4..=7 {
        alice
            .say("general", &format!("a{i}"), &format!("while away {i}"))
            .await;
    }

    // Welcome lists the room with its head; Resume from seq 3 replays 4..=7.
    let (mut bob, welcome) = Client::authed(addr, "bob", &bob_token, &[]).await;
    let listed = welcome
        .rooms
        .iter()
        .find(|r| r.name == "general")
        .expect("Welcome lists general");
    assert_eq!((listed.head_seq, &listed.epoch), (7, &epoch));
    let resumed = bob.resume(vec![("general", 3, &epoch)]).await;
    let room = &resumed.rooms[0];
    assert_eq!(
        (status(room), room.head_seq, room.replayed),
        (Status::Replayed, 7, 4)
    );
    let replayed = bob.take_buffered();
    let got: Vec<(String, u64)> = message_seqs(&replayed);
    assert_eq!(
        got,
        (4..=7)
            .map(|s| ("general".to_owned(), s))
            .collect::<Vec<_>>(),
        "exactly the missed seqs, in order, before Resumed"
    );
    assert!(
        replayed.iter().all(|f| f.request_id == 0),
        "replayed messages are pushes"
    );

    // Live messages follow, once.
    alice.say("general", "a8", "live again").await;
    let live = message_seqs(&bob.barrier().await);
    assert_eq!(live, vec![("general".to_owned(), 8)]);
    assert!(bob.barrier().await.is_empty(), "nothing else arrives");

    // Away again, longer than max_resume_replay (5): GAP_TOO_LARGE, no replay.
    drop(bob);
    for i in 9..=15 {
        alice
            .say("general", &format!("a{i}"), &format!("long absence {i}"))
            .await;
    }
    let (mut bob, _) = Client::authed(addr, "bob", &bob_token, &[]).await;
    let resumed = bob.resume(vec![("general", 8, &epoch)]).await;
    let room = &resumed.rooms[0];
    assert_eq!(
        (status(room), room.head_seq, room.replayed),
        (Status::GapTooLarge, 15, 0)
    );
    assert!(
        message_seqs(&bob.take_buffered()).is_empty(),
        "nothing replayed on a gap"
    );
    // §10.4: the client pages history forward to fill the gap...
    let page = bob
        .request(C::FetchHistory(wire::FetchHistory {
            room: "general".into(),
            anchor: Some(wire::fetch_history::Anchor::AfterSeq(8)),
            limit: 4,
        }))
        .await;
    let Some(S::HistoryPage(page)) = page.body else {
        panic!("history page")
    };
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        (seqs, page.has_more, page.head_seq),
        (vec![9, 10, 11, 12], true, 15)
    );
    // ...while the room is live from the head on.
    alice.say("general", "a16", "after the gap").await;
    assert_eq!(
        message_seqs(&bob.barrier().await),
        vec![("general".to_owned(), 16)]
    );

    // A wrong epoch and an unknown room.
    let (mut bob2, _) = Client::authed(addr, "bob", &bob_token, &[]).await;
    let resumed = bob2
        .resume(vec![("general", 16, "not-the-epoch"), ("nowhere", 1, "x")])
        .await;
    assert_eq!(status(&resumed.rooms[0]), Status::EpochChanged);
    assert_eq!(resumed.rooms[0].head_seq, 16);
    assert_eq!(status(&resumed.rooms[1]), Status::NotAMember);
    assert!(message_seqs(&bob2.barrier().await).is_empty());
    server.stop().await;
}
