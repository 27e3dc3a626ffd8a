//! `ingest`: many senders in small rooms, where storage is the bottleneck:
//! how many *durable, acknowledged* messages per second the server takes,
//! and how long a sender waits for its SendAck (§8.3).
//!
//! A SendAck means the message's transaction committed with an fsync. A
//! server that fsyncs once per message can ack at most as many messages
//! per second as the disk does fsyncs, so the run also measures exactly
//! that on the same disk — write a small record, `fdatasync`, repeat, in a
//! file next to the database (SQLite uses fdatasync on Linux) — and
//! reports the ratio. Group commit is what lets the ratio exceed 1.
//!
//! Against a baseline (`--vs ceiling`) the same senders run against a
//! server that answers each SendMessage with a SendAck and pushes it,
//! storing nothing: the *no-storage ack ceiling* of Confab's stack, which
//! Confab's durable ingest is reported as a fraction of. No fsync baseline
//! is measured then (nothing is written).
//!
//! Against a cluster the senders are spread round-robin over the nodes, so
//! each room of two has a member on each of two nodes: every message is
//! committed by one node and delivered by another too. There the limit is
//! PostgreSQL, and the baseline is `pgbench` doing the same transaction
//! ([`crate::pgbench`]), run by the caller.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Integrity, PhaseReport, Progress, Publisher, RateSweep, UserPlan, populate};
use crate::BenchError;
use crate::client::Endpoint;
use crate::stats::Recorder;
use crate::stats::{ShardedHistogram, Summary};
use crate::target::ProcessProbe;

/// Parameters of an ingest run.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Sending users, one socket each.
    pub senders: usize,
    /// Members per room.
    pub room_size: usize,
    /// The rates to measure.
    pub rates: RateSweep,
    /// Most write+fsync rounds of the baseline.
    pub fsync_rounds: u32,
    /// Longest the fsync baseline may run.
    pub fsync_time: Duration,
    /// Prefix of user and room names.
    pub prefix: String,
}

/// One write+fsync per message, measured on the server's disk.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FsyncBaseline {
    /// Rounds done.
    pub rounds: u32,
    /// Rounds per second: the most messages per second a
    /// one-fsync-per-message server could acknowledge here.
    pub per_second: f64,
    /// Latency of one write+fdatasync.
    pub latency: Summary,
}

/// What an ingest run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Server label.
    pub target: String,
    /// Senders.
    pub senders: usize,
    /// Members per room.
    pub room_size: usize,
    /// Server nodes the senders were spread over (1: a single server).
    pub nodes: usize,
    /// One entry per rate.
    pub steps: Vec<PhaseReport>,
    /// Highest acks per second among sustained rates.
    pub best_sustained_acks_per_s: Option<f64>,
    /// Messages per storage transaction over the run, from `/metrics`
    /// (summed over the nodes of a cluster).
    pub messages_per_commit: Option<f64>,
    /// The one-fsync-per-message baseline (none against a baseline server,
    /// which writes nothing).
    pub fsync: Option<FsyncBaseline>,
    /// best_sustained_acks_per_s / fsync.per_second.
    pub ratio_vs_fsync_per_message: Option<f64>,
    /// Sockets lost, gaps and duplicates.
    pub integrity: Integrity,
    /// Errors and anomalies by kind.
    pub events: BTreeMap<String, u64>,
}

/// Writes a 128-byte record and fdatasyncs it, `rounds` times at most and
/// for `within` at most, in a scratch file in `dir`.
pub fn fsync_baseline(
    dir: &Path,
    rounds: u32,
    within: Duration,
) -> Result<FsyncBaseline, BenchError> {
    let path = dir.join(format!("fsync-baseline-{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&path)
        .map_err(|e| BenchError::io(format!("creating {}", path.display()), e))?;
    let record = [b'r'; 128];
    let histogram = ShardedHistogram::default();
    let started = Instant::now();
    let mut done = 0;
    while done < rounds && started.elapsed() < within {
        let t = Instant::now();
        file.write_all(&record)
            .and_then(|()| file.sync_data())
            .map_err(|e| BenchError::io(format!("write+fdatasync {}", path.display()), e))?;
        histogram.record(t.elapsed());
        done += 1;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    drop(file);
    std::fs::remove_file(&path).ok();
    Ok(FsyncBaseline {
        rounds: done,
        per_second: f64::from(done) / elapsed,
        latency: histogram.summary(),
    })
}

/// Messages stored and write batches committed so far, summed over `nodes`.
async fn commits(nodes: &[Arc<Endpoint>]) -> Option<(f64, f64)> {
    let (mut stored, mut batches) = (0.0, 0.0);
    for endpoint in nodes {
        stored += crate::http::metric(&endpoint.server, "confab_messages_stored_total")
            .await
            .ok()??;
        batches += crate::http::metric(&endpoint.server, "confab_write_batches_total")
            .await
            .ok()??;
    }
    Some((stored, batches))
}

/// Runs the ingest workload against `nodes` (one server, or the nodes of
/// one cluster); the fsync baseline runs in `fsync_dir` when given, which
/// should be on the server's data disk.
pub async fn run(
    nodes: &[Arc<Endpoint>],
    config: &IngestConfig,
    server: Option<ProcessProbe>,
    fsync_dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<IngestReport, BenchError> {
    let Some(endpoint) = nodes.first() else {
        return Err(BenchError::Config("ingest needs a server".into()));
    };
    if config.senders == 0 || config.room_size == 0 || config.rates.rates.is_empty() {
        return Err(BenchError::Config(
            "ingest needs senders, a room size and at least one rate".into(),
        ));
    }
    let fsync = match fsync_dir {
        Some(dir) => {
            progress.stage("fsync baseline", 0);
            let dir = dir.to_owned();
            let (rounds, within) = (config.fsync_rounds, config.fsync_time);
            let fsync = tokio::task::spawn_blocking(move || fsync_baseline(&dir, rounds, within))
                .await
                .map_err(|e| BenchError::Config(format!("fsync baseline panicked: {e}")))??;
            progress.note(&format!(
                "fsync    one write+fdatasync per message: {:.0}/s  ({})",
                fsync.per_second, fsync.latency
            ));
            Some(fsync)
        }
        None => None,
    };

    let users: Vec<UserPlan> = (0..config.senders)
        .map(|i| UserPlan {
            name: format!("{}in-{i}", config.prefix),
            rooms: vec![format!("{}in-{}", config.prefix, i / config.room_size)],
            connections: 1,
        })
        .collect();
    let recorder = Recorder::new(config.rates.rates.len());
    let population = populate(nodes, &users, &recorder, progress).await?;
    let publishers: Vec<Publisher> = population
        .conns
        .iter()
        .enumerate()
        .map(|(i, conn)| {
            // The last room may be smaller than the others.
            let room = i / config.room_size;
            let members = config
                .room_size
                .min(config.senders - room * config.room_size);
            Publisher {
                tx: conn.tx.clone(),
                room: Arc::clone(&conn.rooms[0]),
                audience: u32::try_from(members).unwrap_or(u32::MAX),
            }
        })
        .collect();
    let publishers = Arc::new(publishers);
    let before = commits(nodes).await;
    let label = format!("{} ingest", endpoint.name);
    let steps = config
        .rates
        .run(&label, &publishers, 0, &recorder, server, progress)
        .await;
    let after = commits(nodes).await;
    let outcomes = population.close().await;
    let messages_per_commit = match (before, after) {
        (Some((s0, b0)), Some((s1, b1))) if b1 > b0 => Some((s1 - s0) / (b1 - b0)),
        _ => None,
    };
    let best_sustained_acks_per_s = config.rates.best(&steps).map(|s| s.acks_per_s);
    Ok(IngestReport {
        target: endpoint.name.clone(),
        senders: config.senders,
        room_size: config.room_size,
        nodes: nodes.len(),
        steps,
        best_sustained_acks_per_s,
        messages_per_commit,
        ratio_vs_fsync_per_message: best_sustained_acks_per_s
            .zip(fsync)
            .map(|(a, f)| a / f.per_second.max(1e-9)),
        fsync,
        integrity: Integrity::of(&outcomes),
        events: recorder.events(),
    })
}
