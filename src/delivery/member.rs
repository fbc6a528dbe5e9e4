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

use tokio::time::Instant;

use super::DeliveryCore;
use super::expiry::expire_out;
use super::group_read::{GroupRead, Replay, filter_out, refresh_policy};
use super::leases::Leases;
use super::membership::{GroupMembership, OwnSettings};
use super::reading;
use crate::error::{BrokerError, BrokerResult};
use crate::model::{Delivery, EntryId, StartId, SubscriptionPolicy};
use crate::store::{GroupCursor, Store, StoreError, StreamWatch};

/// How a member reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadMode {
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

/// What a consuming call reads: streams (topics are expanded by the core) and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// Streams or topics, no duplicates.
    pub streams: Vec<String>,
    /// Tail or group, with per-stream positions.
    pub reading: ReadMode,
    /// How a replay of pending entries is paced.
    pub replay: Replay,
}

impl MemberSpec {
    /// A group member reading one stream, starting with the consumer's own pending entries,
    /// as a subscription does.
    pub fn group_member(stream: String, membership: GroupMembership) -> Self {
        Self {
            streams: vec![stream],
            reading: ReadMode::Group {
                membership,
                cursors: super::replay_everything(1),
            },
            replay: Replay::Continuous,
        }
    }
}

/// What one [`Member::next_batch`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Messages to hand over, in order; there may be more behind them.
    Messages(Vec<Delivery>),
    /// Messages to hand over, and all there was: the read came back short. The caller may wait
    /// for a wake-up before reading again (one sent during the read is kept for it) instead of
    /// a read that would find nothing, which is what a trickle of messages would cost otherwise.
    Last(Vec<Delivery>),
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
        membership: Box<GroupMembership>,
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
            ReadMode::Tail(starts) => {
                Position::Tail(reading::resolve_starts(store, &spec.streams, &starts).await?)
            }
            ReadMode::Group {
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
                        &membership.consumer,
                        membership.max_in_flight,
                        membership.delivery.ack_deadline,
                    )
                });
                Position::Group {
                    cursors: spec.streams.iter().cloned().zip(cursors).collect(),
                    membership: Box::new(membership),
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
        let (deliveries, short) = match &mut self.position {
            Position::Tail(cursors) => {
                if sweep_only {
                    return Ok(Batch::Empty);
                }
                loop {
                    let read = reading::read_tail(self.core.store(), cursors, room).await?;
                    // All expired: there may be more behind them; read on.
                    if let Some(kept) = expire_out(&self.core, None, read.deliveries).await? {
                        break (kept, read.short);
                    }
                }
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
                // The book counts by the subscription as it is now (an update may have changed
                // its limit or deadline; one that lifted the limit leaves the last one).
                if let Some(leases) = leases
                    && membership.max_in_flight > 0
                {
                    leases.follow(membership.max_in_flight, membership.delivery.ack_deadline);
                }
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
                    let Some(batch) = read.next_batch(cursors, room, sweep_only).await? else {
                        return Ok(Batch::AtLimit);
                    };
                    let kept = match filter_out(&self.core, membership, batch.deliveries).await? {
                        Some(kept) => expire_out(&self.core, Some(membership), kept).await?,
                        None => None,
                    };
                    // All filtered out or expired: there may be more behind them; read on.
                    if let Some(kept) = kept {
                        break (kept, batch.short);
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
            crate::ops::metrics::delivered(&run[0].stream, mode, run.len());
        }
        for delivery in &deliveries {
            crate::ops::telemetry::record_delivery(delivery);
        }
        Ok(if short {
            Batch::Last(deliveries)
        } else {
            Batch::Messages(deliveries)
        })
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
