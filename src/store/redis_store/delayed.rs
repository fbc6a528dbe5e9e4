//! Delayed delivery over Redis: one Lua script (`lua/delayed.lua`) for holding, moving,
//! listing and cancelling a stream's delayed messages, and plain sorted-set commands for the
//! registry of streams that have some.

use std::sync::LazyLock;

use redis::{Script, Value, cmd};

use super::RedisStore;
use super::errors::Ctx;
use super::replies::{into_items, parse_fields, parse_ids, to_text, to_u64, unexpected};
use crate::model::{DelayStep, Delayed, DelayedKeys, HeldMessage, ScheduleStep};
use crate::store::{StoreError, StoreResult};

static DELAYED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/delayed.lua")));

/// A score as Redis prints it (`1764612345678`, or `inf`), as ms.
fn score_ms(value: &Value) -> StoreResult<Option<u64>> {
    let text = to_text(value).ok_or_else(|| unexpected("score", value))?;
    if text.is_empty() || text.contains("inf") {
        return Ok(None);
    }
    text.parse::<f64>()
        .map(|ms| Some(ms as u64))
        .map_err(|_| StoreError::Unexpected(format!("score `{text}`")))
}

impl RedisStore {
    pub(super) async fn delayed_step(
        &self,
        stream: &str,
        keys: &DelayedKeys,
        step: &DelayStep,
    ) -> StoreResult<Delayed> {
        let mut invocation = DELAYED.key(stream);
        invocation.key(&keys.due).key(&keys.messages);
        match step {
            DelayStep::Hold { due_ms, messages } => {
                invocation.arg("hold").arg(due_ms);
                for (token, fields) in messages {
                    invocation.arg(token).arg(fields.len());
                    for field in fields {
                        invocation.arg(&field.name).arg(field.value.as_ref());
                    }
                }
            }
            DelayStep::Move { now_ms, limit } => {
                invocation.arg("move").arg(now_ms).arg(limit);
            }
            DelayStep::List { limit } => {
                invocation.arg("list").arg((*limit).max(1));
            }
            DelayStep::Cancel { tokens } => {
                invocation.arg("cancel").arg(tokens);
            }
        }
        let reply: Value = self
            .run_script(&invocation, Ctx::stream(stream), "EVALSHA delayed.lua")
            .await?;
        let mut parts = into_items(reply)?.into_iter();
        let (Some(first), Some(next)) = (parts.next(), parts.next()) else {
            return Err(StoreError::Unexpected("short delayed.lua reply".into()));
        };
        let mut outcome = Delayed {
            next_due_ms: score_ms(&next)?,
            ..Delayed::default()
        };
        match step {
            DelayStep::Move { .. } => outcome.moved = parse_ids(first)?,
            DelayStep::List { .. } => {
                for row in into_items(first)? {
                    let mut row = into_items(row)?.into_iter();
                    let (Some(token), Some(due), Some(fields)) =
                        (row.next(), row.next(), row.next())
                    else {
                        return Err(StoreError::Unexpected("short delayed row".into()));
                    };
                    outcome.listed.push(HeldMessage {
                        token: to_text(&token).ok_or_else(|| unexpected("token", &token))?,
                        due_ms: score_ms(&due)?.unwrap_or(u64::MAX),
                        fields: parse_fields(fields)?,
                    });
                }
            }
            DelayStep::Cancel { .. } => {
                outcome.cancelled =
                    to_u64(&first).ok_or_else(|| unexpected("cancelled", &first))?;
            }
            DelayStep::Hold { .. } => {}
        }
        Ok(outcome)
    }

    pub(super) async fn schedule_step(
        &self,
        registry: &str,
        step: &ScheduleStep,
    ) -> StoreResult<Vec<(String, u64)>> {
        let ctx = Ctx::stream(registry);
        match step {
            ScheduleStep::Note { stream, due_ms } => {
                let _: Value = self
                    .query(
                        cmd("ZADD").arg(registry).arg("LT").arg(due_ms).arg(stream),
                        ctx,
                    )
                    .await?;
                Ok(Vec::new())
            }
            ScheduleStep::Set { stream, due_ms } => {
                let score = due_ms.map_or_else(|| "+inf".to_owned(), |ms| ms.to_string());
                let _: Value = self
                    .query(cmd("ZADD").arg(registry).arg(score).arg(stream), ctx)
                    .await?;
                Ok(Vec::new())
            }
            ScheduleStep::Due { now_ms, limit } => {
                let rows: Vec<Value> = self
                    .query(
                        cmd("ZRANGEBYSCORE")
                            .arg(registry)
                            .arg("-inf")
                            .arg(now_ms)
                            .arg("WITHSCORES")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(limit),
                        ctx,
                    )
                    .await?;
                rows.chunks(2)
                    .map(|pair| match pair {
                        [stream, score] => Ok((
                            to_text(stream).ok_or_else(|| unexpected("stream", stream))?,
                            score_ms(score)?.unwrap_or(u64::MAX),
                        )),
                        _ => Err(StoreError::Unexpected("odd ZRANGEBYSCORE reply".into())),
                    })
                    .collect()
            }
        }
    }
}
