//! CreateRoom (§7.2).

use std::time::Instant;

use confab_protocol::error::Rejection;
use confab_protocol::names::{RoomName, Topic};
use confab_protocol::wire::{self, ErrorCode};

use crate::auth::now_ms;
use crate::metrics::Metrics;
use crate::storage::{RoomRecord, StoreError};
use crate::ws::connection::{Reader, internal, rate_limited};

/// The hub queues RoomJoined itself, together with the room's activation.
pub(super) async fn handle(
    reader: &Reader<'_>,
    create: wire::CreateRoom,
    request_id: u64,
) -> Result<(), Rejection> {
    let name = RoomName::parse(create.name)?;
    let topic = Topic::parse(create.topic)?;
    // after validation, so a malformed request costs no token.
    if let Err(wait) = reader
        .app
        .take_room_create_token(&reader.user.name, Instant::now())
        .await
    {
        Metrics::inc(&reader.app.metrics.room_create_rate_limited);
        return Err(rate_limited("CreateRoom", wait));
    }
    let epoch = uuid::Uuid::new_v4().simple().to_string();
    let now = now_ms();
    let id = match reader
        .app
        .store
        .create_room(&name, topic.as_str(), &epoch, reader.user.id, now)
        .await
    {
        Ok(id) => id,
        Err(StoreError::AlreadyExists) => {
            return Err(Rejection::new(
                ErrorCode::RoomExists,
                format!("room {name} already exists; join it instead"),
            ));
        }
        Err(err) => return Err(internal(err)),
    };
    let record = RoomRecord {
        id,
        name,
        topic: topic.into_string(),
        epoch,
        head_seq: 0,
        last_activity_ms: now,
        members: vec![reader.user.name.clone()],
        member_version: 0,
    };
    reader.app.announce_room(&record.name).await;
    reader.app.hub.room_created(reader.conn, record, request_id);
    Ok(())
}
