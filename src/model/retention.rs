//! Retention that respects consumers: what a stream's stored policy says (its retention, and
//! how long its dedupe keys are remembered), and the
//! one atomic trim a store applies for it (the delivery core's `retention` module applies them).

use serde::{Deserialize, Serialize};

use super::EntryId;

/// A stream's retention policy, kept in Redis (JSON; fields added later default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionPolicy {
    /// Delete entries every group of the stream has read and acknowledged (delete-on-ack for
    /// work queues; safe with several groups). A stream without groups keeps everything.
    pub acked: bool,
    /// Delete entries older than this many milliseconds.
    pub max_age_ms: Option<u64>,
    /// With `max_age_ms`: keep entries still pending in some group, however old.
    pub keep_pending: bool,
    /// Keep at most this many entries.
    pub max_len: Option<u64>,
    /// How long a dedupe key is remembered (idempotent produce); `None`: the default,
    /// [`DEFAULT_DEDUPE_WINDOW_MS`].
    pub dedupe_window_ms: Option<u64>,
}

/// How long a dedupe key is remembered when the stream's policy does not say: five minutes.
pub const DEFAULT_DEDUPE_WINDOW_MS: u64 = 300_000;

impl RetentionPolicy {
    /// Whether it says anything at all.
    pub fn is_empty(&self) -> bool {
        !self.acked
            && self.max_age_ms.is_none()
            && self.max_len.is_none()
            && self.dedupe_window_ms.is_none()
    }
}

/// One application of a policy at one moment: what the store trims, in one atomic step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCut {
    /// Trim what every group has acknowledged.
    pub acked: bool,
    /// Trim entries with lower ids (the clock minus the maximum age).
    pub older_than: Option<EntryId>,
    /// With `older_than`: never below the lowest id pending in any group.
    pub keep_pending: bool,
    /// Trim to this length.
    pub max_len: Option<u64>,
}

/// What one [`RetentionCut`] deleted, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Acknowledged by every group.
    pub acked: u64,
    /// Older than the maximum age.
    pub max_age: u64,
    /// Beyond the maximum length.
    pub max_len: u64,
}

impl Trimmed {
    /// Everything deleted.
    pub fn total(&self) -> u64 {
        self.acked + self.max_age + self.max_len
    }
}
