//! [`Streams`] over Redis: appends (one pipeline, one per slot on a cluster), tail and group
//! reads without `BLOCK`, acks, the watch registry and its watcher, the pool and health.

use redis::{Value, cmd};
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use super::cluster::{by_slot, one_slot};
use super::errors::Ctx;
use super::replies::*;
use crate::model::{AckOutcome, Append, Entry, EntryId};
use crate::store::Streams;
use crate::store::{
    GroupCursor, GroupEntry, PoolState, StoreError, StoreResult, StreamWatch, Wakeups,
};

impl Streams for RedisStore {
    async fn append(&self, requests: &[Append]) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        // Until every answer is in (and recorded by `Wakeups::appended`): see `appending`.
        let _appending = self
            .wakeups
            .appending(requests.iter().map(|r| r.stream.as_str()));
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
}
