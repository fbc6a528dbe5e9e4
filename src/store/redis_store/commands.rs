//! The [`Store`] implementation over Redis: one method per command or Lua script.
//!
//! Over 600 lines because it is one `impl Store` block (Rust cannot split a trait
//! implementation across files): 44 methods of a few lines each, plus the per-slot helpers they
//! share. Parsing lives in `replies.rs`, error classification in `errors.rs`, registry records,
//! leases and confirmed acks in `records.rs`, ordered delivery in `ordering.rs`, retention in
//! `retention.rs`, delayed messages in `delayed.rs`.

use redis::{Script, Value, cmd};
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use super::cluster::{by_slot, one_slot};
use super::errors::Ctx;
use super::replies::*;
use crate::model::{
    AckOutcome, Append, AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo,
    DelayStep, Delayed, DelayedKeys, Entry, EntryId, GroupInfo, HELD_CONSUMER, IdRange,
    IdleAfterMove, OrderStep, Ordered, OrderingState, PARKED_CONSUMER, PARKED_HORIZON_MS,
    PendingEntry, PendingMove, PendingQuery, PendingSummary, RetentionCut, ScheduleStep, StartId,
    StreamInfo, SweepRequest, Swept, TrimPolicy, Trimmed, millis,
};
use crate::store::{
    GroupCursor, GroupEntry, PoolState, Released, Store, StoreError, StoreResult, StreamPage,
    StreamWatch, Wakeups,
};

/// Deletes a key only when it is a stream, atomically (TYPE then DEL could race).
pub(super) const DELETE_STREAM_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
redis.call('DEL', KEYS[1])
return 1
";

/// The atomic steps of redelivery, one Lua script each (sources in `lua/`, commented there).
pub(super) struct Scripts {
    sweep: Script,
    move_pending: Script,
    release_consumer: Script,
    leases: Script,
    replay_dead_letter: Script,
}

pub(super) static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
    sweep: Script::new(include_str!("../lua/sweep.lua")),
    move_pending: Script::new(include_str!("../lua/move_pending.lua")),
    release_consumer: Script::new(include_str!("../lua/release_consumer.lua")),
    leases: Script::new(include_str!("../lua/leases.lua")),
    replay_dead_letter: Script::new(include_str!("../lua/replay_dead_letter.lua")),
});

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
            return self.append_in_order(requests).await;
        }
        // A cluster pipeline must stay on one slot: one pipeline per slot, all at once; the
        // order of requests on one stream is kept within its pipeline.
        let indexed: Vec<(usize, &Append)> = requests.iter().enumerate().collect();
        let groups = by_slot(indexed, |(_, r)| r.stream.as_str());
        let runs = groups.iter().map(|group| async move {
            let batch: Vec<Append> = group.iter().map(|(_, r)| (*r).clone()).collect();
            let answers = self.append_in_order(&batch).await;
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

    async fn ack_confirmed(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> StoreResult<Vec<AckOutcome>> {
        self.ack_each(stream, group, holder, ids).await
    }

    fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch {
        self.wakeups.watch(streams, group)
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    async fn run_watcher(self, shutdown: CancellationToken) {
        self.watch_outside_writes(shutdown).await;
    }

    fn pool_state(&self) -> Option<PoolState> {
        // The cluster connection is not pooled.
        let state = self.pool.state();
        let stats = &state.statistics;
        (!self.is_cluster()).then_some(PoolState {
            connections: state.connections,
            idle: state.idle_connections,
            opened: stats.connections_created,
            closed_broken: stats.connections_closed_broken + stats.connections_closed_invalid,
            closed_aged: stats.connections_closed_max_lifetime
                + stats.connections_closed_idle_timeout,
        })
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
        options: &AutoClaimOptions,
    ) -> StoreResult<AutoClaimed> {
        let mut xautoclaim = cmd("XAUTOCLAIM");
        xautoclaim
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(options.min_idle_ms)
            .arg(options.start.to_string())
            .arg("COUNT")
            .arg(options.count);
        if options.just_id {
            xautoclaim.arg("JUSTID");
        }
        let reply: Value = self.query(&xautoclaim, Ctx::group(stream, group)).await?;
        let mut parts = into_items(reply)?.into_iter();
        let next = parts.next().unwrap_or(Value::Nil);
        Ok(AutoClaimed {
            next_start: to_id(&next)?,
            claimed: parse_claimed(parts.next().unwrap_or(Value::Nil), options.just_id)?,
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
            .arg(&request.stream_label)
            .arg(HELD_CONSUMER);
        let reply: Value = self
            .run_script(&invocation, Ctx::group(stream, group), "EVALSHA sweep.lua")
            .await?;
        parse_swept(reply)
    }

    async fn delay(
        &self,
        stream: &str,
        keys: &DelayedKeys,
        step: &DelayStep,
    ) -> StoreResult<Delayed> {
        let delayed = self.delayed_step(stream, keys, step).await?;
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
        self.schedule_step(registry, step).await
    }

    async fn retain(&self, stream: &str, cut: &RetentionCut) -> StoreResult<Trimmed> {
        self.apply_retention(stream, cut).await
    }

    async fn order(
        &self,
        stream: &str,
        group: &str,
        state: &OrderingState,
        step: &OrderStep,
    ) -> StoreResult<Ordered> {
        self.ordering_step(stream, group, state, step).await
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

    async fn record(&self, registry: &str, field: &str) -> StoreResult<Option<String>> {
        self.get_record(registry, field).await
    }

    async fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> StoreResult<bool> {
        self.set_record(registry, field, value, only_if_new).await
    }

    async fn records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        self.all_records(registry).await
    }

    async fn remove_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        self.delete_record(registry, field).await
    }

    async fn hold_lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        self.lease(key, holder, ttl_ms).await
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
