//! The store contract: what every [`Store`] backend must do, written once
//! and run against each backend, one `#[tokio::test]` per case per backend
//! (`sqlite::append_in_batch_dedupe`, `postgres::append_in_batch_dedupe`, ...).
//! Modelled on matrix-sdk-base's `store/integration_tests.rs`.
//!
//! # Adding a backend
//!
//! 1. Write a type implementing [`Backend`]: `fresh()` makes a new, empty
//!    database that lives as long as the value (a temporary directory, a
//!    fresh PostgreSQL schema or database, ...), and `open()` opens a store
//!    on it, migrated; `open()` is called again after `Store::close` to
//!    check what survives a restart, so it must reach the same data.
//! 2. Add one line at the bottom of this file:
//!    `mod postgres { store_contract!(super::PostgresBackend); }`
//!    A backend that needs an external service that may be absent overrides
//!    [`Backend::available`]: without the service it prints one line saying
//!    what to set and returns `false` (the case is skipped), and it fails
//!    instead when `CONFAB_REQUIRE_SERVICES=1`, so CI cannot skip silently
//!    (see `PostgresBackend` and `pg/mod.rs`).
//!
//! # Adding a case
//!
//! Write `async fn case_name<B: Backend>()` in [`cases`] and add its name to
//! the list in [`store_contract!`]; every backend then runs it.
//!
//! Every case uses a real database (SQLite: a file in a temporary
//! directory) and waits on nothing but the store's own futures.

mod pg;

use std::sync::Arc;

use confab_server::storage::Store;
use confab_server::storage::sqlite::SqliteStore;

/// A storage backend under the contract.
trait Backend: Sized + Send + Sync + 'static {
    /// A new, empty database, alive as long as the returned value.
    async fn fresh() -> Self;
    /// A store on this database, migrated; called again after `close` to
    /// reopen the same data.
    async fn open(&self) -> Arc<dyn Store>;
    /// Whether the backend can run here; `false` skips the case `test`
    /// (after saying why, on one line).
    fn available(_test: &str) -> bool {
        true
    }
}

/// One case per test, per backend.
macro_rules! store_contract {
    ($backend:ty) => {
        store_contract!(@cases $backend;
            users_are_unique_and_found_by_name,
            tokens_resolve_and_revoke_once,
            rooms_are_unique_and_load_with_their_creator,
            concurrent_creates_of_one_room_make_one,
            membership_is_idempotent,
            member_versions_count_real_changes,
            room_record_and_versions_match_load_rooms,
            rooms_of_user_follows_membership,
            append_assigns_gapless_seqs_per_room,
            append_repeat_is_the_original,
            append_repeat_with_other_room_or_text_conflicts,
            append_in_batch_dedupe,
            append_to_unknown_room_stores_nothing,
            append_of_only_repeats_changes_no_room,
            concurrent_batches_on_two_rooms_stay_gapless,
            concurrent_batches_on_one_room_stay_gapless,
            history_ranges_and_has_more,
            history_of_unknown_room_is_not_found,
            messages_between_is_a_half_open_range,
            sent_message_finds_the_key_per_sender,
            everything_survives_reopen,
            read_state_counts_others_messages_and_mentions,
            read_marker_never_moves_back_or_past_the_head,
            read_marker_of_a_new_member_starts_at_the_head,
            read_state_survives_reopen,
            relations_are_messages_with_a_checked_target,
            redaction_removes_content,
            reactions_once_per_user_and_key,
            history_pages_count_reactions,
        );
    };
    (@cases $backend:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !<$backend as crate::Backend>::available(stringify!($case)) {
                    return;
                }
                crate::cases::$case::<$backend>().await;
            }
        )*
    };
}

/// SQLite: a database file in a fresh temporary directory.
#[derive(Debug)]
struct SqliteBackend {
    dir: tempfile::TempDir,
}

impl Backend for SqliteBackend {
    async fn fresh() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    async fn open(&self) -> Arc<dyn Store> {
        let store = SqliteStore::open(None, &self.dir.path().join("confab.db"))
            .await
            .expect("open the SQLite store");
        Arc::new(store)
    }
}

/// PostgreSQL: a fresh schema in the database `CONFAB_TEST_DATABASE_URL`
/// names, dropped afterwards (see `pg/mod.rs`).
#[derive(Debug)]
struct PostgresBackend {
    schema: pg::TestSchema,
}

impl Backend for PostgresBackend {
    async fn fresh() -> Self {
        let schema = pg::TestSchema::create("store contract")
            .await
            .expect("available() checked CONFAB_TEST_DATABASE_URL");
        Self { schema }
    }

    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.schema.open().await)
    }

    fn available(test: &str) -> bool {
        pg::database_url(&format!("postgres::{test}")).is_some()
    }
}

mod cases {
    use std::sync::Arc;

    use confab_protocol::names::{ClientMsgId, RoomName, Username};
    use confab_protocol::rules::HistoryRange;
    use confab_protocol::wire::MessageKind;
    use confab_server::storage::{
        AppendOutcome, NewMessage, RoomId, Store, StoreError, StoredMessage, UserId,
    };

    use super::Backend;

    type User = (UserId, Username);
    type Room = (RoomId, RoomName);

    fn username(s: &str) -> Username {
        Username::parse(s).expect("valid username")
    }

    fn room_name(s: &str) -> RoomName {
        RoomName::parse(s).expect("valid room name")
    }

    /// Two users and two rooms, both created by the first user at time 1.
    struct World {
        store: Arc<dyn Store>,
        alice: User,
        bob: User,
        one: Room,
        two: Room,
    }

    async fn world(store: Arc<dyn Store>) -> World {
        let mut users = Vec::new();
        for name in ["alice", "bob"] {
            let name = username(name);
            let id = store.create_user(&name, "phc", 1).await.expect("user");
            users.push((id, name));
        }
        let mut rooms = Vec::new();
        for name in ["one", "two"] {
            let name = room_name(name);
            let id = store
                .create_room(&name, "", "epoch-1", users[0].0, 1)
                .await
                .expect("room");
            rooms.push((id, name));
        }
        let two = rooms.pop().expect("two");
        let one = rooms.pop().expect("one");
        let bob = users.pop().expect("bob");
        let alice = users.pop().expect("alice");
        World {
            store,
            alice,
            bob,
            one,
            two,
        }
    }

    fn msg(sender: &User, room: &Room, id: &str, text: &str, ts: i64) -> NewMessage {
        NewMessage {
            room_id: room.0,
            room: room.1.clone(),
            sender_id: sender.0,
            sender: sender.1.clone(),
            client_msg_id: ClientMsgId::parse(id).expect("valid id"),
            text: text.to_owned(),
            kind: MessageKind::Text,
            server_ts_ms: ts,
            relation: None,
        }
    }

    fn summary(outcomes: &[AppendOutcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                AppendOutcome::Stored(m) => format!("stored {} {}", m.room, m.seq),
                AppendOutcome::Duplicate(m) => format!("duplicate {} {}", m.room, m.seq),
                AppendOutcome::Conflict => "conflict".to_owned(),
                AppendOutcome::Refused(r) => format!("refused {r:?}"),
            })
            .collect()
    }

    fn stored(outcome: &AppendOutcome) -> &StoredMessage {
        match outcome {
            AppendOutcome::Stored(m) => m,
            other => panic!("expected Stored, got {other:?}"),
        }
    }

    /// (name, head_seq, last_activity_ms) of every room, by name.
    async fn heads(store: &dyn Store) -> Vec<(String, u64, i64)> {
        let mut rooms: Vec<_> = store
            .load_rooms()
            .await
            .expect("load rooms")
            .into_iter()
            .map(|r| (r.name.as_str().to_owned(), r.head_seq, r.last_activity_ms))
            .collect();
        rooms.sort();
        rooms
    }

    async fn seqs(store: &dyn Store, room: &RoomName) -> Vec<u64> {
        store
            .messages_between(room, 0, u64::MAX >> 1, 10_000)
            .await
            .expect("read")
            .iter()
            .map(|m| m.seq)
            .collect()
    }

    pub async fn users_are_unique_and_found_by_name<B: Backend>() {
        let db = B::fresh().await;
        let store = db.open().await;
        let alice = username("alice");
        let a = store.create_user(&alice, "hash-a", 1).await.expect("alice");
        let b = store
            .create_user(&username("bob"), "hash-b", 2)
            .await
            .expect("bob");
        assert_ne!(a, b, "user ids are distinct");
        let again = store.create_user(&alice, "other", 3).await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists)),
            "a taken name is refused: {again:?}"
        );
        let found = store
            .user_credentials("alice")
            .await
            .expect("read")
            .expect("alice exists");
        assert_eq!(
            (
                found.id,
                found.username.as_str(),
                found.password_hash.as_str()
            ),
            (a, "alice", "hash-a"),
            "the refused second create changed nothing"
        );
        assert!(
            store
                .user_credentials("carol")
                .await
                .expect("read")
                .is_none()
        );
        store.close().await.expect("close");
    }

    pub async fn tokens_resolve_and_revoke_once<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        s.insert_token("live", w.alice.0, 10, 1_000)
            .await
            .expect("token");
        s.insert_token("old", w.bob.0, 10, 20).await.expect("token");
        let t = s.token("live").await.expect("read").expect("live exists");
        assert_eq!(
            (t.user_id, t.username.as_str(), t.expires_ms, t.revoked),
            (w.alice.0, "alice", 1_000, false)
        );
        assert!(s.token("nope").await.expect("read").is_none());
        assert!(
            s.revoke_token("live", 100).await.expect("revoke"),
            "a live token is revoked"
        );
        assert!(
            !s.revoke_token("live", 100).await.expect("revoke"),
            "but only once"
        );
        assert!(
            s.token("live")
                .await
                .expect("read")
                .expect("still there")
                .revoked
        );
        assert!(
            !s.revoke_token("old", 100).await.expect("revoke"),
            "an expired token is not live"
        );
        assert!(!s.revoke_token("nope", 100).await.expect("revoke"));
        let dup = s.insert_token("live", w.bob.0, 10, 1_000).await;
        assert!(matches!(dup, Err(StoreError::AlreadyExists)), "{dup:?}");
        w.store.close().await.expect("close");
    }

    pub async fn rooms_are_unique_and_load_with_their_creator<B: Backend>() {
        let db = B::fresh().await;
        let store = db.open().await;
        let alice = username("alice");
        let a = store.create_user(&alice, "phc", 1).await.expect("user");
        let name = room_name("general");
        let id = store
            .create_room(&name, "the topic", "ep", a, 7)
            .await
            .expect("room");
        let again = store.create_room(&name, "other", "ep2", a, 8).await;
        assert!(matches!(again, Err(StoreError::AlreadyExists)), "{again:?}");
        let rooms = store.load_rooms().await.expect("load");
        assert_eq!(rooms.len(), 1, "{rooms:?}");
        let r = &rooms[0];
        assert_eq!(
            (
                r.id,
                r.name.as_str(),
                r.topic.as_str(),
                r.epoch.as_str(),
                r.head_seq,
                r.last_activity_ms
            ),
            (id, "general", "the topic", "ep", 0, 7)
        );
        assert_eq!(r.members, [alice]);
        store.close().await.expect("close");
    }

    pub async fn concurrent_creates_of_one_room_make_one<B: Backend>() {
        let db = B::fresh().await;
        let store = db.open().await;
        let mut creators = Vec::new();
        for i in 0..8 {
            let id = store
                .create_user(&username(&format!("user{i}")), "phc", 1)
                .await
                .expect("user");
            creators.push(id);
        }
        let tasks: Vec<_> = creators
            .iter()
            .map(|&creator| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .create_room(&room_name("race"), "", "ep", creator, 2)
                        .await
                })
            })
            .collect();
        let mut won = Vec::new();
        for (task, creator) in tasks.into_iter().zip(&creators) {
            match task.await.expect("task") {
                Ok(_) => won.push(*creator),
                Err(StoreError::AlreadyExists) => {}
                Err(other) => panic!("a losing create must be AlreadyExists, got {other:?}"),
            }
        }
        assert_eq!(won.len(), 1, "exactly one create wins: {won:?}");
        let rooms = store.load_rooms().await.expect("load");
        assert_eq!(rooms.len(), 1);
        assert_eq!(
            rooms[0].members.len(),
            1,
            "only the winner is a member: {:?}",
            rooms[0].members
        );
        store.close().await.expect("close");
    }

    pub async fn membership_is_idempotent<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        let members = |rooms: Vec<confab_server::storage::RoomRecord>| {
            let mut m: Vec<String> = rooms
                .iter()
                .find(|r| r.id == w.one.0)
                .expect("room one")
                .members
                .iter()
                .map(|u| u.as_str().to_owned())
                .collect();
            m.sort();
            m
        };
        s.add_member(w.one.0, w.bob.0, 5).await.expect("add");
        s.add_member(w.one.0, w.bob.0, 6).await.expect("add again");
        assert_eq!(
            members(s.load_rooms().await.expect("load")),
            ["alice", "bob"]
        );
        s.remove_member(w.one.0, w.alice.0).await.expect("remove");
        s.remove_member(w.one.0, w.alice.0)
            .await
            .expect("remove again");
        assert_eq!(members(s.load_rooms().await.expect("load")), ["bob"]);
        w.store.close().await.expect("close");
    }

    /// Cluster mode's repair from storage: every add or remove that changes
    /// the members bumps the room's version by one, in the same write; a
    /// no-op leaves it, and reports the version as it is.
    pub async fn member_versions_count_real_changes<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        let version = |rooms: Vec<confab_server::storage::RoomRecord>| {
            rooms
                .iter()
                .find(|r| r.id == w.one.0)
                .expect("room one")
                .member_version
        };
        let start = version(s.load_rooms().await.expect("load"));
        assert_eq!(
            s.add_member(w.one.0, w.bob.0, 5).await.expect("add"),
            start + 1
        );
        assert_eq!(
            s.add_member(w.one.0, w.bob.0, 6).await.expect("again"),
            start + 1
        );
        assert_eq!(
            s.remove_member(w.one.0, w.bob.0).await.expect("remove"),
            start + 2
        );
        assert_eq!(
            s.remove_member(w.one.0, w.bob.0).await.expect("again"),
            start + 2
        );
        assert_eq!(version(s.load_rooms().await.expect("load")), start + 2);
        // The other room's version did not move.
        let two = |rooms: Vec<confab_server::storage::RoomRecord>| {
            rooms
                .iter()
                .find(|r| r.id == w.two.0)
                .expect("room two")
                .member_version
        };
        assert_eq!(two(s.load_rooms().await.expect("load")), 0);
        w.store.close().await.expect("close");
    }

    /// `room_record` reads one room as `load_rooms` does, and
    /// `room_versions` the heads and versions of all of them.
    pub async fn room_record_and_versions_match_load_rooms<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        s.add_member(w.two.0, w.bob.0, 5).await.expect("add");
        let (a, b) = (&w.alice, &w.bob);
        s.append_batch(&[msg(a, &w.two, "1", "x", 10), msg(b, &w.two, "2", "y", 11)])
            .await
            .expect("append");
        let loaded = s.load_rooms().await.expect("load");
        for room in &loaded {
            let one = s
                .room_record(&room.name)
                .await
                .expect("read")
                .expect("found");
            assert_eq!(
                (
                    one.id,
                    &one.name,
                    one.head_seq,
                    one.member_version,
                    &one.epoch
                ),
                (
                    room.id,
                    &room.name,
                    room.head_seq,
                    room.member_version,
                    &room.epoch
                )
            );
            let (mut m1, mut m2) = (one.members.clone(), room.members.clone());
            m1.sort();
            m2.sort();
            assert_eq!(m1, m2, "members of {}", room.name);
        }
        let missing = confab_protocol::names::RoomName::parse("nowhere").expect("name");
        assert!(s.room_record(&missing).await.expect("read").is_none());
        let versions = s.room_versions().await.expect("versions");
        let expected: Vec<_> = loaded
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.name.clone(),
                    r.head_seq,
                    r.last_activity_ms,
                    r.member_version,
                )
            })
            .collect();
        let got: Vec<_> = versions
            .into_iter()
            .map(|v| {
                (
                    v.id,
                    v.name,
                    v.head_seq,
                    v.last_activity_ms,
                    v.member_version,
                )
            })
            .collect();
        assert_eq!(
            got, expected,
            "room_versions is load_rooms' heads and their times, by id"
        );
        assert_eq!(
            got.iter().find(|v| v.0 == w.two.0).map(|v| (v.2, v.4)),
            Some((2, 1))
        );
        w.store.close().await.expect("close");
    }

    /// What a cluster node reads before a Welcome: the user's rooms, sorted.
    pub async fn rooms_of_user_follows_membership<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        let names = |rooms: Vec<confab_protocol::names::RoomName>| {
            rooms
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        let mut all = vec![w.one.1.as_str().to_owned(), w.two.1.as_str().to_owned()];
        all.sort();
        assert_eq!(names(s.rooms_of_user(w.alice.0).await.expect("read")), all);
        assert!(s.rooms_of_user(w.bob.0).await.expect("read").is_empty());
        s.add_member(w.two.0, w.bob.0, 5).await.expect("add");
        assert_eq!(
            names(s.rooms_of_user(w.bob.0).await.expect("read")),
            [w.two.1.as_str()]
        );
        s.remove_member(w.two.0, w.alice.0).await.expect("remove");
        assert_eq!(
            names(s.rooms_of_user(w.alice.0).await.expect("read")),
            [w.one.1.as_str()]
        );
        w.store.close().await.expect("close");
    }

    /// R-8.2.1, R-8.2.2: seqs start at 1 and continue each room's head.
    pub async fn append_assigns_gapless_seqs_per_room<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let (a, b) = (&w.alice, &w.bob);
        let first = w
            .store
            .append_batch(&[
                msg(a, &w.one, "1", "x", 10),
                msg(b, &w.one, "1", "y", 11),
                msg(a, &w.two, "2", "z", 12),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&first),
            ["stored one 1", "stored one 2", "stored two 1"]
        );
        let second = w
            .store
            .append_batch(&[msg(a, &w.one, "3", "x", 20)])
            .await
            .expect("append");
        assert_eq!(summary(&second), ["stored one 3"]);
        let m = stored(&second[0]);
        assert_eq!(
            (
                m.sender.as_str(),
                m.client_msg_id.as_str(),
                m.text.as_str(),
                m.server_ts_ms
            ),
            ("alice", "3", "x", 20)
        );
        let ids: std::collections::HashSet<&str> = first
            .iter()
            .chain(&second)
            .map(|o| stored(o).message_id.as_str())
            .collect();
        assert_eq!(ids.len(), 4, "R-8.2.3: message ids are unique");
        assert_eq!(
            heads(&*w.store).await,
            [("one".to_owned(), 3, 20), ("two".to_owned(), 1, 12)]
        );
        assert_eq!(seqs(&*w.store, &w.one.1).await, [1, 2, 3]);
        w.store.close().await.expect("close");
    }

    /// R-8.5.1, R-8.5.2: a repeat in a later batch gets the original, unchanged.
    pub async fn append_repeat_is_the_original<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let first = w
            .store
            .append_batch(&[msg(&w.alice, &w.one, "k", "hello", 10)])
            .await
            .expect("append");
        let original = stored(&first[0]).clone();
        let again = w
            .store
            .append_batch(&[msg(&w.alice, &w.one, "k", "hello", 99)])
            .await
            .expect("append");
        match &again[..] {
            [AppendOutcome::Duplicate(m)] => assert_eq!(m, &original),
            other => panic!("expected one Duplicate, got {other:?}"),
        }
        assert_eq!(seqs(&*w.store, &w.one.1).await, [1], "no second row");
        assert_eq!(heads(&*w.store).await[0], ("one".to_owned(), 1, 10));
        w.store.close().await.expect("close");
    }

    /// R-8.5.3: same key, other room or other text.
    pub async fn append_repeat_with_other_room_or_text_conflicts<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store
            .append_batch(&[msg(&w.alice, &w.one, "k", "hello", 10)])
            .await
            .expect("append");
        let out = w
            .store
            .append_batch(&[
                msg(&w.alice, &w.one, "k", "changed", 20),
                msg(&w.alice, &w.two, "k", "hello", 21),
                msg(&w.bob, &w.two, "k", "hello", 22),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&out),
            ["conflict", "conflict", "stored two 1"],
            "R-8.5.5: bob's key is his own"
        );
        w.store.close().await.expect("close");
    }

    /// R-8.5.4: one row per key inside one batch too.
    pub async fn append_in_batch_dedupe<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let a = &w.alice;
        let out = w
            .store
            .append_batch(&[
                msg(a, &w.one, "k", "hello", 10),
                msg(a, &w.one, "k", "hello", 11),
                msg(a, &w.one, "k", "other", 12),
                msg(a, &w.two, "k", "hello", 13),
                msg(a, &w.one, "j", "next", 14),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&out),
            [
                "stored one 1",
                "duplicate one 1",
                "conflict",
                "conflict",
                "stored one 2"
            ]
        );
        let AppendOutcome::Duplicate(dup) = &out[1] else {
            unreachable!("checked above")
        };
        assert_eq!(
            dup,
            stored(&out[0]),
            "the duplicate is the first, unchanged"
        );
        assert_eq!(seqs(&*w.store, &w.one.1).await, [1, 2]);
        assert_eq!(heads(&*w.store).await[0], ("one".to_owned(), 2, 14));
        w.store.close().await.expect("close");
    }

    /// A batch naming a room that does not exist fails whole, uses no seq.
    pub async fn append_to_unknown_room_stores_nothing<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let gone = (w.one.0.max(w.two.0) + 100, room_name("gone"));
        let failed = w
            .store
            .append_batch(&[
                msg(&w.alice, &w.one, "a", "lost", 10),
                msg(&w.alice, &gone, "b", "nowhere", 11),
            ])
            .await;
        assert!(matches!(failed, Err(StoreError::NotFound)), "{failed:?}");
        assert_eq!(
            heads(&*w.store).await,
            [("one".to_owned(), 0, 1), ("two".to_owned(), 0, 1)]
        );
        let retried = w
            .store
            .append_batch(&[msg(&w.alice, &w.one, "a", "lost", 20)])
            .await
            .expect("append");
        assert_eq!(summary(&retried), ["stored one 1"], "the key was not used");
        w.store.close().await.expect("close");
    }

    pub async fn append_of_only_repeats_changes_no_room<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store
            .append_batch(&[msg(&w.alice, &w.one, "a", "hello", 10)])
            .await
            .expect("append");
        let out = w
            .store
            .append_batch(&[
                msg(&w.alice, &w.one, "a", "hello", 20),
                msg(&w.alice, &w.two, "a", "hello", 21),
            ])
            .await
            .expect("append");
        assert_eq!(summary(&out), ["duplicate one 1", "conflict"]);
        assert_eq!(
            heads(&*w.store).await,
            [("one".to_owned(), 1, 10), ("two".to_owned(), 0, 1)]
        );
        w.store.close().await.expect("close");
    }

    /// Runs `tasks` writers at once, each appending `batches` batches of
    /// `per_batch` new messages to its room (`rooms[task % rooms.len()]`),
    /// and checks every room ends gapless with one row per message.
    async fn concurrent_appends(w: &World, rooms: &[Room], tasks: usize) {
        const BATCHES: usize = 20;
        const PER_BATCH: usize = 5;
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let store = Arc::clone(&w.store);
                let room = rooms[t % rooms.len()].clone();
                let sender = w.alice.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for b in 0..BATCHES {
                        let batch: Vec<NewMessage> = (0..PER_BATCH)
                            .map(|i| msg(&sender, &room, &format!("t{t}-{b}-{i}"), "x", 5))
                            .collect();
                        let out = store.append_batch(&batch).await.expect("append");
                        let got: Vec<u64> = out.iter().map(|o| stored(o).seq).collect();
                        assert!(
                            got.windows(2).all(|w| w[1] == w[0] + 1),
                            "a batch's seqs in one room are consecutive: {got:?}"
                        );
                        seqs.extend(got);
                    }
                    seqs
                })
            })
            .collect();
        let mut per_room: std::collections::HashMap<RoomId, Vec<u64>> = Default::default();
        for (t, handle) in handles.into_iter().enumerate() {
            let seqs = handle.await.expect("writer task");
            per_room
                .entry(rooms[t % rooms.len()].0)
                .or_default()
                .extend(seqs);
        }
        for room in rooms {
            let mut acked = per_room.remove(&room.0).unwrap_or_default();
            acked.sort_unstable();
            let n = acked.len() as u64;
            assert_eq!(
                acked,
                (1..=n).collect::<Vec<_>>(),
                "acked seqs of {}",
                room.1
            );
            assert_eq!(
                seqs(&*w.store, &room.1).await,
                acked,
                "stored seqs of {}",
                room.1
            );
        }
    }

    pub async fn concurrent_batches_on_two_rooms_stay_gapless<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let rooms = [w.one.clone(), w.two.clone()];
        concurrent_appends(&w, &rooms, 2).await;
        w.store.close().await.expect("close");
    }

    /// Several servers share one database: their batches to the same room
    /// must interleave without gaps or reused seqs.
    pub async fn concurrent_batches_on_one_room_stay_gapless<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let rooms = [w.one.clone()];
        concurrent_appends(&w, &rooms, 3).await;
        w.store.close().await.expect("close");
    }

    /// §9: Latest, Before and After pages, in ascending order, with has_more.
    pub async fn history_ranges_and_has_more<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let batch: Vec<NewMessage> = (1..=5)
            .map(|i| msg(&w.alice, &w.one, &format!("m{i}"), &format!("text {i}"), i))
            .collect();
        w.store.append_batch(&batch).await.expect("append");
        let page = |range, limit| {
            let store = Arc::clone(&w.store);
            let room = w.one.1.clone();
            async move {
                let p = store
                    .history(&room, range, limit, 0)
                    .await
                    .expect("history");
                assert_eq!((p.head_seq, p.epoch.as_str()), (5, "epoch-1"));
                (
                    p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                    p.has_more,
                )
            }
        };
        assert_eq!(page(HistoryRange::Latest, 2).await, (vec![4, 5], true));
        assert_eq!(
            page(HistoryRange::Latest, 5).await,
            (vec![1, 2, 3, 4, 5], false)
        );
        assert_eq!(page(HistoryRange::Before(4), 2).await, (vec![2, 3], true));
        assert_eq!(page(HistoryRange::Before(3), 2).await, (vec![1, 2], false));
        assert_eq!(page(HistoryRange::After(1), 3).await, (vec![2, 3, 4], true));
        assert_eq!(
            page(HistoryRange::After(2), 3).await,
            (vec![3, 4, 5], false)
        );
        assert_eq!(page(HistoryRange::After(5), 3).await, (vec![], false));
        let p = w
            .store
            .history(&w.two.1, HistoryRange::Latest, 10, 0)
            .await
            .expect("history");
        assert_eq!((p.messages.len(), p.has_more, p.head_seq), (0, false, 0));
        let m = &w
            .store
            .history(&w.one.1, HistoryRange::After(2), 1, 0)
            .await
            .expect("history")
            .messages[0];
        assert_eq!(
            (
                m.room.as_str(),
                m.seq,
                m.sender.as_str(),
                m.client_msg_id.as_str(),
                m.text.as_str(),
                m.server_ts_ms
            ),
            ("one", 3, "alice", "m3", "text 3", 3),
            "R-8.2.8: history has the fields the ack had"
        );
        w.store.close().await.expect("close");
    }

    pub async fn history_of_unknown_room_is_not_found<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let r = w
            .store
            .history(&room_name("nowhere"), HistoryRange::Latest, 10, 0)
            .await;
        assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
        w.store.close().await.expect("close");
    }

    pub async fn messages_between_is_a_half_open_range<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let batch: Vec<NewMessage> = (1..=6)
            .map(|i| msg(&w.alice, &w.one, &format!("m{i}"), "x", i))
            .chain([msg(&w.alice, &w.two, "other", "x", 7)])
            .collect();
        w.store.append_batch(&batch).await.expect("append");
        let between = |after, up_to, limit| {
            let store = Arc::clone(&w.store);
            let room = w.one.1.clone();
            async move {
                store
                    .messages_between(&room, after, up_to, limit)
                    .await
                    .expect("read")
                    .iter()
                    .map(|m| (m.room.as_str().to_owned(), m.seq))
                    .map(|(r, s)| {
                        assert_eq!(r, "one", "only the named room");
                        s
                    })
                    .collect::<Vec<u64>>()
            }
        };
        assert_eq!(between(1, 4, 10).await, [2, 3, 4]);
        assert_eq!(
            between(1, 6, 2).await,
            [2, 3],
            "at most limit, lowest first"
        );
        assert_eq!(between(4, 4, 10).await, Vec::<u64>::new());
        assert_eq!(between(6, 100, 10).await, Vec::<u64>::new());
        w.store.close().await.expect("close");
    }

    pub async fn sent_message_finds_the_key_per_sender<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let out = w
            .store
            .append_batch(&[msg(&w.alice, &w.two, "k", "hello", 10)])
            .await
            .expect("append");
        let key = ClientMsgId::parse("k").expect("id");
        let found = w.store.sent_message(w.alice.0, &key).await.expect("read");
        assert_eq!(found.as_ref(), Some(stored(&out[0])));
        assert!(
            w.store
                .sent_message(w.bob.0, &key)
                .await
                .expect("read")
                .is_none()
        );
        let other = ClientMsgId::parse("j").expect("id");
        assert!(
            w.store
                .sent_message(w.alice.0, &other)
                .await
                .expect("read")
                .is_none()
        );
        w.store.close().await.expect("close");
    }

    /// Durability of everything a restart needs: users, tokens, rooms with
    /// members, heads and last activity, messages, and idempotency keys
    /// (R-8.5.6).
    /// (room, read_seq, unread, mentions, counted_seq) of every room of `user`.
    async fn reads(store: &dyn Store, user: &User) -> Vec<(String, u64, u32, u32, u64)> {
        store
            .read_states(user.0, &user.1)
            .await
            .expect("read states")
            .into_iter()
            .map(|r| {
                (
                    r.room,
                    r.read_seq,
                    r.unread_count,
                    r.mention_count,
                    r.counted_seq,
                )
            })
            .collect()
    }

    /// R-11.3.4, R-11.3.5: unread counts others' messages above the marker;
    /// mentions are the protocol's rule, stored with the message, never
    /// one's own; counted_seq is the head.
    pub async fn read_state_counts_others_messages_and_mentions<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        s.add_member(w.one.0, w.bob.0, 2).await.expect("add");
        s.append_batch(&[
            msg(&w.alice, &w.one, "1", "hello @bob", 10),
            msg(&w.alice, &w.one, "2", "@Bob again, @bob", 11),
            msg(&w.alice, &w.one, "3", "no mention of @bobby or a@bob", 12),
            msg(&w.bob, &w.one, "4", "me, @bob, talking to @alice", 13),
        ])
        .await
        .expect("append");
        assert_eq!(
            reads(&**s, &w.bob).await,
            [("one".to_owned(), 0, 3, 2, 4)],
            "bob's own message is not unread and does not mention him"
        );
        assert_eq!(
            reads(&**s, &w.alice).await,
            [
                ("one".to_owned(), 0, 1, 1, 4),
                ("two".to_owned(), 0, 0, 0, 0)
            ]
        );
        let (state, moved) = s
            .mark_read(w.one.0, w.bob.0, &w.bob.1, 1)
            .await
            .expect("mark");
        assert!(moved);
        assert_eq!(
            (
                state.read_seq,
                state.unread_count,
                state.mention_count,
                state.counted_seq
            ),
            (1, 2, 1, 4)
        );
        w.store.close().await.expect("close");
    }

    /// R-11.3.2, R-11.3.3: a marker never moves back, and a seq past the
    /// head is the head; an unknown room is NotFound.
    pub async fn read_marker_never_moves_back_or_past_the_head<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        s.add_member(w.one.0, w.bob.0, 2).await.expect("add");
        let batch: Vec<_> = (1..=5)
            .map(|i| msg(&w.alice, &w.one, &i.to_string(), "x", 10 + i))
            .collect();
        s.append_batch(&batch).await.expect("append");
        let mark = |seq| s.mark_read(w.one.0, w.bob.0, &w.bob.1, seq);
        let (state, moved) = mark(3).await.expect("mark");
        assert_eq!((state.read_seq, state.unread_count, moved), (3, 2, true));
        let (state, moved) = mark(2).await.expect("mark");
        assert_eq!((state.read_seq, state.unread_count, moved), (3, 2, false));
        let (state, moved) = mark(3).await.expect("mark");
        assert_eq!((state.read_seq, moved), (3, false));
        let (state, moved) = mark(99).await.expect("mark");
        assert_eq!((state.read_seq, state.unread_count, moved), (5, 0, true));
        assert!(matches!(
            s.mark_read(9_999, w.bob.0, &w.bob.1, 1).await,
            Err(StoreError::NotFound)
        ));
        w.store.close().await.expect("close");
    }

    /// R-11.3.8: joining starts the marker at the head; leaving and joining
    /// again never moves it back.
    pub async fn read_marker_of_a_new_member_starts_at_the_head<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        let s = &w.store;
        let batch: Vec<_> = (1..=3)
            .map(|i| msg(&w.alice, &w.one, &i.to_string(), "@bob", 10 + i))
            .collect();
        s.append_batch(&batch).await.expect("append");
        s.add_member(w.one.0, w.bob.0, 20).await.expect("add");
        assert_eq!(reads(&**s, &w.bob).await, [("one".to_owned(), 3, 0, 0, 3)]);
        s.append_batch(&[msg(&w.alice, &w.one, "4", "@bob", 21)])
            .await
            .expect("append");
        s.remove_member(w.one.0, w.bob.0).await.expect("remove");
        assert!(reads(&**s, &w.bob).await.is_empty(), "only rooms one is in");
        s.add_member(w.one.0, w.bob.0, 22).await.expect("add");
        assert_eq!(reads(&**s, &w.bob).await, [("one".to_owned(), 4, 0, 0, 4)]);
        w.store.close().await.expect("close");
    }

    pub async fn read_state_survives_reopen<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store.add_member(w.one.0, w.bob.0, 2).await.expect("add");
        w.store
            .append_batch(&[
                msg(&w.alice, &w.one, "1", "hi @bob", 10),
                msg(&w.alice, &w.one, "2", "x", 11),
                msg(&w.alice, &w.one, "3", "@bob", 12),
            ])
            .await
            .expect("append");
        w.store
            .mark_read(w.one.0, w.bob.0, &w.bob.1, 1)
            .await
            .expect("mark");
        w.store.close().await.expect("close");
        let store = db.open().await;
        assert_eq!(
            reads(&*store, &w.bob).await,
            [("one".to_owned(), 1, 2, 1, 3)]
        );
        store.close().await.expect("close");
    }

    pub async fn everything_survives_reopen<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store.add_member(w.two.0, w.bob.0, 3).await.expect("add");
        w.store
            .insert_token("tok", w.bob.0, 3, 1_000)
            .await
            .expect("token");
        let out = w
            .store
            .append_batch(&[
                msg(&w.alice, &w.one, "a", "first", 10),
                msg(&w.bob, &w.two, "b", "second", 11),
            ])
            .await
            .expect("append");
        let before = heads(&*w.store).await;
        w.store.close().await.expect("close");
        drop(w.store);

        let store = db.open().await;
        assert_eq!(heads(&*store).await, before);
        let rooms = store.load_rooms().await.expect("load");
        let two = rooms
            .iter()
            .find(|r| r.name.as_str() == "two")
            .expect("two");
        let mut members: Vec<&str> = two.members.iter().map(|m| m.as_str()).collect();
        members.sort_unstable();
        assert_eq!(members, ["alice", "bob"]);
        assert!(store.user_credentials("bob").await.expect("read").is_some());
        assert!(
            !store
                .token("tok")
                .await
                .expect("read")
                .expect("tok")
                .revoked
        );
        let again = store
            .append_batch(&[
                msg(&w.alice, &w.one, "a", "first", 20),
                msg(&w.alice, &w.one, "c", "third", 21),
            ])
            .await
            .expect("append");
        match &again[..] {
            [AppendOutcome::Duplicate(dup), AppendOutcome::Stored(new)] => {
                assert_eq!(dup, stored(&out[0]), "the key is still recognised");
                assert_eq!(new.seq, 2, "the head continues");
            }
            other => panic!("expected Duplicate then Stored, got {other:?}"),
        }
        store.close().await.expect("close");
    }

    /// A relation of `kind` ("edit", "redact", "reply", "react KEY",
    /// "unreact KEY") naming `target`.
    fn relate(mut m: NewMessage, kind: &str, target: &StoredMessage) -> NewMessage {
        use confab_protocol::names::{MessageId, ReactionKey};
        use confab_protocol::relation::{RelationKind, ValidRelation};
        let kind = match kind.split_once(' ') {
            Some(("react", key)) => RelationKind::React {
                key: ReactionKey::parse(key).expect("valid key"),
                remove: false,
            },
            Some(("unreact", key)) => RelationKind::React {
                key: ReactionKey::parse(key).expect("valid key"),
                remove: true,
            },
            _ => match kind {
                "edit" => RelationKind::Edit,
                "redact" => RelationKind::Redact,
                "reply" => RelationKind::Reply,
                other => panic!("unknown relation {other}"),
            },
        };
        m.relation = Some(ValidRelation {
            target: MessageId::parse(target.message_id.as_str()).expect("valid id"),
            kind,
        });
        m
    }

    /// Every message of `room` as (seq, text, redacted, relation in words).
    async fn timeline(store: &dyn Store, room: &RoomName) -> Vec<String> {
        use confab_protocol::wire::relation::Kind;
        store
            .history(room, HistoryRange::After(0), 100, 0)
            .await
            .expect("history")
            .messages
            .iter()
            .map(|m| {
                let rel = match m.relation.as_ref().map(|r| (r.target_seq, &r.kind)) {
                    None => String::new(),
                    Some((t, Some(Kind::Edit(_)))) => format!(" edit->{t}"),
                    Some((t, Some(Kind::Redact(_)))) => format!(" redact->{t}"),
                    Some((t, Some(Kind::Reply(r)))) => format!(" reply->{t} {:?}", r.quote),
                    Some((t, Some(Kind::React(r)))) => {
                        format!(" {}{}->{t}", if r.remove { "-" } else { "+" }, r.key)
                    }
                    Some((_, None)) => " ?".to_owned(),
                };
                let deleted = if m.redacted { " (deleted)" } else { "" };
                format!("{} {:?}{deleted}{rel}", m.seq, m.text)
            })
            .collect()
    }

    /// §8.6: edits and replies are stored in the room's seq space with
    /// their target's seq (R-8.6.3), a reply quotes the latest edit
    /// (R-8.6.9), only the author edits (R-8.6.2), unknown or other-room
    /// targets are refused (R-8.6.1), and repeats compare the relation
    /// (R-8.6.4). Relations are not unread (R-11.3.4).
    pub async fn relations_are_messages_with_a_checked_target<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store.add_member(w.one.0, w.bob.0, 2).await.expect("add");
        let out = w
            .store
            .append_batch(&[
                msg(&w.alice, &w.one, "a1", "helo", 10),
                msg(&w.alice, &w.two, "a2", "elsewhere", 10),
            ])
            .await
            .expect("append");
        let (m1, other) = (stored(&out[0]).clone(), stored(&out[1]).clone());
        let edit = relate(msg(&w.alice, &w.one, "a3", "hello", 11), "edit", &m1);
        let out = w
            .store
            .append_batch(&[
                relate(msg(&w.bob, &w.one, "b1", "mine", 11), "edit", &m1),
                edit.clone(),
                relate(msg(&w.bob, &w.one, "b2", "hi!", 12), "reply", &m1),
                relate(msg(&w.bob, &w.one, "b3", "hi?", 12), "reply", &other),
                edit.clone(),
                relate(msg(&w.alice, &w.one, "a3", "hello", 13), "reply", &m1),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&out),
            [
                "refused NotAuthor",
                "stored one 2",
                "stored one 3",
                "refused TargetNotFound",
                "duplicate one 2",
                "conflict"
            ]
        );
        let reply = stored(&out[2]);
        let wire = reply.relation.as_ref().expect("a relation");
        assert_eq!(
            (wire.target_id.as_str(), wire.target_seq),
            (m1.message_id.as_str(), 1)
        );
        assert_eq!(
            timeline(&*w.store, &w.one.1).await,
            [
                r#"1 "helo""#,
                r#"2 "hello" edit->1"#,
                r#"3 "hi!" reply->1 "hello""#
            ]
        );
        let sent = w
            .store
            .sent_message(w.alice.0, &ClientMsgId::parse("a3").expect("id"))
            .await
            .expect("read")
            .expect("the edit's key");
        assert_eq!(&sent, stored(&out[1]), "sent_message returns the relation");
        // Bob's read state: alice's message counts, her edit does not.
        let states = w
            .store
            .read_states(w.bob.0, &w.bob.1)
            .await
            .expect("read states");
        let one = states.iter().find(|s| s.room == "one").expect("one");
        assert_eq!((one.unread_count, one.counted_seq), (1, 3));
        w.store.close().await.expect("close");
    }

    /// §8.6.3: a deletion empties the text of its target and of its
    /// edits and the quote of its replies, in storage (R-8.6.6, R-8.6.7),
    /// drops its reactions (R-8.6.8), and leaves nothing a relation may
    /// name (R-8.6.1); a repeat of it is still its duplicate (R-8.6.4),
    /// and all of it survives a restart.
    pub async fn redaction_removes_content<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store.add_member(w.one.0, w.bob.0, 2).await.expect("add");
        let out = w
            .store
            .append_batch(&[msg(&w.alice, &w.one, "a1", "secret", 10)])
            .await
            .expect("append");
        let m1 = stored(&out[0]).clone();
        let redact = relate(msg(&w.alice, &w.one, "a3", "", 13), "redact", &m1);
        let out = w
            .store
            .append_batch(&[
                relate(msg(&w.alice, &w.one, "a2", "secret2", 11), "edit", &m1),
                relate(msg(&w.bob, &w.one, "b1", "what?", 12), "reply", &m1),
                relate(msg(&w.bob, &w.one, "b2", "", 12), "react 👍", &m1),
                relate(msg(&w.bob, &w.one, "b3", "", 12), "redact", &m1),
                redact.clone(),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&out),
            [
                "stored one 2",
                "stored one 3",
                "stored one 4",
                "refused NotAuthor",
                "stored one 5"
            ]
        );
        let out = w
            .store
            .append_batch(&[
                relate(msg(&w.alice, &w.one, "a4", "again", 14), "edit", &m1),
                relate(msg(&w.bob, &w.one, "b4", "", 14), "react 🎉", &m1),
                relate(msg(&w.bob, &w.one, "b5", "late", 14), "reply", &m1),
                redact.clone(),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&out),
            [
                "refused TargetNotFound",
                "refused TargetNotFound",
                "refused TargetNotFound",
                "duplicate one 5"
            ]
        );
        let want = [
            r#"1 "" (deleted)"#,
            r#"2 "" (deleted) edit->1"#,
            r#"3 "what?" reply->1 """#,
            r#"4 "" +👍->1"#,
            r#"5 "" redact->1"#,
        ];
        assert_eq!(timeline(&*w.store, &w.one.1).await, want);
        // The original send, repeated: its text is gone, so it is judged
        // by room and relation alone (R-8.6.4).
        let out = w
            .store
            .append_batch(&[msg(&w.alice, &w.one, "a1", "secret", 20)])
            .await
            .expect("append");
        assert_eq!(summary(&out), ["duplicate one 1"]);
        w.store.close().await.expect("close");
        drop(w.store);
        let store = db.open().await;
        assert_eq!(timeline(&*store, &w.one.1).await, want);
        store.close().await.expect("close");
    }

    /// §8.6.5, R-8.6.10: a user has each key on a message at most once; a
    /// reaction that changes nothing stores nothing and repeats the react
    /// message that set the state; removing one never added is refused.
    pub async fn reactions_once_per_user_and_key<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store.add_member(w.one.0, w.bob.0, 2).await.expect("add");
        let out = w
            .store
            .append_batch(&[msg(&w.alice, &w.one, "a1", "vote", 10)])
            .await
            .expect("append");
        let m1 = stored(&out[0]).clone();
        let react =
            |user: &User, id: &str, kind: &str| relate(msg(user, &w.one, id, "", 11), kind, &m1);
        let out = w
            .store
            .append_batch(&[
                react(&w.bob, "b1", "react 👍"),
                react(&w.bob, "b2", "react 👍"),
                react(&w.alice, "a2", "react 👍"),
                react(&w.alice, "a3", "unreact 🎉"),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&out),
            [
                "stored one 2",
                "duplicate one 2",
                "stored one 3",
                "refused ReactionNotFound"
            ]
        );
        // Across batches: against the stored state.
        let out = w
            .store
            .append_batch(&[
                react(&w.bob, "b3", "react 👍"),
                react(&w.bob, "b4", "unreact 👍"),
                react(&w.bob, "b5", "unreact 👍"),
            ])
            .await
            .expect("append");
        assert_eq!(
            summary(&out),
            ["duplicate one 2", "stored one 4", "duplicate one 4"]
        );
        let out = w
            .store
            .append_batch(&[react(&w.bob, "b6", "unreact 👍")])
            .await
            .expect("append");
        assert_eq!(summary(&out), ["duplicate one 4"], "the removal, stored");
        match &out[0] {
            AppendOutcome::Duplicate(m) => assert_eq!(
                m.client_msg_id, "b6",
                "a duplicate reaction is acked under the request's own key"
            ),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(
            timeline(&*w.store, &w.one.1).await,
            [
                r#"1 "vote""#,
                r#"2 "" +👍->1"#,
                r#"3 "" +👍->1"#,
                r#"4 "" -👍->1"#
            ]
        );
        w.store.close().await.expect("close");
    }

    /// R-9.10: a history page carries the reactions that count on its
    /// messages, by seq then key bytes, `mine` for the reader; a deleted
    /// message has none; a page of other messages none of theirs.
    pub async fn history_pages_count_reactions<B: Backend>() {
        let db = B::fresh().await;
        let w = world(db.open().await).await;
        w.store.add_member(w.one.0, w.bob.0, 2).await.expect("add");
        let out = w
            .store
            .append_batch(&[
                msg(&w.alice, &w.one, "a1", "first", 10),
                msg(&w.alice, &w.one, "a2", "second", 10),
                msg(&w.alice, &w.one, "a3", "third", 10),
            ])
            .await
            .expect("append");
        let (m1, m2, m3) = (
            stored(&out[0]).clone(),
            stored(&out[1]).clone(),
            stored(&out[2]).clone(),
        );
        let react = |user: &User, id: &str, kind: &str, target: &StoredMessage| {
            relate(msg(user, &w.one, id, "", 11), kind, target)
        };
        w.store
            .append_batch(&[
                react(&w.bob, "b1", "react 👍", &m1),
                react(&w.alice, "a4", "react 👍", &m1),
                react(&w.bob, "b2", "react 🎉", &m1),
                react(&w.bob, "b3", "unreact 🎉", &m1),
                react(&w.bob, "b4", "react b", &m2),
                react(&w.bob, "b5", "react a", &m2),
                react(&w.bob, "b6", "react x", &m3),
                relate(msg(&w.alice, &w.one, "a5", "", 12), "redact", &m3),
            ])
            .await
            .expect("append");
        let counts = |page: &confab_server::storage::HistorySlice| -> Vec<String> {
            page.reactions
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {}{}",
                        r.seq,
                        r.key,
                        r.count,
                        if r.mine { "*" } else { "" }
                    )
                })
                .collect()
        };
        let page = w
            .store
            .history(&w.one.1, HistoryRange::After(0), 100, w.bob.0)
            .await
            .expect("history");
        assert_eq!(counts(&page), ["1 👍 2*", "2 a 1*", "2 b 1*"]);
        let page = w
            .store
            .history(&w.one.1, HistoryRange::After(0), 1, w.alice.0)
            .await
            .expect("history");
        assert_eq!(
            counts(&page),
            ["1 👍 2*"],
            "only the page's messages, mine for alice"
        );
        let page = w
            .store
            .history(&w.one.1, HistoryRange::After(1), 1, w.alice.0)
            .await
            .expect("history");
        assert_eq!(counts(&page), ["2 a 1", "2 b 1"]);
        // At most 20 keys per message: those most users have, then by bytes.
        let many: Vec<NewMessage> = (0..25)
            .map(|k| react(&w.bob, &format!("k{k}"), &format!("react k{k:02}"), &m2))
            .chain([react(&w.alice, "a6", "react k24", &m2)])
            .collect();
        w.store.append_batch(&many).await.expect("append");
        let page = w
            .store
            .history(&w.one.1, HistoryRange::After(1), 1, w.alice.0)
            .await
            .expect("history");
        let keys: Vec<&str> = page.reactions.iter().map(|r| r.key.as_str()).collect();
        let mut want = vec!["a", "b"];
        want.extend([
            "k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08",
        ]);
        want.extend([
            "k09", "k10", "k11", "k12", "k13", "k14", "k15", "k16", "k24",
        ]);
        assert_eq!(
            keys, want,
            "k24 (two users) first, then the 19 smallest keys"
        );
        w.store.close().await.expect("close");
    }
}

mod sqlite {
    store_contract!(super::SqliteBackend);
}

mod postgres {
    store_contract!(super::PostgresBackend);
}
