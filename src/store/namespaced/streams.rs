//! [`Streams`] under the prefix: names prefixed on the way in (streams, dedupe keys), stripped
//! on the way out (read results, errors).

use tokio_util::sync::CancellationToken;

use super::Namespaced;
use crate::model::{AckOutcome, Append, Dedupe, Entry, EntryId};
use crate::store::Streams;
use crate::store::{GroupCursor, GroupEntry, Store, StoreResult, StreamWatch, Wakeups};

impl<S: Store> Streams for Namespaced<S> {
    async fn append(&self, requests: &[Append]) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        let prefixed: Vec<Append> = requests
            .iter()
            .map(|r| Append {
                stream: self.key(&r.stream),
                // Dedupe keys are keys too: under the prefix, in the stream's slot.
                dedupe: r.dedupe.as_ref().map(|dedupe| Dedupe {
                    prefix: self.key(&dedupe.prefix),
                    ..dedupe.clone()
                }),
                ..r.clone()
            })
            .collect();
        let answers = self.unkeyed(self.inner.append(&prefixed)).await?;
        Ok(answers
            .into_iter()
            .map(|a| a.map_err(|e| self.unkey(e)))
            .collect())
    }

    async fn read(
        &self,
        streams: &[(String, EntryId)],
        count: usize,
    ) -> StoreResult<Vec<(String, Vec<Entry>)>> {
        let keyed: Vec<_> = streams.iter().map(|(s, id)| (self.key(s), *id)).collect();
        let read = self.unkeyed(self.inner.read(&keyed, count)).await?;
        Ok(self.batches(read))
    }

    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[(String, GroupCursor)],
        count: usize,
        no_ack: bool,
    ) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
        let keyed: Vec<_> = streams.iter().map(|(s, c)| (self.key(s), *c)).collect();
        let read = self
            .unkeyed(
                self.inner
                    .read_group(group, consumer, &keyed, count, no_ack),
            )
            .await?;
        Ok(self.batches(read))
    }

    async fn last_entry_id(&self, stream: &str) -> StoreResult<Option<EntryId>> {
        self.unkeyed(self.inner.last_entry_id(&self.key(stream)))
            .await
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.unkeyed(self.inner.ack(&self.key(stream), group, ids))
            .await
    }

    async fn ack_confirmed(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> StoreResult<Vec<AckOutcome>> {
        self.unkeyed(
            self.inner
                .ack_confirmed(&self.key(stream), group, holder, ids),
        )
        .await
    }

    fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch {
        self.inner.watch(&self.keys(streams), group)
    }

    fn wakeups(&self) -> &Wakeups {
        self.inner.wakeups()
    }

    async fn run_watcher(self, shutdown: CancellationToken) {
        self.inner.run_watcher(shutdown).await;
    }

    fn pool_state(&self) -> Option<crate::store::PoolState> {
        self.inner.pool_state()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}
