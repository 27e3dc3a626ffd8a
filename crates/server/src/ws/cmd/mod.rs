//! One handler per client request kind (§5-§11), dispatched by
//! [`handle_frame`].
//!
//! Each module takes the decoded request and the socket's [`Reader`] (its
//! user, connection id and reply queue) and returns the reply body, or
//! nothing when the hub or the commit path queues the reply itself, or a
//! [`Rejection`] that [`handle_frame`] turns into an Error frame. The socket
//! lifecycle (authentication, the read loop, the writer) stays in
//! [`super::connection`].

mod create_room;
mod fetch_history;
mod join_room;
mod leave_room;
mod list_members;
mod list_rooms;
mod mark_read;
mod ping;
mod resume;
mod send_message;
mod set_typing;

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::rules;
use confab_protocol::wire::{
    ClientFrame, ErrorCode, ServerFrame, client_frame::Body as ClientBody,
};

use super::connection::Reader;

/// Runs a hub check about `room` (exists, or the user is a member); in
/// cluster mode a ROOM_NOT_FOUND or NOT_A_MEMBER answer is checked against
/// storage first, since the room or the membership may have been made on
/// another node a moment ago and not reached this hub yet. So a node never
/// refuses on a stale view what storage already holds.
pub(super) async fn in_room<T>(
    reader: &Reader<'_>,
    room: &RoomName,
    check: impl Fn() -> Result<T, Rejection>,
) -> Result<T, Rejection> {
    match check() {
        Err(rejection)
            if matches!(
                rejection.code,
                ErrorCode::RoomNotFound | ErrorCode::NotAMember
            ) =>
        {
            let Some(cluster) = &reader.app.cluster else {
                return Err(rejection);
            };
            cluster
                .refresh_room(&reader.app.hub, reader.app.store.as_ref(), room)
                .await;
            check()
        }
        other => other,
    }
}

/// Handles one decoded client frame: checks its request id, runs the
/// handler for its kind and queues the reply or the Error.
pub(super) async fn handle_frame(reader: &mut Reader<'_>, frame: ClientFrame) {
    let ClientFrame { request_id, body } = frame;
    let Some(body) = body else { return };
    if let Err(rejection) = rules::check_request_id(request_id) {
        reader.send(&rejection.into_frame(0));
        return;
    }
    let name = body.name();
    let result = match body {
        ClientBody::Auth(_) => Err(Rejection::new(
            ErrorCode::AlreadyAuthenticated,
            "this socket is already authenticated; open a new socket to change users",
        )),
        ClientBody::Ping(ping) => Ok(Some(ping::handle(ping))),
        ClientBody::ListRooms(list) => list_rooms::handle(reader, list).await.map(Some),
        ClientBody::CreateRoom(create) => create_room::handle(reader, create, request_id)
            .await
            .map(|()| None),
        ClientBody::JoinRoom(join) => join_room::handle(reader, join, request_id)
            .await
            .map(|()| None),
        ClientBody::LeaveRoom(leave) => leave_room::handle(reader, leave).await.map(Some),
        ClientBody::ListMembers(list) => list_members::handle(reader, list).await.map(Some),
        ClientBody::SendMessage(send) => send_message::handle(reader, send, request_id)
            .await
            .map(|()| None),
        ClientBody::FetchHistory(fetch) => fetch_history::handle(reader, fetch).await.map(Some),
        ClientBody::Resume(resume) => {
            resume::handle(reader, resume, request_id).await;
            Ok(None)
        }
        // §11.2: no reply on success.
        ClientBody::SetTyping(typing) => set_typing::handle(reader, typing).await.map(|()| None),
        ClientBody::MarkRead(mark) => mark_read::handle(reader, mark).await.map(Some),
    };
    match result {
        Ok(Some(reply)) => reader.send(&ServerFrame::reply(request_id, reply)),
        Ok(None) => {}
        Err(rejection) => {
            tracing::debug!(conn = reader.conn, frame = name, code = ?rejection.code, "request rejected");
            reader.send(&rejection.into_frame(request_id));
        }
    }
}
