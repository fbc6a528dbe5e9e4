//! The twin of `ordering.lua`: ordered delivery's admit, ack, release and heal steps on a group of
//! the embedded store (see [`crate::store::Scripts::order`]).

use super::pending;
use super::state::{Group, Lease, Stream};
use crate::model::{
    AckOutcome, Entry, EntryId, HELD_CONSUMER, ORDERING_KEY_FIELD, OrderStep, Ordered,
    PARKED_CONSUMER, PARKED_HORIZON_MS,
};

/// Applies `step` to `group` of `stream` (which exists).
pub(super) fn order(stream: &mut Stream, group: &str, step: &OrderStep, now: u64) -> Ordered {
    let key_of = |stream: &Stream, id: &EntryId| {
        stream.entries.get(id).map(|fields| {
            fields
                .iter()
                .find(|f| f.name == ORDERING_KEY_FIELD)
                .map(|f| String::from_utf8_lossy(&f.value).into_owned())
        })
    };
    let mut outcome = Ordered::default();
    match step {
        OrderStep::Read { consumer, count } => {
            let read = stream.deliver_new(group, consumer, *count, false, now);
            let Some(g) = stream.groups.get_mut(group) else {
                return outcome;
            };
            g.touch(consumer, now);
            for entry in read {
                let Some(fields) = entry.fields else {
                    continue;
                };
                let key = fields
                    .iter()
                    .find(|f| f.name == ORDERING_KEY_FIELD)
                    .map(|f| String::from_utf8_lossy(&f.value).into_owned());
                match key {
                    Some(key) if admit(g, entry.id, &key, now, &mut outcome.promoted) => {
                        outcome.held.push(entry.id);
                    }
                    _ => outcome.read.push(Entry {
                        id: entry.id,
                        fields,
                    }),
                }
            }
        }
        OrderStep::Ack { ids, .. } | OrderStep::Release(ids) => {
            let holder = match step {
                OrderStep::Ack { holder, .. } => Some(holder.as_deref()),
                _ => None,
            };
            let keys: Vec<Option<Option<String>>> =
                ids.iter().map(|id| key_of(stream, id)).collect();
            let Some(g) = stream.groups.get_mut(group) else {
                return outcome;
            };
            for (id, key) in ids.iter().zip(keys) {
                // An ack releases only what it acknowledged; a release, everything it names.
                if let Some(holder) = holder {
                    let acked = pending::ack_confirmed(&mut g.pending, holder, *id);
                    outcome.acked.push(acked);
                    if acked != AckOutcome::Acked {
                        continue;
                    }
                }
                match key {
                    Some(Some(key)) => {
                        settle(g, &key, now, &mut outcome.promoted);
                    }
                    Some(None) => {}
                    None => outcome.heal_from = Some(0),
                }
            }
        }
        OrderStep::Heal { .. } => {
            let Some(g) = stream.groups.get_mut(group) else {
                return outcome;
            };
            // One page is everything here: the state is in memory.
            let keys: Vec<String> = g.ordering.heads.keys().cloned().collect();
            for key in keys {
                settle(g, &key, now, &mut outcome.promoted);
            }
        }
    }
    outcome
}

/// Admits one entry just read: `true` when it is held back behind its key's head.
fn admit(g: &mut Group, id: EntryId, key: &str, now: u64, promoted: &mut u64) -> bool {
    match settle(g, key, now, promoted) {
        Some(head) if head != id => {
            g.ordering.held.insert((key.to_owned(), id));
            if let Some(lease) = g.pending.get_mut(&id) {
                lease.consumer = HELD_CONSUMER.to_owned();
                lease.delivered_at = now;
                lease.count = 0;
            }
            g.touch(HELD_CONSUMER, now);
            true
        }
        _ => {
            g.ordering.heads.insert(key.to_owned(), id);
            false
        }
    }
}

/// Makes `key`'s head a message still pending, promoting the next held one (to the parked
/// consumer, due at once) while it is not; the head, `None` when the key has none.
fn settle(g: &mut Group, key: &str, now: u64, promoted: &mut u64) -> Option<EntryId> {
    let mut head = g.ordering.heads.get(key).copied();
    while let Some(id) = head {
        if g.pending.contains_key(&id) {
            break;
        }
        let next = g
            .ordering
            .held
            .range((key.to_owned(), EntryId::ZERO)..)
            .next()
            .filter(|(k, _)| k == key)
            .cloned();
        match next {
            Some(entry) => {
                g.ordering.held.remove(&entry);
                let id = entry.1;
                g.ordering.heads.insert(key.to_owned(), id);
                if let Some(lease) = g.pending.get_mut(&id)
                    && lease.consumer == HELD_CONSUMER
                {
                    *lease = Lease {
                        consumer: PARKED_CONSUMER.to_owned(),
                        delivered_at: now.saturating_sub(PARKED_HORIZON_MS),
                        count: lease.count,
                    };
                    g.touch(PARKED_CONSUMER, now);
                    *promoted += 1;
                }
                head = Some(id);
            }
            None => {
                g.ordering.heads.remove(key);
                head = None;
            }
        }
    }
    head
}
