//! The only layer that holds stream data: a narrow [`Store`] interface over Redis Streams.
//!
//! The layers above speak domain types ([`crate::model`]) to a `Store` and never see a Redis
//! reply or connection. [`RedisStore`] and the embedded [`MemoryStore`] implement it, and
//! [`Namespaced`] wraps either under `--key-prefix`; the server is generic over the store, so
//! each implementation writes each method once.
//!
//! Subscriptions never block on Redis: they read without `BLOCK` and, when a read comes back
//! empty, wait on a [`StreamWatch`] from the shared [`Wakeups`] registry. Appends through this
//! broker wake the watchers at once; a store-specific watcher (for Redis, one blocked `XREAD`
//! on one dedicated connection for all watched streams) covers entries written by anyone else.

mod memory_store;
mod namespaced;
mod redis_store;
mod wakeups;

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use memory_store::MemoryStore;
pub use namespaced::Namespaced;
pub use redis_store::{RedisStore, RedisStoreConfig, SentinelConfig, key_slot};
pub use wakeups::{StreamWatch, Wakeups};

use crate::model::{
    AckOutcome, Append, AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo,
    DelayStep, Delayed, DelayedKeys, Entry, EntryId, Field, GroupInfo, IdRange, OrderStep, Ordered,
    OrderingState, PendingEntry, PendingMove, PendingQuery, PendingSummary, RetentionCut,
    ScheduleStep, StartId, StreamInfo, SweepRequest, Swept, TrimPolicy, Trimmed,
};

/// A store failure, classified by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// NOGROUP: the group (or the stream holding it) does not exist.
    #[error("consumer group `{group}` does not exist on stream `{stream}`")]
    NoSuchGroup {
        /// Stream named by the request.
        stream: String,
        /// Group named by the request.
        group: String,
    },
    /// The stream does not exist, for a command that needs it to.
    #[error("stream `{stream}` does not exist")]
    NoSuchStream {
        /// Stream named by the request.
        stream: String,
    },
    /// BUSYGROUP: the group exists already.
    #[error("consumer group `{group}` already exists on stream `{stream}`")]
    GroupExists {
        /// Stream named by the request.
        stream: String,
        /// Group named by the request.
        group: String,
    },
    /// WRONGTYPE: the key holds something other than a stream.
    #[error("key `{key}` exists and is not a stream")]
    WrongType {
        /// The key.
        key: String,
    },
    /// An explicit XADD id not above the stream's last id.
    #[error("the id given is equal to or smaller than the last id of stream `{stream}`")]
    IdNotIncreasing {
        /// Stream named by the request.
        stream: String,
    },
    /// Redis refused the request for a reason of the request's own (syntax, arguments).
    #[error("redis refused the request: {0}")]
    Rejected(String),
    /// NOPERM: the Redis user streamgate connects as may not run this command or touch this key
    /// (its ACL). Retrying will not help; the operator must grant the permission.
    #[error("redis user `{user}` is not allowed to run {command}: {detail}")]
    PermissionDenied {
        /// The Redis user (`default` when the URL names none).
        user: String,
        /// The command refused (a script's name for scripts).
        command: String,
        /// What Redis said is missing, e.g. "this user has no permissions to access one of the
        /// keys used as arguments".
        detail: String,
    },
    /// Redis is unreachable, not ready, or too slow; retrying may succeed.
    #[error("redis is unavailable: {reason}")]
    Unavailable {
        /// What failed, for the client and the logs.
        reason: String,
        /// The error it came from, when there is one (an I/O error, a timeout, LOADING...).
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A topic of that name exists with another partition count.
    #[error("topic `{topic}` exists with {partitions} partitions")]
    TopicExists {
        /// The topic.
        topic: String,
        /// Its partition count.
        partitions: u32,
    },
    /// A reply of a shape we do not understand.
    #[error("unexpected reply from redis: {0}")]
    Unexpected(String),
}

impl StoreError {
    /// UNAVAILABLE for `reason`, with no underlying error.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// UNAVAILABLE because of `source`, which it keeps (its text is the reason).
    pub fn unavailable_from(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable {
            reason: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// The class of the error, for metrics: `no_such_group`, `unavailable`...
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoSuchGroup { .. } => "no_such_group",
            Self::NoSuchStream { .. } => "no_such_stream",
            Self::GroupExists { .. } => "group_exists",
            Self::WrongType { .. } => "wrong_type",
            Self::IdNotIncreasing { .. } => "id_not_increasing",
            Self::Rejected(_) => "rejected",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::Unavailable { .. } => "unavailable",
            Self::TopicExists { .. } => "topic_exists",
            Self::Unexpected(_) => "unexpected",
        }
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where a group read starts on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCursor {
    /// `>`: entries never delivered to the group.
    New,
    /// This consumer's own pending entries with ids above this one.
    PendingAfter(EntryId),
}

/// An entry read by a group consumer. `fields` is `None` when the entry is still pending but was
/// deleted or trimmed from the stream: there is nothing left to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Entry id.
    pub id: EntryId,
    /// Fields, or `None` if the entry no longer exists.
    pub fields: Option<Vec<Field>>,
}

/// What releasing a consumer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Pending entries given back to the group, due for redelivery at once.
    pub handed_back: u64,
    /// Pending entries whose message had been deleted or trimmed: nothing left to give back.
    pub lost: u64,
    /// Whether the consumer was deleted.
    pub deleted: bool,
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    /// Stream names.
    pub streams: Vec<String>,
    /// Cursor for the next page; 0 when the listing is complete.
    pub next_cursor: u64,
}

/// A pooled store's connections now and since start: what an operator (or the soak run) reads to
/// tell a pool that replaces connections from one that leaks them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    /// Connections the pool holds.
    pub connections: u32,
    /// Of those, how many are idle.
    pub idle: u32,
    /// Connections opened since start.
    pub opened: u64,
    /// Connections closed since start because a command found them broken.
    pub closed_broken: u64,
    /// Connections closed since start because they reached their lifetime or idle limit.
    pub closed_aged: u64,
}

/// Everything streamgate needs from a stream store.
///
/// Every method takes plain domain values and returns a [`StoreError`]; no method blocks waiting
/// for new data (use [`Store::watch`] for that), so a call never holds a connection for longer
/// than one round trip.
pub trait Store: Clone + Send + Sync + 'static {
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

    /// Records a topic with `partitions` partitions in the hash `registry` (a key like any
    /// other: under the key prefix, so a tenant confined to it by a Redis ACL can use topics);
    /// `Ok(false)` when it existed already with the same count, `Ok(true)` when created; another
    /// count fails (`TopicExists`).
    fn create_topic(
        &self,
        registry: &str,
        topic: &str,
        partitions: u32,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// A topic's partition count from the hash `registry`, `None` for a name that is not a topic.
    fn topic_partitions(
        &self,
        registry: &str,
        topic: &str,
    ) -> impl Future<Output = StoreResult<Option<u32>>> + Send;

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
