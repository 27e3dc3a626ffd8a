//! A short run of every workload at toy sizes, against an in-process
//! reference server on 127.0.0.1:0 (and the in-crate ceiling, and the Node
//! baseline when its packages are installed). These tests check
//! correctness only — nothing lost, nothing refused, nothing duplicated —
//! and never timing: speed is for `confab-bench` runs, not CI.

use std::sync::Arc;
use std::time::Duration;

use confab_bench::target::{ChildServer, Kind, Launch};
use confab_bench::workload::fanout::{self, FanoutConfig, FanoutReport};
use confab_bench::workload::idle::{self, IdleConfig};
use confab_bench::workload::ingest::{self, IngestConfig};
use confab_bench::workload::login_flood::{self, LoginFloodConfig};
use confab_bench::workload::reconnect::{self, ReconnectConfig};
use confab_bench::workload::{Integrity, Quiet, RateSweep};
use confab_server::{Config, Server, ServerHandle};

async fn confab() -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::bind(Config::for_data_dir(dir.path()))
        .await
        .expect("server starts")
        .spawn();
    (server, dir)
}

/// 30 publishes per second for one second, judged on correctness only.
fn one_rate() -> RateSweep {
    RateSweep {
        rates: vec![30.0],
        sweep: false,
        duration: Duration::from_secs(1),
        text_bytes: 64,
        p99_target_ms: f64::INFINITY,
        // Bounds the wait; a correct server settles long before.
        drain: Duration::from_secs(20),
    }
}

fn small_fanout() -> FanoutConfig {
    FanoutConfig {
        rooms: 2,
        members: 3,
        rates: one_rate(),
        warmup: Duration::ZERO,
        prefix: String::new(),
    }
}

fn assert_lossless(report: &FanoutReport) {
    let step = &report.steps[0];
    assert!(step.sent > 0, "{step:?}");
    assert_eq!(step.acked, step.sent, "every send acked: {step:?}");
    assert_eq!(
        step.expected,
        step.acked * report.members as u64,
        "{step:?}"
    );
    assert_eq!(
        step.delivered, step.expected,
        "every push delivered: {step:?}"
    );
    assert_eq!(
        (step.drops, step.send_errors, step.duplicates),
        (0, 0, 0),
        "{step:?}"
    );
    assert!(step.settled);
    assert_eq!(report.integrity, Integrity::default());
    assert!(report.events.is_empty(), "{:?}", report.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_message_once_on_confab() {
    let (server, _dir) = confab().await;
    let endpoint = Arc::new(Kind::Confab.endpoint(&server.url()).expect("server URL"));
    let report = fanout::run(&[endpoint], &small_fanout(), None, &Quiet)
        .await
        .expect("fanout runs");
    assert_lossless(&report);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_message_once_on_the_ceiling() {
    let (addr, serve) = confab_bench::ceiling::bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("binds");
    let serving = tokio::spawn(serve);
    let endpoint = Arc::new(
        Kind::Ceiling
            .endpoint(&format!("http://{addr}"))
            .expect("server URL"),
    );
    let report = fanout::run(&[endpoint], &small_fanout(), None, &Quiet)
        .await
        .expect("fanout runs");
    assert_lossless(&report);
    serving.abort();
}

/// The Node baseline needs `npm ci --prefix crates/bench/peers`; without it
/// the test says so and checks nothing, unless `CONFAB_BENCH_REQUIRE_NODE`
/// is set (`.ci/run` sets it after installing): then a missing baseline is
/// a failure, not a silent skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_message_once_on_node_ws() {
    let work = tempfile::tempdir().expect("temp dir");
    let launch = Launch {
        confab_bin: "confab-server".into(),
        bench_bin: "confab-bench".into(),
        peers_dir: confab_bench::target::default_peers_dir(),
        work_dir: work.path().to_owned(),
        cpus: None,
    };
    if !launch.peers_dir.join("node_modules/ws").is_dir() {
        assert!(
            std::env::var_os("CONFAB_BENCH_REQUIRE_NODE").is_none(),
            "CONFAB_BENCH_REQUIRE_NODE is set but the node-ws baseline is not installed \
             in {} (npm ci --prefix crates/bench/peers)",
            launch.peers_dir.display()
        );
        eprintln!("skipped: node-ws baseline not installed (npm ci --prefix crates/bench/peers)");
        return;
    }
    let node = ChildServer::start(Kind::NodeWs, &launch, &[])
        .await
        .expect("node starts");
    let report = fanout::run(
        &[Arc::new(node.endpoint().expect("server URL"))],
        &small_fanout(),
        Some(node.probe()),
        &Quiet,
    )
    .await
    .expect("fanout runs");
    node.stop().await;
    assert_lossless(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_stay_up_and_are_counted() {
    let (server, _dir) = confab().await;
    let endpoint = Arc::new(Kind::Confab.endpoint(&server.url()).expect("server URL"));
    let config = IdleConfig {
        sizes: vec![4, 10],
        sockets_per_user: 3,
        users_per_room: 2,
        prefix: String::new(),
    };
    let report = idle::run(endpoint, &config, None, &Quiet)
        .await
        .expect("idle runs");
    let sockets: Vec<usize> = report.points.iter().map(|p| p.sockets).collect();
    assert_eq!(sockets, [4, 10]);
    assert_eq!(report.integrity, Integrity::default());
    assert!(report.events.is_empty(), "{:?}", report.events);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_acks_every_message_and_measures_fsync() {
    let (server, dir) = confab().await;
    let endpoint = Arc::new(Kind::Confab.endpoint(&server.url()).expect("server URL"));
    let config = IngestConfig {
        senders: 6,
        room_size: 2,
        rates: one_rate(),
        fsync_rounds: 20,
        fsync_time: Duration::from_secs(5),
        prefix: String::new(),
    };
    let report = ingest::run(&[endpoint], &config, None, Some(dir.path()), &Quiet)
        .await
        .expect("ingest runs");
    let step = &report.steps[0];
    assert_eq!(step.acked, step.sent, "{step:?}");
    assert_eq!(
        (step.drops, step.send_errors, step.unanswered),
        (0, 0, 0),
        "{step:?}"
    );
    assert_eq!(step.delivered, step.acked * 2, "{step:?}");
    assert!(report.fsync.expect("the fsync baseline ran").rounds > 0);
    assert!(
        report.messages_per_commit.is_some_and(|m| m >= 1.0),
        "{report:?}"
    );
    assert_eq!(report.integrity, Integrity::default());
    assert!(report.events.is_empty(), "{:?}", report.events);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_loses_nothing() {
    let (server, _dir) = confab().await;
    let endpoint = Arc::new(Kind::Confab.endpoint(&server.url()).expect("server URL"));
    let config = ReconnectConfig {
        clients: 6,
        room_size: 3,
        rate: 20.0,
        duration: Duration::from_millis(1500),
        text_bytes: 64,
        drain: Duration::from_secs(20),
        prefix: String::new(),
    };
    let report = reconnect::run(endpoint, &config, None, &Quiet)
        .await
        .expect("storm runs");
    assert_eq!(report.recovered, 6, "{report:?}");
    assert_eq!(report.replayed_all, 6, "{report:?}");
    assert_eq!(report.lost_messages, 0, "{report:?}");
    assert_eq!(report.integrity, Integrity::default(), "{report:?}");
    let publishing = &report.publishing;
    assert!(publishing.acked > 0);
    assert_eq!(publishing.acked, publishing.sent, "{publishing:?}");
    assert_eq!(publishing.delivered, publishing.expected, "{publishing:?}");
    assert!(report.events.is_empty(), "{:?}", report.events);
    server.shutdown().await.expect("clean shutdown");
}

/// The honest client logs in every time, flood or not; the flood's answers
/// are all refusals (401, or 429/503 from the limits). No timing asserts:
/// the latencies are for `confab-bench login-flood` runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_keeps_the_honest_client_logging_in() {
    let (server, _dir) = confab().await;
    let endpoint = Arc::new(Kind::Confab.endpoint(&server.url()).expect("server URL"));
    let config = LoginFloodConfig {
        flooders: 4,
        honest_logins: 3,
        prefix: String::new(),
    };
    let report = login_flood::run(endpoint, &config, &Quiet)
        .await
        .expect("login-flood runs");
    assert!(report.honest_failures.is_empty(), "{report:?}");
    assert_eq!(report.baseline.count, 3, "{report:?}");
    assert_eq!(report.flooded.count, 3, "{report:?}");
    assert!(
        report.flood_statuses.values().sum::<u64>() >= 1,
        "the flood ran: {report:?}"
    );
    assert!(
        report
            .flood_statuses
            .keys()
            .all(|s| [401, 429, 503].contains(s)),
        "{report:?}"
    );
    server.shutdown().await.expect("clean shutdown");
}
