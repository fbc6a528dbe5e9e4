//! The twin of `retention.lua`: one application of a stream's retention policy (see
//! [`crate::store::Scripts::retain`]).

use super::state::Stream;
use crate::model::{EntryId, RetentionCut, TrimPolicy, TrimThreshold, Trimmed};

/// Applies `cut` to `stream`.
pub(super) fn retain(stream: &mut Stream, cut: &RetentionCut) -> Trimmed {
    // Per group: the lowest id it still needs (its first pending entry, or the first it has not
    // read), and the lowest pending id of all.
    let needed = stream
        .groups
        .values()
        .map(|g| {
            let unread = EntryId {
                ms: g.last_delivered.ms,
                seq: g.last_delivered.seq.saturating_add(1),
            };
            g.pending
                .keys()
                .next()
                .map_or(unread, |first| (*first).min(unread))
        })
        .min();
    let lowest_pending = stream
        .groups
        .values()
        .filter_map(|g| g.pending.keys().next().copied())
        .min();
    let exact = |threshold| TrimPolicy {
        threshold,
        approximate: false,
        limit: None,
    };
    let mut trimmed = Trimmed::default();
    if cut.acked
        && let Some(needed) = needed
    {
        trimmed.acked = stream.trim(&exact(TrimThreshold::MinId(needed)));
    }
    if let Some(older_than) = cut.older_than {
        let floor = match lowest_pending {
            Some(pending) if cut.keep_pending => older_than.min(pending),
            _ => older_than,
        };
        trimmed.max_age = stream.trim(&exact(TrimThreshold::MinId(floor)));
    }
    if let Some(max_len) = cut.max_len {
        trimmed.max_len = stream.trim(&exact(TrimThreshold::MaxLen(max_len)));
    }
    trimmed
}
