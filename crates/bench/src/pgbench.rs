//! The PostgreSQL baseline of a cluster ingest run: how many rows per
//! second this box's PostgreSQL commits when each transaction does what one
//! of Confab's batches does — bump one gapless counter row under its lock
//! and insert a batch of rows with the seqs below it — measured by
//! `pgbench` with `crates/bench/pgbench/gapless_insert.sql` against a
//! scratch database made from `schema.sql`.
//!
//! Confab's own batch does a little more per transaction (one key read for
//! idempotency, heads of several rooms), so rows/s here is what the
//! cluster's storage could do at best with batches of that size.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::process::Command;

use crate::BenchError;
use crate::cluster::{ScratchDb, psql};

/// The schema the script runs against.
pub const SCHEMA_SQL: &str = include_str!("../pgbench/schema.sql");
/// The transaction pgbench repeats.
pub const SCRIPT_SQL: &str = include_str!("../pgbench/gapless_insert.sql");

/// Parameters of a pgbench run.
#[derive(Debug, Clone)]
pub struct PgbenchConfig {
    /// PostgreSQL URL allowed to create and drop databases.
    pub admin_url: String,
    /// Concurrent clients (`-c`).
    pub clients: u32,
    /// pgbench threads (`-j`).
    pub threads: u32,
    /// How long (`-T`, whole seconds, at least 1).
    pub duration: Duration,
    /// Counter rows the clients pick from at random.
    pub rooms: u32,
    /// Users the rows name as senders.
    pub senders: u32,
    /// Rows per transaction.
    pub batch: u32,
}

/// What pgbench measured.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchReport {
    /// Clients.
    pub clients: u32,
    /// Seconds run.
    pub duration_s: u64,
    /// Rows per transaction.
    pub batch: u32,
    /// Counter rows.
    pub rooms: u32,
    /// Transactions committed.
    pub transactions: u64,
    /// Transactions that failed.
    pub failed: u64,
    /// Transactions per second (pgbench's, without connection time).
    pub tps: f64,
    /// tps × batch: rows committed per second.
    pub rows_per_s: f64,
    /// Mean transaction latency, ms.
    pub latency_avg_ms: Option<f64>,
    /// The exact command.
    pub command: String,
}

/// The number after `key` on the line of pgbench's output that starts with it.
fn figure(output: &str, key: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        line.trim()
            .strip_prefix(key)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Creates a scratch database, loads the schema, runs pgbench in it,
/// drops it. `work_dir` holds the script file while pgbench runs.
pub async fn run(config: &PgbenchConfig, work_dir: &Path) -> Result<PgbenchReport, BenchError> {
    let db = ScratchDb::create(&config.admin_url, "pgbench").await?;
    let result = run_in(config, &db, work_dir).await;
    let dropped = db.drop_now().await;
    let report = result?;
    dropped?;
    Ok(report)
}

async fn run_in(
    config: &PgbenchConfig,
    db: &ScratchDb,
    work_dir: &Path,
) -> Result<PgbenchReport, BenchError> {
    std::fs::create_dir_all(work_dir)
        .map_err(|e| BenchError::io(format!("creating {}", work_dir.display()), e))?;
    let schema = work_dir.join(format!("{}-schema.sql", db.name));
    let script = work_dir.join(format!("{}-gapless_insert.sql", db.name));
    for (path, text) in [(&schema, SCHEMA_SQL), (&script, SCRIPT_SQL)] {
        std::fs::write(path, text)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
    }
    let rooms = format!("rooms={}", config.rooms);
    let senders = format!("senders={}", config.senders);
    let loaded = psql(
        &db.url,
        &[
            "-v",
            &rooms,
            "-v",
            &senders,
            "-f",
            &schema.display().to_string(),
        ],
    )
    .await;
    std::fs::remove_file(&schema).ok();
    loaded?;

    let seconds = config.duration.as_secs().max(1);
    let args: Vec<String> = vec![
        "-n".into(), // no vacuum of pgbench's own tables: there are none
        "-f".into(),
        script.display().to_string(),
        "-D".into(),
        rooms,
        "-D".into(),
        senders,
        "-D".into(),
        format!("batch={}", config.batch),
        "-c".into(),
        config.clients.max(1).to_string(),
        "-j".into(),
        config.threads.max(1).to_string(),
        "-T".into(),
        seconds.to_string(),
        db.url.clone(),
    ];
    let command = format!("pgbench {}", args.join(" "));
    let fail = |reason: String| BenchError::Spawn {
        what: "pgbench".to_owned(),
        reason,
    };
    let output = tokio::time::timeout(
        Duration::from_secs(seconds + 60),
        Command::new("pgbench")
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await;
    std::fs::remove_file(&script).ok();
    let output = output
        .map_err(|_| fail(format!("{command}: did not finish")))?
        .map_err(|e| fail(format!("{command}: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(fail(format!(
            "{command}: {}{}",
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let tps = figure(&stdout, "tps =")
        .ok_or_else(|| fail(format!("no tps in its output: {}", stdout.trim())))?;
    Ok(PgbenchReport {
        clients: config.clients.max(1),
        duration_s: seconds,
        batch: config.batch,
        rooms: config.rooms,
        transactions: figure(&stdout, "number of transactions actually processed:")
            .map_or(0, |t| t as u64),
        failed: figure(&stdout, "number of failed transactions:").map_or(0, |t| t as u64),
        tps,
        rows_per_s: tps * f64::from(config.batch),
        latency_avg_ms: figure(&stdout, "latency average ="),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_output() {
        let out = "number of transactions actually processed: 944\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 12.705 ms\n\
                   initial connection time = 17.567 ms\n\
                   tps = 314.842034 (without initial connection time)\n";
        assert_eq!(figure(out, "tps ="), Some(314.842034));
        assert_eq!(
            figure(out, "number of transactions actually processed:"),
            Some(944.0)
        );
        assert_eq!(figure(out, "number of failed transactions:"), Some(0.0));
        assert_eq!(figure(out, "latency average ="), Some(12.705));
    }
}
