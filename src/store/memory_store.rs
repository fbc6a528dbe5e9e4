//! [`Store`] in this process's memory: the zero-setup default, for trying streamgate and for
//! development. Nothing survives a restart.
//!
//! It follows Redis 7.0's stream semantics wherever a client can observe them (ids and their
//! ordering, consumer groups and their pending entries lists, delivery counts and idle times,
//! XCLAIM/XAUTOCLAIM rules, deleted entries dropped from pending lists, lag and entries-read
//! bookkeeping, the errors a missing stream or group gives), because the gRPC layer and every
//! test above it must not be able to tell the two stores apart. `tests/conformance.rs` runs one
//! behavioural suite against both.
//!
//! One mutex guards all streams. Every operation is short and never awaits while holding it,
//! which also makes each operation atomic, as the Lua scripts are on Redis.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::{
    GroupCursor, GroupEntry, Released, Store, StoreError, StoreResult, StreamPage, StreamWatch,
    Wakeups,
};
use crate::model::{
    Append, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo, Entry, EntryId, Field, GroupInfo,
    IdRange, IdleAfterMove, NewEntryId, PARKED_CONSUMER, PARKED_HORIZON_MS, PendingEntry,
    PendingMove, PendingQuery, PendingSummary, RangeBound, StartId, StreamInfo, SweepRequest,
    Swept, TrimPolicy, TrimThreshold, millis,
};

/// The embedded store; cheap to clone (all clones share the data).
#[derive(Clone, Default)]
pub struct MemoryStore {
    streams: Arc<Mutex<HashMap<String, Stream>>>,
    /// (registry, topic) → partition count.
    topics: Arc<Mutex<HashMap<(String, String), u32>>>,
    wakeups: Wakeups,
    clock: Clock,
}

#[derive(Default)]
struct Stream {
    entries: BTreeMap<EntryId, Vec<Field>>,
    last_id: EntryId,
    max_deleted_id: EntryId,
    entries_added: u64,
    groups: BTreeMap<String, Group>,
}

struct Group {
    last_delivered: EntryId,
    /// `None`: unknown (Redis's SCG_INVALID_ENTRIES_READ).
    entries_read: Option<i64>,
    pending: BTreeMap<EntryId, Lease>,
    /// Consumer name → when it was last seen (ms since the epoch).
    consumers: BTreeMap<String, u64>,
}

/// One pending entry: who holds it, since when, how many deliveries.
struct Lease {
    consumer: String,
    delivered_at: u64,
    count: u64,
}

/// The store's clock: the wall clock when the store was made, advanced by tokio's clock since.
/// Entry ids stay close to real time, and every idle time, lease and deadline follows tokio's
/// time, so tests with a paused clock control them.
#[derive(Clone, Copy)]
struct Clock {
    wall_ms: u64,
    start: tokio::time::Instant,
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
    fn now_ms(&self) -> u64 {
        self.wall_ms.saturating_add(millis(self.start.elapsed()))
    }
}

fn no_group(stream: &str, group: &str) -> StoreError {
    StoreError::NoSuchGroup {
        stream: stream.to_owned(),
        group: group.to_owned(),
    }
}

fn no_stream(stream: &str) -> StoreError {
    StoreError::NoSuchStream {
        stream: stream.to_owned(),
    }
}

fn bounds(range: &IdRange) -> (Bound<EntryId>, Bound<EntryId>) {
    let convert = |bound: RangeBound| match bound {
        RangeBound::Unbounded => Bound::Unbounded,
        RangeBound::Inclusive(id) => Bound::Included(id),
        RangeBound::Exclusive(id) => Bound::Excluded(id),
    };
    (convert(range.min), convert(range.max))
}

/// A range whose start lies after its end is empty in Redis; `BTreeMap::range` would panic.
fn is_empty_range(range: &(Bound<EntryId>, Bound<EntryId>)) -> bool {
    match (range.0, range.1) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

impl Stream {
    fn first_id(&self) -> EntryId {
        self.entries.keys().next().copied().unwrap_or_default()
    }

    /// Whether a deletion happened at or after `from` (Redis's streamRangeHasTombstones).
    fn has_tombstones_from(&self, from: EntryId) -> bool {
        !self.entries.is_empty()
            && self.max_deleted_id != EntryId::ZERO
            && self.max_deleted_id >= from
            && self.max_deleted_id <= self.last_id
    }

    /// Redis's streamEstimateDistanceFromFirstEverEntry.
    fn entries_read_at(&self, id: EntryId) -> Option<i64> {
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

    fn next_id(&self, requested: NewEntryId, stream: &str, now: u64) -> StoreResult<EntryId> {
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

    fn trim(&mut self, policy: &TrimPolicy) -> u64 {
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

    fn group(&mut self, stream: &str, group: &str) -> StoreResult<&mut Group> {
        self.groups
            .get_mut(group)
            .ok_or_else(|| no_group(stream, group))
    }
}

impl Group {
    fn new(last_delivered: EntryId, entries_read: Option<i64>) -> Self {
        Self {
            last_delivered,
            entries_read,
            pending: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    fn touch(&mut self, consumer: &str, now: u64) {
        self.consumers.insert(consumer.to_owned(), now);
    }

    fn pending_of(&self, consumer: &str) -> u64 {
        self.pending
            .values()
            .filter(|l| l.consumer == consumer)
            .count() as u64
    }

    /// Entries `consumer` holds that were delivered (or claimed) less than `lease_ms` ago.
    /// The consumer's entries whose lease runs, oldest id first, with their idle time.
    fn leased_by(&self, consumer: &str, now: u64, lease_ms: u64) -> Vec<(EntryId, u64)> {
        self.pending
            .iter()
            .filter(|(_, l)| l.consumer == consumer)
            .map(|(id, l)| (*id, now.saturating_sub(l.delivered_at)))
            .filter(|(_, idle)| *idle < lease_ms)
            .collect()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Stream>> {
        // Every operation finishes its changes before unlocking and none panics half-way by
        // design; a poisoned lock is still consistent enough to serve.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on one group of one stream; NOGROUP when either is missing.
    fn with_group<T>(
        &self,
        stream: &str,
        group: &str,
        f: impl FnOnce(&mut Stream, &str) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut streams = self.streams();
        let s = streams
            .get_mut(stream)
            .filter(|s| s.groups.contains_key(group))
            .ok_or_else(|| no_group(stream, group))?;
        f(s, group)
    }
}

/// Takes `id` from the stream's pending list for `consumer` (XCLAIM's core): `None` when the
/// entry is not pending, too recently delivered, or deleted (then also dropped from the list).
struct Transfer<'a> {
    consumer: &'a str,
    min_idle_ms: u64,
    delivered_at: u64,
    count: Option<u64>,
    bump: bool,
}

fn transfer(
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
fn redis_glob(pattern: &str) -> String {
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

impl Store for MemoryStore {
    async fn create_topic(
        &self,
        registry: &str,
        topic: &str,
        partitions: u32,
    ) -> StoreResult<bool> {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (registry.to_owned(), topic.to_owned());
        match topics.get(&key) {
            Some(&existing) if existing == partitions => Ok(false),
            Some(&existing) => Err(StoreError::TopicExists {
                topic: topic.to_owned(),
                partitions: existing,
            }),
            None => {
                topics.insert(key, partitions);
                Ok(true)
            }
        }
    }

    async fn topic_partitions(&self, registry: &str, topic: &str) -> StoreResult<Option<u32>> {
        Ok(self
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(registry.to_owned(), topic.to_owned()))
            .copied())
    }

    async fn append(&self, requests: &[Append]) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        let now = self.clock.now_ms();
        let mut answers = Vec::with_capacity(requests.len());
        {
            let mut streams = self.streams();
            for request in requests {
                let answer = (|| {
                    if request.require_existing_stream && !streams.contains_key(&request.stream) {
                        return Err(no_stream(&request.stream));
                    }
                    let stream = streams.entry(request.stream.clone()).or_default();
                    let mut ids = Vec::with_capacity(request.messages.len());
                    for message in &request.messages {
                        let id = stream.next_id(message.id, &request.stream, now)?;
                        stream.entries.insert(id, message.fields.clone());
                        stream.last_id = id;
                        stream.entries_added += 1;
                        if let Some(policy) = &request.trim {
                            stream.trim(policy);
                        }
                        ids.push(id);
                    }
                    Ok(ids)
                })();
                answers.push(answer);
            }
        }
        for (request, answer) in requests.iter().zip(&answers) {
            if answer.is_ok() {
                self.wakeups.notify(&request.stream);
            }
        }
        Ok(answers)
    }

    async fn read(
        &self,
        cursors: &[(String, EntryId)],
        count: usize,
    ) -> StoreResult<Vec<(String, Vec<Entry>)>> {
        let streams = self.streams();
        Ok(cursors
            .iter()
            .filter_map(|(name, after)| {
                let stream = streams.get(name)?;
                let entries: Vec<Entry> = stream
                    .entries
                    .range((Bound::Excluded(*after), Bound::Unbounded))
                    .take(count)
                    .map(|(id, fields)| Entry {
                        id: *id,
                        fields: fields.clone(),
                    })
                    .collect();
                (!entries.is_empty()).then(|| (name.clone(), entries))
            })
            .collect())
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        cursors: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
        let mut streams = self.streams();
        // Like Redis, check every stream's group before reading any.
        for (name, _) in cursors {
            if !streams
                .get(name)
                .is_some_and(|s| s.groups.contains_key(group))
            {
                return Err(no_group(name, group));
            }
        }
        let now = self.clock.now_ms();
        let mut replies = Vec::new();
        for (name, cursor) in cursors {
            let Some(stream) = streams.get_mut(name) else {
                continue;
            };
            let entries = match cursor {
                GroupCursor::New => {
                    let start = stream.groups[group].last_delivered;
                    let fresh: Vec<(EntryId, Vec<Field>)> = stream
                        .entries
                        .range((Bound::Excluded(start), Bound::Unbounded))
                        .take(count)
                        .map(|(id, f)| (*id, f.clone()))
                        .collect();
                    for (id, _) in &fresh {
                        let tombstones = stream.has_tombstones_from(*id);
                        let estimate = stream.entries_read_at(*id);
                        let g = stream
                            .groups
                            .get_mut(group)
                            .unwrap_or_else(|| unreachable!());
                        match g.entries_read {
                            Some(read) if !tombstones => g.entries_read = Some(read + 1),
                            _ if stream.entries_added > 0 => g.entries_read = estimate,
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
                GroupCursor::PendingAfter(after) => {
                    let g = stream
                        .groups
                        .get_mut(group)
                        .unwrap_or_else(|| unreachable!());
                    let ids: Vec<EntryId> = g
                        .pending
                        .range((Bound::Excluded(*after), Bound::Unbounded))
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
                            fields: stream.entries.get(&id).cloned(),
                        })
                        .collect()
                }
            };
            if let Some(g) = stream.groups.get_mut(group) {
                g.touch(consumer, now);
            }
            if !entries.is_empty() {
                replies.push((name.clone(), entries));
            }
        }
        Ok(replies)
    }

    async fn last_entry_id(&self, stream: &str) -> StoreResult<Option<EntryId>> {
        Ok(self
            .streams()
            .get(stream)
            .and_then(|s| s.entries.keys().next_back().copied()))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.with_group(stream, group, |s, group| {
            let g = s.group(stream, group)?;
            Ok(ids
                .iter()
                .filter(|id| g.pending.remove(id).is_some())
                .count() as u64)
        })
    }

    fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch {
        self.wakeups.watch(streams, group)
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    async fn run_watcher(self, shutdown: CancellationToken) {
        // Nobody else can write to the embedded store.
        shutdown.cancelled().await;
    }

    fn pool_state(&self) -> Option<(u32, u32)> {
        None
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn list_streams(
        &self,
        pattern: &str,
        _cursor: u64,
        _page_size: u32,
    ) -> StoreResult<StreamPage> {
        let matcher = match pattern {
            "" => None,
            p => Some(
                glob::Pattern::new(&redis_glob(p))
                    .map_err(|err| StoreError::Rejected(format!("invalid pattern: {err}")))?,
            ),
        };
        let mut names: Vec<String> = self
            .streams()
            .keys()
            .filter(|name| matcher.as_ref().is_none_or(|m| m.matches(name)))
            .cloned()
            .collect();
        names.sort();
        // Everything in one page: the listing is complete.
        Ok(StreamPage {
            streams: names,
            next_cursor: 0,
        })
    }

    async fn stream_info(&self, stream: &str) -> StoreResult<StreamInfo> {
        let streams = self.streams();
        let s = streams.get(stream).ok_or_else(|| no_stream(stream))?;
        let entry = |(id, fields): (&EntryId, &Vec<Field>)| Entry {
            id: *id,
            fields: fields.clone(),
        };
        Ok(StreamInfo {
            length: s.entries.len() as u64,
            radix_tree_keys: u64::from(!s.entries.is_empty()),
            radix_tree_nodes: 1 + u64::from(!s.entries.is_empty()),
            groups: s.groups.len() as u64,
            last_generated_id: s.last_id.to_string(),
            max_deleted_entry_id: s.max_deleted_id.to_string(),
            entries_added: s.entries_added,
            recorded_first_entry_id: s.first_id().to_string(),
            first_entry: s.entries.first_key_value().map(entry),
            last_entry: s.entries.last_key_value().map(entry),
        })
    }

    async fn range(
        &self,
        stream: &str,
        range: IdRange,
        count: usize,
        reverse: bool,
    ) -> StoreResult<Vec<Entry>> {
        let streams = self.streams();
        let Some(s) = streams.get(stream) else {
            return Ok(Vec::new());
        };
        let range = bounds(&range);
        if is_empty_range(&range) {
            return Ok(Vec::new());
        }
        let to_entry = |(id, fields): (&EntryId, &Vec<Field>)| Entry {
            id: *id,
            fields: fields.clone(),
        };
        let selected = s.entries.range(range);
        Ok(if reverse {
            selected.rev().take(count).map(to_entry).collect()
        } else {
            selected.take(count).map(to_entry).collect()
        })
    }

    async fn delete_entries(&self, stream: &str, ids: &[EntryId]) -> StoreResult<u64> {
        let mut streams = self.streams();
        let Some(s) = streams.get_mut(stream) else {
            return Ok(0);
        };
        let mut deleted = 0;
        for id in ids {
            if s.entries.remove(id).is_some() {
                deleted += 1;
                s.max_deleted_id = s.max_deleted_id.max(*id);
            }
        }
        Ok(deleted)
    }

    async fn trim(&self, stream: &str, policy: TrimPolicy) -> StoreResult<u64> {
        Ok(self
            .streams()
            .get_mut(stream)
            .map_or(0, |s| s.trim(&policy)))
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        self.streams()
            .remove(stream)
            .map(drop)
            .ok_or_else(|| no_stream(stream))
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartId,
        create_stream: bool,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        let mut streams = self.streams();
        if !create_stream && !streams.contains_key(stream) {
            return Err(no_stream(stream));
        }
        let s = streams.entry(stream.to_owned()).or_default();
        if s.groups.contains_key(group) {
            return Err(StoreError::GroupExists {
                stream: stream.to_owned(),
                group: group.to_owned(),
            });
        }
        let (last, read) = match start {
            StartId::Latest => (
                s.last_id,
                Some(i64::try_from(s.entries_added).unwrap_or(i64::MAX)),
            ),
            StartId::After(id) => (id, None),
        };
        s.groups
            .insert(group.to_owned(), Group::new(last, entries_read.or(read)));
        Ok(())
    }

    async fn destroy_group(&self, stream: &str, group: &str) -> StoreResult<()> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        s.groups
            .remove(group)
            .map(drop)
            .ok_or_else(|| no_group(stream, group))
    }

    async fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        id: StartId,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let last = match id {
            StartId::Latest => s.last_id,
            StartId::After(id) => id,
        };
        let g = s.group(stream, group)?;
        g.last_delivered = last;
        g.entries_read = entries_read;
        Ok(())
    }

    async fn groups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        let streams = self.streams();
        let s = streams.get(stream).ok_or_else(|| no_stream(stream))?;
        let added = i64::try_from(s.entries_added).unwrap_or(i64::MAX);
        Ok(s.groups
            .iter()
            .map(|(name, g)| {
                // Redis's streamReplyWithCGLag.
                let lag = if s.entries_added == 0 {
                    Some(0)
                } else {
                    match g.entries_read {
                        Some(read) if !s.has_tombstones_from(g.last_delivered) => {
                            Some(added - read)
                        }
                        _ => s.entries_read_at(g.last_delivered).map(|read| added - read),
                    }
                };
                GroupInfo {
                    name: name.clone(),
                    consumers: g.consumers.len() as u64,
                    pending: g.pending.len() as u64,
                    last_delivered_id: g.last_delivered.to_string(),
                    entries_read: g.entries_read,
                    lag,
                }
            })
            .collect())
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> StoreResult<bool> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let g = s.group(stream, group)?;
        if g.consumers.contains_key(consumer) {
            return Ok(false);
        }
        g.touch(consumer, self.clock.now_ms());
        Ok(true)
    }

    async fn delete_consumer(&self, stream: &str, group: &str, consumer: &str) -> StoreResult<u64> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let g = s.group(stream, group)?;
        if g.consumers.remove(consumer).is_none() {
            return Ok(0);
        }
        let before = g.pending.len();
        g.pending.retain(|_, l| l.consumer != consumer);
        Ok((before - g.pending.len()) as u64)
    }

    async fn consumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let g = s.group(stream, group)?;
        let now = self.clock.now_ms();
        Ok(g.consumers
            .iter()
            .map(|(name, seen)| ConsumerInfo {
                name: name.clone(),
                pending: g.pending_of(name),
                idle_ms: now.saturating_sub(*seen),
            })
            .collect())
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        self.with_group(stream, group, |s, group| {
            let g = s.group(stream, group)?;
            let mut per_consumer: BTreeMap<&str, u64> = BTreeMap::new();
            for lease in g.pending.values() {
                *per_consumer.entry(&lease.consumer).or_default() += 1;
            }
            Ok(PendingSummary {
                count: g.pending.len() as u64,
                bounds: g
                    .pending
                    .keys()
                    .next()
                    .zip(g.pending.keys().next_back())
                    .map(|(a, b)| (*a, *b)),
                consumers: per_consumer
                    .into_iter()
                    .map(|(c, n)| (c.to_owned(), n))
                    .collect(),
            })
        })
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> StoreResult<Vec<PendingEntry>> {
        self.with_group(stream, group, |s, group| {
            let g = s.group(stream, group)?;
            let range = bounds(&query.range);
            if is_empty_range(&range) {
                return Ok(Vec::new());
            }
            let now = self.clock.now_ms();
            Ok(g.pending
                .range(range)
                .filter(|(_, l)| query.consumer.as_ref().is_none_or(|c| *c == l.consumer))
                .filter(|(_, l)| now.saturating_sub(l.delivered_at) >= query.min_idle_ms)
                .take(usize::try_from(query.count).unwrap_or(usize::MAX))
                .map(|(id, l)| PendingEntry {
                    id: *id,
                    consumer: l.consumer.clone(),
                    idle_ms: now.saturating_sub(l.delivered_at),
                    delivery_count: l.count,
                })
                .collect())
        })
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &ClaimOptions,
    ) -> StoreResult<Claimed> {
        self.with_group(stream, group, |s, group| {
            let now = self.clock.now_ms();
            let mut delivered_at = match (options.idle_ms, options.time_ms) {
                (Some(idle), _) => now.saturating_sub(idle),
                (None, Some(time)) => time,
                (None, None) => now,
            };
            if delivered_at > now {
                delivered_at = now;
            }
            let how = Transfer {
                consumer,
                min_idle_ms: options.min_idle_ms,
                delivered_at,
                count: options.retry_count,
                bump: !options.just_id,
            };
            s.group(stream, group)?.touch(consumer, now);
            let mut claimed = Claimed::default();
            for id in &options.ids {
                if options.force && s.entries.contains_key(id) {
                    let g = s.group(stream, group)?;
                    g.pending.entry(*id).or_insert(Lease {
                        consumer: consumer.to_owned(),
                        delivered_at,
                        count: 0,
                    });
                }
                if let Some(fields) = transfer(s, group, *id, &how, now) {
                    claimed.ids.push(*id);
                    if !options.just_id {
                        claimed.entries.push(Entry {
                            id: *id,
                            fields: fields.unwrap_or_default(),
                        });
                    }
                }
            }
            Ok(claimed)
        })
    }

    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle_ms: u64,
        start: EntryId,
        count: usize,
        just_id: bool,
    ) -> StoreResult<AutoClaimed> {
        self.with_group(stream, group, |s, group| {
            let now = self.clock.now_ms();
            s.group(stream, group)?.touch(consumer, now);
            let candidates: Vec<EntryId> = s.groups[group]
                .pending
                .range(start..)
                .map(|(id, _)| *id)
                .collect();
            let how = Transfer {
                consumer,
                min_idle_ms,
                delivered_at: now,
                count: None,
                bump: !just_id,
            };
            let mut result = AutoClaimed::default();
            let mut attempts = count.saturating_mul(10);
            let mut left = count;
            let mut walked = 0;
            for id in &candidates {
                if attempts == 0 || left == 0 {
                    break;
                }
                attempts -= 1;
                walked += 1;
                if !s.entries.contains_key(id) {
                    s.group(stream, group)?.pending.remove(id);
                    result.deleted_ids.push(*id);
                    continue;
                }
                if let Some(fields) = transfer(s, group, *id, &how, now) {
                    left -= 1;
                    result.claimed.ids.push(*id);
                    if !just_id {
                        result.claimed.entries.push(Entry {
                            id: *id,
                            fields: fields.unwrap_or_default(),
                        });
                    }
                }
            }
            result.next_start = candidates.get(walked).copied().unwrap_or_default();
            Ok(result)
        })
    }

    async fn sweep(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        request: &SweepRequest,
    ) -> StoreResult<Swept> {
        let policy = &request.policy;
        let deadline_ms = millis(policy.ack_deadline);
        let mut streams = self.streams();
        if !streams
            .get(stream)
            .is_some_and(|s| s.groups.contains_key(group))
        {
            return Err(no_group(stream, group));
        }
        let now = self.clock.now_ms();
        let min_idle = deadline_ms.min(PARKED_HORIZON_MS);
        // The rows XPENDING IDLE would return: (id, owner, idle, count).
        let rows: Vec<(EntryId, String, u64, u64)> = {
            let g = &streams[stream].groups[group];
            let from = match request.cursor {
                RangeBound::Unbounded => Bound::Unbounded,
                RangeBound::Inclusive(id) => Bound::Included(id),
                RangeBound::Exclusive(id) => Bound::Excluded(id),
            };
            g.pending
                .range((from, Bound::Unbounded))
                .map(|(id, l)| {
                    (
                        *id,
                        l.consumer.clone(),
                        now.saturating_sub(l.delivered_at),
                        l.count,
                    )
                })
                .filter(|(_, _, idle, _)| *idle >= min_idle)
                .take(request.scan.max(1))
                .collect()
        };
        let mut swept = Swept {
            claimed: Vec::new(),
            dead_lettered: Vec::new(),
            lost: Vec::new(),
            next_cursor: RangeBound::Unbounded,
        };
        let mut dead_letters = Vec::new();
        {
            let s = streams.get_mut(stream).unwrap_or_else(|| unreachable!());
            for (id, owner, idle, count) in &rows {
                if swept.claimed.len() >= request.claim.max(1) {
                    swept.next_cursor = RangeBound::Inclusive(*id);
                    break;
                }
                let parked = owner == PARKED_CONSUMER;
                let due = if parked {
                    *idle >= PARKED_HORIZON_MS
                } else {
                    *idle >= deadline_ms + policy.backoff.after_ms(*count)
                };
                if !due {
                    continue;
                }
                let Some(fields) = s.entries.get(id).cloned() else {
                    s.group(stream, group)?.pending.remove(id);
                    swept.lost.push(*id);
                    continue;
                };
                if policy.max_deliveries > 0 && *count >= policy.max_deliveries {
                    let why = if parked {
                        "nacked or given back"
                    } else {
                        "not acknowledged within the ack deadline"
                    };
                    let reason = format!(
                        "delivered {count} times (max_deliveries {}); last delivery {why}",
                        policy.max_deliveries
                    );
                    let mut letter: Vec<Field> = [
                        ("dlq.stream", request.stream_label.clone()),
                        ("dlq.id", id.to_string()),
                        ("dlq.group", group.to_owned()),
                        ("dlq.delivery_count", count.to_string()),
                        ("dlq.reason", reason),
                    ]
                    .into_iter()
                    .map(|(name, value)| Field {
                        name: name.to_owned(),
                        value: value.into(),
                    })
                    .collect();
                    letter.extend(fields);
                    dead_letters.push(letter);
                    s.group(stream, group)?.pending.remove(id);
                    swept.dead_lettered.push(*id);
                    continue;
                }
                let lease = s
                    .group(stream, group)?
                    .pending
                    .get_mut(id)
                    .unwrap_or_else(|| unreachable!());
                lease.consumer = consumer.to_owned();
                lease.delivered_at = now;
                lease.count += 1;
                swept.claimed.push((Entry { id: *id, fields }, count + 1));
            }
            if swept.next_cursor == RangeBound::Unbounded
                && rows.len() == request.scan.max(1)
                && let Some((last, ..)) = rows.last()
            {
                swept.next_cursor = RangeBound::Exclusive(*last);
            }
            if !swept.claimed.is_empty() {
                s.group(stream, group)?.touch(consumer, now);
            }
        }
        if !dead_letters.is_empty() {
            let dlq = streams
                .entry(request.dead_letter_stream.clone())
                .or_default();
            for letter in dead_letters {
                let id = dlq.next_id(NewEntryId::Auto, &request.dead_letter_stream, now)?;
                dlq.entries.insert(id, letter);
                dlq.last_id = id;
                dlq.entries_added += 1;
            }
        }
        Ok(swept)
    }

    async fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> StoreResult<Vec<EntryId>> {
        self.with_group(stream, group, |s, group| {
            let now = self.clock.now_ms();
            let mut moved = Vec::new();
            for id in ids {
                let exists = s.entries.contains_key(id);
                let g = s.group(stream, group)?;
                let Some(lease) = g.pending.get_mut(id) else {
                    continue;
                };
                if movement
                    .holder
                    .as_ref()
                    .is_some_and(|h| *h != lease.consumer)
                {
                    continue;
                }
                if !exists {
                    g.pending.remove(id);
                    continue;
                }
                let idle = match movement.idle {
                    IdleAfterMove::Set(ms) => ms,
                    IdleAfterMove::Backoff(backoff) => movement
                        .horizon_ms
                        .saturating_sub(backoff.after_ms(lease.count)),
                };
                lease.consumer = movement.to.clone();
                lease.delivered_at = now.saturating_sub(idle);
                g.touch(&movement.to, now);
                moved.push(*id);
            }
            Ok(moved)
        })
    }

    async fn release_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        only_if_idle_ms: Option<u64>,
        delete: bool,
    ) -> StoreResult<Released> {
        self.with_group(stream, group, |s, group| {
            let now = self.clock.now_ms();
            if let Some(min_idle) = only_if_idle_ms {
                let seen = s.group(stream, group)?.consumers.get(consumer).copied();
                match seen {
                    Some(seen) if now.saturating_sub(seen) >= min_idle => {}
                    _ => return Ok(Released::default()),
                }
            }
            let held: Vec<EntryId> = s.groups[group]
                .pending
                .iter()
                .filter(|(_, l)| l.consumer == consumer)
                .map(|(id, _)| *id)
                .collect();
            let mut released = Released::default();
            for id in held {
                let exists = s.entries.contains_key(&id);
                let g = s.group(stream, group)?;
                if !exists {
                    g.pending.remove(&id);
                    released.lost += 1;
                    continue;
                }
                if let Some(lease) = g.pending.get_mut(&id) {
                    lease.consumer = PARKED_CONSUMER.to_owned();
                    lease.delivered_at = now.saturating_sub(PARKED_HORIZON_MS);
                    released.handed_back += 1;
                }
            }
            let g = s.group(stream, group)?;
            if released.handed_back > 0 {
                g.touch(PARKED_CONSUMER, now);
            }
            if delete {
                g.consumers.remove(consumer);
                released.deleted = true;
            }
            Ok(released)
        })
    }

    async fn leases(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        lease_ms: u64,
        limit: u64,
    ) -> StoreResult<Vec<(EntryId, u64)>> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            let mut held = s
                .group(stream, group)?
                .leased_by(consumer, now, lease_ms.max(1));
            held.truncate(usize::try_from(limit.max(1)).unwrap_or(usize::MAX));
            Ok(held)
        })
    }

    async fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> StoreResult<Option<EntryId>> {
        let new_id = {
            let mut streams = self.streams();
            let Some(fields) = streams
                .get(dead_letter_stream)
                .and_then(|s| s.entries.get(&id))
                .cloned()
            else {
                return Ok(None);
            };
            let is_letter = fields.first().is_some_and(|f| {
                f.name == "dlq.stream" && f.value.as_ref() == origin_label.as_bytes()
            }) && fields.get(4).is_some_and(|f| f.name == "dlq.reason");
            if !is_letter {
                return Err(StoreError::Rejected(format!(
                    "entry {id} is not a dead letter of {origin_label}"
                )));
            }
            let target = streams.entry(origin.to_owned()).or_default();
            let new_id = target.next_id(NewEntryId::Auto, origin, self.clock.now_ms())?;
            target.entries.insert(new_id, fields[5..].to_vec());
            target.last_id = new_id;
            target.entries_added += 1;
            if let Some(dlq) = streams.get_mut(dead_letter_stream)
                && dlq.entries.remove(&id).is_some()
            {
                dlq.max_deleted_id = dlq.max_deleted_id.max(id);
            }
            new_id
        };
        self.wakeups.notify(origin);
        Ok(Some(new_id))
    }
}
