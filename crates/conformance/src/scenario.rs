//! The scenario format: what a file under `scenarios/` may say.
//!
//! A scenario is data, never code. It names the spec rules it checks
//! (`covers`), the optional capabilities it needs (`requires`), the users and
//! rooms it creates (each gets a per-run suffix, so a server that keeps data
//! can be tested again and again), its actors (one WebSocket connection each)
//! and a script of steps. Every step is a YAML map with exactly one verb key
//! (`send`, `recv`, `barrier`, ...) plus the modifiers that verb allows; the
//! loader rejects anything else with a message that says what to write.
//!
//! The format is described for scenario authors in the crate README.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::error::ScenarioError;
use crate::proxy::FaultPlan;

/// One loaded, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Unique kebab-case name.
    pub name: String,
    /// File it came from (for messages).
    pub file: String,
    /// One sentence: what passing proves.
    pub summary: String,
    /// Spec rule ids (`R-8.3.1`) or sections (`8.3`) checked.
    pub covers: Vec<String>,
    /// Optional capabilities (§3.4) without which the scenario is skipped.
    pub requires: Vec<String>,
    /// Takes long (waits for a server timer); run only when asked.
    pub slow: bool,
    /// Runs alone: it uses up a server-wide or per-address resource (e.g.
    /// connection slots, §3.1) that concurrent scenarios would run into.
    pub exclusive: bool,
    /// Logical user names, registered with a per-run suffix.
    pub users: Vec<String>,
    /// Logical user names that get a name but are never registered.
    pub unregistered: Vec<String>,
    /// Logical room names, each given a per-run suffix.
    pub rooms: Vec<String>,
    /// Actors by name.
    pub actors: BTreeMap<String, ActorSpec>,
    /// Actor names in declaration order (the `actors` map as written, or
    /// `users` for default actors): the order [`assign_nodes`] spreads.
    pub actor_order: Vec<String>,
    /// The script.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// The spec sections this scenario touches, e.g. `8.5` for `R-8.5.2`.
    pub fn sections(&self) -> BTreeSet<String> {
        self.covers.iter().map(|c| section_of(c)).collect()
    }

    /// Whether `filter` selects this scenario: a substring of its name, or a
    /// section / rule prefix of something it covers (`8.5` selects `R-8.5.2`
    /// and `8.5.2`, not `8.50.1`).
    pub fn matches_filter(&self, filter: &str) -> bool {
        let filter = filter.trim();
        if filter.is_empty() || self.name.contains(filter) {
            return true;
        }
        let wanted = filter.trim_start_matches("R-").trim_start_matches('§');
        self.covers.iter().any(|c| {
            let c = c.trim_start_matches("R-");
            c == wanted || c.starts_with(&format!("{wanted}."))
        })
    }
}

/// `R-8.5.2` -> `8.5`; `8.5` -> `8.5`; `R-3.2` -> `3`.
pub fn section_of(cover: &str) -> String {
    let id = cover.trim_start_matches("R-");
    if !cover.starts_with("R-") {
        return id.to_owned();
    }
    match id.rsplit_once('.') {
        Some((section, _)) => section.to_owned(),
        None => id.to_owned(),
    }
}

/// How one actor connects.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActorSpec {
    /// Logical user it logs in as; none for anonymous pre-auth actors.
    #[serde(default)]
    pub user: Option<String>,
    /// Capabilities requested in Auth.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Frame kinds (JSON body keys, e.g. `presence`) this actor never matches.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Route this actor's connections through a fault-injecting proxy.
    #[serde(default)]
    pub via_proxy: Option<FaultPlan>,
    /// Pin the actor to one server of a multi-server run: a 0-based index
    /// taken modulo the number of servers, so with one server every index
    /// is that server. Unpinned actors are spread round-robin (see
    /// [`assign_nodes`]).
    #[serde(default)]
    pub node: Option<usize>,
}

/// The server index of every actor of `scenario` in a run against `servers`
/// servers: an actor's `node` pin (modulo `servers`) if it has one, else its
/// position in declaration order modulo `servers`, so the 1st actor is on
/// server 0, the 2nd on server 1, and so on. Pure and deterministic, so a
/// failure replays on the same layout.
pub fn assign_nodes(scenario: &Scenario, servers: usize) -> BTreeMap<String, usize> {
    let servers = servers.max(1);
    scenario
        .actor_order
        .iter()
        .enumerate()
        .map(|(position, name)| {
            let pinned = scenario.actors.get(name).and_then(|spec| spec.node);
            (name.clone(), pinned.unwrap_or(position) % servers)
        })
        .collect()
}

/// How a connection is closed by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectMode {
    /// Close frame 1000, then wait for the server's close.
    Clean,
    /// Drop the TCP connection without a close frame.
    Abrupt,
}

/// A raw WebSocket message for bad-input steps.
#[derive(Debug, Clone, PartialEq)]
pub enum RawPayload {
    /// A text message (confab.v1 allows binary only).
    Text(String),
    /// A text message whose payload is these bytes, given in hex, valid
    /// UTF-8 or not (§3.3: invalid UTF-8 closes with 1007).
    TextBytes(Vec<u8>),
    /// Binary bytes given in hex.
    Hex(Vec<u8>),
    /// A binary message of this many zero bytes (expression).
    Zeros(Value),
    /// A valid `Ping` ClientFrame padded with an unknown field to exactly
    /// `size` bytes (expression), with this request id (§12.2, §4.4).
    PaddedPing {
        /// Total encoded size.
        size: Value,
        /// Request id of the Ping.
        request_id: u64,
    },
}

/// Proxy control actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Cut every live connection of the actor's proxy mid-stream.
    Cut,
    /// Stop forwarding in both directions (blackhole) until `release`.
    Hold,
    /// Stop forwarding server-to-client only: the actor stops reading.
    HoldServer,
    /// Stop forwarding client-to-server only: the server hears nothing.
    HoldClient,
    /// Resume forwarding.
    Release,
    /// Cut the live connection after this many more server-to-client bytes.
    CutAfterServerBytes(u64),
    /// Cut the live connection after this many more client-to-server bytes.
    CutAfterClientBytes(u64),
}

/// An HTTP request of an `http` step (§5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Method; POST unless said.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path below the server URL, e.g. `/v1/register`.
    pub path: String,
    /// JSON body (variables substituted).
    #[serde(default)]
    pub body: Option<Value>,
    /// A body sent verbatim instead of JSON (for invalid_request tests).
    #[serde(default)]
    pub raw_body: Option<String>,
    /// `Authorization: Bearer` token (variables substituted).
    #[serde(default)]
    pub bearer: Option<String>,
    /// `Content-Type` instead of `application/json`; `""` sends none.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `Content-Length` to announce instead of the body's real length.
    #[serde(default)]
    pub declared_length: Option<u64>,
}

fn default_method() -> String {
    "POST".to_owned()
}

/// One accepted reply shape of a `flood` and how many of it may come.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyCount {
    /// Matcher for the reply frame.
    #[serde(rename = "match")]
    pub matcher: Value,
    /// Fewest replies that must match (expression).
    #[serde(default)]
    pub min: Option<Value>,
    /// Most replies that may match (expression).
    #[serde(default)]
    pub max: Option<Value>,
}

/// What a `check_invariants` step checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantSpec {
    /// Actor (a member of every room) that pages the authoritative history.
    pub reader: String,
    /// Rooms to check.
    pub rooms: Vec<String>,
    /// Actors that must have received every message of those rooms sent
    /// after they joined (no loss), over all their connections.
    #[serde(default)]
    pub complete: Vec<String>,
}

/// Matchers for the frames a step expects, with their options.
#[derive(Debug, Clone, Default)]
pub struct FrameExpectation {
    /// Matchers in order (or as a set when `unordered`).
    pub frames: Vec<Value>,
    /// Whether the frames may arrive in any order.
    pub unordered: bool,
    /// Step timeout override (expression, milliseconds).
    pub timeout_ms: Option<Value>,
    /// Frame kinds skipped by this step in addition to the actor's.
    pub ignore: Vec<String>,
}

/// One step of a script.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Step {
    /// Log in if needed, open the socket, send Auth, expect Welcome.
    Connect {
        /// Actors to connect, in order.
        actors: Vec<String>,
        /// Frames expected after Auth (default: one Welcome).
        expect: FrameExpectation,
        /// Move the actors to this server first (index modulo the number
        /// of servers); default: each stays on its own.
        node: Option<usize>,
    },
    /// HTTP login of the actor's user (a fresh token).
    Login {
        /// The actor.
        actor: String,
    },
    /// Open a WebSocket without authenticating; checks the upgrade status.
    Open {
        /// The actor.
        actor: String,
        /// Subprotocols offered (default `[confab.v1]`).
        subprotocols: Option<Vec<String>>,
        /// Origin header to send.
        origin: Option<String>,
        /// Appended to the WebSocket URL (e.g. `?token=...`, §6.1).
        query: Option<String>,
        /// Expected HTTP status of the upgrade (default 101).
        expect_status: u16,
        /// Matcher for the JSON body of a refused upgrade.
        expect_body: Option<Value>,
    },
    /// Send one frame (canonical proto3 JSON), then expect frames.
    Send {
        /// The actor.
        actor: String,
        /// The frame; `requestId` is assigned when absent.
        frame: Value,
        /// Variable bound to the request id (`$req` is always bound).
        bind: Option<String>,
        /// Raw bytes appended to the encoded frame. Protobuf merges a
        /// repeated message field, so this can set values JSON cannot
        /// express, e.g. an unknown enum number (§4.4).
        append_hex: Option<Vec<u8>>,
        /// What must follow.
        expect: FrameExpectation,
    },
    /// Expect frames on an actor's connection.
    Recv {
        /// The actor.
        actor: String,
        /// What must arrive.
        expect: FrameExpectation,
    },
    /// Ping each actor and require its Pong to be the next frame (§12.1):
    /// nothing unexpected is pending.
    Barrier {
        /// Actors to check.
        actors: Vec<String>,
        /// Frame kinds skipped.
        ignore: Vec<String>,
    },
    /// Send a raw WebSocket message.
    Raw {
        /// The actor.
        actor: String,
        /// What to send.
        payload: RawPayload,
    },
    /// Expect the server to close the connection.
    ExpectClose {
        /// The actor.
        actor: String,
        /// Expected close code; `None` accepts any close, including no close frame.
        code: Option<u16>,
        /// Skip (but record) frames that arrive before the close.
        skip_frames: bool,
        /// Timeout override (expression, milliseconds).
        timeout_ms: Option<Value>,
    },
    /// Close the actor's connection.
    Disconnect {
        /// The actor.
        actor: String,
        /// How.
        mode: DisconnectMode,
    },
    /// Reconnect, authenticate and send a Resume built from the actor's
    /// tracked positions, then expect frames (replays and Resumed).
    Resume {
        /// The actor.
        actor: String,
        /// Restrict to these rooms (default: every room the actor tracks).
        rooms: Option<Vec<String>>,
        /// Explicit positions instead of tracked ones.
        positions: Option<Vec<Value>>,
        /// What must follow the Resume.
        expect: FrameExpectation,
        /// Reconnect on this server (index modulo the number of servers)
        /// instead of the actor's own: "resume on another node".
        node: Option<usize>,
    },
    /// One HTTP request.
    Http {
        /// The request.
        request: HttpSpec,
        /// Expected status.
        expect_status: u16,
        /// Matcher for the JSON body.
        expect_body: Option<Value>,
        /// Matchers for response headers (lowercase names).
        expect_headers: BTreeMap<String, Value>,
        /// Variable bound to the body (JSON, or a string when not JSON).
        capture_body: Option<String>,
        /// Repeat the request until it answers this status (e.g. 429 for
        /// throttling, whose threshold is implementation-defined).
        repeat_until_status: Option<u16>,
        /// Most attempts when repeating.
        max_attempts: u32,
    },
    /// `POST /v1/logout` with the actor's token.
    Logout {
        /// The actor.
        actor: String,
        /// Expected status (default 204).
        expect_status: u16,
    },
    /// Send `count` frames back to back (template with `${i}`, 1-based),
    /// then collect one reply per frame; pushes stay queued for later steps.
    Flood {
        /// The actor.
        actor: String,
        /// Frame template.
        frame: Value,
        /// How many (expression).
        count: Value,
        /// Accepted replies and their counts; default: every reply is a SendAck.
        replies: Vec<ReplyCount>,
        /// Tolerate the connection breaking (fault scenarios).
        allow_disconnect: bool,
        /// The frames get no reply on success (SetTyping): send only, and
        /// follow with a barrier. With `replies`, a Ping after the frames
        /// bounds the wait and the refusals that came before it are counted.
        no_replies: bool,
        /// Variable prefix for `.sent`, `.acked`, `.replied`.
        bind: Option<String>,
        /// Timeout override.
        timeout_ms: Option<Value>,
    },
    /// Receive `count` Message pushes of one room, seq consecutive.
    RecvMessages {
        /// The actor.
        actor: String,
        /// The room.
        room: String,
        /// How many (expression).
        count: Value,
        /// Timeout override.
        timeout_ms: Option<Value>,
        /// Kinds skipped.
        ignore: Vec<String>,
    },
    /// Discard frames of the given kinds until one matching `until` arrives.
    Drain {
        /// The actor.
        actor: String,
        /// Kinds that may be discarded.
        kinds: Vec<String>,
        /// The frame that ends the drain.
        until: Value,
        /// Timeout override.
        timeout_ms: Option<Value>,
    },
    /// Resend every SendMessage of the actor that got no SendAck, with the
    /// same client_msg_id, and collect the acks (§8.5).
    ResendUnacked {
        /// The actor.
        actor: String,
        /// Variable prefix for `.resent`, `.duplicates`.
        bind: Option<String>,
        /// Timeout override.
        timeout_ms: Option<Value>,
    },
    /// Wait until the connection has received `count` WebSocket Ping
    /// control frames in total (§12.1 heartbeats).
    ExpectWsPings {
        /// The actor.
        actor: String,
        /// How many pings in total (expression).
        count: Value,
        /// Timeout override.
        timeout_ms: Option<Value>,
    },
    /// Wait (wall clock) until the actor's token has expired, per its
    /// login's `expires_at_ms`; skip the scenario when that is further away
    /// than `max_wait_ms` (the reference lifetime is 30 days).
    AwaitTokenExpiry {
        /// The actor whose login set the expiry.
        actor: String,
        /// Longest acceptable wait, in milliseconds.
        max_wait_ms: u64,
    },
    /// Opens TCP connections one after another, each answering one
    /// `POST /v1/logout` without a token (401) and kept open, until the
    /// server refuses one at admission (§3.1); checks that answer. Skips the
    /// scenario when `count` connections are all admitted (the cap is higher).
    TcpHold {
        /// Name of the held set, for `tcp_release` and `<name>.held`.
        name: String,
        /// Most connections to open (expression).
        count: Value,
        /// Status of the refusal.
        expect_status: u16,
        /// Matcher for the refusal's JSON body.
        expect_body: Option<Value>,
        /// Matchers for the refusal's headers (lowercase names).
        expect_headers: BTreeMap<String, Value>,
    },
    /// Opens a TCP connection, sends these bytes (maybe none: a silent
    /// client, a partial request head or body) and expects the server to
    /// close it by itself within the timeout (§3.1 deadlines). Whatever the
    /// server answers before closing must be an HTTP response with an
    /// ErrorBody.
    TcpStall {
        /// Bytes to send, as text (variables substituted).
        send: String,
        /// Timeout override (expression, milliseconds).
        timeout_ms: Option<Value>,
    },
    /// Closes the connections a `tcp_hold` kept.
    TcpRelease {
        /// Name of the held set.
        name: String,
    },
    /// Control the actor's fault proxy.
    Fault {
        /// The actor.
        actor: String,
        /// What to do.
        action: FaultAction,
    },
    /// Structural invariants over everything sent, acked and received.
    CheckInvariants(InvariantSpec),
    /// Bind variables from expressions.
    Set(BTreeMap<String, Value>),
}

/// ` on node N` for a step that moves its actor, else nothing.
fn on_node(node: Option<usize>) -> String {
    node.map(|n| format!(" on node {n}")).unwrap_or_default()
}

impl Step {
    /// Short description for reports: the verb and its actor.
    pub fn describe(&self) -> String {
        match self {
            Step::Connect { actors, node, .. } => {
                format!("connect {}{}", actors.join(", "), on_node(*node))
            }
            Step::Login { actor } => format!("login {actor}"),
            Step::Open { actor, .. } => format!("open {actor}"),
            Step::Send { actor, frame, .. } => {
                format!("send {actor} {}", body_key(frame).unwrap_or("frame"))
            }
            Step::Recv { actor, .. } => format!("recv {actor}"),
            Step::Barrier { actors, .. } => format!("barrier {}", actors.join(", ")),
            Step::Raw { actor, .. } => format!("raw {actor}"),
            Step::ExpectClose { actor, .. } => format!("expect_close {actor}"),
            Step::Disconnect { actor, .. } => format!("disconnect {actor}"),
            Step::Resume { actor, node, .. } => format!("resume {actor}{}", on_node(*node)),
            Step::Http { request, .. } => format!("http {} {}", request.method, request.path),
            Step::Logout { actor, .. } => format!("logout {actor}"),
            Step::Flood { actor, .. } => format!("flood {actor}"),
            Step::RecvMessages { actor, .. } => format!("recv_messages {actor}"),
            Step::Drain { actor, .. } => format!("drain {actor}"),
            Step::ResendUnacked { actor, .. } => format!("resend_unacked {actor}"),
            Step::Fault { actor, action } => format!("fault {actor} {action:?}"),
            Step::TcpHold { name, .. } => format!("tcp_hold {name}"),
            Step::TcpRelease { name } => format!("tcp_release {name}"),
            Step::TcpStall { .. } => "tcp_stall".to_owned(),
            Step::ExpectWsPings { actor, .. } => format!("expect_ws_pings {actor}"),
            Step::AwaitTokenExpiry { actor, .. } => format!("await_token_expiry {actor}"),
            Step::CheckInvariants(spec) => format!("check_invariants {}", spec.rooms.join(", ")),
            Step::Set(_) => "set".to_owned(),
        }
    }
}

/// The body key of a frame in JSON form (`sendMessage`), skipping `requestId`.
pub fn body_key(frame: &Value) -> Option<&str> {
    frame
        .as_object()?
        .keys()
        .find(|k| k.as_str() != "requestId" && k.as_str() != "request_id")
        .map(String::as_str)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    summary: String,
    covers: Vec<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    slow: bool,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    unregistered: Vec<String>,
    #[serde(default)]
    rooms: Vec<String>,
    /// Kept as a YAML mapping, which preserves declaration order (the
    /// order actors are spread over servers in).
    #[serde(default)]
    actors: serde_yaml_ng::Mapping,
    steps: Vec<Value>,
}

/// Every verb, with the modifiers it accepts (`note` is always allowed).
const VERBS: &[(&str, &[&str])] = &[
    ("connect", &["expect", "unordered", "timeout_ms", "node"]),
    ("login", &[]),
    (
        "open",
        &[
            "subprotocols",
            "origin",
            "query",
            "expect_status",
            "expect_body",
        ],
    ),
    (
        "send",
        &[
            "frame",
            "as",
            "expect",
            "unordered",
            "timeout_ms",
            "ignore",
            "append_hex",
        ],
    ),
    ("recv", &["frames", "unordered", "timeout_ms", "ignore"]),
    ("barrier", &["ignore"]),
    ("raw", &["text", "hex", "zeros", "padded_ping", "text_hex"]),
    ("expect_close", &["code", "skip_frames", "timeout_ms"]),
    ("disconnect", &["mode"]),
    (
        "resume",
        &[
            "rooms",
            "positions",
            "expect",
            "unordered",
            "timeout_ms",
            "ignore",
            "node",
        ],
    ),
    (
        "http",
        &[
            "expect_status",
            "expect_body",
            "expect_headers",
            "capture_body",
            "repeat_until_status",
            "max_attempts",
        ],
    ),
    ("logout", &["expect_status"]),
    (
        "flood",
        &[
            "frame",
            "count",
            "replies",
            "allow_disconnect",
            "as",
            "timeout_ms",
            "no_replies",
        ],
    ),
    ("recv_messages", &["room", "count", "timeout_ms", "ignore"]),
    ("drain", &["kinds", "until", "timeout_ms"]),
    ("resend_unacked", &["as", "timeout_ms"]),
    ("fault", &["action", "bytes"]),
    ("expect_ws_pings", &["count", "timeout_ms"]),
    ("await_token_expiry", &["max_wait_ms"]),
    (
        "tcp_hold",
        &["count", "expect_status", "expect_body", "expect_headers"],
    ),
    ("tcp_release", &[]),
    ("tcp_stall", &["timeout_ms"]),
    ("check_invariants", &[]),
    ("set", &[]),
];

/// Parses and validates one scenario file.
pub fn parse_scenario(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let raw: ScenarioFile =
        serde_yaml_ng::from_str(text).map_err(|source| ScenarioError::Yaml {
            file: file.to_owned(),
            source,
        })?;
    let invalid = |message: String| ScenarioError::Invalid {
        file: file.to_owned(),
        message,
    };
    if raw.covers.is_empty() {
        return Err(invalid(
            "`covers` is empty; name the spec rules this scenario checks".into(),
        ));
    }
    let mut actors = BTreeMap::new();
    let mut actor_order = Vec::new();
    for (key, value) in raw.actors {
        let Some(name) = key.as_str().map(str::to_owned) else {
            return Err(invalid(format!(
                "actor names are strings; {key:?} is not one"
            )));
        };
        let spec: ActorSpec =
            serde_yaml_ng::from_value(value).map_err(|source| ScenarioError::Yaml {
                file: file.to_owned(),
                source,
            })?;
        actor_order.push(name.clone());
        actors.insert(name, spec);
    }
    if actors.is_empty() {
        // Default: one actor per registered user, named like the user.
        for user in &raw.users {
            actor_order.push(user.clone());
            actors.insert(
                user.clone(),
                ActorSpec {
                    user: Some(user.clone()),
                    ..ActorSpec::default()
                },
            );
        }
    }
    for (name, spec) in &actors {
        if let Some(user) = &spec.user
            && !raw.users.contains(user)
            && !raw.unregistered.contains(user)
        {
            return Err(invalid(format!(
                "actor {name:?} logs in as {user:?}, which is not listed in `users`"
            )));
        }
    }
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (index, value) in raw.steps.iter().enumerate() {
        let step = parse_step(value).map_err(|m| invalid(format!("step {}: {m}", index + 1)))?;
        for actor in step_actors(&step) {
            if !actors.contains_key(actor) {
                return Err(invalid(format!(
                    "step {}: unknown actor {actor:?}; declare it under `actors` or `users`",
                    index + 1
                )));
            }
        }
        steps.push(step);
    }
    Ok(Scenario {
        name: raw.name,
        file: file.to_owned(),
        summary: raw.summary,
        covers: raw.covers,
        requires: raw.requires,
        slow: raw.slow,
        exclusive: raw.exclusive,
        users: raw.users,
        unregistered: raw.unregistered,
        rooms: raw.rooms,
        actors,
        actor_order,
        steps,
    })
}

/// The actors a step names.
fn step_actors(step: &Step) -> Vec<&str> {
    match step {
        Step::Connect { actors, .. } | Step::Barrier { actors, .. } => {
            actors.iter().map(String::as_str).collect()
        }
        Step::Login { actor }
        | Step::Open { actor, .. }
        | Step::Send { actor, .. }
        | Step::Recv { actor, .. }
        | Step::Raw { actor, .. }
        | Step::ExpectClose { actor, .. }
        | Step::Disconnect { actor, .. }
        | Step::Resume { actor, .. }
        | Step::Logout { actor, .. }
        | Step::Flood { actor, .. }
        | Step::RecvMessages { actor, .. }
        | Step::Drain { actor, .. }
        | Step::ResendUnacked { actor, .. }
        | Step::Fault { actor, .. }
        | Step::ExpectWsPings { actor, .. }
        | Step::AwaitTokenExpiry { actor, .. } => vec![actor.as_str()],
        Step::CheckInvariants(spec) => {
            let mut all = vec![spec.reader.as_str()];
            all.extend(spec.complete.iter().map(String::as_str));
            all
        }
        Step::Http { .. }
        | Step::TcpHold { .. }
        | Step::TcpRelease { .. }
        | Step::TcpStall { .. }
        | Step::Set(_) => {
            vec![]
        }
    }
}

/// Modifiers of a step, deserialized after the verb check.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Modifiers {
    frame: Option<Value>,
    #[serde(rename = "as")]
    bind: Option<String>,
    expect: Option<Vec<Value>>,
    frames: Option<Vec<Value>>,
    unordered: Option<bool>,
    timeout_ms: Option<Value>,
    ignore: Option<Vec<String>>,
    code: Option<u16>,
    skip_frames: Option<bool>,
    mode: Option<String>,
    rooms: Option<Vec<String>>,
    positions: Option<Vec<Value>>,
    subprotocols: Option<Vec<String>>,
    origin: Option<String>,
    expect_status: Option<u16>,
    expect_body: Option<Value>,
    expect_headers: Option<BTreeMap<String, Value>>,
    capture_body: Option<String>,
    text: Option<String>,
    hex: Option<String>,
    zeros: Option<Value>,
    padded_ping: Option<PaddedPingSpec>,
    text_hex: Option<String>,
    append_hex: Option<String>,
    query: Option<String>,
    repeat_until_status: Option<u16>,
    max_attempts: Option<u32>,
    count: Option<Value>,
    replies: Option<Vec<ReplyCount>>,
    allow_disconnect: Option<bool>,
    no_replies: Option<bool>,
    room: Option<String>,
    kinds: Option<Vec<String>>,
    until: Option<Value>,
    action: Option<String>,
    bytes: Option<u64>,
    max_wait_ms: Option<u64>,
    node: Option<usize>,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaddedPingSpec {
    size: Value,
    request_id: u64,
}

fn one_or_many(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "expected actor names".to_owned())
            })
            .collect(),
        _ => Err("expected an actor name or a list of actor names".into()),
    }
}

fn actor_name(verb: &str, value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("`{verb}` takes an actor name"))
}

fn parse_step(value: &Value) -> Result<Step, String> {
    let map = value
        .as_object()
        .ok_or("a step is a map with one verb key, e.g. `- send: alice`")?;
    let verbs: Vec<&(&str, &[&str])> = VERBS
        .iter()
        .filter(|(verb, _)| map.contains_key(*verb))
        .collect();
    // `expect` is both the verb-less modifier of send/resume/connect and not
    // a verb itself, so the only ambiguity is several verbs at once.
    let &&(verb, allowed) = match verbs.as_slice() {
        [one] => one,
        [] => {
            return Err(format!(
                "no verb; use one of: {}",
                VERBS.iter().map(|(v, _)| *v).collect::<Vec<_>>().join(", ")
            ));
        }
        many => {
            return Err(format!(
                "several verbs in one step: {}",
                many.iter().map(|(v, _)| *v).collect::<Vec<_>>().join(", ")
            ));
        }
    };
    let mut modifiers = serde_json::Map::new();
    for (key, val) in map {
        if key == verb {
            continue;
        }
        if key != "note" && !allowed.contains(&key.as_str()) {
            return Err(format!(
                "`{key}` is not a modifier of `{verb}` (allowed: {})",
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            ));
        }
        modifiers.insert(key.clone(), val.clone());
    }
    let m: Modifiers =
        serde_json::from_value(Value::Object(modifiers)).map_err(|e| format!("{verb}: {e}"))?;
    let _ = &m.note;
    let arg = &map[verb];
    let expectation = |frames: Option<Vec<Value>>, m: &Modifiers| FrameExpectation {
        frames: frames.unwrap_or_default(),
        unordered: m.unordered.unwrap_or(false),
        timeout_ms: m.timeout_ms.clone(),
        ignore: m.ignore.clone().unwrap_or_default(),
    };
    Ok(match verb {
        "connect" => Step::Connect {
            actors: one_or_many(arg)?,
            expect: expectation(m.expect.clone(), &m),
            node: m.node,
        },
        "login" => Step::Login {
            actor: actor_name(verb, arg)?,
        },
        "open" => Step::Open {
            actor: actor_name(verb, arg)?,
            subprotocols: m.subprotocols,
            origin: m.origin,
            query: m.query,
            expect_status: m.expect_status.unwrap_or(101),
            expect_body: m.expect_body,
        },
        "send" => Step::Send {
            actor: actor_name(verb, arg)?,
            frame: m.frame.clone().ok_or("`send` needs `frame`")?,
            bind: m.bind.clone(),
            append_hex: m.append_hex.as_deref().map(parse_hex).transpose()?,
            expect: expectation(m.expect.clone(), &m),
        },
        "recv" => Step::Recv {
            actor: actor_name(verb, arg)?,
            expect: {
                let frames = m.frames.clone().ok_or("`recv` needs `frames`")?;
                if frames.is_empty() {
                    return Err("`recv` with no frames checks nothing; use `barrier`".into());
                }
                expectation(Some(frames), &m)
            },
        },
        "barrier" => Step::Barrier {
            actors: one_or_many(arg)?,
            ignore: m.ignore.unwrap_or_default(),
        },
        "raw" => Step::Raw {
            actor: actor_name(verb, arg)?,
            payload: match (m.text, m.hex, m.zeros, m.padded_ping, m.text_hex) {
                (Some(text), None, None, None, None) => RawPayload::Text(text),
                (None, Some(hex), None, None, None) => RawPayload::Hex(parse_hex(&hex)?),
                (None, None, Some(zeros), None, None) => RawPayload::Zeros(zeros),
                (None, None, None, Some(p), None) => RawPayload::PaddedPing {
                    size: p.size,
                    request_id: p.request_id,
                },
                (None, None, None, None, Some(hex)) => RawPayload::TextBytes(parse_hex(&hex)?),
                _ => {
                    return Err(
                        "`raw` needs exactly one of `text`, `hex`, `zeros`, `padded_ping`, `text_hex`"
                            .into(),
                    );
                }
            },
        },
        "expect_close" => Step::ExpectClose {
            actor: actor_name(verb, arg)?,
            code: m.code,
            skip_frames: m.skip_frames.unwrap_or(false),
            timeout_ms: m.timeout_ms,
        },
        "disconnect" => Step::Disconnect {
            actor: actor_name(verb, arg)?,
            mode: match m.mode.as_deref() {
                None | Some("clean") => DisconnectMode::Clean,
                Some("abrupt") => DisconnectMode::Abrupt,
                Some(other) => return Err(format!("mode {other:?}: use clean or abrupt")),
            },
        },
        "resume" => Step::Resume {
            actor: actor_name(verb, arg)?,
            rooms: m.rooms.clone(),
            positions: m.positions.clone(),
            expect: expectation(m.expect.clone(), &m),
            node: m.node,
        },
        "http" => Step::Http {
            request: serde_json::from_value(arg.clone()).map_err(|e| format!("http: {e}"))?,
            expect_status: m.expect_status.ok_or("`http` needs `expect_status`")?,
            expect_body: m.expect_body,
            expect_headers: m.expect_headers.unwrap_or_default(),
            capture_body: m.capture_body,
            repeat_until_status: m.repeat_until_status,
            max_attempts: m.max_attempts.unwrap_or(1),
        },
        "logout" => Step::Logout {
            actor: actor_name(verb, arg)?,
            expect_status: m.expect_status.unwrap_or(204),
        },
        "flood" => Step::Flood {
            actor: actor_name(verb, arg)?,
            frame: m.frame.ok_or("`flood` needs `frame`")?,
            count: m.count.ok_or("`flood` needs `count`")?,
            replies: m.replies.unwrap_or_default(),
            allow_disconnect: m.allow_disconnect.unwrap_or(false),
            no_replies: m.no_replies.unwrap_or(false),
            bind: m.bind,
            timeout_ms: m.timeout_ms,
        },
        "recv_messages" => Step::RecvMessages {
            actor: actor_name(verb, arg)?,
            room: m.room.ok_or("`recv_messages` needs `room`")?,
            count: m.count.ok_or("`recv_messages` needs `count`")?,
            timeout_ms: m.timeout_ms,
            ignore: m.ignore.unwrap_or_default(),
        },
        "drain" => Step::Drain {
            actor: actor_name(verb, arg)?,
            kinds: m.kinds.ok_or("`drain` needs `kinds`")?,
            until: m.until.ok_or("`drain` needs `until`")?,
            timeout_ms: m.timeout_ms,
        },
        "resend_unacked" => Step::ResendUnacked {
            actor: actor_name(verb, arg)?,
            bind: m.bind,
            timeout_ms: m.timeout_ms,
        },
        "fault" => Step::Fault {
            actor: actor_name(verb, arg)?,
            action: match m.action.as_deref() {
                Some("cut") => FaultAction::Cut,
                Some("hold") => FaultAction::Hold,
                Some("hold_server") => FaultAction::HoldServer,
                Some("hold_client") => FaultAction::HoldClient,
                Some("release") => FaultAction::Release,
                Some("cut_after_server_bytes") => FaultAction::CutAfterServerBytes(
                    m.bytes.ok_or("cut_after_server_bytes needs `bytes`")?,
                ),
                Some("cut_after_client_bytes") => FaultAction::CutAfterClientBytes(
                    m.bytes.ok_or("cut_after_client_bytes needs `bytes`")?,
                ),
                other => {
                    return Err(format!(
                        "fault action {other:?}: use cut, hold, hold_server, hold_client, release, cut_after_server_bytes or cut_after_client_bytes"
                    ));
                }
            },
        },
        "tcp_hold" => Step::TcpHold {
            name: arg.as_str().ok_or("`tcp_hold` takes a name")?.to_owned(),
            count: m.count.ok_or("`tcp_hold` needs `count`")?,
            expect_status: m.expect_status.ok_or("`tcp_hold` needs `expect_status`")?,
            expect_body: m.expect_body,
            expect_headers: m.expect_headers.unwrap_or_default(),
        },
        "tcp_stall" => Step::TcpStall {
            send: arg
                .as_str()
                .ok_or("`tcp_stall` takes the text to send (\"\" for none)")?
                .to_owned(),
            timeout_ms: m.timeout_ms,
        },
        "tcp_release" => Step::TcpRelease {
            name: arg.as_str().ok_or("`tcp_release` takes a name")?.to_owned(),
        },
        "await_token_expiry" => Step::AwaitTokenExpiry {
            actor: actor_name(verb, arg)?,
            max_wait_ms: m.max_wait_ms.unwrap_or(60_000),
        },
        "expect_ws_pings" => Step::ExpectWsPings {
            actor: actor_name(verb, arg)?,
            count: m.count.ok_or("`expect_ws_pings` needs `count`")?,
            timeout_ms: m.timeout_ms,
        },
        "check_invariants" => Step::CheckInvariants(
            serde_json::from_value(arg.clone()).map_err(|e| format!("check_invariants: {e}"))?,
        ),
        "set" => Step::Set(serde_json::from_value(arg.clone()).map_err(|e| format!("set: {e}"))?),
        _ => unreachable!("every verb of VERBS is handled"),
    })
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex {text:?} has an odd number of digits"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| format!("hex {text:?}: {e}"))
        })
        .collect()
}

/// Loads a set of (file name, text) scenarios, checking names are unique.
pub fn load_all<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Scenario>, ScenarioError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (file, text) in files {
        let scenario = parse_scenario(file, text)?;
        if let Some(first) = seen.insert(scenario.name.clone(), file.to_owned()) {
            return Err(ScenarioError::DuplicateName {
                name: scenario.name,
                first,
                second: file.to_owned(),
            });
        }
        out.push(scenario);
    }
    Ok(out)
}

/// The scenarios compiled into this binary, in file-name order.
pub fn embedded() -> Result<Vec<Scenario>, ScenarioError> {
    load_all(crate::EMBEDDED_SCENARIOS.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name: minimal
summary: Two users exchange one message.
covers: [R-8.4.1]
users: [alice, bob]
rooms: [main]
steps:
  - connect: [alice, bob]
  - send: alice
    frame: {createRoom: {name: $main}}
    expect: [{roomJoined: {room: {name: $main}}}]
  - barrier: [alice, bob]
"#;

    #[test]
    fn minimal_scenario_loads_with_default_actors() {
        let s = parse_scenario("minimal.yaml", MINIMAL).unwrap();
        assert_eq!(s.actors.len(), 2);
        assert_eq!(s.actors["bob"].user.as_deref(), Some("bob"));
        assert_eq!(s.steps.len(), 3);
        assert!(
            matches!(&s.steps[1], Step::Send { actor, expect, .. } if actor == "alice" && expect.frames.len() == 1)
        );
    }

    #[test]
    fn bad_steps_are_rejected_with_a_useful_message() {
        let cases = [
            ("- sned: alice", "no verb"),
            ("- send: alice\n    recv: bob", "several verbs"),
            (
                "- barrier: alice\n    frame: {}",
                "not a modifier of `barrier`",
            ),
            ("- send: alice", "needs `frame`"),
            ("- send: mallory\n    frame: {ping: {}}", "unknown actor"),
            ("- raw: alice\n    hex: abc", "odd number"),
            (
                "- disconnect: alice\n    mode: gently",
                "use clean or abrupt",
            ),
        ];
        for (step, want) in cases {
            let text =
                format!("name: x\nsummary: x\ncovers: [R-1.1]\nusers: [alice]\nsteps:\n  {step}\n");
            let err = parse_scenario("x.yaml", &text).unwrap_err().to_string();
            assert!(err.contains(want), "{step:?}: {err}");
        }
    }

    #[test]
    fn filters_select_by_name_section_and_rule() {
        let s = parse_scenario("minimal.yaml", MINIMAL).unwrap();
        assert!(s.matches_filter("minimal"));
        assert!(s.matches_filter("8.4"));
        assert!(s.matches_filter("R-8.4.1"));
        assert!(s.matches_filter("8"));
        assert!(!s.matches_filter("8.5"));
        assert!(!s.matches_filter("8.41"));
        assert_eq!(section_of("R-8.4.1"), "8.4");
        assert_eq!(section_of("8.4"), "8.4");
    }

    #[test]
    fn actors_alternate_over_servers_in_declaration_order() {
        // Declared out of alphabetical order on purpose: declaration order,
        // not name order, decides the layout.
        let text = r#"
name: spread
summary: x
covers: [R-1.1]
users: [alice, bob, carol, dave]
actors:
  dave: {user: dave}
  bob: {user: bob}
  carol: {user: carol, node: 1}
  alice: {user: alice}
  anon: {}
steps:
  - connect: [alice, bob]
  - resume: bob
    node: 3
"#;
        let s = parse_scenario("spread.yaml", text).unwrap();
        assert_eq!(s.actor_order, ["dave", "bob", "carol", "alice", "anon"]);
        let two = assign_nodes(&s, 2);
        let at = |layout: &BTreeMap<String, usize>, name: &str| layout[name];
        // dave 0, bob 1, carol pinned to 1, alice 3 % 2 = 1, anon 4 % 2 = 0.
        assert_eq!(
            ["dave", "bob", "carol", "alice", "anon"].map(|n| at(&two, n)),
            [0, 1, 1, 1, 0]
        );
        let three = assign_nodes(&s, 3);
        assert_eq!(
            ["dave", "bob", "carol", "alice", "anon"].map(|n| at(&three, n)),
            [0, 1, 1, 0, 1]
        );
        // One server: every actor, pinned or not, is on it.
        assert!(assign_nodes(&s, 1).values().all(|&n| n == 0));
        assert!(assign_nodes(&s, 0).values().all(|&n| n == 0));
        assert!(matches!(&s.steps[1], Step::Resume { node: Some(3), .. }));
        assert_eq!(s.steps[1].describe(), "resume bob on node 3");
        // Default actors follow `users` order.
        let m = parse_scenario("minimal.yaml", MINIMAL).unwrap();
        assert_eq!(m.actor_order, ["alice", "bob"]);
        assert_eq!(assign_nodes(&m, 2)["bob"], 1);
    }

    #[test]
    fn embedded_scenarios_all_load() {
        let all = embedded().unwrap();
        assert!(!all.is_empty());
    }
}
