//! SetTyping (§11.2): no reply on success.

use std::time::Instant;

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::wire;

use crate::ws::connection::Reader;

pub(super) fn handle(reader: &Reader<'_>, typing: wire::SetTyping) -> Result<(), Rejection> {
    let room = RoomName::parse(typing.room)?;
    reader
        .app
        .hub
        .set_typing(&room, &reader.user.name, typing.active, Instant::now())
}
