//! Ping → Pong (§12.1): an application-level liveness check.

use confab_protocol::wire::{self, server_frame::Body as ServerBody};

pub(super) fn handle(ping: wire::Ping) -> ServerBody {
    ServerBody::Pong(wire::Pong { nonce: ping.nonce })
}
