//! At-least-once delivery for consumer groups: ack deadlines, redelivery with backoff, nack,
//! deadline extension, dead letters, handing back, consumer hygiene and flow control.
//!
//! All state lives in the group's own pending entries list (PEL) in Redis, so it survives a
//! broker crash and every broker instance serving the group sees the same thing:
//! - a delivered entry is held by the consumer that read it; its idle time is its age;
//! - an entry held past `ack deadline + backoff(delivery count)` is due for redelivery;
//! - an entry given back (nacked, or held by a subscription that ended) is moved to the
//!   [`PARKED_CONSUMER`], with an idle time that makes it due after its delay;
//! - a due entry that was already delivered `max_deliveries` times goes to the dead-letter
//!   stream instead, in the same atomic step that acknowledges it on its own stream.
//!
//! What is kept in this broker's memory is only *when* to look: one sweep per (stream, group)
//! per interval, shared by every subscription and fetch of that group on this instance, with a
//! cursor so that a long pending list is walked page by page rather than rescanned from the top.
//! Across instances, the one that holds the group's sweep lease in Redis
//! ([`Registry::hold_lease`](crate::store::Registry::hold_lease), renewed at each sweep,
//! expiring after [`LEASE_INTERVALS`] intervals) sweeps on schedule and the others skip: one
//! sweep per interval, not one per instance. A sweep made due by something that happened here
//! (a nack, a hand-back) runs at once anyway, so that it is not late by an interval.
//! Each sweep step is one Lua script ([`Scripts::sweep`](crate::store::Scripts::sweep)): one
//! round trip, and cheap when nothing is due (Redis filters the pending list by idle time itself).
//!
//! Over 600 lines with its unit tests (about 110 of them): the schedule of sweeps, what one
//! sweep does, the hand-back and the consumer clean-up share one set of per-group state (when
//! each was last done, by whom), and split across files each would reach into the others'.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::membership::GroupMembership;
use super::ordering;
use crate::error::BrokerResult;
use crate::model::{
    Backoff, Delivery, EntryId, HELD_CONSUMER, PARKED_CONSUMER, PARKED_HORIZON_MS, RangeBound,
    SweepRequest, millis,
};
use crate::store::Store;

/// Server-wide redelivery settings (`streamgate serve --help`). Every broker instance serving a
/// group should use the same values: the backoff is applied by whichever instance sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedeliverySettings {
    /// The backoff of every delivery policy this broker builds, and of a nack without a delay.
    pub backoff: Backoff,
    /// Consumers idle for longer than this are deleted (their messages handed back first);
    /// zero turns the clean-up off.
    pub consumer_idle_timeout: Duration,
    /// The store is a Redis Cluster: default dead-letter streams must share their stream's slot.
    pub slot_safe_dead_letters: bool,
}

/// The longest ack deadline and the longest nack delay: what the parked consumer can express.
pub const MAX_DELAY: Duration = Duration::from_millis(PARKED_HORIZON_MS);

/// Most pending entries one sweep step looks at.
const SWEEP_SCAN: usize = 1000;

/// A sweep lease lasts this many sweep intervals: the holder renews it at every sweep (each
/// about one interval apart), and when the holder dies another instance takes over once it
/// expires.
pub const LEASE_INTERVALS: f64 = 1.5;

/// The key of a group's sweep lease (under the key prefix like every key). The stream's length
/// keeps names apart that would otherwise run together.
fn lease_key(stream: &str, group: &str) -> String {
    format!("streamgate:sweeper:{}:{stream}:{group}", stream.len())
}

/// Counters an operator reads to see what redelivery did (cumulative since start).
#[derive(Debug, Default)]
pub struct RedeliveryCounters {
    /// Messages redelivered after an expired deadline, a nack or a hand-back.
    pub redelivered: AtomicU64,
    /// Messages moved to a dead-letter stream.
    pub dead_lettered: AtomicU64,
    /// Pending messages whose entry was deleted or trimmed before anyone acknowledged it.
    pub lost_before_ack: AtomicU64,
    /// Idle consumers deleted.
    pub consumers_deleted: AtomicU64,
    /// Sweeps this instance ran.
    pub sweeps: AtomicU64,
    /// Sweeps this instance skipped because another holds the group's sweep lease.
    pub sweeps_skipped: AtomicU64,
}

/// One group on one stream: (stream, group).
type GroupKey = (String, String);

/// When this instance next looks at one (stream, group), and where.
#[derive(Debug, Clone, Copy)]
struct GroupSweep {
    next: Instant,
    cursor: RangeBound,
    next_cleanup: Instant,
    /// When an ordered group's heads are next repaired (see [`ordering`](super::ordering)).
    next_heal: Instant,
    /// Made due by an event on this instance (nack, hand-back): sweep without the lease.
    forced: bool,
}

/// Redelivery for every group this broker serves; cheap to clone, shared by Subscribe, Fetch,
/// Nack and ExtendDeadline.
#[derive(Clone)]
pub struct Redelivery<S> {
    pub(super) store: S,
    pub(super) settings: RedeliverySettings,
    /// This instance's name as a sweep-lease holder.
    holder: Arc<str>,
    sweeps: Arc<Mutex<HashMap<GroupKey, GroupSweep>>>,
    counters: Arc<RedeliveryCounters>,
    /// Spreads sweep times (±10%); seeded at random, or by a test that replays a history.
    jitter: Arc<Mutex<StdRng>>,
}

/// How often a group's pending list is swept: twice per ack deadline, so an expired message
/// waits at most half a deadline more, and at least once per shortest backoff, so a nacked one
/// is not late by much more than its backoff.
fn sweep_interval(ack_deadline: Duration, backoff_min: Duration) -> Duration {
    (ack_deadline / 2)
        .min(backoff_min)
        .max(Duration::from_millis(50))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No await happens while these are held, and every update is a single insert: a panic
    // elsewhere cannot leave them half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Store> Redelivery<S> {
    /// Redelivery over `store` with the server's `settings`.
    pub fn new(store: S, settings: RedeliverySettings) -> Self {
        Self {
            store,
            settings,
            holder: format!("sg-{:016x}", rand::rng().random::<u64>()).into(),
            sweeps: Arc::default(),
            counters: Arc::default(),
            jitter: Arc::new(Mutex::new(StdRng::from_rng(&mut rand::rng()))),
        }
    }

    /// Makes the spread of sweep times a function of `seed`: with tokio's paused clock, the
    /// same calls then sweep at the same moments, so a checker's history replays exactly.
    pub fn seed_jitter(&self, seed: u64) {
        *lock(&self.jitter) = StdRng::seed_from_u64(seed);
    }

    /// The counters, for stats and tests.
    pub fn counters(&self) -> &RedeliveryCounters {
        &self.counters
    }

    /// The counters, shared: for a view that outlives this handle.
    pub fn shared_counters(&self) -> Arc<RedeliveryCounters> {
        self.counters.clone()
    }

    /// The server-wide settings.
    pub fn settings(&self) -> &RedeliverySettings {
        &self.settings
    }

    /// The backoff every delivery policy of this broker uses.
    pub fn backoff(&self) -> Backoff {
        self.settings.backoff
    }

    /// The streams whose sweep for `group` is due now, each booked for its next turn (±10%, so
    /// that instances and groups do not fall into step), and whether an event here forced it.
    fn take_due(&self, streams: &[String], group: &str, interval: Duration) -> Vec<(String, bool)> {
        let now = Instant::now();
        let cleanup = self.cleanup_interval();
        let mut jitter = lock(&self.jitter);
        let mut sweeps = lock(&self.sweeps);
        streams
            .iter()
            .filter_map(|stream| {
                let sweep =
                    sweeps
                        .entry((stream.clone(), group.to_owned()))
                        .or_insert(GroupSweep {
                            next: now,
                            cursor: RangeBound::Unbounded,
                            next_cleanup: now + cleanup,
                            // At once: an instance that just started may be the one that died
                            // between an ack and its release.
                            next_heal: now,
                            forced: false,
                        });
                if sweep.next > now {
                    return None;
                }
                sweep.next = now + interval.mul_f64(jitter.random_range(0.9..1.1));
                Some((stream.clone(), std::mem::take(&mut sweep.forced)))
            })
            .collect()
    }

    /// Whether this instance sweeps `group` on `stream` this turn: it holds (or just took) the
    /// group's sweep lease.
    async fn holds_lease(
        &self,
        stream: &str,
        group: &str,
        interval: Duration,
    ) -> BrokerResult<bool> {
        let ttl = millis(interval.mul_f64(LEASE_INTERVALS));
        Ok(self
            .store
            .hold_lease(&lease_key(stream, group), &self.holder, ttl)
            .await?)
    }

    /// Makes the sweep of `streams` for `group` due no later than `at`.
    fn due_by(&self, streams: &[String], group: &str, at: Instant) {
        let mut sweeps = lock(&self.sweeps);
        for stream in streams {
            if let Some(sweep) = sweeps.get_mut(&(stream.clone(), group.to_owned())) {
                sweep.next = sweep.next.min(at);
                sweep.forced = true;
            }
        }
    }

    /// The (stream, group) pairs this broker has swept: the groups it serves, for metrics.
    pub fn served_groups(&self) -> Vec<(String, String)> {
        lock(&self.sweeps).keys().cloned().collect()
    }

    /// When the earliest sweep (or consumer clean-up) of `streams` for `group` is due: how long
    /// an idle member may wait.
    pub fn next_sweep(&self, streams: &[String], group: &str) -> Option<Instant> {
        let cleaning = !self.settings.consumer_idle_timeout.is_zero();
        let sweeps = lock(&self.sweeps);
        streams
            .iter()
            .filter_map(|s| sweeps.get(&(s.clone(), group.to_owned())))
            .map(|g| {
                if cleaning {
                    g.next.min(g.next_cleanup)
                } else {
                    g.next
                }
            })
            .min()
    }

    /// Wakes one idle member of `group` on `streams`, to sweep what just became due (or will be
    /// due soon: it then waits for [`next_sweep`](Self::next_sweep)).
    fn wake_group(&self, streams: &[String], group: &str) {
        self.store.watch(streams, Some(group)).pass_on();
    }

    fn cleanup_interval(&self) -> Duration {
        (self.settings.consumer_idle_timeout / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(300))
    }

    /// Redeliveries for `membership` on whichever of `streams` is due for a sweep: at most
    /// `room` messages, claimed for this member. Due entries past their delivery limit are
    /// dead-lettered on the way; entries deleted while pending are counted and logged.
    pub async fn sweep_due(
        &self,
        membership: &GroupMembership,
        streams: &[String],
        room: usize,
    ) -> BrokerResult<Vec<Delivery>> {
        let policy = &membership.delivery;
        let interval = sweep_interval(policy.ack_deadline, policy.backoff.min);
        let mut deliveries = Vec::new();
        for (stream, forced) in self.take_due(streams, &membership.group, interval) {
            if deliveries.len() >= room {
                // Not swept this time: due again at once.
                self.due_by(&[stream], &membership.group, Instant::now());
                continue;
            }
            if !forced
                && !self
                    .holds_lease(&stream, &membership.group, interval)
                    .await?
            {
                self.counters.sweeps_skipped.fetch_add(1, Ordering::Relaxed);
                crate::ops::metrics::sweep("skipped");
                continue;
            }
            self.counters.sweeps.fetch_add(1, Ordering::Relaxed);
            crate::ops::metrics::sweep("swept");
            let key = (stream.clone(), membership.group.clone());
            let cursor = lock(&self.sweeps)
                .get(&key)
                .map_or(RangeBound::Unbounded, |s| s.cursor);
            let request = SweepRequest {
                dead_letter_stream: policy
                    .dead_letter_stream_for(&stream, self.settings.slot_safe_dead_letters),
                stream_label: stream.clone(),
                policy: policy.clone(),
                cursor,
                scan: SWEEP_SCAN,
                claim: room - deliveries.len(),
            };
            let swept = self
                .store
                .sweep(&stream, &membership.group, &membership.consumer, &request)
                .await?;
            if let Some(sweep) = lock(&self.sweeps).get_mut(&key) {
                sweep.cursor = swept.next_cursor;
                // More pages to look at: come back soon rather than after a whole interval.
                if swept.next_cursor != RangeBound::Unbounded {
                    sweep.next = Instant::now();
                }
            }
            self.report(
                &stream,
                membership,
                &request,
                &swept.dead_lettered,
                &swept.lost,
            );
            if membership.ordered {
                let settled: Vec<EntryId> =
                    [swept.dead_lettered.as_slice(), swept.lost.as_slice()].concat();
                if !settled.is_empty() {
                    self.settled(&stream, &membership.group, &settled).await?;
                }
                // Forced sweeps heal too: while messages flow, nearly every sweep of an
                // ordered group is forced (each release makes it due), and a heal that waited
                // for an unforced one could wait as long as the traffic lasts.
                self.heal_if_due(&stream, &membership.group).await?;
            }
            crate::ops::metrics::redelivery(
                &stream,
                swept.claimed.len(),
                swept.dead_lettered.len(),
                swept.lost.len(),
            );
            self.counters
                .redelivered
                .fetch_add(swept.claimed.len() as u64, Ordering::Relaxed);
            deliveries.extend(
                swept
                    .claimed
                    .into_iter()
                    .map(|(entry, delivery_count)| Delivery {
                        stream: stream.clone(),
                        entry,
                        delivery_count,
                        read_at: std::time::Instant::now(),
                    }),
            );
        }
        for stream in streams {
            self.clean_up_if_due(stream, &membership.group).await;
        }
        Ok(deliveries)
    }

    fn report(
        &self,
        stream: &str,
        membership: &GroupMembership,
        request: &SweepRequest,
        dead_lettered: &[EntryId],
        lost: &[EntryId],
    ) {
        if !dead_lettered.is_empty() {
            self.counters
                .dead_lettered
                .fetch_add(dead_lettered.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                stream = %stream,
                group = %membership.group,
                dead_letter_stream = %request.dead_letter_stream,
                count = dead_lettered.len(),
                first_id = %dead_lettered[0],
                max_deliveries = request.policy.max_deliveries,
                "messages reached their delivery limit and were moved to the dead-letter stream"
            );
        }
        self.count_lost(
            stream,
            &membership.group,
            lost.len() as u64,
            lost.first().copied(),
        );
    }

    /// Pending messages whose entry was deleted or trimmed before anyone acknowledged them:
    /// counted and logged (the first id, when known), since nobody can ever receive them.
    fn count_lost(&self, stream: &str, group: &str, count: u64, first_id: Option<EntryId>) {
        if count == 0 {
            return;
        }
        self.counters
            .lost_before_ack
            .fetch_add(count, Ordering::Relaxed);
        tracing::warn!(
            stream,
            group,
            count,
            first_id = first_id.map(|id| id.to_string()),
            "pending messages were deleted or trimmed before being acknowledged; they cannot be redelivered"
        );
    }

    /// Deletes the group's consumers that have been idle past the timeout, their messages handed
    /// back first (atomically, so none become unclaimable). Best effort: failures are logged and
    /// retried at the next turn.
    async fn clean_up_if_due(&self, stream: &str, group: &str) {
        let timeout = self.settings.consumer_idle_timeout;
        if timeout.is_zero() {
            return;
        }
        {
            let now = Instant::now();
            let mut sweeps = lock(&self.sweeps);
            let Some(sweep) = sweeps.get_mut(&(stream.to_owned(), group.to_owned())) else {
                return;
            };
            if sweep.next_cleanup > now {
                return;
            }
            sweep.next_cleanup = now + self.cleanup_interval();
        }
        let consumers = match self.store.consumers(stream, group).await {
            Ok(consumers) => consumers,
            Err(err) => {
                tracing::info!(error = %err, stream, group, "could not list consumers for clean-up");
                return;
            }
        };
        for consumer in consumers {
            if consumer.name == PARKED_CONSUMER
                || consumer.name == HELD_CONSUMER
                || consumer.idle_ms < millis(timeout)
            {
                continue;
            }
            match self
                .store
                .release_consumer(stream, group, &consumer.name, Some(millis(timeout)), true)
                .await
            {
                Ok(released) if released.deleted => {
                    if released.handed_back > 0 {
                        self.due_by(&[stream.to_owned()], group, Instant::now());
                    }
                    self.counters
                        .consumers_deleted
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        stream,
                        group,
                        consumer = %consumer.name,
                        idle_ms = consumer.idle_ms,
                        handed_back = released.handed_back,
                        "deleted an idle consumer; its unacknowledged messages were handed back"
                    );
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::info!(error = %err, stream, group, consumer = %consumer.name, "could not delete an idle consumer");
                }
            }
        }
    }

    /// When a member leaves: every message it holds on `streams` becomes due for redelivery at
    /// once (rather than after its deadline), and a consumer whose name nobody can reuse (one
    /// the broker generated) is deleted in the same step.
    pub async fn hand_back(
        &self,
        membership: &GroupMembership,
        streams: &[String],
        delete_consumer: bool,
    ) -> BrokerResult<u64> {
        let mut handed_back = 0;
        for stream in streams {
            let released = self
                .store
                .release_consumer(
                    stream,
                    &membership.group,
                    &membership.consumer,
                    None,
                    delete_consumer,
                )
                .await?;
            handed_back += released.handed_back;
            self.count_lost(stream, &membership.group, released.lost, None);
        }
        if handed_back > 0 {
            self.due_by(streams, &membership.group, Instant::now());
            self.wake_group(streams, &membership.group);
        }
        Ok(handed_back)
    }

    /// Repairs an ordered group's heads once per [`ordering::HEAL_INTERVAL`], on the instance
    /// that sweeps it.
    async fn heal_if_due(&self, stream: &str, group: &str) -> BrokerResult<()> {
        {
            let now = Instant::now();
            let mut sweeps = lock(&self.sweeps);
            let Some(sweep) = sweeps.get_mut(&(stream.to_owned(), group.to_owned())) else {
                return Ok(());
            };
            if sweep.next_heal > now {
                return Ok(());
            }
            sweep.next_heal = now + ordering::HEAL_INTERVAL;
        }
        let state = ordering::state(stream, group, self.settings.slot_safe_dead_letters);
        let promoted = ordering::heal(&self.store, &state, stream, group).await?;
        if promoted > 0 {
            tracing::warn!(
                stream,
                group,
                promoted,
                "released ordered messages whose predecessor was settled without their release (a broker died between the two)"
            );
            self.nacked(stream, group, Some(Duration::ZERO));
        }
        Ok(())
    }

    /// The group's next sweep on this instance repairs its ordering heads (see
    /// [`ordering`](super::ordering)), rather than waiting for the heal interval.
    pub(super) fn heal_soon(&self, stream: &str, group: &str) {
        if let Some(sweep) = lock(&self.sweeps).get_mut(&(stream.to_owned(), group.to_owned())) {
            sweep.next_heal = Instant::now();
        }
    }

    /// After a nack: the group's sweep looks again when the earliest nacked message is due
    /// (after `delay`, or the shortest backoff), and an idle member is woken for it.
    pub fn nacked(&self, stream: &str, group: &str, delay: Option<Duration>) {
        let wait = delay.unwrap_or(self.settings.backoff.min);
        let streams = [stream.to_owned()];
        self.due_by(&streams, group, Instant::now() + wait);
        self.wake_group(&streams, group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_delivery_up_to_the_maximum() {
        let backoff = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let waits: Vec<u64> = (1..=6).map(|n| backoff.after_ms(n)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.after_ms(u64::MAX), 1000);
    }

    fn redelivery() -> Redelivery<crate::store::RedisStore> {
        // The store is lazy: nothing here talks to Redis.
        let store = crate::store::RedisStore::new(crate::store::RedisStoreConfig {
            url: "redis://127.0.0.1:1".into(),
            pool_size: 1,
            response_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            watch_block: Duration::from_secs(1),
            ca_pem: None,
            cluster_seeds: Vec::new(),
            sentinel: None,
        })
        .unwrap();
        Redelivery::new(
            store,
            RedeliverySettings {
                backoff: Backoff {
                    min: Duration::from_secs(1),
                    max: Duration::from_secs(60),
                },
                consumer_idle_timeout: Duration::ZERO,
                slot_safe_dead_letters: false,
            },
        )
    }

    #[tokio::test]
    async fn a_group_sweeps_each_stream_once_per_interval_until_made_due() {
        let redelivery = redelivery();
        let streams = vec!["a".to_owned(), "b".to_owned()];
        let hour = Duration::from_secs(3600);
        assert_eq!(
            redelivery.take_due(&streams, "g", hour),
            [("a".to_owned(), false), ("b".to_owned(), false)]
        );
        // Another member of the same group, right after: nothing is due.
        assert!(redelivery.take_due(&streams, "g", hour).is_empty());
        // Another group has its own schedule.
        assert_eq!(
            redelivery.take_due(&streams[..1], "other", hour),
            [("a".to_owned(), false)]
        );
        // A hand-back or a nack makes it due (now, or when the nack's delay ends), and forced:
        // swept here whoever holds the lease.
        redelivery.due_by(&streams[1..], "g", Instant::now());
        assert_eq!(
            redelivery.take_due(&streams, "g", hour),
            [("b".to_owned(), true)]
        );
        let soon = Instant::now() + Duration::from_secs(5);
        redelivery.due_by(&streams[..1], "g", soon);
        assert_eq!(redelivery.next_sweep(&streams, "g"), Some(soon));
    }

    #[test]
    fn sweeps_follow_the_deadline_and_the_shortest_backoff() {
        let second = Duration::from_secs(1);
        assert_eq!(sweep_interval(30 * second, second), second);
        assert_eq!(sweep_interval(second, 10 * second), second / 2);
        assert_eq!(
            sweep_interval(Duration::ZERO, second),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn dead_letters_default_to_a_stream_beside_their_own() {
        let mut policy = crate::model::DeliveryPolicy {
            ack_deadline: Duration::from_secs(30),
            backoff: Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            max_deliveries: 5,
            dead_letter_stream: None,
        };
        assert_eq!(policy.dead_letter_stream_for("orders", false), "orders:dlq");
        assert_eq!(
            policy.dead_letter_stream_for("orders", true),
            "{orders}:dlq"
        );
        assert_eq!(
            policy.dead_letter_stream_for("{t}.orders", true),
            "{t}.orders:dlq"
        );
        // (A name with braces that form no tag, like `a{}b`, cannot be wrapped (nor can one holding `}`): such streams
        // need an explicit dead_letter_stream on a cluster; README says so.)
        for stream in ["orders", "{t}.orders", "a.b:c"] {
            let dlq = policy.dead_letter_stream_for(stream, true);
            assert_eq!(
                crate::store::key_slot(&dlq),
                crate::store::key_slot(stream),
                "{dlq}"
            );
        }
        policy.dead_letter_stream = Some("all-dead".into());
        assert_eq!(policy.dead_letter_stream_for("orders", true), "all-dead");
    }
}
