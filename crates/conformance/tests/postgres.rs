//! The whole suite against a reference server storing everything in
//! PostgreSQL (`CONFAB_TEST_DATABASE_URL`; skipped with one line without
//! it, a failure with `CONFAB_REQUIRE_SERVICES=1`). Same expectations as
//! `self_test.rs` on SQLite: every scenario passes but the two token-expiry
//! ones, which need a short token lifetime.

#[path = "../../server/tests/pg/mod.rs"]
mod pg;
mod support;

use std::time::Duration;

use confab_conformance::{Outcome, RunConfig, run};
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backed_server_passes_every_scenario() {
    let Some(schema) =
        pg::TestSchema::create("a_postgres_backed_server_passes_every_scenario").await
    else {
        return;
    };
    let url = schema.url();
    let server = TestServer::start_with(|c| {
        c.database_url = Some(url);
        c.limits.heartbeat_interval = Duration::from_millis(1000);
        c.limits.idle_timeout = Duration::from_millis(10_000);
        c.limits.typing_ttl = Duration::from_millis(1500);
        c.auth_timeout = Duration::from_millis(2000);
    })
    .await;
    let mut config = RunConfig::new(server.url());
    config.step_timeout = Duration::from_secs(5);
    config.jobs = 3;
    config.include_slow = true;
    let report = run(&config).await.expect("the run completes");
    let summary = report.human_summary(40);
    let failed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .map(|r| r.name.as_str())
        .collect();
    assert!(failed.is_empty(), "{summary}");
    assert!(report.scenarios.len() >= 40, "{summary}");
    let skipped: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped { .. }))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(skipped, ["token-expired", "socket-closed-at-token-expiry"]);
    server.stop().await;
}
