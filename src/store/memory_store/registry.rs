//! [`Registry`] in memory: what Redis keeps in small hashes and expiring keys (records and
//! leases), kept here in two maps. Topics come with the trait.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::MemoryStore;
use crate::store::{Registry, StoreResult};

/// (registry, field) → value.
pub(super) type Records = Mutex<HashMap<(String, String), String>>;

/// Lease key → (holder, expiry in the store clock's milliseconds).
pub(super) type Leases = Mutex<HashMap<String, (String, u64)>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change is a single insert or remove: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn address(registry: &str, field: &str) -> (String, String) {
    (registry.to_owned(), field.to_owned())
}

impl Registry for MemoryStore {
    async fn record(&self, registry: &str, field: &str) -> StoreResult<Option<String>> {
        Ok(lock(&self.records).get(&address(registry, field)).cloned())
    }

    async fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> StoreResult<bool> {
        let mut records = lock(&self.records);
        let key = address(registry, field);
        if only_if_new && records.contains_key(&key) {
            return Ok(false);
        }
        records.insert(key, value.to_owned());
        Ok(true)
    }

    async fn records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(lock(&self.records)
            .iter()
            .filter(|((r, _), _)| r == registry)
            .map(|((_, field), value)| (field.clone(), value.clone()))
            .collect())
    }

    async fn remove_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        Ok(lock(&self.records)
            .remove(&address(registry, field))
            .is_some())
    }

    async fn hold_lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        let now = self.clock.now_ms();
        let mut leases = lock(&self.leases);
        match leases.get(key) {
            Some((current, expiry)) if current != holder && *expiry > now => Ok(false),
            _ => {
                leases.insert(key.to_owned(), (holder.to_owned(), now + ttl_ms.max(1)));
                Ok(true)
            }
        }
    }
}
