//! ListMembers (§7.5).

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::wire::{self, server_frame::Body as ServerBody};

use crate::ws::connection::Reader;

pub(super) async fn handle(
    reader: &Reader<'_>,
    list: wire::ListMembers,
) -> Result<ServerBody, Rejection> {
    let room = RoomName::parse(list.room)?;
    // Cluster mode: the members as PostgreSQL has them now, including a
    // join or leave made on another node a moment ago.
    if let Some(cluster) = &reader.app.cluster {
        cluster
            .refresh_room(&reader.app.hub, reader.app.store.as_ref(), &room)
            .await;
    }
    let members = super::in_room(reader, &room, || {
        reader.app.hub.members(&room, &reader.user.name)
    })
    .await?;
    Ok(ServerBody::MemberList(wire::MemberList {
        room: room.into_string(),
        members,
    }))
}
