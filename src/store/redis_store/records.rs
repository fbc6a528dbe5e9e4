//! Registry records (fields of a hash such as the stored subscriptions), leases (one holder at
//! a time for a shared job), and acknowledgements with per-id outcomes: the store's parts that
//! came with stored subscriptions and Consume.

use std::sync::LazyLock;

use redis::{Script, cmd};

use super::RedisStore;
use super::errors::Ctx;
use super::replies::ack_outcome;
use crate::model::{AckOutcome, EntryId};
use crate::store::StoreResult;

static HOLD_LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/hold_lease.lua")));

static ACK_HELD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/ack_held.lua")));

static ACK_EACH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/ack_each.lua")));

impl RedisStore {
    pub(super) async fn get_record(
        &self,
        registry: &str,
        field: &str,
    ) -> StoreResult<Option<String>> {
        self.query(cmd("HGET").arg(registry).arg(field), Ctx::stream(registry))
            .await
    }

    pub(super) async fn set_record(
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

    pub(super) async fn all_records(&self, registry: &str) -> StoreResult<Vec<(String, String)>> {
        self.query(cmd("HGETALL").arg(registry), Ctx::stream(registry))
            .await
    }

    pub(super) async fn delete_record(&self, registry: &str, field: &str) -> StoreResult<bool> {
        let deleted: u64 = self
            .query(cmd("HDEL").arg(registry).arg(field), Ctx::stream(registry))
            .await?;
        Ok(deleted > 0)
    }

    pub(super) async fn lease(&self, key: &str, holder: &str, ttl_ms: u64) -> StoreResult<bool> {
        let mut invocation = HOLD_LEASE.key(key);
        invocation.arg(holder).arg(ttl_ms.max(1));
        let held: u64 = self
            .run_script(&invocation, Ctx::stream(key), "EVALSHA hold_lease.lua")
            .await?;
        Ok(held == 1)
    }

    pub(super) async fn ack_each(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> StoreResult<Vec<AckOutcome>> {
        let (Some(lowest), Some(highest)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(Vec::new());
        };
        let (mut invocation, script) = match holder {
            Some(holder) => {
                let mut invocation = ACK_HELD.key(stream);
                invocation
                    .arg(group)
                    .arg(holder)
                    .arg(lowest.to_string())
                    .arg(highest.to_string());
                (invocation, "EVALSHA ack_held.lua")
            }
            None => {
                let mut invocation = ACK_EACH.key(stream);
                invocation.arg(group);
                (invocation, "EVALSHA ack_each.lua")
            }
        };
        for id in ids {
            invocation.arg(id.to_string());
        }
        let codes: Vec<i64> = self
            .run_script(&invocation, Ctx::group(stream, group), script)
            .await?;
        codes.into_iter().map(ack_outcome).collect()
    }
}
