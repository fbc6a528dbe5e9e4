//! Domain types shared by the gRPC layer and the store: stream entry ids, range bounds, trim
//! policies, and what the store reports back. Nothing here knows about tonic or Redis; parsing
//! here is strict so that malformed input is refused before any command is sent.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;

/// A stream entry id, `<milliseconds>-<sequence>`, ordered the way Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The smallest id, `0-0`: "from the beginning" as a start position.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Builds an id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a piece of text is not a valid id or position; shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct ParseIdError {
    text: String,
    expected: &'static str,
}

impl ParseIdError {
    fn new(text: &str, expected: &'static str) -> Self {
        // Long garbage is cut so that an error message stays readable.
        let text: String = text.chars().take(64).collect();
        Self { text, expected }
    }
}

const ID_EXPECTED: &str = "a stream id (`<ms>-<seq>` or `<ms>`, decimal)";

fn parse_part(part: &str) -> Option<u64> {
    // `u64::from_str` accepts a leading `+`; Redis does not, and neither do we.
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

impl FromStr for EntryId {
    type Err = ParseIdError;

    /// Accepts `<ms>-<seq>` and `<ms>` (sequence 0), as Redis does in ranges and XADD.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError::new(text, ID_EXPECTED);
        match text.split_once('-') {
            Some((ms, seq)) => Ok(Self::new(
                parse_part(ms).ok_or_else(err)?,
                parse_part(seq).ok_or_else(err)?,
            )),
            None => Ok(Self::new(parse_part(text).ok_or_else(err)?, 0)),
        }
    }
}

/// The id a producer asks for when appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewEntryId {
    /// `*`: Redis generates the whole id.
    Auto,
    /// `<ms>-*`: the producer fixes the time, Redis picks the sequence.
    AutoSequence(u64),
    /// A fully explicit id.
    Explicit(EntryId),
}

impl FromStr for NewEntryId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "an entry id to append (empty or `*`, `<ms>-<seq>`, `<ms>` or `<ms>-*`, greater than 0-0)";
        match text {
            "" | "*" => Ok(Self::Auto),
            _ => {
                if let Some(ms) = text.strip_suffix("-*") {
                    return parse_part(ms)
                        .map(Self::AutoSequence)
                        .ok_or_else(|| ParseIdError::new(text, EXPECTED));
                }
                match text.parse::<EntryId>() {
                    Ok(EntryId::ZERO) | Err(_) => Err(ParseIdError::new(text, EXPECTED)),
                    Ok(id) => Ok(Self::Explicit(id)),
                }
            }
        }
    }
}

impl fmt::Display for NewEntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("*"),
            Self::AutoSequence(ms) => write!(f, "{ms}-*"),
            Self::Explicit(id) => id.fmt(f),
        }
    }
}

/// A position that may be "the stream's current end" (`$`): where a group starts, or where a
/// tailing subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartId {
    /// `$` (or empty): only entries added from now on.
    Latest,
    /// After this id (`0` means the whole stream).
    After(EntryId),
}

impl FromStr for StartId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" | "$" => Ok(Self::Latest),
            _ => text
                .parse()
                .map(Self::After)
                .map_err(|_| ParseIdError::new(text, "a start position (`$`, `0` or a stream id)")),
        }
    }
}

impl fmt::Display for StartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("$"),
            Self::After(id) => id.fmt(f),
        }
    }
}

/// One end of an id range (XRANGE, XPENDING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeBound {
    /// `-` or `+`: open on this side.
    Unbounded,
    /// This id is included.
    Inclusive(EntryId),
    /// `(<id>`: this id is excluded.
    Exclusive(EntryId),
}

impl RangeBound {
    /// Parses a bound; `open` is the Redis token for "unbounded" on this side (`-` or `+`).
    pub fn parse(text: &str, open: &'static str) -> Result<Self, ParseIdError> {
        let err = || ParseIdError::new(text, "a range bound (`-`, `+`, a stream id or `(<id>`)");
        if text.is_empty() || text == open {
            return Ok(Self::Unbounded);
        }
        match text.strip_prefix('(') {
            Some(rest) => rest.parse().map(Self::Exclusive).map_err(|_| err()),
            None => text.parse().map(Self::Inclusive).map_err(|_| err()),
        }
    }

    /// The Redis argument for this bound; `open` is `-` or `+`.
    pub fn to_arg(self, open: &str) -> String {
        match self {
            Self::Unbounded => open.to_owned(),
            Self::Inclusive(id) => id.to_string(),
            Self::Exclusive(id) => format!("({id}"),
        }
    }
}

/// An id range, both ends included unless marked exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// Lower end.
    pub min: RangeBound,
    /// Upper end.
    pub max: RangeBound,
}

/// A message field: a text name and a binary-safe value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Field value.
    pub value: Bytes,
}

/// A stored stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub id: EntryId,
    /// Its fields, in stored order.
    pub fields: Vec<Field>,
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The id to append under.
    pub id: NewEntryId,
    /// Its fields; never empty.
    pub fields: Vec<Field>,
}

/// One Produce request as the store takes it: messages for one stream, appended in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// Target stream.
    pub stream: String,
    /// Messages, in order; never empty.
    pub messages: Vec<NewMessage>,
    /// Trimming applied with each message.
    pub trim: Option<TrimPolicy>,
    /// NOMKSTREAM: fail instead of creating the stream.
    pub require_existing_stream: bool,
}

/// What a trim evicts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimThreshold {
    /// Keep at most this many entries.
    MaxLen(u64),
    /// Evict entries below this id.
    MinId(EntryId),
}

/// A trim policy as XADD and XTRIM take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimPolicy {
    /// What to trim by.
    pub threshold: TrimThreshold,
    /// `~`: trim whole nodes only.
    pub approximate: bool,
    /// LIMIT; only with `approximate`.
    pub limit: Option<u64>,
}

/// A message delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stream it came from.
    pub stream: String,
    /// The entry.
    pub entry: Entry,
    /// Group mode: deliveries so far, this one included; 0 in tail mode.
    pub delivery_count: u64,
}

/// XINFO STREAM, minus what we do not expose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Number of entries.
    pub length: u64,
    /// Radix tree keys.
    pub radix_tree_keys: u64,
    /// Radix tree nodes.
    pub radix_tree_nodes: u64,
    /// Consumer groups.
    pub groups: u64,
    /// Highest id generated.
    pub last_generated_id: String,
    /// Highest id deleted.
    pub max_deleted_entry_id: String,
    /// Entries ever added.
    pub entries_added: u64,
    /// First recorded id.
    pub recorded_first_entry_id: String,
    /// Oldest entry.
    pub first_entry: Option<Entry>,
    /// Newest entry.
    pub last_entry: Option<Entry>,
}

/// XINFO GROUPS, one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Consumers in it.
    pub consumers: u64,
    /// Pending entries.
    pub pending: u64,
    /// Last delivered id.
    pub last_delivered_id: String,
    /// Logical read counter, when known.
    pub entries_read: Option<i64>,
    /// Lag, when known (unknown after deletions: never report it as zero).
    pub lag: Option<i64>,
}

/// XINFO CONSUMERS, one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// Pending entries it holds.
    pub pending: u64,
    /// Milliseconds since its last read or claim.
    pub idle_ms: u64,
}

/// XPENDING summary form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSummary {
    /// Pending entries in the group.
    pub count: u64,
    /// Lowest and highest pending id, when any.
    pub bounds: Option<(EntryId, EntryId)>,
    /// Pending entries per consumer.
    pub consumers: Vec<(String, u64)>,
}

/// XPENDING extended form, one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// Entry id.
    pub id: EntryId,
    /// Owner.
    pub consumer: String,
    /// Milliseconds since last delivery.
    pub idle_ms: u64,
    /// Deliveries so far.
    pub delivery_count: u64,
}

/// Filters for listing pending entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingQuery {
    /// Id range.
    pub range: IdRange,
    /// Most entries.
    pub count: u64,
    /// Only this consumer's.
    pub consumer: Option<String>,
    /// Only entries idle at least this long.
    pub min_idle_ms: u64,
}

/// XCLAIM arguments beyond stream, group and consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOptions {
    /// Only entries idle at least this long.
    pub min_idle_ms: u64,
    /// Ids to claim.
    pub ids: Vec<EntryId>,
    /// IDLE.
    pub idle_ms: Option<u64>,
    /// TIME.
    pub time_ms: Option<u64>,
    /// RETRYCOUNT.
    pub retry_count: Option<u64>,
    /// FORCE.
    pub force: bool,
    /// JUSTID.
    pub just_id: bool,
}

/// XAUTOCLAIM arguments beyond stream, group and consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoClaimOptions {
    /// Only entries idle at least this long.
    pub min_idle_ms: u64,
    /// Where the scan of the pending list starts.
    pub start: EntryId,
    /// Most entries claimed.
    pub count: usize,
    /// JUSTID.
    pub just_id: bool,
}

/// What a claim returns: full entries, or ids only with JUSTID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Claimed entries (empty with JUSTID).
    pub entries: Vec<Entry>,
    /// Claimed ids.
    pub ids: Vec<EntryId>,
}

/// XAUTOCLAIM's reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoClaimed {
    /// Cursor for the next call; `0-0` when done.
    pub next_start: EntryId,
    /// What was claimed.
    pub claimed: Claimed,
    /// Pending ids whose entries were gone; Redis dropped them from the PEL.
    pub deleted_ids: Vec<EntryId>,
}

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
fn has_hash_tag(key: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_strictly() {
        assert_eq!("1-2".parse(), Ok(EntryId::new(1, 2)));
        assert_eq!("17".parse(), Ok(EntryId::new(17, 0)));
        for bad in [
            "",
            "1-x",
            "abc",
            "-5",
            "+5",
            "1-",
            "-",
            "1-2-3",
            "1 -2",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ids_order_like_redis() {
        assert!(EntryId::new(1, 9) < EntryId::new(2, 0));
        assert!(EntryId::new(2, 1) > EntryId::new(2, 0));
    }

    #[test]
    fn new_entry_ids() {
        assert_eq!("".parse(), Ok(NewEntryId::Auto));
        assert_eq!("*".parse(), Ok(NewEntryId::Auto));
        assert_eq!("5-*".parse(), Ok(NewEntryId::AutoSequence(5)));
        assert_eq!("5-1".parse(), Ok(NewEntryId::Explicit(EntryId::new(5, 1))));
        for bad in ["0-0", "0", "x-*", "5-x", "-5"] {
            assert!(bad.parse::<NewEntryId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn start_ids() {
        assert_eq!("$".parse(), Ok(StartId::Latest));
        assert_eq!("".parse(), Ok(StartId::Latest));
        assert_eq!("0".parse(), Ok(StartId::After(EntryId::ZERO)));
        assert!("latest".parse::<StartId>().is_err());
    }

    #[test]
    fn range_bounds() {
        assert_eq!(RangeBound::parse("-", "-"), Ok(RangeBound::Unbounded));
        assert_eq!(RangeBound::parse("", "+"), Ok(RangeBound::Unbounded));
        assert_eq!(
            RangeBound::parse("(3-1", "-"),
            Ok(RangeBound::Exclusive(EntryId::new(3, 1)))
        );
        assert_eq!(
            RangeBound::Exclusive(EntryId::new(3, 1)).to_arg("-"),
            "(3-1"
        );
        assert!(RangeBound::parse("+", "-").is_err());
        assert!(RangeBound::parse("((1", "-").is_err());
    }

    #[test]
    fn parse_errors_name_the_text_and_stay_short() {
        let err = "1-x".parse::<EntryId>().unwrap_err().to_string();
        assert!(err.contains("`1-x`"), "{err}");
        let long = "x".repeat(10_000);
        assert!(long.parse::<EntryId>().unwrap_err().to_string().len() < 200);
    }
}
