//! The Subscribe pump: one task per open subscription that reads from the store and feeds a
//! bounded channel, which the gRPC layer turns into the response stream.
//!
//! The task is a loop over one `select!`: shutdown, the client going away, and the next read
//! (or, when the last read was empty, the next wake-up). It holds no Redis connection between
//! reads, and reads no more than the client takes: the channel is bounded, and a read happens
//! only after the previous batch went into it, because in group mode a message's ack clock
//! starts the moment XREADGROUP returns it.
//!
//! Group mode first replays the consumer's own pending entries (`XREADGROUP ... 0`), so a
//! consumer that reconnects under the same name gets back what it had not acknowledged, then
//! reads new entries (`>`). Tail mode reads `XREAD` from a cursor per stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{BrokerError, BrokerResult};
use crate::model::{Delivery, EntryId, StartId};
use crate::reading::{self, GroupMembership};
use crate::store::{GroupCursor, Store};

/// What a subscription emits, in order: `Started` once, then messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The subscription is live.
    Started {
        /// Group mode: the consumer name in use; empty in tail mode.
        consumer: String,
        /// Streams being read.
        streams: Vec<String>,
    },
    /// A delivered message.
    Message(Delivery),
}

/// How a subscription reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// XREADGROUP as a group member.
    Group(GroupMembership),
    /// XREAD from a start position per stream (same order as the streams).
    Tail(Vec<StartId>),
}

/// A validated Subscribe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Streams to read, no duplicates.
    pub streams: Vec<String>,
    /// Group or tail.
    pub mode: Mode,
    /// Messages per read.
    pub batch_size: usize,
    /// Group mode: how long a delivered message may stay unacknowledged before it is redelivered.
    pub ack_deadline: Duration,
}

/// The receiving end of a subscription: the gRPC layer drains it.
pub type EventReceiver = mpsc::Receiver<BrokerResult<Event>>;

/// Starts and counts subscription pumps.
#[derive(Clone)]
pub struct Subscriptions<S> {
    store: S,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    open: Arc<AtomicUsize>,
    idle_recheck: Duration,
    sweeps: Sweeps,
}

impl<S: Store> Subscriptions<S> {
    /// Pumps stop when `shutdown` is cancelled, ending their streams with UNAVAILABLE; the
    /// tracker lets the server wait for them.
    pub fn new(
        store: S,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        idle_recheck: Duration,
    ) -> Self {
        Self {
            store,
            shutdown,
            tracker,
            open: Arc::default(),
            idle_recheck,
            sweeps: Sweeps::default(),
        }
    }

    /// Subscriptions whose pump is still running.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Spawns the pump for `spec` and returns its events.
    pub fn open(&self, spec: SubscriptionSpec) -> EventReceiver {
        // Room for one batch: the pump reads the next one only once this one is taken.
        let (tx, rx) = mpsc::channel(spec.batch_size.max(1));
        let span = match &spec.mode {
            Mode::Group(g) => {
                tracing::info_span!("subscription", streams = ?spec.streams, group = %g.group, consumer = %g.consumer)
            }
            Mode::Tail(_) => tracing::info_span!("subscription", streams = ?spec.streams),
        };
        let pump = Pump {
            store: self.store.clone(),
            spec,
            tx,
            shutdown: self.shutdown.clone(),
            idle_recheck: self.idle_recheck,
            sweeps: self.sweeps.clone(),
            _open: OpenGuard::new(self.open.clone()),
        };
        self.tracker.spawn(pump.run().instrument(span));
        rx
    }
}

/// When each (stream, group) is next due for a redelivery sweep, so that the members of a group
/// on this broker take turns instead of all scanning the pending list: one sweep per stream and
/// group per interval, by whichever member gets there first.
#[derive(Clone, Default)]
struct Sweeps {
    next: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

impl Sweeps {
    /// The streams whose sweep for `group` is due now; each is booked for `interval` (±10%, so
    /// that brokers and groups do not fall into step) from now.
    fn take_due(&self, streams: &[String], group: &str, interval: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        streams
            .iter()
            .filter(|stream| {
                let due = next
                    .entry(((*stream).clone(), group.to_owned()))
                    .or_insert(now);
                if *due > now {
                    return false;
                }
                *due = now + interval.mul_f64(rand::rng().random_range(0.9..1.1));
                true
            })
            .cloned()
            .collect()
    }

    /// Makes the sweep of `streams` for `group` due now.
    fn make_due(&self, streams: &[String], group: &str) {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in streams {
            next.insert((stream.clone(), group.to_owned()), now);
        }
    }
}

/// How often a group's pending list is swept for a given ack deadline: twice per deadline, so an
/// expired message waits at most half a deadline more.
fn sweep_interval(ack_deadline: Duration) -> Duration {
    (ack_deadline / 2).max(Duration::from_millis(50))
}

/// Counts a pump as open for exactly as long as it exists, panics included.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a final error status may wait for a client that stopped reading.
const FINAL_STATUS_GRACE: Duration = Duration::from_secs(5);

/// How long handing back unacknowledged messages may take when a subscription ends.
const HAND_BACK_GRACE: Duration = Duration::from_secs(2);

struct Pump<S> {
    store: S,
    spec: SubscriptionSpec,
    tx: mpsc::Sender<BrokerResult<Event>>,
    shutdown: CancellationToken,
    idle_recheck: Duration,
    sweeps: Sweeps,
    _open: OpenGuard,
}

impl<S: Store> Pump<S> {
    async fn run(self) {
        tracing::debug!("subscription started");
        let outcome = self.pump().await;
        self.hand_back().await;
        match outcome {
            Ok(()) => tracing::debug!("subscription ended: client went away"),
            Err(err) => {
                match &err {
                    BrokerError::ShuttingDown => tracing::debug!("subscription ended: shutdown"),
                    other => tracing::info!(error = %other, "subscription ended with an error"),
                }
                // The status reaches a client only if it reads; one that stopped reading does
                // not get to hold this task forever.
                let _ = tokio::time::timeout(FINAL_STATUS_GRACE, self.tx.send(Err(err))).await;
            }
        }
    }

    /// `Ok` when the client went away, `Err` for anything that should end the stream with a status.
    async fn pump(&self) -> BrokerResult<()> {
        let mut reader = Reader::start(&self.store, &self.spec).await?;
        let started = Event::Started {
            consumer: reader.consumer().to_owned(),
            streams: self.spec.streams.clone(),
        };
        if !self.send(started).await? {
            return Ok(());
        }
        let mut watch = self.store.watch(&self.spec.streams, reader.group());
        loop {
            // Before the read, so that a wake-up arriving during it is not lost.
            watch.mark_seen();
            let batch = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                _ = self.tx.closed() => return Ok(()),
                // Dropped mid-flight (the two arms above), the read's reply is discarded by the
                // multiplexed connection, which stays usable. In group mode the entries it took
                // stay pending for this consumer and come back when it reconnects.
                batch = self.next_batch(&mut reader) => batch?,
            };
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                    _ = self.tx.closed() => return Ok(()),
                    _ = watch.changed() => {}
                    _ = tokio::time::sleep(self.wait_limit()) => {}
                }
                continue;
            }
            // There may be more: let another idle member of the group read too.
            watch.pass_on();
            for delivery in batch {
                if !self.send(Event::Message(delivery)).await? {
                    return Ok(());
                }
            }
        }
    }

    /// Group mode: what this subscription held unacknowledged becomes due for redelivery now,
    /// rather than after the deadline. Best effort: if Redis is not there, the deadline still
    /// applies.
    async fn hand_back(&self) {
        let Mode::Group(membership) = &self.spec.mode else {
            return;
        };
        if membership.no_ack {
            return;
        }
        let handing = reading::hand_back(&self.store, membership, &self.spec.streams);
        match tokio::time::timeout(HAND_BACK_GRACE, handing).await {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => {
                tracing::debug!(count, "unacknowledged messages handed back for redelivery");
                // Sweep now, and give an idle member of the group the turn to do it.
                self.sweeps.make_due(&self.spec.streams, &membership.group);
                self.store
                    .watch(&self.spec.streams, Some(&membership.group))
                    .pass_on();
            }
            Ok(Err(err)) => {
                tracing::info!(error = %err, "could not hand back unacknowledged messages; they wait for the ack deadline")
            }
            Err(_) => tracing::info!(
                "handing back unacknowledged messages timed out; they wait for the ack deadline"
            ),
        }
    }

    /// The next deliveries: in group mode, redeliveries of expired messages when a sweep is due,
    /// else the next read.
    async fn next_batch(&self, reader: &mut Reader) -> BrokerResult<Vec<Delivery>> {
        // Not while replaying this consumer's own pending entries: those would come back twice,
        // once swept and once replayed. A replayed read resets their idle time, so the sweeps
        // that follow leave them alone until they expire again.
        if let Mode::Group(membership) = &self.spec.mode
            && !membership.no_ack
            && !reader.is_replaying()
        {
            let interval = sweep_interval(self.spec.ack_deadline);
            let mut redeliveries = Vec::new();
            for stream in self
                .sweeps
                .take_due(&self.spec.streams, &membership.group, interval)
            {
                redeliveries.extend(
                    reading::reclaim_expired(
                        &self.store,
                        membership,
                        &stream,
                        self.spec.ack_deadline,
                        self.spec.batch_size,
                    )
                    .await?,
                );
            }
            if !redeliveries.is_empty() {
                return Ok(redeliveries);
            }
        }
        reader.next_batch(&self.store, self.spec.batch_size).await
    }

    /// How long an idle wait may last before the pump looks again on its own.
    fn wait_limit(&self) -> Duration {
        match &self.spec.mode {
            Mode::Group(membership) if !membership.no_ack => self
                .idle_recheck
                .min(sweep_interval(self.spec.ack_deadline)),
            _ => self.idle_recheck,
        }
    }

    /// `Ok(false)` when the client is gone.
    async fn send(&self, event: Event) -> BrokerResult<bool> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(BrokerError::ShuttingDown),
            sent = self.tx.send(Ok(event)) => Ok(sent.is_ok()),
        }
    }
}

/// The read position of one subscription.
enum Reader {
    Group {
        membership: GroupMembership,
        streams: Vec<String>,
        /// Streams still replaying this consumer's pending entries, with the last id replayed.
        replaying: Vec<(String, EntryId)>,
    },
    Tail {
        cursors: Vec<(String, EntryId)>,
    },
}

impl Reader {
    async fn start<S: Store>(store: &S, spec: &SubscriptionSpec) -> BrokerResult<Self> {
        match &spec.mode {
            Mode::Group(membership) => {
                reading::prepare_group(store, &spec.streams, membership).await?;
                Ok(Self::Group {
                    membership: membership.clone(),
                    streams: spec.streams.clone(),
                    replaying: spec
                        .streams
                        .iter()
                        .map(|s| (s.clone(), EntryId::ZERO))
                        .collect(),
                })
            }
            Mode::Tail(starts) => Ok(Self::Tail {
                cursors: reading::resolve_starts(store, &spec.streams, starts).await?,
            }),
        }
    }

    /// Group mode, still delivering this consumer's own pending entries.
    fn is_replaying(&self) -> bool {
        matches!(self, Self::Group { replaying, .. } if !replaying.is_empty())
    }

    /// The group this reader belongs to, if any: group members are woken one at a time.
    fn group(&self) -> Option<&str> {
        match self {
            Self::Group { membership, .. } => Some(&membership.group),
            Self::Tail { .. } => None,
        }
    }

    fn consumer(&self) -> &str {
        match self {
            Self::Group { membership, .. } => &membership.consumer,
            Self::Tail { .. } => "",
        }
    }

    /// The next deliveries; empty means "nothing now, wait for a wake-up".
    async fn next_batch<S: Store>(
        &mut self,
        store: &S,
        count: usize,
    ) -> BrokerResult<Vec<Delivery>> {
        match self {
            Self::Tail { cursors } => reading::read_tail(store, cursors, count).await,
            Self::Group {
                membership,
                streams,
                replaying,
            } => loop {
                if replaying.is_empty() {
                    let cursors: Vec<_> = streams
                        .iter()
                        .map(|s| (s.clone(), GroupCursor::New))
                        .collect();
                    return Ok(reading::read_group(store, membership, &cursors, count)
                        .await?
                        .deliveries);
                }
                let cursors: Vec<_> = replaying
                    .iter()
                    .map(|(s, id)| (s.clone(), GroupCursor::PendingAfter(*id)))
                    .collect();
                let batch = reading::read_group(store, membership, &cursors, count).await?;
                // A stream with no page back has nothing left to replay.
                replaying.retain_mut(|(stream, cursor)| match batch.last_ids.get(stream) {
                    Some(last) => {
                        *cursor = *last;
                        true
                    }
                    None => false,
                });
                // A page made only of deleted entries yields nothing; read on rather than wait.
                if !batch.deliveries.is_empty() {
                    return Ok(batch.deliveries);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_sweeps_each_stream_once_per_interval_until_made_due() {
        let sweeps = Sweeps::default();
        let streams = vec!["a".to_owned(), "b".to_owned()];
        let hour = Duration::from_secs(3600);
        assert_eq!(sweeps.take_due(&streams, "g", hour), streams);
        // Another member of the same group, right after: nothing is due.
        assert!(sweeps.take_due(&streams, "g", hour).is_empty());
        // Another group has its own schedule.
        assert_eq!(sweeps.take_due(&streams[..1], "other", hour), ["a"]);
        // A hand-back makes it due at once.
        sweeps.make_due(&streams[1..], "g");
        assert_eq!(sweeps.take_due(&streams, "g", hour), ["b"]);
    }
}
