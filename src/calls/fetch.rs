//! Fetch: one batch per call, for consumers that cannot hold a stream open.
//!
//! One [`Member::next_batch`](crate::delivery::Member::next_batch), the same as a subscription
//! reads, so a fetched message is exactly a subscribed one: pending until acked, same delivery
//! counts, redeliveries first, deleted entries skipped. A fetch that replays the consumer's
//! pending entries returns that one page ([`Replay::OnePage`](crate::delivery::Replay)).
//! Waiting for new entries uses the same wake-ups as an idle subscription: a waiting Fetch holds
//! no Redis connection, and everything it holds lives in the call's own future, so a client that
//! cancels mid-wait leaves nothing behind (its wake-up registration is dropped with the future).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Batch, DeliveryCore, MemberSpec, ResolvedSpec, Resume};
use crate::error::BrokerResult;
use crate::model::Delivery;
use crate::store::Store;

/// A validated Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    /// What to read, and how.
    pub member: MemberSpec,
    /// Most messages per stream.
    pub count: usize,
    /// How long an empty read may wait for new entries (already capped).
    pub wait: Duration,
}

/// What a fetch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The batch; may be empty.
    pub deliveries: Vec<Delivery>,
    /// Per stream, in request order: where the next fetch continues.
    pub next: Vec<(String, Resume)>,
}

/// The wait a fetch or a pull may use: what the client asked, at most the server's limit, and
/// ending before the client's deadline (`grpc-timeout`) with a margin for the reply to travel
/// (a tenth, at least 50 ms), so that an empty batch arrives instead of DEADLINE_EXCEEDED.
pub fn wait_within(requested: Duration, max: Duration, deadline: Option<Duration>) -> Duration {
    let mut wait = requested.min(max);
    if let Some(deadline) = deadline {
        let margin = (deadline / 10).max(Duration::from_millis(50));
        wait = wait.min(deadline.saturating_sub(margin));
    }
    wait
}

/// Runs one fetch of `spec`, at most `count` messages, waiting up to `wait` for some.
/// `stopping` ends a wait early (the server is shutting down): the call then returns what it
/// has, an empty batch, rather than holding the drain up.
pub async fn fetch<S: Store>(
    core: &DeliveryCore<S>,
    spec: ResolvedSpec,
    count: usize,
    wait: Duration,
    stopping: &CancellationToken,
) -> BrokerResult<Fetched> {
    let deadline = Instant::now() + wait;
    let mut member = core.join(spec).await?;
    let mut watch = (!wait.is_zero() && member.can_wait()).then(|| member.watch());
    loop {
        // Before the read, so that an entry landing during it still wakes the wait below.
        if let Some(watch) = watch.as_mut() {
            watch.mark_seen();
        }
        let deliveries = match member.next_batch(count, false).await? {
            Batch::Messages(deliveries) | Batch::Last(deliveries) => deliveries,
            // A fetch has no in-flight limit; an empty batch may wait.
            Batch::Empty | Batch::AtLimit => Vec::new(),
        };
        let finish = |deliveries| Fetched {
            deliveries,
            next: member.resume(),
        };
        if !deliveries.is_empty() {
            // There may be more: let another waiting member of the group read too.
            if let Some(watch) = &watch {
                watch.pass_on();
            }
            return Ok(finish(deliveries));
        }
        let Some(watch) = watch.as_mut() else {
            return Ok(finish(deliveries));
        };
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(finish(deliveries)),
            _ = stopping.cancelled() => return Ok(finish(deliveries)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_capped_by_the_server_and_the_deadline() {
        let max = Duration::from_secs(30);
        let ms = Duration::from_millis;
        assert_eq!(wait_within(ms(1000), max, None), ms(1000));
        assert_eq!(wait_within(Duration::MAX, max, None), max);
        // A 2 s deadline leaves 200 ms for the reply.
        assert_eq!(wait_within(ms(5000), max, Some(ms(2000))), ms(1800));
        assert_eq!(wait_within(ms(5000), max, Some(ms(40))), Duration::ZERO);
    }
}
