//! LeaveRoom (§7.4).

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::wire::{self, server_frame::Body as ServerBody};

use crate::ws::connection::{Reader, internal};

pub(super) async fn handle(
    reader: &Reader<'_>,
    leave: wire::LeaveRoom,
) -> Result<ServerBody, Rejection> {
    let name = RoomName::parse(leave.name)?;
    let room_id = super::in_room(reader, &name, || {
        reader.app.hub.member_room_id(&name, &reader.user.name)
    })
    .await?;
    let member_version = reader
        .app
        .store
        .remove_member(room_id, reader.user.id)
        .await
        .map_err(internal)?;
    reader
        .app
        .hub
        .member_left(&name, &reader.user.name, member_version);
    // Before RoomLeft: every node drops the room from this user's sockets
    // before it delivers anything sent after the answer.
    reader.app.announce_room(&name).await;
    Ok(ServerBody::RoomLeft(wire::RoomLeft {
        name: name.into_string(),
    }))
}
