//! [`Registry`] under the prefix: only the registry's key is prefixed (fields name things as
//! clients know them); topics created before the prefix was set are adopted.

use super::Namespaced;
use crate::store::Registry;
use crate::store::{Store, StoreResult};

impl<S: Store> Registry for Namespaced<S> {
    async fn record(&self, registry: &str, field: &str) -> StoreResult<Option<String>> {
        // Fields name things as clients know them: only the registry's key is prefixed.
        self.unkeyed(self.inner.record(&self.key(registry), field))
            .await
    }

    async fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> StoreResult<bool> {
        self.unkeyed(
            self.inner
                .put_record(&self.key(registry), field, value, only_if_new),
        )
        .await
    }

    async fn records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        self.unkeyed(self.inner.records(&self.key(registry))).await
    }

    async fn remove_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        self.unkeyed(self.inner.remove_record(&self.key(registry), field))
            .await
    }

    async fn hold_lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        self.unkeyed(self.inner.hold_lease(&self.key(key), holder, ttl_ms))
            .await
    }

    async fn topic_partitions(&self, registry: &str, topic: &str) -> StoreResult<Option<u32>> {
        let found = self
            .unkeyed(self.inner.topic_partitions(&self.key(registry), topic))
            .await?;
        if found.is_some() || self.keys.prefix().is_empty() {
            return Ok(found);
        }
        self.adopt_legacy_topic(registry, topic).await
    }
}
