//! A member: one consumer of a group, or one tail reader, with its read position. Its
//! [`Member::next_batch`] is the one place that decides what a consuming call delivers next, in
//! one order for every transport:
//! 1. the consumer's own pending entries (a reconnect under the same name, or what a crashed
//!    broker could not hand back), whatever its in-flight limit: they are already counted in it,
//!    and are the only way a member that came back at its limit ever gets under it again;
//! 2. the in-flight limit (flow control), from the member's book of leases;
//! 3. the group's messages due for redelivery, when this broker's sweep of the group is due;
//! 4. new entries.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::DeliveryCore;
use super::leases::Leases;
use super::membership::{GroupMembership, OwnSettings};
use super::reading;
use crate::error::{BrokerError, BrokerResult};
use crate::model::{Delivery, EntryId, StartId, SubscriptionPolicy, millis};
use crate::store::{GroupCursor, Store, StoreError, StreamWatch};

/// How a member reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// XREAD from a start position per stream (same order as the streams).
    Tail(Vec<StartId>),
    /// XREADGROUP as a group member.
    Group {
        /// Who reads, and the group's delivery policy.
        membership: GroupMembership,
        /// Per stream: `New` (`>`), or this consumer's pending entries after an id (its own
        /// replay; a subscription starts every stream at `PendingAfter(0)`).
        cursors: Vec<GroupCursor>,
    },
}

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

/// What a consuming call reads: streams (topics are expanded by the core) and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// Streams or topics, no duplicates.
    pub streams: Vec<String>,
    /// Tail or group, with per-stream positions.
    pub reading: Reading,
    /// How a replay of pending entries is paced.
    pub replay: Replay,
}

/// What one [`Member::next_batch`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Messages to hand over, in order.
    Messages(Vec<Delivery>),
    /// Nothing to deliver now: wait for a wake-up.
    Empty,
    /// The member holds its `max_in_flight` messages: wait for acks ([`Member::wait_for_room`]).
    AtLimit,
}

/// Where a stream's reading continues after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After this id (tail mode, or a pending replay in progress).
    After(EntryId),
    /// `>`: new messages (group mode).
    New,
}

/// A member at its in-flight limit looks again this often even without an ack through this
/// broker (acks through other instances, or deadlines expiring, free room too); the book of
/// leases is then rebuilt from Redis.
const AT_LIMIT_RECHECK: Duration = Duration::from_millis(500);

enum Position {
    Tail(Vec<(String, EntryId)>),
    Group {
        membership: GroupMembership,
        cursors: Vec<(String, GroupCursor)>,
        /// Flow control: present when the member has an in-flight limit.
        leases: Option<Leases>,
        /// The stored subscription applied, and what applies without one.
        stored: Option<Arc<SubscriptionPolicy>>,
        own: Box<OwnSettings>,
    },
}

/// One reader of streams, created by [`DeliveryCore::join`].
pub struct Member<S> {
    core: DeliveryCore<S>,
    streams: Vec<String>,
    position: Position,
    replay: Replay,
}

impl<S: Store> Member<S> {
    /// Prepares the group (creates it where asked, or checks it exists) or resolves the tail
    /// start positions, so that a bad request fails before anything is delivered.
    pub(super) async fn start(core: DeliveryCore<S>, spec: MemberSpec) -> BrokerResult<Self> {
        let store = core.store();
        let position = match spec.reading {
            Reading::Tail(starts) => {
                Position::Tail(reading::resolve_starts(store, &spec.streams, &starts).await?)
            }
            Reading::Group {
                mut membership,
                cursors,
            } => {
                let own = Box::new(membership.own_settings());
                let stored = core
                    .policies()
                    .for_member(&spec.streams, &membership.group)
                    .await?;
                membership.apply(stored.as_deref(), &own, true)?;
                reading::prepare_group(store, &spec.streams, &membership).await?;
                let leases = (!membership.no_ack && membership.max_in_flight > 0).then(|| {
                    core.books().open(
                        &spec.streams,
                        &membership.group,
                        membership.max_in_flight,
                        membership.delivery.ack_deadline,
                    )
                });
                Position::Group {
                    cursors: spec.streams.iter().cloned().zip(cursors).collect(),
                    membership,
                    leases,
                    stored,
                    own,
                }
            }
        };
        Ok(Self {
            core,
            streams: spec.streams,
            position,
            replay: spec.replay,
        })
    }

    /// The streams read (topics replaced by their partitions).
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    /// The group and its membership, for a group member that acknowledges (not NOACK).
    pub fn membership(&self) -> Option<&GroupMembership> {
        match &self.position {
            Position::Group { membership, .. } if !membership.no_ack => Some(membership),
            _ => None,
        }
    }

    /// The group read as, NOACK or not: group members are woken one at a time.
    pub fn group(&self) -> Option<&str> {
        match &self.position {
            Position::Group { membership, .. } => Some(&membership.group),
            Position::Tail(_) => None,
        }
    }

    /// The consumer name; empty for a tail reader.
    pub fn consumer(&self) -> &str {
        match &self.position {
            Position::Group { membership, .. } => &membership.consumer,
            Position::Tail(_) => "",
        }
    }

    /// A wake-up handle for new entries on the member's streams.
    pub fn watch(&self) -> StreamWatch {
        self.core.store().watch(&self.streams, self.group())
    }

    /// Whether waiting can bring anything: not for a group read that only replays pending
    /// entries (nothing new can show up there).
    pub fn can_wait(&self) -> bool {
        match &self.position {
            Position::Tail(_) => true,
            Position::Group { cursors, .. } => cursors.iter().any(|(_, c)| *c == GroupCursor::New),
        }
    }

    /// The next batch, at most `room` messages, in the order of the module docs. With
    /// `sweep_only`, only redeliveries: the member woke for the group's sweep, not because
    /// anything announced new entries, so reading new ones would cost Redis for nothing.
    pub async fn next_batch(&mut self, room: usize, sweep_only: bool) -> BrokerResult<Batch> {
        let deliveries = match &mut self.position {
            Position::Tail(cursors) => {
                if sweep_only {
                    return Ok(Batch::Empty);
                }
                reading::read_tail(self.core.store(), cursors, room).await?
            }
            Position::Group {
                membership,
                cursors,
                leases,
                stored,
                own,
            } => {
                let resumed =
                    refresh_policy(&self.core, &self.streams, membership, stored, own).await?;
                if membership.paused {
                    return Ok(Batch::Empty);
                }
                // Entries produced while paused announced nothing to this member: read them
                // now, even on a wake-up that was only for the sweep.
                let sweep_only = sweep_only && !resumed;
                let read = GroupRead {
                    core: &self.core,
                    membership,
                    leases: leases.as_ref(),
                    replay: self.replay,
                };
                loop {
                    let Some(deliveries) = read.next_batch(cursors, room, sweep_only).await? else {
                        return Ok(Batch::AtLimit);
                    };
                    let kept = filter_out(&self.core, membership, deliveries).await?;
                    // All filtered out: there may be more behind them; read on.
                    if let Some(kept) = kept {
                        break kept;
                    }
                }
            }
        };
        if deliveries.is_empty() {
            return Ok(Batch::Empty);
        }
        let mode = if self.group().is_some() {
            "group"
        } else {
            "tail"
        };
        // One count per run of one stream's messages, not one per message.
        for run in deliveries.chunk_by(|a, b| a.stream == b.stream) {
            crate::metrics::delivered(&run[0].stream, mode, run.len());
        }
        Ok(Batch::Messages(deliveries))
    }

    /// Waits, after [`Batch::AtLimit`], until acks or nacks through this broker freed a quarter
    /// of the member's window, or [`AT_LIMIT_RECHECK`] passed; in the latter case the book of
    /// leases is rebuilt from Redis at the next batch (acks through other instances, expiries).
    pub async fn wait_for_room(&self) {
        let Position::Group {
            leases: Some(leases),
            ..
        } = &self.position
        else {
            return;
        };
        if !leases.freed(AT_LIMIT_RECHECK).await {
            leases.invalidate();
        }
    }

    /// When an idle member looks again on its own: after `idle_recheck`, or sooner when its
    /// group's sweep is due (then `true`).
    pub fn next_look(&self, idle_recheck: Duration) -> (Instant, bool) {
        let recheck = Instant::now() + idle_recheck;
        let sweep = self.membership().and_then(|membership| {
            self.core
                .redelivery()
                .next_sweep(&self.streams, &membership.group)
        });
        match sweep {
            Some(due) if due < recheck => (due.max(Instant::now()), true),
            _ => (recheck, false),
        }
    }

    /// After NOGROUP: Redis came back without the group (no persistence, or someone destroyed
    /// it). A member that may create its group recreates it from the start of what is left, so
    /// that nothing written meanwhile is skipped, and replays its own pending entries again;
    /// any other member fails with `err`.
    pub async fn recreate_group(&mut self, err: BrokerError) -> BrokerResult<()> {
        let Position::Group {
            membership,
            cursors,
            leases,
            ..
        } = &mut self.position
        else {
            return Err(err);
        };
        if membership.create_from.is_none() {
            return Err(err);
        }
        for stream in &self.streams {
            match self
                .core
                .store()
                .create_group(
                    stream,
                    &membership.group,
                    StartId::After(EntryId::ZERO),
                    true,
                    None,
                )
                .await
            {
                Ok(()) | Err(StoreError::GroupExists { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        tracing::warn!(
            streams = ?self.streams,
            "the consumer group was gone (Redis restarted without persistence, or it was destroyed); recreated it from the start of each stream"
        );
        for (_, cursor) in cursors.iter_mut() {
            *cursor = GroupCursor::PendingAfter(EntryId::ZERO);
        }
        if let Some(leases) = leases {
            leases.invalidate();
        }
        Ok(())
    }

    /// Resets the ack deadline of messages this member holds but the client has not taken yet
    /// (a send buffer waiting on a slow client), so that they do not come back as duplicates;
    /// `held` names each message by the index of its stream in [`streams`](Self::streams).
    pub async fn renew(&self, held: impl Iterator<Item = (usize, EntryId)>) {
        let Some(membership) = self.membership() else {
            return;
        };
        let mut by_stream: Vec<(&str, Vec<EntryId>)> = Vec::new();
        for (index, id) in held {
            let Some(stream) = self.streams.get(index) else {
                continue;
            };
            match by_stream.iter_mut().find(|(s, _)| s == stream) {
                Some((_, ids)) => ids.push(id),
                None => by_stream.push((stream, vec![id])),
            }
        }
        for (stream, ids) in by_stream {
            match self
                .core
                .extend(stream, &membership.group, &membership.consumer, &ids)
                .await
            {
                Ok(renewed) => tracing::debug!(
                    stream,
                    renewed = renewed.len(),
                    "renewed the leases of buffered messages"
                ),
                Err(err) => {
                    tracing::info!(error = %err, stream, "could not renew the leases of buffered messages")
                }
            }
        }
    }

    /// When the member leaves: what it held becomes due for redelivery now rather than after
    /// the deadline, and a consumer whose name the broker made up is deleted. Returns how many
    /// messages were handed back.
    pub async fn hand_back(&self) -> BrokerResult<u64> {
        let Some(membership) = self.membership() else {
            return Ok(0);
        };
        self.core
            .redelivery()
            .hand_back(membership, &self.streams, membership.generated_name)
            .await
    }

    /// Per stream, in order: where the next read continues (Fetch hands it to the client).
    pub fn resume(&self) -> Vec<(String, Resume)> {
        match &self.position {
            Position::Tail(cursors) => cursors
                .iter()
                .map(|(stream, after)| (stream.clone(), Resume::After(*after)))
                .collect(),
            Position::Group { cursors, .. } => cursors
                .iter()
                .map(|(stream, cursor)| {
                    let resume = match cursor {
                        GroupCursor::New => Resume::New,
                        GroupCursor::PendingAfter(id) => Resume::After(*id),
                    };
                    (stream.clone(), resume)
                })
                .collect(),
        }
    }
}

/// What a group member's batch is read with.
struct GroupRead<'a, S> {
    core: &'a DeliveryCore<S>,
    membership: &'a GroupMembership,
    leases: Option<&'a Leases>,
    replay: Replay,
}

impl<S: Store> GroupRead<'_, S> {
    /// Steps 1–4 of the module docs for a group member; `None` when it is at its in-flight limit.
    async fn next_batch(
        &self,
        cursors: &mut [(String, GroupCursor)],
        mut room: usize,
        sweep_only: bool,
    ) -> BrokerResult<Option<Vec<Delivery>>> {
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
                return Ok(Some(page.deliveries));
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
        // 3. Redeliveries before new messages (never during the replay above: its entries would come
        // back twice, once swept and once replayed).
        let mut deliveries = if membership.no_ack {
            Vec::new()
        } else {
            core.redelivery()
                .sweep_due(membership, &reading_new, room)
                .await?
        };
        // 4. New entries.
        if deliveries.is_empty() && !sweep_only {
            let (streams, count) = within_room(reading_new, room, leases.is_some());
            room = count;
            let new: Vec<_> = streams.into_iter().map(|s| (s, GroupCursor::New)).collect();
            deliveries = reading::read_group(store, membership, &new, room)
                .await?
                .deliveries;
        }
        if let Some(leases) = leases {
            leases.add(deliveries.iter().map(|d| (d.stream.as_str(), d.entry.id)));
        }
        Ok(Some(deliveries))
    }
}

/// Applies the subscription's filter: what does not match is acknowledged for the group
/// without delivery (and counted). `None` when a non-empty batch was filtered out entirely.
async fn filter_out<S: Store>(
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
        crate::metrics::filtered(stream, run.len());
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
async fn refresh_policy<S: Store>(
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
