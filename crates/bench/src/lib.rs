//! Confab's load generator: measures the reference server over the real
//! protocol and runs the same workloads against two baselines.
//!
//! The measured path is the user's path: HTTP register and login, a
//! WebSocket with subprotocol `confab.v1`, Auth, JoinRoom or Resume,
//! SendMessage, SendAck and Message pushes, all encoded with
//! `confab_protocol`. Publishing is *open loop*: every send has an intended
//! time on a fixed-rate schedule, and every latency is measured from that
//! intended time, so a server (or generator) that falls behind shows up as
//! latency instead of silently lowering the offered load (no coordinated
//! omission).
//!
//! Layout:
//! - [`clock`]: the shared monotonic clock and the open-loop schedule.
//! - [`stats`]: HDR histograms, per-phase counters and their summaries.
//! - [`http`]: register and login (§5.2, §5.3) with the bot SDK's client,
//!   and the bench's retry policy.
//! - [`client`]: one WebSocket client connection in either dialect (Confab
//!   protobuf frames or the Node baseline's JSON), and its event loop.
//! - [`push`]: reading a Message push in place, without a full decode.
//! - [`target`]: the servers under test: a spawned `confab-server`, the
//!   in-crate stack ceiling, the Node.js `ws` baseline; RSS and CPU probes.
//! - [`ceiling`]: the minimal broadcast server used as the stack ceiling.
//! - [`workload`]: `idle`, `fanout`, `ingest` and `reconnect-storm`.
//! - [`cluster`]: the reference server on a scratch PostgreSQL database,
//!   as one node or as N nodes sharing it and one NATS.
//! - [`pgbench`]: the PostgreSQL baseline of cluster ingest, pgbench doing
//!   Confab's batch transaction.

pub mod ceiling;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod error;
pub mod http;
pub mod pgbench;
pub mod push;
pub mod stats;
pub mod target;
pub mod workload;

pub use error::BenchError;
