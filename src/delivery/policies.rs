//! Stored subscriptions: a consumer group's delivery policy kept in Redis, in the registry hash
//! [`SUBSCRIPTIONS_REGISTRY`] (one field per (stream, group), the policy as JSON), so that every
//! member on every broker instance applies the same one and operators change it in one place.
//!
//! Members look their policy up through a short cache ([`POLICY_TTL`]): an update made through
//! any instance is applied everywhere within that time, at the cost of one HGET per (stream,
//! group) per instance per TTL. A partition of a topic takes its topic's subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::topics::topic_of_partition;
use crate::error::{BrokerError, BrokerResult};
use crate::model::{Subscription, SubscriptionPolicy};
use crate::store::Store;

/// The hash holding every stored subscription; under `--key-prefix` like every key.
pub const SUBSCRIPTIONS_REGISTRY: &str = "streamgate:subscriptions";

/// How long a looked-up policy (or its absence) is believed before asking the store again: the
/// longest an update takes to reach every member.
pub const POLICY_TTL: Duration = Duration::from_secs(1);

/// What a lookup found, and when.
type Cached = (Option<Arc<SubscriptionPolicy>>, Instant);

/// Stored subscriptions over one store, with the members' lookup cache.
#[derive(Clone)]
pub struct Policies<S> {
    store: S,
    cache: Arc<Mutex<HashMap<(String, String), Cached>>>,
}

/// The registry field of one subscription: names cannot hold control characters (checked at the
/// edge), so a newline separates them unambiguously.
fn field(stream: &str, group: &str) -> String {
    format!("{stream}\n{group}")
}

fn decode(stream: &str, group: &str, json: &str) -> BrokerResult<SubscriptionPolicy> {
    serde_json::from_str(json).map_err(|err| {
        BrokerError::Internal(format!(
            "the stored subscription of group `{group}` on `{stream}` cannot be read ({err}); \
             delete it and create it again"
        ))
    })
}

fn encode(policy: &SubscriptionPolicy) -> BrokerResult<String> {
    serde_json::to_string(policy).map_err(|err| BrokerError::Internal(err.to_string()))
}

impl<S: Store> Policies<S> {
    /// Stored subscriptions in `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<(String, String), Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The subscription stored under exactly this name, uncached (Admin).
    pub async fn get(&self, stream: &str, group: &str) -> BrokerResult<Option<SubscriptionPolicy>> {
        self.store
            .record(SUBSCRIPTIONS_REGISTRY, &field(stream, group))
            .await?
            .map(|json| decode(stream, group, &json))
            .transpose()
    }

    /// The policy members of `group` on `stream` apply: its own subscription, else its topic's
    /// (for a partition), else none. Cached for [`POLICY_TTL`].
    pub async fn current(
        &self,
        stream: &str,
        group: &str,
    ) -> BrokerResult<Option<Arc<SubscriptionPolicy>>> {
        let key = (stream.to_owned(), group.to_owned());
        if let Some((policy, at)) = self.cache().get(&key)
            && at.elapsed() < POLICY_TTL
        {
            return Ok(policy.clone());
        }
        let mut found = self.get(stream, group).await?;
        if found.is_none()
            && let Some(topic) = topic_of_partition(stream)
        {
            found = self.get(topic, group).await?;
        }
        let found = found.map(Arc::new);
        self.cache().insert(key, (found.clone(), Instant::now()));
        Ok(found)
    }

    /// The one policy of a member reading `streams` in `group`: every stream must have the
    /// same stored subscription (or none), since a member applies one policy.
    pub async fn for_member(
        &self,
        streams: &[String],
        group: &str,
    ) -> BrokerResult<Option<Arc<SubscriptionPolicy>>> {
        let mut first: Option<(&str, Option<Arc<SubscriptionPolicy>>)> = None;
        for stream in streams {
            let policy = self.current(stream, group).await?;
            match &first {
                None => first = Some((stream, policy)),
                Some((other, seen)) if *seen != policy => {
                    return Err(BrokerError::FailedPrecondition(format!(
                        "group `{group}` has different stored subscriptions on `{other}` and \
                         `{stream}`; read them in separate calls"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(first.and_then(|(_, policy)| policy))
    }

    /// Stores a new subscription; ALREADY_EXISTS when one is stored under this name.
    pub async fn create(&self, subscription: &Subscription) -> BrokerResult<()> {
        let Subscription {
            stream,
            group,
            policy,
        } = subscription;
        let created = self
            .store
            .put_record(
                SUBSCRIPTIONS_REGISTRY,
                &field(stream, group),
                &encode(policy)?,
                true,
            )
            .await?;
        if !created {
            return Err(BrokerError::AlreadyExists(format!(
                "group `{group}` on `{stream}` has a stored subscription already; update it instead"
            )));
        }
        self.forget(stream, group);
        Ok(())
    }

    /// Replaces the policy of a stored subscription (read, changed by `change`, written back);
    /// NOT_FOUND when there is none. Returns the new policy.
    pub async fn update(
        &self,
        stream: &str,
        group: &str,
        change: impl FnOnce(&mut SubscriptionPolicy) -> BrokerResult<()>,
    ) -> BrokerResult<SubscriptionPolicy> {
        let mut policy = self
            .get(stream, group)
            .await?
            .ok_or_else(|| not_stored(stream, group))?;
        change(&mut policy)?;
        self.store
            .put_record(
                SUBSCRIPTIONS_REGISTRY,
                &field(stream, group),
                &encode(&policy)?,
                false,
            )
            .await?;
        self.forget(stream, group);
        Ok(policy)
    }

    /// Every stored subscription, ordered by stream then group.
    pub async fn list(&self) -> BrokerResult<Vec<Subscription>> {
        let mut all = Vec::new();
        for (field, json) in self.store.records(SUBSCRIPTIONS_REGISTRY).await? {
            let Some((stream, group)) = field.split_once('\n') else {
                continue;
            };
            all.push(Subscription {
                policy: decode(stream, group, &json)?,
                stream: stream.to_owned(),
                group: group.to_owned(),
            });
        }
        all.sort_by(|a, b| (&a.stream, &a.group).cmp(&(&b.stream, &b.group)));
        Ok(all)
    }

    /// Deletes a stored subscription (the group stays, with the server's defaults); NOT_FOUND
    /// when there is none.
    pub async fn delete(&self, stream: &str, group: &str) -> BrokerResult<()> {
        let deleted = self
            .store
            .remove_record(SUBSCRIPTIONS_REGISTRY, &field(stream, group))
            .await?;
        self.forget(stream, group);
        if !deleted {
            return Err(not_stored(stream, group));
        }
        Ok(())
    }

    /// A change made here is seen by this instance's members at their next batch.
    fn forget(&self, stream: &str, group: &str) {
        self.cache().retain(|(s, g), _| {
            g != group || (s != stream && topic_of_partition(s) != Some(stream))
        });
    }
}

fn not_stored(stream: &str, group: &str) -> BrokerError {
    BrokerError::NotFound(format!(
        "group `{group}` on `{stream}` has no stored subscription"
    ))
}
