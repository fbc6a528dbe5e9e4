//! The embedded store's append of one Produce request, with the twin of `produce.lua`: an
//! all-or-nothing request is checked before anything is written, and a message whose dedupe
//! key was seen within the window is answered with the first one's id instead of stored.

use std::collections::HashMap;

use super::state::{Stream, no_stream};
use crate::model::{Append, EntryId};
use crate::store::StoreResult;

/// Appends `request` (see the module docs).
pub(super) fn append(
    streams: &mut HashMap<String, Stream>,
    request: &Append,
    now: u64,
) -> StoreResult<Vec<EntryId>> {
    if request.require_existing_stream && !streams.contains_key(&request.stream) {
        return Err(no_stream(&request.stream));
    }
    let stream = streams.entry(request.stream.clone()).or_default();
    stream.dedupe.retain(|_, (_, until)| *until > now);
    let remembered = |stream: &Stream, key: &Option<String>| {
        key.as_ref()
            .filter(|_| request.dedupe.is_some())
            .and_then(|key| stream.dedupe.get(key))
            .map(|(id, _)| *id)
    };
    if request.atomic {
        // A dry run of the ids: the first failure fails the request before anything is written.
        let mut probe = Stream {
            last_id: stream.last_id,
            ..Stream::default()
        };
        let mut seen = Vec::new();
        for message in &request.messages {
            let duplicate = remembered(stream, &message.dedupe_key).is_some()
                || message
                    .dedupe_key
                    .as_ref()
                    .is_some_and(|k| seen.contains(&k));
            if let Some(key) = &message.dedupe_key {
                seen.push(key);
            }
            if !duplicate {
                probe.last_id = probe.next_id(message.id, &request.stream, now)?;
            }
        }
    }
    let mut ids = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        if let Some(id) = remembered(stream, &message.dedupe_key) {
            ids.push(id);
            continue;
        }
        let id = stream.next_id(message.id, &request.stream, now)?;
        stream.entries.insert(id, message.fields.clone());
        stream.last_id = id;
        stream.entries_added += 1;
        if let Some(policy) = &request.trim {
            stream.trim(policy);
        }
        if let (Some(key), Some(dedupe)) = (&message.dedupe_key, &request.dedupe) {
            stream
                .dedupe
                .insert(key.clone(), (id, now.saturating_add(dedupe.window_ms)));
        }
        ids.push(id);
    }
    Ok(ids)
}
