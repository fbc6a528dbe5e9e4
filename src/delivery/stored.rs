//! A stored subscription's lifecycle, as every facade needs it (Admin's subscription calls,
//! Pub/Sub's subscriptions): the policy and the group made together, or neither; a change
//! that resumes delivery seen at once; a delete that leaves nothing of what it removes.

use std::future::Future;

use super::DeliveryCore;
use crate::error::{BrokerError, BrokerResult};
use crate::model::{StartId, Subscription, SubscriptionPolicy};
use crate::store::{Store, StoreError};

/// A facade's own record of a stored subscription (Pub/Sub keeps its subscription resource
/// beside the policy): made first, and taken back if the policy or the group cannot be made, so
/// that all of them exist or none does.
pub trait SubscriptionRecord: Send + Sync {
    /// Stores the record; ALREADY_EXISTS when there is one (and then nothing else is touched).
    fn store(&self) -> impl Future<Output = BrokerResult<()>> + Send;
    /// Removes the record again.
    fn remove(&self) -> impl Future<Output = BrokerResult<()>> + Send;
}

/// No record of the facade's own: Admin's subscriptions are their policy.
impl SubscriptionRecord for () {
    async fn store(&self) -> BrokerResult<()> {
        Ok(())
    }

    async fn remove(&self) -> BrokerResult<()> {
        Ok(())
    }
}

impl<S: Store> DeliveryCore<S> {
    /// The stream, or a topic's partitions.
    async fn streams_of(&self, stream: &str) -> BrokerResult<Vec<String>> {
        let topics = self.topics();
        Ok(match topics.partitions(stream).await? {
            Some(count) => topics.streams_of(stream, count),
            None => vec![stream.to_owned()],
        })
    }

    /// The group on the stream, or on every partition of a topic, created from `start` where
    /// missing.
    async fn ensure_group(&self, stream: &str, group: &str, start: StartId) -> BrokerResult<()> {
        for stream in self.streams_of(stream).await? {
            match self
                .store()
                .create_group(&stream, group, start, true, None)
                .await
            {
                Ok(()) | Err(StoreError::GroupExists { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    /// Stores `record` (the facade's own, if any), then `subscription`, then creates its group
    /// (on every partition of a topic) from `start` where missing. Each step is taken back when
    /// a later one fails. The policy is stored before the group is touched, so that a
    /// subscription stored already is refused (ALREADY_EXISTS) first.
    pub async fn create_subscription(
        &self,
        subscription: &Subscription,
        start: StartId,
        record: &impl SubscriptionRecord,
    ) -> BrokerResult<()> {
        record.store().await?;
        if let Err(err) = self.create_policy_and_group(subscription, start).await {
            let _ = record.remove().await;
            return Err(err);
        }
        let (stream, group) = (&subscription.stream, &subscription.group);
        tracing::info!(%stream, %group, policy = ?subscription.policy, "subscription created");
        Ok(())
    }

    /// [`create_subscription`](Self::create_subscription)'s policy and group.
    async fn create_policy_and_group(
        &self,
        subscription: &Subscription,
        start: StartId,
    ) -> BrokerResult<()> {
        let (stream, group) = (&subscription.stream, &subscription.group);
        if let Err(err) = self.policies().create(subscription).await {
            if matches!(err, BrokerError::AlreadyExists(_)) {
                // A create cut short (Redis restarting, or this broker dying, between the two
                // steps, with the take-back failing too) left the policy without its group: a
                // retry that is refused still leaves a subscription that works.
                self.ensure_group(stream, group, start).await?;
            }
            return Err(err);
        }
        if let Err(err) = self.ensure_group(stream, group, start).await {
            let _ = self.policies().delete(stream, group).await;
            return Err(err);
        }
        Ok(())
    }

    /// Changes a stored policy (NOT_FOUND when there is none) and returns it. When the
    /// subscription is not paused afterwards, its members idle on this instance look at once
    /// (others within a second, at their next sweep wake-up): a resumed subscription delivers
    /// what waited.
    pub async fn update_subscription(
        &self,
        stream: &str,
        group: &str,
        change: impl FnOnce(&mut SubscriptionPolicy) -> BrokerResult<()>,
    ) -> BrokerResult<SubscriptionPolicy> {
        let policy = self.policies().update(stream, group, change).await?;
        tracing::info!(%stream, %group, policy = ?policy, "subscription updated");
        if !policy.paused {
            let streams = self.streams_of(stream).await?;
            self.store().watch(&streams, Some(group)).pass_on();
        }
        Ok(policy)
    }

    /// Deletes the stored policy (NOT_FOUND when there is none); the group stays, with the
    /// server's defaults. With `with_group` (Pub/Sub, whose subscription *is* its group), the
    /// group goes too, and a policy or group already gone is no error.
    pub async fn delete_subscription(
        &self,
        stream: &str,
        group: &str,
        with_group: bool,
    ) -> BrokerResult<()> {
        match self.policies().delete(stream, group).await {
            Err(BrokerError::NotFound(_)) if with_group => {}
            other => other?,
        }
        if with_group {
            for stream in self.streams_of(stream).await? {
                match self.store().destroy_group(&stream, group).await {
                    Ok(())
                    | Err(StoreError::NoSuchGroup { .. } | StoreError::NoSuchStream { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        tracing::info!(%stream, %group, with_group, "subscription deleted");
        Ok(())
    }
}
