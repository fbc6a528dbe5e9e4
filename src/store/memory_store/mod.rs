//! [`Store`] in this process's memory: the zero-setup default, for trying streamgate and for
//! development. Nothing survives a restart.
//!
//! Over 600 lines because it is one `impl Store` block of 44 methods (a trait impl cannot be
//! split across files); the state, the twins of the Lua scripts, and registry records and leases
//! live in `state.rs`, `pending.rs` and `records.rs`.
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

use tokio_util::sync::CancellationToken;

mod delayed;
mod ordering;
mod pending;
mod produce;
mod records;
mod retention;
mod state;

use state::{Clock, Group, Stream, bounds, is_empty_range, no_group, no_stream, redis_glob};

use super::{
    GroupCursor, GroupEntry, Released, Store, StoreError, StoreResult, StreamPage, StreamWatch,
    Wakeups,
};
use crate::model::{
    AckOutcome, Append, AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo,
    DelayStep, Delayed, DelayedKeys, Entry, EntryId, Field, GroupInfo, IdRange, OrderStep, Ordered,
    OrderingState, PendingEntry, PendingMove, PendingQuery, PendingSummary, RetentionCut,
    ScheduleStep, StartId, StreamInfo, SweepRequest, Swept, TrimPolicy, Trimmed,
};

/// The embedded store; cheap to clone (all clones share the data).
#[derive(Clone, Default)]
pub struct MemoryStore {
    streams: Arc<Mutex<HashMap<String, Stream>>>,
    /// (registry, topic) → partition count.
    topics: Arc<Mutex<HashMap<(String, String), u32>>>,
    records: Arc<records::Records>,
    leases: Arc<records::Leases>,
    /// Delayed messages and their registries (locked before `streams` when both are).
    delayed: Arc<Mutex<delayed::Book>>,
    wakeups: Wakeups,
    clock: Clock,
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
                answers.push(produce::append(&mut streams, request, now));
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
                GroupCursor::New => stream.deliver_new(group, consumer, count, no_ack, now),
                GroupCursor::PendingAfter(after) => {
                    stream.deliver_own_pending(group, consumer, *after, count, now)
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

    async fn ack_confirmed(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> StoreResult<Vec<AckOutcome>> {
        self.with_group(stream, group, |s, group| {
            let pending = &mut s.group(stream, group)?.pending;
            Ok(ids
                .iter()
                .map(|id| pending::ack_confirmed(pending, holder, *id))
                .collect())
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

    fn pool_state(&self) -> Option<crate::store::PoolState> {
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
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::claim(s, stream, group, consumer, options, now)
        })
    }

    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &AutoClaimOptions,
    ) -> StoreResult<AutoClaimed> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::auto_claim(s, stream, group, consumer, options, now)
        })
    }

    async fn sweep(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        request: &SweepRequest,
    ) -> StoreResult<Swept> {
        let now = self.clock.now_ms();
        pending::sweep(&mut self.streams(), stream, group, consumer, request, now)
    }

    async fn delay(
        &self,
        stream: &str,
        _keys: &DelayedKeys,
        step: &DelayStep,
    ) -> StoreResult<Delayed> {
        // Entry ids follow the store's own clock.
        let now = self.clock.now_ms();
        let delayed = {
            let mut book = self.delayed.lock().unwrap_or_else(PoisonError::into_inner);
            book.delay(&mut self.streams(), stream, step, now)?
        };
        if !delayed.moved.is_empty() {
            self.wakeups.notify(stream);
        }
        Ok(delayed)
    }

    async fn schedule(
        &self,
        registry: &str,
        step: &ScheduleStep,
    ) -> StoreResult<Vec<(String, u64)>> {
        Ok(self
            .delayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .schedule(registry, step))
    }

    async fn retain(&self, stream: &str, cut: &RetentionCut) -> StoreResult<Trimmed> {
        Ok(self
            .streams()
            .get_mut(stream)
            .map(|s| retention::retain(s, cut))
            .unwrap_or_default())
    }

    async fn order(
        &self,
        stream: &str,
        group: &str,
        _state: &OrderingState,
        step: &OrderStep,
    ) -> StoreResult<Ordered> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            Ok(ordering::order(s, group, step, now))
        })
    }

    async fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> StoreResult<Vec<EntryId>> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::move_pending(s, stream, group, ids, movement, now)
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
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::release_consumer(s, stream, group, consumer, only_if_idle_ms, delete, now)
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

    async fn record(&self, registry: &str, field: &str) -> StoreResult<Option<String>> {
        self.get_record(registry, field)
    }

    async fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> StoreResult<bool> {
        self.set_record(registry, field, value, only_if_new)
    }

    async fn records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        self.all_records(registry)
    }

    async fn remove_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        self.delete_record(registry, field)
    }

    async fn hold_lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        self.lease(key, holder, ttl_ms)
    }

    async fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> StoreResult<Option<EntryId>> {
        let now = self.clock.now_ms();
        let replayed = pending::replay_dead_letter(
            &mut self.streams(),
            dead_letter_stream,
            id,
            origin,
            origin_label,
            now,
        )?;
        let Some(new_id) = replayed else {
            return Ok(None);
        };
        self.wakeups.notify(origin);
        Ok(Some(new_id))
    }
}
