//! How a group's messages are delivered again: the delivery policy and its backoff, the steps a
//! store takes on pending entries (sweeps, moves), the parked consumer, and dead letters.

use std::time::Duration;

use super::{Entry, EntryId, Field, RangeBound};

/// Redelivery backoff: the wait before delivery number `n + 1` is `min * 2^(n - 1)`, at most
/// `max`, so a message that keeps failing is retried less and less often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Backoff before the second delivery.
    pub min: Duration,
    /// Backoff never exceeds this.
    pub max: Duration,
}

impl Backoff {
    /// The wait after an ack deadline expires or a nack, before delivery number
    /// `delivery_count + 1`, in milliseconds.
    pub fn after_ms(&self, delivery_count: u64) -> u64 {
        let doublings = u32::try_from(delivery_count.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(63);
        self.min_ms()
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms())
    }

    /// `min` in milliseconds.
    pub fn min_ms(&self) -> u64 {
        millis(self.min)
    }

    /// `max` in milliseconds.
    pub fn max_ms(&self) -> u64 {
        millis(self.max)
    }
}

/// A duration in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch by this machine's clock (the clock Redis ids follow);
/// 0 if the clock is before 1970.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// How a group's messages are delivered again: the one policy type, applied by whichever broker
/// instance sweeps the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// How long a delivered message may stay unacknowledged before it is redelivered.
    pub ack_deadline: Duration,
    /// The wait after an expired deadline or a nack, growing with each delivery.
    pub backoff: Backoff,
    /// Deliveries after which a message is dead-lettered instead of redelivered; 0: no limit.
    pub max_deliveries: u64,
    /// Where dead letters go; `None` for the stream beside their own (see
    /// [`dead_letter_stream_for`](Self::dead_letter_stream_for)).
    pub dead_letter_stream: Option<String>,
}

impl DeliveryPolicy {
    /// The dead-letter stream for messages of `stream`: the one asked for, else
    /// `<stream>:dlq`. On a Redis Cluster (`slot_safe`) the default must share the stream's slot
    /// (the move is one script over both keys): `{<stream>}:dlq`, or `<stream>:dlq` when the
    /// stream's name already carries a hash tag.
    pub fn dead_letter_stream_for(&self, stream: &str, slot_safe: bool) -> String {
        match &self.dead_letter_stream {
            Some(name) => name.clone(),
            None if slot_safe && !has_hash_tag(stream) => format!("{{{stream}}}:dlq"),
            None => format!("{stream}:dlq"),
        }
    }
}

/// Whether a key has a Redis Cluster hash tag (`{...}` with something inside).
pub(super) fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// One step of a group's redelivery sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepRequest {
    /// Where expired entries go once they reached the policy's `max_deliveries`: the policy's
    /// dead-letter stream resolved for the swept stream (the store uses this one).
    pub dead_letter_stream: String,
    /// The swept stream's name as clients know it, recorded in dead letters (the key itself may
    /// carry a namespace prefix).
    pub stream_label: String,
    /// When an entry is due, and when it is dead.
    pub policy: DeliveryPolicy,
    /// Where this page of the pending list starts.
    pub cursor: RangeBound,
    /// Most pending entries looked at.
    pub scan: usize,
    /// Most entries claimed for redelivery.
    pub claim: usize,
}

/// What a sweep step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Entries now held by the sweeping consumer, with their new delivery counts.
    pub claimed: Vec<(Entry, u64)>,
    /// Entries moved to the dead-letter stream (and acknowledged on their own).
    pub dead_lettered: Vec<EntryId>,
    /// Pending entries that were deleted or trimmed before anyone acknowledged them; Redis
    /// forgets them and so does the group.
    pub lost: Vec<EntryId>,
    /// Where the next sweep continues; `Unbounded` once the whole pending list was looked at.
    pub next_cursor: RangeBound,
}

/// What happens to pending entries moved between consumers (nack, extend, hand back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMove {
    /// Only entries this consumer holds; `None` for any holder.
    pub holder: Option<String>,
    /// The consumer that holds them afterwards.
    pub to: String,
    /// Their idle time afterwards.
    pub idle: IdleAfterMove,
    /// For [`IdleAfterMove::Backoff`]: idle = `horizon_ms` − backoff(delivery count).
    pub horizon_ms: u64,
}

/// The idle time of entries after a [`PendingMove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAfterMove {
    /// Exactly this many milliseconds (0: a fresh lease).
    Set(u64),
    /// Due after the backoff for each entry's delivery count, counted back from the move's
    /// horizon (see [`PARKED_CONSUMER`]).
    Backoff(Backoff),
}

/// The consumer that holds entries given back to the group (nacked, or held by a subscription
/// that ended). Entries it holds are due once idle for [`PARKED_HORIZON_MS`]: a nack with a
/// delay sets their idle time to the horizon minus the delay. Redis cannot set a delivery time in
/// the future, so this is how a delay is recorded in the group's own pending list, where every
/// broker instance sees it and a broker restart does not lose it.
pub const PARKED_CONSUMER: &str = "streamgate:parked";

/// How idle a parked entry must be to be redelivered; also the longest nack delay and the
/// longest ack deadline.
pub const PARKED_HORIZON_MS: u64 = 3_600_000;

/// Fields that open a dead letter, in this order, before the original fields.
pub const DEAD_LETTER_FIELDS: [&str; 5] = [
    "dlq.stream",
    "dlq.id",
    "dlq.group",
    "dlq.delivery_count",
    "dlq.reason",
];

/// A message moved to a dead-letter stream, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: EntryId,
    /// The stream it was produced to.
    pub stream: String,
    /// Its id there.
    pub original_id: EntryId,
    /// The group that gave up on it.
    pub group: String,
    /// How many times that group delivered it.
    pub delivery_count: u64,
    /// Why it was given up on.
    pub reason: String,
    /// The original fields.
    pub fields: Vec<Field>,
}

impl DeadLetter {
    /// Reads a dead-letter stream entry; `None` for an entry that does not have the dead-letter
    /// header (something else was written to that stream).
    pub fn from_entry(entry: Entry) -> Option<Self> {
        let mut fields = entry.fields.into_iter();
        let mut header = Vec::with_capacity(DEAD_LETTER_FIELDS.len());
        for expected in DEAD_LETTER_FIELDS {
            let field = fields.next()?;
            if field.name != expected {
                return None;
            }
            header.push(String::from_utf8(field.value.to_vec()).ok()?);
        }
        let [stream, original_id, group, delivery_count, reason]: [String; 5] =
            header.try_into().ok()?;
        Some(Self {
            id: entry.id,
            stream,
            original_id: original_id.parse().ok()?,
            group,
            delivery_count: delivery_count.parse().ok()?,
            reason,
            fields: fields.collect(),
        })
    }
}
