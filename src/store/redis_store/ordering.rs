//! Ordered delivery's atomic steps over Redis: one Lua script (`lua/ordering.lua`) for admitting
//! what a member read, releasing what was settled, and healing a group's state.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::RedisStore;
use super::errors::Ctx;
use super::replies::{
    ack_outcome, into_items, parse_fields, parse_ids, to_id, to_opt_i64, to_text, to_u64,
    unexpected,
};
use crate::model::{
    Entry, HELD_CONSUMER, ORDERING_KEY_FIELD, OrderStep, Ordered, OrderingState, PARKED_CONSUMER,
    PARKED_HORIZON_MS,
};
use crate::store::{StoreError, StoreResult};

static ORDERING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/ordering.lua")));

/// Heads a heal step looks at (HSCAN COUNT): small enough to keep one script call short.
const HEAL_PAGE: u32 = 200;

impl RedisStore {
    pub(super) async fn ordering_step(
        &self,
        stream: &str,
        group: &str,
        state: &OrderingState,
        step: &OrderStep,
    ) -> StoreResult<Ordered> {
        let mut invocation = ORDERING.key(stream);
        invocation.key(&state.heads).key(&state.held);
        let mode = match step {
            OrderStep::Read { .. } => "read",
            OrderStep::Ack { .. } => "ack",
            OrderStep::Release(_) => "release",
            OrderStep::Heal { .. } => "heal",
        };
        invocation
            .arg(mode)
            .arg(group)
            .arg(HELD_CONSUMER)
            .arg(PARKED_CONSUMER)
            .arg(PARKED_HORIZON_MS)
            .arg(ORDERING_KEY_FIELD);
        match step {
            OrderStep::Read { consumer, count } => {
                invocation.arg(consumer).arg((*count).max(1));
            }
            OrderStep::Ack { holder, ids } => {
                invocation.arg(holder.as_deref().unwrap_or(""));
                for id in ids {
                    invocation.arg(id.to_string());
                }
            }
            OrderStep::Release(ids) => {
                for id in ids {
                    invocation.arg(id.to_string());
                }
            }
            OrderStep::Heal { cursor } => {
                invocation.arg(cursor).arg(HEAL_PAGE);
            }
        }
        let reply: Value = self
            .run_script(
                &invocation,
                Ctx::group(stream, group),
                "EVALSHA ordering.lua",
            )
            .await?;
        parse_ordered(reply)
    }
}

fn parse_ordered(reply: Value) -> StoreResult<Ordered> {
    let mut parts = into_items(reply)?.into_iter();
    let (Some(held), Some(promoted), Some(cursor)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError::Unexpected("short ordering.lua reply".into()));
    };
    let read = match parts.next() {
        Some(entries) => into_items(entries)?
            .into_iter()
            .map(|entry| {
                let mut entry = into_items(entry)?.into_iter();
                match (entry.next(), entry.next()) {
                    (Some(id), Some(fields)) => Ok(Entry {
                        id: to_id(&id)?,
                        fields: parse_fields(fields)?,
                    }),
                    _ => Err(StoreError::Unexpected(
                        "short entry in ordering.lua reply".into(),
                    )),
                }
            })
            .collect::<StoreResult<Vec<_>>>()?,
        None => Vec::new(),
    };
    let acked = match parts.next() {
        Some(codes) => into_items(codes)?
            .iter()
            .map(|code| {
                to_opt_i64(code)
                    .ok_or_else(|| unexpected("ack outcome", code))
                    .and_then(ack_outcome)
            })
            .collect::<StoreResult<Vec<_>>>()?,
        None => Vec::new(),
    };
    let promoted = to_u64(&promoted).ok_or_else(|| unexpected("promoted count", &promoted))?;
    let cursor = to_text(&cursor).ok_or_else(|| unexpected("heal cursor", &cursor))?;
    let heal_from = match cursor.as_str() {
        "" => None,
        text => Some(
            text.parse()
                .map_err(|_| StoreError::Unexpected(format!("heal cursor `{text}`")))?,
        ),
    };
    Ok(Ordered {
        held: parse_ids(held)?,
        read,
        promoted,
        heal_from,
        acked,
    })
}
