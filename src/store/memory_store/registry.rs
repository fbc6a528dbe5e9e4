//! [`Registry`] in memory: records and leases in `records.rs`'s maps. Topics come with the
//! trait.

use super::MemoryStore;
use crate::store::Registry;
use crate::store::StoreResult;

impl Registry for MemoryStore {
    async fn record(&self, registry: &str, field: &str) -> StoreResult<Option<String>> {
        self.get_record(registry, field)
    }

    async fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> StoreResult<bool> {
        self.set_record(registry, field, value, only_if_new)
    }

    async fn records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        self.all_records(registry)
    }

    async fn remove_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        self.delete_record(registry, field)
    }

    async fn hold_lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        self.lease(key, holder, ttl_ms)
    }
}
