//! [`Registry`] over Redis: records are fields of hashes (HGET, HSET/HSETNX, HGETALL, HDEL),
//! a lease is SET NX PX (renewed by its holder in a script). Topics come with the trait.

use std::sync::LazyLock;

use redis::{Script, cmd};

use super::RedisStore;
use super::errors::Ctx;
use crate::store::{Registry, StoreResult};

static HOLD_LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/hold_lease.lua")));

impl Registry for RedisStore {
    async fn record(&self, registry: &str, field: &str) -> StoreResult<Option<String>> {
        self.query(cmd("HGET").arg(registry).arg(field), Ctx::stream(registry))
            .await
    }

    async fn put_record(
        &self,
        registry: &str,
        field: &str,
        value: &str,
        only_if_new: bool,
    ) -> StoreResult<bool> {
        let command = if only_if_new { "HSETNX" } else { "HSET" };
        let written: u64 = self
            .query(
                cmd(command).arg(registry).arg(field).arg(value),
                Ctx::stream(registry),
            )
            .await?;
        // HSET answers how many fields are new (0 for an overwrite, which did write).
        Ok(written > 0 || !only_if_new)
    }

    async fn records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        self.query(cmd("HGETALL").arg(registry), Ctx::stream(registry))
            .await
    }

    async fn remove_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        let deleted: u64 = self
            .query(cmd("HDEL").arg(registry).arg(field), Ctx::stream(registry))
            .await?;
        Ok(deleted > 0)
    }

    async fn hold_lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        let mut invocation = HOLD_LEASE.key(key);
        invocation.arg(holder).arg(ttl_ms.max(1));
        let held: u64 = self
            .run_script(&invocation, Ctx::stream(key), "EVALSHA hold_lease.lua")
            .await?;
        Ok(held == 1)
    }
}
