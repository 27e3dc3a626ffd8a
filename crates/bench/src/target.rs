//! The servers under test, run as child processes so that their memory and
//! CPU can be read from `/proc` and they can be pinned with `taskset`.
//!
//! All three print one line `... listening on http://ADDR` on stdout once
//! they accept connections; the generator reads it instead of guessing a
//! port or waiting a fixed time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use confab_bot_sdk::ServerUrl;

use crate::BenchError;
use crate::client::{Dialect, Endpoint};

/// How long a server may take to print its address (the reference server
/// hashes a dummy password and migrates its database first).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The reference server, `confab-server`.
    Confab,
    /// The stack ceiling: [`crate::ceiling`] in a `confab-bench serve-ceiling` child.
    Ceiling,
    /// The Node.js `ws` broadcast server in `crates/bench/peers`.
    NodeWs,
}

impl Kind {
    /// The label used on the command line and in reports.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Confab => "confab",
            Kind::Ceiling => "ceiling",
            Kind::NodeWs => "node-ws",
        }
    }

    /// Parses a label of [`Kind::label`].
    pub fn parse(label: &str) -> Option<Self> {
        [Kind::Confab, Kind::Ceiling, Kind::NodeWs]
            .into_iter()
            .find(|k| k.label() == label)
    }

    /// How the generator reaches a server of this kind at `http_url`.
    pub fn endpoint(self, http_url: &str) -> Result<Endpoint, BenchError> {
        let server = ServerUrl::parse(http_url)?;
        let (ws_url, dialect, login) = match self {
            Kind::Confab => (server.ws_url(), Dialect::Confab, true),
            Kind::Ceiling => (server.ws_url(), Dialect::Confab, false),
            // The baseline serves its WebSocket at the root.
            Kind::NodeWs => {
                let root = server.ws_url();
                let root = root.trim_end_matches(confab_protocol::WEBSOCKET_PATH);
                (format!("{root}/"), Dialect::Json, false)
            }
        };
        Ok(Endpoint {
            name: self.label().to_owned(),
            server,
            ws_url,
            dialect,
            login,
        })
    }
}

/// Where to find and how to run the servers.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `confab-server` binary.
    pub confab_bin: PathBuf,
    /// The `confab-bench` binary (for `serve-ceiling`).
    pub bench_bin: PathBuf,
    /// `crates/bench/peers`, holding `server.js` and `node_modules`.
    pub peers_dir: PathBuf,
    /// Parent directory for data directories and logs.
    pub work_dir: PathBuf,
    /// `taskset -c` CPU list for servers, if pinning.
    pub cpus: Option<String>,
}

/// A running server child process.
#[derive(Debug)]
pub struct ChildServer {
    /// Which server.
    pub kind: Kind,
    child: Child,
    /// Its process id (taskset execs the server, so this is the server's).
    pub pid: u32,
    /// Base URL it reported.
    pub http_url: String,
    /// Its stderr.
    pub log: PathBuf,
    /// Its data directory (Confab only).
    pub data_dir: Option<PathBuf>,
}

impl ChildServer {
    /// Starts a server of `kind`; `extra` are more flags for `confab-server`.
    pub async fn start(kind: Kind, launch: &Launch, extra: &[String]) -> Result<Self, BenchError> {
        let spawn_err = |reason: String| BenchError::Spawn {
            what: kind.label().to_owned(),
            reason,
        };
        std::fs::create_dir_all(&launch.work_dir)
            .map_err(|e| BenchError::io(format!("creating {}", launch.work_dir.display()), e))?;
        let stamp = crate::clock::now_ns();
        let log = launch
            .work_dir
            .join(format!("{}-{stamp}.log", kind.label()));
        let (program, args, data_dir): (PathBuf, Vec<String>, Option<PathBuf>) = match kind {
            Kind::Confab => {
                let data = launch.work_dir.join(format!("confab-data-{stamp}"));
                let mut args = vec![
                    "--listen".to_owned(),
                    "127.0.0.1:0".to_owned(),
                    "--data-dir".to_owned(),
                    data.display().to_string(),
                    // Every simulated client comes from 127.0.0.1: the
                    // per-address cap (256 by default) would refuse them.
                    "--max-connections-per-ip".to_owned(),
                    "0".to_owned(),
                    // Workloads create a room per group on first join, and
                    // one client may be first in many: the per-user creation
                    // limit (§12.5) is not what a benchmark measures.
                    "--room-create-burst".to_owned(),
                    "1000000".to_owned(),
                ];
                args.extend(extra.iter().cloned());
                (launch.confab_bin.clone(), args, Some(data))
            }
            Kind::Ceiling => (
                launch.bench_bin.clone(),
                vec![
                    "serve-ceiling".to_owned(),
                    "--listen".to_owned(),
                    "127.0.0.1:0".to_owned(),
                ],
                None,
            ),
            Kind::NodeWs => {
                if !launch.peers_dir.join("node_modules").join("ws").is_dir() {
                    return Err(spawn_err(format!(
                        "{} has no node_modules/ws; install it with `npm ci --prefix {}`",
                        launch.peers_dir.display(),
                        launch.peers_dir.display()
                    )));
                }
                let script = launch.peers_dir.join("server.js");
                (
                    PathBuf::from("node"),
                    vec![
                        script.display().to_string(),
                        "--port".to_owned(),
                        "0".to_owned(),
                    ],
                    None,
                )
            }
        };
        let mut command = match &launch.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let stderr = std::fs::File::create(&log)
            .map_err(|e| BenchError::io(format!("creating {}", log.display()), e))?;
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| spawn_err(format!("{} {args:?}: {e}", program.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_err("exited at once".to_owned()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| spawn_err("no stdout pipe".to_owned()))?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once("listening on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await;
        let http_url = match found {
            Ok(Some(url)) => url,
            Ok(None) => {
                return Err(spawn_err(format!(
                    "it exited before listening; see {}",
                    log.display()
                )));
            }
            Err(_) => {
                return Err(spawn_err(format!(
                    "no address within {START_TIMEOUT:?}; see {}",
                    log.display()
                )));
            }
        };
        // Keep reading stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            kind,
            child,
            pid,
            http_url,
            log,
            data_dir,
        })
    }

    /// How the generator reaches this server.
    pub fn endpoint(&self) -> Result<Endpoint, BenchError> {
        self.kind.endpoint(&self.http_url)
    }

    /// A probe of this process's memory and CPU.
    pub fn probe(&self) -> ProcessProbe {
        ProcessProbe::new(self.pid)
    }

    /// SIGTERM, then SIGKILL if it does not stop in time.
    pub async fn stop(mut self) {
        // tokio can only SIGKILL; `kill -TERM` asks for a graceful stop.
        let asked = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !asked
            || tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_err()
        {
            self.child.kill().await.ok();
        }
    }
}

/// Reads the resident memory and CPU time of a process, or of a group of
/// processes (the nodes of a cluster) summed, from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessProbe {
    pids: Arc<[u32]>,
}

impl ProcessProbe {
    /// The process `pid`.
    pub fn new(pid: u32) -> Self {
        Self::group([pid])
    }

    /// Several processes, read as one: every figure is their sum.
    pub fn group(pids: impl IntoIterator<Item = u32>) -> Self {
        Self {
            pids: pids.into_iter().collect(),
        }
    }

    /// This process.
    pub fn current() -> Self {
        Self::new(std::process::id())
    }

    /// The process ids read.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Resident set size (VmRSS) in bytes.
    pub fn rss_bytes(&self) -> Result<u64, BenchError> {
        self.pids.iter().map(|&pid| rss_bytes(pid)).sum()
    }

    /// User plus system CPU time consumed so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64, BenchError> {
        self.pids.iter().map(|&pid| cpu_seconds(pid)).sum()
    }

    /// Time the processes' threads have spent runnable but waiting for a
    /// CPU, in seconds, summed over their live threads
    /// (`/proc/PID/task/*/schedstat`, second field, ns). `None` where the
    /// kernel keeps no schedstats.
    pub fn runqueue_wait_seconds(&self) -> Option<f64> {
        self.pids
            .iter()
            .map(|&pid| runqueue_wait_seconds(pid))
            .sum()
    }
}

/// VmRSS of one process, bytes.
fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("reading {path}"), e))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| {
            BenchError::io(
                format!("no VmRSS in {path}"),
                std::io::ErrorKind::InvalidData.into(),
            )
        })
}

/// User plus system CPU seconds of one process.
fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("reading {path}"), e))?;
    // Fields after the parenthesised command name: state is field 3,
    // utime field 14 and stime field 15 (proc(5)).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / clock_ticks_per_second()),
        _ => Err(BenchError::io(
            format!("unexpected {path}"),
            std::io::ErrorKind::InvalidData.into(),
        )),
    }
}

/// Runqueue wait of one process's live threads, seconds.
fn runqueue_wait_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total_ns = None;
    for task in tasks.flatten() {
        // A thread that exits meanwhile just drops out of the sum.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(wait) = stat
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u64>().ok())
        {
            *total_ns.get_or_insert(0u64) += wait;
        }
    }
    total_ns.map(|ns| ns as f64 / 1e9)
}

/// `CLK_TCK`, asked of `getconf` once (reading it directly needs libc).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU use of a process between two readings, as a share of one core.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    probe: ProcessProbe,
    start_cpu: f64,
    start_wait: Option<f64>,
    start: std::time::Instant,
}

impl CpuMeter {
    /// Starts measuring `probe`.
    pub fn start(probe: ProcessProbe) -> Self {
        Self {
            start_cpu: probe.cpu_seconds().unwrap_or(0.0),
            start_wait: probe.runqueue_wait_seconds(),
            probe,
            start: std::time::Instant::now(),
        }
    }

    /// Time spent runnable but waiting for a CPU since the start, per second
    /// of wall time, summed over threads: the share of a core the process
    /// wanted and did not get. On a shared machine this, not the process
    /// under test, is what a high latency often measures.
    pub fn wait_cores(&self) -> Option<f64> {
        let wall = self.start.elapsed().as_secs_f64();
        let waited = self.probe.runqueue_wait_seconds()? - self.start_wait?;
        // Threads that exited take their past waits with them.
        (wall > 0.0).then(|| waited.max(0.0) / wall)
    }

    /// CPU seconds used since the start.
    pub fn seconds(&self) -> f64 {
        self.probe.cpu_seconds().unwrap_or(self.start_cpu) - self.start_cpu
    }

    /// Cores used on average since the start (1.0 = one core fully busy).
    pub fn cores(&self) -> f64 {
        let wall = self.start.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (self.probe.cpu_seconds().unwrap_or(self.start_cpu) - self.start_cpu) / wall
    }
}

/// The default `crates/bench/peers` directory of this checkout.
pub fn default_peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_rss_and_cpu() {
        let probe = ProcessProbe::current();
        assert!(probe.rss_bytes().expect("VmRSS is readable") > 0);
        assert!(probe.cpu_seconds().expect("stat is readable") >= 0.0);
    }

    #[test]
    fn labels_round_trip() {
        for kind in [Kind::Confab, Kind::Ceiling, Kind::NodeWs] {
            assert_eq!(Kind::parse(kind.label()), Some(kind));
        }
        assert_eq!(Kind::parse("nats"), None);
    }

    #[test]
    fn endpoints_follow_the_kind() {
        let confab = Kind::Confab.endpoint("http://127.0.0.1:9").unwrap();
        assert_eq!(confab.ws_url, "ws://127.0.0.1:9/v1/ws");
        assert!(confab.login);
        let node = Kind::NodeWs.endpoint("http://127.0.0.1:9").unwrap();
        assert_eq!(node.ws_url, "ws://127.0.0.1:9/");
        assert_eq!(node.dialect, Dialect::Json);
        assert!(!node.login);
    }
}
