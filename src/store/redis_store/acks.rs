//! Acknowledgements with per-id outcomes (a script each: with a holder, only what it holds),
//! for the confirmations of Consume and StreamingPull.

use std::sync::LazyLock;

use redis::Script;

use super::RedisStore;
use super::errors::Ctx;
use super::replies::ack_outcome;
use crate::model::{AckOutcome, EntryId};
use crate::store::StoreResult;

static ACK_HELD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/ack_held.lua")));

static ACK_EACH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/ack_each.lua")));

impl RedisStore {
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
