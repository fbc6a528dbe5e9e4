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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::future::select_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{BrokerError, BrokerResult};
use crate::model::{Delivery, EntryId, StartId};
use crate::reading::{self, GroupMembership};
use crate::redelivery::Redelivery;
use crate::store::{GroupCursor, Store, StoreError};

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
    /// Nothing for a while; keeps proxies from cutting a quiet stream.
    Heartbeat,
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
}

/// The receiving end of a subscription: the gRPC layer drains it.
pub type EventReceiver = mpsc::Receiver<BrokerResult<Event>>;

/// Starts and counts subscription pumps.
#[derive(Clone)]
pub struct Subscriptions<S> {
    store: S,
    redelivery: Redelivery<S>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    open: Arc<AtomicUsize>,
    idle_recheck: Duration,
    limits: SubscriptionLimits,
    per_principal: PerPrincipal,
}

/// Open subscriptions per principal name.
type PerPrincipal = Arc<Mutex<HashMap<String, usize>>>;

/// How many subscriptions may be open at once, and how quiet one may stay.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionLimits {
    /// On this broker.
    pub total: usize,
    /// Per principal (callers without one share no limit but the total).
    pub per_principal: usize,
    /// A stream with nothing sent for this long gets a heartbeat; zero: never.
    pub heartbeat: Duration,
}

impl<S: Store> Subscriptions<S> {
    /// Pumps stop when `shutdown` is cancelled, ending their streams with UNAVAILABLE; the
    /// tracker lets the server wait for them.
    pub fn new(
        store: S,
        redelivery: Redelivery<S>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        idle_recheck: Duration,
        limits: SubscriptionLimits,
    ) -> Self {
        Self {
            store,
            redelivery,
            shutdown,
            tracker,
            open: Arc::default(),
            idle_recheck,
            limits,
            per_principal: Arc::default(),
        }
    }

    /// Subscriptions whose pump is still running.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Spawns the pump for `spec`, opened by `principal` ("" when authentication is off), and
    /// returns its events; RESOURCE_EXHAUSTED when a limit on open subscriptions is reached.
    pub fn open(&self, spec: SubscriptionSpec, principal: &str) -> BrokerResult<EventReceiver> {
        if self.open_count() >= self.limits.total {
            return Err(BrokerError::ResourceExhausted(format!(
                "this broker has {} subscriptions open, its limit (--max-subscriptions)",
                self.limits.total
            )));
        }
        let principal_slot = if principal.is_empty() {
            None
        } else {
            let mut counts = self
                .per_principal
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = counts.entry(principal.to_owned()).or_default();
            if *count >= self.limits.per_principal {
                return Err(BrokerError::ResourceExhausted(format!(
                    "principal `{principal}` has {count} subscriptions open, its limit \
                     (--max-subscriptions-per-principal)"
                )));
            }
            *count += 1;
            Some((self.per_principal.clone(), principal.to_owned()))
        };
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
            redelivery: self.redelivery.clone(),
            spec,
            tx,
            shutdown: self.shutdown.clone(),
            idle_recheck: self.idle_recheck,
            heartbeat: self.limits.heartbeat,
            started: Instant::now(),
            last_sent_ms: AtomicU64::new(0),
            _open: OpenGuard::new(self.open.clone(), principal_slot),
        };
        self.tracker.spawn(pump.run().instrument(span));
        Ok(rx)
    }
}

/// Counts a pump as open (in total, and for its principal) for exactly as long as it exists,
/// panics included.
struct OpenGuard {
    open: Arc<AtomicUsize>,
    principal: Option<(PerPrincipal, String)>,
}

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>, principal: Option<(PerPrincipal, String)>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        crate::metrics::subscriptions_open(1.0);
        Self { open, principal }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::subscriptions_open(-1.0);
        if let Some((counts, principal)) = &self.principal {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(principal) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(principal);
                }
            }
        }
    }
}

/// How long a final error status may wait for a client that stopped reading.
const FINAL_STATUS_GRACE: Duration = Duration::from_secs(5);

/// How long handing back unacknowledged messages may take when a subscription ends.
const HAND_BACK_GRACE: Duration = Duration::from_secs(2);

/// A member at its in-flight limit re-counts this often even without an ack through this
/// broker (acks through other instances, or deadlines expiring, free room too).
const AT_LIMIT_RECHECK: Duration = Duration::from_millis(500);

/// The same failure is logged at most this often per subscription while it lasts.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What one step of the pump produced.
enum Step {
    /// Messages to send, new to this member: they add to what it holds.
    Batch(Vec<Delivery>),
    /// This member's own pending entries, sent again: it held them already.
    Replay(Vec<Delivery>),
    /// Nothing to read now: wait for a wake-up.
    Empty,
    /// The member holds `max_in_flight` unacknowledged messages: wait for acks.
    AtLimit,
}

/// The unacknowledged messages a flow-controlled member holds: counted by Redis when unsure,
/// estimated locally in between (deliveries add, only a re-count subtracts), so the round trip
/// is paid only near the limit.
struct InFlight {
    limit: u64,
    estimate: Option<u64>,
}

/// Counts a pump in `streamgate_subscriptions_at_limit` for exactly as long as it exists: held
/// while the pump waits at its in-flight limit.
struct AtLimit;

impl AtLimit {
    fn enter() -> Self {
        crate::metrics::subscriptions_at_limit(1.0);
        tracing::debug!("at the in-flight limit; waiting for acks or expiring deadlines");
        Self
    }
}

impl Drop for AtLimit {
    fn drop(&mut self) {
        crate::metrics::subscriptions_at_limit(-1.0);
    }
}

/// A Redis outage as one subscription lives it: waits that grow, and logs that do not repeat
/// more than about once a second.
struct Outage {
    waits: Option<backon::ExponentialBackoff>,
    failures: u64,
    last_log: Option<Instant>,
}

impl Outage {
    fn new() -> Self {
        Self {
            waits: None,
            failures: 0,
            last_log: None,
        }
    }

    /// Records a failure; returns how long to wait before trying again.
    fn failed(&mut self, err: &BrokerError) -> Duration {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= REPEAT_LOG_INTERVAL)
        {
            tracing::warn!(error = %err, failures = self.failures, "redis unavailable; the subscription waits and retries");
            self.last_log = Some(now);
        }
        self.waits
            .get_or_insert_with(|| {
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_jitter()
                    .without_max_times()
                    .build()
            })
            .next()
            .unwrap_or(Duration::from_secs(2))
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "redis is back; the subscription goes on"
            );
        }
        *self = Self::new();
    }
}

struct Pump<S> {
    store: S,
    redelivery: Redelivery<S>,
    spec: SubscriptionSpec,
    tx: mpsc::Sender<BrokerResult<Event>>,
    shutdown: CancellationToken,
    idle_recheck: Duration,
    heartbeat: Duration,
    /// When the pump started; `last_sent_ms` counts from here.
    started: Instant,
    /// When anything last went to the client (ms since `started`), for heartbeats.
    last_sent_ms: AtomicU64,
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

    fn membership(&self) -> Option<&GroupMembership> {
        match &self.spec.mode {
            Mode::Group(membership) if !membership.no_ack => Some(membership),
            _ => None,
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
        let mut in_flight = InFlight {
            limit: self.membership().map_or(0, |m| m.delivery.max_in_flight),
            estimate: None,
        };
        let mut outage = Outage::new();
        let mut sent = VecDeque::new();
        let mut sweep_only = false;
        let mut at_limit: Option<AtLimit> = None;
        // When this pump last read new entries; the idle recheck is measured from here, so
        // frequent sweep-only wake-ups cannot postpone it forever.
        let mut last_read = Instant::now();
        loop {
            // Before the read, so that a wake-up arriving during it is not lost.
            watch.mark_seen();
            let step = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                _ = self.tx.closed() => return Ok(()),
                // Dropped mid-flight (the two arms above), the read's reply is discarded by the
                // multiplexed connection, which stays usable. In group mode the entries it took
                // stay pending for this consumer and are handed back when the pump ends.
                step = self.next_step(&mut reader, &mut in_flight, sweep_only) => step,
            };
            if !sweep_only {
                last_read = Instant::now();
            }
            sweep_only = false;
            let step = match step {
                Ok(step) => {
                    outage.recovered();
                    step
                }
                Err(err) => {
                    let wait = self.recover(err, &mut reader, &mut outage).await?;
                    if !self.pause(tokio::time::sleep(wait)).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            let is_replay = matches!(step, Step::Replay(_));
            if !matches!(step, Step::AtLimit) {
                at_limit = None;
            }
            match step {
                Step::Empty => {
                    let (until, sweep_due) = self.next_look();
                    let woken = async {
                        tokio::select! {
                            _ = watch.changed() => false,
                            _ = tokio::time::sleep_until(until) => true,
                        }
                    };
                    match self.pause_for(woken).await? {
                        None => return Ok(()),
                        // Woken only because a sweep is due: sweep, but do not read new
                        // entries (nothing announced any), so that every idle member of a
                        // group waking for the shared sweep costs Redis nothing.
                        Some(timer) => {
                            sweep_only =
                                timer && sweep_due && last_read.elapsed() < self.idle_recheck;
                        }
                    }
                }
                Step::AtLimit => {
                    at_limit.get_or_insert_with(AtLimit::enter);
                    let group = self.membership().map(|m| m.group.as_str()).unwrap_or("");
                    let signals = self.redelivery.ack_signals(&self.spec.streams, group);
                    let acked = select_all(signals.iter().map(|n| Box::pin(n.notified())));
                    let wait = async {
                        tokio::select! {
                            _ = acked => {}
                            _ = tokio::time::sleep(AT_LIMIT_RECHECK) => {}
                        }
                    };
                    if !self.pause(wait).await? {
                        return Ok(());
                    }
                    in_flight.estimate = None;
                }
                Step::Batch(batch) | Step::Replay(batch) => {
                    if let (Some(estimate), false) = (in_flight.estimate.as_mut(), is_replay) {
                        *estimate += batch.len() as u64;
                    }
                    // There may be more: let another idle member of the group read too.
                    watch.pass_on();
                    let mode = if reader.group().is_some() {
                        "group"
                    } else {
                        "tail"
                    };
                    for delivery in batch {
                        crate::metrics::delivered(&delivery.stream, mode, 1);
                        if !self.send_delivery(delivery, &mut sent).await? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// What to do about a failed step: wait and retry (Redis unavailable; a group lost with
    /// Redis's data, recreated), or end the subscription with the error.
    async fn recover(
        &self,
        err: BrokerError,
        reader: &mut Reader,
        outage: &mut Outage,
    ) -> BrokerResult<Duration> {
        match err {
            BrokerError::Unavailable(_) => Ok(outage.failed(&err)),
            BrokerError::NotFound(_) => {
                let Mode::Group(membership) = &self.spec.mode else {
                    return Err(err);
                };
                if membership.create_from.is_none() {
                    return Err(err);
                }
                // Redis came back without the group (no persistence, or someone destroyed
                // it). Recreate it from the start of what is left, so that nothing written
                // meanwhile is skipped.
                for stream in &self.spec.streams {
                    match self
                        .store
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
                        Err(StoreError::Unavailable(cause)) => {
                            return Ok(outage.failed(&BrokerError::Unavailable(cause)));
                        }
                        Err(other) => return Err(other.into()),
                    }
                }
                tracing::warn!(
                    streams = ?self.spec.streams,
                    "the consumer group was gone (Redis restarted without persistence, or it was destroyed); recreated it from the start of each stream"
                );
                reader.restart_replay();
                Ok(Duration::ZERO)
            }
            other => Err(other),
        }
    }

    /// Waits for `wait`, unless shutdown (`Err`) or the client leaving (`Ok(false)`) comes first.
    async fn pause(&self, wait: impl Future<Output = ()>) -> BrokerResult<bool> {
        Ok(self.pause_for(wait).await?.is_some())
    }

    /// [`pause`](Self::pause) for a wait with an outcome: `Ok(None)` when the client left.
    /// While it waits, the stream gets a heartbeat whenever nothing was sent for the heartbeat
    /// interval.
    async fn pause_for<T>(&self, wait: impl Future<Output = T>) -> BrokerResult<Option<T>> {
        tokio::pin!(wait);
        loop {
            let heartbeat = async {
                if self.heartbeat.is_zero() {
                    return std::future::pending().await;
                }
                let last = Duration::from_millis(self.last_sent_ms.load(Ordering::Relaxed));
                tokio::time::sleep_until(self.started + last + self.heartbeat).await;
            };
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                _ = self.tx.closed() => return Ok(None),
                outcome = &mut wait => return Ok(Some(outcome)),
                () = heartbeat => {
                    // A full buffer means data is on its way anyway: no heartbeat needed.
                    if self.tx.try_send(Ok(Event::Heartbeat)).is_ok() {
                        tracing::trace!("heartbeat");
                    }
                    self.mark_sent();
                }
            }
        }
    }

    /// Something just went to the client: the heartbeat clock starts over.
    fn mark_sent(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_sent_ms.store(ms, Ordering::Relaxed);
    }

    /// Group mode: what this subscription held unacknowledged becomes due for redelivery now,
    /// rather than after the deadline. Best effort: if Redis is not there, the deadline still
    /// applies.
    async fn hand_back(&self) {
        let Some(membership) = self.membership() else {
            return;
        };
        let handing =
            self.redelivery
                .hand_back(membership, &self.spec.streams, membership.generated_name);
        match tokio::time::timeout(HAND_BACK_GRACE, handing).await {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => {
                tracing::debug!(count, "unacknowledged messages handed back for redelivery");
            }
            Ok(Err(err)) => {
                tracing::info!(error = %err, "could not hand back unacknowledged messages; they wait for the ack deadline")
            }
            Err(_) => tracing::info!(
                "handing back unacknowledged messages timed out; they wait for the ack deadline"
            ),
        }
    }

    /// The next step: in group mode, the member's own pending entries first, then room under
    /// the in-flight limit, then redeliveries when a sweep is due, else (unless `sweep_only`)
    /// the next read.
    async fn next_step(
        &self,
        reader: &mut Reader,
        in_flight: &mut InFlight,
        sweep_only: bool,
    ) -> BrokerResult<Step> {
        let mut room = self.spec.batch_size;
        if let Some(membership) = self.membership() {
            // First this consumer's own pending entries (a reconnect under the same name, or what
            // a crashed broker could not hand back), one page per step; a page made only of
            // deleted entries yields nothing, so read on rather than wait. Not held back by the
            // in-flight limit: they are already counted in it, and are the only way a member
            // that came back at its limit (its broker crashed with a full window) ever gets
            // under it again; a group whose members all came back so would otherwise stall.
            while reader.is_replaying() {
                let replayed = reader.next_batch(&self.store, room).await?;
                if !replayed.is_empty() {
                    return Ok(Step::Replay(replayed));
                }
            }
            if in_flight.limit > 0 {
                let held = match in_flight.estimate {
                    Some(estimate) if estimate < in_flight.limit => estimate,
                    _ => {
                        let held = self
                            .redelivery
                            .in_flight(membership, &self.spec.streams, in_flight.limit)
                            .await?;
                        in_flight.estimate = Some(held);
                        held
                    }
                };
                let free = in_flight.limit.saturating_sub(held);
                if free == 0 {
                    return Ok(Step::AtLimit);
                }
                room = room.min(usize::try_from(free).unwrap_or(usize::MAX));
            }
            // Redeliveries before new messages. Never during the replay above: its entries
            // would come back twice, once swept and once replayed.
            let redeliveries = self
                .redelivery
                .sweep_due(membership, &self.spec.streams, room)
                .await?;
            if !redeliveries.is_empty() {
                return Ok(Step::Batch(redeliveries));
            }
            if sweep_only {
                return Ok(Step::Empty);
            }
        }
        let batch = reader.next_batch(&self.store, room).await?;
        Ok(if batch.is_empty() {
            Step::Empty
        } else {
            Step::Batch(batch)
        })
    }

    /// When an idle pump looks again on its own: after `idle_recheck`, or sooner when a group
    /// sweep is due (then `true`).
    fn next_look(&self) -> (Instant, bool) {
        let recheck = Instant::now() + self.idle_recheck;
        let sweep = self.membership().and_then(|membership| {
            self.redelivery
                .next_sweep(&self.spec.streams, &membership.group)
        });
        match sweep {
            Some(due) if due < recheck => (due.max(Instant::now()), true),
            _ => (recheck, false),
        }
    }

    /// Sends one message. While the client is slow to take it, the messages waiting in the
    /// send buffer are ageing toward their ack deadline although nobody works on them yet: their
    /// leases are renewed every third of a deadline, so they do not come back as duplicates.
    /// `sent` remembers the last messages sent, to know which are still buffered.
    async fn send_delivery(
        &self,
        delivery: Delivery,
        sent: &mut VecDeque<(String, EntryId)>,
    ) -> BrokerResult<bool> {
        let Some(membership) = self.membership() else {
            return self.send(Event::Message(delivery)).await;
        };
        let key = (delivery.stream.clone(), delivery.entry.id);
        let renew_every = (membership.delivery.ack_deadline / 3).max(Duration::from_millis(20));
        let send = self.tx.send(Ok(Event::Message(delivery)));
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                result = &mut send => {
                    if result.is_err() {
                        return Ok(false);
                    }
                    self.mark_sent();
                    if sent.len() == self.tx.max_capacity() {
                        sent.pop_front();
                    }
                    sent.push_back(key);
                    return Ok(true);
                }
                _ = tokio::time::sleep(renew_every) => {
                    let buffered = self.tx.max_capacity() - self.tx.capacity();
                    let waiting = sent.iter().skip(sent.len().saturating_sub(buffered));
                    self.renew_leases(membership, waiting.chain(std::iter::once(&key))).await;
                }
            }
        }
    }

    /// Resets the idle time of messages this member still holds (not yet taken by the client).
    async fn renew_leases<'a>(
        &self,
        membership: &GroupMembership,
        held: impl Iterator<Item = &'a (String, EntryId)>,
    ) {
        let mut by_stream: Vec<(&str, Vec<EntryId>)> = Vec::new();
        for (stream, id) in held {
            match by_stream.iter_mut().find(|(s, _)| s == stream) {
                Some((_, ids)) => ids.push(*id),
                None => by_stream.push((stream, vec![*id])),
            }
        }
        for (stream, ids) in by_stream {
            match self
                .redelivery
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

    /// `Ok(false)` when the client is gone.
    async fn send(&self, event: Event) -> BrokerResult<bool> {
        let sent = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
            sent = self.tx.send(Ok(event)) => sent.is_ok(),
        };
        self.mark_sent();
        Ok(sent)
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

    /// Group mode: replay this consumer's own pending entries again from the start (after the
    /// group was recreated).
    fn restart_replay(&mut self) {
        if let Self::Group {
            streams, replaying, ..
        } = self
        {
            *replaying = streams.iter().map(|s| (s.clone(), EntryId::ZERO)).collect();
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

    /// The next deliveries: while replaying, one page of this consumer's pending entries (empty
    /// when they were all deleted, or the replay just ended); then new entries, where empty
    /// means "nothing now, wait for a wake-up".
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
            } => {
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
                Ok(batch.deliveries)
            }
        }
    }
}
