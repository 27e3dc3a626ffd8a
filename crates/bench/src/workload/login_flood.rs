//! `login-flood`: how long an honest login takes while another address
//! floods the server with logins (§15.3).
//!
//! One honest user logs in again and again from 127.0.0.3, one login at a
//! time, first on a quiet server (the baseline) and then while `flooders`
//! concurrent loops log in from 127.0.0.2 with wrong passwords for
//! rotating, unknown usernames: the costliest flood, since each new name
//! escapes the per-name throttle and every verification runs argon2 (on a
//! dummy hash). The figure is the honest login's latency under the flood
//! over its latency without, in the same run. The flood's answers are
//! counted by status: 401 (verified), 429 (a per-address limit), 503 (the
//! hash queue full).
//!
//! Every address in 127.0.0.0/8 is loopback, so both "clients" run here;
//! the server must listen on 127.0.0.1 (or 0.0.0.0).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use serde::Serialize;
use tokio::task::JoinSet;

use super::Progress;
use crate::BenchError;
use crate::client::Endpoint;
use crate::http::{PASSWORD, register_and_login, timed_login};
use crate::stats::{ShardedHistogram, Summary};

/// The flooding client's address.
pub const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The honest client's address.
pub const HONEST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Parameters of a login-flood run.
#[derive(Debug, Clone)]
pub struct LoginFloodConfig {
    /// Concurrent flooding login loops from [`FLOODER`].
    pub flooders: usize,
    /// Honest logins measured in each phase, one after another.
    pub honest_logins: usize,
    /// Prefix of user names.
    pub prefix: String,
}

/// What a login-flood run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoginFloodReport {
    /// Server label.
    pub target: String,
    /// Honest login latency on a quiet server.
    pub baseline: Summary,
    /// Honest login latency during the flood.
    pub flooded: Summary,
    /// `flooded.p50 / baseline.p50`.
    pub p50_ratio: f64,
    /// `flooded.p99 / baseline.p99`.
    pub p99_ratio: f64,
    /// Honest logins that did not get 200, by status (should be empty).
    pub honest_failures: BTreeMap<u16, u64>,
    /// The flood's answers by status.
    pub flood_statuses: BTreeMap<u16, u64>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// Logs the honest user in `count` times in a row; latencies into a
/// histogram, non-200 statuses counted.
async fn honest_phase(
    endpoint: &Endpoint,
    username: &str,
    count: usize,
    failures: &mut BTreeMap<u16, u64>,
    progress: &dyn Progress,
) -> Result<Summary, BenchError> {
    let histogram = ShardedHistogram::default();
    for _ in 0..count {
        let (status, latency) = timed_login(&endpoint.server, HONEST, username, PASSWORD).await?;
        if status.as_u16() == 200 {
            histogram.record(latency);
        } else {
            *failures.entry(status.as_u16()).or_default() += 1;
        }
        progress.advance(1);
    }
    Ok(histogram.summary())
}

/// Runs the login-flood workload against `endpoint` (a Confab server).
pub async fn run(
    endpoint: Arc<Endpoint>,
    config: &LoginFloodConfig,
    progress: &dyn Progress,
) -> Result<LoginFloodReport, BenchError> {
    if config.flooders == 0 || config.honest_logins == 0 {
        return Err(BenchError::Config(
            "login-flood needs at least one flooder and one honest login".into(),
        ));
    }
    let honest = format!("{}flood-honest", config.prefix);
    progress.stage("register", 1);
    register_and_login(&endpoint.server, &honest).await?;
    progress.advance(1);

    let mut honest_failures = BTreeMap::new();
    progress.stage("honest logins, quiet", config.honest_logins as u64);
    let baseline = honest_phase(
        &endpoint,
        &honest,
        config.honest_logins,
        &mut honest_failures,
        progress,
    )
    .await?;

    // The flood: each loop logs in as a new unknown name every time, until
    // the honest phase is over.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = JoinSet::new();
    for loop_index in 0..config.flooders {
        let (endpoint, stop, prefix) = (
            Arc::clone(&endpoint),
            Arc::clone(&stop),
            config.prefix.clone(),
        );
        flood.spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut attempt = 0u64;
            // At least one attempt each, however soon the honest phase ends.
            loop {
                attempt += 1;
                let name = format!("{prefix}flood-{loop_index}-{attempt}");
                let (status, _) =
                    timed_login(&endpoint.server, FLOODER, &name, "a wrong password guess").await?;
                *statuses.entry(status.as_u16()).or_default() += 1;
                if stop.load(Relaxed) {
                    break;
                }
            }
            Ok::<_, BenchError>(statuses)
        });
    }
    progress.stage("honest logins, flooded", config.honest_logins as u64);
    let flooded = honest_phase(
        &endpoint,
        &honest,
        config.honest_logins,
        &mut honest_failures,
        progress,
    )
    .await;
    stop.store(true, Relaxed);
    let mut flood_statuses: BTreeMap<u16, u64> = BTreeMap::new();
    while let Some(joined) = flood.join_next().await {
        let statuses = joined.map_err(|e| BenchError::Protocol(format!("a flood task: {e}")))??;
        for (status, n) in statuses {
            *flood_statuses.entry(status).or_default() += n;
        }
    }
    let flooded = flooded?;
    Ok(LoginFloodReport {
        target: endpoint.name.clone(),
        p50_ratio: ratio(flooded.p50_ms, baseline.p50_ms),
        p99_ratio: ratio(flooded.p99_ms, baseline.p99_ms),
        baseline,
        flooded,
        honest_failures,
        flood_statuses,
    })
}
