//! Running a selection of scenarios against one server: the library entry
//! point [`run`].
//!
//! A run first probes the server (register, login, Auth asking for every
//! capability) to learn its limits and capabilities, then runs the selected
//! scenarios, a few at a time. Each scenario gets its own per-run suffix for
//! user and room names, so scenarios never see each other's data and a run
//! can be repeated against a server that keeps everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::driver::{Driver, Environment, RunHalt};
use crate::error::RunError;
use crate::http::{self, HttpRequest, ServerUrl};
use crate::report::{Outcome, Report, ScenarioResult};
use crate::scenario::{self, Scenario};

/// What to run and where.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `http://host:port` base URL of the server.
    pub server_url: String,
    /// WebSocket URL override; derived from `server_url` when `None`.
    pub ws_url: Option<String>,
    /// Select scenarios by name substring or spec section / rule id; any
    /// filter matching selects (empty: all).
    pub filter: Vec<String>,
    /// Deadline of one step waiting for the server.
    pub step_timeout: Duration,
    /// Deadline of one whole scenario.
    pub scenario_timeout: Duration,
    /// Scenarios run at once.
    pub jobs: usize,
    /// Also run scenarios marked slow (they wait for server timers).
    pub include_slow: bool,
    /// Scenarios to run instead of the embedded suite.
    pub scenarios: Option<Vec<Scenario>>,
}

impl RunConfig {
    /// Defaults for `server_url`: every scenario except slow ones.
    pub fn new(server_url: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            ws_url: None,
            filter: Vec::new(),
            step_timeout: Duration::from_secs(10),
            scenario_timeout: Duration::from_secs(120),
            jobs: 4,
            include_slow: false,
            scenarios: None,
        }
    }
}

/// Selects scenarios from the embedded suite (or `config.scenarios`).
pub fn select(config: &RunConfig) -> Result<Vec<Scenario>, RunError> {
    let all = match &config.scenarios {
        Some(s) => s.clone(),
        None => scenario::embedded()?,
    };
    if config.filter.is_empty() {
        return Ok(all);
    }
    let chosen: Vec<Scenario> = all
        .into_iter()
        .filter(|s| config.filter.iter().any(|f| s.matches_filter(f)))
        .collect();
    if chosen.is_empty() {
        return Err(RunError::EmptySelection {
            filter: config.filter.join(","),
        });
    }
    Ok(chosen)
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Runs the selected scenarios and returns the verdicts.
pub async fn run(config: &RunConfig) -> Result<Report, RunError> {
    let server = ServerUrl::parse(&config.server_url)?;
    let scenarios = select(config)?;
    let ws_url = config.ws_url.clone().unwrap_or_else(|| server.ws_url());
    let ws_authority = authority_of(&ws_url).ok_or_else(|| RunError::BadServerUrl {
        url: ws_url.clone(),
        reason: "expected ws://host:port/...".into(),
    })?;
    let run_id = random_suffix(5);
    let mut env = Environment {
        server: server.clone(),
        ws_url,
        ws_authority,
        step_timeout: config.step_timeout,
        limits: Value::Null,
        capabilities: Vec::new(),
    };
    probe(&mut env, &run_id)
        .await
        .map_err(|reason| RunError::Unreachable {
            url: server.base(),
            reason,
        })?;
    let env = Arc::new(env);
    let jobs = u32::try_from(config.jobs.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(1);
    let semaphore = Arc::new(Semaphore::new(jobs as usize));
    let mut tasks = JoinSet::new();
    let total = scenarios.len();
    for (index, scenario) in scenarios.into_iter().enumerate() {
        let env = Arc::clone(&env);
        let semaphore = Arc::clone(&semaphore);
        // Base-36 index keeps names short: `alice-k3x9q0a`.
        let suffix = format!("{run_id}{}", base36(index));
        let include_slow = config.include_slow;
        let scenario_timeout = config.scenario_timeout;
        let permits = if scenario.exclusive { jobs } else { 1 };
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail. An
            // exclusive scenario takes every permit and so runs alone.
            let _permit = semaphore.acquire_many_owned(permits).await.ok();
            let started = Instant::now();
            let outcome = run_one(&env, &scenario, &suffix, include_slow, scenario_timeout).await;
            (index, result_of(&scenario, outcome, started.elapsed()))
        });
    }
    let mut results: Vec<Option<ScenarioResult>> = (0..total).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            // A panicking scenario task is a bug in the suite; surface it.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let results = results.into_iter().flatten().collect();
    Ok(Report::new(
        server.base(),
        run_id,
        env.capabilities.clone(),
        results,
    ))
}

fn base36(mut n: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![DIGITS[n % 36], DIGITS[(n / 36) % 36]];
    n /= 36 * 36;
    while n > 0 {
        out.push(DIGITS[n % 36]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn authority_of(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let authority = rest.split('/').next()?;
    if authority.contains(':') {
        Some(authority.to_owned())
    } else {
        Some(format!("{authority}:80"))
    }
}

async fn run_one(
    env: &Environment,
    scenario: &Scenario,
    suffix: &str,
    include_slow: bool,
    scenario_timeout: Duration,
) -> Outcome {
    if scenario.slow && !include_slow {
        return Outcome::Skipped {
            reason: "slow: waits for a server timer; run with --slow".into(),
        };
    }
    if let Some(cap) = scenario
        .requires
        .iter()
        .find(|c| !env.capabilities.contains(c))
    {
        return Outcome::Skipped {
            reason: format!(
                "server did not grant capability {cap:?} in Welcome (granted: [{}])",
                env.capabilities.join(", ")
            ),
        };
    }
    let driver = Driver::new(env, scenario, suffix);
    match tokio::time::timeout(scenario_timeout, driver.run()).await {
        Ok(Ok(())) => Outcome::Passed,
        Ok(Err(RunHalt::Skipped(reason))) => Outcome::Skipped { reason },
        Ok(Err(RunHalt::Failed(failure))) => Outcome::Failed(*failure),
        Err(_) => Outcome::Failed(crate::report::Failure {
            step: 0,
            step_description: "whole scenario".into(),
            message: format!("did not finish within {} s", scenario_timeout.as_secs()),
            expected: None,
            actual: None,
            transcript: Vec::new(),
        }),
    }
}

fn result_of(scenario: &Scenario, outcome: Outcome, elapsed: Duration) -> ScenarioResult {
    ScenarioResult {
        name: scenario.name.clone(),
        file: scenario.file.clone(),
        summary: scenario.summary.clone(),
        covers: scenario.covers.clone(),
        outcome,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Registers a probe user and authenticates asking for every capability, to
/// learn the server's limits and capabilities (§3.4, §6.3).
async fn probe(env: &mut Environment, run_id: &str) -> Result<(), String> {
    use crate::connection::{Connection, Event, OpenOptions, Opened};
    use confab_protocol::wire::{ClientFrame, server_frame};

    let username = format!("probe-{run_id}");
    let password = format!("pw-{run_id}-probe-secret");
    let credentials = json!({"username": username, "password": password})
        .to_string()
        .into_bytes();
    let post = |path: &'static str, body: Vec<u8>| {
        let server = env.server.clone();
        let timeout = env.step_timeout;
        async move {
            http::send(
                &server,
                HttpRequest::new("POST", path, Some(body), None),
                timeout,
            )
            .await
            .map_err(|e| e.to_string())
        }
    };
    let registered = post("/v1/register", credentials.clone()).await?;
    if registered.status != 201 {
        return Err(format!(
            "POST /v1/register answered {} (expected 201)",
            registered.status
        ));
    }
    let login = post("/v1/login", credentials).await?;
    if login.status != 200 {
        return Err(format!(
            "POST /v1/login answered {} (expected 200)",
            login.status
        ));
    }
    let token = login.body_json()["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let options = OpenOptions {
        ws_url: env.ws_url.clone(),
        connect_to: env.ws_authority.clone(),
        subprotocols: vec![confab_protocol::SUBPROTOCOL.to_owned()],
        origin: None,
        timeout: env.step_timeout,
    };
    let mut connection = match Connection::open(&options)
        .await
        .map_err(|e| e.to_string())?
    {
        Opened::Upgraded(c) => c,
        Opened::Refused { status, .. } => {
            return Err(format!(
                "WebSocket upgrade at {} refused with HTTP {status}",
                env.ws_url
            ));
        }
    };
    let auth: ClientFrame = serde_json::from_value(json!({
        "requestId": "1",
        "auth": {"token": token, "capabilities": confab_protocol::capability::ALL, "clientName": "confab-conformance/0.1"}
    }))
    .map_err(|e| e.to_string())?;
    connection
        .send_frame(&auth)
        .await
        .map_err(|e| e.to_string())?;
    match connection.next_event(env.step_timeout).await {
        Some(Event::Frame(frame)) => match frame.body {
            Some(server_frame::Body::Welcome(welcome)) => {
                env.capabilities = welcome.capabilities.clone();
                env.limits =
                    serde_json::to_value(welcome.limits.unwrap_or_default()).unwrap_or(Value::Null);
                // Fill limits the server left at their proto3 default (0),
                // so scenarios can always compute with them.
                if let Value::Object(map) = &mut env.limits {
                    for key in [
                        "maxFrameBytes",
                        "maxTextBytes",
                        "maxHistoryPage",
                        "maxResumeReplay",
                        "sendRatePerSec",
                        "sendBurst",
                        "heartbeatIntervalMs",
                        "idleTimeoutMs",
                        "typingTtlMs",
                        "outboundQueueFrames",
                    ] {
                        map.entry(key).or_insert(Value::from(0));
                    }
                }
                connection.start_close().await.ok();
                Ok(())
            }
            other => Err(format!("expected Welcome after Auth, got {other:?}")),
        },
        other => Err(format!("expected Welcome after Auth, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_authorities() {
        assert_eq!(base36(0), "00");
        assert_eq!(base36(37), "11");
        assert_eq!(random_suffix(5).len(), 5);
        assert_eq!(
            authority_of("ws://127.0.0.1:7420/v1/ws").as_deref(),
            Some("127.0.0.1:7420")
        );
        assert_eq!(
            authority_of("ws://example/v1/ws").as_deref(),
            Some("example:80")
        );
        assert_eq!(authority_of("wss://x"), None);
    }

    #[test]
    fn filters_select_or_complain() {
        let mut config = RunConfig::new("http://127.0.0.1:1");
        config.filter = vec!["no-such-scenario-anywhere".into()];
        assert!(matches!(
            select(&config),
            Err(RunError::EmptySelection { .. })
        ));
    }
}
