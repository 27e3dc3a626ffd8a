//! Durability (§8.3) with the real binary: clients send concurrently, the
//! server is SIGKILLed mid-stream, and after a restart on the same data
//! directory every acknowledged message is there, none twice, seqs gapless.
//! Also: SIGTERM closes sockets with 1001 and exits cleanly.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use common::{Client, open_db, register_and_login, within};
use confab_protocol::codec::{decode_server_frame, encode_client_frame};
use confab_protocol::wire::{self, ClientFrame, client_frame::Body as C, server_frame::Body as S};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// The server binary running as a child process.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

async fn start_binary(data_dir: &Path) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab-server"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--send-rate", "100000", "--send-burst", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn confab-server");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = within("the server's listening line", async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read stdout")
                .expect("server exited early");
            if let Some(url) = line.strip_prefix("confab-server listening on http://") {
                return url.parse::<SocketAddr>().expect("an address");
            }
        }
    })
    .await;
    ServerProcess { child, addr }
}

/// An acknowledged message: (room, seq, message_id).
type Acked = HashMap<String, (String, u64, String)>;

/// Sends as fast as acks allow, 8 in flight, until the connection dies.
/// Records every SendAck and reports each on `progress`.
async fn send_until_killed(
    mut client: Client,
    room: String,
    acked: Arc<Mutex<Acked>>,
    progress: mpsc::UnboundedSender<()>,
) {
    const IN_FLIGHT: usize = 8;
    let mut next = 0u64;
    let mut in_flight = 0;
    loop {
        while in_flight < IN_FLIGHT {
            next += 1;
            let frame = ClientFrame::request(
                next,
                C::SendMessage(wire::SendMessage {
                    room: room.clone(),
                    client_msg_id: format!("{}-{next}", client.name),
                    text: format!("message {next} from {}", client.name),
                    kind: 0,
                    relation: None,
                }),
            );
            if client
                .ws
                .send(Message::Binary(encode_client_frame(&frame)))
                .await
                .is_err()
            {
                return;
            }
            in_flight += 1;
        }
        let Some(Ok(Message::Binary(bytes))) = client.ws.next().await else {
            return;
        };
        let Ok(frame) = decode_server_frame(&bytes, usize::MAX) else {
            return;
        };
        if let Some(S::SendAck(ack)) = frame.body {
            in_flight -= 1;
            acked
                .lock()
                .await
                .insert(ack.client_msg_id, (ack.room, ack.seq, ack.message_id));
            if progress.send(()).is_err() {
                return;
            }
        }
    }
}

#[tokio::test]
async fn every_acked_message_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_binary(dir.path()).await;
    let addr = server.addr;

    let pairs = [("r1", ["ann", "ben"]), ("r2", ["cat", "dan"])];
    let mut senders = Vec::new();
    for (room, users) in pairs {
        for (i, user) in users.iter().enumerate() {
            let (mut client, _) = Client::new_user(addr, user).await;
            if i == 0 {
                client.create_room(room).await;
            } else {
                client.join_room(room).await;
            }
            senders.push((client, room.to_owned()));
        }
    }
    let acked = Arc::new(Mutex::new(Acked::new()));
    let (progress, mut acks) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (client, room) in senders {
        tasks.push(tokio::spawn(send_until_killed(
            client,
            room,
            Arc::clone(&acked),
            progress.clone(),
        )));
    }
    drop(progress);
    for _ in 0..400 {
        within("acks before the crash", acks.recv())
            .await
            .expect("senders are running");
    }
    // SIGKILL while sends are in flight: no shutdown code runs.
    server.child.kill().await.expect("kill");
    for task in tasks {
        within("senders notice the crash", task)
            .await
            .expect("sender task");
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 400);

    // Restart on the same directory; it must come up and serve.
    let mut server = start_binary(dir.path()).await;
    let db = open_db(&dir.path().join("confab.db")).await;
    let rows: Vec<(String, i64, String, String)> = sqlx::query_as(
        "SELECT r.name, m.seq, m.client_msg_id, m.message_id FROM messages m JOIN rooms r ON r.id = m.room_id \
         ORDER BY r.name, m.seq",
    )
    .fetch_all(&db)
    .await
    .expect("read messages");
    db.close().await;

    let mut by_room: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut stored: HashMap<String, (String, u64, String)> = HashMap::new();
    for (room, seq, client_msg_id, message_id) in rows {
        by_room.entry(room.clone()).or_default().push(seq as u64);
        let previous = stored.insert(client_msg_id.clone(), (room, seq as u64, message_id));
        assert!(previous.is_none(), "{client_msg_id} stored twice");
    }
    for (room, seqs) in &by_room {
        assert_eq!(
            seqs,
            &(1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{room}: gapless from 1"
        );
    }
    for (id, ack) in &acked {
        assert_eq!(
            stored.get(id),
            Some(ack),
            "acked message {id} is stored as acked"
        );
    }

    // The restarted server continues each room's sequence.
    let token = register_and_login(server.addr, "eve").await;
    let (mut eve, _) = Client::authed(server.addr, "eve", &token, &[]).await;
    let joined = eve.join_room("r1").await;
    assert_eq!(joined.head_seq, by_room["r1"].len() as u64);
    let ack = eve.say("r1", "after-restart", "still counting").await;
    assert_eq!(ack.seq, joined.head_seq + 1);
    drop(eve);
    server.child.kill().await.expect("kill");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_keeps_acked_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_binary(dir.path()).await;
    let (mut alice, _) = Client::new_user(server.addr, "alice").await;
    alice.create_room("general").await;
    for i in 1..=5 {
        alice
            .say("general", &format!("m{i}"), "before shutdown")
            .await;
    }
    let pid = server.child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
    assert_eq!(alice.expect_close().await, Some(1001));
    let exit = within("the server exits", server.child.wait())
        .await
        .expect("wait");
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");

    let mut server = start_binary(dir.path()).await;
    let token = common::login_token(server.addr, "alice").await;
    let (mut alice, welcome) = Client::authed(server.addr, "alice", &token, &[]).await;
    assert_eq!(welcome.rooms[0].head_seq, 5);
    let resumed = alice.resume(vec![("general", 0, "")]).await;
    assert_eq!(resumed.rooms[0].replayed, 5);
    assert_eq!(common::messages(&alice.take_buffered()).len(), 5);
    drop(alice);
    server.child.kill().await.expect("kill");
}
