//! `--key-prefix`: every key streamgate touches lives under one prefix, and clients never see it.
//!
//! [`Namespaced`] wraps any [`Store`]: stream names are prefixed on the way in (streams, dead-letter
//! streams, listing patterns) and stripped on the way out (read results, listings, errors). A
//! name cannot escape: the prefix is prepended as is, so every key starts with it, and listing
//! matches `<escaped prefix><pattern>` and drops anything else. Names themselves are validated in
//! the gRPC layer (no glob characters, no control characters; see `grpc::convert::name`).
//!
//! On a Redis Cluster the prefix also goes inside a name's hash tag: `{orders}:dlq` is kept as
//! `team:{team:orders}:dlq`. The keys the broker derives from an untagged stream (its default
//! dead-letter stream, its ordering state, its dedupe keys) carry the stream's whole name as
//! their tag, and the stream `team:orders` hashes whole: with the prefix outside the braces
//! (`team:{orders}:dlq`, the slot of `orders`) they would not share its slot, and the scripts
//! that touch both fail with CROSSSLOT. Every key still starts with the prefix (a Redis ACL
//! `~team:*` confines a tenant).

use tokio_util::sync::CancellationToken;

use super::{
    GroupCursor, GroupEntry, Released, Store, StoreError, StoreResult, StreamPage, StreamWatch,
    Wakeups,
};
use crate::model::{
    AckOutcome, Append, AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo, Dedupe,
    DelayStep, Delayed, DelayedKeys, Entry, EntryId, GroupInfo, IdRange, OrderStep, Ordered,
    OrderingState, PendingEntry, PendingMove, PendingQuery, PendingSummary, RetentionCut,
    ScheduleStep, StartId, StreamInfo, SweepRequest, Swept, TrimPolicy, Trimmed,
};

mod keys;

use keys::Keys;

/// A store whose keys all start with `prefix` (empty: no change at all).
#[derive(Clone)]
pub struct Namespaced<S> {
    inner: S,
    keys: Keys,
}

impl<S: Store> Namespaced<S> {
    /// Wraps `inner`; `prefix` may be empty. `cluster`: the store is a Redis Cluster, so the
    /// prefix goes inside hash tags as well.
    pub fn new(inner: S, prefix: String, cluster: bool) -> Self {
        Self {
            inner,
            keys: Keys::new(prefix, cluster),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn key(&self, name: &str) -> String {
        self.keys.key(name)
    }

    fn keys(&self, names: &[String]) -> Vec<String> {
        names.iter().map(|n| self.key(n)).collect()
    }

    fn name(&self, key: String) -> String {
        self.keys.name(key)
    }

    /// Errors name streams; a client must see its own names, not keys.
    fn unkey(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::NoSuchGroup { stream, group } => StoreError::NoSuchGroup {
                stream: self.name(stream),
                group,
            },
            StoreError::NoSuchStream { stream } => StoreError::NoSuchStream {
                stream: self.name(stream),
            },
            StoreError::WrongType { key } => StoreError::WrongType {
                key: self.name(key),
            },
            StoreError::IdNotIncreasing { stream } => StoreError::IdNotIncreasing {
                stream: self.name(stream),
            },
            StoreError::TopicExists { topic, partitions } => StoreError::TopicExists {
                topic: self.name(topic),
                partitions,
            },
            StoreError::Rejected(text) if !self.keys.prefix().is_empty() => {
                StoreError::Rejected(text.replace(self.keys.prefix(), ""))
            }
            other => other,
        }
    }

    /// Earlier versions kept a prefixed broker's topics in the unprefixed registry key, with prefixed topic
    /// names as fields. A topic found there is copied into this namespace's registry, so that it
    /// is not lost on upgrade. A Redis user confined to the prefix may not read the old key: that
    /// means it never had topics there.
    async fn adopt_legacy_topic(&self, registry: &str, topic: &str) -> StoreResult<Option<u32>> {
        let legacy = match self
            .inner
            .topic_partitions(registry, &self.key(topic))
            .await
        {
            Ok(Some(partitions)) => partitions,
            Ok(None) | Err(StoreError::PermissionDenied { .. }) => return Ok(None),
            Err(other) => return Err(self.unkey(other)),
        };
        tracing::info!(
            topic,
            partitions = legacy,
            "moved a topic from the registry outside the key prefix into the prefix's own"
        );
        match self.create_topic(registry, topic, legacy).await {
            Ok(_) => Ok(Some(legacy)),
            // Created meanwhile with another count: that one stands.
            Err(StoreError::TopicExists { partitions, .. }) => Ok(Some(partitions)),
            Err(other) => Err(other),
        }
    }

    fn batches<T>(&self, batches: Vec<(String, T)>) -> Vec<(String, T)> {
        batches
            .into_iter()
            .map(|(stream, items)| (self.name(stream), items))
            .collect()
    }
}

impl<S: Store> Store for Namespaced<S> {
    async fn create_topic(
        &self,
        registry: &str,
        topic: &str,
        partitions: u32,
    ) -> StoreResult<bool> {
        // The topic is a field of the (prefixed) registry: its name needs no prefix.
        self.inner
            .create_topic(&self.key(registry), topic, partitions)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn topic_partitions(&self, registry: &str, topic: &str) -> StoreResult<Option<u32>> {
        let found = self
            .inner
            .topic_partitions(&self.key(registry), topic)
            .await
            .map_err(|e| self.unkey(e))?;
        if found.is_some() || self.keys.prefix().is_empty() {
            return Ok(found);
        }
        self.adopt_legacy_topic(registry, topic).await
    }

    async fn append(&self, requests: &[Append]) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        let prefixed: Vec<Append> = requests
            .iter()
            .map(|r| Append {
                stream: self.key(&r.stream),
                // Dedupe keys are keys too: under the prefix, in the stream's slot.
                dedupe: r.dedupe.as_ref().map(|dedupe| Dedupe {
                    prefix: self.key(&dedupe.prefix),
                    ..dedupe.clone()
                }),
                ..r.clone()
            })
            .collect();
        let answers = self
            .inner
            .append(&prefixed)
            .await
            .map_err(|e| self.unkey(e))?;
        Ok(answers
            .into_iter()
            .map(|a| a.map_err(|e| self.unkey(e)))
            .collect())
    }

    async fn read(
        &self,
        streams: &[(String, EntryId)],
        count: usize,
    ) -> StoreResult<Vec<(String, Vec<Entry>)>> {
        let keyed: Vec<_> = streams.iter().map(|(s, id)| (self.key(s), *id)).collect();
        let read = self
            .inner
            .read(&keyed, count)
            .await
            .map_err(|e| self.unkey(e))?;
        Ok(self.batches(read))
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
        let keyed: Vec<_> = streams.iter().map(|(s, c)| (self.key(s), *c)).collect();
        let read = self
            .inner
            .read_group(group, consumer, &keyed, count, no_ack)
            .await
            .map_err(|e| self.unkey(e))?;
        Ok(self.batches(read))
    }

    async fn last_entry_id(&self, stream: &str) -> StoreResult<Option<EntryId>> {
        self.inner
            .last_entry_id(&self.key(stream))
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.inner
            .ack(&self.key(stream), group, ids)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn ack_confirmed(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> StoreResult<Vec<AckOutcome>> {
        self.inner
            .ack_confirmed(&self.key(stream), group, holder, ids)
            .await
            .map_err(|e| self.unkey(e))
    }

    fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch {
        self.inner.watch(&self.keys(streams), group)
    }

    fn wakeups(&self) -> &Wakeups {
        self.inner.wakeups()
    }

    async fn run_watcher(self, shutdown: CancellationToken) {
        self.inner.run_watcher(shutdown).await;
    }

    fn pool_state(&self) -> Option<super::PoolState> {
        self.inner.pool_state()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    async fn list_streams(
        &self,
        pattern: &str,
        cursor: u64,
        page_size: u32,
    ) -> StoreResult<StreamPage> {
        let pattern = self
            .keys
            .pattern(if pattern.is_empty() { "*" } else { pattern });
        let page = self
            .inner
            .list_streams(&pattern, cursor, page_size)
            .await
            .map_err(|e| self.unkey(e))?;
        Ok(StreamPage {
            streams: page
                .streams
                .into_iter()
                .filter(|key| key.starts_with(self.keys.prefix()))
                .map(|key| self.name(key))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn stream_info(&self, stream: &str) -> StoreResult<StreamInfo> {
        self.inner
            .stream_info(&self.key(stream))
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn range(
        &self,
        stream: &str,
        range: IdRange,
        count: usize,
        reverse: bool,
    ) -> StoreResult<Vec<Entry>> {
        self.inner
            .range(&self.key(stream), range, count, reverse)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn delete_entries(&self, stream: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.inner
            .delete_entries(&self.key(stream), ids)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn trim(&self, stream: &str, policy: TrimPolicy) -> StoreResult<u64> {
        self.inner
            .trim(&self.key(stream), policy)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        self.inner
            .delete_stream(&self.key(stream))
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartId,
        create_stream: bool,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        self.inner
            .create_group(&self.key(stream), group, start, create_stream, entries_read)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn destroy_group(&self, stream: &str, group: &str) -> StoreResult<()> {
        self.inner
            .destroy_group(&self.key(stream), group)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        id: StartId,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        self.inner
            .set_group_id(&self.key(stream), group, id, entries_read)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn groups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        self.inner
            .groups(&self.key(stream))
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> StoreResult<bool> {
        self.inner
            .create_consumer(&self.key(stream), group, consumer)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn delete_consumer(&self, stream: &str, group: &str, consumer: &str) -> StoreResult<u64> {
        self.inner
            .delete_consumer(&self.key(stream), group, consumer)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn consumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        self.inner
            .consumers(&self.key(stream), group)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        self.inner
            .pending_summary(&self.key(stream), group)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> StoreResult<Vec<PendingEntry>> {
        self.inner
            .pending(&self.key(stream), group, query)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &ClaimOptions,
    ) -> StoreResult<Claimed> {
        self.inner
            .claim(&self.key(stream), group, consumer, options)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &AutoClaimOptions,
    ) -> StoreResult<AutoClaimed> {
        self.inner
            .auto_claim(&self.key(stream), group, consumer, options)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn sweep(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        request: &SweepRequest,
    ) -> StoreResult<Swept> {
        let request = SweepRequest {
            dead_letter_stream: self.key(&request.dead_letter_stream),
            ..request.clone()
        };
        self.inner
            .sweep(&self.key(stream), group, consumer, &request)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn delay(
        &self,
        stream: &str,
        keys: &DelayedKeys,
        step: &DelayStep,
    ) -> StoreResult<Delayed> {
        let keys = DelayedKeys {
            due: self.key(&keys.due),
            messages: self.key(&keys.messages),
        };
        self.inner
            .delay(&self.key(stream), &keys, step)
            .await
            .map_err(|e| self.unkey(e))
    }

    /// The registry holds stream names as callers give them (unprefixed); only its own key is
    /// under the prefix.
    async fn schedule(
        &self,
        registry: &str,
        step: &ScheduleStep,
    ) -> StoreResult<Vec<(String, u64)>> {
        self.inner
            .schedule(&self.key(registry), step)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn retain(&self, stream: &str, cut: &RetentionCut) -> StoreResult<Trimmed> {
        self.inner
            .retain(&self.key(stream), cut)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn order(
        &self,
        stream: &str,
        group: &str,
        state: &OrderingState,
        step: &OrderStep,
    ) -> StoreResult<Ordered> {
        let state = OrderingState {
            heads: self.key(&state.heads),
            held: self.key(&state.held),
        };
        self.inner
            .order(&self.key(stream), group, &state, step)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> StoreResult<Vec<EntryId>> {
        self.inner
            .move_pending(&self.key(stream), group, ids, movement)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn release_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        only_if_idle_ms: Option<u64>,
        delete: bool,
    ) -> StoreResult<Released> {
        self.inner
            .release_consumer(&self.key(stream), group, consumer, only_if_idle_ms, delete)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn leases(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        lease_ms: u64,
        limit: u64,
    ) -> StoreResult<Vec<(EntryId, u64)>> {
        self.inner
            .leases(&self.key(stream), group, consumer, lease_ms, limit)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn record(&self, registry: &str, field: &str) -> StoreResult<Option<String>> {
        // Fields name things as clients know them: only the registry's key is prefixed.
        self.inner
            .record(&self.key(registry), field)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> StoreResult<bool> {
        self.inner
            .put_record(&self.key(registry), field, value, only_if_new)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        self.inner
            .records(&self.key(registry))
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn remove_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        self.inner
            .remove_record(&self.key(registry), field)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn hold_lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        self.inner
            .hold_lease(&self.key(key), holder, ttl_ms)
            .await
            .map_err(|e| self.unkey(e))
    }

    async fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> StoreResult<Option<EntryId>> {
        self.inner
            .replay_dead_letter(
                &self.key(dead_letter_stream),
                id,
                &self.key(origin),
                origin_label,
            )
            .await
            .map_err(|e| self.unkey(e))
    }
}
