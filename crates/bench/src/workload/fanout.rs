//! `fanout`: R rooms of M members, every member online, publishing at P
//! messages per second in total, spread round-robin over rooms and members.
//! Each publish costs the server one durable commit and M pushes (the
//! sender's own socket included, §8.4), so deliveries per second are P × M.
//!
//! With a sweep, rates rise until the server saturates (a loss, an error,
//! acks behind the offered rate, or a p99 ten times the target); the report
//! names the highest rate that was *sustained*: nothing lost or refused and
//! p99 under the target.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{
    Integrity, PhaseReport, Progress, Publisher, RateSweep, Schedule, UserPlan, measured_phase,
    populate,
};
use crate::BenchError;
use crate::client::Endpoint;
use crate::stats::Recorder;
use crate::target::ProcessProbe;

/// Parameters of a fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Rooms.
    pub rooms: usize,
    /// Members per room (each a user with one socket).
    pub members: usize,
    /// The rates to measure.
    pub rates: RateSweep,
    /// Unreported warm-up at the first rate.
    pub warmup: Duration,
    /// Prefix of user and room names, so runs on one server do not collide.
    pub prefix: String,
}

/// The highest sustained rate of a sweep.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sustained {
    /// Publishes per second.
    pub rate: f64,
    /// Deliveries per second achieved at it.
    pub deliveries_per_s: f64,
    /// Delivery p99 at it, ms.
    pub p99_ms: f64,
}

/// What a fan-out run measured against one server.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Server label.
    pub target: String,
    /// Rooms.
    pub rooms: usize,
    /// Members per room.
    pub members: usize,
    /// One entry per rate measured.
    pub steps: Vec<PhaseReport>,
    /// Highest rate sustained, if any.
    pub max_sustained: Option<Sustained>,
    /// Sockets lost, gaps and duplicates over the whole run.
    pub integrity: Integrity,
    /// Errors and anomalies by kind.
    pub events: BTreeMap<String, u64>,
}

/// Runs the fan-out workload against `endpoint`.
pub async fn run(
    endpoint: Arc<Endpoint>,
    config: &FanoutConfig,
    server: Option<ProcessProbe>,
    progress: &dyn Progress,
) -> Result<FanoutReport, BenchError> {
    if config.rooms == 0 || config.members == 0 || config.rates.rates.is_empty() {
        return Err(BenchError::Config(
            "fanout needs rooms, members and at least one rate".into(),
        ));
    }
    let room_name = |r: usize| format!("{}fo-{r}", config.prefix);
    let users: Vec<UserPlan> = (0..config.rooms)
        .flat_map(|r| {
            (0..config.members).map(move |m| UserPlan {
                name: format!("{}fo-{r}-{m}", config.prefix),
                rooms: vec![room_name(r)],
                connections: 1,
            })
        })
        .collect();
    // Phase 0 is the warm-up; phase i + 1 is rates[i].
    let recorder = Recorder::new(config.rates.rates.len() + 1);
    let population = populate(&endpoint, &users, &recorder, progress).await?;
    let audience = u32::try_from(config.members).unwrap_or(u32::MAX);
    // Consecutive publishes go to different rooms, then different members,
    // so every user sends at rate / (rooms × members).
    let mut publishers = Vec::with_capacity(users.len());
    for m in 0..config.members {
        for r in 0..config.rooms {
            let conn = &population.conns[r * config.members + m];
            publishers.push(Publisher {
                tx: conn.tx.clone(),
                room: Arc::clone(&conn.rooms[0]),
                audience,
            });
        }
    }
    let publishers = Arc::new(publishers);

    let sweep = &config.rates;
    let first_rate = sweep.rates.first().copied().unwrap_or_default();
    if !config.warmup.is_zero() {
        progress.stage("warm-up", 0);
        let schedule = Schedule {
            rate: first_rate,
            duration: config.warmup,
            phase: 0,
            text_bytes: sweep.text_bytes,
        };
        measured_phase(&publishers, schedule, &recorder, server, sweep.drain).await;
    }
    let label = format!("{} fanout", endpoint.name);
    let steps = sweep
        .run(&label, &publishers, 1, &recorder, server, progress)
        .await;
    let outcomes = population.close().await;
    let max_sustained = sweep.best(&steps).map(|s| Sustained {
        rate: s.rate,
        deliveries_per_s: s.deliveries_per_s,
        p99_ms: s.delivery.p99_ms,
    });
    Ok(FanoutReport {
        target: endpoint.name.clone(),
        rooms: config.rooms,
        members: config.members,
        steps,
        max_sustained,
        integrity: Integrity::of(&outcomes),
        events: recorder.events(),
    })
}
