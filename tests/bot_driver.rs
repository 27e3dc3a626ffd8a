//! The driver and the HTTP calls against a real server.

mod bot_support;

use bot_support::{TestServer, user, within};
use confab_bot_sdk::driver::{self, DriverEvent, DriverOptions};
use confab_bot_sdk::http;
use confab_protocol::session::{ClientSession, ConnectionState, SessionConfig, SessionEvent};
use tokio::sync::mpsc;

async fn wait_for<T>(
    events: &mut mpsc::Receiver<DriverEvent>,
    what: &str,
    mut pick: impl FnMut(&DriverEvent) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            let event = events.recv().await.expect("driver alive");
            if let Some(value) = pick(&event) {
                return value;
            }
        }
    })
    .await
}

#[tokio::test]
async fn http_errors_are_typed() {
    let server = TestServer::start().await;
    let url = server.url();
    http::register(&url, "alice", bot_support::PASSWORD)
        .await
        .unwrap();
    let taken = http::register(&url, "alice", bot_support::PASSWORD).await;
    assert!(
        matches!(taken, Err(http::Error::UsernameTaken { .. })),
        "{taken:?}"
    );
    let invalid = http::register(&url, "Alice!", bot_support::PASSWORD).await;
    assert!(
        matches!(invalid, Err(http::Error::InvalidInput { .. })),
        "{invalid:?}"
    );
    let wrong = http::login(&url, "alice", "wrong-password").await;
    assert!(
        matches!(wrong, Err(http::Error::InvalidCredentials { .. })),
        "{wrong:?}"
    );
    let login = http::login(&url, "alice", bot_support::PASSWORD)
        .await
        .unwrap();
    assert_eq!(login.username, "alice");
    http::logout(&url, &login.token).await.unwrap();
    let again = http::logout(&url, &login.token).await;
    assert!(
        matches!(again, Err(http::Error::Unauthorized { .. })),
        "{again:?}"
    );

    // A port nobody listens on: bind, learn the port, close.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nowhere = format!("http://{free}").parse().unwrap();
    let unreachable = http::login(&nowhere, "alice", bot_support::PASSWORD).await;
    assert!(
        unreachable.as_ref().is_err_and(http::Error::is_unreachable),
        "{unreachable:?}"
    );
}

#[tokio::test]
async fn driver_sends_and_receives() {
    let server = TestServer::start().await;
    let url = server.url();
    let token = user(&url, "alice").await;
    let session = ClientSession::new(SessionConfig::new(token));
    let (handle, mut events) = driver::spawn(url, session, DriverOptions::default());
    wait_for(&mut events, "online", |e| {
        matches!(
            e,
            DriverEvent::Session(SessionEvent::StateChanged(ConnectionState::Online))
        )
        .then_some(())
    })
    .await;
    handle
        .call(|s, now| s.create_room(now, "lobby", ""))
        .await
        .unwrap()
        .unwrap();
    wait_for(&mut events, "joined", |e| {
        matches!(e, DriverEvent::Session(SessionEvent::Joined(_))).then_some(())
    })
    .await;
    let pending = handle.send_message("lobby", "hello", false).await.unwrap();
    let ack = within("ack", pending.acked()).await.unwrap();
    assert_eq!(ack.seq, 1);
    let (text, from_self) = wait_for(&mut events, "own message", |e| match e {
        DriverEvent::Session(SessionEvent::Message {
            message, from_self, ..
        }) => Some((message.text.clone(), *from_self)),
        _ => None,
    })
    .await;
    assert_eq!((text.as_str(), from_self), ("hello", true));
    within("shutdown", handle.shutdown()).await;
    assert!(handle.is_closed());
}
