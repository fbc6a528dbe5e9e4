//! The Subscribe pump: one task per open subscription that reads from the store and feeds a
//! bounded channel, which the gRPC layer turns into the response stream.
//!
//! The task is a loop over one `select!`: shutdown, the client going away, and the next read
//! (or, when the last read was empty, the next wake-up). It holds no Redis connection between
//! reads, and reads no more than the client takes: the channel is bounded, and a read happens
//! only after the previous batch went into it, because in group mode a message's ack clock
//! starts the moment XREADGROUP returns it.
//!
//! What each read returns is decided by the delivery core ([`Member::next_batch`]): the
//! consumer's own pending entries first, flow control, redeliveries, then new entries. The pump
//! only moves batches to the client, waits when there is nothing, sends heartbeats, renews the
//! leases of messages still in its send buffer, and hands back what it held when it ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::guards::{AtLimit, OpenGuard, Outage, PerPrincipal};
use crate::delivery::{Batch, Credit, DeliveryCore, Member, ResolvedSpec};
use crate::error::{BrokerError, BrokerResult};
use crate::model::{Delivery, EntryId};
use crate::ops::metrics::{self, Hop};
use crate::store::Store;

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

/// A validated Subscribe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSpec {
    /// What to read, and how.
    pub member: crate::delivery::MemberSpec,
    /// Messages per read.
    pub batch_size: usize,
}

/// The receiving end of a subscription: the gRPC layer drains it.
pub type EventReceiver = mpsc::Receiver<BrokerResult<Event>>;

/// Starts and counts subscription pumps.
#[derive(Clone)]
pub struct Pumps<S> {
    pub(super) core: DeliveryCore<S>,
    pub(super) shutdown: CancellationToken,
    /// Every task a call leaves running (pumps, settle loops): the server waits for them.
    pub(super) tracker: TaskTracker,
    open: Arc<AtomicUsize>,
    idle_recheck: Duration,
    limits: PumpLimits,
    per_principal: PerPrincipal,
}

/// How many subscriptions may be open at once, and how quiet one may stay.
#[derive(Debug, Clone, Copy)]
pub struct PumpLimits {
    /// On this broker.
    pub total: usize,
    /// Per principal (callers without one share no limit but the total).
    pub per_principal: usize,
    /// A stream with nothing sent for this long gets a heartbeat; zero: never.
    pub heartbeat: Duration,
}

impl<S: Store> Pumps<S> {
    /// Pumps stop when `shutdown` is cancelled, ending their streams with UNAVAILABLE; the
    /// tracker lets the server wait for them.
    pub fn new(
        core: DeliveryCore<S>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        idle_recheck: Duration,
        limits: PumpLimits,
    ) -> Self {
        Self {
            core,
            shutdown,
            tracker,
            open: Arc::default(),
            idle_recheck,
            limits,
            per_principal: Arc::default(),
        }
    }

    /// Runs a call's own loop (a ProduceStream's, say) on the same tracker as the pumps, so the
    /// drain waits for it too; it must end when the broker stops (`shutdown`).
    pub fn spawn_call_loop(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Subscriptions whose pump is still running.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Spawns the pump reading `spec` in batches of `batch_size`, opened by `principal` (""
    /// when authentication is off), and returns its events; RESOURCE_EXHAUSTED when a limit on
    /// open subscriptions is reached.
    pub fn open(
        &self,
        spec: ResolvedSpec,
        batch_size: usize,
        principal: &str,
    ) -> BrokerResult<EventReceiver> {
        self.open_with(spec, batch_size, principal, Session::default())
    }

    /// [`open`](Self::open) for a session that grants credit and can end its reading while the
    /// call goes on ([`open_session`](super::session::open_session)).
    pub(super) fn open_with(
        &self,
        spec: ResolvedSpec,
        batch_size: usize,
        principal: &str,
        session: Session,
    ) -> BrokerResult<EventReceiver> {
        if self.open_count() >= self.limits.total {
            return Err(BrokerError::SubscriptionLimit {
                open: self.limits.total,
                principal: None,
            });
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
                return Err(BrokerError::SubscriptionLimit {
                    open: *count,
                    principal: Some(principal.to_owned()),
                });
            }
            *count += 1;
            Some((self.per_principal.clone(), principal.to_owned()))
        };
        // Room for one batch: the pump reads the next one only once this one is taken.
        let (tx, rx) = mpsc::channel(batch_size.max(1));
        let span = match spec.reading() {
            crate::delivery::ReadMode::Group { membership, .. } => {
                tracing::info_span!("subscription", streams = ?spec.streams(), group = %membership.group, consumer = %membership.consumer)
            }
            crate::delivery::ReadMode::Tail(_) => {
                tracing::info_span!("subscription", streams = ?spec.streams())
            }
        };
        let pump = Pump {
            core: self.core.clone(),
            spec,
            batch_size,
            tx,
            shutdown: self.shutdown.clone(),
            idle_recheck: self.idle_recheck,
            heartbeat: self.limits.heartbeat,
            started: Instant::now(),
            last_sent_ms: AtomicU64::new(0),
            session,
            _open: OpenGuard::new(self.open.clone(), principal_slot),
        };
        self.tracker.spawn(pump.run().instrument(span));
        Ok(rx)
    }
}

/// What a session adds to a plain subscription (Consume).
#[derive(Debug, Default)]
pub struct Session {
    /// Credit the client grants; `None`: only the in-flight limit holds reading back.
    pub credit: Option<Credit>,
    /// Cancelled when the client is done (it half-closed): reading ends as if it had gone, what
    /// the member holds is handed back, and the events end.
    pub finished: CancellationToken,
}

/// How long a final error status may wait for a client that stopped reading.
const FINAL_STATUS_GRACE: Duration = Duration::from_secs(5);

/// How long handing back unacknowledged messages may take when a subscription ends.
const HAND_BACK_GRACE: Duration = Duration::from_secs(2);

struct Pump<S> {
    core: DeliveryCore<S>,
    spec: ResolvedSpec,
    batch_size: usize,
    tx: mpsc::Sender<BrokerResult<Event>>,
    shutdown: CancellationToken,
    idle_recheck: Duration,
    heartbeat: Duration,
    /// When the pump started; `last_sent_ms` counts from here.
    started: Instant,
    /// When anything last went to the client (ms since `started`), for heartbeats.
    last_sent_ms: AtomicU64,
    session: Session,
    _open: OpenGuard,
}

impl<S: Store> Pump<S> {
    async fn run(self) {
        tracing::debug!("subscription started");
        // Boxed: a task's future is as large as its largest state, and ten thousand idle
        // subscriptions each hold one; the reads and hand-back live on the heap only while
        // they run.
        let outcome = match Box::pin(self.core.join(self.spec.clone())).await {
            Ok(mut member) => {
                let outcome = Box::pin(self.pump(&mut member)).await;
                Box::pin(self.hand_back(&member)).await;
                outcome
            }
            Err(err) => Err(err),
        };
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
    async fn pump(&self, member: &mut Member<S>) -> BrokerResult<()> {
        let started = Event::Started {
            consumer: member.consumer().to_owned(),
            streams: member.streams().to_vec(),
        };
        if !self.send(started).await? {
            return Ok(());
        }
        let mut watch = member.watch();
        let mut outage = Outage::new();
        let mut sent = VecDeque::new();
        let mut sweep_only = false;
        let mut at_limit: Option<AtLimit> = None;
        // When this pump last read new entries; the idle recheck is measured from here, so
        // frequent sweep-only wake-ups cannot postpone it forever.
        let mut last_read = Instant::now();
        loop {
            let Some(room) = self.room().await? else {
                return Ok(());
            };
            // Before the read, so that a wake-up arriving during it is not lost.
            watch.mark_seen();
            let read_started = Instant::now();
            let batch = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                _ = self.tx.closed() => return Ok(()),
                _ = self.session.finished.cancelled() => return Ok(()),
                // Dropped mid-flight (the two arms above), the read's reply is discarded by the
                // multiplexed connection, which stays usable. In group mode the entries it took
                // stay pending for this consumer and are handed back when the pump ends.
                batch = Box::pin(member.next_batch(room, sweep_only)) => batch,
            };
            if !sweep_only {
                last_read = Instant::now();
            }
            sweep_only = false;
            let batch = match batch {
                Ok(batch) => {
                    outage.recovered();
                    batch
                }
                Err(err) => {
                    let wait = self.recover(err, member, &mut outage).await?;
                    if !self.pause(tokio::time::sleep(wait)).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            if !matches!(batch, Batch::AtLimit) {
                at_limit = None;
            }
            let (deliveries, all_there_was) = match batch {
                Batch::AtLimit => {
                    at_limit.get_or_insert_with(AtLimit::enter);
                    if !self.pause(member.wait_for_room()).await? {
                        return Ok(());
                    }
                    continue;
                }
                Batch::Empty => (Vec::new(), true),
                Batch::Messages(deliveries) => (deliveries, false),
                Batch::Last(deliveries) => (deliveries, true),
            };
            if !deliveries.is_empty() {
                metrics::hop(Hop::Read, read_started.into_std());
                if !all_there_was {
                    // There may be more: let another idle member of the group read too.
                    watch.pass_on();
                }
                if let Some(credit) = &self.session.credit {
                    let bytes = deliveries
                        .iter()
                        .map(|d| d.entry.field_bytes())
                        .sum::<usize>();
                    credit.take(deliveries.len() as u64, bytes as u64);
                }
                for delivery in deliveries {
                    if !self.send_delivery(member, delivery, &mut sent).await? {
                        return Ok(());
                    }
                }
            }
            // Nothing more was there when the read ran: wait for news (kept if it came since).
            if all_there_was {
                let (until, sweep_due) = member.next_look(self.idle_recheck);
                let woken = async {
                    tokio::select! {
                        notified = watch.changed() => {
                            if let Some(notified) = notified {
                                metrics::hop(Hop::Wake, notified);
                            }
                            false
                        }
                        _ = tokio::time::sleep_until(until) => true,
                    }
                };
                match self.pause_for(woken).await? {
                    None => return Ok(()),
                    // Woken only because a sweep is due: sweep, but do not read new
                    // entries (nothing announced any), so that every idle member of a
                    // group waking for the shared sweep costs Redis nothing.
                    Some(timer) => {
                        sweep_only = timer && sweep_due && last_read.elapsed() < self.idle_recheck;
                    }
                }
            }
        }
    }

    /// How many messages the next read may take: the batch size, within the client's credit.
    /// Without credit it waits for a grant (heartbeats go on); `None` when the client left.
    async fn room(&self) -> BrokerResult<Option<usize>> {
        let Some(credit) = &self.session.credit else {
            return Ok(Some(self.batch_size));
        };
        loop {
            match credit.room() {
                0 => {
                    tracing::trace!("no credit left; waiting for the client to grant more");
                    if !self.pause(credit.granted()).await? {
                        return Ok(None);
                    }
                }
                room => {
                    return Ok(Some(
                        self.batch_size
                            .min(usize::try_from(room).unwrap_or(usize::MAX)),
                    ));
                }
            }
        }
    }

    /// What to do about a failed batch: wait and retry (Redis unavailable; a group lost with
    /// Redis's data, recreated), or end the subscription with the error.
    async fn recover(
        &self,
        err: BrokerError,
        member: &mut Member<S>,
        outage: &mut Outage,
    ) -> BrokerResult<Duration> {
        let err = match err {
            BrokerError::NoSuchGroup { .. } => match member.recreate_group(err).await {
                Ok(()) => return Ok(Duration::ZERO),
                Err(err) => err,
            },
            other => other,
        };
        match err {
            BrokerError::Unavailable(_) => Ok(outage.failed(&err)),
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
                _ = self.session.finished.cancelled() => return Ok(None),
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
    async fn hand_back(&self, member: &Member<S>) {
        match tokio::time::timeout(HAND_BACK_GRACE, member.hand_back()).await {
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

    /// Sends one message. While the client is slow to take it, the messages waiting in the
    /// send buffer are ageing toward their ack deadline although nobody works on them yet: their
    /// leases are renewed every third of a deadline, so they do not come back as duplicates.
    /// `sent` remembers the last messages sent, to know which are still buffered.
    async fn send_delivery(
        &self,
        member: &Member<S>,
        delivery: Delivery,
        sent: &mut VecDeque<(usize, EntryId)>,
    ) -> BrokerResult<bool> {
        let Some(membership) = member.membership() else {
            return self.send(Event::Message(delivery)).await;
        };
        // Which stream, as an index: no string copied per message.
        let stream = member
            .streams()
            .iter()
            .position(|s| *s == delivery.stream)
            .unwrap_or(usize::MAX);
        let key = (stream, delivery.entry.id);
        // The common case, room in the buffer: no timer armed for it.
        let item = match self.tx.try_send(Ok(Event::Message(delivery))) {
            Ok(()) => {
                self.sent_one(sent, key);
                return Ok(true);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(false),
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        let renew_every = (membership.delivery.ack_deadline / 3).max(Duration::from_millis(20));
        let send = self.tx.send(item);
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
                result = &mut send => {
                    if result.is_err() {
                        return Ok(false);
                    }
                    self.sent_one(sent, key);
                    return Ok(true);
                }
                _ = tokio::time::sleep(renew_every) => {
                    let buffered = self.tx.max_capacity() - self.tx.capacity();
                    let waiting = sent.iter().skip(sent.len().saturating_sub(buffered));
                    member.renew(waiting.copied().chain(std::iter::once(key))).await;
                }
            }
        }
    }

    /// Remembers the message just put into the send buffer (the last buffer-full of them), and
    /// restarts the heartbeat clock.
    fn sent_one(&self, sent: &mut VecDeque<(usize, EntryId)>, key: (usize, EntryId)) {
        self.mark_sent();
        if sent.len() == self.tx.max_capacity() {
            sent.pop_front();
        }
        sent.push_back(key);
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
