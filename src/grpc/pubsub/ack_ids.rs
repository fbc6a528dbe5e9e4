//! Ack ids: what a subscriber hands back to acknowledge or modify a delivery. Clients treat
//! them as opaque; here one is `{entry id}/{consumer}`: the message, and the group member it
//! was delivered to (so that with exactly-once delivery an ack from a member that no longer
//! holds the message is refused, as Pub/Sub refuses an expired ack id).

use crate::model::EntryId;

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
