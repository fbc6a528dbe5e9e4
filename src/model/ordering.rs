//! Ordered delivery's vocabulary: which field carries a message's ordering key, who holds the
//! messages waiting behind an earlier one of their key, where a group's ordering state lives,
//! and the steps a store applies to it atomically (the delivery core's `ordering` module has the design).

use super::has_hash_tag;
use super::{AckOutcome, Entry, EntryId};

/// The stream field that carries a message's ordering key (Produce's `ordering_key`, Pub/Sub's
/// `ordering_key`): a plain field, so any Redis client can set or read it.
pub const ORDERING_KEY_FIELD: &str = "sg.ordering_key";

/// The stream field that carries a message's expiry, in milliseconds since the Unix epoch
/// (Produce's `expire_at_ms` / `ttl_ms`): past it, the message is not delivered.
pub const EXPIRES_AT_FIELD: &str = "sg.expires_at";

/// The consumer that holds the messages of an ordered subscription waiting behind an earlier
/// message of their ordering key. They are in the group's pending list (so nothing is lost if
/// a broker dies) but never due: the redelivery sweep and consumer clean-up leave them alone
/// until the message ahead of them is settled and the next one is handed to the parked consumer.
pub const HELD_CONSUMER: &str = "streamgate:held";

/// The longest ordering key, in bytes (Pub/Sub's limit).
pub const MAX_ORDERING_KEY_BYTES: usize = 1024;

/// What is wrong with an ordering key, `None` when it is fine: the admission script keys its
/// sorted set with `key \0 id`, so a NUL would let one key's messages pass for another's.
pub fn ordering_key_problem(key: &str) -> Option<String> {
    if key.len() > MAX_ORDERING_KEY_BYTES {
        Some(format!(
            "is {} bytes, over the limit of {MAX_ORDERING_KEY_BYTES}",
            key.len()
        ))
    } else if key.contains('\0') {
        Some("must not contain a NUL character".into())
    } else {
        None
    }
}

/// Where a group's ordering state lives, beside its stream: a hash from ordering key to the id
/// of the key's outstanding message (its *head*), and a sorted set of the messages held back,
/// by key then id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderingState {
    /// Hash: ordering key → head id.
    pub heads: String,
    /// Sorted set (all scores 0, ordered by member): `key \0 ms-seq`, both zero-padded.
    pub held: String,
}

impl OrderingState {
    /// The state of `group` on `stream`; on a Redis Cluster (`slot_safe`) in the stream's slot,
    /// as the scripts that touch both need.
    pub fn of(stream: &str, group: &str, slot_safe: bool) -> Self {
        let base = if slot_safe && !has_hash_tag(stream) {
            format!("{{{stream}}}")
        } else {
            stream.to_owned()
        };
        Self {
            heads: format!("{base}:ordering:{group}"),
            held: format!("{base}:ordering-held:{group}"),
        }
    }
}

/// One atomic step on a group's ordering state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderStep {
    /// Reads new entries as `consumer` (XREADGROUP `>`, at most `count`) and admits them in the
    /// same atomic step: those whose key has an earlier message outstanding are held back
    /// (moved to [`HELD_CONSUMER`]), the rest become their key's head. What two members read at
    /// once is admitted in id order.
    Read {
        /// The reading member.
        consumer: String,
        /// Most entries read.
        count: usize,
    },
    /// Acknowledges `ids` (with a `holder`, only those it holds) and releases the next held
    /// message of each acknowledged one's key, in the same atomic step: no broker can die, and
    /// no reply from the store be lost, between an ack and its release (which left the key
    /// waiting for a heal pass).
    Ack {
        /// Only ids this consumer holds are acknowledged (exactly-once confirmations).
        holder: Option<String>,
        /// The ids to acknowledge.
        ids: Vec<EntryId>,
    },
    /// Entries no longer pending (dead-lettered, lost): the next held message of each one's
    /// key is handed to the parked consumer, due at once.
    Release(Vec<EntryId>),
    /// Looks at one page of heads from a cursor (0: the start) and releases every key whose
    /// head is no longer pending: repairs what a broker that died between an ack and its
    /// release left behind.
    Heal {
        /// Where the page starts.
        cursor: u64,
    },
}

/// What an [`OrderStep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ordered {
    /// Read: the entries held back (not to be delivered now).
    pub held: Vec<EntryId>,
    /// Read: the entries read and not held back, to deliver, in id order.
    pub read: Vec<Entry>,
    /// Held messages handed to the parked consumer, due now: the group's sweep delivers them.
    pub promoted: u64,
    /// Where healing continues (`Some(0)` after a release that met a deleted entry, whose key
    /// it could not read); `None`: nothing more to heal.
    pub heal_from: Option<u64>,
    /// Ack: what happened to each id, in order.
    pub acked: Vec<AckOutcome>,
}

#[cfg(test)]
mod tests {
    use super::OrderingState;

    #[test]
    fn the_state_shares_the_slot_of_its_stream_on_a_cluster() {
        let plain = OrderingState::of("orders", "billing", false);
        assert_eq!(plain.heads, "orders:ordering:billing");
        let safe = OrderingState::of("orders", "billing", true);
        assert_eq!(safe.held, "{orders}:ordering-held:billing");
        let tagged = OrderingState::of("{shop}:orders", "billing", true);
        assert_eq!(tagged.heads, "{shop}:orders:ordering:billing");
    }
}
