//! `confab-bench`: runs one workload against the reference server and,
//! with `--vs`, against the baselines in the same invocation, then prints
//! the figures side by side and optionally writes them as JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use confab_bench::client::Endpoint;
use confab_bench::cluster::{ClusterPlan, DEFAULT_ADMIN_URL, DEFAULT_NATS_URL, Deployment};
use confab_bench::pgbench::{self, PgbenchConfig, PgbenchReport};
use confab_bench::target::{ChildServer, Kind, Launch, ProcessProbe};
use confab_bench::workload::fanout::{self, FanoutConfig, FanoutReport};
use confab_bench::workload::idle::{self, IdleConfig, IdleReport};
use confab_bench::workload::ingest::{self, IngestConfig, IngestReport};
use confab_bench::workload::login_flood::{self, LoginFloodConfig};
use confab_bench::workload::reconnect::{self, ReconnectConfig};
use confab_bench::workload::{Progress, RateSweep, geometric_rates};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "confab-bench",
    version,
    about = "Open-loop load generator for Confab: idle memory, fan-out latency, durable ingest, reconnect storms and login floods, with baselines.",
    long_about = None
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Args)]
struct Common {
    /// Measure a Confab server that is already running (http://host:port) instead of spawning one.
    /// Memory and CPU of the server are then not reported.
    #[arg(long, global = true)]
    server: Option<String>,

    /// The confab-server binary to spawn [default: confab-server next to this binary].
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,

    /// Extra flag for the spawned confab-server (repeat for several), e.g. --server-arg=--send-rate=50.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,

    /// Pin spawned servers to these CPUs (taskset -c LIST), e.g. 0. Pin the generator
    /// itself by starting it under taskset, e.g. `taskset -c 1 confab-bench ...`.
    #[arg(long, global = true)]
    server_cpus: Option<String>,

    /// Also run the workload against these baselines: ceiling, node-ws (comma-separated).
    #[arg(long, global = true, value_delimiter = ',')]
    vs: Vec<String>,

    /// Run only the --vs baselines, not the reference server: for measuring a
    /// baseline, or the generator's own limits against the ceiling.
    #[arg(long, global = true, requires = "vs")]
    no_confab: bool,

    /// Worker threads of the generator's runtime [default: the CPUs it may
    /// run on]. 1 (e.g. under `taskset -c 1`) runs tokio's single-threaded
    /// runtime, which costs the least per push received on one core.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    generator_threads: Option<u16>,

    /// Directory of the Node baseline (server.js, node_modules) [default: crates/bench/peers].
    #[arg(long, global = true)]
    peers_dir: Option<PathBuf>,

    /// Where spawned servers keep data and logs [default: $TMPDIR/confab-bench].
    #[arg(long, global = true)]
    work_dir: Option<PathBuf>,

    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,

    /// No progress bar (results are still printed).
    #[arg(long, global = true)]
    no_progress: bool,

    /// Run the spawned reference server as this many nodes of one cluster
    /// (fanout and ingest): a fresh PostgreSQL database, created through
    /// --admin-database-url and dropped afterwards, and one NATS
    /// (--nats-url) under a cluster name of the run's own. Sockets are
    /// spread round-robin over the nodes.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    cluster_nodes: u16,

    /// Store in a fresh PostgreSQL database even with one node (implied by
    /// --cluster-nodes 2 or more): the single-node figure to compare with.
    #[arg(long, global = true)]
    postgres: bool,

    /// PostgreSQL URL that may create and drop databases; each run makes its own.
    #[arg(long, global = true, env = "CONFAB_TEST_DATABASE_URL", default_value = DEFAULT_ADMIN_URL)]
    admin_database_url: String,

    /// NATS with JetStream for --cluster-nodes.
    #[arg(long, global = true, env = "CONFAB_TEST_NATS_URL", default_value = DEFAULT_NATS_URL)]
    nats_url: String,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Server memory per authenticated idle socket: RSS slope between socket counts.
    Idle {
        /// Socket counts to measure at (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1000,15000")]
        sizes: Vec<usize>,
        /// Sockets per user (a user's devices); keeps the number of argon2 logins small.
        #[arg(long, default_value_t = 50)]
        sockets_per_user: usize,
        /// Users per room.
        #[arg(long, default_value_t = 10)]
        users_per_room: usize,
    },
    /// R rooms of M members; open-loop publishing; delivery latency per rate.
    Fanout {
        /// Rooms.
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        /// Members per room, each a user with one socket.
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Publishes per second, all rooms together (without --sweep).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds of unreported warm-up at the first rate.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// Many senders in small rooms: durable acks/s and ack latency, against one fsync per message.
    Ingest {
        /// Sending users, one socket each.
        #[arg(long, default_value_t = 200)]
        senders: usize,
        /// Members per room.
        #[arg(long, default_value_t = 2)]
        room_size: usize,
        /// Publishes per second (without --sweep).
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[command(flatten)]
        sweep: SweepArgs,
        /// Most write+fdatasync rounds of the one-fsync-per-message baseline.
        #[arg(long, default_value_t = 2000)]
        fsync_rounds: u32,
        /// Most seconds of the fsync baseline.
        #[arg(long, default_value_t = 5.0)]
        fsync_seconds: f64,
        /// Directory for the fsync baseline when --server is used [default: the work dir].
        #[arg(long)]
        fsync_dir: Option<PathBuf>,
        #[command(flatten)]
        pgbench: PgbenchArgs,
    },
    /// K clients drop at once and resume: recovery time, and proof nothing was lost.
    ReconnectStorm {
        /// Clients that drop and resume.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Clients per room (each room also has one publisher).
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Publishes per second during the whole run.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Seconds of publishing; the storm hits at one third.
        #[arg(long, default_value_t = 9.0)]
        duration: f64,
        /// Message text bytes.
        #[arg(long, default_value_t = 64)]
        text_bytes: usize,
        /// Seconds to wait for recoveries and stragglers.
        #[arg(long, default_value_t = 30.0)]
        drain: f64,
    },
    /// An honest login's latency from 127.0.0.3 while 127.0.0.2 floods logins, against the same
    /// without the flood (p50/p99 and their ratio). Runs the server with its default auth limits.
    LoginFlood {
        /// Concurrent flooding login loops (rotating unknown usernames, wrong passwords).
        #[arg(long, default_value_t = 32)]
        flooders: usize,
        /// Honest logins measured with and without the flood, one after another.
        #[arg(long, default_value_t = 50)]
        honest_logins: usize,
    },
    /// Serve the stack-ceiling baseline (used by --vs ceiling).
    #[command(hide = true)]
    ServeCeiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

/// The pgbench baseline of ingest on PostgreSQL (--postgres, --cluster-nodes):
/// the same gapless-counter-plus-insert transaction, measured first.
#[derive(Debug, Args)]
struct PgbenchArgs {
    /// Skip the pgbench baseline.
    #[arg(long)]
    no_pgbench: bool,
    /// pgbench clients (-c).
    #[arg(long, default_value_t = 4)]
    pgbench_clients: u32,
    /// pgbench threads (-j).
    #[arg(long, default_value_t = 2)]
    pgbench_threads: u32,
    /// Seconds of pgbench (-T).
    #[arg(long, default_value_t = 10)]
    pgbench_seconds: u64,
    /// Rows per pgbench transaction.
    #[arg(long, default_value_t = 100)]
    pgbench_batch: u32,
}

/// How a fan-out or ingest run picks and judges its rates.
#[derive(Debug, Args)]
struct SweepArgs {
    /// Sweep rates until saturation (loss, error, acks behind, or p99 over 10x the target);
    /// reports the highest rate sustained (no loss, p99 under the target).
    #[arg(long)]
    sweep: bool,
    /// Rates of the sweep (comma-separated) [default: the workload's start × 1.5^i, 10 steps].
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Seconds of sending per rate.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Message text bytes.
    #[arg(long, default_value_t = 64)]
    text_bytes: usize,
    /// A rate counts as sustained only with delivery and ack p99 under this many ms.
    #[arg(long, default_value_t = 50.0)]
    p99_target_ms: f64,
    /// Seconds to wait for stragglers after each rate.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

impl SweepArgs {
    /// The rates to run: `rate` alone, or the sweep's (from `sweep_start` by default).
    fn into_sweep(self, rate: f64, sweep_start: f64) -> RateSweep {
        let rates = match (self.sweep, self.rates.is_empty()) {
            (true, true) => geometric_rates(sweep_start, 1.5, 10),
            (true, false) => self.rates,
            (false, _) => vec![rate],
        };
        RateSweep {
            rates,
            sweep: self.sweep,
            duration: secs(self.duration),
            text_bytes: self.text_bytes,
            p99_target_ms: self.p99_target_ms,
            drain: secs(self.drain),
        }
    }
}

/// Draws an indicatif bar; notes print above it.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn stage(&self, name: &str, total: u64) {
        let style = if total > 0 {
            ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} {elapsed}")
        } else {
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
        };
        if let Ok(style) = style {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(name.to_owned());
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn note(&self, line: &str) {
        self.0.println(line);
    }
}

/// Prints notes, nothing else.
struct Lines;

impl Progress for Lines {
    fn note(&self, line: &str) {
        println!("{line}");
    }
}

/// Where and on what the figures were taken.
#[derive(Debug, Serialize)]
struct Machine {
    cpus_online: usize,
    cpus_available_to_generator: usize,
    /// tokio runtime of the generator: current_thread or multi_thread.
    generator_runtime: String,
    /// Its worker threads (1 for current_thread).
    generator_worker_threads: usize,
    memory_total_kib: Option<u64>,
    kernel: String,
    load_average_before: String,
    load_average_after: String,
    server_cpus: Option<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn machine(server_cpus: Option<String>, load_before: String) -> Machine {
    let meminfo = read("/proc/meminfo");
    let runtime = tokio::runtime::Handle::current();
    Machine {
        cpus_online: read("/proc/cpuinfo")
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count(),
        cpus_available_to_generator: std::thread::available_parallelism().map_or(1, |n| n.get()),
        generator_runtime: match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
            _ => "multi_thread",
        }
        .to_owned(),
        generator_worker_threads: runtime.metrics().num_workers(),
        memory_total_kib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()),
        kernel: read("/proc/sys/kernel/osrelease"),
        load_average_before: load_before,
        load_average_after: read("/proc/loadavg"),
        server_cpus,
    }
}

#[derive(Debug, Serialize)]
struct Output<T: Serialize> {
    workload: &'static str,
    command: Vec<String>,
    machine: Machine,
    results: Vec<T>,
    ratios: Vec<Ratio>,
}

/// Confab's figure divided by a baseline's, from the same run.
#[derive(Debug, Clone, Serialize)]
struct Ratio {
    metric: String,
    baseline: String,
    confab: f64,
    other: f64,
    confab_over_baseline: f64,
}

fn ratio(metric: &str, baseline: &str, confab: f64, other: f64) -> Ratio {
    Ratio {
        metric: metric.to_owned(),
        baseline: baseline.to_owned(),
        confab,
        other,
        confab_over_baseline: if other == 0.0 {
            f64::NAN
        } else {
            confab / other
        },
    }
}

struct Runner {
    common: Common,
    launch: Launch,
    progress: Arc<dyn Progress>,
}

/// A server under test as the workloads see it: the nodes to connect to,
/// what to meter, and what to stop afterwards.
struct Target {
    nodes: Vec<Arc<Endpoint>>,
    probe: Option<ProcessProbe>,
    /// Its data directory (a spawned single server), for the fsync baseline.
    data_dir: Option<PathBuf>,
    running: Running,
}

enum Running {
    /// `--server`: nothing of ours to stop.
    External,
    Child(ChildServer),
    Deployment(Deployment),
}

impl Target {
    async fn stop(self, progress: &dyn Progress) {
        match self.running {
            Running::External => {}
            Running::Child(child) => child.stop().await,
            Running::Deployment(deployment) => {
                for problem in deployment.stop().await {
                    progress.note(&format!("warning: {problem}"));
                }
            }
        }
    }
}

impl Runner {
    fn kinds(&self) -> anyhow::Result<Vec<Kind>> {
        let mut kinds = Vec::new();
        if !self.common.no_confab {
            kinds.push(Kind::Confab);
        }
        for label in &self.common.vs {
            match Kind::parse(label.trim()) {
                Some(Kind::Confab) | None => {
                    bail!("unknown baseline {label:?}; use ceiling or node-ws")
                }
                Some(kind) => kinds.push(kind),
            }
        }
        Ok(kinds)
    }

    /// Starts a server of `kind` (unless --server names a running Confab).
    async fn start(
        &self,
        kind: Kind,
        defaults: &[&str],
    ) -> anyhow::Result<(Option<ChildServer>, confab_bench::client::Endpoint)> {
        if kind == Kind::Confab
            && let Some(url) = &self.common.server
        {
            return Ok((None, kind.endpoint(url)?));
        }
        let mut args: Vec<String> = defaults.iter().map(|s| (*s).to_owned()).collect();
        args.extend(self.common.server_args.iter().cloned());
        let child = ChildServer::start(kind, &self.launch, &args).await?;
        let endpoint = child.endpoint()?;
        self.progress.note(&format!(
            "started {} (pid {}) at {}{}",
            kind.label(),
            child.pid,
            child.http_url,
            self.launch
                .cpus
                .as_deref()
                .map_or_else(String::new, |c| format!(", pinned to CPUs {c}"))
        ));
        Ok((Some(child), endpoint))
    }

    /// The PostgreSQL deployment asked for, if any.
    fn plan(&self) -> Option<ClusterPlan> {
        let nodes = usize::from(self.common.cluster_nodes);
        (nodes > 1 || self.common.postgres).then(|| ClusterPlan {
            nodes,
            admin_url: self.common.admin_database_url.clone(),
            nats_url: self.common.nats_url.clone(),
            sync_interval_ms: None,
        })
    }

    /// Starts `kind` as [`Runner::start`] does, or, for the reference
    /// server with --postgres or --cluster-nodes, as a deployment on a
    /// scratch PostgreSQL database.
    async fn start_target(&self, kind: Kind, defaults: &[&str]) -> anyhow::Result<Target> {
        let plan = self.plan().filter(|_| kind == Kind::Confab);
        let Some(plan) = plan else {
            let (child, endpoint) = self.start(kind, defaults).await?;
            return Ok(Target {
                nodes: vec![Arc::new(endpoint)],
                probe: child.as_ref().map(ChildServer::probe),
                data_dir: child.as_ref().and_then(|c| c.data_dir.clone()),
                running: child.map_or(Running::External, Running::Child),
            });
        };
        if self.common.server.is_some() {
            bail!(
                "--server names a running server; --postgres and --cluster-nodes start their own"
            );
        }
        let mut args: Vec<String> = defaults.iter().map(|s| (*s).to_owned()).collect();
        args.extend(self.common.server_args.iter().cloned());
        let deployment = Deployment::start(&plan, &self.launch, &args)
            .await
            .with_context(|| {
                format!(
                    "starting {} node(s) on PostgreSQL {}{}",
                    plan.nodes,
                    plan.admin_url,
                    if plan.nodes > 1 {
                        format!(" and NATS {}", plan.nats_url)
                    } else {
                        String::new()
                    }
                )
            })?;
        for (i, node) in deployment.nodes.iter().enumerate() {
            self.progress.note(&format!(
                "started confab node {i} (pid {}) at {}{}",
                node.pid,
                node.http_url,
                self.launch
                    .cpus
                    .as_deref()
                    .map_or_else(String::new, |c| format!(", pinned to CPUs {c}"))
            ));
        }
        self.progress.note(&format!(
            "  on database {}{}",
            deployment.database,
            deployment
                .cluster_name
                .as_deref()
                .map_or_else(String::new, |c| format!(
                    ", cluster {c} on {}",
                    plan.nats_url
                ))
        ));
        Ok(Target {
            nodes: deployment.endpoints()?,
            probe: Some(deployment.probe()),
            data_dir: None,
            running: Running::Deployment(deployment),
        })
    }

    /// A name prefix that cannot collide with earlier runs on a kept server.
    fn prefix(&self) -> String {
        if self.common.server.is_some() {
            format!("b{}-", std::process::id())
        } else {
            String::new()
        }
    }
}

/// Flags that lift the reference server's per-address auth limits (§15.3)
/// for workloads whose setup registers and logs in hundreds of users from
/// one address: those measure sockets and messages, not the limits.
const SETUP_AUTH_LIMITS: [&str; 6] = [
    "--register-address-burst",
    "1000000",
    "--hash-queue-per-address",
    "1024",
    "--hash-running-per-address",
    "4",
];

/// `defaults` plus [`SETUP_AUTH_LIMITS`] for the reference server.
fn with_setup_limits<'a>(kind: Kind, defaults: &[&'a str]) -> Vec<&'a str> {
    let mut args = defaults.to_vec();
    if kind == Kind::Confab {
        args.extend(SETUP_AUTH_LIMITS);
    }
    args
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn write_json<T: Serialize>(path: &Option<PathBuf>, output: &Output<T>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(output)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn fanout_ratios(reports: &[FanoutReport]) -> Vec<Ratio> {
    let Some(confab) = reports.iter().find(|r| r.target == "confab") else {
        return Vec::new();
    };
    let mut ratios = Vec::new();
    for other in reports.iter().filter(|r| r.target != "confab") {
        let best = |r: &FanoutReport| r.max_sustained.map_or(0.0, |s| s.deliveries_per_s);
        ratios.push(ratio(
            "max sustained deliveries/s",
            &other.target,
            best(confab),
            best(other),
        ));
        // At each rate both measured: p99 side by side.
        for step in &confab.steps {
            if let Some(o) = other.steps.iter().find(|s| s.rate == step.rate) {
                ratios.push(ratio(
                    &format!("delivery p99 ms at {}/s", step.rate),
                    &other.target,
                    step.delivery.p99_ms,
                    o.delivery.p99_ms,
                ));
            }
        }
    }
    ratios
}

fn idle_ratios(reports: &[IdleReport]) -> Vec<Ratio> {
    let Some(confab) = reports.iter().find(|r| r.target == "confab") else {
        return Vec::new();
    };
    reports
        .iter()
        .filter(|r| r.target != "confab")
        .filter_map(|other| {
            Some(ratio(
                "server bytes per idle socket",
                &other.target,
                confab.server_bytes_per_socket?,
                other.server_bytes_per_socket?,
            ))
        })
        .collect()
}

fn print_ratios(ratios: &[Ratio]) {
    for r in ratios {
        println!(
            "ratio  {:<36} confab {:>12.2}  {:<8} {:>12.2}  confab/{} = {:.2}",
            r.metric, r.confab, r.baseline, r.other, r.baseline, r.confab_over_baseline
        );
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { common, workload } = cli;
    if let Workload::ServeCeiling { listen } = workload {
        let (addr, serve) = confab_bench::ceiling::bind(listen)
            .await
            .context("binding the ceiling server")?;
        println!("confab-bench ceiling listening on http://{addr}");
        serve.await;
        return Ok(());
    }
    let load_before = read("/proc/loadavg");
    let bench_bin = std::env::current_exe().context("locating confab-bench")?;
    let launch = Launch {
        confab_bin: common
            .server_bin
            .clone()
            .unwrap_or_else(|| bench_bin.with_file_name("confab-server")),
        bench_bin,
        peers_dir: common
            .peers_dir
            .clone()
            .unwrap_or_else(confab_bench::target::default_peers_dir),
        work_dir: common
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("confab-bench")),
        cpus: common.server_cpus.clone(),
    };
    let progress: Arc<dyn Progress> = if common.no_progress {
        Arc::new(Lines)
    } else {
        Arc::new(Bar(ProgressBar::new(0)))
    };
    let runner = Runner {
        common,
        launch,
        progress,
    };
    let command: Vec<String> = std::env::args().collect();
    let kinds = runner.kinds()?;
    let progress = Arc::clone(&runner.progress);
    if runner.plan().is_some()
        && !matches!(workload, Workload::Fanout { .. } | Workload::Ingest { .. })
    {
        bail!("--postgres and --cluster-nodes apply to fanout and ingest only");
    }
    match workload {
        Workload::ServeCeiling { .. } => Ok(()),
        Workload::LoginFlood {
            flooders,
            honest_logins,
        } => {
            if runner.common.no_confab {
                bail!(
                    "login-flood runs against the reference server only; --no-confab leaves nothing"
                );
            }
            if kinds.len() > 1 {
                progress.note("login-flood: the baselines have no logins, so --vs is ignored");
            }
            let config = LoginFloodConfig {
                flooders,
                honest_logins,
                prefix: runner.prefix(),
            };
            // Default limits: the run measures them.
            let (child, endpoint) = runner.start(Kind::Confab, &[]).await?;
            let report = login_flood::run(Arc::new(endpoint), &config, &*progress).await;
            stop(child).await;
            let report = report?;
            println!(
                "confab   honest login, quiet:   {}\nconfab   honest login, flooded: {}\nconfab   flooded/quiet: p50 {:.2}x  p99 {:.2}x   flood answers by status {:?}   honest failures {:?}",
                report.baseline,
                report.flooded,
                report.p50_ratio,
                report.p99_ratio,
                report.flood_statuses,
                report.honest_failures
            );
            let ratios = vec![
                ratio(
                    "honest login p50 ms, flooded vs quiet",
                    "quiet",
                    report.flooded.p50_ms,
                    report.baseline.p50_ms,
                ),
                ratio(
                    "honest login p99 ms, flooded vs quiet",
                    "quiet",
                    report.flooded.p99_ms,
                    report.baseline.p99_ms,
                ),
            ];
            print_ratios(&ratios);
            let machine = machine(runner.launch.cpus.clone(), load_before);
            write_json(
                &runner.common.json_out,
                &Output {
                    workload: "login-flood",
                    command,
                    machine,
                    results: vec![report],
                    ratios,
                },
            )
        }
        Workload::Idle {
            sizes,
            sockets_per_user,
            users_per_room,
        } => {
            let config = IdleConfig {
                sizes,
                sockets_per_user,
                users_per_room,
                prefix: runner.prefix(),
            };
            let mut results = Vec::new();
            // A user's devices share the user's socket cap (default 32).
            let per_user = config.sockets_per_user.to_string();
            for kind in kinds {
                // The default cap (10,000) is below the largest default size.
                let mut args = with_setup_limits(kind, &["--max-connections", "20000"]);
                if kind == Kind::Confab {
                    args.extend(["--max-sockets-per-user", per_user.as_str()]);
                }
                let (child, endpoint) = runner.start(kind, &args).await?;
                let probe = child.as_ref().map(ChildServer::probe);
                let report = idle::run(Arc::new(endpoint), &config, probe, &*progress).await;
                stop(child).await;
                let report = report?;
                println!(
                    "{:<8} server bytes per idle socket: {}   generator: {}   lost sockets {}  events {:?}",
                    report.target,
                    report
                        .server_bytes_per_socket
                        .map_or_else(|| "n/a".into(), |b| format!("{b:.0}")),
                    report
                        .generator_bytes_per_socket
                        .map_or_else(|| "n/a".into(), |b| format!("{b:.0}")),
                    report.integrity.lost_sockets,
                    report.events
                );
                if let Some((reader, writer)) = report.task_bytes {
                    println!(
                        "{:<8} per socket, compiled: reader task {reader:.0} bytes, writer task {writer:.0} bytes",
                        report.target
                    );
                }
                if let (Some(tasks), Some(last)) = (report.tasks_alive, report.points.last()) {
                    println!(
                        "{:<8} {tasks:.0} tasks alive at {} sockets",
                        report.target, last.sockets
                    );
                }
                results.push(report);
            }
            let ratios = idle_ratios(&results);
            print_ratios(&ratios);
            let machine = machine(runner.launch.cpus.clone(), load_before);
            write_json(
                &runner.common.json_out,
                &Output {
                    workload: "idle",
                    command,
                    machine,
                    results,
                    ratios,
                },
            )
        }
        Workload::Fanout {
            rooms,
            members,
            rate,
            warmup,
            sweep,
        } => {
            let config = FanoutConfig {
                rooms,
                members,
                rates: sweep.into_sweep(rate, 250.0),
                warmup: secs(warmup),
                prefix: runner.prefix(),
            };
            let mut results = Vec::new();
            for kind in kinds {
                // Rate limits are per-user policy (§12.5); lifted so a sweep
                // finds the server's capacity, not the policy's.
                let target = runner
                    .start_target(
                        kind,
                        &with_setup_limits(
                            kind,
                            &["--send-rate", "1000000", "--send-burst", "1000000"],
                        ),
                    )
                    .await?;
                let report =
                    fanout::run(&target.nodes, &config, target.probe.clone(), &*progress).await;
                target.stop(&*progress).await;
                let report = report?;
                println!(
                    "{:<8} {}max sustained: {}   integrity {:?}   sockets behind their room's head, by node {:?}   events {:?}",
                    report.target,
                    nodes_label(report.nodes),
                    report.max_sustained.map_or_else(
                        || "none".into(),
                        |s| format!(
                            "{:.0} publishes/s = {:.0} deliveries/s (p99 {:.2} ms)",
                            s.rate, s.deliveries_per_s, s.p99_ms
                        )
                    ),
                    report.integrity,
                    report.behind_by_node,
                    report.events
                );
                results.push(report);
            }
            let ratios = fanout_ratios(&results);
            print_ratios(&ratios);
            let machine = machine(runner.launch.cpus.clone(), load_before);
            write_json(
                &runner.common.json_out,
                &Output {
                    workload: "fanout",
                    command,
                    machine,
                    results,
                    ratios,
                },
            )
        }
        Workload::Ingest {
            senders,
            room_size,
            rate,
            sweep,
            fsync_rounds,
            fsync_seconds,
            fsync_dir,
            pgbench: pgbench_args,
        } => {
            if runner.common.no_confab {
                bail!(
                    "ingest measures the reference server against its baselines; --no-confab leaves nothing to compare"
                );
            }
            let config = IngestConfig {
                senders,
                room_size,
                rates: sweep.into_sweep(rate, 500.0),
                fsync_rounds,
                fsync_time: secs(fsync_seconds),
                prefix: runner.prefix(),
            };
            // PostgreSQL's baseline first, on the quiet machine, in this run.
            let pgbench = match runner.plan() {
                Some(_) if !pgbench_args.no_pgbench => {
                    let config = PgbenchConfig {
                        admin_url: runner.common.admin_database_url.clone(),
                        clients: pgbench_args.pgbench_clients,
                        threads: pgbench_args.pgbench_threads,
                        duration: Duration::from_secs(pgbench_args.pgbench_seconds),
                        // Confab's ingest: a room per room_size senders.
                        rooms: u32::try_from(senders.div_ceil(room_size.max(1)))
                            .unwrap_or(u32::MAX)
                            .max(1),
                        senders: u32::try_from(senders).unwrap_or(u32::MAX).max(1),
                        batch: pgbench_args.pgbench_batch.max(1),
                    };
                    progress.stage("pgbench baseline", 0);
                    let report = pgbench::run(&config, &runner.launch.work_dir)
                        .await
                        .context("running the pgbench baseline")?;
                    progress.note(&format!(
                        "pgbench  {} clients, {} rows per transaction: {:.1} tps = {:.0} rows/s (latency avg {} ms, {} failed)\n         {}",
                        report.clients,
                        report.batch,
                        report.tps,
                        report.rows_per_s,
                        report
                            .latency_avg_ms
                            .map_or_else(|| "n/a".into(), |l| format!("{l:.2}")),
                        report.failed,
                        report.command
                    ));
                    Some(report)
                }
                _ => None,
            };
            let target = runner
                .start_target(
                    Kind::Confab,
                    &with_setup_limits(
                        Kind::Confab,
                        &["--send-rate", "1000000", "--send-burst", "1000000"],
                    ),
                )
                .await?;
            // Same disk as the database: inside the spawned server's data dir.
            let dir = target
                .data_dir
                .clone()
                .or(fsync_dir)
                .unwrap_or_else(|| runner.launch.work_dir.clone());
            std::fs::create_dir_all(&dir).ok();
            let report = ingest::run(
                &target.nodes,
                &config,
                target.probe.clone(),
                Some(&dir),
                &*progress,
            )
            .await;
            target.stop(&*progress).await;
            let report = report?;
            let fsync_per_s = report.fsync.map_or(f64::NAN, |f| f.per_second);
            println!(
                "confab   {}best sustained {} acks/s, {} messages per commit; one fsync per message: {:.0}/s; ratio {}   integrity {:?}   events {:?}",
                nodes_label(report.nodes),
                report
                    .best_sustained_acks_per_s
                    .map_or_else(|| "n/a".into(), |a| format!("{a:.0}")),
                report
                    .messages_per_commit
                    .map_or_else(|| "n/a".into(), |m| format!("{m:.1}")),
                fsync_per_s,
                report
                    .ratio_vs_fsync_per_message
                    .map_or_else(|| "n/a".into(), |r| format!("{r:.1}x")),
                report.integrity,
                report.events
            );
            // The same senders against each baseline: a server that acks
            // and pushes without storing (the no-storage ack ceiling).
            let mut baselines = Vec::new();
            for kind in kinds.into_iter().filter(|k| *k != Kind::Confab) {
                let target = runner.start_target(kind, &[]).await?;
                let baseline = ingest::run(
                    &target.nodes,
                    &config,
                    target.probe.clone(),
                    None,
                    &*progress,
                )
                .await;
                target.stop(&*progress).await;
                let baseline = baseline?;
                println!(
                    "{:<8} best sustained {} acks/s (no storage)   integrity {:?}   events {:?}",
                    baseline.target,
                    baseline
                        .best_sustained_acks_per_s
                        .map_or_else(|| "n/a".into(), |a| format!("{a:.0}")),
                    baseline.integrity,
                    baseline.events
                );
                baselines.push(baseline);
            }
            let mut ratios: Vec<Ratio> = report
                .best_sustained_acks_per_s
                .map(|a| vec![ratio("durable acks/s", "fsync-per-message", a, fsync_per_s)])
                .unwrap_or_default();
            for baseline in &baselines {
                if let (Some(a), Some(b)) = (
                    report.best_sustained_acks_per_s,
                    baseline.best_sustained_acks_per_s,
                ) {
                    ratios.push(ratio(
                        "durable acks/s vs no-storage acks/s",
                        &baseline.target,
                        a,
                        b,
                    ));
                }
            }
            if let Some(pg) = &pgbench {
                let best = report.best_sustained_acks_per_s;
                println!(
                    "confab   {} node(s) on PostgreSQL: {} messages/s committed (best sustained); pgbench {:.0} rows/s in {}-row commits; confab/pgbench = {}",
                    report.nodes,
                    best.map_or_else(|| "n/a".into(), |a| format!("{a:.0}")),
                    pg.rows_per_s,
                    pg.batch,
                    best.map_or_else(
                        || "n/a (no rate sustained)".into(),
                        |a| format!("{:.3}", a / pg.rows_per_s.max(1e-9))
                    ),
                );
                if let Some(a) = best {
                    ratios.push(ratio(
                        "durable acks/s vs pgbench rows/s",
                        "pgbench",
                        a,
                        pg.rows_per_s,
                    ));
                }
            }
            print_ratios(&ratios);
            let machine = machine(runner.launch.cpus.clone(), load_before);
            write_json(
                &runner.common.json_out,
                &Output {
                    workload: "ingest",
                    command,
                    machine,
                    results: std::iter::once(IngestOutput {
                        report,
                        pgbench,
                        database: runner.plan().map(|_| "postgres"),
                    })
                    .chain(baselines.into_iter().map(|report| IngestOutput {
                        report,
                        pgbench: None,
                        database: None,
                    }))
                    .collect::<Vec<_>>(),
                    ratios,
                },
            )
        }
        Workload::ReconnectStorm {
            clients,
            room_size,
            rate,
            duration,
            text_bytes,
            drain,
        } => {
            if runner.common.no_confab {
                bail!(
                    "reconnect-storm runs against the reference server only; --no-confab leaves nothing"
                );
            }
            if kinds.len() > 1 {
                progress.note("reconnect-storm: the baselines have no resume, so --vs is ignored");
            }
            let config = ReconnectConfig {
                clients,
                room_size,
                rate,
                duration: secs(duration),
                text_bytes,
                drain: secs(drain),
                prefix: runner.prefix(),
            };
            let (child, endpoint) = runner
                .start(
                    Kind::Confab,
                    &with_setup_limits(Kind::Confab, &["--max-connections", "20000"]),
                )
                .await?;
            let probe = child.as_ref().map(ChildServer::probe);
            let report = reconnect::run(Arc::new(endpoint), &config, probe, &*progress).await;
            stop(child).await;
            let report = report?;
            println!(
                "confab   {}/{} clients back ({} fully replayed); recovery {}; full recovery {:.1} ms; lost messages {}; integrity {:?}; events {:?}",
                report.recovered,
                report.clients,
                report.replayed_all,
                report.recovery,
                report.full_recovery_ms,
                report.lost_messages,
                report.integrity,
                report.events
            );
            let machine = machine(runner.launch.cpus.clone(), load_before);
            write_json(
                &runner.common.json_out,
                &Output {
                    workload: "reconnect-storm",
                    command,
                    machine,
                    results: vec![report],
                    ratios: Vec::new(),
                },
            )
        }
    }
}

/// An ingest report with the baseline PostgreSQL measured in the same run.
#[derive(Debug, Serialize)]
struct IngestOutput {
    #[serde(flatten)]
    report: IngestReport,
    /// pgbench doing Confab's batch transaction (PostgreSQL runs only).
    pgbench: Option<PgbenchReport>,
    /// `postgres` when the server stored in PostgreSQL, absent for SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'static str>,
}

/// `"2 nodes, "`-style prefix of a result line, empty for one server.
fn nodes_label(nodes: usize) -> String {
    if nodes > 1 {
        format!("{nodes} nodes: ")
    } else {
        String::new()
    }
}

async fn stop(child: Option<ChildServer>) {
    if let Some(child) = child {
        child.stop().await;
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Touch the clock base before any message is stamped.
    confab_bench::clock::now_ns();
    let threads = match cli.workload {
        // The ceiling is a server on Confab's stack: tokio's default
        // multi-threaded runtime, like confab-server's.
        Workload::ServeCeiling { .. } => None,
        _ => Some(cli.common.generator_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            usize::from,
        )),
    };
    let runtime = match threads {
        // One core (the generator pinned with taskset): a current-thread
        // runtime has no work-stealing queues, cross-thread wake-ups or
        // idle-worker parking to pay for on every push received.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .context("starting the tokio runtime")?;
    runtime.block_on(run(cli))
}
