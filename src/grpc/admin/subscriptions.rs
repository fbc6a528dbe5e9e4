//! The stored-subscription calls of `streamgate.v1.Admin` (create, get, update, list, delete):
//! authorize, convert, call the core's [`Policies`](crate::delivery::Policies), convert back.

use tonic::{Request, Response};

use super::{AdminService, RpcResult};
use crate::auth::{Caller, Permission};
use crate::delivery::SeekTarget;
use crate::error::BrokerError;
use crate::grpc::convert::{self, subscriptions::policy};
use crate::grpc::pb;
use crate::model::{StartId, Subscription, SubscriptionPolicy};
use crate::store::Store;

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
    pub(super) async fn create_subscription_call(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> RpcResult<pb::Subscription> {
        let request = request.into_inner();
        let (stream, group) =
            self.group(Permission::AdminWrite, &request.stream, &request.group)?;
        let start: StartId = convert::parse("start_id", &request.start_id)?;
        let defaults = self.limits.default_policy(self.backoff);
        let policy = policy(request.policy.as_ref(), defaults, &self.limits)?;
        let subscription = Subscription {
            stream,
            group,
            policy,
        };
        self.core
            .create_subscription(&subscription, start, &())
            .await?;
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
            .core
            .update_subscription(&stream, &group, |stored| {
                *stored = policy(request.policy.as_ref(), stored.clone(), &limits)?;
                Ok(())
            })
            .await?;
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
        self.core
            .delete_subscription(&stream, &group, false)
            .await?;
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
