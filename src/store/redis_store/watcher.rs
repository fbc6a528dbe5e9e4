//! The watcher of writes made outside this broker: one `XREAD BLOCK` over every stream an idle
//! subscription waits on, on one dedicated connection (or, on a cluster, a poll per slot); what
//! it sees wakes those subscriptions through [`Wakeups`](crate::store::Wakeups).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::{AsyncConnectionConfig, RedisError, Value, cmd};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use super::cluster::{CLUSTER_WATCH_INTERVAL, by_slot};
use super::errors::{Ctx, classify, is_connection_failure};
use super::replies::{parse_entries, parse_stream_batches};
use crate::model::EntryId;
use crate::store::{Coverage, StoreError, StoreResult, Streams};

/// How long the watcher waits before reading again after a read that only this broker's own
/// appends ended. An outside write to a stream this broker also appends to is seen this much
/// later at most, and only while such appends go on (each of which wakes the stream's readers,
/// who then read the outside write too).
const OWN_APPENDS_PAUSE: Duration = Duration::from_millis(2);

impl RedisStore {
    /// Forgets the positions of streams nobody waits on any more, and returns the streams
    /// waited on that have no position yet.
    fn newly_watched(&self, positions: &mut HashMap<String, EntryId>) -> Vec<String> {
        let watched: HashSet<String> = self.wakeups.watched().into_iter().collect();
        positions.retain(|stream, _| watched.contains(stream));
        watched
            .into_iter()
            .filter(|s| !positions.contains_key(s))
            .collect()
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
    pub(super) async fn watch_outside_writes(self, shutdown: CancellationToken) {
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
        let mut appends_ended = self.wakeups.appends_ended();
        loop {
            let fresh = self.newly_watched(&mut positions);
            for stream in &fresh {
                let top = self.last_entry_id(stream).await.unwrap_or_default();
                positions.insert(stream.clone(), top.unwrap_or(EntryId::ZERO));
                self.wakeups.notify(stream);
            }
            // What this broker appended itself woke its readers already: only what comes after
            // it is news.
            self.wakeups.skip_own_appends(&mut positions);
            let cursors: Vec<(String, EntryId)> =
                positions.iter().map(|(s, id)| (s.clone(), *id)).collect();
            for group in by_slot(cursors, |(s, _)| s.as_str()) {
                let seen = self
                    .read_one_slot(&group, 1)
                    .await?
                    .into_iter()
                    .filter_map(|(stream, entries)| Some((stream, entries.first()?.id)))
                    .collect();
                self.attribute(&mut positions, seen, &mut appends_ended)
                    .await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(CLUSTER_WATCH_INTERVAL) => {}
            }
        }
    }

    /// One watcher connection's life: returns `Ok` on shutdown, `Err` when the connection fails.
    async fn watch_on_one_connection(&self, shutdown: &CancellationToken) -> StoreResult<()> {
        let watcher_failed = |err: RedisError| classify(&err, Ctx::stream(""));
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(None);
        let mut conn = self
            .node_client()
            .await?
            .get_multiplexed_async_connection_with_config(&connection_config)
            .await
            .map_err(watcher_failed)?;
        super::name_connection(&mut conn, super::WATCHER_CONNECTION_NAME).await;
        let client_id: i64 = cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(watcher_failed)?;
        // Where each watched stream was when we last looked; entries after it wake the stream.
        let mut positions: HashMap<String, EntryId> = HashMap::new();
        let mut additions = self.wakeups.additions();
        let mut appends_ended = self.wakeups.appends_ended();
        let mut may_unblock = true;
        // A silent network would leave XREAD waiting forever; this bounds it.
        let deadline =
            self.config.watch_block + self.config.response_timeout + Duration::from_secs(1);
        loop {
            // Under Sentinel, a failover can turn this connection's Redis into a replica that
            // sees no more writes: check each turn, and start over on the primary.
            if self.follows_sentinel() {
                let role: Vec<Value> = cmd("ROLE")
                    .query_async(&mut conn)
                    .await
                    .map_err(watcher_failed)?;
                if !matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
                    return Err(StoreError::unavailable(
                        "the watched Redis is no longer the primary",
                    ));
                }
            }
            additions.borrow_and_update();
            let fresh = self.newly_watched(&mut positions);
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
            // What this broker appended itself woke its readers already: only what comes after
            // it is news.
            self.wakeups.skip_own_appends(&mut positions);
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
                .map_err(|_| StoreError::unavailable("stream watcher read timed out"))?
                .map_err(watcher_failed)?;
            let seen = parse_stream_batches(reply)?
                .into_iter()
                .filter_map(|(stream, entries)| Some((stream, entries.first()?.id)))
                .collect();
            let only_own = self
                .attribute(&mut positions, seen, &mut appends_ended)
                .await;
            if only_own {
                // Ended by this broker's own appends: under a steady trickle of them the next
                // read would end at the next one. A short pause lets several pass at once, so
                // the watcher costs Redis one read per few appends rather than one per append.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(OWN_APPENDS_PAUSE) => {}
                }
            }
        }
    }

    /// The watcher's read saw, for each stream, the oldest entry after its position. One
    /// covered by an append of this broker (see
    /// [`Wakeups::coverage`](crate::store::Wakeups::coverage)) ended the read but needs nobody
    /// woken: the position moves past it. One whose append is still waiting for its
    /// answer (the watcher often hears of an entry first) is looked at again when an append
    /// ends. Anything else is an outside write: the stream's top is re-read on the next turn,
    /// and that wakes its subscribers. Waits at most a response timeout for appends to end.
    /// `true` when everything seen was this broker's own.
    async fn attribute(
        &self,
        positions: &mut HashMap<String, EntryId>,
        mut seen: Vec<(String, EntryId)>,
        appends_ended: &mut watch::Receiver<u64>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + self.config.response_timeout;
        let mut only_own = true;
        loop {
            appends_ended.borrow_and_update();
            seen.retain(
                |(stream, first)| match self.wakeups.coverage(stream, *first) {
                    Coverage::Covered(top) => {
                        positions.insert(stream.clone(), top);
                        false
                    }
                    Coverage::Unknown => true,
                    Coverage::Outside => {
                        positions.remove(stream);
                        only_own = false;
                        false
                    }
                },
            );
            if seen.is_empty() {
                return only_own;
            }
            let ended = tokio::time::timeout_at(deadline, appends_ended.changed()).await;
            if !matches!(ended, Ok(Ok(()))) {
                for (stream, _) in seen {
                    positions.remove(&stream);
                }
                return false;
            }
        }
    }
}
