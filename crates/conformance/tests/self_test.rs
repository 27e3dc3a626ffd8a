//! The suite tests itself: it must pass the real reference server and catch
//! deliberately broken ones (see `support`), each breakage by the scenarios
//! that exist to catch it.

mod support;

use std::time::Duration;

use confab_conformance::{Outcome, Report, RunConfig, run};
use support::{Breakage, Mitm, TestServer};

fn config(url: String) -> RunConfig {
    let mut config = RunConfig::new(url);
    // Failing runs wait out their step timeouts; a correct server answers
    // in milliseconds, so a few seconds is ample even on a loaded machine.
    config.step_timeout = Duration::from_secs(5);
    config.jobs = 3;
    config
}

fn outcome<'r>(report: &'r Report, name: &str) -> &'r Outcome {
    &report
        .scenarios
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("scenario {name} did not run"))
        .outcome
}

/// Runs `scenarios` against the server behind a MITM with `breakage`;
/// asserts `must_fail` fail and `must_pass` pass.
async fn check_breakage(breakage: Breakage, must_fail: &[&str], must_pass: &[&str]) {
    let server = TestServer::start().await;
    let mitm = Mitm::start(server.addr(), breakage).await;
    let mut config = config(server.url());
    config.ws_url = Some(mitm.ws_url());
    config.filter = must_fail
        .iter()
        .chain(must_pass)
        .map(|s| s.to_string())
        .collect();
    let report = run(&config).await.expect("the run completes");
    let summary = report.human_summary(20);
    for name in must_fail {
        assert!(
            matches!(outcome(&report, name), Outcome::Failed(_)),
            "{breakage:?}: {name} should fail\n{summary}"
        );
    }
    for name in must_pass {
        assert!(
            matches!(outcome(&report, name), Outcome::Passed),
            "{breakage:?}: {name} should still pass (the breakage is that narrow)\n{summary}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_passes_every_scenario() {
    // Short timers let the slow scenarios (heartbeat, idle and auth
    // timeouts, typing expiry) run too; scenarios read the limits from
    // Welcome, so they adapt.
    let server = TestServer::start_with(|c| {
        c.limits.heartbeat_interval = Duration::from_millis(1000);
        c.limits.idle_timeout = Duration::from_millis(10_000);
        c.limits.typing_ttl = Duration::from_millis(1500);
        c.auth_timeout = Duration::from_millis(2000);
    })
    .await;
    let mut config = config(server.url());
    config.include_slow = true;
    let report = run(&config).await.expect("the run completes");
    let summary = report.human_summary(40);
    assert!(report.success(), "{summary}");
    assert!(report.scenarios.len() >= 40, "{summary}");
    let skipped: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped { .. }))
        .map(|r| r.name.as_str())
        .collect();
    // The token-expiry scenarios skip here (tokens live 30 days on this
    // server); expired_tokens_are_refused runs them against a 2 s lifetime.
    assert_eq!(
        skipped,
        ["token-expired", "socket-closed-at-token-expiry"],
        "the reference server grants every capability and slow scenarios were included"
    );
    support::check_junit(&report.to_junit(), report.scenarios.len(), 0, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused() {
    // Its own server: a short token lifetime would break every other scenario.
    let server = TestServer::start_with(|c| c.token_ttl = Duration::from_secs(2)).await;
    let mut config = config(server.url());
    config.include_slow = true;
    config.filter = vec![
        "token-expired".into(),
        "socket-closed-at-token-expiry".into(),
    ];
    let report = run(&config).await.expect("the run completes");
    assert!(
        report.success() && report.counts().passed == 2,
        "{}",
        report.human_summary(40)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neutral_mitm_changes_nothing() {
    check_breakage(
        Breakage::None,
        &[],
        &[
            "history-paging",
            "resume-replays",
            "ack-means-durable",
            "frame-before-auth",
            "idempotent-repeat",
            "upgrade-refusals",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_tenth_fanout_message_is_caught() {
    check_breakage(
        Breakage::DropEveryTenthFanout,
        &["history-paging", "fault-latency-fanout", "rate-limit"],
        &["ping-pong", "welcome", "idempotent-repeat"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicating_a_message_on_resume_is_caught() {
    check_breakage(
        Breakage::DuplicateOnResume,
        &[
            "resume-replays",
            "resume-tracked",
            "new-connection-inactive",
            "fault-blackhole-resume",
        ],
        &["join-room", "resume-empty"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_before_storing_then_crashing_is_caught() {
    check_breakage(
        Breakage::AckBeforeStoreThenCrash,
        &[
            "ack-means-durable",
            "fanout-three-users-two-rooms",
            "idempotent-repeat",
            "sendacks-in-order",
        ],
        &["list-members", "resume-empty"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_frames_before_auth_is_caught() {
    check_breakage(
        Breakage::AnswersBeforeAuth,
        &["frame-before-auth", "token-in-url-ignored"],
        &["bad-token", "welcome"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignoring_client_msg_id_is_caught() {
    check_breakage(
        Breakage::IgnoresClientMsgId,
        &[
            "idempotent-repeat",
            "idempotency-conflict",
            "idempotency-concurrent",
            "idempotency-after-reconnect",
            "fault-cut-mid-stream",
        ],
        &["idempotency-per-user", "sendacks-in-order"],
    )
    .await;
}
