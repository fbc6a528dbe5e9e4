//! Delayed delivery: a Produce with a delivery time is held durably in Redis and appended to its
//! stream when due. Redis ids cannot lie in the future, so the message waits beside its stream
//! ([`DelayedKeys`]: a sorted set of tokens by due time and a hash of the messages) and gets its
//! id when it is appended.
//!
//! - **Hold** is one script on the stream's keys; then the stream is noted in the registry
//!   [`DELAYED_REGISTRY`] (a sorted set of streams by earliest due time: hints, never messages).
//! - **Move**: one broker instance at a time, the holder of [`DELAYED_LEASE`], looks every
//!   [`MOVE_INTERVAL`] for streams with something due and moves it with one script that appends
//!   and forgets each due message in the same atomic step: no loss and no duplicate, whether
//!   two instances race or a broker dies mid-way.
//! - The registry is corrected after each move (the stream's next due time), then checked
//!   against the stream's keys again and lowered if a hold slipped in meanwhile: a message held
//!   while a move was running is never left without a hint.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::BrokerResult;
use crate::model::{DelayStep, DelayedKeys, Field, HeldMessage, ScheduleStep, millis, now_ms};
use crate::store::Store;

/// The registry of streams with delayed messages, by earliest due time.
pub const DELAYED_REGISTRY: &str = "streamgate:delayed";

/// The lease of the instance that moves due messages.
pub const DELAYED_LEASE: &str = "streamgate:delayed-lease";

/// How often the lease holder looks for due messages: the precision of delivery times.
pub const MOVE_INTERVAL: Duration = Duration::from_millis(50);

/// How often the mover's lease is taken or renewed; it lasts four times that, and a holder
/// stops moving after three without a renewal, so two instances never both think they hold it.
const LEASE_RENEWAL: Duration = Duration::from_millis(250);

/// Most streams, and most messages per stream, one look moves.
const MOVE_BATCH: usize = 1000;

/// Delayed messages over a store.
#[derive(Clone)]
pub struct DelayedDelivery<S> {
    store: S,
    slot_safe: bool,
    holder: String,
}

impl<S: Store> DelayedDelivery<S> {
    /// Delayed delivery over `store`; `slot_safe` on a Redis Cluster; `holder` names this
    /// instance in the lease.
    pub fn new(store: S, slot_safe: bool, holder: String) -> Self {
        Self {
            store,
            slot_safe,
            holder,
        }
    }

    fn keys(&self, stream: &str) -> DelayedKeys {
        DelayedKeys::of(stream, self.slot_safe)
    }

    /// Holds `messages` for `stream` until `due_ms`; their tokens, in order.
    pub async fn hold(
        &self,
        stream: &str,
        due_ms: u64,
        messages: Vec<Vec<Field>>,
    ) -> BrokerResult<Vec<String>> {
        let salt: u64 = rand::rng().random();
        let held: Vec<(String, Vec<Field>)> = messages
            .into_iter()
            .enumerate()
            .map(|(i, fields)| (format!("{due_ms}-{salt:016x}-{i}"), fields))
            .collect();
        let tokens = held.iter().map(|(token, _)| token.clone()).collect();
        self.store
            .delay(
                stream,
                &self.keys(stream),
                &DelayStep::Hold {
                    due_ms,
                    messages: held,
                },
            )
            .await?;
        self.store
            .schedule(
                DELAYED_REGISTRY,
                &ScheduleStep::Note {
                    stream: stream.to_owned(),
                    due_ms,
                },
            )
            .await?;
        crate::ops::metrics::delayed("held", stream, 1);
        Ok(tokens)
    }

    /// The first `limit` messages held for `stream`, earliest first.
    pub async fn list(&self, stream: &str, limit: usize) -> BrokerResult<Vec<HeldMessage>> {
        Ok(self
            .store
            .delay(stream, &self.keys(stream), &DelayStep::List { limit })
            .await?
            .listed)
    }

    /// Forgets held messages of `stream`; how many were held.
    pub async fn cancel(&self, stream: &str, tokens: Vec<String>) -> BrokerResult<u64> {
        let cancelled = self
            .store
            .delay(stream, &self.keys(stream), &DelayStep::Cancel { tokens })
            .await?
            .cancelled;
        Ok(cancelled)
    }

    /// The streams with something due now.
    async fn due_streams(&self, now: u64) -> BrokerResult<Vec<(String, u64)>> {
        let step = ScheduleStep::Due {
            now_ms: now,
            limit: MOVE_BATCH,
        };
        Ok(self.store.schedule(DELAYED_REGISTRY, &step).await?)
    }

    /// Moves everything due now on `due` streams; how many messages were appended.
    async fn move_due(&self, now: u64, due: Vec<(String, u64)>) -> BrokerResult<u64> {
        let mut moved = 0;
        for (stream, _) in due {
            let keys = self.keys(&stream);
            let step = DelayStep::Move {
                now_ms: now,
                limit: MOVE_BATCH,
            };
            let done = self.store.delay(&stream, &keys, &step).await?;
            moved += done.moved.len() as u64;
            crate::ops::metrics::delayed("delivered", &stream, done.moved.len());
            let set = ScheduleStep::Set {
                stream: stream.clone(),
                due_ms: done.next_due_ms,
            };
            self.store.schedule(DELAYED_REGISTRY, &set).await?;
            // A hold that ran between the move and the line above noted an earlier time that
            // `Set` overwrote: look again and lower it back.
            let earliest = self
                .store
                .delay(&stream, &keys, &DelayStep::List { limit: 1 })
                .await?
                .next_due_ms;
            if let Some(due_ms) = earliest
                && Some(due_ms) != done.next_due_ms
            {
                let note = ScheduleStep::Note { stream, due_ms };
                self.store.schedule(DELAYED_REGISTRY, &note).await?;
            }
        }
        Ok(moved)
    }

    /// Moves due messages every [`MOVE_INTERVAL`] while this instance holds the lease, until
    /// `shutdown`. The lease is taken or renewed only when something is due, and then every
    /// [`LEASE_RENEWAL`], so an idle broker costs Redis one cheap read per turn. Failures are logged and retried at
    /// the next turn.
    pub async fn run(self, shutdown: CancellationToken) {
        let lease_ms = millis(LEASE_RENEWAL * 4);
        let mut holds_until: Option<Instant> = None;
        let mut next_try = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(MOVE_INTERVAL) => {}
            }
            let turn = async {
                // Idle: one cheap read per turn, no lease traffic.
                let clock = now_ms();
                let due = self.due_streams(clock).await?;
                if due.is_empty() {
                    return BrokerResult::Ok(());
                }
                let now = Instant::now();
                if now >= next_try || holds_until.is_none_or(|until| now >= until) {
                    next_try = now + LEASE_RENEWAL;
                    holds_until = self
                        .store
                        .hold_lease(DELAYED_LEASE, &self.holder, lease_ms)
                        .await?
                        .then(|| now + LEASE_RENEWAL * 3);
                }
                if holds_until.is_some_and(|until| Instant::now() < until) {
                    self.move_due(clock, due).await?;
                }
                BrokerResult::Ok(())
            };
            if let Err(err) = turn.await {
                tracing::info!(error = %err, "could not move due delayed messages this turn");
            }
        }
    }
}
