//! JoinRoom (§7.3).

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::wire;

use crate::auth::now_ms;
use crate::ws::connection::{Reader, internal};

/// The hub queues RoomJoined itself, together with the room's activation.
pub(super) async fn handle(
    reader: &Reader<'_>,
    join: wire::JoinRoom,
    request_id: u64,
) -> Result<(), Rejection> {
    let name = RoomName::parse(join.name)?;
    let room_id = super::in_room(reader, &name, || reader.app.hub.room_id(&name)).await?;
    let member_version = reader
        .app
        .store
        .add_member(room_id, reader.user.id, now_ms())
        .await
        .map_err(internal)?;
    // Other nodes re-read the room, and this one catches up with its
    // head, before the activation starts from it.
    reader.app.announce_room(&name).await;
    reader.app.catch_up_room(&name).await;
    reader.app.hub.member_joined(
        reader.conn,
        &name,
        &reader.user.name,
        request_id,
        member_version,
    )
}
