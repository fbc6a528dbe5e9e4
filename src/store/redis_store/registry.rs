//! [`Registry`] over Redis: records are fields of hashes (HGET, HSET/HSETNX, HGETALL, HDEL),
//! a lease is SET NX PX (renewed by its holder in a script). Topics come with the trait.

use super::RedisStore;
use crate::store::Registry;
use crate::store::StoreResult;

impl Registry for RedisStore {
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
}
