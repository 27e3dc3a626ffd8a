//! Login and registration throttles under concurrency (§5.3, §15.3), against
//! a real server on 127.0.0.1:0. Other loopback addresses (127.0.0.2,
//! 127.0.0.3) act as other clients for the per-address limits.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{HttpResponse, PASSWORD, TestServer, within};
use tokio::sync::Barrier;

const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HONEST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// One POST from source address `from`, on a fresh connection.
async fn post_from(from: Ipv4Addr, addr: SocketAddr, path: &str, body: String) -> HttpResponse {
    common::http_from(from, addr, "POST", path, &body, &[]).await
}

fn credentials(user: &str, password: &str) -> String {
    serde_json::json!({ "username": user, "password": password }).to_string()
}

async fn login_from(from: Ipv4Addr, addr: SocketAddr, user: &str, password: &str) -> HttpResponse {
    post_from(from, addr, "/v1/login", credentials(user, password)).await
}

async fn register_from(
    from: Ipv4Addr,
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> HttpResponse {
    post_from(from, addr, "/v1/register", credentials(user, password)).await
}

/// A counter's value from `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let response = common::http(addr, "GET", "/metrics", "", &[]).await;
    assert_eq!(response.status, 200);
    let text = String::from_utf8_lossy(&response.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// Asserts a 429 `too_many_attempts` with `retry_after_ms` and a matching
/// `Retry-After`; returns the advised wait.
fn assert_throttled(response: &HttpResponse) -> Duration {
    assert_eq!(response.status, 429, "{:?}", response.body);
    let body = response.json();
    assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
    let ms = body["error"]["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_ms in {body}"));
    assert!(ms > 0);
    let header: u64 = response
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After header in seconds");
    assert_eq!(header, ms.div_ceil(1000));
    Duration::from_millis(ms)
}

/// Logs in with the right password, honouring the server's 429
/// `retry_after_ms` (the lockout window), as a well-behaved client does.
async fn login_after_lockout(addr: SocketAddr, user: &str) -> HttpResponse {
    for _ in 0..5 {
        let response = login_from(HONEST, addr, user, PASSWORD).await;
        if response.status != 429 {
            return response;
        }
        let wait = assert_throttled(&response);
        // Waiting for the lockout the server announced, not guessing a time.
        tokio::time::sleep(wait).await;
    }
    panic!("still locked out after five announced lockout windows");
}

/// Sends `count` logins for `user` at once (a barrier releases them
/// together), password `i` chosen by `password`; returns the responses.
async fn burst(
    from: Ipv4Addr,
    addr: SocketAddr,
    count: usize,
    user: impl Fn(usize) -> String,
    password: impl Fn(usize) -> String,
) -> Vec<HttpResponse> {
    let start = Arc::new(Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (start, user, password) = (Arc::clone(&start), user(i), password(i));
            tokio::spawn(async move {
                start.wait().await;
                login_from(from, addr, &user, &password).await
            })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(within("a burst login", task).await.expect("login task"));
    }
    responses
}

fn statuses(responses: &[HttpResponse]) -> (usize, usize, usize) {
    let count = |status| responses.iter().filter(|r| r.status == status).count();
    let (ok, unauthorized, throttled) = (count(200), count(401), count(429));
    assert_eq!(
        ok + unauthorized + throttled,
        responses.len(),
        "only 200, 401 and 429: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for response in responses.iter().filter(|r| r.status == 429) {
        assert_throttled(response);
    }
    (ok, unauthorized, throttled)
}

const FREE: u32 = 5;

async fn throttle_server() -> TestServer {
    TestServer::start(|c| {
        c.login_free_failures = FREE;
        // Short lockouts so the owner's later login is quick to test.
        c.login_lockout_base = Duration::from_millis(200);
        c.login_lockout_max = Duration::from_millis(800);
    })
    .await
}

/// 40 wrong logins for one account at once verify at most the budget; the
/// owner's correct login after the lockout window succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_logins_verify_at_most_the_budget() {
    let server = throttle_server().await;
    let addr = server.addr;
    assert_eq!(
        register_from(HONEST, addr, "alice", PASSWORD).await.status,
        201
    );
    let before = metric(addr, "confab_password_verifications_total").await;
    let responses = burst(
        FLOODER,
        addr,
        40,
        |_| "alice".into(),
        |i| format!("wrong guess number {i}"),
    )
    .await;
    let verified = metric(addr, "confab_password_verifications_total").await - before;
    let (ok, unauthorized, throttled) = statuses(&responses);
    assert_eq!(ok, 0);
    assert!(
        verified <= u64::from(FREE),
        "{verified} passwords verified for a budget of {FREE}"
    );
    assert_eq!(
        unauthorized as u64, verified,
        "every verification answered 401"
    );
    assert_eq!(
        throttled,
        40 - unauthorized,
        "the rest were refused unverified"
    );

    let owner = login_after_lockout(addr, "alice").await;
    assert_eq!(owner.status, 200, "{:?}", owner.body);
    server.stop().await;
}

/// 41 logins at once, the 13th with the right password (the burst of the
/// issue): at most the budget is verified for each era the owner's success
/// starts, never the 28 verifications of a check-then-count throttle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_burst_verifies_at_most_the_budget() {
    let server = throttle_server().await;
    let addr = server.addr;
    assert_eq!(
        register_from(HONEST, addr, "alice", PASSWORD).await.status,
        201
    );
    let before = metric(addr, "confab_password_verifications_total").await;
    let responses = burst(
        FLOODER,
        addr,
        41,
        |_| "alice".into(),
        |i| {
            if i == 12 {
                PASSWORD.to_owned()
            } else {
                format!("wrong guess number {i}")
            }
        },
    )
    .await;
    let verified = metric(addr, "confab_password_verifications_total").await - before;
    let (ok, unauthorized, _) = statuses(&responses);
    assert!(ok <= 1);
    // A success clears the record, opening at most one more budget.
    let bound = u64::from(FREE) * (1 + ok as u64);
    assert!(
        verified <= bound,
        "{verified} verified (ok {ok}, 401 {unauthorized}); bound {bound}"
    );
    assert_eq!(ok as u64 + unauthorized as u64, verified);

    let owner = login_after_lockout(addr, "alice").await;
    assert_eq!(owner.status, 200, "{:?}", owner.body);
    server.stop().await;
}

/// A flood of logins from 127.0.0.2, rotating usernames, gets 429s from the
/// per-address limits; meanwhile a login from 127.0.0.3 succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_does_not_lock_out_another() {
    let server = TestServer::start(|c| {
        c.login_address_burst = 8;
        c.login_address_per_min = 1;
        c.hash_queue_per_address = 4;
        c.hash_running_per_address = 1;
    })
    .await;
    let addr = server.addr;
    assert_eq!(
        register_from(HONEST, addr, "alice", PASSWORD).await.status,
        201
    );
    let flood = tokio::spawn(burst(
        FLOODER,
        addr,
        32,
        |i| format!("victim{i}"),
        |i| format!("wrong guess number {i}"),
    ));
    let honest = login_from(HONEST, addr, "alice", PASSWORD).await;
    assert_eq!(honest.status, 200, "{:?}", honest.body);
    let responses = within("the flood", flood).await.expect("flood task");
    let (ok, unauthorized, throttled) = statuses(&responses);
    assert_eq!(ok, 0);
    assert!(
        unauthorized <= 8,
        "{unauthorized} failures verified from one address with a budget of 8"
    );
    assert!(throttled >= 32 - 8, "{throttled} of 32 throttled");
    assert!(metric(addr, "confab_auth_address_throttled_total").await >= throttled as u64);
    // The honest address is still welcome afterwards.
    let again = login_from(HONEST, addr, "alice", PASSWORD).await;
    assert_eq!(again.status, 200);
    server.stop().await;
}

/// Rotating usernames from one address hit the per-address failure budget;
/// another address is unaffected, and a successful login costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_usernames_hit_the_address_failure_budget() {
    let server = TestServer::start(|c| {
        c.login_address_burst = 3;
        c.login_address_per_min = 1;
    })
    .await;
    let addr = server.addr;
    assert_eq!(
        register_from(FLOODER, addr, "alice", PASSWORD).await.status,
        201
    );
    // Successes give their token back: any number of them is free.
    for _ in 0..5 {
        assert_eq!(
            login_from(FLOODER, addr, "alice", PASSWORD).await.status,
            200
        );
    }
    for i in 0..3 {
        let response = login_from(FLOODER, addr, &format!("guess{i}"), "wrong password here").await;
        assert_eq!(response.status, 401, "failure {i} is within the budget");
    }
    let refused = login_from(FLOODER, addr, "guess3", "wrong password here").await;
    assert_throttled(&refused);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("address"), "{message}");
    // Even the right password waits: the address is out of budget.
    assert_throttled(&login_from(FLOODER, addr, "alice", PASSWORD).await);
    // Another address is not.
    assert_eq!(
        login_from(HONEST, addr, "guess3", "wrong password here")
            .await
            .status,
        401
    );
    assert_eq!(
        login_from(HONEST, addr, "alice", PASSWORD).await.status,
        200
    );
    server.stop().await;
}

/// Registrations are limited per address; another address still registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_address() {
    let server = TestServer::start(|c| {
        c.register_address_burst = 3;
        c.register_address_per_min = 1;
    })
    .await;
    let addr = server.addr;
    for i in 0..3 {
        let response = register_from(FLOODER, addr, &format!("spam{i}"), PASSWORD).await;
        assert_eq!(response.status, 201, "{:?}", response.body);
    }
    let refused = register_from(FLOODER, addr, "spam3", PASSWORD).await;
    let wait = assert_throttled(&refused);
    assert!(wait > Duration::from_secs(1), "one a minute: {wait:?}");
    // Invalid requests are answered before the limit and cost nothing.
    assert_eq!(
        register_from(FLOODER, addr, "spam3", "short").await.status,
        400
    );
    let other = register_from(HONEST, addr, "spam3", PASSWORD).await;
    assert_eq!(other.status, 201, "{:?}", other.body);
    // The refused registration created no account.
    assert_eq!(
        login_from(HONEST, addr, "spam3", PASSWORD).await.status,
        200
    );
    server.stop().await;
}

/// Refused passwords get 400 invalid_password naming the rule, never
/// echoing the password (§5.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_passwords_are_refused_without_echo() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let cases = [
        ("fourteen chars", "at least 15"),
        ("        ", "at least 15"),
        ("1234567890qwerty", "commonly used"),
        ("QWERTYUIOPASDFGHJKL", "commonly used"),
    ];
    for (password, rule) in cases {
        let response = register_from(HONEST, addr, "weakling", password).await;
        assert_eq!(response.status, 400, "{password:?}");
        let body = response.json();
        assert_eq!(body["error"]["code"], "invalid_password", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(rule), "{password:?}: {message}");
        assert!(!message.contains(password.trim()) || password.trim().is_empty());
    }
    // Code points, not bytes: 15 two-byte characters are a valid password.
    let response = register_from(HONEST, addr, "weakling", &"é".repeat(15)).await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    server.stop().await;
}
