//! Ordered delivery: messages with the same ordering key reach a subscription's members in the
//! order they were produced, one outstanding at a time per key (Pub/Sub's rule), while messages
//! of other keys flow past them.
//!
//! Redis Streams keeps one pending list per group and hands new entries out in id order, so the
//! design keeps every message in that pending list (nothing is lost if a broker dies, and every
//! instance sees the same state) and adds two keys beside the stream ([`OrderingState`]):
//! - `heads`, a hash from ordering key to the id of the key's outstanding message;
//! - `held`, a sorted set of the messages waiting behind their key's head, by key then id.
//!
//! Each step is one atomic script ([`Scripts::order`](crate::store::Scripts::order)), so two broker instances never both let a
//! key's next message through:
//! 1. **Admit** (a member reads new entries, XREADGROUP inside the same script, so that two
//!    members reading at once cannot admit a key's later message before its earlier one): an
//!    entry whose key has a head still pending is *held*: moved in the pending list to [`HELD_CONSUMER`](crate::model::HELD_CONSUMER),
//!    which the redelivery sweep never claims from, and added to `held`; any other becomes its
//!    key's head and is delivered.
//! 2. **Release** (an ack, a dead letter, a deleted entry): the settled message's key gets its
//!    next held message as head, handed to the parked consumer due at once, and the group's
//!    sweep delivers it like any redelivery (to whichever member sweeps; with its delivery
//!    count, deadline and dead-letter limit). An ack and its release are one script
//!    ([`OrderStep::Ack`]): when they were two, an ack whose reply was lost (a Redis timeout
//!    under load) or a broker that died between them left the key waiting for step 4.
//! 3. A nack or an expired deadline changes nothing here: the head stays the head, so the later
//!    messages of its key wait until it is redelivered and settled.
//! 4. **Heal**: a head that is no longer pending (a dead letter whose release failed, an entry
//!    deleted behind the group's back, state written by an older broker) is repaired by admit
//!    and release on every key they touch, at the next sweep after a failed step, and by the
//!    sweeping instance paging through all heads once per [`HEAL_INTERVAL`] (forced sweeps
//!    included, so that traffic on other keys cannot postpone it).
//!
//! Messages without an ordering key are not affected. Throughput per key is one message per
//! ack round trip plus a sweep hand-over: ordering trades speed within a key for order.

use std::time::Duration;

use crate::model::{Delivery, EntryId, OrderStep, Ordered, OrderingState};
use crate::store::{Store, StoreResult};

/// How often the instance that sweeps an ordered group repairs heads left behind by a broker
/// that died between an ack and its release.
pub const HEAL_INTERVAL: Duration = Duration::from_secs(30);

/// Where `group`'s ordering state on `stream` lives.
pub fn state(stream: &str, group: &str, slot_safe: bool) -> OrderingState {
    OrderingState::of(stream, group, slot_safe)
}

/// What reading new entries for an ordered member did.
#[derive(Debug, Default)]
pub struct Admitted {
    /// What may be delivered now, in order.
    pub kept: Vec<Delivery>,
    /// How many were held back.
    pub held: usize,
    /// Streams where held messages were released on the way (their sweep is due now).
    pub promoted: Vec<String>,
}

/// Step 1 of the module docs: reads up to `count` new entries of each of `streams` as
/// `consumer` of `group` and admits them, each stream in one atomic step.
pub async fn read_new<S: Store>(
    store: &S,
    slot_safe: bool,
    group: &str,
    consumer: &str,
    streams: &[String],
    count: usize,
) -> StoreResult<Admitted> {
    let mut admitted = Admitted::default();
    for stream in streams {
        let step = OrderStep::Read {
            consumer: consumer.to_owned(),
            count,
        };
        let Ordered {
            held,
            read,
            promoted,
            ..
        } = store
            .order(stream, group, &state(stream, group, slot_safe), &step)
            .await?;
        if promoted > 0 {
            admitted.promoted.push(stream.clone());
        }
        admitted.held += held.len();
        admitted.kept.extend(read.into_iter().map(|entry| Delivery {
            stream: stream.clone(),
            entry,
            delivery_count: 1,
            read_at: std::time::Instant::now(),
        }));
    }
    Ok(admitted)
}

/// Step 2 of the module docs: `ids` of `stream` are settled. Returns how many held messages
/// were released.
pub async fn release<S: Store>(
    store: &S,
    slot_safe: bool,
    stream: &str,
    group: &str,
    ids: &[EntryId],
) -> StoreResult<u64> {
    let state = state(stream, group, slot_safe);
    let released = store
        .order(stream, group, &state, &OrderStep::Release(ids.to_vec()))
        .await?;
    let mut promoted = released.promoted;
    if released.heal_from.is_some() {
        promoted += heal(store, &state, stream, group).await?;
    }
    Ok(promoted)
}

/// Step 4 of the module docs, over every head of the group. Returns how many held messages
/// were released.
pub async fn heal<S: Store>(
    store: &S,
    state: &OrderingState,
    stream: &str,
    group: &str,
) -> StoreResult<u64> {
    let mut promoted = 0;
    let mut cursor = 0;
    loop {
        let page = store
            .order(stream, group, state, &OrderStep::Heal { cursor })
            .await?;
        promoted += page.promoted;
        match page.heal_from {
            Some(next) => cursor = next,
            None => return Ok(promoted),
        }
    }
}
