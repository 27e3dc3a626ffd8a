//! SendMessage (§8).

use std::time::Instant;

use confab_protocol::error::Rejection;
use confab_protocol::rules;
use confab_protocol::wire::{self, ErrorCode};
use futures_util::stream::FuturesOrdered;
use tokio::sync::oneshot;

use crate::auth::now_ms;
use crate::metrics::Metrics;
use crate::storage::{NewMessage, RelationColumns};
use crate::ws::connection::{Reader, internal, rate_limited};
use confab_protocol::batch::{BatchRequest, RelationRef, StoredKey};

/// Validate, authorise, rate-limit, then hand to the group-commit writer.
/// The SendAck is queued by the reader when the commit is durable (§8.3).
pub(super) async fn handle(
    reader: &mut Reader<'_>,
    send: wire::SendMessage,
    request_id: u64,
) -> Result<(), Rejection> {
    let received = Instant::now();
    let valid = rules::validate_send(&send, &reader.app.config.limits)?;
    let room_id = super::in_room(reader, &valid.room, || {
        reader
            .app
            .hub
            .member_room_id(&valid.room, &reader.user.name)
    })
    .await?;
    if let Err(wait) = reader
        .app
        .take_send_token(&reader.user.name, received)
        .await
    {
        // §12.5, R-12.5.4: a repeat is never refused for want of a token.
        // Storage is asked only now, with the bucket empty, so sends within
        // the rate pay nothing for this. (A token taken for what storage
        // then reports as a repeat is refunded when its SendAck is queued.)
        return answer_repeat(reader, &valid, request_id, wait).await;
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
        relation: valid.relation,
    };
    let ack = reader.app.writer.submit(message, received).await;
    reader
        .pending
        .get_or_insert_with(FuturesOrdered::new)
        .push_back(Box::pin(async move { (request_id, true, ack.await) }));
    Ok(())
}

/// SendMessage with an empty bucket: a repeat (§8.5) gets its original
/// SendAck, or IDEMPOTENCY_CONFLICT, as it would with a token; anything
/// else RATE_LIMITED.
async fn answer_repeat(
    reader: &mut Reader<'_>,
    valid: &rules::ValidSend,
    request_id: u64,
    wait: std::time::Duration,
) -> Result<(), Rejection> {
    let stored = reader
        .app
        .store
        .sent_message(reader.user.id, &valid.client_msg_id)
        .await
        .map_err(internal)?;
    let Some(stored) = stored else {
        Metrics::inc(&reader.app.metrics.rate_limited);
        return Err(rate_limited("SendMessage", wait));
    };
    // The storage writer's comparison (§8.5, R-8.6.4: room, text and
    // relation), from the protocol crate.
    let columns = RelationColumns::of_wire(stored.relation.as_ref());
    let key = StoredKey {
        sender: (),
        client_msg_id: stored.client_msg_id.as_str(),
        room: stored.room.as_str(),
        text: stored.text.as_str(),
        relation: columns.as_ref(),
        redacted: stored.redacted,
    };
    let request = BatchRequest {
        room: valid.room.as_str(),
        sender: (),
        client_msg_id: valid.client_msg_id.as_str(),
        text: valid.text.as_str(),
        relation: valid.relation.as_ref().map(RelationRef::of),
    };
    if !key.repeated_by(&request) {
        return Err(Rejection::new(
            ErrorCode::IdempotencyConflict,
            format!(
                "client_msg_id {} was already used for another room, text or relation; use a fresh id for a new message",
                valid.client_msg_id
            ),
        ));
    }
    Metrics::inc(&reader.app.metrics.duplicate_sends);
    Metrics::inc(&reader.app.metrics.repeats_past_rate_limit);
    let ack = wire::SendAck {
        room: stored.room.as_str().to_owned(),
        client_msg_id: stored.client_msg_id,
        seq: stored.seq,
        message_id: stored.message_id,
        server_ts_ms: stored.server_ts_ms,
        duplicate: true,
    };
    // Through the pending queue, behind any earlier send still waiting for
    // its commit, so SendAcks keep request order (§4.3).
    let (tx, rx) = oneshot::channel();
    tx.send(Ok(ack)).ok();
    reader
        .pending
        .get_or_insert_with(FuturesOrdered::new)
        .push_back(Box::pin(async move { (request_id, false, rx.await) }));
    Ok(())
}
