//! Resume (§10.3): the hub queues the replies and any replay itself.

use confab_protocol::names::RoomName;
use confab_protocol::wire;

use crate::ws::connection::Reader;

pub(super) async fn handle(reader: &Reader<'_>, resume: wire::Resume, request_id: u64) {
    // Cluster mode: a room this hub would answer NOT_A_MEMBER for is
    // re-read from storage first (see `in_room`). Bounded by the Resume's
    // room count, which the frame size caps.
    if reader.app.cluster.is_some() {
        let mut rooms = Vec::with_capacity(resume.rooms.len());
        for position in &resume.rooms {
            if let Ok(room) = RoomName::parse(position.room.as_str()) {
                let refreshed = super::in_room(reader, &room, || {
                    reader.app.hub.member_room_id(&room, &reader.user.name)
                })
                .await;
                match refreshed {
                    Ok(_) => rooms.push(room),
                    Err(_) => {
                        tracing::debug!(%room, "resumed room is not the user's in storage either")
                    }
                }
            }
        }
        // Replay everything committed before the Resume, on any node.
        reader.app.catch_up(&rooms).await;
    }
    reader
        .app
        .hub
        .resume(reader.conn, &reader.user.name, &resume.rooms, request_id);
}
