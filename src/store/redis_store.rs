//! [`Store`] over Redis: every Redis command streamgate sends is built and parsed here.
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bb8::{ErrorSink, ManageConnection, Pool, RunError};
use bb8_redis::RedisConnectionManager;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisError, Script, ScriptInvocation,
    Value, cmd,
};
use tokio_util::sync::CancellationToken;

use super::{
    GroupCursor, GroupEntry, Released, Store, StoreError, StoreResult, StreamPage, StreamWatch,
    Wakeups,
};
use crate::model::{
    Append, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo, Entry, EntryId, Field, GroupInfo,
    IdRange, PendingEntry, PendingMove, PendingQuery, PendingSummary, RangeBound, StartId,
    StreamInfo, SweepRequest, Swept, TrimPolicy, TrimThreshold,
};
use crate::model::{IdleAfterMove, NewEntryId, PARKED_CONSUMER, PARKED_HORIZON_MS, millis};

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

/// How often the watcher polls a cluster for writes made outside this broker.
const CLUSTER_WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A Redis Cluster client and its one shared connection, made on first use (the broker starts
/// even while the cluster is down).
#[derive(Clone)]
struct ClusterHandle {
    client: redis::cluster::ClusterClient,
    conn: Arc<tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>>,
}

/// The Redis Cluster hash slot of a key (CRC16 of its hash tag, or of the whole key).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// Whether all these keys share one slot (and may go in one multi-key command on a cluster).
fn one_slot<'a>(mut keys: impl Iterator<Item = &'a str>) -> bool {
    let Some(first) = keys.next() else {
        return true;
    };
    let slot = key_slot(first);
    keys.all(|k| key_slot(k) == slot)
}

/// Groups items by the slot of their key, keeping their order within each group.
fn by_slot<T>(items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    let mut groups: Vec<(u16, Vec<T>)> = Vec::new();
    for item in items {
        let slot = key_slot(key(&item));
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(item),
            None => groups.push((slot, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// A pooled connection and the flag that retires it.
#[derive(Clone)]
struct Connection {
    redis: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// bb8-redis's manager, plus a response timeout and a "broken" verdict bb8 can act on.
struct Manager {
    inner: RedisConnectionManager,
    response_timeout: Duration,
    connect_errors: ConnectErrors,
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Connection, RedisError> {
        let mut redis = self.inner.connect().await?;
        redis.set_response_timeout(self.response_timeout);
        self.connect_errors.clear();
        Ok(Connection {
            redis,
            broken: Arc::default(),
        })
    }

    async fn is_valid(&self, conn: &mut Connection) -> Result<(), RedisError> {
        self.inner.is_valid(&mut conn.redis).await
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// What a command was about, so that Redis's terse errors can name the user's objects.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    stream: &'a str,
    group: &'a str,
}

impl<'a> Ctx<'a> {
    fn stream(stream: &'a str) -> Self {
        Self { stream, group: "" }
    }
    fn group(stream: &'a str, group: &'a str) -> Self {
        Self { stream, group }
    }
}

/// The command's name (its first argument), for error messages and logs.
fn command_name(command: &Cmd) -> String {
    match command.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
        _ => String::new(),
    }
}

/// True for failures of the connection itself rather than of the command.
fn is_connection_failure(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
}

/// The one place where a Redis error becomes a [`StoreError`], by what the caller can do next.
fn classify(err: &RedisError, ctx: Ctx<'_>) -> StoreError {
    if is_connection_failure(err) {
        return StoreError::Unavailable(err.to_string());
    }
    let detail = err.detail().unwrap_or_default();
    match err.code() {
        Some("NOGROUP") => StoreError::NoSuchGroup {
            stream: ctx.stream.to_owned(),
            group: ctx.group.to_owned(),
        },
        Some("BUSYGROUP") => StoreError::GroupExists {
            stream: ctx.stream.to_owned(),
            group: ctx.group.to_owned(),
        },
        // The command and user are filled in by `RedisStore::failed`, which knows them.
        Some("NOPERM") => StoreError::PermissionDenied {
            user: String::new(),
            command: String::new(),
            detail: detail.to_owned(),
        },
        Some("WRONGTYPE") => StoreError::WrongType {
            key: ctx.stream.to_owned(),
        },
        // The deployment, not the request: retrying (later, or after failover) can succeed.
        Some("LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "BUSY") => {
            StoreError::Unavailable(err.to_string())
        }
        Some("ERR") if detail.contains("equal or smaller than the target stream top item") => {
            StoreError::IdNotIncreasing {
                stream: ctx.stream.to_owned(),
            }
        }
        Some("ERR") if detail.contains("requires the key to exist") || detail == "no such key" => {
            StoreError::NoSuchStream {
                stream: ctx.stream.to_owned(),
            }
        }
        Some("ERR") => StoreError::Rejected(detail.to_owned()),
        _ => StoreError::Unexpected(err.to_string()),
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

/// The Redis-backed [`Store`]. Cheap to clone; clones share the pool and the wake-up registry.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool<Manager>,
    client: Client,
    cluster: Option<ClusterHandle>,
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
            config: Arc::new(config),
            wakeups: Wakeups::default(),
            connect_errors,
            user,
        })
    }

    /// Connections in the pool, and how many of them are idle.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }

    /// The wake-up registry (exposed for introspection: how many subscriptions wait).
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
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
                .map_err(|err| StoreError::Unavailable(err.to_string()))?;
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
        Err(StoreError::Unavailable(
            "no healthy redis connection".into(),
        ))
    }

    fn pool_error(&self, err: RunError<RedisError>) -> StoreError {
        match err {
            RunError::User(err) => StoreError::Unavailable(err.to_string()),
            RunError::TimedOut => StoreError::Unavailable(match self.connect_errors.last() {
                Some(cause) => format!("no redis connection could be made ({cause})"),
                None => "timed out waiting for a redis connection".into(),
            }),
        }
    }

    async fn query<T: FromRedisValue>(&self, command: &Cmd, ctx: Ctx<'_>) -> StoreResult<T> {
        let mut conn = self.connection().await?;
        command
            .query_async(&mut conn)
            .await
            .map_err(|err| self.failed(&conn, &err, ctx, &command_name(command)))
    }

    /// Runs a Lua script (EVALSHA, loading it on first use), errors classified like commands;
    /// `name` names it in errors.
    async fn run_script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        ctx: Ctx<'_>,
        name: &str,
    ) -> StoreResult<T> {
        let mut conn = self.connection().await?;
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|err| self.failed(&conn, &err, ctx, name))
    }

    /// The one path from a failed command to a [`StoreError`]: a connection that failed is
    /// marked broken (the pool replaces it), the error is classified, and an ACL refusal is
    /// completed with the command and user.
    fn failed(&self, conn: &Conn, err: &RedisError, ctx: Ctx<'_>, command: &str) -> StoreError {
        if is_connection_failure(err) {
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

    /// Ends the watcher's blocked read early (CLIENT UNBLOCK). Returns `false` when the Redis
    /// user may not run it (it is in `@dangerous`, which a confined user rarely has): the read
    /// then ends at its BLOCK timeout, so a stream newly watched sees writes made outside this
    /// broker up to `--watch-block` late, and it is not asked again.
    async fn unblock(&self, client_id: i64) -> bool {
        let unblock = cmd("CLIENT").arg("UNBLOCK").arg(client_id).clone();
        let mut conn = match self.connection().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::debug!(error = %err, "no connection for CLIENT UNBLOCK; waiting for the BLOCK timeout");
                return true;
            }
        };
        match unblock.query_async::<i64>(&mut conn).await {
            Ok(_) => true,
            Err(err) if err.code() == Some("NOPERM") => {
                tracing::info!(
                    redis_user = %self.user,
                    watch_block = ?self.config.watch_block,
                    "the redis user may not run CLIENT UNBLOCK (@dangerous); a newly watched stream sees writes made outside this broker after at most --watch-block"
                );
                false
            }
            Err(err) => {
                if is_connection_failure(&err) {
                    conn.mark_broken();
                }
                tracing::debug!(error = %err, "CLIENT UNBLOCK failed; waiting for the BLOCK timeout");
                true
            }
        }
    }

    /// Runs the watcher of outside writes until `shutdown`; see the module docs.
    pub async fn run_watcher(self, shutdown: CancellationToken) {
        let mut failing = false;
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let watched = if self.is_cluster() {
                self.poll_cluster(&shutdown).await
            } else {
                self.watch_on_one_connection(&shutdown).await
            };
            match watched {
                Ok(()) => return,
                Err(err) => {
                    // Logged once per outage, not once per retry.
                    if !failing {
                        tracing::warn!(error = %err, "stream watcher lost redis; retrying");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            // Whatever was written while we were away: everybody re-reads.
            for stream in self.wakeups.watched() {
                self.wakeups.notify(&stream);
            }
            if failing && self.ping().await.is_ok() {
                tracing::info!("stream watcher reconnected");
                failing = false;
                backoff = Duration::from_millis(100);
            }
        }
    }

    /// The watcher on a cluster: a blocking read cannot span slots, and one blocked connection
    /// per slot would not scale, so it polls instead, every [`CLUSTER_WATCH_INTERVAL`], one
    /// non-blocking XREAD per slot over the streams somebody waits on. The cost grows with the
    /// number of watched streams, not of subscriptions; appends through the broker still wake
    /// subscribers at once.
    async fn poll_cluster(&self, shutdown: &CancellationToken) -> StoreResult<()> {
        let mut positions: HashMap<String, EntryId> = HashMap::new();
        loop {
            let watched: HashSet<String> = self.wakeups.watched().into_iter().collect();
            positions.retain(|stream, _| watched.contains(stream));
            let fresh: Vec<String> = watched
                .iter()
                .filter(|s| !positions.contains_key(*s))
                .cloned()
                .collect();
            for stream in &fresh {
                let top = self.last_entry_id(stream).await.unwrap_or_default();
                positions.insert(stream.clone(), top.unwrap_or(EntryId::ZERO));
                self.wakeups.notify(stream);
            }
            let cursors: Vec<(String, EntryId)> =
                positions.iter().map(|(s, id)| (s.clone(), *id)).collect();
            for group in by_slot(cursors, |(s, _)| s.as_str()) {
                for (stream, _) in self.read_one_slot(&group, 1).await? {
                    // Re-read the stream's top next turn; that also wakes its subscribers.
                    positions.remove(&stream);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(CLUSTER_WATCH_INTERVAL) => {}
            }
        }
    }

    /// On a cluster, SCAN on every master to the end of its keyspace: the keys of a listing
    /// live on several nodes, each with its own cursor.
    async fn list_cluster_streams(&self, pattern: &str, page_size: u32) -> StoreResult<StreamPage> {
        let Conn::Cluster(mut conn) = self.connection().await? else {
            return Err(StoreError::Unexpected("not a cluster".into()));
        };
        let fail = |err: RedisError| classify(&err, Ctx::stream(pattern));
        let nodes: String = cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        let masters: Vec<(String, u16)> = nodes
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let address = parts.nth(1)?;
                let flags = parts.next()?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let (host, port) = address.split('@').next()?.rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect();
        let mut streams = Vec::new();
        for (host, port) in masters {
            let mut cursor = 0u64;
            loop {
                let mut scan = cmd("SCAN");
                scan.arg(cursor)
                    .arg("TYPE")
                    .arg("stream")
                    .arg("COUNT")
                    .arg(page_size.max(100));
                if !pattern.is_empty() {
                    scan.arg("MATCH").arg(pattern);
                }
                let route = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    },
                );
                let reply = conn.route_command(scan, route).await.map_err(fail)?;
                let mut parts = into_items(reply)?.into_iter();
                let next = parts.next().as_ref().and_then(to_u64).unwrap_or(0);
                streams.extend(
                    into_items(parts.next().unwrap_or(Value::Nil))?
                        .iter()
                        .filter_map(to_text),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        streams.sort();
        streams.dedup();
        Ok(StreamPage {
            streams,
            next_cursor: 0,
        })
    }

    /// One watcher connection's life: returns `Ok` on shutdown, `Err` when the connection fails.
    async fn watch_on_one_connection(&self, shutdown: &CancellationToken) -> StoreResult<()> {
        let watcher_failed = |err: RedisError| classify(&err, Ctx::stream(""));
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&connection_config)
            .await
            .map_err(watcher_failed)?;
        let client_id: i64 = cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(watcher_failed)?;
        // Where each watched stream was when we last looked; entries after it wake the stream.
        let mut positions: HashMap<String, EntryId> = HashMap::new();
        let mut additions = self.wakeups.additions();
        let mut may_unblock = true;
        // A silent network would leave XREAD waiting forever; this bounds it.
        let deadline =
            self.config.watch_block + self.config.response_timeout + Duration::from_secs(1);
        loop {
            additions.borrow_and_update();
            let watched: HashSet<String> = self.wakeups.watched().into_iter().collect();
            positions.retain(|stream, _| watched.contains(stream));
            let fresh: Vec<String> = watched
                .iter()
                .filter(|s| !positions.contains_key(*s))
                .cloned()
                .collect();
            if !fresh.is_empty() {
                let mut pipe = redis::pipe();
                for stream in &fresh {
                    pipe.cmd("XREVRANGE")
                        .arg(stream)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1);
                }
                let replies: Vec<Value> = pipe
                    .ignore_errors()
                    .query_async(&mut conn)
                    .await
                    .map_err(watcher_failed)?;
                for (stream, reply) in fresh.iter().zip(replies) {
                    // A key of another type cannot be watched (its subscribers fail on read).
                    if let Ok(entries) = parse_entries(reply) {
                        let top = entries.last().map(|e| e.id).unwrap_or(EntryId::ZERO);
                        positions.insert(stream.clone(), top);
                    }
                    // Whatever arrived before we started watching is found by this re-read.
                    self.wakeups.notify(stream);
                }
            }
            if positions.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = additions.changed() => continue,
                }
            }
            let (streams, ids): (Vec<&String>, Vec<String>) =
                positions.iter().map(|(s, id)| (s, id.to_string())).unzip();
            let mut xread = cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(self.config.watch_block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&streams)
                .arg(&ids);
            let mut blocked_conn = conn.clone();
            let read =
                tokio::time::timeout(deadline, xread.query_async::<Value>(&mut blocked_conn));
            tokio::pin!(read);
            let reply = tokio::select! {
                // On shutdown the connection is dropped with the read: nothing else uses it.
                _ = shutdown.cancelled() => return Ok(()),
                reply = &mut read => reply,
                _ = additions.changed() => {
                    // A new stream to watch: cut the wait short so the next XREAD includes it.
                    if may_unblock {
                        may_unblock = self.unblock(client_id).await;
                    }
                    read.await
                }
            };
            let reply = reply
                .map_err(|_| StoreError::Unavailable("stream watcher read timed out".into()))?
                .map_err(watcher_failed)?;
            for (stream, _) in parse_stream_batches(reply)? {
                // Re-read the stream's top on the next turn; that also wakes its subscribers.
                positions.remove(&stream);
            }
        }
    }
}

// ---- reply parsing --------------------------------------------------------------------------

fn unexpected(what: &str, value: &Value) -> StoreError {
    StoreError::Unexpected(format!("{what}: {value:?}"))
}

fn to_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn to_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => to_text(other)?.parse().ok(),
    }
}

fn to_opt_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::Nil => None,
        other => to_text(other)?.parse().ok(),
    }
}

fn to_id(value: &Value) -> StoreResult<EntryId> {
    let parsed = match value {
        // Ids are ASCII: parse the reply's bytes in place, no copy.
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().and_then(|t| t.parse().ok()),
        other => to_text(other).and_then(|text| text.parse().ok()),
    };
    parsed.ok_or_else(|| unexpected("entry id", value))
}

fn into_items(value: Value) -> StoreResult<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected("array", &other)),
    }
}

/// A RESP2 flat `[k, v, k, v]` array or a RESP3 map, as pairs.
fn into_pairs(value: Value) -> StoreResult<Vec<(String, Value)>> {
    let pairs = match value {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        other => return Err(unexpected("key/value reply", &other)),
    };
    Ok(pairs
        .into_iter()
        .filter_map(|(k, v)| Some((to_text(&k)?, v)))
        .collect())
}

fn parse_fields(value: Value) -> StoreResult<Vec<Field>> {
    let items = into_items(value)?;
    let mut fields = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        let name = to_text(&name).ok_or_else(|| unexpected("field name", &name))?;
        let value = match value {
            Value::BulkString(bytes) => Bytes::from(bytes),
            other => Bytes::from(to_text(&other).ok_or_else(|| unexpected("field value", &other))?),
        };
        fields.push(Field { name, value });
    }
    Ok(fields)
}

/// `[id, [f, v, ...] | nil]`; `None` fields mean the entry was deleted.
fn parse_group_entry(value: Value) -> StoreResult<GroupEntry> {
    let mut parts = into_items(value)?.into_iter();
    let id = parts
        .next()
        .ok_or_else(|| StoreError::Unexpected("empty entry".into()))?;
    let id = to_id(&id)?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(fields) => Some(parse_fields(fields)?),
    };
    Ok(GroupEntry { id, fields })
}

fn parse_entries(value: Value) -> StoreResult<Vec<Entry>> {
    into_items(value)?
        .into_iter()
        .map(parse_group_entry)
        // Ranges never return deleted entries; a nil body here is skipped like XCLAIM does.
        .filter_map(|entry| match entry {
            Ok(GroupEntry {
                id,
                fields: Some(fields),
            }) => Some(Ok(Entry { id, fields })),
            Ok(GroupEntry { fields: None, .. }) => None,
            Err(err) => Some(Err(err)),
        })
        .collect()
}

/// XREAD / XREADGROUP: `[[stream, [entry...]]...]`, RESP2 array or RESP3 map; nil when empty.
fn parse_stream_batches(value: Value) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
    let batches: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        other => into_items(other)?
            .into_iter()
            .map(|batch| {
                let mut parts = into_items(batch)?.into_iter();
                match (parts.next(), parts.next()) {
                    (Some(stream), Some(entries)) => Ok((stream, entries)),
                    _ => Err(StoreError::Unexpected("short stream batch".into())),
                }
            })
            .collect::<StoreResult<_>>()?,
    };
    batches
        .into_iter()
        .map(|(stream, entries)| {
            let stream = to_text(&stream).ok_or_else(|| unexpected("stream name", &stream))?;
            let entries = into_items(entries)?
                .into_iter()
                .map(parse_group_entry)
                .collect::<StoreResult<_>>()?;
            Ok((stream, entries))
        })
        .collect()
}

fn parse_ids(value: Value) -> StoreResult<Vec<EntryId>> {
    into_items(value)?.iter().map(to_id).collect()
}

fn parse_claimed(value: Value, just_id: bool) -> StoreResult<Claimed> {
    if just_id {
        return Ok(Claimed {
            entries: Vec::new(),
            ids: parse_ids(value)?,
        });
    }
    let entries = parse_entries(value)?;
    let ids = entries.iter().map(|e| e.id).collect();
    Ok(Claimed { entries, ids })
}

fn push_trim(command: &mut Cmd, policy: &TrimPolicy) {
    match policy.threshold {
        TrimThreshold::MaxLen(_) => command.arg("MAXLEN"),
        TrimThreshold::MinId(_) => command.arg("MINID"),
    };
    command.arg(if policy.approximate { "~" } else { "=" });
    match policy.threshold {
        TrimThreshold::MaxLen(len) => command.arg(len),
        TrimThreshold::MinId(id) => command.arg(id.to_string()),
    };
    if let Some(limit) = policy.limit {
        command.arg("LIMIT").arg(limit);
    }
}

fn push_entries_read(command: &mut Cmd, entries_read: Option<i64>) {
    if let Some(n) = entries_read {
        command.arg("ENTRIESREAD").arg(n);
    }
}

fn id_args(ids: &[EntryId]) -> Vec<String> {
    ids.iter().map(EntryId::to_string).collect()
}

/// Deletes a key only when it is a stream, atomically (TYPE then DEL could race).
const DELETE_STREAM_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
redis.call('DEL', KEYS[1])
return 1
";

/// The atomic steps of redelivery, one Lua script each (sources in `lua/`, commented there).
struct Scripts {
    sweep: Script,
    move_pending: Script,
    release_consumer: Script,
    leases: Script,
    replay_dead_letter: Script,
}

static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
    sweep: Script::new(include_str!("lua/sweep.lua")),
    move_pending: Script::new(include_str!("lua/move_pending.lua")),
    release_consumer: Script::new(include_str!("lua/release_consumer.lua")),
    leases: Script::new(include_str!("lua/leases.lua")),
    replay_dead_letter: Script::new(include_str!("lua/replay_dead_letter.lua")),
});

/// The sweep script's reply: `[cursor, [[id, fields, count]...], [dead ids], [lost ids]]`.
fn parse_swept(value: Value) -> StoreResult<Swept> {
    let mut parts = into_items(value)?.into_iter();
    let cursor = parts.next().unwrap_or(Value::Nil);
    let cursor = to_text(&cursor).ok_or_else(|| unexpected("sweep cursor", &cursor))?;
    let next_cursor = RangeBound::parse(&cursor, "-")
        .map_err(|_| StoreError::Unexpected(format!("sweep cursor `{cursor}`")))?;
    let claimed = into_items(parts.next().unwrap_or(Value::Nil))?
        .into_iter()
        .map(|row| {
            let mut row = into_items(row)?.into_iter();
            match (row.next(), row.next(), row.next()) {
                (Some(id), Some(fields), Some(count)) => Ok((
                    Entry {
                        id: to_id(&id)?,
                        fields: parse_fields(fields)?,
                    },
                    to_u64(&count).ok_or_else(|| unexpected("delivery count", &count))?,
                )),
                _ => Err(StoreError::Unexpected("short sweep row".into())),
            }
        })
        .collect::<StoreResult<_>>()?;
    Ok(Swept {
        claimed,
        dead_lettered: parse_ids(parts.next().unwrap_or(Value::Nil))?,
        lost: parse_ids(parts.next().unwrap_or(Value::Nil))?,
        next_cursor,
    })
}

impl RedisStore {
    /// Appends requests whose streams share one slot (all of them, on a single Redis) in one
    /// pipelined round trip.
    async fn append_pipelined(
        &self,
        requests: &[Append],
    ) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        let mut pipe = redis::pipe();
        for request in requests {
            for message in &request.messages {
                let mut xadd = cmd("XADD");
                xadd.arg(&request.stream);
                if request.require_existing_stream {
                    xadd.arg("NOMKSTREAM");
                }
                if let Some(policy) = &request.trim {
                    push_trim(&mut xadd, policy);
                }
                match message.id {
                    // The common case, without formatting an id per message.
                    NewEntryId::Auto => xadd.arg("*"),
                    other => xadd.arg(other.to_string()),
                };
                for field in &message.fields {
                    xadd.arg(&field.name).arg(field.value.as_ref());
                }
                pipe.add_command(xadd);
            }
        }
        let first_stream = requests
            .first()
            .map(|r| r.stream.as_str())
            .unwrap_or_default();
        let mut conn = self.connection().await?;
        // Per-command results, so that each failure is classified on its own terms.
        let replies: Vec<Value> = pipe
            .ignore_errors()
            .query_async(&mut conn)
            .await
            .map_err(|err| self.failed(&conn, &err, Ctx::stream(first_stream), "XADD"))?;
        let mut replies = replies.into_iter();
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let ctx = Ctx::stream(&request.stream);
            let answer = replies
                .by_ref()
                .take(request.messages.len())
                .map(|reply| match reply {
                    Value::ServerError(err) => Err(self.refine(classify(&err.into(), ctx), "XADD")),
                    Value::Nil => Err(StoreError::NoSuchStream {
                        stream: request.stream.clone(),
                    }),
                    other => to_id(&other),
                })
                .collect::<StoreResult<Vec<_>>>();
            if answer.is_ok() {
                self.wakeups.notify(&request.stream);
            }
            answers.push(answer);
        }
        Ok(answers)
    }
}

impl RedisStore {
    /// XREAD over streams of one slot.
    async fn read_one_slot(
        &self,
        streams: &[(String, EntryId)],
        count: usize,
    ) -> StoreResult<Vec<(String, Vec<Entry>)>> {
        let mut xread = cmd("XREAD");
        xread.arg("COUNT").arg(count).arg("STREAMS");
        for (stream, _) in streams {
            xread.arg(stream);
        }
        for (_, after) in streams {
            xread.arg(after.to_string());
        }
        let first = streams.first().map(|(s, _)| s.as_str()).unwrap_or_default();
        let reply: Value = self.query(&xread, Ctx::stream(first)).await?;
        parse_stream_batches(reply)?
            .into_iter()
            .map(|(stream, entries)| {
                let entries = entries
                    .into_iter()
                    .filter_map(|e| {
                        Some(Entry {
                            id: e.id,
                            fields: e.fields?,
                        })
                    })
                    .collect();
                Ok((stream, entries))
            })
            .collect()
    }

    /// XREADGROUP over streams of one slot.
    async fn read_group_one_slot(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
        let mut xread = cmd("XREADGROUP");
        xread
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if no_ack {
            xread.arg("NOACK");
        }
        xread.arg("STREAMS");
        for (stream, _) in streams {
            xread.arg(stream);
        }
        for (_, cursor) in streams {
            match cursor {
                GroupCursor::New => xread.arg(">"),
                GroupCursor::PendingAfter(id) => xread.arg(id.to_string()),
            };
        }
        // NOGROUP names the first stream whose group is missing; the reply does not say which,
        // so name them all when there are several.
        let names = streams
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join("`, `");
        let reply: Value = self.query(&xread, Ctx::group(&names, group)).await?;
        parse_stream_batches(reply)
    }
}

impl Store for RedisStore {
    async fn create_topic(
        &self,
        registry: &str,
        topic: &str,
        partitions: u32,
    ) -> StoreResult<bool> {
        let created: bool = self
            .query(
                cmd("HSETNX").arg(registry).arg(topic).arg(partitions),
                Ctx::stream(registry),
            )
            .await?;
        if created {
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

    async fn topic_partitions(&self, registry: &str, topic: &str) -> StoreResult<Option<u32>> {
        self.query(cmd("HGET").arg(registry).arg(topic), Ctx::stream(registry))
            .await
    }

    async fn append(&self, requests: &[Append]) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        if !self.is_cluster() {
            return self.append_pipelined(requests).await;
        }
        // A cluster pipeline must stay on one slot: one pipeline per slot, all at once; the
        // order of requests on one stream is kept within its pipeline.
        let indexed: Vec<(usize, &Append)> = requests.iter().enumerate().collect();
        let groups = by_slot(indexed, |(_, r)| r.stream.as_str());
        let runs = groups.iter().map(|group| async move {
            let batch: Vec<Append> = group.iter().map(|(_, r)| (*r).clone()).collect();
            let answers = self.append_pipelined(&batch).await;
            (group.iter().map(|(i, _)| *i).collect::<Vec<_>>(), answers)
        });
        let mut answers: Vec<Option<StoreResult<Vec<EntryId>>>> =
            (0..requests.len()).map(|_| None).collect();
        for (indices, result) in futures_util::future::join_all(runs).await {
            let result = result?;
            for (index, answer) in indices.into_iter().zip(result) {
                answers[index] = Some(answer);
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(StoreError::Unexpected("no answer".into()))))
            .collect())
    }

    async fn read(
        &self,
        streams: &[(String, EntryId)],
        count: usize,
    ) -> StoreResult<Vec<(String, Vec<Entry>)>> {
        if !self.is_cluster() || one_slot(streams.iter().map(|(s, _)| s.as_str())) {
            return self.read_one_slot(streams, count).await;
        }
        // A multi-key XREAD must stay on one slot: one read per slot.
        let mut all = Vec::new();
        for group in by_slot(streams.to_vec(), |(s, _)| s.as_str()) {
            all.extend(self.read_one_slot(&group, count).await?);
        }
        Ok(all)
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
        if !self.is_cluster() || one_slot(streams.iter().map(|(s, _)| s.as_str())) {
            return self
                .read_group_one_slot(group, consumer, streams, count, no_ack)
                .await;
        }
        // As for XREAD: one XREADGROUP per slot.
        let mut all = Vec::new();
        for group_streams in by_slot(streams.to_vec(), |(s, _)| s.as_str()) {
            all.extend(
                self.read_group_one_slot(group, consumer, &group_streams, count, no_ack)
                    .await?,
            );
        }
        Ok(all)
    }

    async fn last_entry_id(&self, stream: &str) -> StoreResult<Option<EntryId>> {
        let reply: Value = self
            .query(
                cmd("XREVRANGE")
                    .arg(stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
                Ctx::stream(stream),
            )
            .await?;
        Ok(parse_entries(reply)?.last().map(|e| e.id))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        let ctx = Ctx::group(stream, group);
        let acked: u64 = self
            .query(cmd("XACK").arg(stream).arg(group).arg(id_args(ids)), ctx)
            .await?;
        if acked == 0 {
            // XACK answers 0 for a misspelt group too; tell the caller instead of "nothing to do".
            self.query::<Value>(cmd("XPENDING").arg(stream).arg(group), ctx)
                .await?;
        }
        Ok(acked)
    }

    fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch {
        self.wakeups.watch(streams, group)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.query::<String>(&cmd("PING"), Ctx::stream(""))
            .await
            .map(drop)
    }

    async fn list_streams(
        &self,
        pattern: &str,
        cursor: u64,
        page_size: u32,
    ) -> StoreResult<StreamPage> {
        if self.is_cluster() {
            return self.list_cluster_streams(pattern, page_size).await;
        }
        let mut scan = cmd("SCAN");
        scan.arg(cursor)
            .arg("TYPE")
            .arg("stream")
            .arg("COUNT")
            .arg(page_size);
        if !pattern.is_empty() {
            scan.arg("MATCH").arg(pattern);
        }
        let reply: Value = self.query(&scan, Ctx::stream(pattern)).await?;
        let mut parts = into_items(reply)?.into_iter();
        match (parts.next(), parts.next()) {
            (Some(next), Some(keys)) => Ok(StreamPage {
                next_cursor: to_u64(&next).ok_or_else(|| unexpected("scan cursor", &next))?,
                streams: into_items(keys)?.iter().filter_map(to_text).collect(),
            }),
            _ => Err(StoreError::Unexpected("short SCAN reply".into())),
        }
    }

    async fn stream_info(&self, stream: &str) -> StoreResult<StreamInfo> {
        let reply: Value = self
            .query(cmd("XINFO").arg("STREAM").arg(stream), Ctx::stream(stream))
            .await?;
        let mut info = StreamInfo::default();
        for (key, value) in into_pairs(reply)? {
            let number = || to_u64(&value).unwrap_or_default();
            let text = || to_text(&value).unwrap_or_default();
            match key.as_str() {
                "length" => info.length = number(),
                "radix-tree-keys" => info.radix_tree_keys = number(),
                "radix-tree-nodes" => info.radix_tree_nodes = number(),
                "groups" => info.groups = number(),
                "last-generated-id" => info.last_generated_id = text(),
                "max-deleted-entry-id" => info.max_deleted_entry_id = text(),
                "entries-added" => info.entries_added = number(),
                "recorded-first-entry-id" => info.recorded_first_entry_id = text(),
                "first-entry" | "last-entry" => {
                    let entry = match value {
                        Value::Nil => None,
                        array => parse_entries(Value::Array(vec![array]))?.pop(),
                    };
                    if key == "first-entry" {
                        info.first_entry = entry;
                    } else {
                        info.last_entry = entry;
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    async fn range(
        &self,
        stream: &str,
        range: IdRange,
        count: usize,
        reverse: bool,
    ) -> StoreResult<Vec<Entry>> {
        let (min, max) = (range.min.to_arg("-"), range.max.to_arg("+"));
        let mut command = if reverse {
            cmd("XREVRANGE")
        } else {
            cmd("XRANGE")
        };
        command.arg(stream);
        if reverse {
            command.arg(max).arg(min);
        } else {
            command.arg(min).arg(max);
        }
        command.arg("COUNT").arg(count);
        parse_entries(self.query(&command, Ctx::stream(stream)).await?)
    }

    async fn delete_entries(&self, stream: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.query(
            cmd("XDEL").arg(stream).arg(id_args(ids)),
            Ctx::stream(stream),
        )
        .await
    }

    async fn trim(&self, stream: &str, policy: TrimPolicy) -> StoreResult<u64> {
        let mut xtrim = cmd("XTRIM");
        xtrim.arg(stream);
        push_trim(&mut xtrim, &policy);
        self.query(&xtrim, Ctx::stream(stream)).await
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        let mut eval = cmd("EVAL");
        eval.arg(DELETE_STREAM_SCRIPT).arg(1).arg(stream);
        let deleted: u64 = self.query(&eval, Ctx::stream(stream)).await?;
        if deleted == 0 {
            return Err(StoreError::NoSuchStream {
                stream: stream.to_owned(),
            });
        }
        Ok(())
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartId,
        create_stream: bool,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        let mut create = cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg(start.to_string());
        if create_stream {
            create.arg("MKSTREAM");
        }
        push_entries_read(&mut create, entries_read);
        self.query::<Value>(&create, Ctx::group(stream, group))
            .await
            .map(drop)
    }

    async fn destroy_group(&self, stream: &str, group: &str) -> StoreResult<()> {
        let ctx = Ctx::group(stream, group);
        let destroyed: u64 = self
            .query(cmd("XGROUP").arg("DESTROY").arg(stream).arg(group), ctx)
            .await?;
        if destroyed == 0 {
            return Err(StoreError::NoSuchGroup {
                stream: stream.to_owned(),
                group: group.to_owned(),
            });
        }
        Ok(())
    }

    async fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        id: StartId,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        let mut setid = cmd("XGROUP");
        setid
            .arg("SETID")
            .arg(stream)
            .arg(group)
            .arg(id.to_string());
        push_entries_read(&mut setid, entries_read);
        self.query::<Value>(&setid, Ctx::group(stream, group))
            .await
            .map(drop)
    }

    async fn groups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        let reply: Value = self
            .query(cmd("XINFO").arg("GROUPS").arg(stream), Ctx::stream(stream))
            .await?;
        into_items(reply)?
            .into_iter()
            .map(|group| {
                let mut info = GroupInfo {
                    name: String::new(),
                    consumers: 0,
                    pending: 0,
                    last_delivered_id: String::new(),
                    entries_read: None,
                    lag: None,
                };
                for (key, value) in into_pairs(group)? {
                    match key.as_str() {
                        "name" => info.name = to_text(&value).unwrap_or_default(),
                        "consumers" => info.consumers = to_u64(&value).unwrap_or_default(),
                        "pending" => info.pending = to_u64(&value).unwrap_or_default(),
                        "last-delivered-id" => {
                            info.last_delivered_id = to_text(&value).unwrap_or_default()
                        }
                        "entries-read" => info.entries_read = to_opt_i64(&value),
                        "lag" => info.lag = to_opt_i64(&value),
                        _ => {}
                    }
                }
                Ok(info)
            })
            .collect()
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> StoreResult<bool> {
        let created: u64 = self
            .query(
                cmd("XGROUP")
                    .arg("CREATECONSUMER")
                    .arg(stream)
                    .arg(group)
                    .arg(consumer),
                Ctx::group(stream, group),
            )
            .await?;
        Ok(created == 1)
    }

    async fn delete_consumer(&self, stream: &str, group: &str, consumer: &str) -> StoreResult<u64> {
        self.query(
            cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(stream)
                .arg(group)
                .arg(consumer),
            Ctx::group(stream, group),
        )
        .await
    }

    async fn consumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        let reply: Value = self
            .query(
                cmd("XINFO").arg("CONSUMERS").arg(stream).arg(group),
                Ctx::group(stream, group),
            )
            .await?;
        into_items(reply)?
            .into_iter()
            .map(|consumer| {
                let mut info = ConsumerInfo {
                    name: String::new(),
                    pending: 0,
                    idle_ms: 0,
                };
                for (key, value) in into_pairs(consumer)? {
                    match key.as_str() {
                        "name" => info.name = to_text(&value).unwrap_or_default(),
                        "pending" => info.pending = to_u64(&value).unwrap_or_default(),
                        "idle" => info.idle_ms = to_u64(&value).unwrap_or_default(),
                        _ => {}
                    }
                }
                Ok(info)
            })
            .collect()
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        let reply: Value = self
            .query(
                cmd("XPENDING").arg(stream).arg(group),
                Ctx::group(stream, group),
            )
            .await?;
        let mut parts = into_items(reply)?.into_iter();
        let count = parts.next().as_ref().and_then(to_u64).unwrap_or_default();
        let min = parts.next().unwrap_or(Value::Nil);
        let max = parts.next().unwrap_or(Value::Nil);
        let bounds = match (&min, &max) {
            (Value::Nil, _) | (_, Value::Nil) => None,
            _ => Some((to_id(&min)?, to_id(&max)?)),
        };
        let consumers = into_items(parts.next().unwrap_or(Value::Nil))?
            .into_iter()
            .map(|pair| {
                let pair = into_items(pair)?;
                match pair.as_slice() {
                    [name, count] => Ok((
                        to_text(name).unwrap_or_default(),
                        to_u64(count).unwrap_or_default(),
                    )),
                    _ => Err(StoreError::Unexpected("XPENDING consumer entry".into())),
                }
            })
            .collect::<StoreResult<_>>()?;
        Ok(PendingSummary {
            count,
            bounds,
            consumers,
        })
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> StoreResult<Vec<PendingEntry>> {
        let mut xpending = cmd("XPENDING");
        xpending.arg(stream).arg(group);
        if query.min_idle_ms > 0 {
            xpending.arg("IDLE").arg(query.min_idle_ms);
        }
        xpending
            .arg(query.range.min.to_arg("-"))
            .arg(query.range.max.to_arg("+"))
            .arg(query.count);
        if let Some(consumer) = &query.consumer {
            xpending.arg(consumer);
        }
        let reply: Value = self.query(&xpending, Ctx::group(stream, group)).await?;
        into_items(reply)?
            .into_iter()
            .map(|row| {
                let row = into_items(row)?;
                match row.as_slice() {
                    [id, consumer, idle, count] => Ok(PendingEntry {
                        id: to_id(id)?,
                        consumer: to_text(consumer).unwrap_or_default(),
                        idle_ms: to_u64(idle).unwrap_or_default(),
                        delivery_count: to_u64(count).unwrap_or_default(),
                    }),
                    _ => Err(StoreError::Unexpected("XPENDING row".into())),
                }
            })
            .collect()
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &ClaimOptions,
    ) -> StoreResult<Claimed> {
        let mut xclaim = cmd("XCLAIM");
        xclaim
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(options.min_idle_ms)
            .arg(id_args(&options.ids));
        if let Some(idle) = options.idle_ms {
            xclaim.arg("IDLE").arg(idle);
        }
        if let Some(time) = options.time_ms {
            xclaim.arg("TIME").arg(time);
        }
        if let Some(count) = options.retry_count {
            xclaim.arg("RETRYCOUNT").arg(count);
        }
        if options.force {
            xclaim.arg("FORCE");
        }
        if options.just_id {
            xclaim.arg("JUSTID");
        }
        let reply: Value = self.query(&xclaim, Ctx::group(stream, group)).await?;
        parse_claimed(reply, options.just_id)
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
        let mut xautoclaim = cmd("XAUTOCLAIM");
        xautoclaim
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(start.to_string())
            .arg("COUNT")
            .arg(count);
        if just_id {
            xautoclaim.arg("JUSTID");
        }
        let reply: Value = self.query(&xautoclaim, Ctx::group(stream, group)).await?;
        let mut parts = into_items(reply)?.into_iter();
        let next = parts.next().unwrap_or(Value::Nil);
        Ok(AutoClaimed {
            next_start: to_id(&next)?,
            claimed: parse_claimed(parts.next().unwrap_or(Value::Nil), just_id)?,
            // Redis 7+ only; absent before.
            deleted_ids: parse_ids(parts.next().unwrap_or(Value::Nil))?,
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
        let mut invocation = SCRIPTS.sweep.key(stream);
        invocation
            .key(&request.dead_letter_stream)
            .arg(group)
            .arg(consumer)
            .arg(PARKED_CONSUMER)
            .arg(millis(policy.ack_deadline))
            .arg(policy.backoff.min_ms())
            .arg(policy.backoff.max_ms())
            .arg(PARKED_HORIZON_MS)
            .arg(policy.max_deliveries)
            .arg(request.cursor.to_arg("-"))
            .arg(request.scan.max(1))
            .arg(request.claim.max(1))
            .arg(&request.stream_label);
        let reply: Value = self
            .run_script(&invocation, Ctx::group(stream, group), "EVALSHA sweep.lua")
            .await?;
        parse_swept(reply)
    }

    async fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> StoreResult<Vec<EntryId>> {
        // -1 tells the script to count back from the horizon by each entry's backoff.
        let (idle, backoff) = match movement.idle {
            IdleAfterMove::Set(ms) => (i64::try_from(ms).unwrap_or(i64::MAX), None),
            IdleAfterMove::Backoff(backoff) => (-1, Some(backoff)),
        };
        let mut invocation = SCRIPTS.move_pending.key(stream);
        invocation
            .arg(group)
            .arg(movement.holder.as_deref().unwrap_or(""))
            .arg(&movement.to)
            .arg(idle)
            .arg(movement.horizon_ms)
            .arg(backoff.map_or(0, |b| b.min_ms()))
            .arg(backoff.map_or(0, |b| b.max_ms()))
            .arg(id_args(ids));
        let reply: Value = self
            .run_script(
                &invocation,
                Ctx::group(stream, group),
                "EVALSHA move_pending.lua",
            )
            .await?;
        parse_ids(reply)
    }

    async fn release_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        only_if_idle_ms: Option<u64>,
        delete: bool,
    ) -> StoreResult<Released> {
        let min_idle = only_if_idle_ms.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
        let mut invocation = SCRIPTS.release_consumer.key(stream);
        invocation
            .arg(group)
            .arg(consumer)
            .arg(PARKED_CONSUMER)
            .arg(PARKED_HORIZON_MS)
            .arg(if delete { "1" } else { "0" })
            .arg(min_idle);
        let (handed_back, lost, deleted): (u64, u64, u64) = self
            .run_script(
                &invocation,
                Ctx::group(stream, group),
                "EVALSHA release_consumer.lua",
            )
            .await?;
        Ok(Released {
            handed_back,
            lost,
            deleted: deleted == 1,
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
        let mut invocation = SCRIPTS.leases.key(stream);
        invocation
            .arg(group)
            .arg(consumer)
            .arg(limit.max(1))
            .arg(lease_ms.max(1));
        let rows: Vec<Value> = self
            .run_script(&invocation, Ctx::group(stream, group), "EVALSHA leases.lua")
            .await?;
        rows.into_iter()
            .map(|row| {
                let row = into_items(row)?;
                match row.as_slice() {
                    [id, idle] => Ok((
                        to_id(id)?,
                        to_u64(idle).ok_or_else(|| unexpected("lease idle time", idle))?,
                    )),
                    _ => Err(StoreError::Unexpected("lease row".into())),
                }
            })
            .collect()
    }

    async fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> StoreResult<Option<EntryId>> {
        let mut invocation = SCRIPTS.replay_dead_letter.key(dead_letter_stream);
        invocation.key(origin).arg(id.to_string()).arg(origin_label);
        let reply: Value = self
            .run_script(
                &invocation,
                Ctx::stream(dead_letter_stream),
                "EVALSHA replay_dead_letter.lua",
            )
            .await?;
        match reply {
            Value::Nil => Ok(None),
            id => to_id(&id).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn group_reads_keep_deleted_entries_as_none() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("f"), bulk("v")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let batches = parse_stream_batches(reply).unwrap();
        assert_eq!(batches.len(), 1);
        let (stream, entries) = &batches[0];
        assert_eq!(stream, "s");
        assert_eq!(
            entries[0].fields.as_ref().unwrap()[0].value,
            Bytes::from_static(b"v")
        );
        assert_eq!(entries[1].id, EntryId::new(2, 0));
        assert!(entries[1].fields.is_none());
    }

    #[test]
    fn server_errors_are_classified_by_code() {
        let ctx = Ctx::group("s", "g");
        // Built from the wire form, exactly as a reply from Redis would arrive.
        let err = |text: &str| -> RedisError {
            match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()) {
                Ok(Value::ServerError(err)) => err.into(),
                other => panic!("not an error reply: {other:?}"),
            }
        };
        assert!(matches!(
            classify(&err("NOGROUP No such key 's' or consumer group 'g'"), ctx),
            StoreError::NoSuchGroup { .. }
        ));
        assert!(matches!(
            classify(&err("BUSYGROUP Consumer Group name already exists"), ctx),
            StoreError::GroupExists { .. }
        ));
        assert!(matches!(
            classify(
                &err(
                    "ERR The ID specified in XADD is equal or smaller than the target stream top item"
                ),
                ctx
            ),
            StoreError::IdNotIncreasing { .. }
        ));
        assert!(matches!(
            classify(&err("LOADING Redis is loading the dataset in memory"), ctx),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(
                &err("ERR syntax error, LIMIT cannot be used without the special ~ option"),
                ctx
            ),
            StoreError::Rejected(_)
        ));
    }
}
