//! The only layer that holds stream data: a narrow [`Store`] interface over Redis Streams.
//!
//! The layers above speak domain types ([`crate::model`]) to a `Store` and never see a Redis
//! reply or connection. [`RedisStore`] and the embedded [`MemoryStore`] implement it, and
//! [`Namespaced`] wraps either under `--key-prefix`; the server is generic over the store, so
//! each implementation writes each method once. The interface is four role traits
//! ([`Streams`], [`Inspect`], [`Scripts`], [`Registry`]; `roles.rs`), each implemented in a
//! file of its own per store, so a feature adds a method where its role is.
//!
//! Subscriptions never block on Redis: they read without `BLOCK` and, when a read comes back
//! empty, wait on a [`StreamWatch`] from the shared [`Wakeups`] registry. Appends through this
//! broker wake the watchers at once; a store-specific watcher (for Redis, one blocked `XREAD`
//! on one dedicated connection for all watched streams) covers entries written by anyone else.

mod memory_store;
mod namespaced;
mod redis_store;
mod roles;
mod wakeups;

use std::sync::Arc;

pub use memory_store::MemoryStore;
pub use namespaced::Namespaced;
pub use redis_store::{RedisStore, RedisStoreConfig, SentinelConfig, key_slot};
pub use roles::{Inspect, Registry, Scripts, Store, Streams};
pub use wakeups::{Appending, Coverage, StreamWatch, Wakeups};

use crate::model::{EntryId, Field};

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
