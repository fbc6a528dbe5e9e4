//! Message expiry: a message produced with an expiry (the field [`EXPIRES_AT_FIELD`], ms since
//! the epoch) is not delivered once it has passed. For a group it is acknowledged and counted
//! (`streamgate_messages_expired_total`), or moved to the dead-letter stream first when the
//! subscription asks (`dead_letter_expired`); a tail reader just does not see it.

use crate::error::BrokerResult;
use crate::model::{Append, Delivery, EXPIRES_AT_FIELD, EntryId, Field, NewMessage, now_ms};
use crate::store::Store;

use super::DeliveryCore;
use super::membership::GroupMembership;

/// When `delivery` expires, if it carries an expiry.
fn expires_at(delivery: &Delivery) -> Option<u64> {
    delivery
        .entry
        .fields
        .iter()
        .find(|f| f.name == EXPIRES_AT_FIELD)
        .and_then(|f| std::str::from_utf8(&f.value).ok()?.parse().ok())
}

/// Takes the expired messages out of `deliveries`; `None` when a non-empty batch expired
/// entirely (there may be more behind it: read on). `membership` is the group's, `None` for a
/// tail reader.
pub(super) async fn expire_out<S: Store>(
    core: &DeliveryCore<S>,
    membership: Option<&GroupMembership>,
    deliveries: Vec<Delivery>,
) -> BrokerResult<Option<Vec<Delivery>>> {
    if deliveries.is_empty() || !deliveries.iter().any(|d| expires_at(d).is_some()) {
        return Ok(Some(deliveries));
    }
    let now = now_ms();
    let (kept, expired): (Vec<Delivery>, Vec<Delivery>) = deliveries
        .into_iter()
        .partition(|d| expires_at(d).is_none_or(|at| at > now));
    for run in expired.chunk_by(|a, b| a.stream == b.stream) {
        let stream = &run[0].stream;
        crate::ops::metrics::expired(stream, run.len());
        let Some(membership) = membership.filter(|m| !m.no_ack) else {
            continue;
        };
        if membership.dead_letter_expired {
            dead_letter(core, membership, run).await?;
        }
        let ids: Vec<EntryId> = run.iter().map(|d| d.entry.id).collect();
        core.ack(stream, &membership.group, &ids).await?;
        tracing::debug!(stream = %stream, group = %membership.group, count = ids.len(), "expired messages were not delivered");
    }
    Ok((!kept.is_empty()).then_some(kept))
}

/// Copies expired messages to the group's dead-letter stream, with the usual `dlq.*` fields
/// first. Before the ack, not atomically with it: a broker dying in between leaves the message
/// pending, so it expires again and may be dead-lettered twice, never lost.
async fn dead_letter<S: Store>(
    core: &DeliveryCore<S>,
    membership: &GroupMembership,
    run: &[Delivery],
) -> BrokerResult<()> {
    let stream = &run[0].stream;
    let slot_safe = core.redelivery().settings().slot_safe_dead_letters;
    let dead_letter_stream = membership
        .delivery
        .dead_letter_stream_for(stream, slot_safe);
    let messages = run
        .iter()
        .map(|d| {
            let header = [
                ("dlq.stream", stream.clone()),
                ("dlq.id", d.entry.id.to_string()),
                ("dlq.group", membership.group.clone()),
                ("dlq.delivery_count", d.delivery_count.to_string()),
                (
                    "dlq.reason",
                    format!("expired at {} ms", expires_at(d).unwrap_or(0)),
                ),
            ];
            let mut fields: Vec<Field> = header
                .into_iter()
                .map(|(name, value)| Field {
                    name: name.to_owned(),
                    value: value.into(),
                })
                .collect();
            fields.extend(d.entry.fields.iter().cloned());
            NewMessage {
                fields,
                ..NewMessage::default()
            }
        })
        .collect();
    let request = Append {
        stream: dead_letter_stream,
        messages,
        ..Append::default()
    };
    for answer in core.append(std::slice::from_ref(&request)).await? {
        answer?;
    }
    crate::ops::metrics::redelivery(stream, 0, run.len(), 0);
    Ok(())
}
