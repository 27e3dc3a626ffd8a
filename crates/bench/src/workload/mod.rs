//! The workloads, and what they share: building a population of connected
//! users, publishing on an open-loop schedule, and summarising a phase.
//!
//! - [`idle`]: server memory per authenticated idle connection.
//! - [`fanout`]: rooms of many members, publish-to-deliver latency by rate.
//! - [`ingest`]: many senders in small rooms; durable acks per second
//!   against one fsync per message.
//! - [`reconnect`]: every client drops at once and resumes; time to
//!   recover, and proof that nothing was lost.
//! - [`login_flood`]: an honest login's latency while another address
//!   floods logins, against the same without the flood.

pub mod fanout;
pub mod idle;
pub mod ingest;
pub mod login_flood;
pub mod reconnect;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::BenchError;
use crate::client::{self, Client, Command, Endpoint, Outcome};
use crate::clock::{self, ScheduleStats, Tag};
use crate::stats::{Phase, Recorder, Summary};
use crate::target::{CpuMeter, ProcessProbe};

/// Commands queued per connection before the scheduler counts an overflow.
const COMMAND_QUEUE: usize = 1024;

/// How a workload reports progress; the binary draws a bar, tests stay quiet.
pub trait Progress: Send + Sync {
    /// A new stage of `total` steps begins.
    fn stage(&self, _name: &str, _total: u64) {}
    /// `n` steps of the stage are done.
    fn advance(&self, _n: u64) {}
    /// A line of results, printed as it happens.
    fn note(&self, _line: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {}

/// One user of a population: its rooms and how many sockets it opens.
#[derive(Debug, Clone)]
pub struct UserPlan {
    /// Username (§12.3).
    pub name: String,
    /// Rooms it is a member of, all active on each of its connections.
    pub rooms: Vec<String>,
    /// Sockets it opens.
    pub connections: usize,
}

/// A connected population: one event-loop task per socket.
#[derive(Debug)]
pub struct Population {
    /// The sockets, in plan order (user by user).
    pub conns: Vec<Conn>,
}

/// One socket of a population.
#[derive(Debug)]
pub struct Conn {
    /// Commands to its event loop.
    pub tx: mpsc::Sender<Command>,
    /// Index of its user in the plan.
    pub user: usize,
    /// Index of the node (in the `nodes` it was connected with) it is on.
    pub node: usize,
    /// Its rooms.
    pub rooms: Vec<Arc<str>>,
    task: JoinHandle<Outcome>,
}

/// Concurrent setup requests (logins, connects): enough to overlap round
/// trips, few enough not to trip the server's connection cap or backlog.
pub const SETUP_CONCURRENCY: usize = 32;

/// Logs every user in (if the endpoint has accounts) and returns tokens
/// in plan order. With several nodes of one cluster, user `i` registers
/// and logs in on node `i % nodes.len()`: its token is valid on every node.
pub async fn tokens(
    nodes: &[Arc<Endpoint>],
    users: &[UserPlan],
    progress: &dyn Progress,
) -> Result<Vec<Arc<str>>, BenchError> {
    let Some(first) = nodes.first() else {
        return Err(BenchError::Config("no server to connect to".into()));
    };
    if !first.login {
        return Ok(vec![Arc::from(""); users.len()]);
    }
    progress.stage("register + login", users.len() as u64);
    let results: Vec<Result<(usize, String), BenchError>> = stream::iter(users.iter().enumerate())
        .map(|(i, user)| async move {
            let endpoint = &nodes[i % nodes.len()];
            let token = crate::http::register_and_login(&endpoint.server, &user.name).await?;
            progress.advance(1);
            Ok((i, token))
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let mut tokens = vec![Arc::from(""); users.len()];
    for result in results {
        let (i, token) = result?;
        tokens[i] = Arc::from(token);
    }
    Ok(tokens)
}

/// Connects a whole population: every user's first socket joins its rooms
/// (creating them as needed, §7.2-§7.3); its further sockets are the same
/// user on other devices, which find the rooms in Welcome and Resume them
/// (§10.1), as a client does, without another membership write.
///
/// `nodes` are the servers to spread the sockets over, round-robin in plan
/// order (socket `i` on node `i % nodes.len()`): one server, or the nodes
/// of one cluster.
pub async fn populate(
    nodes: &[Arc<Endpoint>],
    users: &[UserPlan],
    recorder: &Arc<Recorder>,
    progress: &dyn Progress,
) -> Result<Population, BenchError> {
    let tokens = tokens(nodes, users, progress).await?;
    connect(nodes, users, &tokens, recorder, progress).await
}

/// Connects a population whose users are already logged in (`tokens` in
/// plan order, from [`tokens`]); see [`populate`].
pub async fn connect(
    nodes: &[Arc<Endpoint>],
    users: &[UserPlan],
    tokens: &[Arc<str>],
    recorder: &Arc<Recorder>,
    progress: &dyn Progress,
) -> Result<Population, BenchError> {
    // (user, k-th socket of the user, global index)
    let mut slots = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for k in 0..user.connections {
            slots.push((u, k, slots.len()));
        }
    }
    if nodes.is_empty() {
        return Err(BenchError::Config("no server to connect to".into()));
    }
    progress.stage("connect", slots.len() as u64);
    let mut conns: Vec<Option<Conn>> = (0..slots.len()).map(|_| None).collect();
    // First sockets before the others, so rooms exist before they are resumed.
    for first in [true, false] {
        let batch: Vec<_> = slots
            .iter()
            .filter(|(_, k, _)| (*k == 0) == first)
            .copied()
            .collect();
        let opened: Vec<Result<(usize, Conn), BenchError>> = stream::iter(batch)
            .map(|(u, k, index)| {
                let token = Arc::clone(&tokens[u]);
                let node = index % nodes.len();
                let endpoint = &nodes[node];
                async move {
                    let user = &users[u];
                    let mut client = Client::connect(endpoint, &token).await?;
                    if k == 0 {
                        for room in &user.rooms {
                            client.join(room).await?;
                        }
                    } else {
                        client.resume_rooms(&user.rooms).await?;
                    }
                    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
                    let task = tokio::spawn(client::run(
                        client,
                        Arc::clone(endpoint),
                        token,
                        index,
                        Arc::clone(recorder),
                        rx,
                    ));
                    progress.advance(1);
                    Ok((
                        index,
                        Conn {
                            tx,
                            user: u,
                            node,
                            rooms: user.rooms.iter().map(|r| Arc::from(r.as_str())).collect(),
                            task,
                        },
                    ))
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        for result in opened {
            let (index, conn) = result?;
            conns[index] = Some(conn);
        }
    }
    Ok(Population {
        conns: conns.into_iter().flatten().collect(),
    })
}

impl Population {
    /// Closes every socket politely and returns what each saw, in order.
    pub async fn close(self) -> Vec<Outcome> {
        for conn in &self.conns {
            // A loop that already ended has dropped its receiver; its
            // outcome is still in the task.
            conn.tx.send(Command::Close).await.ok();
        }
        let mut outcomes = Vec::with_capacity(self.conns.len());
        for conn in self.conns {
            outcomes.push(conn.task.await.unwrap_or_default());
        }
        outcomes
    }
}

/// Who publishes: a socket, a room it is active in, and how many sockets
/// receive that room's pushes.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Command channel of the socket.
    pub tx: mpsc::Sender<Command>,
    /// Room.
    pub room: Arc<str>,
    /// Sockets on which the room is active.
    pub audience: u32,
}

/// One open-loop publishing run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Publishes per second, all publishers together.
    pub rate: f64,
    /// How long.
    pub duration: Duration,
    /// Phase the messages are tagged with.
    pub phase: u32,
    /// Text size in bytes.
    pub text_bytes: usize,
}

/// Publishes on `schedule`, round-robin over `publishers`, from a dedicated
/// thread; returns once the last send is issued.
pub async fn publish(
    publishers: Arc<Vec<Publisher>>,
    schedule: Schedule,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> ScheduleStats {
    if publishers.is_empty() {
        return ScheduleStats::default();
    }
    let Some(phase) = recorder.phase(schedule.phase).cloned() else {
        return ScheduleStats::default();
    };
    // A little head start so the first intended times are not already late.
    let start = Instant::now() + Duration::from_millis(5);
    let run = move || {
        clock::open_loop(
            schedule.rate,
            schedule.duration,
            start,
            &stop,
            |i, intended_ns| {
                let publisher = &publishers[(i % publishers.len() as u64) as usize];
                let command = Command::Send {
                    room: Arc::clone(&publisher.room),
                    tag: Tag {
                        phase: schedule.phase,
                        intended_ns,
                    },
                    audience: publisher.audience,
                    text_bytes: schedule.text_bytes,
                };
                match publisher.tx.try_send(command) {
                    Ok(()) => {
                        phase.scheduled.fetch_add(1, Relaxed);
                    }
                    // The connection's loop is COMMAND_QUEUE sends behind (or
                    // gone): the generator, not the server, is saturated.
                    Err(_) => recorder.count("generator-queue-full"),
                }
            },
        )
    };
    tokio::task::spawn_blocking(run).await.unwrap_or_default()
}

/// The measurements of one phase (one rate), as printed and written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Offered publishes per second.
    pub rate: f64,
    /// Length of the sending window, seconds.
    pub duration_s: f64,
    /// Sends issued.
    pub sent: u64,
    /// SendAcks received.
    pub acked: u64,
    /// Sends refused or lost with their socket.
    pub send_errors: u64,
    /// Sends never answered (within the drain time).
    pub unanswered: u64,
    /// Message pushes received.
    pub delivered: u64,
    /// Pushes expected from the acked sends.
    pub expected: u64,
    /// Expected pushes not received (within the drain time).
    pub drops: u64,
    /// Pushes received twice on one socket.
    pub duplicates: u64,
    /// Pushes received per second of the sending window.
    pub deliveries_per_s: f64,
    /// Acks received per second of the sending window.
    pub acks_per_s: f64,
    /// Intended send time to push, every receiver.
    pub delivery: Summary,
    /// Intended send time to SendAck, at the sender.
    pub ack: Summary,
    /// Server CPU, in cores, during the phase (spawned servers only).
    pub server_cpu_cores: Option<f64>,
    /// Server CPU per delivered push, microseconds: the cost measure least
    /// disturbed by other load on a shared machine.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Time the server's threads were runnable but had no CPU, in cores
    /// (see [`CpuMeter::wait_cores`]); `None` without schedstats.
    pub server_cpu_wait_cores: Option<f64>,
    /// Generator CPU, in cores, during the phase.
    pub generator_cpu_cores: f64,
    /// Generator CPU per push and ack received, microseconds, over the
    /// sending window *and* the drain (a generator that falls behind does
    /// its work after the window). Sends are included; at fan-out sizes they
    /// are one event in a hundred. This is the generator's own cost: if
    /// 1 / this approaches the offered events per second on its core, the
    /// latency measured is the generator's, not the server's.
    pub generator_cpu_us_per_event: Option<f64>,
    /// Time the generator's threads were runnable but had no CPU, in cores.
    /// Well above zero, latencies include waiting for the CPU on this side.
    pub generator_cpu_wait_cores: Option<f64>,
    /// Worst lateness of the generator's own schedule, ms.
    pub schedule_max_lag_ms: f64,
    /// Whether everything expected arrived before the drain time ran out.
    pub settled: bool,
}

impl PhaseReport {
    /// Whether this rate was sustained: nothing lost or refused, the
    /// delivery p99 under `p99_target_ms`, and the pushes kept pace with the
    /// offered load.
    pub fn sustained(&self, p99_target_ms: f64) -> bool {
        self.settled
            && self.drops == 0
            && self.send_errors == 0
            && self.unanswered == 0
            && self.delivery.p99_ms < p99_target_ms
            && self.ack.p99_ms < p99_target_ms
    }

    /// Whether the target was past saturation at this rate: something lost
    /// or refused, acks falling behind the offered rate, or latency ten
    /// times past the target (queues growing rather than noise). A sweep
    /// stops here; a rate that is merely over the target (one scheduling
    /// hiccup on a shared machine can do that) does not end it.
    pub fn saturated(&self, p99_target_ms: f64) -> bool {
        !self.settled
            || self.drops > 0
            || self.send_errors > 0
            || self.unanswered > 0
            || self.acks_per_s < 0.9 * self.rate
            || self.delivery.p99_ms > 10.0 * p99_target_ms
            || self.ack.p99_ms > 10.0 * p99_target_ms
    }

    /// A one-line summary for the terminal.
    pub fn line(&self) -> String {
        format!(
            "rate {:>7.0}/s  deliveries {:>9.0}/s  acks {:>7.0}/s  deliver {}  ack p99 {:.2} ms  drops {}  errors {}  cpu server {} ({} us/delivery, waited {}) gen {:.2} ({} us/event, waited {})",
            self.rate,
            self.deliveries_per_s,
            self.acks_per_s,
            self.delivery,
            self.ack.p99_ms,
            self.drops,
            self.send_errors + self.unanswered,
            self.server_cpu_cores
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
            self.server_cpu_us_per_delivery
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.1}")),
            self.server_cpu_wait_cores
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
            self.generator_cpu_cores,
            self.generator_cpu_us_per_event
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
            self.generator_cpu_wait_cores
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
        )
    }
}

/// CPU meters running over one phase's sending window.
#[derive(Debug)]
pub struct PhaseMeter {
    schedule: Schedule,
    server: Option<CpuMeter>,
    generator: CpuMeter,
}

impl PhaseMeter {
    /// Starts metering a phase that publishes on `schedule`.
    pub fn start(schedule: Schedule, server: Option<ProcessProbe>) -> Self {
        Self {
            schedule,
            server: server.map(CpuMeter::start),
            generator: CpuMeter::start(ProcessProbe::current()),
        }
    }

    /// Call when the last send is issued: stops the CPU meters (the drain
    /// that follows is mostly idle), waits up to `drain` for every ack and
    /// push, and summarises.
    pub async fn finish(
        self,
        recorder: &Recorder,
        stats: ScheduleStats,
        drain: Duration,
    ) -> PhaseReport {
        let server_cpu_cores = self.server.as_ref().map(CpuMeter::cores);
        let server_cpu_wait_cores = self.server.as_ref().and_then(CpuMeter::wait_cores);
        let generator_cpu_cores = self.generator.cores();
        let generator_cpu_wait_cores = self.generator.wait_cores();
        let phase = recorder
            .phase(self.schedule.phase)
            .cloned()
            .unwrap_or_else(|| Arc::new(Phase::default()));
        let settled = phase.drain(drain).await;
        let generator_cpu_seconds = self.generator.seconds();
        let mut report = summarize(
            &phase,
            self.schedule,
            stats,
            settled,
            server_cpu_cores,
            generator_cpu_cores,
        );
        let events = report.delivered + report.acked;
        report.generator_cpu_us_per_event =
            (events > 0).then(|| generator_cpu_seconds * 1e6 / events as f64);
        report.server_cpu_wait_cores = server_cpu_wait_cores;
        report.generator_cpu_wait_cores = generator_cpu_wait_cores;
        report
    }
}

/// Runs one measured phase: publish, then wait (bounded by `drain`) for
/// every ack and push, then summarise.
pub async fn measured_phase(
    publishers: &Arc<Vec<Publisher>>,
    schedule: Schedule,
    recorder: &Arc<Recorder>,
    server: Option<ProcessProbe>,
    drain: Duration,
) -> PhaseReport {
    let meter = PhaseMeter::start(schedule, server);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = publish(Arc::clone(publishers), schedule, Arc::clone(recorder), stop).await;
    meter.finish(recorder, stats, drain).await
}

/// The rates a fan-out or ingest run measures, and how.
#[derive(Debug, Clone)]
pub struct RateSweep {
    /// Publish rates, in order.
    pub rates: Vec<f64>,
    /// Stop at the first saturated rate.
    pub sweep: bool,
    /// Sending window per rate.
    pub duration: Duration,
    /// Message text size.
    pub text_bytes: usize,
    /// A rate is sustained only with delivery and ack p99 under this.
    pub p99_target_ms: f64,
    /// How long to wait for stragglers after each rate.
    pub drain: Duration,
}

impl RateSweep {
    /// Measures each rate in turn as phases `first_phase`, `first_phase + 1`,
    /// …; with `sweep`, stops after the first saturated rate.
    pub async fn run(
        &self,
        label: &str,
        publishers: &Arc<Vec<Publisher>>,
        first_phase: u32,
        recorder: &Arc<Recorder>,
        server: Option<ProcessProbe>,
        progress: &dyn Progress,
    ) -> Vec<PhaseReport> {
        let mut steps = Vec::new();
        for (phase, &rate) in (first_phase..).zip(&self.rates) {
            progress.stage(&format!("{label} {rate}/s"), 0);
            let schedule = Schedule {
                rate,
                duration: self.duration,
                phase,
                text_bytes: self.text_bytes,
            };
            let step =
                measured_phase(publishers, schedule, recorder, server.clone(), self.drain).await;
            progress.note(&format!("{label:<16} {}", step.line()));
            let saturated = step.saturated(self.p99_target_ms);
            steps.push(step);
            if self.sweep && saturated {
                break;
            }
        }
        steps
    }

    /// The sustained step with the highest rate.
    pub fn best<'a>(&self, steps: &'a [PhaseReport]) -> Option<&'a PhaseReport> {
        steps
            .iter()
            .filter(|s| s.sustained(self.p99_target_ms))
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
}

pub(crate) fn summarize(
    phase: &Phase,
    schedule: Schedule,
    stats: ScheduleStats,
    settled: bool,
    server_cpu_cores: Option<f64>,
    generator_cpu_cores: f64,
) -> PhaseReport {
    let secs = schedule.duration.as_secs_f64().max(1e-9);
    let delivered = phase.delivered.load(Relaxed);
    let acked = phase.acked.load(Relaxed);
    PhaseReport {
        rate: schedule.rate,
        duration_s: schedule.duration.as_secs_f64(),
        sent: phase.scheduled.load(Relaxed),
        acked,
        send_errors: phase.send_errors.load(Relaxed),
        unanswered: phase.unanswered(),
        delivered,
        expected: phase.expected.load(Relaxed),
        drops: phase.missing(),
        duplicates: phase.duplicates.load(Relaxed),
        deliveries_per_s: delivered as f64 / secs,
        acks_per_s: acked as f64 / secs,
        delivery: phase.delivery.summary(),
        ack: phase.ack.summary(),
        server_cpu_cores,
        server_cpu_us_per_delivery: server_cpu_cores
            .filter(|_| delivered > 0)
            .map(|cores| cores * secs * 1e6 / delivered as f64),
        generator_cpu_cores,
        server_cpu_wait_cores: None,
        generator_cpu_us_per_event: None,
        generator_cpu_wait_cores: None,
        schedule_max_lag_ms: stats.max_lag.as_secs_f64() * 1000.0,
        settled,
    }
}

/// Checks the outcomes of a closed population: every socket that was not
/// meant to be lost stayed up and saw no gap and no duplicate.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Integrity {
    /// Sockets the server ended.
    pub lost_sockets: u64,
    /// Seqs skipped on some socket.
    pub gaps: u64,
    /// Seqs received twice on some socket.
    pub duplicates: u64,
}

impl Integrity {
    /// Totals over outcomes.
    pub fn of(outcomes: &[Outcome]) -> Self {
        outcomes.iter().fold(Self::default(), |acc, o| Self {
            lost_sockets: acc.lost_sockets + u64::from(o.lost),
            gaps: acc.gaps + o.gaps,
            duplicates: acc.duplicates + o.duplicates,
        })
    }

    /// Whether nothing went wrong.
    pub fn clean(&self) -> bool {
        *self == Self::default()
    }
}

/// Rates to try in a sweep: `start`, then each ×`factor`, `steps` in all.
pub fn geometric_rates(start: f64, factor: f64, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|i| (start * factor.powi(i as i32)).round())
        .collect()
}
