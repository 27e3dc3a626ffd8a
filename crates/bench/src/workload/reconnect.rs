//! `reconnect-storm`: K clients, in rooms that keep receiving messages,
//! all lose their sockets at the same moment and come back: connect, Auth
//! with their token, Resume every room from the last seq they saw (§10).
//!
//! Reports how long each client was gone until its Resumed arrived and
//! when the last one was back (full recovery), then proves nothing was
//! lost: once publishing stops and every ack is in, every client's last
//! seq in its room equals the room's head, with no gap and no duplicate on
//! any socket along the way.
//!
//! Publishers are separate users, one per room, who stay connected: the
//! storm is the listeners'.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::{
    Integrity, PhaseMeter, PhaseReport, Progress, Publisher, Schedule, UserPlan, populate, publish,
};
use crate::BenchError;
use crate::client::{Command, Endpoint, Recovery};
use crate::stats::{Recorder, ShardedHistogram, Summary};
use crate::target::ProcessProbe;

/// Parameters of a reconnect storm.
#[derive(Debug, Clone)]
pub struct ReconnectConfig {
    /// Clients that drop and resume.
    pub clients: usize,
    /// Clients per room (plus one publisher per room).
    pub room_size: usize,
    /// Publishes per second, all rooms together, for the whole run.
    pub rate: f64,
    /// Publishing time; the storm hits a third of the way in.
    pub duration: Duration,
    /// Text size.
    pub text_bytes: usize,
    /// Bound on waiting for recoveries and, after publishing, stragglers.
    pub drain: Duration,
    /// Prefix of user and room names.
    pub prefix: String,
}

/// What a reconnect storm measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReconnectReport {
    /// Server label.
    pub target: String,
    /// Clients stormed.
    pub clients: usize,
    /// Clients back (Resumed received).
    pub recovered: usize,
    /// Clients whose every room came back REPLAYED.
    pub replayed_all: usize,
    /// Drop to Resumed, per client.
    pub recovery: Summary,
    /// When the last client was back, ms after the storm.
    pub full_recovery_ms: f64,
    /// Message seqs some client never received by the end.
    pub lost_messages: u64,
    /// Gaps and duplicates seen on any socket, and sockets lost other than
    /// by the storm.
    pub integrity: Integrity,
    /// The publishing phase as a whole (replays included in deliveries).
    pub publishing: PhaseReport,
    /// Errors and anomalies by kind.
    pub events: BTreeMap<String, u64>,
}

/// Runs the storm against `endpoint`.
pub async fn run(
    endpoint: Arc<Endpoint>,
    config: &ReconnectConfig,
    server: Option<ProcessProbe>,
    progress: &dyn Progress,
) -> Result<ReconnectReport, BenchError> {
    if config.clients == 0 || config.room_size == 0 {
        return Err(BenchError::Config(
            "reconnect-storm needs clients and a room size".into(),
        ));
    }
    let rooms = config.clients.div_ceil(config.room_size);
    let room = |r: usize| format!("{}rs-{r}", config.prefix);
    let mut users: Vec<UserPlan> = (0..rooms)
        .map(|r| UserPlan {
            name: format!("{}rs-pub-{r}", config.prefix),
            rooms: vec![room(r)],
            connections: 1,
        })
        .collect();
    users.extend((0..config.clients).map(|i| UserPlan {
        name: format!("{}rs-{i}", config.prefix),
        rooms: vec![room(i / config.room_size)],
        connections: 1,
    }));
    let recorder = Recorder::new(1);
    let population = populate(std::slice::from_ref(&endpoint), &users, &recorder, progress).await?;
    let audience = |r: usize| {
        let listeners = config.room_size.min(config.clients - r * config.room_size);
        u32::try_from(listeners + 1).unwrap_or(u32::MAX)
    };
    let publishers: Arc<Vec<Publisher>> = Arc::new(
        (0..rooms)
            .map(|r| Publisher {
                tx: population.conns[r].tx.clone(),
                room: Arc::clone(&population.conns[r].rooms[0]),
                audience: audience(r),
            })
            .collect(),
    );
    let schedule = Schedule {
        rate: config.rate,
        duration: config.duration,
        phase: 0,
        text_bytes: config.text_bytes,
    };
    progress.stage(
        &format!("{} reconnect storm of {}", endpoint.name, config.clients),
        config.clients as u64,
    );
    let meter = PhaseMeter::start(schedule, server);
    let publishing = tokio::spawn(publish(
        Arc::clone(&publishers),
        schedule,
        Arc::clone(&recorder),
        Arc::new(AtomicBool::new(false)),
    ));
    // A third of the way in: messages flow before, during and after.
    tokio::time::sleep(config.duration / 3).await;
    let (report, mut reports) = mpsc::unbounded_channel();
    for conn in &population.conns[rooms..] {
        let command = Command::Reconnect {
            report: report.clone(),
        };
        if conn.tx.try_send(command).is_err() {
            recorder.count("storm-command-not-delivered");
        }
    }
    drop(report);
    let recovery = ShardedHistogram::default();
    let mut recovered = 0;
    let mut replayed_all = 0;
    let mut slowest = Duration::ZERO;
    let wait = async {
        while let Some(Recovery {
            index: _,
            elapsed,
            replayed_all: all,
            error,
        }) = reports.recv().await
        {
            progress.advance(1);
            match error {
                Some(err) => recorder.count(format!("reconnect-failed:{err}")),
                None => {
                    recovered += 1;
                    replayed_all += usize::from(all);
                    slowest = slowest.max(elapsed);
                    recovery.record(elapsed);
                }
            }
        }
    };
    if tokio::time::timeout(config.drain.max(Duration::from_secs(30)), wait)
        .await
        .is_err()
    {
        recorder.count("recovery-wait-timed-out");
    }
    let stats = publishing.await.unwrap_or_default();
    let publishing = meter.finish(&recorder, stats, config.drain).await;
    let outcomes = population.close().await;
    // A publisher sees its own pushes, so its last seq is its room's head.
    let heads: HashMap<&str, u64> = outcomes[..rooms]
        .iter()
        .zip(&publishers[..])
        .map(|(o, p)| (&*p.room, o.positions.get(&*p.room).copied().unwrap_or(0)))
        .collect();
    let mut lost_messages = 0;
    for (i, outcome) in outcomes[rooms..].iter().enumerate() {
        let name = room(i / config.room_size);
        let head = heads.get(name.as_str()).copied().unwrap_or(0);
        lost_messages += head.saturating_sub(outcome.positions.get(&name).copied().unwrap_or(0));
    }
    Ok(ReconnectReport {
        target: endpoint.name.clone(),
        clients: config.clients,
        recovered,
        replayed_all,
        recovery: recovery.summary(),
        full_recovery_ms: slowest.as_secs_f64() * 1000.0,
        lost_messages,
        integrity: Integrity::of(&outcomes),
        publishing,
        events: recorder.events(),
    })
}
