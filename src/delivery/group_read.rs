//! A group member's batch, steps 1–4 of [`member`](super::member)'s order, and what each batch
//! applies around them: the stored policy when it changed, the subscription's filter, the
//! in-flight limit shared over several streams, and the book of leases rebuilt from Redis.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::DeliveryCore;
use super::leases::Leases;
use super::membership::{GroupMembership, OwnSettings};
use super::reading::{self, Read};
use crate::error::BrokerResult;
use crate::model::{Delivery, EntryId, SubscriptionPolicy, millis};
use crate::store::{GroupCursor, Store};

/// How a replay of the consumer's own pending entries paces itself: the one difference between
/// a stream of batches and a call that returns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Subscribe: pages are read until one has something to deliver (deleted entries yield
    /// nothing), and once the replay is over the same batch goes on to new messages.
    Continuous,
    /// Fetch: a batch that replays is that one page, even empty; new messages come with the
    /// next call, which the returned positions point at.
    OnePage,
}

/// What a group member's batch is read with.
pub(super) struct GroupRead<'a, S> {
    pub(super) core: &'a DeliveryCore<S>,
    pub(super) membership: &'a GroupMembership,
    pub(super) leases: Option<&'a Leases>,
    pub(super) replay: Replay,
}

impl<S: Store> GroupRead<'_, S> {
    /// Steps 1–4 of the module docs for a group member; `None` when it is at its in-flight limit.
    pub(super) async fn next_batch(
        &self,
        cursors: &mut [(String, GroupCursor)],
        mut room: usize,
        sweep_only: bool,
    ) -> BrokerResult<Option<Read>> {
        let Self {
            core,
            membership,
            leases,
            replay,
        } = *self;
        let store = core.store();
        // 1. The consumer's own pending entries, one page per batch. A page made only of deleted
        // entries yields nothing: read on rather than wait.
        while cursors
            .iter()
            .any(|(_, c)| matches!(c, GroupCursor::PendingAfter(_)))
        {
            let replaying: Vec<(String, GroupCursor)> = cursors
                .iter()
                .filter(|(_, c)| matches!(c, GroupCursor::PendingAfter(_)))
                .cloned()
                .collect();
            let page = reading::read_group(store, membership, &replaying, room).await?;
            // A replay continues after its last id, and is over once a read returns nothing for
            // that stream.
            for (stream, cursor) in cursors.iter_mut() {
                if let GroupCursor::PendingAfter(_) = cursor {
                    *cursor = match page.last_ids.get(stream) {
                        Some(last) => GroupCursor::PendingAfter(*last),
                        None => GroupCursor::New,
                    };
                }
            }
            if !page.deliveries.is_empty() || replay == Replay::OnePage {
                // Their leases started again with this read.
                if let Some(leases) = leases {
                    leases.add(
                        page.deliveries
                            .iter()
                            .map(|d| (d.stream.as_str(), d.entry.id)),
                    );
                }
                return Ok(Some(Read {
                    deliveries: page.deliveries,
                    short: false,
                }));
            }
        }
        // 2. Flow control.
        if let Some(leases) = leases {
            let free = match leases.room() {
                Some(free) => free,
                None => {
                    rebuild(core, membership, cursors, leases).await?;
                    leases.room().unwrap_or(0)
                }
            };
            // Zero also while a member that filled its window waits for a quarter of it.
            if free == 0 {
                return Ok(None);
            }
            room = room.min(usize::try_from(free).unwrap_or(usize::MAX));
        }
        let reading_new: Vec<String> = cursors.iter().map(|(s, _)| s.clone()).collect();
        let streams = reading_new.len();
        // 3. Redeliveries before new messages (never during the replay above: its entries would come
        // back twice, once swept and once replayed).
        let redelivered = if membership.no_ack {
            Vec::new()
        } else {
            core.redelivery()
                .sweep_due(membership, &reading_new, room)
                .await?
        };
        // Redeliveries are never all there is: new entries were not read.
        let mut read = Read {
            deliveries: redelivered,
            short: false,
        };
        // 4. New entries.
        if read.deliveries.is_empty() && !sweep_only {
            let (chosen, count) = within_room(reading_new, room, leases.is_some());
            room = count;
            let every_stream = chosen.len() == streams;
            let new: Vec<_> = chosen.into_iter().map(|s| (s, GroupCursor::New)).collect();
            read = read_new(core, membership, &new, room).await?;
            // Short only if no stream was left out of the read.
            read.short &= every_stream;
        }
        if let Some(leases) = leases {
            leases.add(
                read.deliveries
                    .iter()
                    .map(|d| (d.stream.as_str(), d.entry.id)),
            );
        }
        Ok(Some(read))
    }
}

/// Step 4: new entries; for an ordered subscription, those that must wait behind an earlier
/// message of their ordering key are held back (see [`ordering`](super::ordering)), and while a
/// whole read was held back, the next one is read at once (more may be waiting behind it). An
/// ordered read is never called short: what it held back may be released by an ack.
async fn read_new<S: Store>(
    core: &DeliveryCore<S>,
    membership: &GroupMembership,
    new: &[(String, GroupCursor)],
    room: usize,
) -> BrokerResult<Read> {
    if !membership.ordered || membership.no_ack {
        let batch = reading::read_group(core.store(), membership, new, room).await?;
        return Ok(Read {
            deliveries: batch.deliveries,
            short: batch.short,
        });
    }
    let streams: Vec<String> = new.iter().map(|(s, _)| s.clone()).collect();
    loop {
        let (kept, held) = core
            .redelivery()
            .read_ordered(membership, &streams, room)
            .await?;
        // Held back entirely: read on, more may be waiting behind them.
        if !kept.is_empty() || held == 0 {
            return Ok(Read {
                deliveries: kept,
                short: false,
            });
        }
    }
}

/// Applies the subscription's filter: what does not match is acknowledged for the group
/// without delivery (and counted). `None` when a non-empty batch was filtered out entirely.
pub(super) async fn filter_out<S: Store>(
    core: &DeliveryCore<S>,
    membership: &GroupMembership,
    deliveries: Vec<Delivery>,
) -> BrokerResult<Option<Vec<Delivery>>> {
    let Some(filter) = &membership.filter else {
        return Ok(Some(deliveries));
    };
    if deliveries.is_empty() {
        return Ok(Some(deliveries));
    }
    let (kept, dropped): (Vec<Delivery>, Vec<Delivery>) = deliveries
        .into_iter()
        .partition(|d| filter.matches(&d.entry.fields));
    for run in dropped.chunk_by(|a, b| a.stream == b.stream) {
        let stream = &run[0].stream;
        crate::ops::metrics::filtered(stream, run.len());
        if !membership.no_ack {
            let ids: Vec<EntryId> = run.iter().map(|d| d.entry.id).collect();
            core.ack(stream, &membership.group, &ids).await?;
        }
    }
    Ok((!kept.is_empty()).then_some(kept))
}

/// The streams a read of new entries covers and its per-stream count. XREADGROUP's COUNT is
/// per stream, so a flow-controlled member reading several streams would get up to `room`
/// from each: the room is shared out instead, over at most `room` streams starting at a random
/// one (so that none is starved when there are more streams than room).
fn within_room(streams: Vec<String>, room: usize, limited: bool) -> (Vec<String>, usize) {
    let n = streams.len();
    if !limited || n <= 1 || room == 0 {
        return (streams, room);
    }
    let covered = n.min(room);
    let first = rand::rng().random_range(0..n);
    let chosen = streams
        .into_iter()
        .cycle()
        .skip(first)
        .take(covered)
        .collect();
    (chosen, room / covered)
}

/// Applies the group's stored policy when it changed since the member last looked (created,
/// updated, paused, resumed or deleted through any broker instance): within
/// [`POLICY_TTL`](super::POLICY_TTL). The update wins over what the member's request named.
/// `true` when the subscription was just resumed.
pub(super) async fn refresh_policy<S: Store>(
    core: &DeliveryCore<S>,
    streams: &[String],
    membership: &mut GroupMembership,
    stored: &mut Option<Arc<SubscriptionPolicy>>,
    own: &OwnSettings,
) -> BrokerResult<bool> {
    let current = core
        .policies()
        .for_member(streams, &membership.group)
        .await?;
    if current == *stored {
        return Ok(false);
    }
    let paused = membership.paused;
    membership.apply(current.as_deref(), own, false)?;
    if membership.paused != paused {
        tracing::info!(
            group = %membership.group,
            paused = membership.paused,
            "the subscription was {}",
            if membership.paused { "paused" } else { "resumed" }
        );
    } else {
        tracing::info!(group = %membership.group, "the stored subscription changed; its policy applies from now on");
    }
    *stored = current;
    Ok(paused && !membership.paused)
}

/// Counts the member's live leases from Redis: at the start, and whenever its book may be out
/// of date (acks through another broker instance). One script call per stream, rarely.
async fn rebuild<S: Store>(
    core: &DeliveryCore<S>,
    membership: &GroupMembership,
    cursors: &[(String, GroupCursor)],
    leases: &Leases,
) -> BrokerResult<()> {
    let lease_ms = millis(membership.delivery.ack_deadline);
    let mut held = Vec::new();
    for (stream, _) in cursors {
        let left = leases.limit().saturating_sub(held.len() as u64);
        if left == 0 {
            break;
        }
        let live = core
            .store()
            .leases(
                stream,
                &membership.group,
                &membership.consumer,
                lease_ms,
                left,
            )
            .await?;
        held.extend(
            live.into_iter()
                .map(|(id, idle)| (stream.clone(), id, Duration::from_millis(idle))),
        );
    }
    leases.replace(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::within_room;

    #[test]
    fn a_limited_read_of_several_streams_shares_its_room_out() {
        let streams: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // Plenty of room: every stream, a third each.
        let (chosen, count) = within_room(streams.clone(), 9, true);
        assert_eq!((chosen.len(), count), (3, 3));
        // Less room than streams: as many streams as room, one each.
        for _ in 0..20 {
            let (chosen, count) = within_room(streams.clone(), 2, true);
            assert_eq!((chosen.len(), count), (2, 1));
            assert_ne!(chosen[0], chosen[1]);
        }
        // Never more than the room in all.
        for room in 1..12 {
            let (chosen, count) = within_room(streams.clone(), room, true);
            assert!(chosen.len() * count <= room, "{room}");
        }
        // Without a limit nothing changes.
        assert_eq!(within_room(streams.clone(), 2, false), (streams, 2));
    }
}
