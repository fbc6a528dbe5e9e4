//! [`Inspect`] under the prefix: listings match only what starts with it and come back
//! without it.

use super::Namespaced;
use crate::model::{
    AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo, Entry, EntryId, GroupInfo,
    IdRange, PendingEntry, PendingQuery, PendingSummary, StartId, StreamInfo, TrimPolicy,
};
use crate::store::Inspect;
use crate::store::{Store, StoreResult, StreamPage};

impl<S: Store> Inspect for Namespaced<S> {
    async fn list_streams(
        &self,
        pattern: &str,
        cursor: u64,
        page_size: u32,
    ) -> StoreResult<StreamPage> {
        let pattern = self
            .keys
            .pattern(if pattern.is_empty() { "*" } else { pattern });
        let page = self
            .unkeyed(self.inner.list_streams(&pattern, cursor, page_size))
            .await?;
        Ok(StreamPage {
            streams: page
                .streams
                .into_iter()
                .filter(|key| key.starts_with(self.keys.prefix()))
                .map(|key| self.name(key))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn stream_info(&self, stream: &str) -> StoreResult<StreamInfo> {
        self.unkeyed(self.inner.stream_info(&self.key(stream)))
            .await
    }

    async fn range(
        &self,
        stream: &str,
        range: IdRange,
        count: usize,
        reverse: bool,
    ) -> StoreResult<Vec<Entry>> {
        self.unkeyed(self.inner.range(&self.key(stream), range, count, reverse))
            .await
    }

    async fn delete_entries(&self, stream: &str, ids: &[EntryId]) -> StoreResult<u64> {
        self.unkeyed(self.inner.delete_entries(&self.key(stream), ids))
            .await
    }

    async fn trim(&self, stream: &str, policy: TrimPolicy) -> StoreResult<u64> {
        self.unkeyed(self.inner.trim(&self.key(stream), policy))
            .await
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        self.unkeyed(self.inner.delete_stream(&self.key(stream)))
            .await
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartId,
        create_stream: bool,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        self.unkeyed(self.inner.create_group(
            &self.key(stream),
            group,
            start,
            create_stream,
            entries_read,
        ))
        .await
    }

    async fn destroy_group(&self, stream: &str, group: &str) -> StoreResult<()> {
        self.unkeyed(self.inner.destroy_group(&self.key(stream), group))
            .await
    }

    async fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        id: StartId,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        self.unkeyed(
            self.inner
                .set_group_id(&self.key(stream), group, id, entries_read),
        )
        .await
    }

    async fn groups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        self.unkeyed(self.inner.groups(&self.key(stream))).await
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> StoreResult<bool> {
        self.unkeyed(
            self.inner
                .create_consumer(&self.key(stream), group, consumer),
        )
        .await
    }

    async fn delete_consumer(&self, stream: &str, group: &str, consumer: &str) -> StoreResult<u64> {
        self.unkeyed(
            self.inner
                .delete_consumer(&self.key(stream), group, consumer),
        )
        .await
    }

    async fn consumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        self.unkeyed(self.inner.consumers(&self.key(stream), group))
            .await
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        self.unkeyed(self.inner.pending_summary(&self.key(stream), group))
            .await
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> StoreResult<Vec<PendingEntry>> {
        self.unkeyed(self.inner.pending(&self.key(stream), group, query))
            .await
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &ClaimOptions,
    ) -> StoreResult<Claimed> {
        self.unkeyed(
            self.inner
                .claim(&self.key(stream), group, consumer, options),
        )
        .await
    }

    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &AutoClaimOptions,
    ) -> StoreResult<AutoClaimed> {
        self.unkeyed(
            self.inner
                .auto_claim(&self.key(stream), group, consumer, options),
        )
        .await
    }
}
