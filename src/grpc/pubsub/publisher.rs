//! `google.pubsub.v1.Publisher`: topics are streams (see [`names`](super::names)); Publish
//! appends plain entries through the core's group commit, like Produce. What a topic's stream
//! keeps follows its settings and its subscriptions' ([`retention`](super::retention)).

use tonic::{Request, Response, Status};

use super::messages::to_entry;
use super::names::{Kind, Name};
use super::records::page;
use super::retention::checked_retention;
use super::settings::refuse_unsupported_topic;
use super::{PubsubService, pb};
use crate::auth::{Caller, Permission};
use crate::delivery::{Origin, Produced};
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::convert;
use crate::model::Append;
use crate::store::Store;

/// What Pub/Sub shows as the topic of a subscription whose topic was deleted.
pub(super) const DELETED_TOPIC: &str = "_deleted-topic_";

type RpcResult<T> = Result<Response<T>, Status>;

impl<S: Store> PubsubService<S> {
    /// The topic named by `field`, the caller allowed `permission` on its stream.
    pub(super) fn topic_name(
        &self,
        permission: Permission,
        field: &str,
        text: &str,
    ) -> BrokerResult<Name> {
        let name = Name::parse(Kind::Topic, field, text)?;
        Caller::current().require(permission, [name.stream().as_str()])?;
        Ok(name)
    }

    /// The stored topic, or NOT_FOUND.
    pub(super) async fn topic(&self, name: &Name) -> BrokerResult<pb::Topic> {
        self.shared.records.existing(name).await
    }

    /// Subscriptions (names) of `topic`.
    pub(super) async fn subscriptions_of(
        &self,
        topic: &Name,
    ) -> BrokerResult<Vec<(Name, pb::Subscription)>> {
        let all: Vec<(Name, pb::Subscription)> = self
            .shared
            .records
            .list(Kind::Subscription, &topic.project)
            .await?;
        let topic = topic.to_string();
        Ok(all.into_iter().filter(|(_, s)| s.topic == topic).collect())
    }
}

/// The fields of a topic Pub/Sub lets UpdateTopic change that streamgate keeps.
fn apply_topic_update(
    stored: &mut pb::Topic,
    update: pb::Topic,
    mask: Option<prost_types::FieldMask>,
) -> BrokerResult<()> {
    let paths = super::settings::mask_paths(mask)?;
    refuse_unsupported_topic(&update)?;
    for path in paths {
        match path.as_str() {
            "labels" => stored.labels = update.labels.clone(),
            "message_retention_duration" => {
                stored.message_retention_duration = update.message_retention_duration
            }
            other => {
                return Err(BrokerError::invalid(
                    "update_mask",
                    format!(
                        "`{other}` cannot be updated (labels and message_retention_duration can)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl<S: Store> pb::publisher_server::Publisher for PubsubService<S> {
    async fn create_topic(&self, request: Request<pb::Topic>) -> RpcResult<pb::Topic> {
        let request = request.into_inner();
        let name = self.topic_name(Permission::AdminWrite, "name", &request.name)?;
        refuse_unsupported_topic(&request)?;
        checked_retention(
            "message_retention_duration",
            request.message_retention_duration.as_ref(),
        )?;
        let topic = pb::Topic {
            name: name.to_string(),
            labels: request.labels,
            message_retention_duration: request.message_retention_duration,
            ..Default::default()
        };
        self.shared.records.put(&name, &topic, true).await?;
        self.sync_retention(&name).await?;
        tracing::info!(topic = %name, stream = %name.stream(), "Pub/Sub topic created");
        Ok(Response::new(topic))
    }

    async fn update_topic(&self, request: Request<pb::UpdateTopicRequest>) -> RpcResult<pb::Topic> {
        let request = request.into_inner();
        let update = request
            .topic
            .ok_or_else(|| BrokerError::invalid("topic", "is required"))?;
        let name = self.topic_name(Permission::AdminWrite, "topic.name", &update.name)?;
        let mut topic = self.topic(&name).await?;
        apply_topic_update(&mut topic, update, request.update_mask)?;
        checked_retention(
            "topic.message_retention_duration",
            topic.message_retention_duration.as_ref(),
        )?;
        self.shared.records.put(&name, &topic, false).await?;
        self.sync_retention(&name).await?;
        Ok(Response::new(topic))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> RpcResult<pb::PublishResponse> {
        // The caller's trace context, stored with the messages as Produce does.
        let origin = Origin {
            partition_key: String::new(),
            traceparent: convert::traceparent(request.metadata()),
        };
        let request = request.into_inner();
        let name = self.topic_name(Permission::Produce, "topic", &request.topic)?;
        if request.messages.is_empty() {
            return Err(BrokerError::invalid("messages", "must not be empty").into());
        }
        self.topic(&name).await?;
        let messages = request
            .messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| to_entry(index, message))
            .collect::<BrokerResult<Vec<_>>>()?;
        let append = Append {
            stream: name.stream(),
            messages,
            require_existing_stream: false,
            ..Append::default()
        };
        let ids = match self.shared.serving.core.produce(append, &origin).await? {
            Produced::Stored(ids) => ids,
            Produced::Held(_) => {
                return Err(BrokerError::Internal("a Publish was held as delayed".into()).into());
            }
        };
        Ok(Response::new(pb::PublishResponse {
            message_ids: convert::id_strings(&ids),
        }))
    }

    async fn get_topic(&self, request: Request<pb::GetTopicRequest>) -> RpcResult<pb::Topic> {
        let name = self.topic_name(Permission::AdminRead, "topic", &request.get_ref().topic)?;
        Ok(Response::new(self.topic(&name).await?))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> RpcResult<pb::ListTopicsResponse> {
        let request = request.into_inner();
        let project = Name::project("project", &request.project)?;
        let caller = Caller::current();
        let topics: Vec<(Name, pb::Topic)> = self
            .shared
            .records
            .list(Kind::Topic, &project)
            .await?
            .into_iter()
            .filter(|(name, _)| caller.may(Permission::AdminRead, &name.stream()))
            .collect();
        let (topics, next_page_token) = page(topics, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListTopicsResponse {
            topics: topics.into_iter().map(|(_, topic)| topic).collect(),
            next_page_token,
        }))
    }

    async fn list_topic_subscriptions(
        &self,
        request: Request<pb::ListTopicSubscriptionsRequest>,
    ) -> RpcResult<pb::ListTopicSubscriptionsResponse> {
        let request = request.into_inner();
        let name = self.topic_name(Permission::AdminRead, "topic", &request.topic)?;
        self.topic(&name).await?;
        let subscriptions = self.subscriptions_of(&name).await?;
        let (subscriptions, next_page_token) =
            page(subscriptions, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListTopicSubscriptionsResponse {
            subscriptions: subscriptions
                .into_iter()
                .map(|(name, _)| name.to_string())
                .collect(),
            next_page_token,
        }))
    }

    async fn list_topic_snapshots(
        &self,
        request: Request<pb::ListTopicSnapshotsRequest>,
    ) -> RpcResult<pb::ListTopicSnapshotsResponse> {
        let name = self.topic_name(Permission::AdminRead, "topic", &request.get_ref().topic)?;
        self.topic(&name).await?;
        // No snapshots can exist (CreateSnapshot is UNIMPLEMENTED): the list is truly empty.
        Ok(Response::new(pb::ListTopicSnapshotsResponse::default()))
    }

    async fn delete_topic(&self, request: Request<pb::DeleteTopicRequest>) -> RpcResult<()> {
        let name = self.topic_name(Permission::AdminWrite, "topic", &request.get_ref().topic)?;
        self.shared.records.remove(&name).await?;
        // As on Pub/Sub: the subscriptions stay, showing their topic as deleted, and keep
        // their backlog (the stream is not deleted) until they are deleted themselves.
        for (subscription_name, mut subscription) in self.subscriptions_of(&name).await? {
            subscription.topic = DELETED_TOPIC.into();
            self.shared
                .records
                .put(&subscription_name, &subscription, false)
                .await?;
        }
        self.sync_retention(&name).await?;
        tracing::info!(topic = %name, "Pub/Sub topic deleted; its stream and subscriptions stay");
        Ok(Response::new(()))
    }

    async fn detach_subscription(
        &self,
        _request: Request<pb::DetachSubscriptionRequest>,
    ) -> RpcResult<pb::DetachSubscriptionResponse> {
        Err(BrokerError::Unimplemented(
            "DetachSubscription is not supported by streamgate: delete the subscription instead"
                .into(),
        )
        .into())
    }
}
