//! SetTyping (§11.2): no reply on success.

use std::time::Instant;

use confab_protocol::error::Rejection;
use confab_protocol::names::RoomName;
use confab_protocol::wire;

use crate::metrics::Metrics;
use crate::ws::connection::{Reader, rate_limited};

pub(super) async fn handle(reader: &Reader<'_>, typing: wire::SetTyping) -> Result<(), Rejection> {
    let room = RoomName::parse(typing.room)?;
    let now = Instant::now();
    // per user and before the hub lock, so once the bucket is
    // empty a flood costs the room (and the lock) nothing.
    if let Err(wait) = reader.app.typing_rate.try_take(&reader.user.name, now) {
        Metrics::inc(&reader.app.metrics.typing_rate_limited);
        return Err(rate_limited("SetTyping", wait));
    }
    super::in_room(reader, &room, || {
        reader
            .app
            .hub
            .set_typing(&room, &reader.user.name, typing.active, now)
    })
    .await
}
