//! Domain values into response messages: one `From` impl per type, gathered here.

use crate::calls::Event;
use crate::calls::fetch::Fetched;
use crate::delivery::Resume;
use crate::grpc::pb;
use crate::model::{
    AutoClaimed, ConsumerInfo, DeadLetter, Delivery, DeliveryPolicy, Entry, EntryId, Field,
    GroupInfo, HELD_CONSUMER, PARKED_CONSUMER, PendingEntry, PendingState, PendingSummary,
    StreamInfo,
};
use crate::ops::telemetry::stored_traceparent;

/// Fetch's result as the response message.
impl From<Fetched> for pb::FetchResponse {
    fn from(fetched: Fetched) -> Self {
        Self {
            messages: fetched.deliveries.into_iter().map(Into::into).collect(),
            next: fetched
                .next
                .into_iter()
                .map(|(stream, resume)| pb::StreamStart {
                    stream,
                    after_id: match resume {
                        Resume::After(id) => id.to_string(),
                        Resume::New => ">".to_owned(),
                    },
                })
                .collect(),
        }
    }
}

/// Ids as text, in order.
pub fn id_strings(ids: &[EntryId]) -> Vec<String> {
    ids.iter().map(EntryId::to_string).collect()
}

impl From<Field> for pb::Field {
    fn from(field: Field) -> Self {
        Self {
            name: field.name,
            value: field.value,
        }
    }
}

impl From<Entry> for pb::Entry {
    fn from(entry: Entry) -> Self {
        Self {
            id: entry.id.to_string(),
            fields: entry.fields.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<DeadLetter> for pb::DeadLetter {
    fn from(letter: DeadLetter) -> Self {
        Self {
            id: letter.id.to_string(),
            stream: letter.stream,
            original_id: letter.original_id.to_string(),
            group: letter.group,
            delivery_count: letter.delivery_count,
            reason: letter.reason,
            fields: letter.fields.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Delivery> for pb::ReceivedMessage {
    fn from(delivery: Delivery) -> Self {
        // The deliver span was recorded when the core read it (`telemetry::record_delivery`).
        let traceparent = stored_traceparent(&delivery.entry.fields)
            .unwrap_or_default()
            .to_owned();
        Self {
            stream: delivery.stream,
            id: delivery.entry.id.to_string(),
            fields: delivery.entry.fields.into_iter().map(Into::into).collect(),
            delivery_count: delivery.delivery_count,
            traceparent,
        }
    }
}

impl From<Event> for pb::SubscribeResponse {
    fn from(event: Event) -> Self {
        use pb::subscribe_response::Event as Kind;
        let event = match event {
            Event::Started { consumer, streams } => {
                Kind::Started(pb::SubscriptionStarted { consumer, streams })
            }
            Event::Message(delivery) => Kind::Message(delivery.into()),
            Event::Heartbeat => Kind::Heartbeat(pb::Heartbeat {}),
        };
        Self { event: Some(event) }
    }
}

impl From<StreamInfo> for pb::StreamInfo {
    fn from(info: StreamInfo) -> Self {
        Self {
            length: info.length,
            radix_tree_keys: info.radix_tree_keys,
            radix_tree_nodes: info.radix_tree_nodes,
            groups: info.groups,
            last_generated_id: info.last_generated_id,
            max_deleted_entry_id: info.max_deleted_entry_id,
            entries_added: info.entries_added,
            first_entry: info.first_entry.map(Into::into),
            last_entry: info.last_entry.map(Into::into),
            recorded_first_entry_id: info.recorded_first_entry_id,
        }
    }
}

impl From<GroupInfo> for pb::GroupInfo {
    fn from(info: GroupInfo) -> Self {
        Self {
            name: info.name,
            consumers: info.consumers,
            pending: info.pending,
            last_delivered_id: info.last_delivered_id,
            entries_read: info.entries_read,
            lag: info.lag,
        }
    }
}

impl From<ConsumerInfo> for pb::ConsumerInfo {
    fn from(info: ConsumerInfo) -> Self {
        let role = match info.name.as_str() {
            PARKED_CONSUMER => pb::ConsumerRole::ParkedMessages,
            HELD_CONSUMER => pb::ConsumerRole::WaitingForKeyMessages,
            _ => pb::ConsumerRole::Member,
        };
        Self {
            name: info.name,
            pending: info.pending,
            idle_ms: info.idle_ms,
            role: role as i32,
        }
    }
}

impl From<PendingSummary> for pb::PendingSummary {
    fn from(summary: PendingSummary) -> Self {
        let (min_id, max_id) = summary
            .bounds
            .map(|(min, max)| (min.to_string(), max.to_string()))
            .unwrap_or_default();
        Self {
            count: summary.count,
            min_id,
            max_id,
            consumers: summary
                .consumers
                .into_iter()
                .map(|(consumer, pending)| pb::ConsumerPendingCount { consumer, pending })
                .collect(),
        }
    }
}

/// A pending entry with its state and when it becomes due under `policy`, the group's.
pub fn pending_entry(entry: PendingEntry, policy: &DeliveryPolicy) -> pb::PendingEntry {
    let (state, due_in_ms) = entry.state(policy);
    let state = match state {
        PendingState::Delivered => pb::PendingState::Delivered,
        PendingState::Parked => pb::PendingState::Parked,
        PendingState::WaitingForKey => pb::PendingState::WaitingForKey,
    };
    pb::PendingEntry {
        id: entry.id.to_string(),
        consumer: entry.consumer,
        idle_ms: entry.idle_ms,
        delivery_count: entry.delivery_count,
        state: state as i32,
        due_in_ms,
    }
}

impl From<AutoClaimed> for pb::AutoClaimResponse {
    fn from(result: AutoClaimed) -> Self {
        Self {
            next_start_id: result.next_start.to_string(),
            claimed_ids: id_strings(&result.claimed.ids),
            messages: result.claimed.entries.into_iter().map(Into::into).collect(),
            deleted_ids: id_strings(&result.deleted_ids),
        }
    }
}
