//! Running a selection of scenarios against one server, or against the
//! nodes of a cluster: the library entry point [`run`].
//!
//! A run first probes every server (register, login, Auth asking for every
//! capability) to learn its limits and capabilities, and refuses to start
//! when the servers disagree (a cluster's nodes must present one service).
//! Then it runs the selected scenarios, a few at a time, each one's actors
//! spread over the servers ([`crate::scenario::assign_nodes`]), so every
//! multi-actor scenario also checks cross-node behaviour. Each scenario gets its own per-run suffix for
//! user and room names, so scenarios never see each other's data and a run
//! can be repeated against a server that keeps everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::driver::{Driver, Environment, Node, RunHalt};
use crate::error::RunError;
use confab_bot_sdk::ServerUrl;

use crate::http::{self, HttpRequest};
use crate::report::{Outcome, Report, ScenarioResult};
use crate::scenario::{self, Scenario};

/// What to run and where.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `http://host:port` base URLs of the servers (one, or the nodes of a
    /// cluster); the first also serves registration and actor-less steps.
    pub servers: Vec<String>,
    /// WebSocket URL override (one server only); derived from the server
    /// URL when `None`.
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
    /// Defaults for one server: every scenario except slow ones.
    pub fn new(server_url: impl Into<String>) -> Self {
        Self::with_servers([server_url.into()])
    }

    /// Defaults for several servers (the nodes of a cluster), in order:
    /// node 0 first.
    pub fn with_servers(servers: impl IntoIterator<Item = String>) -> Self {
        Self {
            servers: servers.into_iter().collect(),
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
    let nodes = nodes_of(config)?;
    let scenarios = select(config)?;
    let run_id = random_suffix(5);
    let mut env = Environment {
        nodes,
        step_timeout: config.step_timeout,
        limits: Value::Null,
        capabilities: Vec::new(),
    };
    let mut seen: Vec<Probed> = Vec::with_capacity(env.nodes.len());
    for (index, node) in env.nodes.iter().enumerate() {
        // A name per node: on a cluster the accounts are shared, so one
        // name registered twice would be a conflict.
        let probe_user = if index == 0 {
            format!("probe-{run_id}")
        } else {
            format!("probe-{run_id}-n{index}")
        };
        let probed = probe(node, config.step_timeout, &probe_user)
            .await
            .map_err(|reason| RunError::Unreachable {
                url: node.server.to_string(),
                reason,
            })?;
        if let Some(first) = seen.first()
            && let Some(difference) = disagreement(first, &probed)
        {
            return Err(RunError::ServersDisagree {
                first: env.nodes[0].server.to_string(),
                other: node.server.to_string(),
                difference,
            });
        }
        seen.push(probed);
    }
    if let Some(first) = seen.into_iter().next() {
        env.limits = first.limits;
        env.capabilities = first.capabilities;
    }
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
    let servers: Vec<String> = env.nodes.iter().map(|n| n.server.to_string()).collect();
    Ok(Report::new(
        servers[0].clone(),
        run_id,
        env.capabilities.clone(),
        results,
    )
    .with_servers(servers))
}

/// Parses the configured servers into nodes (URLs and WebSocket targets).
fn nodes_of(config: &RunConfig) -> Result<Vec<Node>, RunError> {
    if config.servers.is_empty() {
        return Err(RunError::NoServer);
    }
    if config.ws_url.is_some() && config.servers.len() > 1 {
        return Err(RunError::WsUrlWithSeveralServers {
            servers: config.servers.len(),
        });
    }
    config
        .servers
        .iter()
        .map(|url| {
            let server = server_url(url)?;
            let ws_url = config.ws_url.clone().unwrap_or_else(|| server.ws_url());
            let ws_authority = authority_of(&ws_url).ok_or_else(|| RunError::BadServerUrl {
                url: ws_url.clone(),
                reason: "expected ws://host:port/...".into(),
            })?;
            Ok(Node {
                server,
                ws_url,
                ws_authority,
            })
        })
        .collect()
}

/// What one server's probe learned.
#[derive(Debug, Clone, PartialEq)]
struct Probed {
    /// Welcome.limits as proto3 JSON, defaults filled in.
    limits: Value,
    /// Capabilities granted.
    capabilities: Vec<String>,
}

/// How `other` differs from `first`, in words, or `None` when they agree.
/// Scenarios compute with one set of limits and capabilities, so servers
/// that disagree cannot be checked as one service.
fn disagreement(first: &Probed, other: &Probed) -> Option<String> {
    let mut differences = Vec::new();
    let keys: std::collections::BTreeSet<&String> = [&first.limits, &other.limits]
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys())
        .collect();
    for key in keys {
        let (a, b) = (&first.limits[key.as_str()], &other.limits[key.as_str()]);
        if a != b {
            differences.push(format!(
                "Welcome.limits.{key} is {a} on the first and {b} on the other"
            ));
        }
    }
    let mut caps_a = first.capabilities.clone();
    let mut caps_b = other.capabilities.clone();
    caps_a.sort();
    caps_b.sort();
    if caps_a != caps_b {
        differences.push(format!(
            "capabilities are [{}] on the first and [{}] on the other",
            caps_a.join(", "),
            caps_b.join(", ")
        ));
    }
    (!differences.is_empty()).then(|| differences.join("; "))
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

/// Parses one `--server`: the SDK's [`ServerUrl`], over plain HTTP only,
/// because raw-byte scenarios (stalled heads, lying lengths) speak TCP.
fn server_url(url: &str) -> Result<ServerUrl, RunError> {
    let bad = |reason: String| RunError::BadServerUrl {
        url: url.to_owned(),
        reason,
    };
    let server = ServerUrl::parse(url).map_err(|err| bad(err.to_string()))?;
    if server.is_tls() {
        return Err(bad("https is not supported by the suite; run it against the server's plain http listener (e.g. on loopback)".to_owned()));
    }
    Ok(server)
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
            // The layout the scenario started with (a `node:` step may
            // have moved an actor since).
            nodes: if env.nodes.len() > 1 {
                scenario::assign_nodes(scenario, env.nodes.len())
                    .into_iter()
                    .map(|(actor, node)| {
                        (actor, format!("node {node} ({})", env.node(node).server))
                    })
                    .collect()
            } else {
                Default::default()
            },
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
async fn probe(node: &Node, step_timeout: Duration, username: &str) -> Result<Probed, String> {
    use crate::connection::{Connection, Event, OpenOptions, Opened};
    use confab_protocol::wire::{ClientFrame, server_frame};

    let password = format!("pw-{username}-secret");
    let credentials = json!({"username": username, "password": password})
        .to_string()
        .into_bytes();
    let post = |path: &'static str, body: Vec<u8>| {
        let server = node.server.clone();
        let timeout = step_timeout;
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
        server: node.server.clone(),
        ws_url: node.ws_url.clone(),
        connect_to: node.ws_authority.clone(),
        subprotocols: vec![confab_protocol::SUBPROTOCOL.to_owned()],
        origin: None,
        timeout: step_timeout,
    };
    let mut connection = match Connection::open(&options)
        .await
        .map_err(|e| e.to_string())?
    {
        Opened::Upgraded(c) => c,
        Opened::Refused { status, .. } => {
            return Err(format!(
                "WebSocket upgrade at {} refused with HTTP {status}",
                node.ws_url
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
    match connection.next_event(step_timeout).await {
        Some(Event::Frame(frame)) => match frame.body {
            Some(server_frame::Body::Welcome(welcome)) => {
                let mut probed = Probed {
                    capabilities: welcome.capabilities.clone(),
                    limits: serde_json::to_value(welcome.limits.unwrap_or_default())
                        .unwrap_or(Value::Null),
                };
                // Fill limits the server left at their proto3 default (0),
                // so scenarios can always compute with them.
                if let Value::Object(map) = &mut probed.limits {
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
                Ok(probed)
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
    fn server_urls() {
        let u = server_url("http://127.0.0.1:7420").unwrap();
        assert_eq!((u.host(), u.port(), u.prefix()), ("127.0.0.1", 7420, ""));
        assert_eq!(u.ws_url(), "ws://127.0.0.1:7420/v1/ws");
        let u = server_url("http://localhost/chat/").unwrap();
        assert_eq!(u.ws_url(), "ws://localhost:80/chat/v1/ws");
        assert!(server_url("ftp://x").is_err());
        assert!(
            server_url("https://x:1")
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        assert!(server_url("http://x:port").is_err());
    }

    #[test]
    fn servers_are_parsed_in_order_and_misuse_is_refused() {
        let config = RunConfig::with_servers([
            "http://127.0.0.1:7420".to_owned(),
            "http://127.0.0.1:7421/".to_owned(),
        ]);
        let nodes = nodes_of(&config).unwrap();
        let urls: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n.server.to_string(), n.ws_authority.clone()))
            .collect();
        assert_eq!(
            urls,
            [
                ("http://127.0.0.1:7420".into(), "127.0.0.1:7420".into()),
                ("http://127.0.0.1:7421".into(), "127.0.0.1:7421".into())
            ]
        );
        assert_eq!(nodes[1].ws_url, "ws://127.0.0.1:7421/v1/ws");
        assert!(matches!(
            nodes_of(&RunConfig::with_servers(Vec::new())),
            Err(RunError::NoServer)
        ));
        let mut overridden = config.clone();
        overridden.ws_url = Some("ws://127.0.0.1:9/v1/ws".into());
        let err = nodes_of(&overridden).unwrap_err();
        assert!(
            matches!(&err, RunError::WsUrlWithSeveralServers { servers: 2 }),
            "{err}"
        );
        // One server keeps its override.
        let mut single = RunConfig::new("http://127.0.0.1:7420");
        single.ws_url = Some("ws://127.0.0.1:9/v1/ws".into());
        assert_eq!(nodes_of(&single).unwrap()[0].ws_authority, "127.0.0.1:9");
    }

    #[test]
    fn disagreements_name_each_differing_limit_and_capability() {
        let a = Probed {
            limits: json!({"maxTextBytes": 4096, "sendBurst": 20}),
            capabilities: vec!["typing".into(), "presence".into()],
        };
        // Capability order does not matter.
        let same = Probed {
            capabilities: vec!["presence".into(), "typing".into()],
            ..a.clone()
        };
        assert_eq!(disagreement(&a, &same), None);
        let b = Probed {
            limits: json!({"maxTextBytes": 1000, "sendBurst": 20, "maxFrameBytes": 9}),
            capabilities: vec!["typing".into()],
        };
        let text = disagreement(&a, &b).unwrap();
        assert!(
            text.contains("Welcome.limits.maxTextBytes is 4096 on the first and 1000 on the other"),
            "{text}"
        );
        assert!(
            text.contains("Welcome.limits.maxFrameBytes is null on the first and 9"),
            "{text}"
        );
        assert!(!text.contains("sendBurst"), "{text}");
        assert!(
            text.contains(
                "capabilities are [presence, typing] on the first and [typing] on the other"
            ),
            "{text}"
        );
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
