//! ListMembers (§7.5).

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::wire::{self, server_frame::Body as ServerBody};

use crate::ws::connection::Reader;

pub(super) fn handle(
    reader: &Reader<'_>,
    list: wire::ListMembers,
) -> Result<ServerBody, Rejection> {
    let room = RoomName::parse(list.room)?;
    let members = reader.app.hub.members(&room, &reader.user.name)?;
    Ok(ServerBody::MemberList(wire::MemberList {
        room: room.into_string(),
        members,
    }))
}
