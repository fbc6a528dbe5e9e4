//! [`Inspect`] over Redis: one command each (XINFO, XRANGE, XDEL, XTRIM, XGROUP, XPENDING,
//! XCLAIM, XAUTOCLAIM; a script where TYPE then DEL could race). Replies are parsed in
//! `replies.rs`, errors classified in `errors.rs`.

use redis::{Value, cmd};

use super::RedisStore;
use super::errors::Ctx;
use super::replies::*;
use super::scripts::DELETE_STREAM_SCRIPT;
use crate::model::{
    AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo, Entry, EntryId, GroupInfo,
    IdRange, PendingEntry, PendingQuery, PendingSummary, StartId, StreamInfo, TrimPolicy,
};
use crate::store::Inspect;
use crate::store::{StoreError, StoreResult, StreamPage};

impl Inspect for RedisStore {
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
}
