//! Resume (§10.3): the hub queues the replies and any replay itself.

use confab_protocol::wire;

use crate::ws::connection::Reader;

pub(super) fn handle(reader: &Reader<'_>, resume: wire::Resume, request_id: u64) {
    reader
        .app
        .hub
        .resume(reader.conn, &reader.user.name, &resume.rooms, request_id);
}
