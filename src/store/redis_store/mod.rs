//! [`Store`] over Redis: every Redis command streamgate sends is built and parsed here.
//!
//! - this file: the configuration, the connection pool and the one path every command's
//!   failure takes (`failed`: mark the connection broken, classify, name the ACL refusal);
//! - [`errors`]: Redis errors into [`StoreError`], by what the caller can do next;
//! - [`cluster`]: hash slots, per-slot grouping, listing a cluster's keys;
//! - [`watcher`]: the one blocked read (or cluster poll) that sees writes made outside the broker;
//! - [`replies`]: reply parsing and argument building;
//! - [`commands`]: the [`Store`] implementation, one method per command or script.
//!
//! # Connections
//! - A bb8 pool of *multiplexed* connections serves every command. A caller clones a handle and
//!   gives the pooled connection back at once, so many calls share a few sockets, and a pool of
//!   8 can serve any number of concurrent RPCs. None of these commands blocks: a reply that a
//!   cancelled caller no longer wants is read and discarded by the multiplexer, so cancellation
//!   never leaves a connection out of step.
//! - bb8-redis never reports a connection as broken, so ours carries a flag: a command that fails
//!   at the I/O level marks its connection, and the next checkout discards it and reconnects.
//! - One dedicated connection, outside the pool, runs the watcher: a single `XREAD BLOCK` over
//!   every stream that an idle subscription waits on. When it returns, the watcher wakes those
//!   subscriptions through [`Wakeups`]. That is the only blocking command streamgate sends, and
//!   it runs on a connection whose response timeout is disabled in favour of an explicit,
//!   longer deadline (redis-rs 1.x would otherwise cut it after 500 ms).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bb8::{ErrorSink, ManageConnection, Pool, RunError};
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{Client, Cmd, FromRedisValue, RedisError, ScriptInvocation, Value};
use tracing::Instrument;

use super::{StoreError, StoreResult, Wakeups};
use cluster::ClusterHandle;
use errors::{Ctx, classify, command_name, is_connection_failure};

/// How to reach Redis and how patient to be with it.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...`.
    pub url: String,
    /// Most pooled (multiplexed) connections.
    pub pool_size: u32,
    /// How long one command may take before it fails with UNAVAILABLE.
    pub response_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long the watcher's `XREAD BLOCK` waits before it starts over.
    pub watch_block: Duration,
    /// For `rediss://`: the CA certificate (PEM) that signed Redis's certificate, when it is not
    /// one of the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Seed nodes of a Redis Cluster (`url` is then unused); empty for a single Redis.
    pub cluster_seeds: Vec<String>,
    /// A Redis watched by Sentinel (`url` then only carries the credentials): connections go
    /// to the current primary.
    pub sentinel: Option<SentinelConfig>,
}

/// A connection to use for one command: a pooled multiplexed connection to a single Redis, or
/// the shared cluster connection (which routes by key and follows MOVED/ASK itself).
enum Conn {
    Single(Connection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    fn mark_broken(&self) {
        if let Self::Single(conn) = self {
            conn.broken.store(true, Ordering::Relaxed);
        }
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.redis.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.redis.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.redis.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

mod acks;
mod cluster;
mod delayed;
mod errors;
mod inspect;
mod ordering;
mod produce;
mod registry;
mod replies;
mod retention;
mod scripts;
mod sentinel;
mod streams;
mod watcher;

pub use cluster::key_slot;
pub use sentinel::SentinelConfig;

/// A pooled connection and the flag that retires it.
#[derive(Clone)]
struct Connection {
    redis: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// bb8-redis's manager, plus a response timeout and a "broken" verdict bb8 can act on.
struct Manager {
    inner: RedisConnectionManager,
    /// With Sentinel: where the primary is now (asked at every connect).
    locator: Option<Arc<sentinel::Locator>>,
    response_timeout: Duration,
    connect_errors: ConnectErrors,
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Connection, RedisError> {
        let mut redis = match &self.locator {
            Some(locator) => {
                locator
                    .primary()
                    .await?
                    .get_multiplexed_async_connection()
                    .await?
            }
            None => self.inner.connect().await?,
        };
        redis.set_response_timeout(self.response_timeout);
        name_connection(&mut redis, POOL_CONNECTION_NAME).await;
        self.connect_errors.clear();
        Ok(Connection {
            redis,
            broken: Arc::default(),
        })
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), RedisError> {
        redis::cmd("PING").query_async(&mut conn.redis).await
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// The names our connections carry in Redis's `CLIENT LIST`, so an operator (or the soak run)
/// can tell the broker's pooled connections and its watcher from everyone else's.
const POOL_CONNECTION_NAME: &str = "streamgate";
const WATCHER_CONNECTION_NAME: &str = "streamgate-watcher";

/// Names a fresh connection (CLIENT SETNAME). Best effort: a Redis user without the right keeps
/// an unnamed connection, which works the same.
async fn name_connection(redis: &mut MultiplexedConnection, name: &str) {
    let named: Result<(), RedisError> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async(redis)
        .await;
    if let Err(err) = named {
        tracing::debug!(error = %err, name, "could not name the redis connection");
    }
}

/// Where bb8 reports failed connection attempts: logged, and kept so that a caller who timed
/// out waiting for a connection learns why (bb8 itself only says "timed out").
#[derive(Debug, Clone, Default)]
struct ConnectErrors {
    last: Arc<Mutex<Option<String>>>,
}

impl ConnectErrors {
    fn last(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn clear(&self) {
        if self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some()
        {
            tracing::info!("connected to redis again");
        }
    }
}

impl ErrorSink<RedisError> for ConnectErrors {
    fn sink(&self, error: RedisError) {
        let error = error.to_string();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        // Once per distinct cause, not once per attempt.
        if last.as_deref() != Some(error.as_str()) {
            tracing::warn!(%error, "cannot connect to redis");
        }
        *last = Some(error);
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// The Redis-backed [`Store`](crate::store::Store). Cheap to clone; clones share the pool and the wake-up registry.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool<Manager>,
    client: Client,
    cluster: Option<ClusterHandle>,
    locator: Option<Arc<sentinel::Locator>>,
    config: Arc<RedisStoreConfig>,
    wakeups: Wakeups,
    connect_errors: ConnectErrors,
    /// The Redis user the URL names (`default` without one), for NOPERM messages.
    user: Arc<str>,
}

impl RedisStore {
    /// Validates the URL and builds the pool lazily: the broker starts (and reports NOT_SERVING)
    /// even while Redis is down, and connects as soon as it is up.
    pub fn new(config: RedisStoreConfig) -> StoreResult<Self> {
        let invalid = |err: RedisError| StoreError::Rejected(format!("invalid redis url: {err}"));
        let client = match &config.ca_pem {
            None => Client::open(config.url.as_str()).map_err(invalid)?,
            Some(ca) => Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )
            .map_err(invalid)?,
        };
        let connect_errors = ConnectErrors::default();
        let locator = config
            .sentinel
            .as_ref()
            .map(|sentinel| {
                sentinel::Locator::new(sentinel, config.ca_pem.as_deref()).map(Arc::new)
            })
            .transpose()
            .map_err(invalid)?;
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(0))
            // A PING per checkout halves throughput; broken connections are caught by the flag.
            .test_on_check_out(false)
            // Fail fast with Redis's own error instead of retrying until the timeout.
            .retry_connection(false)
            .connection_timeout(config.connect_timeout)
            .error_sink(Box::new(connect_errors.clone()))
            .build_unchecked(Manager {
                // From the client's connection info, which carries the CA when there is one.
                inner: RedisConnectionManager::new(client.get_connection_info().clone())
                    .map_err(invalid)?,
                locator: locator.clone(),
                response_timeout: config.response_timeout,
                connect_errors: connect_errors.clone(),
            });
        let cluster = if config.cluster_seeds.is_empty() {
            None
        } else {
            let client = redis::cluster::ClusterClient::builder(config.cluster_seeds.clone())
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .build()
                .map_err(invalid)?;
            Some(ClusterHandle {
                client,
                conn: Arc::default(),
            })
        };
        let user = client
            .get_connection_info()
            .redis_settings()
            .username()
            .unwrap_or("default")
            .into();
        Ok(Self {
            pool,
            client,
            cluster,
            locator,
            config: Arc::new(config),
            wakeups: Wakeups::default(),
            connect_errors,
            user,
        })
    }

    /// A client for the Redis to connect to: the current primary under Sentinel.
    async fn node_client(&self) -> StoreResult<Client> {
        match &self.locator {
            Some(locator) => locator
                .primary()
                .await
                .map_err(StoreError::unavailable_from),
            None => Ok(self.client.clone()),
        }
    }

    /// Whether this store follows a primary through Sentinel.
    fn follows_sentinel(&self) -> bool {
        self.locator.is_some()
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A connection for one command: a multiplexed handle whose pooled slot is returned at
    /// once, or the shared cluster connection.
    async fn connection(&self) -> StoreResult<Conn> {
        if let Some(cluster) = &self.cluster {
            let conn = cluster
                .conn
                .get_or_try_init(|| cluster.client.get_async_connection())
                .await
                .map_err(StoreError::unavailable_from)?;
            return Ok(Conn::Cluster(conn.clone()));
        }
        // Each broken connection we meet is dropped, which makes bb8 discard it; after at most
        // pool-size of them we get a fresh one.
        for _ in 0..=self.config.pool_size {
            let pooled = self.pool.get().await.map_err(|err| self.pool_error(err))?;
            if !pooled.broken.load(Ordering::Relaxed) {
                return Ok(Conn::Single(pooled.clone()));
            }
        }
        Err(StoreError::unavailable("no healthy redis connection"))
    }

    fn pool_error(&self, err: RunError<RedisError>) -> StoreError {
        match err {
            RunError::User(err) => StoreError::unavailable_from(err),
            RunError::TimedOut => StoreError::unavailable(match self.connect_errors.last() {
                Some(cause) => format!("no redis connection could be made ({cause})"),
                None => "timed out waiting for a redis connection".into(),
            }),
        }
    }

    async fn query<T: FromRedisValue>(&self, command: &Cmd, ctx: Ctx<'_>) -> StoreResult<T> {
        let name = command_name(command);
        async {
            let mut conn = self.connection().await?;
            command
                .query_async(&mut conn)
                .await
                .map_err(|err| self.failed(&conn, &err, ctx, &name))
        }
        .instrument(tracing::info_span!("redis", command = %name))
        .await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use), errors classified like commands;
    /// `name` names it in errors.
    async fn run_script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        ctx: Ctx<'_>,
        name: &str,
    ) -> StoreResult<T> {
        async {
            let mut conn = self.connection().await?;
            invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|err| self.failed(&conn, &err, ctx, name))
        }
        .instrument(tracing::info_span!("redis", command = name))
        .await
    }

    /// The one path from a failed command to a [`StoreError`]: a connection that failed is
    /// marked broken (the pool replaces it), the error is classified, and an ACL refusal is
    /// completed with the command and user.
    fn failed(&self, conn: &Conn, err: &RedisError, ctx: Ctx<'_>, command: &str) -> StoreError {
        // READONLY: a replica now (a failover demoted it); a new connection finds the primary.
        if is_connection_failure(err) || err.code() == Some("READONLY") {
            conn.mark_broken();
        }
        self.refine(classify(err, ctx), command)
    }

    /// Names the command and user in an ACL refusal (logged where it reaches a client, in
    /// `crate::error`).
    fn refine(&self, err: StoreError, command: &str) -> StoreError {
        let StoreError::PermissionDenied { detail, .. } = err else {
            return err;
        };
        StoreError::PermissionDenied {
            user: self.user.to_string(),
            command: command.to_owned(),
            detail,
        }
    }
}
