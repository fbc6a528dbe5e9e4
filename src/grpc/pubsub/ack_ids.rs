//! Ack ids: what a subscriber hands back to acknowledge or modify a delivery. Clients treat
//! them as opaque; here one is `{entry id}/{consumer}`: the message, and the group member it
//! was delivered to (so that with exactly-once delivery an ack from a member that no longer
//! holds the message is refused, as Pub/Sub refuses an expired ack id).

use std::collections::HashMap;

use tonic_types::{ErrorDetails, StatusExt};

use crate::model::EntryId;

/// What the real service answers an Acknowledge or ModifyAckDeadline of an exactly-once
/// subscription whose ack ids no longer hold their message: the call fails, and an `ErrorInfo`
/// in the status details names each failed ack id, which the clients turn into an
/// `AcknowledgeError` (INVALID_ACK_ID) on that message's future.
pub(super) fn exactly_once_failure(failed: &[String]) -> tonic::Status {
    let metadata: HashMap<String, String> = failed
        .iter()
        .map(|ack_id| {
            (
                ack_id.clone(),
                "PERMANENT_FAILURE_INVALID_ACK_ID".to_owned(),
            )
        })
        .collect();
    tonic::Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!(
            "{} ack id(s) no longer hold their message (acknowledged already, or redelivered \
             after the ack deadline): exactly-once delivery refuses them",
            failed.len()
        ),
        ErrorDetails::with_error_info(
            "EXACTLY_ONCE_ACKID_FAILURE",
            "pubsub.googleapis.com",
            metadata,
        ),
    )
}

/// A delivery's ack id.
pub(super) fn encode(id: EntryId, consumer: &str) -> String {
    format!("{id}/{consumer}")
}

/// The entry id and member of an ack id; `None` for one this broker did not make.
pub(super) fn decode(ack_id: &str) -> Option<(EntryId, &str)> {
    let (id, consumer) = ack_id.split_once('/')?;
    Some((id.parse().ok()?, consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_round_trip_and_foreign_ones_are_refused() {
        let id = EntryId { ms: 17, seq: 3 };
        let ack = encode(id, "sg/pull-1");
        assert_eq!(decode(&ack), Some((id, "sg/pull-1")));
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode("x-1/c"), None);
    }
}
