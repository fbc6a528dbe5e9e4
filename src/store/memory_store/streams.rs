//! [`Streams`] in memory: appends, tail and group reads, acks and wake-ups, with Redis 7.0's
//! semantics where a client can observe them.

use std::ops::Bound;

use tokio_util::sync::CancellationToken;

use super::state::no_group;

use super::{MemoryStore, pending, produce};
use crate::model::{AckOutcome, Append, Entry, EntryId};
use crate::store::Streams;
use crate::store::{GroupCursor, GroupEntry, StoreResult, StreamWatch, Wakeups};

impl Streams for MemoryStore {
    async fn append(&self, requests: &[Append]) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        let now = self.clock.now_ms();
        let mut answers = Vec::with_capacity(requests.len());
        {
            let mut streams = self.streams();
            for request in requests {
                answers.push(produce::append(&mut streams, request, now));
            }
        }
        for (request, answer) in requests.iter().zip(&answers) {
            if answer.is_ok() {
                self.wakeups.notify(&request.stream);
            }
        }
        Ok(answers)
    }

    async fn read(
        &self,
        cursors: &[(String, EntryId)],
        count: usize,
    ) -> StoreResult<Vec<(String, Vec<Entry>)>> {
        let streams = self.streams();
        Ok(cursors
            .iter()
            .filter_map(|(name, after)| {
                let stream = streams.get(name)?;
                let entries: Vec<Entry> = stream
                    .entries
                    .range((Bound::Excluded(*after), Bound::Unbounded))
                    .take(count)
                    .map(|(id, fields)| Entry {
                        id: *id,
                        fields: fields.clone(),
                    })
                    .collect();
                (!entries.is_empty()).then(|| (name.clone(), entries))
            })
            .collect())
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        cursors: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
        let mut streams = self.streams();
        // Like Redis, check every stream's group before reading any.
        for (name, _) in cursors {
            if !streams
                .get(name)
                .is_some_and(|s| s.groups.contains_key(group))
            {
                return Err(no_group(name, group));
            }
        }
        let now = self.clock.now_ms();
        let mut replies = Vec::new();
        for (name, cursor) in cursors {
            let Some(stream) = streams.get_mut(name) else {
                continue;
            };
            let entries = match cursor {
                GroupCursor::New => stream.deliver_new(group, consumer, count, no_ack, now),
                GroupCursor::PendingAfter(after) => {
                    stream.deliver_own_pending(group, consumer, *after, count, now)
                }
            };
            if let Some(g) = stream.groups.get_mut(group) {
                g.touch(consumer, now);
            }
            if !entries.is_empty() {
                replies.push((name.clone(), entries));
            }
        }
        Ok(replies)
    }

    async fn last_entry_id(&self, stream: &str) -> StoreResult<Option<EntryId>> {
        Ok(self
            .streams()
            .get(stream)
            .and_then(|s| s.entries.keys().next_back().copied()))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.with_group(stream, group, |s, group| {
            let g = s.group(stream, group)?;
            Ok(ids
                .iter()
                .filter(|id| g.pending.remove(id).is_some())
                .count() as u64)
        })
    }

    async fn ack_confirmed(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> StoreResult<Vec<AckOutcome>> {
        self.with_group(stream, group, |s, group| {
            let pending = &mut s.group(stream, group)?.pending;
            Ok(ids
                .iter()
                .map(|id| pending::ack_confirmed(pending, holder, *id))
                .collect())
        })
    }

    fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch {
        self.wakeups.watch(streams, group)
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    async fn run_watcher(self, shutdown: CancellationToken) {
        // Nobody else can write to the embedded store.
        shutdown.cancelled().await;
    }

    fn pool_state(&self) -> Option<crate::store::PoolState> {
        None
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
