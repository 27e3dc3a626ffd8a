//! §5.3, §5.4 and §15: indistinguishable login failures, argon2id
//! parameters, hashed tokens, throttling, and logout closing live sockets.

mod common;

use common::{Client, TestServer, http, login, logout, open_db, register, register_and_login};

#[tokio::test]
async fn login_failures_are_identical_and_throttled() {
    // A long first lockout, so the throttled attempts below cannot outlive it.
    let server =
        TestServer::start(|c| c.login_lockout_base = std::time::Duration::from_secs(600)).await;
    let addr = server.addr;
    assert_eq!(register(addr, "alice", common::PASSWORD).await.status, 201);
    assert_eq!(register(addr, "alice", common::PASSWORD).await.status, 409);
    assert_eq!(
        register(addr, "Alice!", common::PASSWORD).await.json()["error"]["code"],
        "invalid_username"
    );
    assert_eq!(
        register(addr, "bobby", "short").await.json()["error"]["code"],
        "invalid_password"
    );
    let unknown_field = http(
        addr,
        "POST",
        "/v1/login",
        r#"{"username":"a","password":"b","x":1}"#,
        &[],
    )
    .await;
    assert_eq!(
        (
            unknown_field.status,
            unknown_field.json()["error"]["code"].as_str()
        ),
        (400, Some("invalid_request"))
    );

    // An oversized body is refused with an ErrorBody like any bad body.
    let huge = serde_json::json!({"username": "alice", "password": "p".repeat(20_000)}).to_string();
    let refused = http(addr, "POST", "/v1/login", &huge, &[]).await;
    assert_eq!(
        (refused.status, refused.json()["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let wrong_password = login(addr, "alice", "not the password").await;
    let unknown_user = login(addr, "nobody", "not the password").await;
    assert_eq!(wrong_password.status, 401);
    assert_eq!(
        wrong_password.body, unknown_user.body,
        "byte-identical bodies"
    );
    let mut a = wrong_password.headers.clone();
    let mut b = unknown_user.headers.clone();
    a.remove("date");
    b.remove("date");
    assert_eq!(a, b, "identical headers apart from Date");

    // Four more failures make five: the sixth attempt is throttled, even
    // with the right password, and unknown names are throttled alike.
    for _ in 0..4 {
        assert_eq!(login(addr, "alice", "still wrong").await.status, 401);
        assert_eq!(login(addr, "nobody", "still wrong").await.status, 401);
    }
    for user in ["alice", "nobody"] {
        let throttled = login(addr, user, common::PASSWORD).await;
        assert_eq!(throttled.status, 429, "{user}");
        let body = throttled.json();
        assert_eq!(body["error"]["code"], "too_many_attempts");
        let retry_ms = body["error"]["retry_after_ms"]
            .as_u64()
            .expect("retry_after_ms");
        assert!(retry_ms > 0);
        let header: u64 = throttled.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert_eq!(header, retry_ms.div_ceil(1000));
    }
    // Other accounts are unaffected.
    assert_eq!(register(addr, "carol", common::PASSWORD).await.status, 201);
    assert_eq!(login(addr, "carol", common::PASSWORD).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn secrets_are_stored_hashed_and_logout_closes_sockets() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let token = register_and_login(addr, "alice").await;
    let other_token = common::login_token(addr, "alice").await;
    assert_eq!(token.len(), 64, "32 random bytes in hex");

    let (mut socket, _) = Client::authed(addr, "alice", &token, &[]).await;
    let (mut other_socket, _) = Client::authed(addr, "alice", &other_token, &[]).await;

    // argon2id with m=19456 KiB, t=2, p=1, read back as the PHC string.
    let db = open_db(&server.db_path()).await;
    let phc: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'alice'")
            .fetch_one(&db)
            .await
            .expect("hash row");
    let fields: Vec<&str> = phc.split('$').collect();
    assert_eq!(fields[1], "argon2id", "{phc}");
    assert_eq!(fields[2], "v=19");
    assert_eq!(fields[3], "m=19456,t=2,p=1");
    assert!(fields[4].len() >= 16, "a random salt");
    db.close().await;

    // No raw token anywhere in the database files (WAL included), while
    // its SHA-256 is there: we are looking at the right bytes.
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", server.db_path().display());
        if let Ok(content) = std::fs::read(&path) {
            bytes.extend(content);
        }
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        !contains(&token) && !contains(&other_token),
        "raw token stored"
    );
    assert!(
        contains(&confab_server::auth::token_hash(&token)),
        "token hash is stored"
    );
    assert!(!contains(common::PASSWORD), "raw password stored");

    // Logout: 204, the token's socket closes with 4410, the other token's stays.
    let r = logout(addr, &token).await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert_eq!(socket.expect_close().await, Some(4410));
    other_socket.barrier().await;
    let again = logout(addr, &token).await;
    assert_eq!(
        (again.status, again.json()["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let missing = http(addr, "POST", "/v1/logout", "", &[]).await;
    assert_eq!(missing.status, 401);
    drop(other_socket);
    server.stop().await;
}

/// A client that sends part of its request headers and then nothing is
/// disconnected after the header read timeout, so it cannot hold a slot.
#[tokio::test]
async fn a_slow_header_dribble_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server =
        TestServer::start(|c| c.header_read_timeout = std::time::Duration::from_millis(300)).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial headers");
    let mut rest = Vec::new();
    let read = common::within("the server to hang up", tcp.read_to_end(&mut rest)).await;
    // Hyper may answer 408 before closing, or just close (or reset).
    if let Ok(n) = read {
        let text = String::from_utf8_lossy(&rest[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    drop(tcp);
    server.stop().await;
}
