//! What a history is made of, as a driver reports it to the model: message ids, what a message
//! was sent with, how an ack came back, and the events themselves.

use std::fmt;

/// A stream entry id as the broker prints it, ordered like Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub u64, pub u64);

impl Id {
    /// `ms-seq`, as every API returns ids.
    pub fn parse(text: &str) -> Id {
        let (ms, seq) = text
            .split_once('-')
            .unwrap_or_else(|| panic!("not an id: {text}"));
        Id(ms.parse().unwrap(), seq.parse().unwrap())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// What a produced message was sent with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// Its ordering key.
    pub key: Option<String>,
    /// Its dedupe key.
    pub dedupe: Option<String>,
    /// The subscription's filter drops it.
    pub filtered: bool,
    /// Its time to live: past it the broker does not deliver it, and it counts as settled
    /// (expired) without an ack.
    pub ttl_ms: Option<u64>,
    /// Its number in the history (the field `n`): how a delayed message, which has no id until
    /// it is appended, is known when it arrives.
    pub number: u64,
}

/// The number a history gave a message (its field `n`), from its fields; 0 without one.
pub fn number_of<'a>(mut fields: impl Iterator<Item = (&'a str, &'a [u8])>) -> u64 {
    fields
        .find(|(name, _)| *name == "n")
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok())
        .unwrap_or(0)
}

/// How an ack came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It was pending (held by that member, with a holder check) and is acknowledged now.
    Acked,
    /// It was not pending.
    NotPending,
    /// Another member holds it.
    HeldByOther,
    /// The call failed (a fault): it may or may not have been applied.
    Unknown,
}

/// One thing a driver did or saw. `at_ms` is the driver's clock (virtual or real).
#[derive(Debug, Clone)]
pub enum Event {
    /// A produce call answered with `ids` for `sent` (same length; a dedupe key sent again
    /// answers the first id).
    Produced {
        sent: Vec<Sent>,
        ids: Vec<Id>,
        /// When the call went out and when it answered (a TTL runs from in between).
        started_ms: u64,
        at_ms: u64,
    },
    /// A delayed produce of `sent` went out at `started_ms` (appended `delay_ms` later, with ids
    /// nobody is told); `certain` when the broker answered, else it may not have been stored.
    Delayed {
        sent: Vec<Sent>,
        started_ms: u64,
        delay_ms: u64,
        certain: bool,
    },
    /// A member joined with an in-flight limit.
    Joined { member: usize, max_in_flight: u64 },
    /// A member left (what it held handed back) or crashed (what it held waits for its
    /// deadline).
    Left { member: usize },
    /// A delivery to `member`.
    Delivered {
        member: usize,
        id: Id,
        count: u64,
        at_ms: u64,
        /// When the poll that brought it went out (the broker delivered it after that).
        polled_at_ms: u64,
        /// Its number (the field `n`).
        number: u64,
    },
    /// `member` sent an ack of `id` (the model counts it from here: a concurrent delivery of the
    /// key's next message may arrive before the confirmation does).
    AckSent { member: usize, id: Id },
    /// The ack's answer; `checked_holder` when the ack applied only to the member's own.
    AckAnswered {
        member: usize,
        id: Id,
        outcome: AckOutcome,
        checked_holder: bool,
    },
    /// `member` nacked `id`, to be redelivered no sooner than `delay_ms` after `at_ms`.
    Nacked {
        member: usize,
        id: Id,
        delay_ms: Option<u64>,
        at_ms: u64,
    },
    /// The subscription's ack deadline was changed to `ack_deadline_ms` at `at_ms` (members
    /// apply it within the policy cache's lifetime).
    DeadlineChanged { ack_deadline_ms: u64, at_ms: u64 },
    /// `member` extended the deadline of `ids` at `at_ms`.
    Extended {
        member: usize,
        ids: Vec<Id>,
        at_ms: u64,
    },
    /// Messages found on the dead-letter stream at the end.
    DeadLettered { ids: Vec<Id> },
    /// Entries in the stream (once, at the end).
    StreamEntries { ids: Vec<Id> },
    /// The group was moved to just after `position`, what was pending up to it acknowledged:
    /// every message up to it is settled (skipped), none may be delivered again.
    Seeked { position: Id },
    /// Something was settled at `at_ms` (for liveness).
    Progress { at_ms: u64 },
}
