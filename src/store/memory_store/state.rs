//! The embedded store's data: streams, groups, pending entries and the store's clock, with the
//! Redis rules each follows (id generation, trimming, entries-read bookkeeping, XCLAIM's
//! transfer of one pending entry).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{
    EntryId, Field, IdRange, NewEntryId, RangeBound, TrimPolicy, TrimThreshold, millis,
};
use crate::store::{GroupEntry, StoreError, StoreResult};

#[derive(Default)]
pub(super) struct Stream {
    pub(super) entries: BTreeMap<EntryId, Vec<Field>>,
    pub(super) last_id: EntryId,
    pub(super) max_deleted_id: EntryId,
    pub(super) entries_added: u64,
    pub(super) groups: BTreeMap<String, Group>,
    /// Idempotent produce's remembered keys (Redis keeps them as keys beside the stream).
    pub(super) dedupe: DedupeKeys,
}

/// A stream's remembered dedupe keys: key → (the first message's id, until when, in ms).
pub(super) type DedupeKeys = HashMap<String, (EntryId, u64)>;

/// A group's ordering state (`ordering.rs` applies the steps): each key's outstanding
/// message, and the messages held back by key then id.
#[derive(Default)]
pub(super) struct OrderBook {
    pub(super) heads: HashMap<String, EntryId>,
    pub(super) held: BTreeSet<(String, EntryId)>,
}

pub(super) struct Group {
    pub(super) last_delivered: EntryId,
    /// `None`: unknown (Redis's SCG_INVALID_ENTRIES_READ).
    pub(super) entries_read: Option<i64>,
    pub(super) pending: BTreeMap<EntryId, Lease>,
    /// Consumer name → when it was last seen (ms since the epoch).
    pub(super) consumers: BTreeMap<String, u64>,
    /// Ordered delivery's state (Redis keeps it in two keys beside the stream).
    pub(super) ordering: OrderBook,
}

/// One pending entry: who holds it, since when, how many deliveries.
pub(super) struct Lease {
    pub(super) consumer: String,
    pub(super) delivered_at: u64,
    pub(super) count: u64,
}

/// The store's clock: the wall clock when the store was made, advanced by tokio's clock since.
/// Entry ids stay close to real time, and every idle time, lease and deadline follows tokio's
/// time, so tests with a paused clock control them.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    pub(super) wall_ms: u64,
    pub(super) start: tokio::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            wall_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, millis),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock {
    /// Milliseconds since the Unix epoch, as this store counts them.
    pub(super) fn now_ms(&self) -> u64 {
        self.wall_ms.saturating_add(millis(self.start.elapsed()))
    }
}

pub(super) fn no_group(stream: &str, group: &str) -> StoreError {
    StoreError::NoSuchGroup {
        stream: stream.to_owned(),
        group: group.to_owned(),
    }
}

pub(super) fn no_stream(stream: &str) -> StoreError {
    StoreError::NoSuchStream {
        stream: stream.to_owned(),
    }
}

pub(super) fn bounds(range: &IdRange) -> (Bound<EntryId>, Bound<EntryId>) {
    let convert = |bound: RangeBound| match bound {
        RangeBound::Unbounded => Bound::Unbounded,
        RangeBound::Inclusive(id) => Bound::Included(id),
        RangeBound::Exclusive(id) => Bound::Excluded(id),
    };
    (convert(range.min), convert(range.max))
}

/// A range whose start lies after its end is empty in Redis; `BTreeMap::range` would panic.
pub(super) fn is_empty_range(range: &(Bound<EntryId>, Bound<EntryId>)) -> bool {
    match (range.0, range.1) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

impl Stream {
    /// XREADGROUP `>`: up to `count` entries never delivered to `group`, now pending for
    /// `consumer` (unless `no_ack`), with the group's entries-read bookkeeping.
    pub(super) fn deliver_new(
        &mut self,
        group: &str,
        consumer: &str,
        count: usize,
        no_ack: bool,
        now: u64,
    ) -> Vec<GroupEntry> {
        let start = self.groups[group].last_delivered;
        let fresh: Vec<(EntryId, Vec<Field>)> = self
            .entries
            .range((Bound::Excluded(start), Bound::Unbounded))
            .take(count)
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        for (id, _) in &fresh {
            let tombstones = self.has_tombstones_from(*id);
            let estimate = self.entries_read_at(*id);
            let g = self.groups.get_mut(group).unwrap_or_else(|| unreachable!());
            match g.entries_read {
                Some(read) if !tombstones => g.entries_read = Some(read + 1),
                _ if self.entries_added > 0 => g.entries_read = estimate,
                _ => {}
            }
            g.last_delivered = *id;
            if !no_ack {
                let lease = g.pending.entry(*id).or_insert(Lease {
                    consumer: consumer.to_owned(),
                    delivered_at: now,
                    count: 0,
                });
                lease.consumer = consumer.to_owned();
                lease.delivered_at = now;
                lease.count += 1;
            }
        }
        fresh
            .into_iter()
            .map(|(id, fields)| GroupEntry {
                id,
                fields: Some(fields),
            })
            .collect::<Vec<_>>()
    }

    /// XREADGROUP with an id: `consumer`'s own pending entries after `after`, delivered again
    /// (count bumped, idle reset); a deleted entry comes back with no fields.
    pub(super) fn deliver_own_pending(
        &mut self,
        group: &str,
        consumer: &str,
        after: EntryId,
        count: usize,
        now: u64,
    ) -> Vec<GroupEntry> {
        let g = self.groups.get_mut(group).unwrap_or_else(|| unreachable!());
        let ids: Vec<EntryId> = g
            .pending
            .range((Bound::Excluded(after), Bound::Unbounded))
            .filter(|(_, l)| l.consumer == consumer)
            .take(count)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(lease) = g.pending.get_mut(id) {
                lease.delivered_at = now;
                lease.count += 1;
            }
        }
        ids.into_iter()
            .map(|id| GroupEntry {
                id,
                fields: self.entries.get(&id).cloned(),
            })
            .collect()
    }

    pub(super) fn first_id(&self) -> EntryId {
        self.entries.keys().next().copied().unwrap_or_default()
    }

    /// Whether a deletion happened at or after `from` (Redis's streamRangeHasTombstones).
    pub(super) fn has_tombstones_from(&self, from: EntryId) -> bool {
        !self.entries.is_empty()
            && self.max_deleted_id != EntryId::ZERO
            && self.max_deleted_id >= from
            && self.max_deleted_id <= self.last_id
    }

    /// Redis's streamEstimateDistanceFromFirstEverEntry.
    pub(super) fn entries_read_at(&self, id: EntryId) -> Option<i64> {
        let added = i64::try_from(self.entries_added).unwrap_or(i64::MAX);
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.entries.is_empty() && id <= self.last_id {
            return Some(added);
        }
        if id == self.last_id {
            return Some(added);
        }
        if id > self.last_id {
            return None;
        }
        let first = self.first_id();
        if self.max_deleted_id == EntryId::ZERO || self.max_deleted_id < first {
            let length = i64::try_from(self.entries.len()).unwrap_or(i64::MAX);
            if id < first {
                return Some(added - length);
            }
            if id == first {
                return Some(added - length + 1);
            }
        }
        None
    }

    pub(super) fn next_id(
        &self,
        requested: NewEntryId,
        stream: &str,
        now: u64,
    ) -> StoreResult<EntryId> {
        let last = self.last_id;
        let too_small = || StoreError::IdNotIncreasing {
            stream: stream.to_owned(),
        };
        match requested {
            NewEntryId::Auto => {
                let ms = now.max(last.ms);
                Ok(if ms == last.ms {
                    EntryId::new(ms, last.seq.checked_add(1).ok_or_else(too_small)?)
                } else {
                    EntryId::new(ms, 0)
                })
            }
            NewEntryId::AutoSequence(ms) => {
                let id = if ms == last.ms {
                    EntryId::new(ms, last.seq.checked_add(1).ok_or_else(too_small)?)
                } else {
                    EntryId::new(ms, if ms == 0 { 1 } else { 0 })
                };
                if id <= last { Err(too_small()) } else { Ok(id) }
            }
            NewEntryId::Explicit(id) => {
                if id <= last {
                    Err(too_small())
                } else {
                    Ok(id)
                }
            }
        }
    }

    pub(super) fn trim(&mut self, policy: &TrimPolicy) -> u64 {
        let limit = if policy.approximate {
            policy.limit.unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        let mut evicted = 0;
        while evicted < limit {
            let Some((&oldest, _)) = self.entries.first_key_value() else {
                break;
            };
            let over = match policy.threshold {
                TrimThreshold::MaxLen(max) => self.entries.len() as u64 > max,
                TrimThreshold::MinId(min) => oldest < min,
            };
            if !over {
                break;
            }
            self.entries.remove(&oldest);
            evicted += 1;
        }
        evicted
    }

    pub(super) fn group(&mut self, stream: &str, group: &str) -> StoreResult<&mut Group> {
        self.groups
            .get_mut(group)
            .ok_or_else(|| no_group(stream, group))
    }
}

impl Group {
    pub(super) fn new(last_delivered: EntryId, entries_read: Option<i64>) -> Self {
        Self {
            last_delivered,
            entries_read,
            pending: BTreeMap::new(),
            consumers: BTreeMap::new(),
            ordering: OrderBook::default(),
        }
    }

    pub(super) fn touch(&mut self, consumer: &str, now: u64) {
        self.consumers.insert(consumer.to_owned(), now);
    }

    pub(super) fn pending_of(&self, consumer: &str) -> u64 {
        self.pending
            .values()
            .filter(|l| l.consumer == consumer)
            .count() as u64
    }

    /// Entries `consumer` holds that were delivered (or claimed) less than `lease_ms` ago.
    /// The consumer's entries whose lease runs, oldest id first, with their idle time.
    pub(super) fn leased_by(&self, consumer: &str, now: u64, lease_ms: u64) -> Vec<(EntryId, u64)> {
        self.pending
            .iter()
            .filter(|(_, l)| l.consumer == consumer)
            .map(|(id, l)| (*id, now.saturating_sub(l.delivered_at)))
            .filter(|(_, idle)| *idle < lease_ms)
            .collect()
    }
}

/// Takes `id` from the stream's pending list for `consumer` (XCLAIM's core): `None` when the
/// entry is not pending, too recently delivered, or deleted (then also dropped from the list).
pub(super) struct Transfer<'a> {
    pub(super) consumer: &'a str,
    pub(super) min_idle_ms: u64,
    pub(super) delivered_at: u64,
    pub(super) count: Option<u64>,
    pub(super) bump: bool,
}

pub(super) fn transfer(
    stream: &mut Stream,
    group: &str,
    id: EntryId,
    how: &Transfer<'_>,
    now: u64,
) -> Option<Option<Vec<Field>>> {
    let fields = stream.entries.get(&id).cloned();
    let g = stream.groups.get_mut(group)?;
    let lease = g.pending.get_mut(&id)?;
    if fields.is_none() {
        g.pending.remove(&id);
        return None;
    }
    if now.saturating_sub(lease.delivered_at) < how.min_idle_ms {
        return None;
    }
    lease.consumer = how.consumer.to_owned();
    lease.delivered_at = how.delivered_at;
    if let Some(count) = how.count {
        lease.count = count;
    } else if how.bump {
        lease.count += 1;
    }
    Some(fields)
}

/// Redis's MATCH escapes a character with `\\`; the glob crate spells that `[c]`.
pub(super) fn redis_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push('[');
        out.push(chars.next().unwrap_or('\\'));
        out.push(']');
    }
    out
}
