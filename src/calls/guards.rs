//! What a pump holds while it lives and waits: its count among open subscriptions, its place
//! in the at-limit gauge, and its view of a Redis outage (waits that grow, logs that do not
//! repeat).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

use crate::error::BrokerError;

/// Open subscriptions per principal name.
pub(super) type PerPrincipal = Arc<Mutex<HashMap<String, usize>>>;

/// Counts a pump as open (in total, and for its principal) for exactly as long as it exists,
/// panics included.
pub(super) struct OpenGuard {
    open: Arc<AtomicUsize>,
    principal: Option<(PerPrincipal, String)>,
}

impl OpenGuard {
    pub(super) fn new(open: Arc<AtomicUsize>, principal: Option<(PerPrincipal, String)>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        crate::ops::metrics::subscriptions_open(1.0);
        Self { open, principal }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        crate::ops::metrics::subscriptions_open(-1.0);
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

/// The same failure is logged at most this often per subscription while it lasts.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Counts a pump in `streamgate_subscriptions_at_limit` for exactly as long as it exists: held
/// while the pump waits at its in-flight limit.
pub(super) struct AtLimit;

impl AtLimit {
    pub(super) fn enter() -> Self {
        crate::ops::metrics::subscriptions_at_limit(1.0);
        tracing::debug!("at the in-flight limit; waiting for acks or expiring deadlines");
        Self
    }
}

impl Drop for AtLimit {
    fn drop(&mut self) {
        crate::ops::metrics::subscriptions_at_limit(-1.0);
    }
}

/// A Redis outage as one subscription lives it: waits that grow, and logs that do not repeat
/// more than about once a second.
pub(super) struct Outage {
    waits: Option<backon::ExponentialBackoff>,
    failures: u64,
    last_log: Option<Instant>,
}

impl Outage {
    pub(super) fn new() -> Self {
        Self {
            waits: None,
            failures: 0,
            last_log: None,
        }
    }

    /// Records a failure; returns how long to wait before trying again.
    pub(super) fn failed(&mut self, err: &BrokerError) -> Duration {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= REPEAT_LOG_INTERVAL)
        {
            tracing::warn!(error = %crate::error::chain(err), failures = self.failures, "redis unavailable; the subscription waits and retries");
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

    pub(super) fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "redis is back; the subscription goes on"
            );
        }
        *self = Self::new();
    }
}
