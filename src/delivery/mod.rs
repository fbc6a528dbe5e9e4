//! The delivery core: everything a consuming or producing call needs beyond its transport, in
//! one place that knows nothing of tonic. Subscribe, Fetch (and any later consuming call) are
//! thin loops around [`Member::next_batch`]; Ack, Nack and ExtendDeadline are calls of
//! [`DeliveryCore`] with their metrics, wake-ups and flow-control bookkeeping; topics are
//! expanded and routed here, so every transport gets the same behaviour.
//!
//! - [`member`]: a member and its one batch order (own pending, in-flight limit, redeliveries,
//!   new entries);
//! - [`appender`]: concurrent Produce calls sharing one round trip (group commit);
//! - [`expiry`]: messages past their expiry are not delivered;
//! - [`delayed`]: messages held until their delivery time;
//! - [`credit`]: flow-control credit a client grants (Consume);
//! - [`leases`]: flow control from a book of what each member holds, not a Redis walk per read;
//! - [`redelivery`]: ack deadlines, backoff, nack, dead letters, hand-back, consumer clean-up;
//! - [`reading`]: the XREAD / XREADGROUP reads under every batch;
//! - [`membership`]: who reads a group, under which policy;
//! - [`ordering`]: per-key order for ordered subscriptions;
//! - [`policies`]: stored subscriptions, the policy every member of a group applies;
//! - [`retention`]: stored retention policies that respect consumers;
//! - [`seek`]: moving a group to an id or a point in time;
//! - [`topics`]: partitioned topics.

mod appender;
pub mod credit;
pub mod dead_letters;
pub mod delayed;
mod expiry;
mod group_read;
pub mod leases;
pub mod member;
pub mod membership;
mod ordered;
pub mod ordering;
pub mod policies;
pub mod produce;
pub mod reading;
pub mod redelivery;
pub mod retention;
pub mod seek;
mod stored;
pub mod topics;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use credit::Credit;
pub use delayed::{DELAYED_REGISTRY, DelayedDelivery};
pub use group_read::Replay;
pub use member::{Batch, Member, MemberSpec, ReadMode, Resume};
pub use membership::{GroupMembership, OwnSettings, Requested, generate_consumer_name};
pub use policies::{POLICY_TTL, Policies, SUBSCRIPTIONS_REGISTRY};
pub use produce::{Origin, Produced};
pub use redelivery::{MAX_DELAY, Redelivery, RedeliveryCounters, RedeliverySettings};
pub use retention::{RETENTION_REGISTRY, Retention};
pub use seek::{SeekTarget, Seeked};
pub use stored::SubscriptionRecord;
pub use topics::Topics;

use crate::error::BrokerResult;
use crate::model::{
    AckOutcome, Append, Backoff, Dedupe, EntryId, IdleAfterMove, PARKED_CONSUMER,
    PARKED_HORIZON_MS, PendingMove, millis,
};
use crate::store::{GroupCursor, Store, StoreResult};
use appender::{Appender, append_counted};
use leases::LeaseBooks;

/// A [`MemberSpec`] whose topics were replaced by their partitions: what
/// [`DeliveryCore::join`] takes, so that no transport can forget the expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSpec(MemberSpec);

impl ResolvedSpec {
    /// The streams to read (partitions in place of topics).
    pub fn streams(&self) -> &[String] {
        &self.0.streams
    }

    /// Tail or group.
    pub fn reading(&self) -> &ReadMode {
        &self.0.reading
    }
}

/// The core over one store; a clone is one pointer (every subscription task holds one, so its
/// size is what ten thousand idle subscriptions pay for it).
#[derive(Clone)]
pub struct DeliveryCore<S> {
    parts: Arc<Parts<S>>,
}

/// What a [`DeliveryCore`] shares between its clones.
struct Parts<S> {
    store: S,
    redelivery: Redelivery<S>,
    topics: Topics<S>,
    policies: Policies<S>,
    retention: Retention<S>,
    delayed: DelayedDelivery<S>,
    books: LeaseBooks,
    appender: Appender<S>,
}

impl<S: Store> DeliveryCore<S> {
    /// The core over `store`, with the server's redelivery `settings`.
    pub fn new(store: S, settings: RedeliverySettings) -> Self {
        Self {
            parts: Arc::new(Parts {
                redelivery: Redelivery::new(store.clone(), settings),
                topics: Topics::new(store.clone()),
                policies: Policies::new(store.clone()),
                delayed: DelayedDelivery::new(
                    store.clone(),
                    settings.slot_safe_dead_letters,
                    crate::delivery::generate_consumer_name(),
                ),
                retention: Retention::new(
                    store.clone(),
                    Topics::new(store.clone()),
                    crate::delivery::generate_consumer_name(),
                ),
                appender: Appender::new(store.clone()),
                store,
                books: LeaseBooks::default(),
            }),
        }
    }

    /// The store underneath (Admin calls that are one store command each use it directly).
    pub fn store(&self) -> &S {
        &self.parts.store
    }

    /// Redelivery state: sweeps, counters, served groups.
    pub fn redelivery(&self) -> &Redelivery<S> {
        &self.parts.redelivery
    }

    /// Topic routing and partition counts.
    pub fn topics(&self) -> &Topics<S> {
        &self.parts.topics
    }

    /// Stored subscriptions.
    pub fn policies(&self) -> &Policies<S> {
        &self.parts.policies
    }

    /// Messages held until their delivery time.
    pub fn delayed(&self) -> &DelayedDelivery<S> {
        &self.parts.delayed
    }

    /// Stored retention policies.
    pub fn retention(&self) -> &Retention<S> {
        &self.parts.retention
    }

    /// The backoff of every delivery policy this broker builds.
    pub fn backoff(&self) -> Backoff {
        self.parts.redelivery.backoff()
    }

    pub(crate) fn books(&self) -> &LeaseBooks {
        &self.parts.books
    }

    /// Replaces topics among the streams of `spec` by their partitions (per-stream positions
    /// follow their topic).
    pub async fn resolve(&self, mut spec: MemberSpec) -> BrokerResult<ResolvedSpec> {
        let expanded = self.parts.topics.expand(&spec.streams).await?;
        if expanded.len() != spec.streams.len() {
            match &mut spec.reading {
                ReadMode::Tail(starts) => *starts = follow(&expanded, starts),
                ReadMode::Group { cursors, .. } => *cursors = follow(&expanded, cursors),
            }
            spec.streams = expanded.into_iter().map(|(s, _)| s).collect();
        }
        Ok(ResolvedSpec(spec))
    }

    /// A member reading `spec`: its group prepared (created where asked, or checked), or its
    /// tail positions resolved.
    pub async fn join(&self, spec: ResolvedSpec) -> BrokerResult<Member<S>> {
        Member::start(self.clone(), spec.0).await
    }

    /// Appends `requests` in one pipelined round trip (see [`Streams::append`](crate::store::Streams::append)), counting what was
    /// produced.
    pub async fn append(
        &self,
        requests: &[Append],
    ) -> BrokerResult<Vec<StoreResult<Vec<EntryId>>>> {
        if !requests.iter().any(needs_dedupe) {
            return Ok(append_counted(&self.parts.store, requests).await?);
        }
        let mut prepared = Vec::with_capacity(requests.len());
        for request in requests {
            prepared.push(self.with_dedupe(request.clone()).await?);
        }
        Ok(append_counted(&self.parts.store, &prepared).await?)
    }

    /// A request whose messages carry dedupe keys gets where and for how long they are
    /// remembered (its stream's policy).
    async fn with_dedupe(&self, mut request: Append) -> BrokerResult<Append> {
        if needs_dedupe(&request) {
            let slot_safe = self.parts.redelivery.settings().slot_safe_dead_letters;
            request.dedupe = Some(Dedupe {
                prefix: Dedupe::prefix_for(&request.stream, slot_safe),
                window_ms: self
                    .parts
                    .retention
                    .dedupe_window_ms(&request.stream)
                    .await?,
            });
        }
        Ok(request)
    }

    /// Appends one request (a unary Produce) in a round trip it shares with the other calls
    /// waiting at the same moment (see [`appender`]), counting what was produced.
    pub async fn append_one(&self, request: Append) -> BrokerResult<Vec<EntryId>> {
        let request = self.with_dedupe(request).await?;
        Ok(self.parts.appender.append(request).await?)
    }

    /// Ack: the messages leave the group's pending list; their holders get room again.
    pub async fn ack(&self, stream: &str, group: &str, ids: &[EntryId]) -> BrokerResult<u64> {
        let acknowledged = if self.ordered(stream, group).await? {
            let outcomes = self
                .parts
                .redelivery
                .ack_ordered(stream, group, None, ids)
                .await?;
            outcomes.iter().filter(|o| **o == AckOutcome::Acked).count() as u64
        } else {
            self.parts.store.ack(stream, group, ids).await?
        };
        crate::ops::metrics::acked(stream, acknowledged);
        if acknowledged > 0 {
            self.parts.books.released(stream, group, ids);
        }
        Ok(acknowledged)
    }

    /// Ack with what happened to each id (Consume's confirmations); with a `holder`, only the
    /// ids it still holds are acknowledged.
    pub async fn ack_confirmed(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> BrokerResult<Vec<AckOutcome>> {
        let outcomes = if self.ordered(stream, group).await? {
            self.parts
                .redelivery
                .ack_ordered(stream, group, holder, ids)
                .await?
        } else {
            self.parts
                .store
                .ack_confirmed(stream, group, holder, ids)
                .await?
        };
        let acked: Vec<EntryId> = ids
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == AckOutcome::Acked)
            .map(|(id, _)| *id)
            .collect();
        crate::ops::metrics::acked(stream, acked.len() as u64);
        if !acked.is_empty() {
            self.parts.books.released(stream, group, &acked);
        }
        Ok(outcomes)
    }

    /// Whether `group` on `stream` delivers in key order: its acks then release the next
    /// message of each key in the same step (see [`ordering`]).
    async fn ordered(&self, stream: &str, group: &str) -> BrokerResult<bool> {
        Ok(self
            .parts
            .policies
            .current(stream, group)
            .await?
            .is_some_and(|policy| policy.ordered))
    }

    /// Nack: the messages go back to the group (to the parked consumer, see
    /// [`PARKED_CONSUMER`]), due after `delay` or the backoff for their delivery count (the
    /// stored subscription's, else the server's); with
    /// `holder`, only those that consumer holds. Returns the ids nacked.
    pub async fn nack(
        &self,
        stream: &str,
        group: &str,
        holder: Option<String>,
        ids: &[EntryId],
        delay: Option<Duration>,
    ) -> BrokerResult<Vec<EntryId>> {
        let backoff = match self.parts.policies.current(stream, group).await? {
            Some(stored) => stored.delivery().backoff,
            None => self.backoff(),
        };
        let movement = PendingMove {
            holder,
            to: PARKED_CONSUMER.to_owned(),
            idle: match delay {
                Some(delay) => IdleAfterMove::Set(PARKED_HORIZON_MS.saturating_sub(millis(delay))),
                None => IdleAfterMove::Backoff(backoff),
            },
            horizon_ms: PARKED_HORIZON_MS,
        };
        let nacked = self
            .parts
            .store
            .move_pending(stream, group, ids, &movement)
            .await?;
        crate::ops::metrics::nacked(stream, nacked.len());
        if !nacked.is_empty() {
            self.parts
                .redelivery
                .nacked(stream, group, Some(delay.unwrap_or(backoff.min)));
            self.parts.books.released(stream, group, &nacked);
        }
        Ok(nacked)
    }

    /// ExtendDeadline: the messages `consumer` holds get a fresh ack deadline. Returns the ids
    /// extended.
    pub async fn extend(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
    ) -> BrokerResult<Vec<EntryId>> {
        self.extend_from(stream, group, consumer, ids, 0).await
    }

    /// ExtendDeadline as if the messages had been delivered `idle_ms` ago: a deadline shorter
    /// than the group's (Pub/Sub's ModifyAckDeadline to N seconds is the group's deadline
    /// minus N). Returns the ids extended.
    pub async fn extend_from(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[EntryId],
        idle_ms: u64,
    ) -> BrokerResult<Vec<EntryId>> {
        let movement = PendingMove {
            holder: Some(consumer.to_owned()),
            to: consumer.to_owned(),
            idle: IdleAfterMove::Set(idle_ms),
            horizon_ms: PARKED_HORIZON_MS,
        };
        let extended = self
            .parts
            .store
            .move_pending(stream, group, ids, &movement)
            .await?;
        self.parts.books.renewed(stream, group, consumer, &extended);
        Ok(extended)
    }
}

fn needs_dedupe(request: &Append) -> bool {
    request.dedupe.is_none() && request.messages.iter().any(|m| m.dedupe_key.is_some())
}

/// Per-stream values for the expanded streams: each takes the value of the name it came from.
fn follow<T: Clone>(expanded: &[(String, usize)], values: &[T]) -> Vec<T> {
    expanded.iter().map(|(_, i)| values[*i].clone()).collect()
}

/// Cursors for a group read that starts with the consumer's own pending entries on every
/// stream: what a subscription replays when it (re)joins.
pub fn replay_everything(streams: usize) -> Vec<GroupCursor> {
    vec![GroupCursor::PendingAfter(EntryId::ZERO); streams]
}
