//! The stored-subscription calls of `streamgate.v1.Admin` (create, get, update, list, delete):
//! authorize, convert, call the core's [`Policies`](crate::delivery::Policies), convert back.

use tonic::{Request, Response};

use super::{AdminService, RpcResult};
use crate::auth::{Caller, Permission};
use crate::delivery::SeekTarget;
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::convert::{self, subscriptions::policy};
use crate::grpc::pb;
use crate::model::{StartId, Subscription, SubscriptionPolicy, millis};
use crate::store::{Store, StoreError};

/// The reply of the calls that answer with one subscription.
fn answer(
    stream: String,
    group: String,
    policy: SubscriptionPolicy,
) -> RpcResult<pb::Subscription> {
    Ok(Response::new(
        Subscription {
            stream,
            group,
            policy,
        }
        .into(),
    ))
}

impl<S: Store> AdminService<S> {
    /// What a new subscription gets where its request leaves a field unset.
    fn default_policy(&self) -> SubscriptionPolicy {
        let limits = &self.limits;
        SubscriptionPolicy {
            ack_deadline_ms: millis(limits.default_ack_deadline),
            backoff_min_ms: self.backoff.min_ms(),
            backoff_max_ms: self.backoff.max_ms(),
            max_deliveries: u64::from(limits.default_max_deliveries),
            dead_letter_stream: None,
            max_in_flight: u64::from(limits.default_max_in_flight),
            paused: false,
            filter: None,
            ordered: false,
            dead_letter_expired: false,
        }
    }

    /// The stream, or a topic's partitions.
    async fn streams_of(&self, stream: &str) -> BrokerResult<Vec<String>> {
        Ok(match self.topics.partitions(stream).await? {
            Some(count) => self.topics.streams_of(stream, count),
            None => vec![stream.to_owned()],
        })
    }

    /// The group on the stream, or on every partition of a topic, created where missing.
    async fn ensure_group(&self, stream: &str, group: &str, start: StartId) -> BrokerResult<()> {
        for stream in self.streams_of(stream).await? {
            match self
                .store
                .create_group(&stream, group, start, true, None)
                .await
            {
                Ok(()) | Err(StoreError::GroupExists { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    pub(super) async fn create_subscription_call(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> RpcResult<pb::Subscription> {
        let request = request.into_inner();
        let (stream, group) =
            self.group(Permission::AdminWrite, &request.stream, &request.group)?;
        let start: StartId = convert::parse("start_id", &request.start_id)?;
        let policy = policy(request.policy.as_ref(), self.default_policy(), &self.limits)?;
        let subscription = Subscription {
            stream,
            group,
            policy,
        };
        // Stored first, so that a subscription stored already is refused before the group is
        // touched; taken back when the group cannot be made.
        if let Err(err) = self.policies.create(&subscription).await {
            if matches!(err, BrokerError::AlreadyExists(_)) {
                // A create cut short (Redis restarting, or this broker dying, between the two
                // steps, with the take-back failing too) left the policy without its group: a
                // retry that is refused still leaves a subscription that works.
                self.ensure_group(&subscription.stream, &subscription.group, start)
                    .await?;
            }
            return Err(err.into());
        }
        if let Err(err) = self
            .ensure_group(&subscription.stream, &subscription.group, start)
            .await
        {
            let _ = self
                .policies
                .delete(&subscription.stream, &subscription.group)
                .await;
            return Err(err.into());
        }
        tracing::info!(stream = %subscription.stream, group = %subscription.group, policy = ?subscription.policy, "subscription created");
        Ok(Response::new(subscription.into()))
    }

    pub(super) async fn get_subscription_call(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> RpcResult<pb::Subscription> {
        let request = request.into_inner();
        let (stream, group) = self.group(Permission::AdminRead, &request.stream, &request.group)?;
        let policy = self.policies.get(&stream, &group).await?.ok_or_else(|| {
            BrokerError::NotFound(format!(
                "group `{group}` on `{stream}` has no stored subscription"
            ))
        })?;
        answer(stream, group, policy)
    }

    pub(super) async fn update_subscription_call(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> RpcResult<pb::Subscription> {
        let request = request.into_inner();
        let (stream, group) =
            self.group(Permission::AdminWrite, &request.stream, &request.group)?;
        let limits = self.limits.clone();
        let policy = self
            .policies
            .update(&stream, &group, |stored| {
                *stored = policy(request.policy.as_ref(), stored.clone(), &limits)?;
                Ok(())
            })
            .await?;
        tracing::info!(%stream, %group, policy = ?policy, "subscription updated");
        if !policy.paused {
            // Members idle on this instance look at once (others within a second, at their
            // next sweep wake-up): a resumed subscription delivers what waited.
            let streams = self.streams_of(&stream).await?;
            self.store.watch(&streams, Some(&group)).pass_on();
        }
        answer(stream, group, policy)
    }

    pub(super) async fn list_subscriptions_call(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> RpcResult<pb::ListSubscriptionsResponse> {
        let request = request.into_inner();
        let caller = Caller::current();
        let only = match request.stream.as_str() {
            "" => {
                caller.require_any(Permission::AdminRead)?;
                None
            }
            stream => Some(self.stream(Permission::AdminRead, stream)?),
        };
        let subscriptions = self
            .policies
            .list()
            .await?
            .into_iter()
            .filter(|s| only.as_ref().is_none_or(|only| *only == s.stream))
            .filter(|s| caller.may(Permission::AdminRead, &s.stream))
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
        }))
    }

    pub(super) async fn delete_subscription_call(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> RpcResult<pb::DeleteSubscriptionResponse> {
        let request = request.into_inner();
        let (stream, group) =
            self.group(Permission::AdminWrite, &request.stream, &request.group)?;
        self.policies.delete(&stream, &group).await?;
        tracing::info!(%stream, %group, "subscription deleted; the group stays, with the server's defaults");
        Ok(Response::new(pb::DeleteSubscriptionResponse {}))
    }

    pub(super) async fn seek_subscription_call(
        &self,
        request: Request<pb::SeekSubscriptionRequest>,
    ) -> RpcResult<pb::SeekSubscriptionResponse> {
        use pb::seek_subscription_request::Target;
        let request = request.into_inner();
        let (stream, group) =
            self.group(Permission::AdminWrite, &request.stream, &request.group)?;
        let target = match request.target {
            Some(Target::AfterId(id)) => SeekTarget::After(convert::parse("after_id", &id)?),
            Some(Target::SinceMs(ms)) => SeekTarget::Since(ms),
            None => {
                return Err(BrokerError::invalid(
                    "target",
                    "is required: set after_id or since_ms",
                )
                .into());
            }
        };
        let seeked = self
            .core
            .seek(&stream, &group, target, request.clear_pending)
            .await?;
        Ok(Response::new(pb::SeekSubscriptionResponse {
            position: seeked.position.to_string(),
            streams: seeked.streams,
            cleared: seeked.cleared,
        }))
    }
}
