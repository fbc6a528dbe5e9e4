//! The store's interface, split by role: a feature adds one method to the role it belongs
//! to, written once per store in that store's file for the role (`redis_store/inspect.rs`,
//! `memory_store/inspect.rs`, `namespaced/inspect.rs`...), not one more line in one long
//! `impl`. [`Store`] is all four roles together, and what the layers above ask for.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::model::*;

/// The data plane: appending, reading (tail and group), acknowledging, and the wake-ups that let
/// a reader wait without holding a connection. Every consuming call goes through these.
pub trait Streams: Clone + Send + Sync + 'static {
    /// Appends each request's messages, all requests in order in one pipelined round trip, and
    /// answers each request on its own: its ids, or the error of its first failed message.
    /// Wakes the watchers of every stream written. `Err` only when the round trip itself fails.
    fn append(
        &self,
        requests: &[Append],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<Vec<EntryId>>>>> + Send;

    /// XREAD without blocking: entries after each cursor, at most `count` per stream.
    fn read(
        &self,
        streams: &[(String, EntryId)],
        count: usize,
    ) -> impl Future<Output = StoreResult<Vec<(String, Vec<Entry>)>>> + Send;

    /// XREADGROUP without blocking, as `consumer` of `group`.
    fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> impl Future<Output = StoreResult<Vec<(String, Vec<GroupEntry>)>>> + Send;

    /// The id of the newest entry, `None` for an empty or missing stream.
    fn last_entry_id(
        &self,
        stream: &str,
    ) -> impl Future<Output = StoreResult<Option<EntryId>>> + Send;

    /// XACK; returns how many were pending.
    fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// XACK with what happened to each id (in order): the confirmations of a consumer that
    /// must know which of its acks took. With a `holder`, only the ids it holds are
    /// acknowledged, atomically (an id another consumer holds is [`AckOutcome::HeldByOther`]);
    /// without, every pending id is.
    fn ack_confirmed(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> impl Future<Output = StoreResult<Vec<AckOutcome>>> + Send;

    /// A handle that resolves when any of `streams` may have new entries: for every tail
    /// reader (`group` `None`), or for one member of `group` at a time.
    fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch;

    /// The wake-up registry behind [`watch`](Self::watch), for introspection (how many
    /// subscriptions wait).
    fn wakeups(&self) -> &Wakeups;

    /// Watches for writes made outside this broker, waking their watchers, until `shutdown`.
    /// A store nobody else can write to just waits for `shutdown`.
    fn run_watcher(self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send;

    /// The connection pool's state and history, for a store with a pool.
    fn pool_state(&self) -> Option<PoolState>;

    /// A cheap round trip, for health checks.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// What Admin, the console and the sweeps inspect and change one command at a time: listing and
/// describing streams, ranges, deletes and trims, groups, consumers, pending entries, claims.
pub trait Inspect: Clone + Send + Sync + 'static {
    /// One page of stream keys matching `pattern` (SCAN TYPE stream).
    fn list_streams(
        &self,
        pattern: &str,
        cursor: u64,
        page_size: u32,
    ) -> impl Future<Output = StoreResult<StreamPage>> + Send;

    /// XINFO STREAM.
    fn stream_info(&self, stream: &str) -> impl Future<Output = StoreResult<StreamInfo>> + Send;

    /// XRANGE / XREVRANGE.
    fn range(
        &self,
        stream: &str,
        range: IdRange,
        count: usize,
        reverse: bool,
    ) -> impl Future<Output = StoreResult<Vec<Entry>>> + Send;

    /// XDEL; returns how many existed.
    fn delete_entries(
        &self,
        stream: &str,
        ids: &[EntryId],
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// XTRIM; returns how many were evicted.
    fn trim(
        &self,
        stream: &str,
        policy: TrimPolicy,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Deletes the key only if it is a stream.
    fn delete_stream(&self, stream: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// XGROUP CREATE.
    fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartId,
        create_stream: bool,
        entries_read: Option<i64>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// XGROUP DESTROY; NoSuchGroup when it did not exist.
    fn destroy_group(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// XGROUP SETID.
    fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        id: StartId,
        entries_read: Option<i64>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// XINFO GROUPS.
    fn groups(&self, stream: &str) -> impl Future<Output = StoreResult<Vec<GroupInfo>>> + Send;

    /// XGROUP CREATECONSUMER; false when it existed.
    fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// XGROUP DELCONSUMER; returns the pending entries it dropped.
    fn delete_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// XINFO CONSUMERS.
    fn consumers(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = StoreResult<Vec<ConsumerInfo>>> + Send;

    /// XPENDING summary.
    fn pending_summary(
        &self,
        stream: &str,
        group: &str,
    ) -> impl Future<Output = StoreResult<PendingSummary>> + Send;

    /// XPENDING extended.
    fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> impl Future<Output = StoreResult<Vec<PendingEntry>>> + Send;

    /// XCLAIM.
    fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &ClaimOptions,
    ) -> impl Future<Output = StoreResult<Claimed>> + Send;

    /// XAUTOCLAIM.
    fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &AutoClaimOptions,
    ) -> impl Future<Output = StoreResult<AutoClaimed>> + Send;
}

/// The delivery features' atomic steps, one Lua script each on Redis (and its twin in memory):
/// the redelivery sweep, delayed messages, retention, ordered delivery, moving and releasing
/// pending entries, rebuilding leases, replaying dead letters. Atomic, so that several broker
/// instances on one Redis never act on the same entry twice.
pub trait Scripts: Clone + Send + Sync + 'static {
    /// One atomic step of a group's redelivery sweep: looks at up to `request.scan` pending
    /// entries from `request.cursor`, and for each one that is due (ack deadline plus backoff
    /// passed, or parked long enough) either moves it to the dead-letter stream (its delivery
    /// count reached the limit), forgets it (its message was deleted), or claims it for
    /// `consumer`. Atomic, so two broker instances never claim the same entry.
    fn sweep(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        request: &SweepRequest,
    ) -> impl Future<Output = StoreResult<Swept>> + Send;

    /// One atomic step on `stream`'s delayed messages, kept in `keys` (see [`DelayStep`]): a
    /// move appends what is due and forgets it in the same step.
    fn delay(
        &self,
        stream: &str,
        keys: &DelayedKeys,
        step: &DelayStep,
    ) -> impl Future<Output = StoreResult<Delayed>> + Send;

    /// One step on the sorted set `registry` of streams with delayed messages (see
    /// [`ScheduleStep`]): what is due, as (stream, earliest due ms).
    fn schedule(
        &self,
        registry: &str,
        step: &ScheduleStep,
    ) -> impl Future<Output = StoreResult<Vec<(String, u64)>>> + Send;

    /// One application of a stream's retention policy (see [`RetentionCut`]): looks at every
    /// group and trims, atomically, so that `acked` never deletes an entry a group has not read
    /// and acknowledged. A missing stream trims nothing.
    fn retain(
        &self,
        stream: &str,
        cut: &RetentionCut,
    ) -> impl Future<Output = StoreResult<Trimmed>> + Send;

    /// One atomic step of ordered delivery for `group` on `stream`, on its ordering `state`
    /// (see [`OrderStep`]): admitting what a member read, releasing what was settled, or
    /// healing. Atomic, so two broker instances never both let a key's next message through.
    fn order(
        &self,
        stream: &str,
        group: &str,
        state: &OrderingState,
        step: &OrderStep,
    ) -> impl Future<Output = StoreResult<Ordered>> + Send;

    /// Moves pending entries between consumers and sets their idle time (nack, extend, hand
    /// back), skipping ids not pending or not held by `movement.holder`. Returns the ids moved.
    fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> impl Future<Output = StoreResult<Vec<EntryId>>> + Send;

    /// Gives every entry `consumer` holds back to the group, due at once, and deletes the
    /// consumer if asked: atomically, so no entry is left in no consumer's list (XGROUP
    /// DELCONSUMER alone drops them). With `only_if_idle_ms`, does nothing unless the consumer
    /// has been idle at least that long (checked inside the same atomic step).
    fn release_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        only_if_idle_ms: Option<u64>,
        delete: bool,
    ) -> impl Future<Output = StoreResult<Released>> + Send;

    /// The entries `consumer` holds unacknowledged whose lease still runs (idle for less than
    /// `lease_ms`), at most `limit`, each with its idle time in ms: what flow control's book of
    /// leases is rebuilt from. Entries past their deadline are due for redelivery to anyone and
    /// no longer count against their holder.
    fn leases(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        lease_ms: u64,
        limit: u64,
    ) -> impl Future<Output = StoreResult<Vec<(EntryId, u64)>>> + Send;

    /// Moves one dead letter back to the stream it came from (`origin`, recorded in the dead
    /// letter as `origin_label`, its name without any namespace prefix) as a new entry and deletes
    /// it from the dead-letter stream, atomically. `None` when the dead letter is no longer there.
    fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> impl Future<Output = StoreResult<Option<EntryId>>> + Send;
}

/// Small things the broker keeps beside the streams, as fields of hashes (`registry`): stored
/// subscriptions, topics, Pub/Sub records; and leases that let one broker instance at a time do
/// a shared job. A store writes the four record primitives and the lease; topics are records
/// (their partition count), so they come with the trait.
pub trait Registry: Clone + Send + Sync + 'static {
    /// A record of the hash `registry` (small things the broker keeps beside the streams, such
    /// as stored subscriptions; under the key prefix like every key); `None` when absent.
    fn record(
        &self,
        registry: &str,
        field: &str,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Writes a record of `registry`; with `only_if_new`, only when absent. `Ok(false)` when it
    /// was not written because it existed.
    fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Every record of `registry`, in no particular order.
    fn records(
        &self,
        registry: &str,
    ) -> impl Future<Output = StoreResult<Vec<(String, String)>>> + Send;

    /// Deletes a record of `registry`; `Ok(false)` when there was none.
    fn remove_record(
        &self,
        registry: &str,
        field: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Takes or renews the lease `key` for `holder` for `ttl_ms` (SET NX PX, or PEXPIRE when
    /// `holder` has it already), so that one broker instance at a time does a shared job;
    /// `Ok(false)` when another holder has it.
    fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Records a topic with `partitions` partitions in the hash `registry` (a key like any
    /// other: under the key prefix, so a tenant confined to it by a Redis ACL can use topics);
    /// `Ok(false)` when it existed already with the same count, `Ok(true)` when created; another
    /// count fails (`TopicExists`).
    fn create_topic(
        &self,
        registry: &str,
        topic: &str,
        partitions: u32,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        async move {
            let count = partitions.to_string();
            if self.put_record(registry, topic, &count, true).await? {
                return Ok(true);
            }
            match self.topic_partitions(registry, topic).await? {
                Some(existing) if existing == partitions => Ok(false),
                Some(existing) => Err(StoreError::TopicExists {
                    topic: topic.to_owned(),
                    partitions: existing,
                }),
                None => Err(StoreError::Unexpected(
                    "topic vanished while created".into(),
                )),
            }
        }
    }

    /// A topic's partition count from the hash `registry`, `None` for a name that is not a topic.
    fn topic_partitions(
        &self,
        registry: &str,
        topic: &str,
    ) -> impl Future<Output = StoreResult<Option<u32>>> + Send {
        async move {
            match self.record(registry, topic).await? {
                None => Ok(None),
                Some(count) => count.parse().map(Some).map_err(|_| {
                    StoreError::Unexpected(format!(
                        "topic `{topic}` in `{registry}` has `{count}` for its partition count"
                    ))
                }),
            }
        }
    }
}

/// Everything streamgate needs from a stream store: the four roles.
///
/// Every method takes plain domain values and returns a [`StoreError`]; no method blocks waiting
/// for new data (use [`Streams::watch`] for that), so a call never holds a connection for longer
/// than one round trip.
pub trait Store: Streams + Inspect + Scripts + Registry {}

impl<T: Streams + Inspect + Scripts + Registry> Store for T {}
