//! The twin of `delayed.lua` and of the registry's sorted set: the embedded store's delayed
//! messages (see [`crate::store::Scripts::delay`] and [`crate::store::Scripts::schedule`]).

use std::collections::{BTreeMap, HashMap};

use super::state::Stream;
use crate::model::{DelayStep, Delayed, EntryId, Field, HeldMessage, NewEntryId, ScheduleStep};
use crate::store::StoreResult;

/// Every stream's held messages, and every registry.
#[derive(Default)]
pub(super) struct DelayedBook {
    /// Stream → (due ms, token) → fields.
    held: HashMap<String, BTreeMap<(u64, String), Vec<Field>>>,
    /// Registry → stream → earliest due ms (`u64::MAX`: nothing held).
    registries: HashMap<String, HashMap<String, u64>>,
}

impl DelayedBook {
    /// Applies `step` to `stream`'s held messages; a move appends to `streams`, with ids from
    /// the store's clock `now`.
    pub(super) fn delay(
        &mut self,
        streams: &mut HashMap<String, Stream>,
        stream: &str,
        step: &DelayStep,
        now: u64,
    ) -> StoreResult<Delayed> {
        let held = self.held.entry(stream.to_owned()).or_default();
        let mut outcome = Delayed::default();
        match step {
            DelayStep::Hold { due_ms, messages } => {
                for (token, fields) in messages {
                    held.insert((*due_ms, token.clone()), fields.clone());
                }
            }
            DelayStep::Move { now_ms, limit } => {
                let due: Vec<(u64, String)> = held
                    .keys()
                    .take_while(|(at, _)| at <= now_ms)
                    .take(*limit)
                    .cloned()
                    .collect();
                for key in due {
                    let Some(fields) = held.remove(&key) else {
                        continue;
                    };
                    let target = streams.entry(stream.to_owned()).or_default();
                    let id: EntryId = target.next_id(NewEntryId::Auto, stream, now)?;
                    target.entries.insert(id, fields);
                    target.last_id = id;
                    target.entries_added += 1;
                    outcome.moved.push(id);
                }
            }
            DelayStep::List { limit } => {
                outcome.listed = held
                    .iter()
                    .take(*limit)
                    .map(|((due_ms, token), fields)| HeldMessage {
                        token: token.clone(),
                        due_ms: *due_ms,
                        fields: fields.clone(),
                    })
                    .collect();
            }
            DelayStep::Cancel { tokens } => {
                let before = held.len();
                held.retain(|(_, token), _| !tokens.contains(token));
                outcome.cancelled = (before - held.len()) as u64;
            }
        }
        outcome.next_due_ms = held.keys().next().map(|(at, _)| *at);
        Ok(outcome)
    }

    /// Applies `step` to `registry`.
    pub(super) fn schedule(&mut self, registry: &str, step: &ScheduleStep) -> Vec<(String, u64)> {
        let streams = self.registries.entry(registry.to_owned()).or_default();
        match step {
            ScheduleStep::Note { stream, due_ms } => {
                let at = streams.entry(stream.clone()).or_insert(*due_ms);
                *at = (*at).min(*due_ms);
                Vec::new()
            }
            ScheduleStep::Set { stream, due_ms } => {
                streams.insert(stream.clone(), due_ms.unwrap_or(u64::MAX));
                Vec::new()
            }
            ScheduleStep::Due { now_ms, limit } => {
                let mut due: Vec<(String, u64)> = streams
                    .iter()
                    .filter(|(_, at)| **at <= *now_ms)
                    .map(|(stream, at)| (stream.clone(), *at))
                    .collect();
                due.sort_by_key(|(_, at)| *at);
                due.truncate(*limit);
                due
            }
        }
    }
}
