//! `fanout`: R rooms of M members, every member online, publishing at P
//! messages per second in total, spread round-robin over rooms and members.
//! Each publish costs the server one durable commit and M pushes (the
//! sender's own socket included, §8.4), so deliveries per second are P × M.
//!
//! With a sweep, rates rise until the server saturates (a loss, an error,
//! acks behind the offered rate, or a p99 ten times the target); the report
//! names the highest rate that was *sustained*: nothing lost or refused and
//! p99 under the target.
//!
//! Against a cluster, members are spread round-robin over the nodes (so
//! each room has readers on every node) and only the members on the first
//! node publish: every message is committed through node 0 and reaches the
//! other nodes' readers over the cluster's fan-out.

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
    /// Server nodes the members were spread over (1: a single server).
    pub nodes: usize,
    /// Sockets that publish (on node 0 when there are several nodes).
    pub publishers: usize,
    /// One entry per rate measured.
    pub steps: Vec<PhaseReport>,
    /// Highest rate sustained, if any.
    pub max_sustained: Option<Sustained>,
    /// Sockets lost, gaps and duplicates over the whole run.
    pub integrity: Integrity,
    /// Sockets whose last seq at the end was below the highest any member
    /// of their room saw, by node: missed messages that no later push
    /// revealed as a gap (a socket that got nothing at all, say).
    pub behind_by_node: Vec<u64>,
    /// Errors and anomalies by kind.
    pub events: BTreeMap<String, u64>,
}

/// Runs the fan-out workload against `nodes`: one server, or the nodes of
/// one cluster.
pub async fn run(
    nodes: &[Arc<Endpoint>],
    config: &FanoutConfig,
    server: Option<ProcessProbe>,
    progress: &dyn Progress,
) -> Result<FanoutReport, BenchError> {
    let Some(endpoint) = nodes.first() else {
        return Err(BenchError::Config("fanout needs a server".into()));
    };
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
    let population = populate(nodes, &users, &recorder, progress).await?;
    let audience = u32::try_from(config.members).unwrap_or(u32::MAX);
    // Consecutive publishes go to different rooms, then different members,
    // so every user sends at rate / (rooms × members) (× nodes in a
    // cluster, where only node 0's members publish).
    let mut publishers = Vec::with_capacity(users.len());
    for m in 0..config.members {
        for r in 0..config.rooms {
            let conn = &population.conns[r * config.members + m];
            if conn.node != 0 {
                continue;
            }
            publishers.push(Publisher {
                tx: conn.tx.clone(),
                room: Arc::clone(&conn.rooms[0]),
                audience,
            });
        }
    }
    if nodes.len() > 1 && config.members < 2 {
        return Err(BenchError::Config(
            "fanout against a cluster needs at least 2 members per room, so that rooms have readers on other nodes".into(),
        ));
    }
    let publisher_count = publishers.len();
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
        measured_phase(
            &publishers,
            schedule,
            &recorder,
            server.clone(),
            sweep.drain,
        )
        .await;
    }
    let label = format!("{} fanout", endpoint.name);
    let steps = sweep
        .run(&label, &publishers, 1, &recorder, server, progress)
        .await;
    let nodes_of: Vec<usize> = population.conns.iter().map(|c| c.node).collect();
    let outcomes = population.close().await;
    let mut heads: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for outcome in &outcomes {
        for (room, &seq) in &outcome.positions {
            let head = heads.entry(room.as_str()).or_default();
            *head = (*head).max(seq);
        }
    }
    let mut behind_by_node = vec![0; nodes.len()];
    for (r, room) in (0..config.rooms).map(|r| (r, room_name(r))) {
        let head = heads.get(room.as_str()).copied().unwrap_or(0);
        for m in 0..config.members {
            let i = r * config.members + m;
            let seen = outcomes
                .get(i)
                .and_then(|o| o.positions.get(&room))
                .copied()
                .unwrap_or(0);
            if seen < head {
                behind_by_node[nodes_of[i]] += 1;
            }
        }
    }
    let max_sustained = sweep.best(&steps).map(|s| Sustained {
        rate: s.rate,
        deliveries_per_s: s.deliveries_per_s,
        p99_ms: s.delivery.p99_ms,
    });
    Ok(FanoutReport {
        target: endpoint.name.clone(),
        rooms: config.rooms,
        members: config.members,
        nodes: nodes.len(),
        publishers: publisher_count,
        steps,
        max_sustained,
        integrity: Integrity::of(&outcomes),
        behind_by_node,
        events: recorder.events(),
    })
}
