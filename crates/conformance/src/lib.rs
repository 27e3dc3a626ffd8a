//! The Confab v1 conformance suite: the spec made executable.
//!
//! Point it at any server (`confab-conformance --server http://host:port`,
//! or [`run`] from Rust) and it returns a verdict per scenario and per
//! numbered spec rule. Given several servers (the nodes of a cluster), it
//! spreads each scenario's actors over them, so multi-actor scenarios also
//! check cross-node behaviour. Scenarios are data (`scenarios/*.yaml`, compiled in);
//! one driver runs them all. Synchronisation is always a frame, never a
//! sleep: replies, pushes, and Ping/Pong barriers (§12.1).
//!
//! Layout:
//! - [`scenario`]: the scenario format and its loader.
//! - [`vars`], [`matcher`]: variable substitution and frame matchers.
//! - [`driver`]: the one driver: actors, steps, expectations.
//! - [`connection`], [`http`]: the WebSocket and HTTP clients, on the bot
//!   SDK's connector and HTTP client, with raw HTTP/1.1 bytes kept for the
//!   hostile cases only.
//! - [`proxy`]: the fault-injecting TCP proxy (latency, cut, hold, throttle).
//! - [`invariants`]: structural checks (no loss, no duplicate, order).
//! - [`runner`]: [`run`], the probe, selection and scheduling.
//! - [`report`]: verdicts and their human, JSON and JUnit renderings.
//! - [`coverage`]: rule coverage and the generated `spec/coverage.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), confab_conformance::RunError> {
//! let mut config = confab_conformance::RunConfig::new("http://127.0.0.1:7420");
//! config.filter = vec!["8.5".into()];
//! let report = confab_conformance::run(&config).await?;
//! assert!(report.success(), "{}", report.human_summary(40));
//! # Ok(()) }
//! ```

pub mod connection;
pub mod coverage;
pub mod driver;
pub mod error;
pub mod http;
pub mod invariants;
pub mod matcher;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod vars;

pub use error::{CoverageError, RunError, ScenarioError};
pub use report::{Outcome, Report};
pub use runner::{RunConfig, run};

include!(concat!(env!("OUT_DIR"), "/scenarios.rs"));
