//! The suite tests itself: it must pass the real reference server and catch
//! deliberately broken ones (see `support`), each breakage by the scenarios
//! that exist to catch it.

mod support;

use std::time::Duration;

use confab_conformance::report::Failure;
use confab_conformance::{Outcome, Report, RunConfig, RunError, run, scenario};
use support::{Breakage, Forwarder, Mitm, TestServer};

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

/// The failure of scenario `name`, which must have failed.
fn failure<'r>(report: &'r Report, name: &str) -> &'r Failure {
    match outcome(report, name) {
        Outcome::Failed(f) => f,
        other => panic!("{name} should have failed, got {other:?}"),
    }
}

/// `(conn, node)` of every connection `actor` opened, from the transcript.
fn opens(failure: &Failure, actor: &str) -> Vec<(u64, u64)> {
    failure
        .transcript
        .iter()
        .filter(|t| t["actor"] == actor && t.get("open").is_some())
        .map(|t| {
            (
                t["conn"].as_u64().expect("conn number"),
                t["node"].as_u64().expect("node index"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_alternate_over_two_servers_and_the_report_says_where() {
    // Two forwarders in front of one server: two addresses the suite sees
    // as two nodes, each counting the WebSocket upgrades sent to it.
    let server = TestServer::start().await;
    let node0 = Forwarder::start(server.addr()).await;
    let node1 = Forwarder::start(server.addr()).await;
    // Each scenario ends with a step that cannot pass, so its failure
    // carries the transcript and the layout to check.
    let end = "  - http: {method: GET, path: /v1/register}\n    expect_status: 299\n";
    let spread = format!(
        "name: spread\nsummary: x\ncovers: [R-1.1]\nusers: [alice, bob, carol]\nsteps:\n  - connect: [alice, bob, carol]\n{end}"
    );
    let moved = format!(
        "name: moved\nsummary: x\ncovers: [R-1.1]\nusers: [dave, erin]\nactors:\n  erin: {{user: erin, node: 1}}\n  dave: {{user: dave}}\nsteps:\n  - connect: [erin, dave]\n  - disconnect: erin\n  - connect: erin\n    node: 2\n{end}"
    );
    let scenarios = scenario::load_all([
        ("spread.yaml", spread.as_str()),
        ("moved.yaml", moved.as_str()),
    ])
    .expect("test scenarios load");
    let mut config = RunConfig::with_servers([node0.url(), node1.url()]);
    config.step_timeout = Duration::from_secs(5);
    config.scenarios = Some(scenarios);
    let report = run(&config).await.expect("the run completes");
    let summary = report.human_summary(40);
    assert_eq!(report.servers, [node0.url(), node1.url()], "{summary}");
    assert!(
        summary.starts_with(&format!(
            "confab-conformance against 2 servers (node 0 {}, node 1 {})",
            node0.url(),
            node1.url()
        )),
        "{summary}"
    );

    // Round-robin in declaration order: alice 0, bob 1, carol 0.
    let spread = failure(&report, "spread");
    assert_eq!(spread.step, 2, "{summary}");
    assert_eq!(opens(spread, "alice"), [(1, 0)], "{summary}");
    assert_eq!(opens(spread, "bob"), [(1, 1)], "{summary}");
    assert_eq!(opens(spread, "carol"), [(1, 0)], "{summary}");
    assert_eq!(spread.nodes["bob"], format!("node 1 ({})", node1.url()));
    assert_eq!(spread.nodes["carol"], format!("node 0 ({})", node0.url()));
    // Each actor's login went to its own node, too.
    let logins: Vec<u64> = spread
        .transcript
        .iter()
        .filter(|t| t["http"] == "POST /v1/login")
        .filter_map(|t| t["node"].as_u64())
        .collect();
    assert_eq!(logins, [0, 1, 0], "{summary}");

    // Declared first but pinned to node 1, erin reconnects on node 2 % 2 = 0;
    // dave, second in order, is on node 1.
    let moved = failure(&report, "moved");
    assert_eq!(moved.step, 4, "{summary}");
    assert_eq!(opens(moved, "erin"), [(1, 1), (2, 0)], "{summary}");
    assert_eq!(opens(moved, "dave"), [(1, 1)], "{summary}");
    assert!(
        moved
            .transcript
            .iter()
            .any(|t| t["actor"] == "erin" && t["moved_to_node"] == 0),
        "{summary}"
    );
    assert_eq!(moved.nodes["erin"], format!("node 0 ({})", node0.url()));

    // The sockets really went where the report says: per node, its probe
    // plus the connections above (node 0: alice, carol, erin's second;
    // node 1: bob, erin's first, dave).
    assert_eq!(node0.upgrades(), 1 + 3, "{summary}");
    assert_eq!(node1.upgrades(), 1 + 3, "{summary}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_spread_over_two_servers() {
    // The same server twice, once directly and once through a forwarder:
    // every multi-actor scenario runs with its actors on both "nodes". The
    // first is the server itself, because stall and connection-cap probes
    // go to the first server and must reach it unforwarded.
    let server = TestServer::start_with(|c| {
        c.limits.heartbeat_interval = Duration::from_millis(1000);
        c.limits.idle_timeout = Duration::from_millis(10_000);
        c.limits.typing_ttl = Duration::from_millis(1500);
        c.auth_timeout = Duration::from_millis(2000);
    })
    .await;
    let second = Forwarder::start(server.addr()).await;
    let mut config = config(server.url());
    config.servers.push(second.url());
    config.include_slow = true;
    let report = run(&config).await.expect("the run completes");
    let summary = report.human_summary(40);
    assert!(report.success(), "{summary}");
    assert!(report.scenarios.len() >= 40, "{summary}");
    assert_eq!(report.servers.len(), 2, "{summary}");
    // Every scenario with two or more actors put one on the second server.
    let multi_actor = scenario::embedded()
        .expect("embedded scenarios load")
        .iter()
        .filter(|s| s.actors.len() > 1)
        .count();
    assert!(
        second.upgrades() > multi_actor,
        "{} upgrades reached the second server, {multi_actor} multi-actor scenarios",
        second.upgrades()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_disagree_on_limits_are_refused() {
    let a = TestServer::start().await;
    let b = TestServer::start_with(|c| c.limits.max_text_bytes = 1000).await;
    let mut config = RunConfig::with_servers([a.url(), b.url()]);
    config.step_timeout = Duration::from_secs(5);
    config.filter = vec!["ping-pong".into()];
    match run(&config).await {
        Err(error @ RunError::ServersDisagree { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains(&a.url()) && text.contains(&b.url()),
                "names both servers: {text}"
            );
            assert!(
                text.contains("Welcome.limits.maxTextBytes") && text.contains("1000"),
                "says which limit differs: {text}"
            );
        }
        other => panic!("expected ServersDisagree, got {other:?}"),
    }
    // The same two URLs the other way round are refused too, and one of
    // them alone runs.
    let mut swapped = RunConfig::with_servers([b.url(), a.url()]);
    swapped.filter = vec!["ping-pong".into()];
    assert!(matches!(
        run(&swapped).await,
        Err(RunError::ServersDisagree { .. })
    ));
    let mut alone = RunConfig::new(b.url());
    alone.filter = vec!["ping-pong".into()];
    assert!(run(&alone).await.expect("one server runs").success());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_second_server_is_named() {
    let server = TestServer::start().await;
    // A port nothing listens on: bind one, note it, and let it go.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address")
    };
    let dead_url = format!("http://{dead}");
    let mut config = RunConfig::with_servers([server.url(), dead_url.clone()]);
    config.step_timeout = Duration::from_secs(5);
    config.filter = vec!["ping-pong".into()];
    match run(&config).await {
        Err(RunError::Unreachable { url, .. }) => assert_eq!(url, dead_url),
        other => panic!("expected Unreachable for the second server, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breakage_on_one_node_is_caught_and_blamed_on_that_node() {
    // Node 1 duplicates replays; node 0 is the server itself. In
    // resume-tracked, bob (2nd actor) resumes on node 1 and must fail, with
    // the report naming node 1; in resume-other-node, bob is cut off from
    // node 1 and resumes on node 0, so it passes.
    let server = TestServer::start().await;
    let broken = Mitm::start(server.addr(), Breakage::DuplicateOnResume).await;
    let mut config = config(server.url());
    config.servers.push(broken.url());
    config.filter = vec!["resume-tracked".into(), "resume-other-node".into()];
    let report = run(&config).await.expect("the run completes");
    let summary = report.human_summary(60);
    let tracked = failure(&report, "resume-tracked");
    assert_eq!(
        tracked.nodes["bob"],
        format!("node 1 ({})", broken.url()),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("bob=node 1 ({})", broken.url())),
        "{summary}"
    );
    assert!(
        opens(tracked, "bob").iter().all(|&(_, node)| node == 1),
        "{summary}"
    );
    assert!(
        matches!(outcome(&report, "resume-other-node"), Outcome::Passed),
        "{summary}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letting_anyone_edit_is_caught() {
    check_breakage(
        Breakage::AnyoneMayEdit,
        &["relation-edit", "relation-redact"],
        &["relation-reply", "relation-react"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeping_deleted_text_is_caught() {
    check_breakage(
        Breakage::KeepsDeletedText,
        &["relation-redact"],
        &["relation-edit", "relation-react"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusting_the_client_quote_is_caught() {
    check_breakage(
        Breakage::TrustsClientQuote,
        &["relation-reply"],
        &["relation-edit", "relation-redact"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_a_reaction_twice_is_caught() {
    check_breakage(
        Breakage::ReactionsCountTwice,
        &["relation-react"],
        &["relation-edit", "relation-reply"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_relations_without_fallbacks_is_caught() {
    check_breakage(
        Breakage::NoFallbacks,
        &["relation-fallback"],
        &["relation-edit", "relation-react", "capabilities-negotiated"],
    )
    .await;
}
