//! Retention over Redis: one Lua script (`lua/retention.lua`) per application of a stream's
//! policy, so that looking at the groups and trimming are one atomic step.

use std::sync::LazyLock;

use redis::Script;

use super::RedisStore;
use super::errors::Ctx;
use crate::model::{RetentionCut, Trimmed};
use crate::store::{StoreError, StoreResult};

static RETENTION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/retention.lua")));

impl RedisStore {
    pub(super) async fn apply_retention(
        &self,
        stream: &str,
        cut: &RetentionCut,
    ) -> StoreResult<Trimmed> {
        let mut invocation = RETENTION.key(stream);
        invocation
            .arg(if cut.acked { "1" } else { "0" })
            .arg(cut.older_than.map(|id| id.to_string()).unwrap_or_default())
            .arg(if cut.keep_pending { "1" } else { "0" })
            .arg(cut.max_len.map(|n| n.to_string()).unwrap_or_default());
        let counts: Vec<u64> = self
            .run_script(&invocation, Ctx::stream(stream), "EVALSHA retention.lua")
            .await?;
        match counts[..] {
            [acked, max_age, max_len] => Ok(Trimmed {
                acked,
                max_age,
                max_len,
            }),
            _ => Err(StoreError::Unexpected(format!(
                "retention.lua answered {counts:?}"
            ))),
        }
    }
}
