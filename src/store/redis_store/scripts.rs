//! [`Scripts`] over Redis: the delivery features' atomic steps, one Lua script each (sources and
//! their comments in `store/lua/`); ordering, retention and delayed messages have their own
//! files beside this one.

use redis::{Script, Value};

use super::RedisStore;
use super::errors::Ctx;
use super::replies::*;
use crate::model::{
    DelayStep, Delayed, DelayedKeys, EntryId, HELD_CONSUMER, IdleAfterMove, OrderStep, Ordered,
    OrderingState, PARKED_CONSUMER, PARKED_HORIZON_MS, PendingMove, RetentionCut, ScheduleStep,
    SweepRequest, Swept, Trimmed, millis,
};
use crate::store::Scripts;
use crate::store::{Released, StoreError, StoreResult};

/// Deletes a key only when it is a stream, atomically (TYPE then DEL could race).
pub(super) const DELETE_STREAM_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
redis.call('DEL', KEYS[1])
return 1
";

/// The atomic steps of redelivery, one Lua script each (sources in `lua/`, commented there).
pub(super) struct LuaScripts {
    sweep: Script,
    move_pending: Script,
    release_consumer: Script,
    leases: Script,
    replay_dead_letter: Script,
}

pub(super) static SCRIPTS: std::sync::LazyLock<LuaScripts> =
    std::sync::LazyLock::new(|| LuaScripts {
        sweep: Script::new(include_str!("../lua/sweep.lua")),
        move_pending: Script::new(include_str!("../lua/move_pending.lua")),
        release_consumer: Script::new(include_str!("../lua/release_consumer.lua")),
        leases: Script::new(include_str!("../lua/leases.lua")),
        replay_dead_letter: Script::new(include_str!("../lua/replay_dead_letter.lua")),
    });

impl Scripts for RedisStore {
    async fn sweep(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        request: &SweepRequest,
    ) -> StoreResult<Swept> {
        let policy = &request.policy;
        let mut invocation = SCRIPTS.sweep.key(stream);
        invocation
            .key(&request.dead_letter_stream)
            .arg(group)
            .arg(consumer)
            .arg(PARKED_CONSUMER)
            .arg(millis(policy.ack_deadline))
            .arg(policy.backoff.min_ms())
            .arg(policy.backoff.max_ms())
            .arg(PARKED_HORIZON_MS)
            .arg(policy.max_deliveries)
            .arg(request.cursor.to_arg("-"))
            .arg(request.scan.max(1))
            .arg(request.claim.max(1))
            .arg(&request.stream_label)
            .arg(HELD_CONSUMER);
        let reply: Value = self
            .run_script(&invocation, Ctx::group(stream, group), "EVALSHA sweep.lua")
            .await?;
        parse_swept(reply)
    }

    async fn delay(
        &self,
        stream: &str,
        keys: &DelayedKeys,
        step: &DelayStep,
    ) -> StoreResult<Delayed> {
        let delayed = self.delayed_step(stream, keys, step).await?;
        if !delayed.moved.is_empty() {
            self.wakeups.notify(stream);
        }
        Ok(delayed)
    }

    async fn schedule(
        &self,
        registry: &str,
        step: &ScheduleStep,
    ) -> StoreResult<Vec<(String, u64)>> {
        self.schedule_step(registry, step).await
    }

    async fn retain(&self, stream: &str, cut: &RetentionCut) -> StoreResult<Trimmed> {
        self.apply_retention(stream, cut).await
    }

    async fn order(
        &self,
        stream: &str,
        group: &str,
        state: &OrderingState,
        step: &OrderStep,
    ) -> StoreResult<Ordered> {
        self.ordering_step(stream, group, state, step).await
    }

    async fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> StoreResult<Vec<EntryId>> {
        // -1 tells the script to count back from the horizon by each entry's backoff.
        let (idle, backoff) = match movement.idle {
            IdleAfterMove::Set(ms) => (i64::try_from(ms).unwrap_or(i64::MAX), None),
            IdleAfterMove::Backoff(backoff) => (-1, Some(backoff)),
        };
        let mut invocation = SCRIPTS.move_pending.key(stream);
        invocation
            .arg(group)
            .arg(movement.holder.as_deref().unwrap_or(""))
            .arg(&movement.to)
            .arg(idle)
            .arg(movement.horizon_ms)
            .arg(backoff.map_or(0, |b| b.min_ms()))
            .arg(backoff.map_or(0, |b| b.max_ms()))
            .arg(id_args(ids));
        let reply: Value = self
            .run_script(
                &invocation,
                Ctx::group(stream, group),
                "EVALSHA move_pending.lua",
            )
            .await?;
        parse_ids(reply)
    }

    async fn release_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        only_if_idle_ms: Option<u64>,
        delete: bool,
    ) -> StoreResult<Released> {
        let min_idle = only_if_idle_ms.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
        let mut invocation = SCRIPTS.release_consumer.key(stream);
        invocation
            .arg(group)
            .arg(consumer)
            .arg(PARKED_CONSUMER)
            .arg(PARKED_HORIZON_MS)
            .arg(if delete { "1" } else { "0" })
            .arg(min_idle);
        let (handed_back, lost, deleted): (u64, u64, u64) = self
            .run_script(
                &invocation,
                Ctx::group(stream, group),
                "EVALSHA release_consumer.lua",
            )
            .await?;
        Ok(Released {
            handed_back,
            lost,
            deleted: deleted == 1,
        })
    }

    async fn leases(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        lease_ms: u64,
        limit: u64,
    ) -> StoreResult<Vec<(EntryId, u64)>> {
        let mut invocation = SCRIPTS.leases.key(stream);
        invocation
            .arg(group)
            .arg(consumer)
            .arg(limit.max(1))
            .arg(lease_ms.max(1));
        let rows: Vec<Value> = self
            .run_script(&invocation, Ctx::group(stream, group), "EVALSHA leases.lua")
            .await?;
        rows.into_iter()
            .map(|row| {
                let row = into_items(row)?;
                match row.as_slice() {
                    [id, idle] => Ok((
                        to_id(id)?,
                        to_u64(idle).ok_or_else(|| unexpected("lease idle time", idle))?,
                    )),
                    _ => Err(StoreError::Unexpected("lease row".into())),
                }
            })
            .collect()
    }

    async fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> StoreResult<Option<EntryId>> {
        let mut invocation = SCRIPTS.replay_dead_letter.key(dead_letter_stream);
        invocation.key(origin).arg(id.to_string()).arg(origin_label);
        let reply: Value = self
            .run_script(
                &invocation,
                Ctx::stream(dead_letter_stream),
                "EVALSHA replay_dead_letter.lua",
            )
            .await?;
        match reply {
            Value::Nil => Ok(None),
            id => to_id(&id).map(Some),
        }
    }
}
