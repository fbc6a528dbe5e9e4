//! Domain types shared by the gRPC layer and the store: stream entry ids and positions
//! ([`ids`]), entries and what the store reports back (here), how a group's messages are
//! delivered again ([`delivery`]), per-key order ([`ordering`]), and stored subscriptions ([`subscription`]). Nothing here
//! knows about tonic; what it knows of Redis is plain data (the shapes of XINFO and XPENDING
//! replies, the names of the consumers the design reserves).

mod delayed;
mod delivery;
mod filter;
mod ids;
mod ordering;
mod pending_state;
mod retention;
mod subscription;

pub use delayed::*;
pub use delivery::*;
pub use filter::{Filter, FilterError};
pub use ids::*;
pub use ordering::*;
pub use pending_state::*;
pub use retention::*;
pub use subscription::*;

use bytes::Bytes;

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

impl Entry {
    /// The bytes of its field names and values: what byte credit and frame limits count.
    pub fn field_bytes(&self) -> usize {
        self.fields
            .iter()
            .map(|f| f.name.len() + f.value.len())
            .sum()
    }
}

/// What an acknowledgement by a named consumer did to one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It was held by that consumer and is acknowledged now.
    Acked,
    /// It was not pending: never delivered, or acknowledged already.
    NotPending,
    /// Another consumer holds it (the deadline passed and the group redelivered it): the work
    /// done on it is a duplicate.
    HeldByOther,
}

/// A message to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    /// The id to append under.
    pub id: NewEntryId,
    /// Its fields; never empty.
    pub fields: Vec<Field>,
    /// Idempotent produce: a second message with the same key within the stream's dedupe
    /// window is not stored; the first one's id is answered instead.
    pub dedupe_key: Option<String>,
}

/// One Produce request as the store takes it: messages for one stream, appended in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Append {
    /// Target stream.
    pub stream: String,
    /// Messages, in order; never empty.
    pub messages: Vec<NewMessage>,
    /// Trimming applied with each message.
    pub trim: Option<TrimPolicy>,
    /// NOMKSTREAM: fail instead of creating the stream.
    pub require_existing_stream: bool,
    /// Store every message or none (checked before anything is written, in one atomic step).
    pub atomic: bool,
    /// Where the dedupe keys of its messages are remembered, and for how long: set by the core
    /// when a message has a key.
    pub dedupe: Option<Dedupe>,
    /// Delayed delivery: hold the messages until this time (ms since the epoch).
    pub deliver_at_ms: Option<u64>,
}

/// Where a stream's dedupe keys live and how long they are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedupe {
    /// Each key is remembered under this prefix followed by the key (beside the stream, in its
    /// slot on a Redis Cluster).
    pub prefix: String,
    /// How long, in milliseconds.
    pub window_ms: u64,
}

impl Dedupe {
    /// The prefix for `stream`'s dedupe keys; on a Redis Cluster (`slot_safe`) in the stream's
    /// slot.
    pub fn prefix_for(stream: &str, slot_safe: bool) -> String {
        if slot_safe && !has_hash_tag(stream) {
            format!("{{{stream}}}:dedupe:")
        } else {
            format!("{stream}:dedupe:")
        }
    }
}

impl Append {
    /// Whether it takes the scripted path: all-or-nothing, or deduplicated.
    pub fn is_scripted(&self) -> bool {
        self.atomic || self.messages.iter().any(|m| m.dedupe_key.is_some())
    }
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
    /// When the broker's read returned it: the start of its `deliver` hop
    /// (`streamgate_hop_seconds`), which ends when the transport takes its frame to write.
    pub read_at: std::time::Instant,
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
