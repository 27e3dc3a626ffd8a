//! FetchHistory (§9).

use confab_protocol::error::Rejection;
use confab_protocol::rules::HistoryQuery;
use confab_protocol::wire::{self, server_frame::Body as ServerBody};

use crate::ws::connection::{Reader, internal};

pub(super) async fn handle(
    reader: &Reader<'_>,
    fetch: wire::FetchHistory,
) -> Result<ServerBody, Rejection> {
    let query = HistoryQuery::from_request(&fetch, reader.app.config.limits.max_history_page)?;
    super::in_room(reader, &query.room, || {
        reader
            .app
            .hub
            .member_room_id(&query.room, &reader.user.name)
    })
    .await?;
    let slice = reader
        .app
        .store
        .history(&query.room, query.range, query.limit, reader.user.id)
        .await
        .map_err(internal)?;
    // §8.6.1: relations as this connection's capabilities say.
    let caps = reader.app.hub.relation_caps(reader.conn);
    let page = wire::HistoryPage {
        room: query.room.into_string(),
        messages: slice.messages.iter().map(|m| m.to_wire_for(caps)).collect(),
        has_more: slice.has_more,
        head_seq: slice.head_seq,
        epoch: slice.epoch,
        reactions: slice.reactions,
    };
    Ok(ServerBody::HistoryPage(page))
}
