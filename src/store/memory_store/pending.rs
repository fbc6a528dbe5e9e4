//! The Rust twins of the Lua scripts (`sweep`, `move_pending`, `release_consumer`) and of
//! XCLAIM/XAUTOCLAIM: what happens to a group's pending entries, on the store's state, under its
//! one lock (so each is atomic, as the scripts are on Redis).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::state::{Lease, Stream, Transfer, no_group, transfer};
use crate::model::{
    AckOutcome, AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, Entry, EntryId, Field,
    HELD_CONSUMER, IdleAfterMove, NewEntryId, PARKED_CONSUMER, PARKED_HORIZON_MS, PendingMove,
    RangeBound, SweepRequest, Swept, millis,
};
use crate::store::{Released, StoreError, StoreResult};

/// The twin of XCLAIM: moves `options.ids` to `consumer` (see [`Transfer`]).
pub(super) fn claim(
    s: &mut Stream,
    stream: &str,
    group: &str,
    consumer: &str,
    options: &ClaimOptions,
    now: u64,
) -> StoreResult<Claimed> {
    let mut delivered_at = match (options.idle_ms, options.time_ms) {
        (Some(idle), _) => now.saturating_sub(idle),
        (None, Some(time)) => time,
        (None, None) => now,
    };
    if delivered_at > now {
        delivered_at = now;
    }
    let how = Transfer {
        consumer,
        min_idle_ms: options.min_idle_ms,
        delivered_at,
        count: options.retry_count,
        bump: !options.just_id,
    };
    s.group(stream, group)?.touch(consumer, now);
    let mut claimed = Claimed::default();
    for id in &options.ids {
        if options.force && s.entries.contains_key(id) {
            let g = s.group(stream, group)?;
            g.pending.entry(*id).or_insert(Lease {
                consumer: consumer.to_owned(),
                delivered_at,
                count: 0,
            });
        }
        if let Some(fields) = transfer(s, group, *id, &how, now) {
            claimed.ids.push(*id);
            if !options.just_id {
                claimed.entries.push(Entry {
                    id: *id,
                    fields: fields.unwrap_or_default(),
                });
            }
        }
    }
    Ok(claimed)
}

/// The twin of XAUTOCLAIM: claims idle entries from `options.start`, dropping deleted ones.
pub(super) fn auto_claim(
    s: &mut Stream,
    stream: &str,
    group: &str,
    consumer: &str,
    options: &AutoClaimOptions,
    now: u64,
) -> StoreResult<AutoClaimed> {
    let AutoClaimOptions {
        min_idle_ms,
        start,
        count,
        just_id,
    } = *options;
    s.group(stream, group)?.touch(consumer, now);
    let candidates: Vec<EntryId> = s.groups[group]
        .pending
        .range(start..)
        .map(|(id, _)| *id)
        .collect();
    let how = Transfer {
        consumer,
        min_idle_ms,
        delivered_at: now,
        count: None,
        bump: !just_id,
    };
    let mut result = AutoClaimed::default();
    let mut attempts = count.saturating_mul(10);
    let mut left = count;
    let mut walked = 0;
    for id in &candidates {
        if attempts == 0 || left == 0 {
            break;
        }
        attempts -= 1;
        walked += 1;
        if !s.entries.contains_key(id) {
            s.group(stream, group)?.pending.remove(id);
            result.deleted_ids.push(*id);
            continue;
        }
        if let Some(fields) = transfer(s, group, *id, &how, now) {
            left -= 1;
            result.claimed.ids.push(*id);
            if !just_id {
                result.claimed.entries.push(Entry {
                    id: *id,
                    fields: fields.unwrap_or_default(),
                });
            }
        }
    }
    result.next_start = candidates.get(walked).copied().unwrap_or_default();
    Ok(result)
}

/// The twin of `move_pending.lua`: nack, extend.
pub(super) fn move_pending(
    s: &mut Stream,
    stream: &str,
    group: &str,
    ids: &[EntryId],
    movement: &PendingMove,
    now: u64,
) -> StoreResult<Vec<EntryId>> {
    let mut moved = Vec::new();
    for id in ids {
        let exists = s.entries.contains_key(id);
        let g = s.group(stream, group)?;
        let Some(lease) = g.pending.get_mut(id) else {
            continue;
        };
        if movement
            .holder
            .as_ref()
            .is_some_and(|h| *h != lease.consumer)
        {
            continue;
        }
        if !exists {
            g.pending.remove(id);
            continue;
        }
        let idle = match movement.idle {
            IdleAfterMove::Set(ms) => ms,
            IdleAfterMove::Backoff(backoff) => movement
                .horizon_ms
                .saturating_sub(backoff.after_ms(lease.count)),
        };
        lease.consumer = movement.to.clone();
        lease.delivered_at = now.saturating_sub(idle);
        g.touch(&movement.to, now);
        moved.push(*id);
    }
    Ok(moved)
}

/// The twin of `release_consumer.lua`: hand back, then optionally delete.
pub(super) fn release_consumer(
    s: &mut Stream,
    stream: &str,
    group: &str,
    consumer: &str,
    only_if_idle_ms: Option<u64>,
    delete: bool,
    now: u64,
) -> StoreResult<Released> {
    if let Some(min_idle) = only_if_idle_ms {
        let seen = s.group(stream, group)?.consumers.get(consumer).copied();
        match seen {
            Some(seen) if now.saturating_sub(seen) >= min_idle => {}
            _ => return Ok(Released::default()),
        }
    }
    let held: Vec<EntryId> = s.groups[group]
        .pending
        .iter()
        .filter(|(_, l)| l.consumer == consumer)
        .map(|(id, _)| *id)
        .collect();
    let mut released = Released::default();
    for id in held {
        let exists = s.entries.contains_key(&id);
        let g = s.group(stream, group)?;
        if !exists {
            g.pending.remove(&id);
            released.lost += 1;
            continue;
        }
        if let Some(lease) = g.pending.get_mut(&id) {
            lease.consumer = PARKED_CONSUMER.to_owned();
            lease.delivered_at = now.saturating_sub(PARKED_HORIZON_MS);
            released.handed_back += 1;
        }
    }
    let g = s.group(stream, group)?;
    if released.handed_back > 0 {
        g.touch(PARKED_CONSUMER, now);
    }
    if delete {
        g.consumers.remove(consumer);
        released.deleted = true;
    }
    Ok(released)
}

/// The twin of `sweep.lua`: one step of a group's redelivery sweep (see [`crate::store::Scripts::sweep`]).
pub(super) fn sweep(
    streams: &mut HashMap<String, Stream>,
    stream: &str,
    group: &str,
    consumer: &str,
    request: &SweepRequest,
    now: u64,
) -> StoreResult<Swept> {
    let policy = &request.policy;
    let deadline_ms = millis(policy.ack_deadline);
    if !streams
        .get(stream)
        .is_some_and(|s| s.groups.contains_key(group))
    {
        return Err(no_group(stream, group));
    }
    let min_idle = deadline_ms.min(PARKED_HORIZON_MS);
    // The rows XPENDING IDLE would return: (id, owner, idle, count).
    let rows: Vec<(EntryId, String, u64, u64)> = {
        let g = &streams[stream].groups[group];
        let from = match request.cursor {
            RangeBound::Unbounded => Bound::Unbounded,
            RangeBound::Inclusive(id) => Bound::Included(id),
            RangeBound::Exclusive(id) => Bound::Excluded(id),
        };
        g.pending
            .range((from, Bound::Unbounded))
            .map(|(id, l)| {
                (
                    *id,
                    l.consumer.clone(),
                    now.saturating_sub(l.delivered_at),
                    l.count,
                )
            })
            .filter(|(_, _, idle, _)| *idle >= min_idle)
            .take(request.scan.max(1))
            .collect()
    };
    let mut swept = Swept {
        claimed: Vec::new(),
        dead_lettered: Vec::new(),
        lost: Vec::new(),
        next_cursor: RangeBound::Unbounded,
    };
    let mut dead_letters = Vec::new();
    {
        let s = streams.get_mut(stream).unwrap_or_else(|| unreachable!());
        for (id, owner, idle, count) in &rows {
            if swept.claimed.len() >= request.claim.max(1) {
                swept.next_cursor = RangeBound::Inclusive(*id);
                break;
            }
            let parked = owner == PARKED_CONSUMER;
            let due = if owner == HELD_CONSUMER {
                false
            } else if parked {
                *idle >= PARKED_HORIZON_MS
            } else {
                *idle >= deadline_ms + policy.backoff.after_ms(*count)
            };
            if !due {
                continue;
            }
            let Some(fields) = s.entries.get(id).cloned() else {
                s.group(stream, group)?.pending.remove(id);
                swept.lost.push(*id);
                continue;
            };
            if policy.max_deliveries > 0 && *count >= policy.max_deliveries {
                let why = if parked {
                    "nacked or given back"
                } else {
                    "not acknowledged within the ack deadline"
                };
                let reason = format!(
                    "delivered {count} times (max_deliveries {}); last delivery {why}",
                    policy.max_deliveries
                );
                let mut letter: Vec<Field> = [
                    ("dlq.stream", request.stream_label.clone()),
                    ("dlq.id", id.to_string()),
                    ("dlq.group", group.to_owned()),
                    ("dlq.delivery_count", count.to_string()),
                    ("dlq.reason", reason),
                ]
                .into_iter()
                .map(|(name, value)| Field {
                    name: name.to_owned(),
                    value: value.into(),
                })
                .collect();
                letter.extend(fields);
                dead_letters.push(letter);
                s.group(stream, group)?.pending.remove(id);
                swept.dead_lettered.push(*id);
                continue;
            }
            let lease = s
                .group(stream, group)?
                .pending
                .get_mut(id)
                .unwrap_or_else(|| unreachable!());
            lease.consumer = consumer.to_owned();
            lease.delivered_at = now;
            lease.count += 1;
            swept.claimed.push((Entry { id: *id, fields }, count + 1));
        }
        if swept.next_cursor == RangeBound::Unbounded
            && rows.len() == request.scan.max(1)
            && let Some((last, ..)) = rows.last()
        {
            swept.next_cursor = RangeBound::Exclusive(*last);
        }
        if !swept.claimed.is_empty() {
            s.group(stream, group)?.touch(consumer, now);
        }
    }
    if !dead_letters.is_empty() {
        let dlq = streams
            .entry(request.dead_letter_stream.clone())
            .or_default();
        for letter in dead_letters {
            let id = dlq.next_id(NewEntryId::Auto, &request.dead_letter_stream, now)?;
            dlq.entries.insert(id, letter);
            dlq.last_id = id;
            dlq.entries_added += 1;
        }
    }
    Ok(swept)
}

/// The twin of `replay_dead_letter.lua`: moves one dead letter back to `origin` (named
/// `origin_label` in the letter) as a new entry; `None` when it is no longer there.
pub(super) fn replay_dead_letter(
    streams: &mut HashMap<String, Stream>,
    dead_letter_stream: &str,
    id: EntryId,
    origin: &str,
    origin_label: &str,
    now: u64,
) -> StoreResult<Option<EntryId>> {
    let Some(fields) = streams
        .get(dead_letter_stream)
        .and_then(|s| s.entries.get(&id))
        .cloned()
    else {
        return Ok(None);
    };
    let is_letter = fields
        .first()
        .is_some_and(|f| f.name == "dlq.stream" && f.value.as_ref() == origin_label.as_bytes())
        && fields.get(4).is_some_and(|f| f.name == "dlq.reason");
    if !is_letter {
        return Err(StoreError::Rejected(format!(
            "entry {id} is not a dead letter of {origin_label}"
        )));
    }
    let target = streams.entry(origin.to_owned()).or_default();
    let new_id = target.next_id(NewEntryId::Auto, origin, now)?;
    target.entries.insert(new_id, fields[5..].to_vec());
    target.last_id = new_id;
    target.entries_added += 1;
    if let Some(dlq) = streams.get_mut(dead_letter_stream)
        && dlq.entries.remove(&id).is_some()
    {
        dlq.max_deleted_id = dlq.max_deleted_id.max(id);
    }
    Ok(Some(new_id))
}

/// The Rust twin of `ack_held.lua` (with a holder) and `ack_each.lua` (without) for one id.
pub(super) fn ack_confirmed(
    pending: &mut BTreeMap<EntryId, Lease>,
    holder: Option<&str>,
    id: EntryId,
) -> AckOutcome {
    match pending.get(&id) {
        None => AckOutcome::NotPending,
        Some(lease) if holder.is_some_and(|h| lease.consumer != h) => AckOutcome::HeldByOther,
        Some(_) => {
            pending.remove(&id);
            AckOutcome::Acked
        }
    }
}
