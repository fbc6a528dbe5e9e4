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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{BrokerError, BrokerResult};
use crate::model::{Delivery, Entry, EntryId, IdRange, PendingQuery, RangeBound, StartId};
use crate::store::{GroupCursor, GroupEntry, Store, StoreError};

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

/// A subscription's place in a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    /// Group name.
    pub group: String,
    /// Consumer name; never empty (see [`generate_consumer_name`]).
    pub consumer: String,
    /// Create the group where missing, starting here.
    pub create_from: Option<StartId>,
    /// XREADGROUP NOACK.
    pub no_ack: bool,
}

impl GroupMembership {
    /// One XREADGROUP as this consumer.
    async fn read<S: Store>(
        &self,
        store: &S,
        cursors: impl Iterator<Item = (String, GroupCursor)>,
        count: usize,
        no_ack: bool,
    ) -> BrokerResult<Vec<(String, Vec<GroupEntry>)>> {
        let cursors: Vec<_> = cursors.collect();
        Ok(store
            .read_group(&self.group, &self.consumer, &cursors, count, no_ack)
            .await?)
    }
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
}

/// A consumer name unlikely to collide: `sg-` and 16 hex digits.
pub fn generate_consumer_name() -> String {
    format!("sg-{:016x}", rand::rng().random::<u64>())
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
            _open: OpenGuard::new(self.open.clone()),
        };
        self.tracker.spawn(pump.run().instrument(span));
        rx
    }
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

struct Pump<S> {
    store: S,
    spec: SubscriptionSpec,
    tx: mpsc::Sender<BrokerResult<Event>>,
    shutdown: CancellationToken,
    idle_recheck: Duration,
    _open: OpenGuard,
}

impl<S: Store> Pump<S> {
    async fn run(self) {
        tracing::debug!("subscription started");
        match self.pump().await {
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
        let mut watch = self.store.watch(&self.spec.streams);
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
                batch = reader.next_batch(&self.store, self.spec.batch_size) => batch?,
            };
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                    _ = self.tx.closed() => return Ok(()),
                    _ = watch.changed() => {}
                    _ = tokio::time::sleep(self.idle_recheck) => {}
                }
                continue;
            }
            for delivery in batch {
                if !self.send(Event::Message(delivery)).await? {
                    return Ok(());
                }
            }
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
                // Settled before `started`, so a missing group fails the call up front.
                for stream in &spec.streams {
                    let group = &membership.group;
                    match membership.create_from {
                        Some(start) => {
                            match store.create_group(stream, group, start, true, None).await {
                                Ok(()) | Err(StoreError::GroupExists { .. }) => {}
                                Err(err) => return Err(err.into()),
                            }
                        }
                        None => {
                            store.pending_summary(stream, group).await?;
                        }
                    }
                }
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
            Mode::Tail(starts) => {
                let mut cursors = Vec::with_capacity(starts.len());
                for (stream, start) in spec.streams.iter().zip(starts) {
                    // Asked even for an explicit start: a key that is not a stream then fails
                    // the call before `started`.
                    let top = store.last_entry_id(stream).await?;
                    let after = match start {
                        StartId::After(id) => *id,
                        // `$` is pinned to a concrete id now, so that nothing written between
                        // two reads is skipped (XREAD with `$` would skip it).
                        StartId::Latest => top.unwrap_or_default(),
                    };
                    cursors.push((stream.clone(), after));
                }
                Ok(Self::Tail { cursors })
            }
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
            Self::Tail { cursors } => {
                let batches = store.read(cursors, count).await?;
                let mut deliveries = Vec::new();
                for (stream, entries) in batches {
                    if let (Some(last), Some(cursor)) = (
                        entries.last(),
                        cursors.iter_mut().find(|(s, _)| *s == stream),
                    ) {
                        cursor.1 = last.id;
                    }
                    deliveries.extend(entries.into_iter().map(|entry| Delivery {
                        stream: stream.clone(),
                        entry,
                        delivery_count: 0,
                    }));
                }
                Ok(deliveries)
            }
            Self::Group {
                membership,
                streams,
                replaying,
            } => loop {
                if replaying.is_empty() {
                    return read_new(store, membership, streams, count).await;
                }
                let deliveries = replay_pending(store, membership, replaying, count).await?;
                // A page made only of deleted entries yields nothing; read on rather than wait.
                if !deliveries.is_empty() {
                    return Ok(deliveries);
                }
            },
        }
    }
}

/// `XREADGROUP ... >`: entries never delivered to the group.
async fn read_new<S: Store>(
    store: &S,
    membership: &GroupMembership,
    streams: &[String],
    count: usize,
) -> BrokerResult<Vec<Delivery>> {
    let cursors = streams.iter().map(|s| (s.clone(), GroupCursor::New));
    let batches = membership
        .read(store, cursors, count, membership.no_ack)
        .await?;
    let delivery_count = if membership.no_ack { 0 } else { 1 };
    Ok(batches
        .into_iter()
        .flat_map(|(stream, entries)| {
            entries.into_iter().filter_map(move |e| {
                Some(Delivery {
                    stream: stream.clone(),
                    entry: Entry {
                        id: e.id,
                        fields: e.fields?,
                    },
                    delivery_count,
                })
            })
        })
        .collect())
}

/// One page of the consumer's own pending entries, advancing `replaying` and dropping streams
/// whose replay is complete. Entries deleted since delivery are skipped and logged.
async fn replay_pending<S: Store>(
    store: &S,
    membership: &GroupMembership,
    replaying: &mut Vec<(String, EntryId)>,
    count: usize,
) -> BrokerResult<Vec<Delivery>> {
    let cursors = replaying
        .iter()
        .map(|(s, id)| (s.clone(), GroupCursor::PendingAfter(*id)));
    // NOACK has no meaning for the history of a consumer's own pending entries.
    let batches = membership.read(store, cursors, count, false).await?;
    let mut deliveries = Vec::new();
    let mut progressed: HashMap<String, EntryId> = HashMap::new();
    for (stream, entries) in batches {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            continue;
        };
        progressed.insert(stream.clone(), last.id);
        // Replayed reads bump the delivery count; XPENDING tells us by how much.
        let query = PendingQuery {
            range: IdRange {
                min: RangeBound::Inclusive(first.id),
                max: RangeBound::Inclusive(last.id),
            },
            count: entries.len() as u64,
            consumer: Some(membership.consumer.clone()),
            min_idle_ms: 0,
        };
        let counts: HashMap<EntryId, u64> = store
            .pending(&stream, &membership.group, &query)
            .await?
            .into_iter()
            .map(|p| (p.id, p.delivery_count))
            .collect();
        let mut deleted = 0usize;
        for entry in entries {
            match entry.fields {
                Some(fields) => deliveries.push(Delivery {
                    stream: stream.clone(),
                    delivery_count: counts.get(&entry.id).copied().unwrap_or(1),
                    entry: Entry {
                        id: entry.id,
                        fields,
                    },
                }),
                None => deleted += 1,
            }
        }
        if deleted > 0 {
            tracing::warn!(
                stream = %stream,
                deleted,
                "pending entries were deleted or trimmed before being acknowledged; they cannot be delivered"
            );
        }
    }
    // A stream with no page back has nothing left to replay.
    replaying.retain_mut(|(stream, cursor)| match progressed.get(stream) {
        Some(last) => {
            *cursor = *last;
            true
        }
        None => false,
    });
    Ok(deliveries)
}
