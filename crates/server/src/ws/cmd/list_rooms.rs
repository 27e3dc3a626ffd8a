//! ListRooms (§7.1): the room list, optionally subscribing to its changes.

use confab_protocol::wire::{self, server_frame::Body as ServerBody};

use crate::ws::connection::Reader;

pub(super) fn handle(reader: &Reader<'_>, list: wire::ListRooms) -> ServerBody {
    ServerBody::RoomList(wire::RoomList {
        rooms: reader.app.hub.room_list(reader.conn, list.subscribe),
    })
}
