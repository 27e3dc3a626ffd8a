//! Confab on PostgreSQL, as one node or as a cluster: a fresh scratch
//! database per run (created through an admin URL, dropped afterwards),
//! one NATS shared by the nodes under a cluster name of its own, and N
//! `confab-server` children started one after another (the first migrates
//! the database).
//!
//! The generator needs no PostgreSQL or NATS client library for this: the
//! database is created and dropped with `psql` (installed with `pgbench`),
//! and the cluster's JetStream stream is deleted afterwards with one request
//! in NATS's text protocol ([`delete_stream`]).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::BenchError;
use crate::client::Endpoint;
use crate::target::{ChildServer, Kind, Launch, ProcessProbe};

/// Default admin URL: the PostgreSQL of the tests (`CONFAB_TEST_DATABASE_URL`).
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Default NATS (`CONFAB_TEST_NATS_URL`).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How long one `psql` or NATS exchange may take.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// A random lowercase hex tag: names that do not collide with other runs.
pub fn random_tag() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(crate::clock::now_ns());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// `url` with its database (the path) replaced by `database`; `None` if it
/// is not a `postgres://` or `postgresql://` URL.
pub fn with_database(url: &str, database: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let scheme = &url[..url.len() - rest.len()];
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    if authority.is_empty() {
        return None;
    }
    Some(match query {
        Some(q) => format!("{scheme}{authority}/{database}?{q}"),
        None => format!("{scheme}{authority}/{database}"),
    })
}

/// Runs `psql` against `url` with `args`, failing on the first SQL error.
pub async fn psql(url: &str, args: &[&str]) -> Result<String, BenchError> {
    let fail = |reason: String| BenchError::Spawn {
        what: "psql".to_owned(),
        reason,
    };
    let output = tokio::time::timeout(
        SERVICE_TIMEOUT,
        Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| fail(format!("no answer within {SERVICE_TIMEOUT:?}")))?
    .map_err(|e| fail(format!("{e} (is the PostgreSQL client installed?)")))?;
    if !output.status.success() {
        return Err(fail(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A database of its own for one run, dropped by [`ScratchDb::drop_now`].
#[derive(Debug)]
pub struct ScratchDb {
    admin_url: String,
    /// Its name, `confab_bench_<tag>`.
    pub name: String,
    /// URL of it (the admin URL with its database replaced).
    pub url: String,
}

impl ScratchDb {
    /// Creates `confab_bench_<purpose>_<random>` through `admin_url`.
    pub async fn create(admin_url: &str, purpose: &str) -> Result<Self, BenchError> {
        let name = format!("confab_bench_{purpose}_{}", random_tag());
        let url = with_database(admin_url, &name)
            .ok_or_else(|| BenchError::Config(format!("{admin_url:?} is not a postgres:// URL")))?;
        psql(admin_url, &["-c", &format!("CREATE DATABASE {name}")]).await?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    /// Drops the database, closing whatever is still connected to it.
    pub async fn drop_now(self) -> Result<(), BenchError> {
        psql(
            &self.admin_url,
            &[
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ],
        )
        .await
        .map(|_| ())
    }
}

/// Deletes the JetStream stream `stream` on the NATS at `nats_url`
/// (`nats://host:port`) with one `$JS.API.STREAM.DELETE` request.
pub async fn delete_stream(nats_url: &str, stream: &str) -> Result<(), BenchError> {
    let fail = |reason: String| BenchError::Spawn {
        what: format!("NATS at {nats_url}"),
        reason,
    };
    let addr = nats_url
        .strip_prefix("nats://")
        .unwrap_or(nats_url)
        .trim_end_matches('/');
    let exchange = async {
        let mut socket = TcpStream::connect(addr).await?;
        let (read, mut write) = socket.split();
        let mut read = BufReader::new(read);
        let mut line = String::new();
        read.read_line(&mut line).await?; // INFO {...}
        let inbox = format!("_INBOX.confab_bench.{}", random_tag());
        write
            .write_all(
                format!(
                    "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":false}}\r\n\
                     SUB {inbox} 1\r\nPUB $JS.API.STREAM.DELETE.{stream} {inbox} 0\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(Err("NATS closed the connection".to_owned()));
            }
            if line.starts_with("PING") {
                write.write_all(b"PONG\r\n").await?;
            } else if line.starts_with("-ERR") {
                return Ok(Err(line.trim().to_owned()));
            } else if let Some(header) = line.strip_prefix("MSG ") {
                // MSG <subject> <sid> <bytes>
                let size: usize = header
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; size + 2];
                read.read_exact(&mut body).await?;
                let body = String::from_utf8_lossy(&body[..size]).into_owned();
                return Ok(if body.contains("\"success\":true") {
                    Ok(())
                } else {
                    Err(body)
                });
            }
        }
    };
    match tokio::time::timeout(SERVICE_TIMEOUT, exchange).await {
        Err(_) => Err(fail(format!("no answer within {SERVICE_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(fail(std::io::Error::to_string(&e))),
        Ok(Ok(Err(reason))) => Err(fail(format!("deleting stream {stream}: {reason}"))),
        Ok(Ok(Ok(()))) => Ok(()),
    }
}

/// What to deploy the reference server as.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// Nodes (1: one server on PostgreSQL, without NATS).
    pub nodes: usize,
    /// PostgreSQL URL allowed to create and drop databases.
    pub admin_url: String,
    /// NATS with JetStream (used when `nodes` > 1).
    pub nats_url: String,
    /// `--cluster-sync-interval-ms` of the nodes, if not the default.
    pub sync_interval_ms: Option<u64>,
}

/// The reference server on PostgreSQL: its nodes, database and stream.
#[derive(Debug)]
pub struct Deployment {
    /// The nodes, in start order.
    pub nodes: Vec<ChildServer>,
    /// The scratch database they share.
    pub database: String,
    /// The cluster name (with more than one node).
    pub cluster_name: Option<String>,
    db: Option<ScratchDb>,
    nats_url: String,
}

impl Deployment {
    /// Creates the database and starts the nodes with `extra` flags; on
    /// any failure, stops what started and drops the database.
    pub async fn start(
        plan: &ClusterPlan,
        launch: &Launch,
        extra: &[String],
    ) -> Result<Self, BenchError> {
        if plan.nodes == 0 {
            return Err(BenchError::Config("a deployment needs a node".into()));
        }
        let db = ScratchDb::create(&plan.admin_url, "run").await?;
        let cluster_name = (plan.nodes > 1).then(|| format!("bench_{}", random_tag()));
        let mut args = vec!["--database-url".to_owned(), db.url.clone()];
        if let Some(name) = &cluster_name {
            args.extend([
                "--nats-url".to_owned(),
                plan.nats_url.clone(),
                "--cluster-name".to_owned(),
                name.clone(),
            ]);
            if let Some(ms) = plan.sync_interval_ms {
                args.extend(["--cluster-sync-interval-ms".to_owned(), ms.to_string()]);
            }
        }
        args.extend(extra.iter().cloned());
        let mut deployment = Self {
            nodes: Vec::new(),
            database: db.name.clone(),
            cluster_name,
            db: Some(db),
            nats_url: plan.nats_url.clone(),
        };
        // One after another: the first node migrates the fresh database.
        for _ in 0..plan.nodes {
            match ChildServer::start(Kind::Confab, launch, &args).await {
                Ok(node) => deployment.nodes.push(node),
                Err(e) => {
                    deployment.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(deployment)
    }

    /// How the generator reaches each node, in node order.
    pub fn endpoints(&self) -> Result<Vec<Arc<Endpoint>>, BenchError> {
        self.nodes
            .iter()
            .map(|n| n.endpoint().map(Arc::new))
            .collect()
    }

    /// CPU and memory of all nodes together (not PostgreSQL's or NATS's).
    pub fn probe(&self) -> ProcessProbe {
        ProcessProbe::group(self.nodes.iter().map(|n| n.pid))
    }

    /// Stops the nodes, drops the database and deletes the cluster's
    /// stream; returns a line for each clean-up step that failed.
    pub async fn stop(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for node in self.nodes.drain(..) {
            node.stop().await;
        }
        if let Some(db) = self.db.take() {
            let name = db.name.clone();
            if let Err(e) = db.drop_now().await {
                problems.push(format!("could not drop database {name}: {e}"));
            }
        }
        if let Some(name) = &self.cluster_name {
            let stream = format!("CONFAB_{name}");
            if let Err(e) = delete_stream(&self.nats_url, &stream).await {
                problems.push(format!("could not delete NATS stream {stream}: {e}"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x").as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/x")
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x").as_deref(),
            Some("postgresql://u:p@h/x?sslmode=disable")
        );
        assert_eq!(
            with_database("postgres://h:5432", "x").as_deref(),
            Some("postgres://h:5432/x")
        );
        assert_eq!(with_database("sqlite:///tmp/db", "x"), None);
        assert_eq!(with_database("postgres:///db", "x"), None);
    }

    #[test]
    fn tags_are_hex_and_differ() {
        let (a, b) = (random_tag(), random_tag());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }
}
