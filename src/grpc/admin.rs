//! `streamgate.v1.Admin`: introspection and repair of streams, groups, consumers and pending
//! entries. Each handler validates, makes one store call (or, for dead letters, retention,
//! subscriptions and topics, one core call) and converts the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::{Caller, Permission};
use crate::config::Limits;
use crate::console::history::History;
use crate::delivery::{DeliveryCore, Policies, Topics};
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::convert::{self, id_strings};
use crate::grpc::pb;
use crate::model::{AutoClaimOptions, EntryId, PendingQuery, StartId};
use crate::model::{Backoff, DeliveryPolicy};
use crate::store::Store;
use crate::store::StoreError;

mod console;
mod dead_letters;
mod delayed;
mod retention;
mod subscriptions;

/// The control-plane service over any [`Store`].
pub struct AdminService<S> {
    store: S,
    limits: Arc<Limits>,
    topics: Topics<S>,
    policies: Policies<S>,
    backoff: Backoff,
    core: DeliveryCore<S>,
    history: Option<History>,
}

impl<S: Store> AdminService<S> {
    /// Serves the core's store, sharing its topic cache (a topic created here is routed at once).
    pub fn new(core: &DeliveryCore<S>, limits: Arc<Limits>) -> Self {
        Self {
            topics: core.topics().clone(),
            policies: core.policies().clone(),
            backoff: core.backoff(),
            store: core.store().clone(),
            core: core.clone(),
            limits,
            history: None,
        }
    }

    /// Serves GetHistory from `history` (what the console's charts draw).
    pub fn with_history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// A stream name the caller must hold `permission` on (`field` names it in errors).
    fn stream_as(&self, field: &str, permission: Permission, stream: &str) -> BrokerResult<String> {
        tracing::Span::current().record("stream", stream);
        let stream = convert::name(field, stream, &self.limits)?;
        Caller::current().require(permission, [stream.as_str()])?;
        Ok(stream)
    }

    fn stream(&self, permission: Permission, stream: &str) -> BrokerResult<String> {
        self.stream_as("stream", permission, stream)
    }

    /// A listing's `count`: 0 for the server default, never above the limit.
    fn listing_count(&self, requested: u32) -> BrokerResult<usize> {
        convert::count(
            "count",
            requested,
            self.limits.default_query_count,
            &self.limits,
        )
    }

    /// The (stream, group) pair most Admin calls address.
    fn group(
        &self,
        permission: Permission,
        stream: &str,
        group: &str,
    ) -> BrokerResult<(String, String)> {
        tracing::Span::current().record("group", group);
        Ok((
            self.stream(permission, stream)?,
            convert::name("group", group, &self.limits)?,
        ))
    }

    /// The (stream, group, consumer) triple of consumer-level calls.
    fn consumer(
        &self,
        permission: Permission,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> BrokerResult<(String, String, String)> {
        let (stream, group) = self.group(permission, stream, group)?;
        Ok((
            stream,
            group,
            convert::name("consumer", consumer, &self.limits)?,
        ))
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl<S: Store> pb::admin_server::Admin for AdminService<S> {
    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> RpcResult<pb::ListStreamsResponse> {
        let request = request.into_inner();
        let caller = Caller::current();
        caller.require_any(Permission::AdminRead)?;
        let cursor = match request.page_token.as_str() {
            "" => 0,
            token => token.parse().map_err(|_| {
                crate::error::BrokerError::invalid(
                    "page_token",
                    "is not a token this server issued",
                )
            })?,
        };
        let page_size = convert::count(
            "page_size",
            request.page_size,
            self.limits.default_query_count,
            &self.limits,
        )?;
        let page = self
            .store
            .list_streams(&request.pattern, cursor, page_size as u32)
            .await?;
        Ok(Response::new(pb::ListStreamsResponse {
            // Only what the caller may look at; a page may come back shorter (even empty)
            // without being the last.
            streams: page
                .streams
                .into_iter()
                .filter(|s| caller.may(Permission::AdminRead, s))
                .collect(),
            next_page_token: match page.next_cursor {
                0 => String::new(),
                next => next.to_string(),
            },
        }))
    }

    async fn get_stream_info(
        &self,
        request: Request<pb::GetStreamInfoRequest>,
    ) -> RpcResult<pb::StreamInfo> {
        let stream = self.stream(Permission::AdminRead, &request.get_ref().stream)?;
        Ok(Response::new(self.store.stream_info(&stream).await?.into()))
    }

    async fn query_messages(
        &self,
        request: Request<pb::QueryMessagesRequest>,
    ) -> RpcResult<pb::QueryMessagesResponse> {
        let request = request.into_inner();
        let stream = self.stream(Permission::AdminRead, &request.stream)?;
        let range = convert::range("min_id", &request.min_id, "max_id", &request.max_id)?;
        let count = self.listing_count(request.count)?;
        let entries = self
            .store
            .range(&stream, range, count, request.reverse)
            .await?;
        Ok(Response::new(pb::QueryMessagesResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_messages(
        &self,
        request: Request<pb::DeleteMessagesRequest>,
    ) -> RpcResult<pb::DeleteMessagesResponse> {
        let request = request.into_inner();
        let stream = self.stream(Permission::AdminWrite, &request.stream)?;
        let ids = convert::ids("ids", &request.ids, &self.limits)?;
        let deleted = self.store.delete_entries(&stream, &ids).await?;
        Ok(Response::new(pb::DeleteMessagesResponse { deleted }))
    }

    async fn trim_stream(
        &self,
        request: Request<pb::TrimStreamRequest>,
    ) -> RpcResult<pb::TrimStreamResponse> {
        let request = request.into_inner();
        let stream = self.stream(Permission::AdminWrite, &request.stream)?;
        let policy = request
            .trim
            .as_ref()
            .ok_or_else(|| crate::error::BrokerError::invalid("trim", "is required"))?;
        let policy = convert::trim_policy("trim", policy)?;
        let trimmed = self.store.trim(&stream, policy).await?;
        Ok(Response::new(pb::TrimStreamResponse { trimmed }))
    }

    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> RpcResult<pb::DeleteStreamResponse> {
        let stream = self.stream(Permission::AdminWrite, &request.get_ref().stream)?;
        self.store.delete_stream(&stream).await?;
        Ok(Response::new(pb::DeleteStreamResponse {}))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> RpcResult<pb::CreateGroupResponse> {
        let request = request.into_inner();
        let (stream, group) =
            self.group(Permission::AdminWrite, &request.stream, &request.group)?;
        let start: StartId = convert::parse("start_id", &request.start_id)?;
        self.store
            .create_group(
                &stream,
                &group,
                start,
                request.create_stream,
                request.entries_read,
            )
            .await?;
        Ok(Response::new(pb::CreateGroupResponse {}))
    }

    async fn destroy_group(
        &self,
        request: Request<pb::DestroyGroupRequest>,
    ) -> RpcResult<pb::DestroyGroupResponse> {
        let (stream, group) = self.group(
            Permission::AdminWrite,
            &request.get_ref().stream,
            &request.get_ref().group,
        )?;
        self.store.destroy_group(&stream, &group).await?;
        Ok(Response::new(pb::DestroyGroupResponse {}))
    }

    async fn set_group_id(
        &self,
        request: Request<pb::SetGroupIdRequest>,
    ) -> RpcResult<pb::SetGroupIdResponse> {
        let request = request.into_inner();
        let (stream, group) =
            self.group(Permission::AdminWrite, &request.stream, &request.group)?;
        if request.id.is_empty() {
            return Err(crate::error::BrokerError::invalid(
                "id",
                "is required (`$`, `0` or a stream id)",
            )
            .into());
        }
        let id: StartId = convert::parse("id", &request.id)?;
        self.store
            .set_group_id(&stream, &group, id, request.entries_read)
            .await?;
        Ok(Response::new(pb::SetGroupIdResponse {}))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> RpcResult<pb::ListGroupsResponse> {
        let stream = self.stream(Permission::AdminRead, &request.get_ref().stream)?;
        let groups = self.store.groups(&stream).await?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_consumer(
        &self,
        request: Request<pb::CreateConsumerRequest>,
    ) -> RpcResult<pb::CreateConsumerResponse> {
        let r = request.get_ref();
        let (stream, group, consumer) =
            self.consumer(Permission::AdminWrite, &r.stream, &r.group, &r.consumer)?;
        let created = self
            .store
            .create_consumer(&stream, &group, &consumer)
            .await?;
        Ok(Response::new(pb::CreateConsumerResponse { created }))
    }

    async fn delete_consumer(
        &self,
        request: Request<pb::DeleteConsumerRequest>,
    ) -> RpcResult<pb::DeleteConsumerResponse> {
        let r = request.get_ref();
        let (stream, group, consumer) =
            self.consumer(Permission::AdminWrite, &r.stream, &r.group, &r.consumer)?;
        let pending_dropped = self
            .store
            .delete_consumer(&stream, &group, &consumer)
            .await?;
        Ok(Response::new(pb::DeleteConsumerResponse {
            pending_dropped,
        }))
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> RpcResult<pb::ListConsumersResponse> {
        let (stream, group) = self.group(
            Permission::AdminRead,
            &request.get_ref().stream,
            &request.get_ref().group,
        )?;
        let consumers = self.store.consumers(&stream, &group).await?;
        Ok(Response::new(pb::ListConsumersResponse {
            consumers: consumers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_pending_summary(
        &self,
        request: Request<pb::GetPendingSummaryRequest>,
    ) -> RpcResult<pb::PendingSummary> {
        let (stream, group) = self.group(
            Permission::AdminRead,
            &request.get_ref().stream,
            &request.get_ref().group,
        )?;
        Ok(Response::new(
            self.store.pending_summary(&stream, &group).await?.into(),
        ))
    }

    async fn list_pending(
        &self,
        request: Request<pb::ListPendingRequest>,
    ) -> RpcResult<pb::ListPendingResponse> {
        let request = request.into_inner();
        let (stream, group) = self.group(Permission::AdminRead, &request.stream, &request.group)?;
        let query = PendingQuery {
            range: convert::range("min_id", &request.min_id, "max_id", &request.max_id)?,
            count: self.listing_count(request.count)? as u64,
            consumer: match request.consumer.as_str() {
                "" => None,
                consumer => Some(convert::name("consumer", consumer, &self.limits)?),
            },
            min_idle_ms: request.min_idle_ms,
        };
        let entries = self.store.pending(&stream, &group, &query).await?;
        let policy = match self.policies.current(&stream, &group).await? {
            Some(stored) => stored.delivery(),
            None => DeliveryPolicy {
                ack_deadline: self.limits.default_ack_deadline,
                backoff: self.backoff,
                max_deliveries: 0,
                dead_letter_stream: None,
            },
        };
        Ok(Response::new(pb::ListPendingResponse {
            entries: entries
                .into_iter()
                .map(|entry| convert::pending_entry(entry, &policy))
                .collect(),
        }))
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> RpcResult<pb::ClaimResponse> {
        let r = request.get_ref();
        let (stream, group, consumer) =
            self.consumer(Permission::AdminWrite, &r.stream, &r.group, &r.consumer)?;
        let options = convert::claim_options(r, &self.limits)?;
        let claimed = self
            .store
            .claim(&stream, &group, &consumer, &options)
            .await?;
        Ok(Response::new(pb::ClaimResponse {
            claimed_ids: id_strings(&claimed.ids),
            messages: claimed.entries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn auto_claim(
        &self,
        request: Request<pb::AutoClaimRequest>,
    ) -> RpcResult<pb::AutoClaimResponse> {
        let r = request.get_ref();
        let (stream, group, consumer) =
            self.consumer(Permission::AdminWrite, &r.stream, &r.group, &r.consumer)?;
        let start = match r.start_id.as_str() {
            "" => EntryId::ZERO,
            text => convert::parse("start_id", text)?,
        };
        let count = self.listing_count(r.count)?;
        let options = AutoClaimOptions {
            min_idle_ms: r.min_idle_ms,
            start,
            count,
            just_id: r.just_id,
        };
        let result = self
            .store
            .auto_claim(&stream, &group, &consumer, &options)
            .await?;
        Ok(Response::new(result.into()))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> RpcResult<pb::ListDeadLettersResponse> {
        self.list_dead_letters_call(request).await
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> RpcResult<pb::ReplayDeadLettersResponse> {
        self.replay_dead_letters_call(request).await
    }

    async fn set_retention(
        &self,
        request: Request<pb::SetRetentionRequest>,
    ) -> RpcResult<pb::RetentionPolicy> {
        self.set_retention_call(request).await
    }

    async fn get_retention(
        &self,
        request: Request<pb::GetRetentionRequest>,
    ) -> RpcResult<pb::RetentionPolicy> {
        self.get_retention_call(request).await
    }

    async fn apply_retention(
        &self,
        request: Request<pb::GetRetentionRequest>,
    ) -> RpcResult<pb::ApplyRetentionResponse> {
        self.apply_retention_call(request).await
    }

    async fn list_delayed(
        &self,
        request: Request<pb::ListDelayedRequest>,
    ) -> RpcResult<pb::ListDelayedResponse> {
        self.list_delayed_call(request).await
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> RpcResult<pb::StreamHistory> {
        self.get_history_call(request).await
    }

    async fn describe_caller(
        &self,
        request: Request<pb::DescribeCallerRequest>,
    ) -> RpcResult<pb::CallerDescription> {
        self.describe_caller_call(request).await
    }

    async fn cancel_delayed(
        &self,
        request: Request<pb::CancelDelayedRequest>,
    ) -> RpcResult<pb::CancelDelayedResponse> {
        self.cancel_delayed_call(request).await
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> RpcResult<pb::CreateTopicResponse> {
        let request = request.into_inner();
        let topic = self.stream_as("topic", Permission::AdminWrite, &request.topic)?;
        let (created, partitions) = self.topics.create(&topic, request.partitions).await?;
        Ok(Response::new(pb::CreateTopicResponse {
            created,
            partitions,
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> RpcResult<pb::TopicInfo> {
        let topic = self.stream_as("topic", Permission::AdminRead, &request.get_ref().topic)?;
        let count = self.topics.partitions(&topic).await?.ok_or_else(|| {
            BrokerError::NotFound(format!("`{topic}` is not a partitioned topic"))
        })?;
        let mut partitions = Vec::with_capacity(count as usize);
        for (index, stream) in self
            .topics
            .streams_of(&topic, count)
            .into_iter()
            .enumerate()
        {
            // A partition nobody wrote to yet does not exist: empty, no groups.
            let length = match self.store.stream_info(&stream).await {
                Ok(info) => info.length,
                Err(StoreError::NoSuchStream { .. }) => 0,
                Err(err) => return Err(BrokerError::from(err).into()),
            };
            let groups = match self.store.groups(&stream).await {
                Ok(groups) => groups,
                Err(StoreError::NoSuchStream { .. }) => Vec::new(),
                Err(err) => return Err(BrokerError::from(err).into()),
            };
            partitions.push(pb::PartitionInfo {
                index: index as u32,
                stream,
                length,
                groups: groups.into_iter().map(Into::into).collect(),
            });
        }
        Ok(Response::new(pb::TopicInfo { topic, partitions }))
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> RpcResult<pb::Subscription> {
        self.create_subscription_call(request).await
    }

    async fn get_subscription(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> RpcResult<pb::Subscription> {
        self.get_subscription_call(request).await
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> RpcResult<pb::Subscription> {
        self.update_subscription_call(request).await
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> RpcResult<pb::ListSubscriptionsResponse> {
        self.list_subscriptions_call(request).await
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> RpcResult<pb::DeleteSubscriptionResponse> {
        self.delete_subscription_call(request).await
    }

    async fn seek_subscription(
        &self,
        request: Request<pb::SeekSubscriptionRequest>,
    ) -> RpcResult<pb::SeekSubscriptionResponse> {
        self.seek_subscription_call(request).await
    }
}
