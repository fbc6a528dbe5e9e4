//! Gauges of what lives outside this process, sampled on a timer: the Redis pool, and the
//! pending count and lag of every group this broker serves. Apart from [`crate::ops::metrics`]
//! because it reads the broker's store and redelivery state, which the recording functions
//! there must not depend on (everything records metrics).

use std::time::Duration;

use metrics::{counter, gauge};
use tokio_util::sync::CancellationToken;

use crate::delivery::Redelivery;
use crate::store::Store;

/// Samples what lives outside this process every `interval` until `stop`: the Redis pool, and
/// the pending count and lag of every group this broker serves.
pub async fn sample<S: Store>(
    store: S,
    redelivery: Redelivery<S>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        if let Some(pool) = store.pool_state() {
            gauge!("streamgate_redis_pool_connections", "state" => "idle")
                .set(f64::from(pool.idle));
            gauge!("streamgate_redis_pool_connections", "state" => "in_use")
                .set(f64::from(pool.connections.saturating_sub(pool.idle)));
            // Opened against closed tells a pool replacing connections from one leaking them.
            counter!("streamgate_redis_connections_opened_total").absolute(pool.opened);
            counter!("streamgate_redis_connections_closed_total", "reason" => "broken")
                .absolute(pool.closed_broken);
            counter!("streamgate_redis_connections_closed_total", "reason" => "aged")
                .absolute(pool.closed_aged);
        }
        // What a long run must keep bounded: wake-up registrations and the groups whose
        // sweeps this broker schedules.
        gauge!("streamgate_wakeup_registrations").set(store.wakeups().watcher_count() as f64);
        // Every task the runtime holds (pumps, calls, timers): a leak of any kind shows here.
        gauge!("streamgate_tasks_alive").set(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as f64,
        );
        let served = redelivery.served_groups();
        gauge!("streamgate_swept_groups").set(served.len() as f64);
        for (stream, group) in served {
            let Ok(groups) = store.groups(&stream).await else {
                continue;
            };
            if let Some(info) = groups.into_iter().find(|g| g.name == group) {
                let labels = [("stream", stream.clone()), ("group", group.clone())];
                gauge!("streamgate_group_pending", &labels).set(info.pending as f64);
                if let Some(lag) = info.lag {
                    gauge!("streamgate_group_lag", &labels).set(lag as f64);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
