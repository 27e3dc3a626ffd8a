//! SendMessage (§8).

use std::time::Instant;

use confab_protocol::error::Rejection;
use confab_protocol::rules;
use confab_protocol::wire;
use futures_util::stream::FuturesOrdered;

use crate::auth::now_ms;
use crate::metrics::Metrics;
use crate::storage::NewMessage;
use crate::ws::connection::Reader;

/// Validate, authorise, rate-limit, then hand to the group-commit writer.
/// The SendAck is queued by the reader when the commit is durable (§8.3).
pub(super) async fn handle(
    reader: &mut Reader<'_>,
    send: wire::SendMessage,
    request_id: u64,
) -> Result<(), Rejection> {
    let received = Instant::now();
    let valid = rules::validate_send(&send, &reader.app.config.limits)?;
    let room_id = reader
        .app
        .hub
        .member_room_id(&valid.room, &reader.user.name)?;
    if let Err(wait) = reader.app.send_rate.try_send(&reader.user.name, received) {
        Metrics::inc(&reader.app.metrics.rate_limited);
        let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
        return Err(Rejection::rate_limited(ms));
    }
    let message = NewMessage {
        room_id,
        room: valid.room,
        sender_id: reader.user.id,
        sender: reader.user.name.clone(),
        client_msg_id: valid.client_msg_id,
        text: valid.text.into_string(),
        kind: valid.kind,
        server_ts_ms: now_ms(),
    };
    let ack = reader.app.writer.submit(message, received).await;
    reader
        .pending
        .get_or_insert_with(FuturesOrdered::new)
        .push_back(Box::pin(async move { (request_id, ack.await) }));
    Ok(())
}
