//! MarkRead (§11.3): move the user's read marker, reply with the state,
//! and tell the user's other connections when it moved.

use std::time::Instant;

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::wire::{self, server_frame::Body};

use crate::metrics::Metrics;
use crate::storage::StoreError;
use crate::ws::connection::{Reader, internal, rate_limited};

pub(super) async fn handle(reader: &Reader<'_>, mark: wire::MarkRead) -> Result<Body, Rejection> {
    let room = RoomName::parse(mark.room)?;
    // per user and before storage, so a flood costs one bucket
    // check per frame and no writes.
    if let Err(wait) = reader
        .app
        .mark_read_rate
        .try_take(&reader.user.name, Instant::now())
    {
        Metrics::inc(&reader.app.metrics.mark_read_rate_limited);
        return Err(rate_limited("MarkRead", wait));
    }
    let room_id = super::in_room(reader, &room, || {
        reader.app.hub.member_room_id(&room, &reader.user.name)
    })
    .await?;
    let (state, moved) = reader
        .app
        .store
        .mark_read(room_id, reader.user.id, &reader.user.name, mark.seq)
        .await
        .map_err(|err| match err {
            // Left between the check and the write.
            StoreError::NotFound => crate::hub::not_member(&room),
            other => internal(other),
        })?;
    if moved {
        reader
            .app
            .hub
            .read_state_moved(&reader.user.name, Some(reader.conn), state.clone());
    }
    Ok(Body::ReadState(state))
}
