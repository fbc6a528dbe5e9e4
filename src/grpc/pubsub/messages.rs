//! Pub/Sub messages as stream entries, and back: plain entries any Redis client reads.
//!
//! - `data` is the field `data` (always written, empty when the message has none, so that an
//!   attributes-only message is still an entry with fields);
//! - each attribute is a field of its own name, its value the attribute's UTF-8 text;
//! - the ordering key, when set, is the field `sg.ordering_key`, the one our own Produce writes
//!   (so ordered subscriptions of either API order by it);
//! - the message id is the entry id (`1700000000000-0`), and `publish_time` its milliseconds.
//!
//! Read back, an entry written by any other client becomes a message the same way: its `data`
//! field (if any) is the data, every other field an attribute (a value that is not UTF-8 is
//! passed with U+FFFD replacements), and the broker's own `traceparent` field stays an
//! attribute too, so the trace travels.

use std::collections::HashMap;

use bytes::Bytes;

use super::pb;
use crate::error::{BrokerError, BrokerResult};
use crate::model::{
    Entry, EntryId, Field, NewEntryId, NewMessage, ORDERING_KEY_FIELD, ordering_key_problem,
};

/// The field that holds a message's data.
pub(super) const DATA: &str = "data";

/// Pub/Sub's own limits on attributes, so that what is accepted here is accepted there.
const MAX_ATTRIBUTES: usize = 100;
const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;

/// A published message as the entry to append; `index` names it in errors.
pub(super) fn to_entry(index: usize, message: pb::PubsubMessage) -> BrokerResult<NewMessage> {
    let field = |what: &str| format!("messages[{index}].{what}");
    if message.data.is_empty() && message.attributes.is_empty() {
        return Err(BrokerError::invalid(
            field("data"),
            "is empty and the message has no attributes: a message needs one or the other",
        ));
    }
    if !message.message_id.is_empty() || message.publish_time.is_some() {
        return Err(BrokerError::invalid(
            field("message_id"),
            "message_id and publish_time are set by the server; leave them empty",
        ));
    }
    if message.attributes.len() > MAX_ATTRIBUTES {
        return Err(BrokerError::invalid(
            field("attributes"),
            format!(
                "has {} attributes, over Pub/Sub's limit of {MAX_ATTRIBUTES}",
                message.attributes.len()
            ),
        ));
    }
    let mut fields = Vec::with_capacity(message.attributes.len() + 2);
    fields.push(Field {
        name: DATA.to_owned(),
        value: Bytes::from(message.data),
    });
    // Sorted, so that the same message is always the same entry.
    let mut attributes: Vec<(String, String)> = message.attributes.into_iter().collect();
    attributes.sort_unstable();
    for (key, value) in attributes {
        if key.is_empty() || key == DATA || key == ORDERING_KEY_FIELD || key.starts_with("goog") {
            return Err(BrokerError::invalid(
                field(&format!("attributes[{key:?}]")),
                "attribute keys must not be empty, `data` (the field holding the data), \
                 `sg.ordering_key` (the field holding the ordering key) or start with `goog` (reserved)",
            ));
        }
        if key.len() > MAX_ATTRIBUTE_KEY_BYTES || value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(BrokerError::invalid(
                field(&format!("attributes[{key:?}]")),
                format!(
                    "keys are at most {MAX_ATTRIBUTE_KEY_BYTES} bytes and values at most \
                     {MAX_ATTRIBUTE_VALUE_BYTES} (Pub/Sub's limits)"
                ),
            ));
        }
        fields.push(Field {
            name: key,
            value: Bytes::from(value),
        });
    }
    if !message.ordering_key.is_empty() {
        if let Some(problem) = ordering_key_problem(&message.ordering_key) {
            return Err(BrokerError::invalid(field("ordering_key"), problem));
        }
        fields.push(Field {
            name: ORDERING_KEY_FIELD.to_owned(),
            value: Bytes::from(message.ordering_key),
        });
    }
    Ok(NewMessage {
        id: NewEntryId::Auto,
        fields,
        dedupe_key: None,
    })
}

/// A stored entry as the message a subscriber receives.
pub(super) fn from_entry(entry: Entry) -> pb::PubsubMessage {
    let mut message = pb::PubsubMessage {
        message_id: entry.id.to_string(),
        publish_time: Some(publish_time(entry.id)),
        ..Default::default()
    };
    let mut attributes = HashMap::with_capacity(entry.fields.len());
    for field in entry.fields {
        match field.name.as_str() {
            DATA if message.data.is_empty() => message.data = field.value.to_vec(),
            ORDERING_KEY_FIELD => {
                message.ordering_key = String::from_utf8_lossy(&field.value).into_owned()
            }
            _ => {
                attributes
                    .entry(field.name)
                    .or_insert_with(|| String::from_utf8_lossy(&field.value).into_owned());
            }
        }
    }
    message.attributes = attributes;
    message
}

/// When an entry was appended: its id's milliseconds.
fn publish_time(id: EntryId) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(id.ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((id.ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_through_its_entry() {
        let message = pb::PubsubMessage {
            data: b"hello".to_vec(),
            attributes: HashMap::from([("kind".into(), "order".into())]),
            ordering_key: "customer-7".into(),
            ..Default::default()
        };
        let entry = to_entry(0, message).unwrap();
        let names: Vec<&str> = entry.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["data", "kind", "sg.ordering_key"]);
        let id = EntryId {
            ms: 1_700_000_000_123,
            seq: 4,
        };
        let back = from_entry(Entry {
            id,
            fields: entry.fields,
        });
        assert_eq!(back.data, b"hello");
        assert_eq!(back.attributes["kind"], "order");
        assert_eq!(back.ordering_key, "customer-7");
        assert_eq!(back.message_id, "1700000000123-4");
        assert_eq!(back.publish_time.unwrap().nanos, 123_000_000);
    }

    #[test]
    fn bad_messages_are_refused_by_field() {
        let empty = to_entry(3, pb::PubsubMessage::default())
            .unwrap_err()
            .to_string();
        assert!(empty.contains("messages[3].data"), "{empty}");
        let reserved = pb::PubsubMessage {
            data: b"x".to_vec(),
            attributes: HashMap::from([("googx".into(), "1".into())]),
            ..Default::default()
        };
        let err = to_entry(0, reserved).unwrap_err().to_string();
        assert!(err.contains("goog"), "{err}");
    }
}
