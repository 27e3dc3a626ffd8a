//! The one driver that runs every scenario: actors, steps, expectations.
//!
//! Each actor holds at most one live connection and a queue of events it
//! has read but no step has consumed yet. Every event passes through
//! `Driver::observe` exactly once, which keeps the transcript, tracks the
//! actor's room positions (for Resume) and fills the invariant ledger.
//! Steps then consume events in arrival order. Synchronisation is always a
//! frame: a reply, a push, or the Pong that answers a barrier Ping (§12.1);
//! the only clock is each step's deadline for the next event.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use confab_bot_sdk::ServerUrl;
use confab_protocol::wire::{ClientFrame, ServerFrame, client_frame, server_frame};
use serde_json::{Value, json};

use crate::connection::{Connection, Event, OpenOptions, Opened};
use crate::http::{self, HttpRequest};
use crate::invariants::{self, AckRecord, Ledger, MessageRecord, SendRecord};
use crate::matcher::{self, Captures, camel};
use crate::proxy::FaultProxy;
use crate::report::Failure;
use crate::scenario::{
    ActorSpec, DisconnectMode, FaultAction, FrameExpectation, HttpSpec, InvariantSpec, RawPayload,
    ReplyCount, Scenario, Step,
};
use crate::vars::Vars;

/// Most transcript entries kept in a failure report.
const MAX_TRANSCRIPT: usize = 400;

/// One server of a run: the only one, or one node of a cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// The server's base URL.
    pub server: ServerUrl,
    /// The WebSocket URL.
    pub ws_url: String,
    /// `host:port` to connect TCP to for WebSockets.
    pub ws_authority: String,
}

/// Run-wide facts every scenario needs.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The servers, in the order given; never empty. Actors are spread over
    /// them (see [`crate::scenario::assign_nodes`]); registration and
    /// actor-less steps (`http`, `tcp_hold`, `tcp_stall`) use the first.
    pub nodes: Vec<Node>,
    /// Default deadline of one step.
    pub step_timeout: Duration,
    /// Limits from the probe's Welcome, as proto3 JSON.
    pub limits: Value,
    /// Capabilities the probe was granted.
    pub capabilities: Vec<String>,
}

impl Environment {
    /// The server with index `index` modulo the number of servers.
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index % self.nodes.len().max(1)]
    }
}

/// Why a scenario stopped early.
#[derive(Debug)]
pub enum Halt {
    /// A step failed.
    Fail(StepError),
    /// The scenario cannot run here (e.g. capability not granted).
    Skip(String),
}

/// A failed step, before the transcript is attached.
#[derive(Debug, Default)]
pub struct StepError {
    /// What went wrong.
    pub message: String,
    /// The expectation.
    pub expected: Option<Value>,
    /// What arrived.
    pub actual: Option<Value>,
}

impl StepError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::default()
        }
    }
    fn with(message: impl Into<String>, expected: Option<Value>, actual: Option<Value>) -> Self {
        Self {
            message: message.into(),
            expected,
            actual,
        }
    }
}

impl From<StepError> for Halt {
    fn from(e: StepError) -> Self {
        Halt::Fail(e)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, Halt> {
    Err(Halt::Fail(StepError::new(message)))
}

#[derive(Debug, Clone, Default)]
struct Position {
    last_seq: u64,
    epoch: String,
}

#[derive(Debug)]
struct Actor {
    spec: ActorSpec,
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
    connection: Option<Connection>,
    connection_number: u32,
    next_request_id: u64,
    pending: VecDeque<Event>,
    positions: BTreeMap<String, Position>,
    /// Sends without a SendAck yet: (client_msg_id, frame JSON without requestId).
    outbox: Vec<(String, Value)>,
    /// Request ids of SendMessage frames on the live connection.
    send_requests: BTreeMap<u64, String>,
    proxy: Option<FaultProxy>,
    /// The server this actor logs in to and connects to.
    node: usize,
    /// The server `proxy` forwards to.
    proxy_node: usize,
}

impl Actor {
    fn request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }
}

/// Runs one scenario.
#[derive(Debug)]
pub struct Driver<'a> {
    env: &'a Environment,
    scenario: &'a Scenario,
    vars: Vars,
    actors: BTreeMap<String, Actor>,
    rooms: BTreeSet<String>,
    ledger: Ledger,
    transcript: Vec<Value>,
    /// Connections kept open by `tcp_hold`, by set name.
    held: BTreeMap<String, Vec<tokio::net::TcpStream>>,
}

/// The JSON (canonical proto3 mapping) of a server frame.
pub fn frame_json(frame: &ServerFrame) -> Value {
    serde_json::to_value(frame).unwrap_or(Value::Null)
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::Frame(f) => frame_json(f),
        Event::Undecodable { reason, len } => {
            json!({"undecodable": {"len": len, "reason": reason}})
        }
        Event::Text(t) => json!({"textMessage": t}),
        Event::Closed { code, reason } => json!({"closed": {"code": code, "reason": reason}}),
        Event::Ended { reason } => json!({"ended": reason}),
    }
}

/// The camelCase kind of a frame's body (`sendAck`).
fn kind_of(frame: &ServerFrame) -> String {
    frame
        .body
        .as_ref()
        .map_or_else(|| "none".to_owned(), |b| camel(b.name()))
}

fn message_record(m: &confab_protocol::wire::Message) -> MessageRecord {
    MessageRecord {
        room: m.room.clone(),
        seq: m.seq,
        message_id: m.message_id.clone(),
        sender: m.sender.clone(),
        client_msg_id: m.client_msg_id.clone(),
        text: m.text.clone(),
    }
}

impl<'a> Driver<'a> {
    /// Prepares names and variables; `suffix` makes every name unique to this run.
    pub fn new(env: &'a Environment, scenario: &'a Scenario, suffix: &str) -> Self {
        let mut vars = Vars::new();
        vars.set("run", Value::from(suffix));
        // The server's own origin, as a browser app it serves would send it
        // (§15.1), and the authority for raw requests' Host header.
        let authority = env.node(0).server.authority();
        vars.set("server.origin", Value::from(format!("http://{authority}")));
        vars.set("server.authority", Value::from(authority));
        if let Value::Object(limits) = &env.limits {
            for (k, v) in limits {
                vars.set(format!("limits.{k}"), v.clone());
            }
        }
        let mut rooms = BTreeSet::new();
        for user in scenario.users.iter().chain(&scenario.unregistered) {
            vars.set(user.clone(), Value::from(format!("{user}-{suffix}")));
            vars.set(
                format!("password.{user}"),
                Value::from(format!("pw-{suffix}-{user}-secret")),
            );
        }
        for room in &scenario.rooms {
            let name = format!("{room}-{suffix}");
            rooms.insert(name.clone());
            vars.set(room.clone(), Value::from(name));
        }
        let layout = crate::scenario::assign_nodes(scenario, env.nodes.len());
        let actors = scenario
            .actors
            .iter()
            .map(|(name, spec)| {
                let user = spec.user.as_ref();
                let node = layout.get(name).copied().unwrap_or(0);
                let actor = Actor {
                    spec: spec.clone(),
                    username: user.map(|u| format!("{u}-{suffix}")),
                    password: user.map(|u| format!("pw-{suffix}-{u}-secret")),
                    token: None,
                    connection: None,
                    connection_number: 0,
                    next_request_id: 0,
                    pending: VecDeque::new(),
                    positions: BTreeMap::new(),
                    outbox: Vec::new(),
                    send_requests: BTreeMap::new(),
                    proxy: None,
                    node,
                    proxy_node: node,
                };
                (name.clone(), actor)
            })
            .collect();
        Self {
            env,
            scenario,
            vars,
            actors,
            rooms,
            ledger: Ledger::default(),
            transcript: Vec::new(),
            held: BTreeMap::new(),
        }
    }

    /// Registers users and runs every step. A failure carries the transcript.
    pub async fn run(mut self) -> Result<(), RunHalt> {
        let result = self.run_steps().await;
        self.shutdown().await;
        match result {
            Ok(()) => Ok(()),
            Err((_, Halt::Skip(reason))) => Err(RunHalt::Skipped(reason)),
            Err((index, Halt::Fail(e))) => Err(RunHalt::Failed(Box::new(Failure {
                step: index + 1,
                step_description: self
                    .scenario
                    .steps
                    .get(index)
                    .map_or_else(|| "register users".to_owned(), Step::describe),
                message: e.message,
                expected: e.expected,
                actual: e.actual,
                nodes: self.layout(),
                transcript: {
                    // Floods make transcripts long; the end is what explains a failure.
                    let skip = self.transcript.len().saturating_sub(MAX_TRANSCRIPT);
                    self.transcript.split_off(skip)
                },
            }))),
        }
    }

    /// Each actor's current server, for a failure report of a run against
    /// several servers (empty with one: there is nothing to tell apart).
    fn layout(&self) -> BTreeMap<String, String> {
        if self.env.nodes.len() < 2 {
            return BTreeMap::new();
        }
        self.actors
            .iter()
            .map(|(name, actor)| {
                let node = actor.node % self.env.nodes.len();
                (
                    name.clone(),
                    format!("node {node} ({})", self.env.node(node).server),
                )
            })
            .collect()
    }

    /// Moves an actor to server `node` (modulo the number of servers) for
    /// its next login and connection. Refused while it is connected
    /// elsewhere: a scenario says explicitly how the old connection ends.
    fn move_to(&mut self, actor_name: &str, node: Option<usize>) -> Result<(), Halt> {
        let Some(node) = node else {
            return Ok(());
        };
        let node = node % self.env.nodes.len().max(1);
        let actor = self.actor(actor_name);
        if actor.node == node {
            return Ok(());
        }
        if actor.connection.as_ref().is_some_and(|c| !c.finished) {
            let from = actor.node;
            return fail(format!(
                "{actor_name} is still connected to node {from}; disconnect it before moving it to node {node}"
            ));
        }
        actor.node = node;
        let server = self.env.node(node).server.to_string();
        self.transcript
            .push(json!({"actor": actor_name, "moved_to_node": node, "server": server}));
        Ok(())
    }

    async fn run_steps(&mut self) -> Result<(), (usize, Halt)> {
        self.register_users().await.map_err(|h| (usize::MAX, h))?;
        let scenario = self.scenario;
        for (index, step) in scenario.steps.iter().enumerate() {
            self.transcript
                .push(json!({"step": index + 1, "do": step.describe()}));
            self.step(step).await.map_err(|h| (index, h))?;
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        for actor in self.actors.values_mut() {
            if let Some(mut c) = actor.connection.take() {
                // Best effort: a clean close lets the server log a normal end.
                c.start_close().await.ok();
            }
            actor.proxy = None;
        }
    }

    fn timeout(&self, over: Option<&Value>) -> Result<Duration, Halt> {
        match over {
            None => Ok(self.env.step_timeout),
            Some(v) => {
                let ms = self
                    .vars
                    .eval_value(v)
                    .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?;
                Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
            }
        }
    }

    fn substitute(&self, v: &Value) -> Result<Value, Halt> {
        self.vars
            .substitute(v)
            .map_err(|e| Halt::Fail(StepError::new(e.to_string())))
    }

    /// Substitutes variables into a string (names, paths, tokens).
    fn substitute_text(&self, text: &str) -> Result<String, Halt> {
        Ok(match self.substitute(&Value::from(text))? {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    fn substitute_opt(&self, text: Option<&str>) -> Result<Option<String>, Halt> {
        text.map(|t| self.substitute_text(t)).transpose()
    }

    fn actor(&mut self, name: &str) -> &mut Actor {
        // Scenario loading checked every actor name.
        self.actors
            .get_mut(name)
            .expect("actor names are validated at load")
    }

    async fn register_users(&mut self) -> Result<(), Halt> {
        for user in &self.scenario.users {
            let username = format!(
                "{user}-{}",
                self.vars.get("run").and_then(Value::as_str).unwrap_or("")
            );
            let password = self
                .vars
                .get(&format!("password.{user}"))
                .cloned()
                .unwrap_or_default();
            let body = json!({"username": username, "password": password});
            // Registration goes to the first server; actors on the others
            // then log in there, which checks accounts are shared.
            let response = self.http_post(0, "/v1/register", &body, None).await?;
            if response.status != 201 {
                return fail(format!(
                    "registering {username}: expected 201, got {} {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ));
            }
        }
        Ok(())
    }

    async fn http_post(
        &mut self,
        node: usize,
        path: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<http::HttpResponse, Halt> {
        self.http_request(
            node,
            "POST",
            path,
            Some(body.to_string().into_bytes()),
            bearer,
        )
        .await
    }

    async fn http_request(
        &mut self,
        node: usize,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        bearer: Option<&str>,
    ) -> Result<http::HttpResponse, Halt> {
        self.http_exchange(node, HttpRequest::new(method, path, body, bearer))
            .await
    }

    /// One HTTP exchange with server `node`.
    async fn http_exchange(
        &mut self,
        node: usize,
        request: HttpRequest<'_>,
    ) -> Result<http::HttpResponse, Halt> {
        let (method, path) = (request.method, request.path);
        let node = node % self.env.nodes.len().max(1);
        let response = http::send(&self.env.node(node).server, request, self.env.step_timeout)
            .await
            .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?;
        self.transcript.push(json!({"http": format!("{method} {path}"), "node": node, "status": response.status, "body": response.body_json()}));
        Ok(response)
    }

    async fn login(&mut self, actor: &str) -> Result<(), Halt> {
        let a = self.actor(actor);
        let node = a.node;
        let (Some(username), Some(password)) = (a.username.clone(), a.password.clone()) else {
            return fail(format!("actor {actor} has no user to log in as"));
        };
        let response = self
            .http_post(
                node,
                "/v1/login",
                &json!({"username": username, "password": password}),
                None,
            )
            .await?;
        if response.status != 200 {
            return fail(format!(
                "login of {username}: expected 200, got {}",
                response.status
            ));
        }
        let body = response.body_json();
        let token = body["token"].as_str().unwrap_or_default().to_owned();
        self.vars
            .set(format!("expires.{actor}"), body["expires_at_ms"].clone());
        if token.is_empty() {
            return fail(format!("login of {username}: 200 without a token"));
        }
        self.vars
            .set(format!("token.{actor}"), Value::from(token.clone()));
        self.actor(actor).token = Some(token);
        Ok(())
    }

    // ---- events ---------------------------------------------------------

    /// Records an event once: transcript, positions, ledger.
    fn observe(&mut self, actor_name: &str, event: &Event) -> bool {
        let connection = self.actors[actor_name].connection_number;
        if let Event::Frame(frame) = event
            && let Some(server_frame::Body::RoomListUpdate(update)) = &frame.body
            && let Some(room) = &update.room
            && !self.rooms.contains(&room.name)
        {
            // Other scenarios and other clients create rooms on a shared
            // server; their updates are not this scenario's business.
            self.transcript.push(json!({"actor": actor_name, "conn": connection, "ignored": "roomListUpdate of a foreign room"}));
            return false;
        }
        self.transcript
            .push(json!({"actor": actor_name, "conn": connection, "recv": event_json(event)}));
        let Event::Frame(frame) = event else {
            return true;
        };
        let username = self.actors[actor_name].username.clone().unwrap_or_default();
        match &frame.body {
            Some(server_frame::Body::Message(m)) => {
                let actor = self.actor(actor_name);
                let pos = actor.positions.entry(m.room.clone()).or_default();
                pos.last_seq = pos.last_seq.max(m.seq);
                if self.rooms.contains(&m.room) {
                    self.ledger.received.push((
                        actor_name.to_owned(),
                        connection,
                        message_record(m),
                    ));
                }
            }
            Some(server_frame::Body::RoomJoined(joined)) => {
                if let Some(room) = &joined.room {
                    let actor = self.actor(actor_name);
                    let pos = actor.positions.entry(room.name.clone()).or_default();
                    pos.last_seq = pos.last_seq.max(room.head_seq);
                    pos.epoch = room.epoch.clone();
                    self.ledger
                        .record_start(actor_name, &room.name, room.head_seq);
                }
            }
            Some(server_frame::Body::Welcome(welcome)) => {
                let actor = self.actor(actor_name);
                for room in &welcome.rooms {
                    let pos = actor.positions.entry(room.name.clone()).or_default();
                    if pos.epoch.is_empty() {
                        pos.epoch = room.epoch.clone();
                    }
                }
            }
            Some(server_frame::Body::Resumed(resumed)) => {
                use confab_protocol::wire::room_resume::Status;
                let actor = self.actor(actor_name);
                for r in &resumed.rooms {
                    let pos = actor.positions.entry(r.room.clone()).or_default();
                    if r.status == Status::EpochChanged as i32 {
                        // §10.5: drop the old position and continue from head.
                        pos.last_seq = r.head_seq;
                    }
                    if !r.epoch.is_empty() {
                        pos.epoch = r.epoch.clone();
                    }
                }
            }
            Some(server_frame::Body::SendAck(ack)) => {
                let actor = self.actor(actor_name);
                actor.outbox.retain(|(id, _)| *id != ack.client_msg_id);
                actor.send_requests.remove(&frame.request_id);
                self.ledger.acks.push(AckRecord {
                    user: username,
                    room: ack.room.clone(),
                    client_msg_id: ack.client_msg_id.clone(),
                    seq: ack.seq,
                    message_id: ack.message_id.clone(),
                    duplicate: ack.duplicate,
                });
            }
            _ => {}
        }
        true
    }

    /// Moves every event already received on the connection into `pending`.
    fn pull_ready(&mut self, actor_name: &str) {
        loop {
            let Some(event) = self
                .actor(actor_name)
                .connection
                .as_mut()
                .and_then(Connection::try_next_event)
            else {
                return;
            };
            if self.observe(actor_name, &event) {
                self.actor(actor_name).pending.push_back(event);
            }
        }
    }

    /// The next event for a step, waiting until `deadline`.
    async fn next_event(
        &mut self,
        actor_name: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Event> {
        loop {
            if let Some(event) = self.actor(actor_name).pending.pop_front() {
                return Some(event);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let connection = self.actor(actor_name).connection.as_mut()?;
            let event = connection.next_event(remaining).await?;
            if self.observe(actor_name, &event) {
                return Some(event);
            }
        }
    }

    fn ignored(&self, actor_name: &str, extra: &[String], event: &Event) -> bool {
        let Event::Frame(frame) = event else {
            return false;
        };
        let kind = kind_of(frame);
        let actor = &self.actors[actor_name];
        actor
            .spec
            .ignore
            .iter()
            .chain(extra)
            .any(|k| camel(k) == kind)
    }

    /// The next event that is not of an ignored kind.
    async fn next_relevant(
        &mut self,
        actor_name: &str,
        ignore: &[String],
        deadline: tokio::time::Instant,
    ) -> Option<Event> {
        loop {
            let event = self.next_event(actor_name, deadline).await?;
            if !self.ignored(actor_name, ignore, &event) {
                return Some(event);
            }
        }
    }

    // ---- sending --------------------------------------------------------

    fn build_frame(
        &mut self,
        actor_name: &str,
        template: &Value,
    ) -> Result<(ClientFrame, u64, Value), Halt> {
        let mut value = self.substitute(template)?;
        let Some(map) = value.as_object_mut() else {
            return fail("a frame is a JSON object like {\"ping\": {}}");
        };
        let request_id = match map.get("requestId").or_else(|| map.get("request_id")) {
            Some(v) => crate::vars::as_integer(v)
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            None => {
                let id = self.actor(actor_name).request_id();
                map.insert("requestId".into(), Value::from(id.to_string()));
                id
            }
        };
        let frame: ClientFrame = serde_json::from_value(value.clone()).map_err(|e| {
            Halt::Fail(StepError::with(
                format!("the scenario's frame is not a valid ClientFrame in proto3 JSON: {e}"),
                Some(value.clone()),
                None,
            ))
        })?;
        Ok((frame, request_id, value))
    }

    async fn send_frame(
        &mut self,
        actor_name: &str,
        frame: &ClientFrame,
        json: Value,
        resend: bool,
    ) -> Result<(), Halt> {
        let connection_number = self.actors[actor_name].connection_number;
        self.transcript
            .push(json!({"actor": actor_name, "conn": connection_number, "send": json}));
        if let Some(client_frame::Body::SendMessage(send)) = &frame.body {
            let actor = self.actor(actor_name);
            let user = actor.username.clone().unwrap_or_default();
            actor
                .send_requests
                .insert(frame.request_id, send.client_msg_id.clone());
            if !actor.outbox.iter().any(|(id, _)| *id == send.client_msg_id) {
                let mut template = json.clone();
                if let Some(m) = template.as_object_mut() {
                    m.remove("requestId");
                }
                actor.outbox.push((send.client_msg_id.clone(), template));
            }
            self.ledger.sends.push(SendRecord {
                actor: actor_name.to_owned(),
                user,
                connection: connection_number,
                room: send.room.clone(),
                client_msg_id: send.client_msg_id.clone(),
                text: send.text.clone(),
                resend,
            });
        }
        let Some(connection) = self.actor(actor_name).connection.as_mut() else {
            return fail(format!(
                "{actor_name} has no open connection; add a connect step first"
            ));
        };
        connection
            .send_frame(frame)
            .await
            .map_err(|e| Halt::Fail(StepError::new(format!("{actor_name}: {e}"))))
    }

    // ---- expectations ---------------------------------------------------

    async fn expect_frames(
        &mut self,
        actor_name: &str,
        expectation: &FrameExpectation,
    ) -> Result<(), Halt> {
        if expectation.frames.is_empty() {
            return Ok(());
        }
        let timeout = self.timeout(expectation.timeout_ms.as_ref())?;
        let deadline = tokio::time::Instant::now() + timeout;
        if expectation.unordered {
            let wanted: Vec<Value> = expectation
                .frames
                .iter()
                .map(|m| self.substitute(m))
                .collect::<Result<_, _>>()?;
            let mut got = Vec::new();
            for _ in &wanted {
                match self
                    .next_relevant(actor_name, &expectation.ignore, deadline)
                    .await
                {
                    Some(Event::Frame(f)) => got.push(frame_json(&f)),
                    other => {
                        return Err(self.missing(
                            actor_name,
                            timeout,
                            Value::Array(wanted.clone()),
                            other,
                            &got,
                        ));
                    }
                }
            }
            let caps = matcher::match_unordered(&wanted, &got).map_err(|m| {
                Halt::Fail(StepError::with(
                    format!("{actor_name}: frames do not match as a set: {m}"),
                    Some(Value::Array(wanted.clone())),
                    Some(Value::Array(got.clone())),
                ))
            })?;
            self.bind(caps);
            return Ok(());
        }
        for want in &expectation.frames {
            let want = self.substitute(want)?;
            match self
                .next_relevant(actor_name, &expectation.ignore, deadline)
                .await
            {
                Some(Event::Frame(f)) => self.match_and_bind(actor_name, &want, &frame_json(&f))?,
                other => return Err(self.missing(actor_name, timeout, want, other, &[])),
            }
        }
        Ok(())
    }

    fn missing(
        &self,
        actor_name: &str,
        timeout: Duration,
        want: Value,
        got: Option<Event>,
        so_far: &[Value],
    ) -> Halt {
        let (message, actual) = match got {
            None => (
                format!(
                    "{actor_name}: no matching frame within {} ms",
                    timeout.as_millis()
                ),
                if so_far.is_empty() {
                    None
                } else {
                    Some(Value::Array(so_far.to_vec()))
                },
            ),
            Some(event) => (
                format!(
                    "{actor_name}: expected a frame, got {}",
                    event_summary(&event)
                ),
                Some(event_json(&event)),
            ),
        };
        Halt::Fail(StepError::with(message, Some(want), actual))
    }

    /// Matches `got` against `want`, binding captures on success.
    fn match_and_bind(&mut self, context: &str, want: &Value, got: &Value) -> Result<(), Halt> {
        let caps = matcher::matches(want, got).map_err(|m| {
            Halt::Fail(StepError::with(
                format!("{context}: {m}"),
                Some(want.clone()),
                Some(got.clone()),
            ))
        })?;
        self.bind(caps);
        Ok(())
    }

    fn bind(&mut self, caps: Captures) {
        for (k, v) in caps {
            self.vars.set(k, v);
        }
    }

    /// Collects the replies to `ids`, leaving every other event queued in
    /// order. Returns the replies and whether the connection ended.
    async fn await_replies(
        &mut self,
        actor_name: &str,
        ids: &BTreeSet<u64>,
        timeout: Duration,
        allow_disconnect: bool,
        barrier: bool,
    ) -> Result<(BTreeMap<u64, ServerFrame>, bool), Halt> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut replies = BTreeMap::new();
        let mut kept = VecDeque::new();
        let mut ended = false;
        // `until`: a barrier's request id; once its reply (the Pong) is in,
        // every earlier request that was going to be answered was (§12.1).
        let until = ids.last().copied().filter(|_| barrier);
        while replies.len() < ids.len() && until.is_none_or(|id| !replies.contains_key(&id)) {
            let Some(event) = self.next_event(actor_name, deadline).await else {
                self.actor(actor_name).pending = kept;
                let missing: Vec<u64> = ids
                    .iter()
                    .filter(|i| !replies.contains_key(*i))
                    .copied()
                    .collect();
                return fail(format!(
                    "{actor_name}: no reply to request ids {missing:?} within {} ms",
                    timeout.as_millis()
                ));
            };
            match event {
                Event::Frame(f) if f.request_id != 0 && ids.contains(&f.request_id) => {
                    replies.insert(f.request_id, f);
                }
                e if e.is_terminal() => {
                    let summary = event_summary(&e);
                    kept.push_back(e);
                    if allow_disconnect {
                        ended = true;
                        break;
                    }
                    self.actor(actor_name).pending = kept;
                    return fail(format!(
                        "{actor_name}: connection ended while waiting for replies: {summary}"
                    ));
                }
                other => kept.push_back(other),
            }
        }
        let actor = self.actor(actor_name);
        kept.extend(actor.pending.drain(..));
        actor.pending = kept;
        Ok((replies, ended))
    }

    // ---- connections ----------------------------------------------------

    async fn open_connection(
        &mut self,
        actor_name: &str,
        subprotocols: Vec<String>,
        origin: Option<String>,
        query: Option<String>,
    ) -> Result<Opened, Halt> {
        // Unconsumed events of a previous connection were already received
        // by the client: record them, then start afresh.
        self.retire_connection(actor_name);
        let env = self.env;
        let node = self.actors[actor_name].node % env.nodes.len().max(1);
        let upstream = env.node(node).ws_authority.clone();
        let actor = self.actor(actor_name);
        if actor.proxy_node != node {
            // The proxy sits in front of the actor's server: a moved actor
            // gets a fresh one in front of its new server.
            actor.proxy = None;
            actor.proxy_node = node;
        }
        let connect_to = if let Some(plan) = actor.spec.via_proxy.clone() {
            if actor.proxy.is_none() {
                let addr = tokio::net::lookup_host(&upstream)
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        Halt::Fail(StepError::new(format!("cannot resolve {upstream}")))
                    })?;
                let proxy = FaultProxy::start(addr, plan).await.map_err(|e| {
                    Halt::Fail(StepError::new(format!("cannot start fault proxy: {e}")))
                })?;
                self.actor(actor_name).proxy = Some(proxy);
            }
            let actor = self.actor(actor_name);
            actor
                .proxy
                .as_ref()
                .map(|p| p.local_addr().to_string())
                .unwrap_or(upstream)
        } else {
            upstream
        };
        let options = OpenOptions {
            server: env.node(node).server.clone(),
            ws_url: format!("{}{}", env.node(node).ws_url, query.unwrap_or_default()),
            connect_to,
            subprotocols,
            origin,
            timeout: self.env.step_timeout,
        };
        let opened = Connection::open(&options)
            .await
            .map_err(|e| Halt::Fail(StepError::new(format!("{actor_name}: {e}"))))?;
        let actor = self.actor(actor_name);
        actor.connection_number += 1;
        let number = actor.connection_number;
        match &opened {
            Opened::Upgraded(c) => {
                self.transcript.push(json!({"actor": actor_name, "conn": number, "node": node, "open": 101, "subprotocol": c.subprotocol}));
            }
            Opened::Refused { status, body } => {
                self.transcript.push(json!({"actor": actor_name, "conn": number, "node": node, "open": status, "body": String::from_utf8_lossy(body)}));
            }
        }
        Ok(opened)
    }

    fn retire_connection(&mut self, actor_name: &str) {
        self.pull_ready(actor_name);
        let actor = self.actor(actor_name);
        actor.connection = None;
        actor.send_requests.clear();
        let dropped = actor.pending.len();
        actor.pending.clear();
        if dropped > 0 {
            let number = actor.connection_number;
            self.transcript.push(json!({"actor": actor_name, "conn": number, "note": format!("{dropped} unconsumed events of the old connection dropped")}));
        }
    }

    async fn connect(&mut self, actor_name: &str, expect: &FrameExpectation) -> Result<(), Halt> {
        if self.actors[actor_name].token.is_none() {
            self.login(actor_name).await?;
        }
        let opened = self
            .open_connection(
                actor_name,
                vec![confab_protocol::SUBPROTOCOL.to_owned()],
                None,
                None,
            )
            .await?;
        let connection = match opened {
            Opened::Upgraded(c) => c,
            Opened::Refused { status, body } => {
                return fail(format!(
                    "{actor_name}: upgrade refused with HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
        };
        if connection.subprotocol.as_deref() != Some(confab_protocol::SUBPROTOCOL) {
            return fail(format!(
                "{actor_name}: server selected subprotocol {:?}; §3.2 requires {:?}",
                connection.subprotocol,
                confab_protocol::SUBPROTOCOL
            ));
        }
        self.actor(actor_name).connection = Some(connection);
        let (token, capabilities) = {
            let a = &self.actors[actor_name];
            (
                a.token.clone().unwrap_or_default(),
                a.spec.capabilities.clone(),
            )
        };
        let auth = json!({"auth": {"token": token, "capabilities": capabilities, "clientName": "confab-conformance/0.1"}});
        let (frame, request_id, json) = self.build_frame(actor_name, &auth)?;
        self.vars.set("req", Value::from(request_id));
        // The transcript never shows tokens.
        let mut shown = json;
        shown["auth"]["token"] = Value::from("<token>");
        self.send_frame(actor_name, &frame, shown, false).await?;
        let mut expectation = expect.clone();
        if expectation.frames.is_empty() {
            expectation.frames = vec![json!({"requestId": "$req", "welcome": {}})];
        }
        self.expect_frames(actor_name, &expectation).await?;
        self.check_capabilities(actor_name)
    }

    /// Skips the scenario when a required capability the actor asked for
    /// was not granted in its Welcome (§3.4).
    fn check_capabilities(&mut self, actor_name: &str) -> Result<(), Halt> {
        let granted: Vec<String> = self
            .transcript
            .iter()
            .rev()
            .find(|t| t["actor"] == actor_name && t["recv"].get("welcome").is_some())
            .and_then(|t| t["recv"]["welcome"]["capabilities"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let actor = &self.actors[actor_name];
        for cap in &self.scenario.requires {
            if actor.spec.capabilities.contains(cap) && !granted.contains(cap) {
                return Err(Halt::Skip(format!(
                    "server did not grant capability {cap:?} in Welcome (granted: [{}])",
                    granted.join(", ")
                )));
            }
        }
        Ok(())
    }

    // ---- steps ----------------------------------------------------------

    async fn step(&mut self, step: &Step) -> Result<(), Halt> {
        match step {
            Step::Connect {
                actors,
                expect,
                node,
            } => {
                for actor in actors {
                    self.move_to(actor, *node)?;
                    self.connect(actor, expect).await?;
                }
                Ok(())
            }
            Step::Login { actor } => self.login(actor).await,
            Step::Open {
                actor,
                subprotocols,
                origin,
                query,
                expect_status,
                expect_body,
            } => {
                self.open_step(
                    actor,
                    subprotocols,
                    origin,
                    query.as_deref(),
                    *expect_status,
                    expect_body.as_ref(),
                )
                .await
            }
            Step::Send {
                actor,
                frame,
                bind,
                append_hex,
                expect,
            } => {
                let (frame, request_id, mut json) = self.build_frame(actor, frame)?;
                self.vars.set("req", Value::from(request_id));
                if let Some(name) = bind {
                    self.vars.set(name.clone(), Value::from(request_id));
                }
                match append_hex {
                    None => self.send_frame(actor, &frame, json, false).await?,
                    Some(extra) => {
                        let mut bytes =
                            confab_protocol::codec::encode_client_frame(&frame).to_vec();
                        bytes.extend_from_slice(extra);
                        let hex: String = extra.iter().map(|b| format!("{b:02x}")).collect();
                        json["appendedHex"] = Value::from(hex);
                        let number = self.actors[actor.as_str()].connection_number;
                        self.transcript
                            .push(json!({"actor": actor, "conn": number, "send": json}));
                        let Some(connection) = self.actor(actor).connection.as_mut() else {
                            return fail(format!("{actor} has no open connection"));
                        };
                        connection
                            .send_binary(bytes)
                            .await
                            .map_err(|e| Halt::Fail(StepError::new(format!("{actor}: {e}"))))?;
                    }
                }
                self.expect_frames(actor, expect).await
            }
            Step::Recv { actor, expect } => self.expect_frames(actor, expect).await,
            Step::Barrier { actors, ignore } => self.barrier(actors, ignore).await,
            Step::Raw { actor, payload } => self.raw(actor, payload).await,
            Step::ExpectClose {
                actor,
                code,
                skip_frames,
                timeout_ms,
            } => {
                self.expect_close(actor, *code, *skip_frames, timeout_ms.as_ref())
                    .await
            }
            Step::Disconnect { actor, mode } => self.disconnect(actor, *mode).await,
            Step::Resume {
                actor,
                rooms,
                positions,
                expect,
                node,
            } => {
                self.pull_ready(actor);
                self.move_to(actor, *node)?;
                self.resume(actor, rooms.as_deref(), positions.as_deref(), expect)
                    .await
            }
            Step::Http {
                request,
                expect_status,
                expect_body,
                expect_headers,
                capture_body,
                repeat_until_status,
                max_attempts,
            } => {
                let check = HttpCheck {
                    expect_status: *expect_status,
                    expect_body: expect_body.as_ref(),
                    expect_headers,
                    capture_body: capture_body.as_deref(),
                    repeat_until_status: *repeat_until_status,
                    max_attempts: *max_attempts,
                };
                self.http_step(request, &check).await
            }
            Step::Logout {
                actor,
                expect_status,
            } => {
                let token = self.actors[actor].token.clone();
                let Some(token) = token else {
                    return fail(format!(
                        "{actor} has no token to log out; connect or login first"
                    ));
                };
                let node = self.actors[actor].node;
                let response = self
                    .http_request(node, "POST", "/v1/logout", None, Some(&token))
                    .await?;
                if response.status != *expect_status {
                    return fail(format!(
                        "logout: expected HTTP {expect_status}, got {}",
                        response.status
                    ));
                }
                Ok(())
            }
            Step::Flood {
                actor,
                frame,
                count,
                replies,
                allow_disconnect,
                no_replies,
                bind,
                timeout_ms,
            } => {
                self.flood(
                    actor,
                    frame,
                    count,
                    (!*no_replies || !replies.is_empty()).then_some(replies.as_slice()),
                    *no_replies,
                    *allow_disconnect,
                    bind.as_deref(),
                    timeout_ms.as_ref(),
                )
                .await
            }
            Step::RecvMessages {
                actor,
                room,
                count,
                timeout_ms,
                ignore,
            } => {
                self.recv_messages(actor, room, count, timeout_ms.as_ref(), ignore)
                    .await
            }
            Step::Drain {
                actor,
                kinds,
                until,
                timeout_ms,
            } => self.drain(actor, kinds, until, timeout_ms.as_ref()).await,
            Step::ResendUnacked {
                actor,
                bind,
                timeout_ms,
            } => {
                self.resend_unacked(actor, bind.as_deref(), timeout_ms.as_ref())
                    .await
            }
            Step::Fault { actor, action } => {
                let Some(proxy) = self.actors[actor].proxy.as_ref() else {
                    return fail(format!(
                        "{actor} has no proxy; give it `via_proxy` and connect first"
                    ));
                };
                match action {
                    FaultAction::Cut => {
                        proxy.cut_all();
                        // The cut is synchronous at the proxy, but the actor
                        // learns of it from its socket: wait for that, so a
                        // following step sees a dead connection.
                        self.await_end(actor).await;
                    }
                    FaultAction::Hold => {
                        proxy.hold_client_to_server(true);
                        proxy.hold_server_to_client(true);
                    }
                    FaultAction::HoldServer => proxy.hold_server_to_client(true),
                    FaultAction::HoldClient => proxy.hold_client_to_server(true),
                    FaultAction::Release => {
                        proxy.hold_client_to_server(false);
                        proxy.hold_server_to_client(false);
                    }
                    FaultAction::CutAfterServerBytes(n) => proxy.arm_cut_after_server_bytes(*n),
                    FaultAction::CutAfterClientBytes(n) => proxy.arm_cut_after_client_bytes(*n),
                }
                self.transcript
                    .push(json!({"actor": actor, "fault": format!("{action:?}")}));
                Ok(())
            }
            Step::TcpHold {
                name,
                count,
                expect_status,
                expect_body,
                expect_headers,
            } => {
                let count = self
                    .vars
                    .eval_value(count)
                    .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?;
                let count = u64::try_from(count).unwrap_or(0);
                self.tcp_hold(
                    name,
                    count,
                    *expect_status,
                    expect_body.as_ref(),
                    expect_headers,
                )
                .await
            }
            Step::TcpStall { send, timeout_ms } => {
                let bytes = self.substitute_text(send)?.into_bytes();
                let timeout = self.timeout(timeout_ms.as_ref())?;
                let sent = bytes.len();
                let answer = http::stall(&self.env.node(0).server, bytes, timeout)
                    .await
                    .map_err(|e| {
                        Halt::Fail(StepError::new(format!(
                            "after {sent} bytes the connection stayed open: {e}; a server must close stalled connections (§3.1)"
                        )))
                    })?;
                self.transcript
                    .push(json!({"tcp_stall": sent, "answer_bytes": answer.len()}));
                if !answer.is_empty() {
                    let response = http::parse_response(&answer).map_err(|e| {
                        Halt::Fail(StepError::new(format!(
                            "the server answered a stalled connection with something that is not an HTTP response ({e})"
                        )))
                    })?;
                    let body = response.body_json();
                    let want = json!({"error": {"code": {"$regex": "^[a-z_]+$"}, "message": {"$any": true}}});
                    if response.status < 400 || matcher::matches(&want, &body).is_err() {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "a stalled connection was answered {} without an ErrorBody (§5.5)",
                                response.status
                            ),
                            Some(want),
                            Some(body),
                        )));
                    }
                }
                Ok(())
            }
            Step::TcpRelease { name } => {
                let held = self.held.remove(name).unwrap_or_default();
                let released = held.len();
                // Close each one and wait for the server's side to close
                // too, so its slots are free when the next step (or the next
                // scenario) connects.
                let timeout = self.env.step_timeout;
                tokio::time::timeout(timeout, http::close_all(held))
                    .await
                    .map_err(|_| {
                        Halt::Fail(StepError::new(format!(
                            "the server did not close {released} released connections within the step timeout"
                        )))
                    })?;
                self.transcript
                    .push(json!({"tcp_release": name, "connections": released}));
                Ok(())
            }
            Step::AwaitTokenExpiry { actor, max_wait_ms } => {
                let Some(expires) = self
                    .vars
                    .get(&format!("expires.{actor}"))
                    .and_then(crate::vars::as_integer)
                else {
                    return fail(format!(
                        "{actor} has not logged in, so its token expiry is unknown"
                    ));
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let wait = u64::try_from(expires.saturating_sub(now)).unwrap_or(0);
                if wait > *max_wait_ms {
                    return Err(Halt::Skip(format!(
                        "tokens live {} s here; this scenario waits at most {} s for one to expire",
                        wait / 1000,
                        max_wait_ms / 1000
                    )));
                }
                // A timer test, not synchronisation: expiry is a wall-clock
                // event the server reports only when asked. The margin covers
                // clock granularity between suite and server on one machine.
                tokio::time::sleep(Duration::from_millis(wait + 1000)).await;
                self.transcript
                    .push(json!({"actor": actor, "waited_for_token_expiry_ms": wait + 1000}));
                Ok(())
            }
            Step::ExpectWsPings {
                actor,
                count,
                timeout_ms,
            } => {
                let count = self
                    .vars
                    .eval_value(count)
                    .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?;
                let timeout = self.timeout(timeout_ms.as_ref())?;
                let Some(connection) = self.actor(actor).connection.as_mut() else {
                    return fail(format!("{actor} has no open connection"));
                };
                if !connection
                    .await_pings(u64::try_from(count).unwrap_or(0), timeout)
                    .await
                {
                    return fail(format!(
                        "{actor}: fewer than {count} WebSocket Ping control frames within {} ms",
                        timeout.as_millis()
                    ));
                }
                self.transcript
                    .push(json!({"actor": actor, "wsPings": count}));
                Ok(())
            }
            Step::CheckInvariants(spec) => self.check_invariants(spec).await,
            Step::Set(bindings) => {
                for (name, value) in bindings {
                    let v = self.substitute(value)?;
                    let v = match &v {
                        Value::String(s) if s.contains(['+', '-', '*']) => {
                            self.vars.eval(s).map(Value::from).unwrap_or(v)
                        }
                        _ => v,
                    };
                    self.vars.set(name.clone(), v);
                }
                Ok(())
            }
        }
    }

    async fn open_step(
        &mut self,
        actor_name: &str,
        subprotocols: &Option<Vec<String>>,
        origin: &Option<String>,
        query: Option<&str>,
        expect_status: u16,
        expect_body: Option<&Value>,
    ) -> Result<(), Halt> {
        let query = self.substitute_opt(query)?;
        let subprotocols = subprotocols
            .clone()
            .unwrap_or_else(|| vec![confab_protocol::SUBPROTOCOL.to_owned()]);
        let origin = self.substitute_opt(origin.as_deref())?;
        let opened = self
            .open_connection(actor_name, subprotocols, origin, query)
            .await?;
        match opened {
            Opened::Upgraded(c) => {
                if expect_status != 101 {
                    return fail(format!(
                        "{actor_name}: upgrade succeeded (101) but HTTP {expect_status} was expected"
                    ));
                }
                self.actor(actor_name).connection = Some(c);
                Ok(())
            }
            Opened::Refused { status, body } => {
                if status != expect_status {
                    return fail(format!(
                        "{actor_name}: upgrade answered HTTP {status} ({}), expected {expect_status}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                if let Some(want) = expect_body {
                    let want = self.substitute(want)?;
                    let got = serde_json::from_slice(&body).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&body).into_owned())
                    });
                    self.match_and_bind("upgrade refusal body", &want, &got)?;
                }
                Ok(())
            }
        }
    }

    async fn barrier(&mut self, actors: &[String], ignore: &[String]) -> Result<(), Halt> {
        let mut pings = Vec::new();
        for actor in actors {
            let nonce = rand::random::<u32>();
            let (frame, request_id, json) =
                self.build_frame(actor, &json!({"ping": {"nonce": nonce.to_string()}}))?;
            self.send_frame(actor, &frame, json, false).await?;
            pings.push((actor.clone(), request_id, nonce));
        }
        for (actor, request_id, nonce) in pings {
            let deadline = tokio::time::Instant::now() + self.env.step_timeout;
            let want =
                json!({"requestId": request_id.to_string(), "pong": {"nonce": nonce.to_string()}});
            match self.next_relevant(&actor, ignore, deadline).await {
                Some(Event::Frame(f)) => {
                    let got = frame_json(&f);
                    if matcher::matches(&want, &got).is_err() {
                        return Err(Halt::Fail(StepError::with(
                            format!("{actor}: an unexpected frame arrived before the barrier Pong"),
                            Some(want),
                            Some(got),
                        )));
                    }
                }
                other => return Err(self.missing(&actor, self.env.step_timeout, want, other, &[])),
            }
        }
        Ok(())
    }

    async fn raw(&mut self, actor_name: &str, payload: &RawPayload) -> Result<(), Halt> {
        let number = self.actors[actor_name].connection_number;
        let zeros = match payload {
            RawPayload::Zeros(n) | RawPayload::PaddedPing { size: n, .. } => Some(
                self.vars
                    .eval_value(n)
                    .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?,
            ),
            _ => None,
        };
        let Some(connection) = self.actor(actor_name).connection.as_mut() else {
            return fail(format!("{actor_name} has no open connection"));
        };
        let (result, shown) = match payload {
            RawPayload::Text(t) => (connection.send_text(t).await, json!({"text": t})),
            RawPayload::TextBytes(bytes) => (
                connection.send_text_bytes(bytes.clone()).await,
                json!({"text_hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()}),
            ),
            RawPayload::Hex(bytes) => (
                connection.send_binary(bytes.clone()).await,
                json!({"hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()}),
            ),
            RawPayload::Zeros(_) => {
                let n = usize::try_from(zeros.unwrap_or(0)).unwrap_or(0);
                (
                    connection.send_binary(vec![0; n]).await,
                    json!({"zeros": n}),
                )
            }
            RawPayload::PaddedPing { request_id, .. } => {
                let n = usize::try_from(zeros.unwrap_or(0)).unwrap_or(0);
                let bytes = padded_ping(*request_id, n);
                let len = bytes.len();
                (
                    connection.send_binary(bytes).await,
                    json!({"padded_ping": {"requestId": request_id.to_string(), "bytes": len}}),
                )
            }
        };
        self.transcript
            .push(json!({"actor": actor_name, "conn": number, "send_raw": shown}));
        // The server may close before reading all of a large message; the
        // expected close is checked by the next step.
        if let Err(e) = result {
            self.transcript
                .push(json!({"actor": actor_name, "note": format!("send failed: {e}")}));
        }
        Ok(())
    }

    async fn expect_close(
        &mut self,
        actor_name: &str,
        code: Option<u16>,
        skip_frames: bool,
        timeout_ms: Option<&Value>,
    ) -> Result<(), Halt> {
        let timeout = self.timeout(timeout_ms)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let want = json!({"closed": {"code": code}});
        loop {
            match self.next_event(actor_name, deadline).await {
                Some(Event::Closed { code: got, reason }) => {
                    if let Some(c) = got
                        && (4000..5000).contains(&c)
                        && confab_protocol::error::CloseCode::from_u16(c).is_none()
                    {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "{actor_name}: closed with code {c}, which §13.2 does not define (R-13.2.1)"
                            ),
                            Some(want),
                            Some(json!({"closed": {"code": got, "reason": reason}})),
                        )));
                    }
                    if code.is_some() && got != code {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "{actor_name}: closed with code {got:?} ({reason:?}), expected {code:?}"
                            ),
                            Some(want),
                            Some(json!({"closed": {"code": got, "reason": reason}})),
                        )));
                    }
                    return Ok(());
                }
                Some(Event::Ended { reason }) => {
                    if code.is_some() {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "{actor_name}: connection ended without a close frame ({reason}); expected close code {code:?}"
                            ),
                            Some(want),
                            Some(json!({"ended": reason})),
                        )));
                    }
                    return Ok(());
                }
                Some(event) if skip_frames => {
                    let _ = event;
                }
                other => return Err(self.missing(actor_name, timeout, want, other, &[])),
            }
        }
    }

    async fn disconnect(&mut self, actor_name: &str, mode: DisconnectMode) -> Result<(), Halt> {
        let number = self.actors[actor_name].connection_number;
        self.transcript
            .push(json!({"actor": actor_name, "conn": number, "disconnect": format!("{mode:?}")}));
        match mode {
            DisconnectMode::Clean => {
                if let Some(c) = self.actor(actor_name).connection.as_mut() {
                    c.start_close().await.ok();
                }
                // Read up to the server's close so nothing in flight is lost
                // from the transcript and positions.
                let deadline = tokio::time::Instant::now() + self.env.step_timeout;
                while let Some(event) = self.next_event(actor_name, deadline).await {
                    if event.is_terminal() {
                        break;
                    }
                }
            }
            DisconnectMode::Abrupt => {
                let actor = self.actor(actor_name);
                if let Some(proxy) = &actor.proxy {
                    proxy.cut_all();
                } else if let Some(c) = actor.connection.take() {
                    c.abort();
                }
            }
        }
        self.retire_connection(actor_name);
        Ok(())
    }

    async fn resume(
        &mut self,
        actor_name: &str,
        rooms: Option<&[String]>,
        positions: Option<&[Value]>,
        expect: &FrameExpectation,
    ) -> Result<(), Halt> {
        self.pull_ready(actor_name);
        let live = self.actors[actor_name]
            .connection
            .as_ref()
            .is_some_and(|c| !c.finished);
        if !live {
            self.connect(actor_name, &FrameExpectation::default())
                .await?;
        }
        let positions: Vec<Value> = match positions {
            Some(explicit) => explicit
                .iter()
                .map(|p| self.substitute(p))
                .collect::<Result<_, _>>()?,
            None => {
                let wanted: Option<Vec<String>> = match rooms {
                    Some(list) => Some(
                        list.iter()
                            .map(|r| self.substitute_text(r))
                            .collect::<Result<_, _>>()?,
                    ),
                    None => None,
                };
                self.actors[actor_name]
                    .positions
                    .iter()
                    .filter(|(room, _)| wanted.as_ref().is_none_or(|w| w.contains(room)))
                    .map(|(room, p)| json!({"room": room, "lastSeq": p.last_seq.to_string(), "epoch": p.epoch}))
                    .collect()
            }
        };
        for p in &positions {
            if let (Some(room), Some(last)) =
                (p["room"].as_str(), crate::vars::as_integer(&p["lastSeq"]))
            {
                self.ledger
                    .record_start(actor_name, room, u64::try_from(last).unwrap_or(0));
            }
        }
        let (frame, request_id, json) =
            self.build_frame(actor_name, &json!({"resume": {"rooms": positions.clone()}}))?;
        self.vars.set("req", Value::from(request_id));
        self.send_frame(actor_name, &frame, json, false).await?;
        if !expect.frames.is_empty() {
            return self.expect_frames(actor_name, expect).await;
        }
        self.check_resume_replay(actor_name, request_id, &positions, expect)
            .await
    }

    /// §10.3 without a script: every frame before Resumed is a replayed
    /// Message of a resumed room, seqs last_seq+1..=head in order, and
    /// Resumed reports each room REPLAYED with the right count.
    async fn check_resume_replay(
        &mut self,
        actor_name: &str,
        request_id: u64,
        positions: &[Value],
        expect: &FrameExpectation,
    ) -> Result<(), Halt> {
        use confab_protocol::wire::room_resume::Status;
        let timeout = self.timeout(expect.timeout_ms.as_ref())?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_seq: BTreeMap<String, u64> = positions
            .iter()
            .filter_map(|p| {
                Some((
                    p["room"].as_str()?.to_owned(),
                    u64::try_from(crate::vars::as_integer(&p["lastSeq"])?).ok()? + 1,
                ))
            })
            .collect();
        let mut replayed: BTreeMap<String, u32> = BTreeMap::new();
        loop {
            let event = self
                .next_relevant(actor_name, &expect.ignore, deadline)
                .await;
            let Some(Event::Frame(frame)) = event else {
                let want = json!({"requestId": request_id.to_string(), "resumed": {}});
                return Err(self.missing(actor_name, timeout, want, event, &[]));
            };
            match &frame.body {
                Some(server_frame::Body::Message(m)) if frame.request_id == 0 => {
                    let Some(next) = next_seq.get_mut(&m.room) else {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "{actor_name}: Message of room {} arrived before Resumed, but that room was not resumed",
                                m.room
                            ),
                            None,
                            Some(frame_json(&frame)),
                        )));
                    };
                    if m.seq != *next {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "{actor_name}: replay of {} sent seq {} where seq {} was due (§10.3: every seq after last_seq, in order)",
                                m.room, m.seq, next
                            ),
                            Some(json!({"message": {"room": m.room, "seq": next.to_string()}})),
                            Some(frame_json(&frame)),
                        )));
                    }
                    *next += 1;
                    *replayed.entry(m.room.clone()).or_default() += 1;
                }
                Some(server_frame::Body::Resumed(resumed)) if frame.request_id == request_id => {
                    for (room, next) in &next_seq {
                        let Some(r) = resumed.rooms.iter().find(|r| &r.room == room) else {
                            return Err(Halt::Fail(StepError::with(
                                format!(
                                    "{actor_name}: Resumed does not list room {room} (§10.3: every room of the request)"
                                ),
                                None,
                                Some(frame_json(&frame)),
                            )));
                        };
                        let count = replayed.get(room).copied().unwrap_or(0);
                        let ok = r.status == Status::Replayed as i32
                            && r.head_seq + 1 == *next
                            && r.replayed == count;
                        if !ok {
                            return Err(Halt::Fail(StepError::with(
                                format!(
                                    "{actor_name}: Resumed for {room} does not match the replay: {count} messages replayed, next due seq {next}"
                                ),
                                Some(
                                    json!({"status": "STATUS_REPLAYED", "headSeq": (next - 1).to_string(), "replayed": count}),
                                ),
                                Some(frame_json(&frame)),
                            )));
                        }
                    }
                    return Ok(());
                }
                _ => {
                    return Err(Halt::Fail(StepError::with(
                        format!(
                            "{actor_name}: expected replayed Messages then Resumed, got {}",
                            kind_of(&frame)
                        ),
                        Some(json!({"requestId": request_id.to_string(), "resumed": {}})),
                        Some(frame_json(&frame)),
                    )));
                }
            }
        }
    }

    async fn http_step(&mut self, request: &HttpSpec, check: &HttpCheck<'_>) -> Result<(), Halt> {
        let HttpCheck {
            expect_status,
            expect_body,
            expect_headers,
            capture_body,
            repeat_until_status,
            max_attempts,
        } = *check;
        let path = self.substitute_text(&request.path)?;
        let body = match (&request.body, &request.raw_body) {
            (Some(b), _) => Some(self.substitute(b)?.to_string().into_bytes()),
            (None, Some(raw)) => Some(raw.clone().into_bytes()),
            (None, None) => None,
        };
        let bearer = self.substitute_opt(request.bearer.as_deref())?;
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            let response = self
                .http_exchange(
                    0,
                    HttpRequest {
                        content_type: request.content_type.as_deref(),
                        declared_length: request.declared_length,
                        ..HttpRequest::new(&request.method, &path, body.clone(), bearer.as_deref())
                    },
                )
                .await?;
            match repeat_until_status {
                Some(status) if response.status != status && attempts < max_attempts => continue,
                _ => break response,
            }
        };
        let got_body = response.body_json();
        if response.status != expect_status {
            return Err(Halt::Fail(StepError::with(
                format!(
                    "HTTP {} {path}: status {}, expected {expect_status}",
                    request.method, response.status
                ),
                expect_body.cloned(),
                Some(got_body),
            )));
        }
        if let Some(want) = expect_body {
            let want = self.substitute(want)?;
            self.match_and_bind("HTTP body", &want, &got_body)?;
        }
        for (name, want) in expect_headers {
            let want = self.substitute(want)?;
            let got = response
                .header(&name.to_ascii_lowercase())
                .map(|v| Value::String(v.to_owned()));
            let got = got.unwrap_or(Value::Null);
            if got.is_null() || matcher::matches(&want, &got).is_err() {
                return Err(Halt::Fail(StepError::with(
                    format!("HTTP header {name}"),
                    Some(want),
                    Some(got),
                )));
            }
        }
        if let Some(name) = capture_body {
            self.vars.set(name, got_body);
        }
        Ok(())
    }

    /// See [`Step::TcpHold`]. Every admitted connection must answer the
    /// probe with 401 (a real answer, so the slot is provably taken); the
    /// first that does not is the refusal, checked against the expectation.
    async fn tcp_hold(
        &mut self,
        name: &str,
        count: u64,
        expect_status: u16,
        expect_body: Option<&Value>,
        expect_headers: &BTreeMap<String, Value>,
    ) -> Result<(), Halt> {
        let mut held = Vec::new();
        let refusal = loop {
            if held.len() as u64 >= count {
                self.held.insert(name.to_owned(), held);
                return Err(Halt::Skip(format!(
                    "all {count} connections were admitted; the server's connection cap (§3.1) is higher or it has none"
                )));
            }
            let (response, stream) = http::probe_admission(&self.env.node(0).server, self.env.step_timeout)
                .await
                .map_err(|e| {
                    Halt::Fail(StepError::new(format!(
                        "connection {} got no readable answer ({e}); a server at its connection cap must answer 503 with an ErrorBody, not reset or hang (§3.1)",
                        held.len() + 1
                    )))
                })?;
            match (response.status, stream) {
                (401, Some(stream)) => held.push(stream),
                _ => break response,
            }
        };
        let held_count = held.len();
        self.held.insert(name.to_owned(), held);
        self.vars
            .set(format!("{name}.held"), Value::from(held_count as u64));
        let got_body = refusal.body_json();
        self.transcript.push(json!({"tcp_hold": name, "admitted": held_count, "refusal": refusal.status, "body": got_body}));
        if refusal.status != expect_status {
            return Err(Halt::Fail(StepError::with(
                format!(
                    "after {held_count} held connections the next got HTTP {}, expected {expect_status}",
                    refusal.status
                ),
                expect_body.cloned(),
                Some(got_body),
            )));
        }
        if let Some(want) = expect_body {
            let want = self.substitute(want)?;
            self.match_and_bind("refusal body", &want, &got_body)?;
        }
        for (header, want) in expect_headers {
            let want = self.substitute(want)?;
            let got = refusal
                .header(&header.to_ascii_lowercase())
                .map_or(Value::Null, |v| Value::String(v.to_owned()));
            if got.is_null() || matcher::matches(&want, &got).is_err() {
                return Err(Halt::Fail(StepError::with(
                    format!("refusal header {header}"),
                    Some(want),
                    Some(got),
                )));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn flood(
        &mut self,
        actor_name: &str,
        template: &Value,
        count: &Value,
        replies: Option<&[ReplyCount]>,
        no_replies: bool,
        allow_disconnect: bool,
        bind: Option<&str>,
        timeout_ms: Option<&Value>,
    ) -> Result<(), Halt> {
        let count = self
            .vars
            .eval_value(count)
            .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?;
        let count = u64::try_from(count).unwrap_or(0);
        let mut ids = BTreeSet::new();
        let mut disconnected = false;
        for i in 1..=count {
            self.vars.set("i", Value::from(i));
            let (frame, request_id, json) = self.build_frame(actor_name, template)?;
            match self.send_frame(actor_name, &frame, json, false).await {
                Ok(()) => {
                    ids.insert(request_id);
                }
                Err(_) if allow_disconnect => {
                    disconnected = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(replies) = replies else {
            if let Some(prefix) = bind {
                self.vars
                    .set(format!("{prefix}.sent"), Value::from(ids.len()));
            }
            return Ok(());
        };
        // Frames whose success has no reply (SetTyping) but whose refusals
        // are counted: a Ping after them bounds the wait (§12.1). Request
        // ids grow, so the Ping's is the largest.
        let barrier = no_replies && !disconnected;
        let mut barrier_id = None;
        if barrier {
            let (frame, request_id, json) =
                self.build_frame(actor_name, &json!({"ping": {"nonce": "1"}}))?;
            self.send_frame(actor_name, &frame, json, false).await?;
            ids.insert(request_id);
            barrier_id = Some(request_id);
        }
        let timeout = self.timeout(timeout_ms)?;
        // Each frame gets the step timeout's worth of patience, at least.
        let timeout = timeout
            .max(self.env.step_timeout)
            .saturating_add(Duration::from_millis(5 * count));
        let (mut got, ended) = self
            .await_replies(actor_name, &ids, timeout, allow_disconnect, barrier)
            .await?;
        disconnected |= ended;
        if let Some(id) = barrier_id {
            got.remove(&id);
            ids.remove(&id);
        }
        let default_rule = [ReplyCount {
            matcher: json!({"sendAck": {}}),
            min: Some(Value::from(count)),
            max: None,
        }];
        let rules = if replies.is_empty() {
            &default_rule[..]
        } else {
            replies
        };
        let matchers: Vec<Value> = rules
            .iter()
            .map(|r| self.substitute(&r.matcher))
            .collect::<Result<_, _>>()?;
        let mut counts = vec![0i64; rules.len()];
        let mut acked = 0;
        let mut errors = 0;
        for frame in got.values() {
            let json = frame_json(frame);
            match &frame.body {
                Some(server_frame::Body::SendAck(a)) if !a.duplicate => acked += 1,
                Some(server_frame::Body::Error(_)) => errors += 1,
                _ => {}
            }
            let Some(index) = matchers
                .iter()
                .position(|m| matcher::matches(m, &json).is_ok())
            else {
                return Err(Halt::Fail(StepError::with(
                    format!("{actor_name}: a reply matches none of the accepted reply shapes"),
                    Some(Value::Array(matchers.clone())),
                    Some(json),
                )));
            };
            counts[index] += 1;
        }
        if !disconnected {
            for (rule, (n, matcher)) in rules.iter().zip(counts.iter().zip(&matchers)) {
                let min = match &rule.min {
                    Some(v) => self
                        .vars
                        .eval_value(v)
                        .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?,
                    None => 0,
                };
                let max = match &rule.max {
                    Some(v) => self
                        .vars
                        .eval_value(v)
                        .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?,
                    None => i64::MAX,
                };
                if *n < min || *n > max {
                    return Err(Halt::Fail(StepError::with(
                        format!(
                            "{actor_name}: {n} of {count} replies match this shape; expected between {min} and {max}"
                        ),
                        Some(matcher.clone()),
                        None,
                    )));
                }
            }
        }
        if let Some(prefix) = bind {
            self.vars
                .set(format!("{prefix}.sent"), Value::from(ids.len()));
            self.vars
                .set(format!("{prefix}.replied"), Value::from(got.len()));
            self.vars.set(format!("{prefix}.acked"), Value::from(acked));
            self.vars
                .set(format!("{prefix}.errors"), Value::from(errors));
        }
        Ok(())
    }

    async fn recv_messages(
        &mut self,
        actor_name: &str,
        room: &str,
        count: &Value,
        timeout_ms: Option<&Value>,
        ignore: &[String],
    ) -> Result<(), Halt> {
        let room = self.substitute_text(room)?;
        let count = self
            .vars
            .eval_value(count)
            .map_err(|e| Halt::Fail(StepError::new(e.to_string())))?;
        let timeout = self.timeout(timeout_ms)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Option<u64> = None;
        for n in 0..count {
            let event = self.next_relevant(actor_name, ignore, deadline).await;
            match &event {
                Some(Event::Frame(frame)) => match &frame.body {
                    Some(server_frame::Body::Message(m))
                        if m.room == room && frame.request_id == 0 =>
                    {
                        if let Some(prev) = last
                            && m.seq != prev + 1
                        {
                            return Err(Halt::Fail(StepError::with(
                                format!(
                                    "{actor_name}: message {} of {count} in {room} has seq {} after seq {prev}",
                                    n + 1,
                                    m.seq
                                ),
                                Some(
                                    json!({"message": {"room": room, "seq": (prev + 1).to_string()}}),
                                ),
                                Some(frame_json(frame)),
                            )));
                        }
                        last = Some(m.seq);
                    }
                    _ => {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "{actor_name}: expected message {} of {count} in {room}",
                                n + 1
                            ),
                            Some(json!({"message": {"room": room}})),
                            Some(frame_json(frame)),
                        )));
                    }
                },
                _ => {
                    let want = json!({"message": {"room": room}});
                    return Err(self.missing(actor_name, timeout, want, event, &[]));
                }
            }
        }
        Ok(())
    }

    async fn drain(
        &mut self,
        actor_name: &str,
        kinds: &[String],
        until: &Value,
        timeout_ms: Option<&Value>,
    ) -> Result<(), Halt> {
        let until = self.substitute(until)?;
        let timeout = self.timeout(timeout_ms)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = self.next_event(actor_name, deadline).await;
            match &event {
                Some(Event::Frame(frame)) => {
                    let json = frame_json(frame);
                    if let Ok(caps) = matcher::matches(&until, &json) {
                        self.bind(caps);
                        return Ok(());
                    }
                    let kind = kind_of(frame);
                    if !kinds.iter().any(|k| camel(k) == kind) {
                        return Err(Halt::Fail(StepError::with(
                            format!(
                                "{actor_name}: while draining {kinds:?}, an unexpected {kind} arrived"
                            ),
                            Some(until),
                            Some(json),
                        )));
                    }
                }
                _ => return Err(self.missing(actor_name, timeout, until, event, &[])),
            }
        }
    }

    async fn resend_unacked(
        &mut self,
        actor_name: &str,
        bind: Option<&str>,
        timeout_ms: Option<&Value>,
    ) -> Result<(), Halt> {
        let outbox = self.actors[actor_name].outbox.clone();
        let mut ids = BTreeSet::new();
        for (_, template) in &outbox {
            let (frame, request_id, json) = self.build_frame(actor_name, template)?;
            self.send_frame(actor_name, &frame, json, true).await?;
            ids.insert(request_id);
        }
        let timeout = self
            .timeout(timeout_ms)?
            .saturating_add(Duration::from_millis(5 * outbox.len() as u64));
        let (replies, _) = self
            .await_replies(actor_name, &ids, timeout, false, false)
            .await?;
        let mut duplicates = 0;
        for frame in replies.values() {
            match &frame.body {
                Some(server_frame::Body::SendAck(a)) => duplicates += usize::from(a.duplicate),
                _ => {
                    return Err(Halt::Fail(StepError::with(
                        format!(
                            "{actor_name}: a resent message was not acked (§8.5: a repeat gets the original SendAck)"
                        ),
                        Some(json!({"sendAck": {}})),
                        Some(frame_json(frame)),
                    )));
                }
            }
        }
        if let Some(prefix) = bind {
            self.vars
                .set(format!("{prefix}.resent"), Value::from(outbox.len()));
            self.vars
                .set(format!("{prefix}.duplicates"), Value::from(duplicates));
        }
        Ok(())
    }

    async fn check_invariants(&mut self, spec: &InvariantSpec) -> Result<(), Halt> {
        let reader = spec.reader.clone();
        let max_page = self.env.limits["maxHistoryPage"]
            .as_u64()
            .unwrap_or(100)
            .max(1);
        let mut history = BTreeMap::new();
        for room in &spec.rooms {
            let room = self.substitute_text(room)?;
            let mut messages: Vec<MessageRecord> = Vec::new();
            let mut after = 0u64;
            // Bounded: a server that always says has_more cannot hang the suite.
            for _ in 0..10_000 {
                let request = json!({"fetchHistory": {"room": room, "afterSeq": after.to_string(), "limit": max_page}});
                let (frame, request_id, json) = self.build_frame(&reader, &request)?;
                self.send_frame(&reader, &frame, json, false).await?;
                let (replies, _) = self
                    .await_replies(
                        &reader,
                        &BTreeSet::from([request_id]),
                        self.env.step_timeout,
                        false,
                        false,
                    )
                    .await?;
                let reply = replies.into_values().next();
                let Some(server_frame::Body::HistoryPage(page)) =
                    reply.as_ref().and_then(|f| f.body.clone())
                else {
                    return Err(Halt::Fail(StepError::with(
                        format!("{reader}: FetchHistory of {room} did not return a HistoryPage"),
                        Some(json!({"historyPage": {}})),
                        reply.as_ref().map(frame_json),
                    )));
                };
                messages.extend(page.messages.iter().map(message_record));
                match page.messages.last() {
                    Some(last) if page.has_more => after = last.seq,
                    _ => break,
                }
            }
            history.insert(room, messages);
        }
        let complete: Vec<String> = spec.complete.clone();
        self.await_heads(&complete, &history).await?;
        let violations = invariants::check(&self.ledger, &history, &complete);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Halt::Fail(StepError::with(
                format!(
                    "{} invariant violation(s): {}",
                    violations.len(),
                    violations.join("; ")
                ),
                None,
                None,
            )))
        }
    }
}

impl Driver<'_> {
    /// Reads the actor's connection until it ends, keeping what arrives.
    async fn await_end(&mut self, actor: &str) {
        let deadline = tokio::time::Instant::now() + self.env.step_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(connection) = self.actor(actor).connection.as_mut() else {
                return;
            };
            let Some(event) = connection.next_event(remaining).await else {
                return;
            };
            let terminal = event.is_terminal();
            if self.observe(actor, &event) {
                self.actor(actor).pending.push_back(event);
            }
            if terminal {
                return;
            }
        }
    }

    /// Reads each complete actor's connection until it has received the
    /// head of every checked room, so completeness is judged on everything
    /// the server sent, not on how fast it arrived. Frames read here stay
    /// queued for later steps.
    async fn await_heads(
        &mut self,
        actors: &[String],
        history: &BTreeMap<String, Vec<MessageRecord>>,
    ) -> Result<(), Halt> {
        let deadline = tokio::time::Instant::now() + self.env.step_timeout;
        for actor in actors {
            for (room, messages) in history {
                let head = messages.last().map_or(0, |m| m.seq);
                let mut kept = VecDeque::new();
                loop {
                    let seen = self
                        .ledger
                        .received
                        .iter()
                        .filter(|(a, _, m)| a == actor && &m.room == room)
                        .map(|(_, _, m)| m.seq)
                        .max()
                        .unwrap_or(0);
                    let live = self.actors[actor.as_str()]
                        .connection
                        .as_ref()
                        .is_some_and(|c| !c.finished);
                    if seen >= head || !live {
                        break;
                    }
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let Some(connection) = self.actor(actor).connection.as_mut() else {
                        break;
                    };
                    let Some(event) = connection.next_event(remaining).await else {
                        break;
                    };
                    if self.observe(actor, &event) {
                        kept.push_back(event);
                    }
                }
                self.actor(actor).pending.extend(kept);
            }
        }
        Ok(())
    }
}

/// What an `http` step checks.
#[derive(Debug, Clone, Copy)]
struct HttpCheck<'s> {
    expect_status: u16,
    expect_body: Option<&'s Value>,
    expect_headers: &'s BTreeMap<String, Value>,
    capture_body: Option<&'s str>,
    repeat_until_status: Option<u16>,
    max_attempts: u32,
}

/// How a scenario ended early.
#[derive(Debug)]
pub enum RunHalt {
    /// Skipped with a reason.
    Skipped(String),
    /// Failed.
    Failed(Box<Failure>),
}

/// A `Ping` ClientFrame with `request_id`, padded by an unknown
/// length-delimited field 100 so that it encodes to exactly `size` bytes
/// (or the smallest such frame when `size` is too small).
pub fn padded_ping(request_id: u64, size: usize) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut head = Vec::new();
    varint(8, &mut head); // field 1 (request_id), varint
    varint(request_id, &mut head);
    head.extend_from_slice(&[0x5a, 0x00]); // field 11 (ping), empty message
    head.extend_from_slice(&[0xa2, 0x06]); // field 100, length-delimited: unknown
    // Find the padding length L with head + varint(L) + L == size.
    let mut pad = size.saturating_sub(head.len() + 1);
    loop {
        let mut len = Vec::new();
        varint(pad as u64, &mut len);
        let total = head.len() + len.len() + pad;
        if total <= size || pad == 0 {
            let mut out = head;
            out.extend_from_slice(&len);
            out.resize(out.len() + pad, b'x');
            return out;
        }
        pad -= total - size;
    }
}

fn event_summary(event: &Event) -> String {
    match event {
        Event::Frame(f) => format!("a {} frame", kind_of(f)),
        Event::Undecodable { reason, .. } => format!("an undecodable message ({reason})"),
        Event::Text(_) => "a text message".into(),
        Event::Closed { code, reason } => format!("a close (code {code:?}, reason {reason:?})"),
        Event::Ended { reason } => format!("the end of the connection ({reason})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_pings_have_the_exact_size_and_decode() {
        for size in [16, 127, 128, 129, 200, 16_384, 65_536, 65_537] {
            let bytes = padded_ping(9, size);
            assert_eq!(bytes.len(), size, "size {size}");
            let frame = confab_protocol::codec::decode_client_frame(&bytes, usize::MAX).unwrap();
            assert_eq!(frame.request_id, 9);
            assert!(matches!(frame.body, Some(client_frame::Body::Ping(_))));
        }
    }
}
