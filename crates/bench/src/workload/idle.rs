//! `idle`: how much server memory an authenticated, idle socket costs.
//!
//! Opens sockets in steps (e.g. 1,000 then 15,000), each authenticated and
//! with one room active, and reads the server's resident memory (VmRSS)
//! after each step. The cost per socket is the *slope* between two steps,
//! which cancels everything fixed (code, database cache, runtime) and
//! leaves what each further socket adds. Kernel socket buffers are not in
//! RSS and so not counted.
//!
//! Sockets belong to users with several sockets each (a user's devices),
//! so a 15,000-socket run needs a few hundred argon2 logins rather than
//! 15,000; the server keeps per-socket state per socket regardless.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{Integrity, Progress, UserPlan, connect, tokens};
use crate::BenchError;
use crate::client::Endpoint;
use crate::stats::Recorder;
use crate::target::ProcessProbe;

/// Parameters of an idle run.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// Socket counts to measure at, ascending.
    pub sizes: Vec<usize>,
    /// Sockets per user.
    pub sockets_per_user: usize,
    /// Users per room.
    pub users_per_room: usize,
    /// Prefix of user and room names.
    pub prefix: String,
}

/// Memory at one size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdlePoint {
    /// Open authenticated sockets.
    pub sockets: usize,
    /// Server VmRSS, bytes (spawned servers only).
    pub server_rss_bytes: Option<u64>,
    /// Generator VmRSS, bytes.
    pub generator_rss_bytes: u64,
}

/// What an idle run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Server label.
    pub target: String,
    /// One point per size.
    pub points: Vec<IdlePoint>,
    /// Server bytes per socket between the first and last size.
    pub server_bytes_per_socket: Option<f64>,
    /// Generator bytes per socket, same slope.
    pub generator_bytes_per_socket: Option<f64>,
    /// Sockets the server ended while idle, and any gap or duplicate.
    pub integrity: Integrity,
    /// Errors and anomalies by kind.
    pub events: BTreeMap<String, u64>,
    /// The reference server's own account of a socket's task futures
    /// (`confab_socket_{reader,writer}_task_bytes`): what part of the slope
    /// is the compiled size of its two tasks. `None` for the baselines.
    pub task_bytes: Option<(f64, f64)>,
    /// The reference server's runtime tasks alive at the largest size
    /// (`confab_tasks_alive`), to tell tasks per socket.
    pub tasks_alive: Option<f64>,
}

fn slope(a: Option<u64>, b: Option<u64>, sockets: f64) -> Option<f64> {
    Some((b? as f64 - a? as f64) / sockets)
}

/// Runs the idle workload against `endpoint`.
pub async fn run(
    endpoint: Arc<Endpoint>,
    config: &IdleConfig,
    server: Option<ProcessProbe>,
    progress: &dyn Progress,
) -> Result<IdleReport, BenchError> {
    let mut sizes = config.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || config.sockets_per_user == 0 || config.users_per_room == 0 {
        return Err(BenchError::Config(
            "idle needs sizes, sockets per user and users per room".into(),
        ));
    }
    let recorder = Recorder::new(1);
    // Plan every step's users, and log them all in before the first
    // reading: each login runs argon2 (19 MiB), and memory the allocator
    // keeps from those would otherwise be charged to the sockets.
    let mut steps: Vec<Vec<UserPlan>> = Vec::new();
    let mut open = 0usize;
    for &size in &sizes {
        // The step's last user may have fewer sockets, so each size is exact.
        let mut users = Vec::new();
        while open < size {
            let next_user = steps.iter().map(Vec::len).sum::<usize>() + users.len();
            let connections = config.sockets_per_user.min(size - open);
            users.push(UserPlan {
                name: format!("{}idle-{next_user}", config.prefix),
                rooms: vec![format!(
                    "{}idle-{}",
                    config.prefix,
                    next_user / config.users_per_room
                )],
                connections,
            });
            open += connections;
        }
        steps.push(users);
    }
    let everyone: Vec<UserPlan> = steps.iter().flatten().cloned().collect();
    let all_tokens = tokens(std::slice::from_ref(&endpoint), &everyone, progress).await?;
    let mut populations = Vec::new();
    let mut points = Vec::new();
    let (mut open, mut first_user) = (0usize, 0usize);
    for users in &steps {
        let step_tokens = &all_tokens[first_user..first_user + users.len()];
        first_user += users.len();
        open += users.iter().map(|u| u.connections).sum::<usize>();
        populations.push(
            connect(
                std::slice::from_ref(&endpoint),
                users,
                step_tokens,
                &recorder,
                progress,
            )
            .await?,
        );
        let point = IdlePoint {
            sockets: open,
            server_rss_bytes: server.as_ref().map(ProcessProbe::rss_bytes).transpose()?,
            generator_rss_bytes: ProcessProbe::current().rss_bytes()?,
        };
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
        progress.note(&format!(
            "{:<8} {:>6} sockets  server RSS {}  generator RSS {}",
            endpoint.name,
            point.sockets,
            point.server_rss_bytes.map_or_else(|| "n/a".to_owned(), mib),
            mib(point.generator_rss_bytes)
        ));
        points.push(point);
    }
    // Read while the sockets are open (a size is recorded per socket).
    let task_bytes = if endpoint.login {
        let reader = crate::http::metric(&endpoint.server, "confab_socket_reader_task_bytes").await;
        let writer = crate::http::metric(&endpoint.server, "confab_socket_writer_task_bytes").await;
        match (reader, writer) {
            (Ok(Some(reader)), Ok(Some(writer))) => Some((reader, writer)),
            _ => None,
        }
    } else {
        None
    };
    let tasks_alive = if endpoint.login {
        crate::http::metric(&endpoint.server, "confab_tasks_alive")
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let mut outcomes = Vec::new();
    for population in populations {
        outcomes.extend(population.close().await);
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let added = (last.sockets - first.sockets) as f64;
    let (server_bytes_per_socket, generator_bytes_per_socket) = if added > 0.0 {
        (
            slope(first.server_rss_bytes, last.server_rss_bytes, added),
            slope(
                Some(first.generator_rss_bytes),
                Some(last.generator_rss_bytes),
                added,
            ),
        )
    } else {
        (None, None)
    };
    Ok(IdleReport {
        target: endpoint.name.clone(),
        points,
        server_bytes_per_socket,
        generator_bytes_per_socket,
        integrity: Integrity::of(&outcomes),
        events: recorder.events(),
        task_bytes,
        tasks_alive,
    })
}
