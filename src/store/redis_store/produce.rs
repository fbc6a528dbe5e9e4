//! Produce requests that are all-or-nothing or deduplicated: one Lua script per request
//! (`lua/produce.lua`), kept in order with the plain requests around them, which still travel
//! in one pipeline.

use std::sync::LazyLock;

use redis::Script;

use super::RedisStore;
use super::errors::Ctx;
use super::replies::{parse_ids, trim_args};
use crate::model::{Append, EntryId, NewEntryId};
use crate::store::StoreResult;

static PRODUCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/produce.lua")));

impl RedisStore {
    /// Appends `requests` in order: runs of plain requests pipelined together, each scripted
    /// one ([`Append::is_scripted`]) by its script between them.
    pub(super) async fn append_in_order(
        &self,
        requests: &[Append],
    ) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
        if !requests.iter().any(Append::is_scripted) {
            return self.append_pipelined(requests).await;
        }
        let mut answers = Vec::with_capacity(requests.len());
        for run in requests.chunk_by(|a, b| !a.is_scripted() && !b.is_scripted()) {
            if run[0].is_scripted() {
                let answer = self.append_scripted(&run[0]).await;
                if let Ok(ids) = &answer {
                    self.wakeups.appended(&run[0].stream, ids);
                }
                answers.push(answer);
            } else {
                answers.extend(self.append_pipelined(run).await?);
            }
        }
        Ok(answers)
    }

    async fn append_scripted(&self, request: &Append) -> StoreResult<Vec<EntryId>> {
        let mut invocation = PRODUCE.key(&request.stream);
        let (prefix, window) = match &request.dedupe {
            Some(dedupe) => (dedupe.prefix.as_str(), dedupe.window_ms.max(1)),
            None => ("", 1),
        };
        let trim = request.trim.as_ref().map(trim_args).unwrap_or_default();
        invocation
            .arg(if request.atomic { "1" } else { "0" })
            .arg(if request.require_existing_stream {
                "1"
            } else {
                "0"
            })
            .arg(prefix)
            .arg(window)
            .arg(trim.len())
            .arg(&trim);
        for message in &request.messages {
            let id = match message.id {
                NewEntryId::Auto => "*".to_owned(),
                other => other.to_string(),
            };
            invocation
                .arg(id)
                .arg(message.dedupe_key.as_deref().unwrap_or(""))
                .arg(message.fields.len());
            for field in &message.fields {
                invocation.arg(&field.name).arg(field.value.as_ref());
            }
        }
        let reply = self
            .run_script(
                &invocation,
                Ctx::stream(&request.stream),
                "EVALSHA produce.lua",
            )
            .await?;
        parse_ids(reply)
    }
}
