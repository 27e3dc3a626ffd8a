//! `confab-conformance`: run the conformance suite against a server.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use confab_conformance::{RunConfig, coverage, run, runner, scenario};

/// Runs the Confab v1 conformance scenarios against a running server and
/// prints a verdict per scenario and per spec rule.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:7420. The WebSocket URL
    /// is derived as ws://host:port/v1/ws. Repeat it (or give a
    /// comma-separated list) to check the nodes of a cluster: each
    /// scenario's actors are spread round-robin over them, registration and
    /// actor-less steps use the first, and the run refuses to start if the
    /// servers announce different Welcome limits or capabilities.
    #[arg(
        long,
        env = "CONFAB_SERVER",
        value_delimiter = ',',
        required_unless_present_any = ["list", "write_coverage", "check_coverage"]
    )]
    server: Vec<String>,
    /// Override the derived WebSocket URL (only with a single --server).
    #[arg(long)]
    ws_url: Option<String>,
    /// Select scenarios by name substring or spec section / rule id
    /// (e.g. `8.5`, `R-10.3.2`, `resume`). Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',')]
    filter: Vec<String>,
    /// List the scenarios (after --filter) and exit.
    #[arg(long)]
    list: bool,
    /// Machine-readable report format.
    #[arg(long, value_enum)]
    report: Option<ReportFormat>,
    /// Where to write the machine-readable report (default: stdout, after the summary).
    #[arg(long)]
    report_file: Option<PathBuf>,
    /// Deadline for one step, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    step_timeout_ms: u64,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Also run slow scenarios (they wait for server timers such as the auth deadline).
    #[arg(long)]
    slow: bool,
    /// Transcript lines shown per failure in the summary.
    #[arg(long, default_value_t = 40)]
    transcript_lines: usize,
    /// Regenerate spec/coverage.md from --spec and the scenarios, then exit.
    #[arg(long)]
    write_coverage: bool,
    /// Check coverage (every rule covered or listed in uncovered.yaml), then exit.
    #[arg(long)]
    check_coverage: bool,
    /// The spec to read rule ids from.
    #[arg(long, default_value = "spec/protocol.md")]
    spec: PathBuf,
    /// The coverage table to write.
    #[arg(long, default_value = "spec/coverage.md")]
    coverage_file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Json,
    Junit,
}

#[tokio::main]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("confab-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.write_coverage || args.check_coverage {
        return coverage_command(&args);
    }
    let mut config = RunConfig::with_servers(args.server.clone());
    config.ws_url = args.ws_url.clone();
    config.filter = args.filter.clone();
    config.step_timeout = Duration::from_millis(args.step_timeout_ms);
    config.jobs = args.jobs;
    config.include_slow = args.slow;
    if args.list {
        let mut out = std::io::stdout().lock();
        for s in runner::select(&config)? {
            let requires = if s.requires.is_empty() {
                String::new()
            } else {
                format!(" requires {}", s.requires.join(","))
            };
            let slow = if s.slow { " (slow)" } else { "" };
            let line = format!(
                "{:40} [{}]{requires}{slow}\n    {}\n",
                s.name,
                s.covers.join(" "),
                s.summary
            );
            // A closed pipe (`--list | head`) is the reader's choice, not an error.
            if out.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = run(&config).await?;
    let rendered = match args.report {
        Some(ReportFormat::Json) => Some(report.to_json()),
        Some(ReportFormat::Junit) => Some(report.to_junit()),
        None => None,
    };
    let summary = report.human_summary(args.transcript_lines);
    match (&rendered, &args.report_file) {
        (Some(text), Some(path)) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            emit(&summary);
        }
        (Some(text), None) => {
            // The machine-readable report owns stdout; the summary goes to stderr.
            eprint!("{summary}");
            std::io::stdout().write_all(text.as_bytes())?;
        }
        (None, _) => emit(&summary),
    }
    Ok(if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints to stdout; a reader that closed the pipe early is not an error.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        // Nothing useful to do: the reader is gone.
    }
}

fn coverage_command(args: &Args) -> anyhow::Result<ExitCode> {
    let spec = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let scenarios = scenario::embedded()?;
    let uncovered = coverage::parse_uncovered(coverage::UNCOVERED_YAML)?;
    let cov = coverage::compute(&spec, &scenarios, &uncovered);
    if args.write_coverage {
        std::fs::write(&args.coverage_file, cov.to_markdown())
            .with_context(|| format!("writing {}", args.coverage_file.display()))?;
        println!("wrote {}", args.coverage_file.display());
    }
    for p in &cov.problems {
        eprintln!("coverage: {p}");
    }
    Ok(if cov.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
