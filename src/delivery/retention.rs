//! Retention that respects consumers. Redis trims by length or id only, blind to groups; a
//! stream's stored [`RetentionPolicy`] adds `acked` (delete what every group has acknowledged)
//! and `max_age` (optionally keeping what is still pending), beside `max_len`.
//!
//! Policies live in the hash [`RETENTION_REGISTRY`] (under the key prefix like every key), so
//! every instance sees the same ones. One instance at a time applies them, the holder of the
//! lease [`RETENTION_LEASE`], every interval: per stream (each partition of a topic), one
//! atomic script ([`Scripts::retain`](crate::store::Scripts::retain)) looks at the groups and trims, so no group can read
//! between the look and the trim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::policies::POLICY_TTL;
use super::topics::{Topics, topic_of_partition};
use crate::error::{BrokerError, BrokerResult};
use crate::model::{
    DEFAULT_DEDUPE_WINDOW_MS, EntryId, RetentionCut, RetentionPolicy, Trimmed, now_ms,
};
use crate::store::Store;

/// Where retention policies are stored: a hash from stream (or topic) to its policy as JSON.
pub const RETENTION_REGISTRY: &str = "streamgate:retention";

/// The lease of the instance that applies retention.
pub const RETENTION_LEASE: &str = "streamgate:retention-lease";

/// Stored retention policies, and their application.
#[derive(Clone)]
pub struct Retention<S> {
    store: S,
    topics: Topics<S>,
    holder: String,
    /// Dedupe windows by stream, as read at most [`POLICY_TTL`] ago.
    windows: Arc<Mutex<HashMap<String, (u64, Instant)>>>,
}

impl<S: Store> Retention<S> {
    /// Retention over `store`; `holder` names this instance in the lease.
    pub fn new(store: S, topics: Topics<S>, holder: String) -> Self {
        Self {
            store,
            topics,
            holder,
            windows: Arc::default(),
        }
    }

    /// How long `stream`'s dedupe keys are remembered, in ms: its stored policy's window (a
    /// partition's is its topic's), else [`DEFAULT_DEDUPE_WINDOW_MS`]; read at most once per
    /// [`POLICY_TTL`].
    pub async fn dedupe_window_ms(&self, stream: &str) -> BrokerResult<u64> {
        let cached = lock(&self.windows).get(stream).copied();
        if let Some((window, at)) = cached
            && at.elapsed() < POLICY_TTL
        {
            return Ok(window);
        }
        let mut policy = self.get(stream).await?;
        if policy.is_none()
            && let Some(topic) = topic_of_partition(stream)
        {
            policy = self.get(topic).await?;
        }
        let window = policy
            .and_then(|p| p.dedupe_window_ms)
            .unwrap_or(DEFAULT_DEDUPE_WINDOW_MS);
        lock(&self.windows).insert(stream.to_owned(), (window, Instant::now()));
        Ok(window)
    }

    /// Stores `policy` for `stream` (a stream or a topic); an empty policy removes it.
    pub async fn set(&self, stream: &str, policy: &RetentionPolicy) -> BrokerResult<()> {
        if policy.is_empty() {
            self.store.remove_record(RETENTION_REGISTRY, stream).await?;
            return Ok(());
        }
        if policy.max_len == Some(0) || policy.max_age_ms == Some(0) {
            return Err(BrokerError::invalid(
                "policy",
                "max_len and max_age must be positive (leave them unset for no limit)",
            ));
        }
        let text = serde_json::to_string(policy)
            .map_err(|err| BrokerError::Internal(format!("encoding a retention policy: {err}")))?;
        self.store
            .put_record(RETENTION_REGISTRY, stream, &text, false)
            .await?;
        Ok(())
    }

    /// The policy stored for `stream`, if any.
    pub async fn get(&self, stream: &str) -> BrokerResult<Option<RetentionPolicy>> {
        self.store
            .record(RETENTION_REGISTRY, stream)
            .await?
            .map(|text| decode(stream, &text))
            .transpose()
    }

    /// Every stored policy, by stream name.
    pub async fn list(&self) -> BrokerResult<Vec<(String, RetentionPolicy)>> {
        let mut policies = self
            .store
            .records(RETENTION_REGISTRY)
            .await?
            .into_iter()
            .map(|(stream, text)| decode(&stream, &text).map(|policy| (stream, policy)))
            .collect::<BrokerResult<Vec<_>>>()?;
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(policies)
    }

    /// Applies every stored policy once, now: what was trimmed, per stored name.
    pub async fn apply_all(&self) -> BrokerResult<Vec<(String, Trimmed)>> {
        let mut trimmed = Vec::new();
        for (name, policy) in self.list().await? {
            let done = self.apply_policy(&name, &policy).await?;
            trimmed.push((name, done));
        }
        Ok(trimmed)
    }

    /// Applies the policy stored for `name` now; NOT_FOUND when it has none.
    pub async fn apply(&self, name: &str) -> BrokerResult<Trimmed> {
        let policy = self
            .get(name)
            .await?
            .ok_or_else(|| BrokerError::NotFound(format!("`{name}` has no retention policy")))?;
        self.apply_policy(name, &policy).await
    }

    /// One application of `policy` to `name` (each partition of a topic): what it deleted.
    async fn apply_policy(&self, name: &str, policy: &RetentionPolicy) -> BrokerResult<Trimmed> {
        let cut = RetentionCut {
            acked: policy.acked,
            older_than: policy.max_age_ms.map(|age| EntryId {
                ms: now_ms().saturating_sub(age),
                seq: 0,
            }),
            keep_pending: policy.keep_pending,
            max_len: policy.max_len,
        };
        let mut total = Trimmed::default();
        for (stream, _) in self.topics.expand(&[name.to_owned()]).await? {
            let done = self.store.retain(&stream, &cut).await?;
            crate::ops::metrics::trimmed(&stream, &done);
            if done.total() > 0 {
                tracing::debug!(
                    stream,
                    acked = done.acked,
                    max_age = done.max_age,
                    max_len = done.max_len,
                    "retention trimmed entries"
                );
            }
            total.acked += done.acked;
            total.max_age += done.max_age;
            total.max_len += done.max_len;
        }
        Ok(total)
    }

    /// Applies the policies every `interval` while this instance holds the lease, until
    /// `shutdown`. Failures are logged and retried at the next turn.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let lease_ms = crate::model::millis(interval * 3);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let turn = async {
                // No policies: no lease traffic.
                if self.store.records(RETENTION_REGISTRY).await?.is_empty() {
                    return BrokerResult::Ok(());
                }
                if self
                    .store
                    .hold_lease(RETENTION_LEASE, &self.holder, lease_ms)
                    .await?
                {
                    self.apply_all().await?;
                }
                BrokerResult::Ok(())
            };
            if let Err(err) = turn.await {
                tracing::info!(error = %err, "could not apply retention policies this turn");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert: a panic elsewhere cannot leave the map half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn decode(stream: &str, text: &str) -> BrokerResult<RetentionPolicy> {
    serde_json::from_str(text).map_err(|err| {
        BrokerError::Internal(format!(
            "the retention policy of `{stream}` cannot be read ({err}); set it again"
        ))
    })
}
