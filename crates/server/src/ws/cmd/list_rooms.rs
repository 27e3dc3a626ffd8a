//! ListRooms (§7.1): one page of the room list, optionally subscribing to
//! its changes.

use confab_protocol::error::Rejection;
use confab_protocol::rules;
use confab_protocol::wire::{self, server_frame::Body as ServerBody};

use crate::ws::connection::Reader;

/// A page is at most `max_room_list_page` rooms, so no reply grows with the
/// number of rooms on the server (§12.4).
///
/// In cluster mode the heads are first brought up to PostgreSQL's, so a
/// room's head_seq includes what was sent on other nodes a moment ago.
pub(super) async fn handle(
    reader: &Reader<'_>,
    list: wire::ListRooms,
) -> Result<ServerBody, Rejection> {
    let cursor = rules::RoomListCursor::parse(&list.cursor)?;
    let limit = rules::room_list_limit(list.limit, reader.app.config.limits.max_room_list_page);
    if let Some(cluster) = &reader.app.cluster {
        cluster
            .sync_heads(&reader.app.hub, reader.app.store.as_ref())
            .await;
    }
    Ok(ServerBody::RoomList(reader.app.hub.room_list(
        reader.conn,
        list.subscribe,
        cursor.as_ref(),
        limit,
    )))
}
