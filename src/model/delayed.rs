//! Delayed delivery's vocabulary: where a stream's held messages live, and the atomic steps a
//! store applies to them (the delivery core's `delayed` module has the design).

use super::{EntryId, Field, has_hash_tag};

/// Where a stream's delayed messages wait, beside it (in its slot on a Redis Cluster): a sorted
/// set of tokens by due time, and a hash from token to the packed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedKeys {
    /// Sorted set: token, scored by when it is due (ms since the epoch).
    pub due: String,
    /// Hash: token → the message's fields.
    pub messages: String,
}

impl DelayedKeys {
    /// The keys of `stream`'s delayed messages.
    pub fn of(stream: &str, slot_safe: bool) -> Self {
        let base = if slot_safe && !has_hash_tag(stream) {
            format!("{{{stream}}}")
        } else {
            stream.to_owned()
        };
        Self {
            due: format!("{base}:delayed"),
            messages: format!("{base}:delayed-messages"),
        }
    }
}

/// A message held until it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    /// Its token: what Produce answered, and what cancels it.
    pub token: String,
    /// When it is appended to its stream, in ms since the epoch.
    pub due_ms: u64,
    /// Its fields.
    pub fields: Vec<Field>,
}

/// One atomic step on a stream's delayed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelayStep {
    /// Hold messages until `due_ms`.
    Hold {
        /// When they are due.
        due_ms: u64,
        /// Each with its token.
        messages: Vec<(String, Vec<Field>)>,
    },
    /// Append up to `limit` messages due by `now_ms` to the stream and forget them, in one
    /// step (no loss, no duplicate if two instances race).
    Move {
        /// The clock.
        now_ms: u64,
        /// Most messages moved.
        limit: usize,
    },
    /// The first `limit` held messages, earliest first.
    List {
        /// Most messages listed.
        limit: usize,
    },
    /// Forget held messages.
    Cancel {
        /// Their tokens.
        tokens: Vec<String>,
    },
}

/// What a [`DelayStep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delayed {
    /// Move: the ids the messages got.
    pub moved: Vec<EntryId>,
    /// Hold, Move: when the earliest message still held is due.
    pub next_due_ms: Option<u64>,
    /// List: the messages.
    pub listed: Vec<HeldMessage>,
    /// Cancel: how many were held.
    pub cancelled: u64,
}

/// One step on the registry of streams with delayed messages (a sorted set by earliest due
/// time: hints for the mover, never the messages themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleStep {
    /// `stream` has a message due at `due_ms`: lower its time to that if later.
    Note {
        /// The stream.
        stream: String,
        /// When.
        due_ms: u64,
    },
    /// Set `stream`'s time (`None`: nothing held).
    Set {
        /// The stream.
        stream: String,
        /// Its earliest due time.
        due_ms: Option<u64>,
    },
    /// Up to `limit` streams with something due by `now_ms`.
    Due {
        /// The clock.
        now_ms: u64,
        /// Most streams.
        limit: usize,
    },
}
