//! `google.pubsub.v1.Subscriber`: subscriptions are stored subscriptions (a consumer group on
//! the topic's stream with its policy, see [`settings`](super::settings)) plus a Pub/Sub record;
//! Pull is a Fetch, StreamingPull a Consume session ([`streaming_pull`](super::streaming_pull)).

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};

use super::ack_ids;
use super::messages::from_entry;
use super::names::{Kind, Name};
use super::records::{Records, page};
use super::settings::{normalized, policy, refuse_unsupported_subscription};
use super::{PubsubService, StreamingPullStream, pb};
use crate::auth::{Caller, Permission};
use crate::calls::fetch::{fetch, wait_within};
use crate::delivery::{GroupMembership, MemberSpec, OwnSettings, SeekTarget, SubscriptionRecord};
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::convert;
use crate::model::{
    AckOutcome, Delivery, DeliveryPolicy, EntryId, StartId, Subscription, SubscriptionPolicy,
    millis,
};
use crate::store::Store;

type RpcResult<T> = Result<Response<T>, Status>;

/// The consumer name unary Pull reads as: one member per subscription and broker, so that
/// its messages stay pending (and are redelivered after their deadline) between calls.
const PULL_CONSUMER: &str = "pubsub-pull";

/// What a subscription call works on: its name, record, and the group it is.
pub(super) struct Target {
    pub(super) name: Name,
    pub(super) subscription: pb::Subscription,
    /// The topic's stream.
    pub(super) stream: String,
}

impl Target {
    /// The consumer group.
    pub(super) fn group(&self) -> &str {
        &self.name.id
    }
}

fn unimplemented_snapshots() -> Status {
    BrokerError::Unimplemented(
        "snapshots are not supported by streamgate yet; Seek to a time works".into(),
    )
    .into()
}

impl<S: Store> PubsubService<S> {
    /// The server's defaults for what Pub/Sub does not set, but no in-flight limit of the
    /// subscription's own: each stream's `max_outstanding_messages` is its limit.
    fn policy_defaults(&self) -> SubscriptionPolicy {
        let defaults = self
            .shared
            .serving
            .limits
            .default_policy(self.shared.serving.core.backoff());
        SubscriptionPolicy {
            max_in_flight: 0,
            ..defaults
        }
    }

    /// What a Pub/Sub reader of `target` reads: the subscription's group on its topic's
    /// stream, as `consumer` (`None`: a generated name), its stored policy applying and the
    /// server's defaults where the policy sets nothing; `max_in_flight`: the reader's own limit.
    pub(super) fn member(
        &self,
        target: &Target,
        consumer: Option<&str>,
        max_in_flight: Option<u64>,
    ) -> MemberSpec {
        let limits = &self.shared.serving.limits;
        let defaults = OwnSettings {
            delivery: DeliveryPolicy {
                ack_deadline: limits.default_ack_deadline,
                backoff: self.shared.serving.core.backoff(),
                max_deliveries: u64::from(limits.default_max_deliveries),
                dead_letter_stream: None,
            },
            max_in_flight: u64::from(limits.default_max_in_flight),
        };
        let membership = GroupMembership::of_stored(
            target.group().to_owned(),
            consumer.map(str::to_owned),
            defaults,
            max_in_flight,
        );
        MemberSpec::group_member(target.stream.clone(), membership)
    }

    /// The subscription named by `text`, the caller allowed `permission` on its topic's stream.
    pub(super) async fn target(&self, permission: Permission, text: &str) -> BrokerResult<Target> {
        let name = Name::parse(Kind::Subscription, "subscription", text)?;
        let subscription: pb::Subscription = self.shared.records.existing(&name).await?;
        let topic = Name::parse(Kind::Topic, "topic", &subscription.topic).map_err(|_| {
            BrokerError::NotFound(format!(
                "the topic of subscription {name} was deleted; delete the subscription"
            ))
        })?;
        let stream = topic.stream();
        Caller::current().require(permission, [stream.as_str()])?;
        Ok(Target {
            name,
            subscription,
            stream,
        })
    }

    /// Parsed ack ids, by the consumer they were delivered to; INVALID_ARGUMENT naming the
    /// first that this broker did not hand out.
    fn ack_ids_by_consumer<'a>(
        field: &str,
        ack_ids: &'a [String],
    ) -> BrokerResult<BTreeMap<&'a str, Vec<EntryId>>> {
        let mut by_consumer: BTreeMap<&str, Vec<EntryId>> = BTreeMap::new();
        for (i, ack_id) in ack_ids.iter().enumerate() {
            let (id, consumer) = ack_ids::decode(ack_id).ok_or_else(|| {
                BrokerError::invalid(
                    format!("{field}[{i}]"),
                    format!("`{ack_id}` is not an ack id"),
                )
            })?;
            by_consumer.entry(consumer).or_default().push(id);
        }
        Ok(by_consumer)
    }
}

/// A Pub/Sub subscription's resource, stored and (should the rest fail) removed by the core
/// with its policy and group.
struct Record<'a, S> {
    records: &'a Records<S>,
    target: &'a Target,
}

impl<S: Store> SubscriptionRecord for Record<'_, S> {
    async fn store(&self) -> BrokerResult<()> {
        let target = self.target;
        self.records
            .put(&target.name, &target.subscription, true)
            .await
    }

    async fn remove(&self) -> BrokerResult<()> {
        self.records.remove(&self.target.name).await
    }
}

/// A delivery as Pub/Sub's received message; `delivery_attempt` only with a dead-letter
/// policy, as Pub/Sub sets it.
pub(super) fn received(delivery: Delivery, consumer: &str, attempts: bool) -> pb::ReceivedMessage {
    let delivery_attempt = if attempts {
        i32::try_from(delivery.delivery_count).unwrap_or(i32::MAX)
    } else {
        0
    };
    pb::ReceivedMessage {
        ack_id: ack_ids::encode(delivery.entry.id, consumer),
        message: Some(from_entry(delivery.entry)),
        delivery_attempt,
    }
}

/// What UpdateSubscription may change, laid over the stored subscription.
fn apply_update(
    stored: &mut pb::Subscription,
    update: pb::Subscription,
    mask: Option<prost_types::FieldMask>,
) -> BrokerResult<()> {
    let paths = super::settings::mask_paths(mask)?;
    refuse_unsupported_subscription(&update)?;
    for path in paths {
        match path.as_str() {
            "ack_deadline_seconds" => stored.ack_deadline_seconds = update.ack_deadline_seconds,
            "labels" => stored.labels = update.labels.clone(),
            "retain_acked_messages" => stored.retain_acked_messages = update.retain_acked_messages,
            "message_retention_duration" => {
                stored.message_retention_duration = update.message_retention_duration
            }
            "dead_letter_policy" => stored.dead_letter_policy = update.dead_letter_policy.clone(),
            "retry_policy" => stored.retry_policy = update.retry_policy,
            "enable_exactly_once_delivery" => {
                stored.enable_exactly_once_delivery = update.enable_exactly_once_delivery
            }
            "expiration_policy" => stored.expiration_policy = update.expiration_policy,
            other => {
                return Err(BrokerError::invalid(
                    "update_mask",
                    format!("`{other}` cannot be updated on a subscription"),
                ));
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl<S: Store> pb::subscriber_server::Subscriber for PubsubService<S> {
    async fn create_subscription(
        &self,
        request: Request<pb::Subscription>,
    ) -> RpcResult<pb::Subscription> {
        let request = request.into_inner();
        let name = Name::parse(Kind::Subscription, "name", &request.name)?;
        let topic = self.topic_name(Permission::AdminWrite, "topic", &request.topic)?;
        refuse_unsupported_subscription(&request)?;
        let mut subscription = normalized(request)?;
        subscription.name = name.to_string();
        subscription.topic = topic.to_string();
        self.topic(&topic).await?;
        if let Some(dead_letter) = &subscription.dead_letter_policy {
            let dead = self.topic_name(
                Permission::Produce,
                "dead_letter_policy.dead_letter_topic",
                &dead_letter.dead_letter_topic,
            )?;
            self.topic(&dead).await?;
        }
        let policy = policy(&subscription, self.policy_defaults())?;
        let target = Target {
            name,
            subscription,
            stream: topic.stream(),
        };
        // New messages only, as Pub/Sub starts a subscription.
        let stored = Subscription {
            stream: target.stream.clone(),
            group: target.group().to_owned(),
            policy,
        };
        let record = Record {
            records: &self.shared.records,
            target: &target,
        };
        self.shared
            .serving
            .core
            .create_subscription(&stored, StartId::Latest, &record)
            .await?;
        self.sync_retention(&topic).await?;
        tracing::info!(subscription = %target.name, stream = %target.stream, "Pub/Sub subscription created");
        Ok(Response::new(target.subscription))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> RpcResult<pb::Subscription> {
        let target = self
            .target(Permission::AdminRead, &request.get_ref().subscription)
            .await?;
        Ok(Response::new(target.subscription))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> RpcResult<pb::Subscription> {
        let request = request.into_inner();
        let update = request
            .subscription
            .ok_or_else(|| BrokerError::invalid("subscription", "is required"))?;
        let mut target = self.target(Permission::AdminWrite, &update.name).await?;
        let mut subscription = target.subscription.clone();
        apply_update(&mut subscription, update, request.update_mask)?;
        let subscription = normalized(subscription)?;
        let updated = policy(&subscription, self.policy_defaults())?;
        self.shared
            .serving
            .core
            .update_subscription(&target.stream, target.group(), |stored| {
                *stored = SubscriptionPolicy {
                    max_in_flight: stored.max_in_flight,
                    paused: stored.paused,
                    ..updated
                };
                Ok(())
            })
            .await?;
        self.shared
            .records
            .put(&target.name, &subscription, false)
            .await?;
        if let Ok(topic) = Name::parse(Kind::Topic, "topic", &subscription.topic) {
            self.sync_retention(&topic).await?;
        }
        target.subscription = subscription;
        Ok(Response::new(target.subscription))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> RpcResult<pb::ListSubscriptionsResponse> {
        let request = request.into_inner();
        let project = Name::project("project", &request.project)?;
        let caller = Caller::current();
        let subscriptions: Vec<(Name, pb::Subscription)> = self
            .shared
            .records
            .list(Kind::Subscription, &project)
            .await?
            .into_iter()
            .filter(|(_, s): &(Name, pb::Subscription)| {
                Name::parse(Kind::Topic, "topic", &s.topic)
                    .is_ok_and(|topic| caller.may(Permission::AdminRead, &topic.stream()))
            })
            .collect();
        let (subscriptions, next_page_token) =
            page(subscriptions, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: subscriptions.into_iter().map(|(_, s)| s).collect(),
            next_page_token,
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> RpcResult<()> {
        let name = Name::parse(
            Kind::Subscription,
            "subscription",
            &request.get_ref().subscription,
        )?;
        let subscription: pb::Subscription = self.shared.records.existing(&name).await?;
        // A subscription whose topic was deleted has no stream to check permissions on: an
        // admin of anything may delete it.
        let topic = Name::parse(Kind::Topic, "topic", &subscription.topic).ok();
        match &topic {
            Some(topic) => {
                let stream = topic.stream();
                Caller::current().require(Permission::AdminWrite, [stream.as_str()])?;
                self.shared
                    .serving
                    .core
                    .delete_subscription(&stream, &name.id, true)
                    .await?;
            }
            None => Caller::current().require_any(Permission::AdminWrite)?,
        }
        self.shared.records.remove(&name).await?;
        if let Some(topic) = &topic {
            self.sync_retention(topic).await?;
        }
        tracing::info!(subscription = %name, "Pub/Sub subscription deleted with its group");
        Ok(Response::new(()))
    }

    async fn modify_ack_deadline(
        &self,
        request: Request<pb::ModifyAckDeadlineRequest>,
    ) -> RpcResult<()> {
        let request = request.into_inner();
        let target = self
            .target(Permission::Consume, &request.subscription)
            .await?;
        if !(0..=600).contains(&request.ack_deadline_seconds) {
            return Err(BrokerError::invalid(
                "ack_deadline_seconds",
                "must be between 0 (nack) and 600",
            )
            .into());
        }
        let by_consumer = Self::ack_ids_by_consumer("ack_ids", &request.ack_ids)?;
        let core = &self.shared.serving.core;
        // A deadline of N seconds from now: the message counts as delivered (the subscription's
        // deadline − N) ago; longer than the subscription's deadline is its whole deadline.
        let deadline_ms = u64::from(target.subscription.ack_deadline_seconds.max(0) as u32) * 1000;
        let wanted_ms = u64::from(request.ack_deadline_seconds as u32) * 1000;
        let mut failed = Vec::new();
        for (consumer, ids) in by_consumer {
            let applied = if request.ack_deadline_seconds == 0 {
                core.nack(
                    &target.stream,
                    target.group(),
                    Some(consumer.to_owned()),
                    &ids,
                    None,
                )
                .await?
            } else {
                let idle_ms = deadline_ms.saturating_sub(wanted_ms);
                core.extend_from(&target.stream, target.group(), consumer, &ids, idle_ms)
                    .await?
            };
            failed.extend(
                ids.iter()
                    .filter(|id| !applied.contains(id))
                    .map(|id| ack_ids::encode(*id, consumer)),
            );
        }
        if target.subscription.enable_exactly_once_delivery && !failed.is_empty() {
            return Err(ack_ids::exactly_once_failure(&failed));
        }
        Ok(Response::new(()))
    }

    async fn acknowledge(&self, request: Request<pb::AcknowledgeRequest>) -> RpcResult<()> {
        let request = request.into_inner();
        let target = self
            .target(Permission::Consume, &request.subscription)
            .await?;
        let exactly_once = target.subscription.enable_exactly_once_delivery;
        let mut failed = Vec::new();
        for (consumer, ids) in Self::ack_ids_by_consumer("ack_ids", &request.ack_ids)? {
            let outcomes = self
                .shared
                .serving
                .core
                .ack_confirmed(
                    &target.stream,
                    target.group(),
                    exactly_once.then_some(consumer),
                    &ids,
                )
                .await?;
            failed.extend(
                ids.iter()
                    .zip(outcomes)
                    .filter(|(_, outcome)| *outcome != AckOutcome::Acked)
                    .map(|(id, _)| ack_ids::encode(*id, consumer)),
            );
        }
        // Without exactly-once, an ack of a message no longer pending is fine (Pub/Sub's rule).
        if exactly_once && !failed.is_empty() {
            return Err(ack_ids::exactly_once_failure(&failed));
        }
        Ok(Response::new(()))
    }

    async fn pull(&self, request: Request<pb::PullRequest>) -> RpcResult<pb::PullResponse> {
        let wait = convert::grpc_timeout(request.metadata());
        let request = request.into_inner();
        let target = self
            .target(Permission::Consume, &request.subscription)
            .await?;
        if request.max_messages <= 0 {
            return Err(BrokerError::invalid("max_messages", "must be at least 1").into());
        }
        let count = (request.max_messages as usize).min(self.shared.serving.limits.max_read_count);
        let member = self.member(&target, Some(PULL_CONSUMER), None);
        let resolved = self.shared.serving.core.resolve(member).await?;
        // Pub/Sub's Pull waits for messages unless told to return at once; within the call's
        // own deadline, and at most as long as a Fetch may wait.
        let most = self.shared.serving.limits.max_fetch_wait;
        let wait = match request.return_immediately {
            true => Duration::ZERO,
            false => wait_within(most, most, wait),
        };
        let fetched = fetch(
            &self.shared.serving.core,
            resolved,
            count,
            wait,
            &self.shared.serving.stopping,
        )
        .await?;
        let attempts = target.subscription.dead_letter_policy.is_some();
        Ok(Response::new(pb::PullResponse {
            received_messages: fetched
                .deliveries
                .into_iter()
                .map(|d| received(d, PULL_CONSUMER, attempts))
                .collect(),
        }))
    }

    type StreamingPullStream = StreamingPullStream;

    async fn streaming_pull(
        &self,
        request: Request<Streaming<pb::StreamingPullRequest>>,
    ) -> RpcResult<Self::StreamingPullStream> {
        self.streaming_pull_call(request).await
    }

    async fn modify_push_config(
        &self,
        _request: Request<pb::ModifyPushConfigRequest>,
    ) -> RpcResult<()> {
        Err(BrokerError::Unimplemented(
            "push subscriptions are not supported by streamgate: use Pull or StreamingPull".into(),
        )
        .into())
    }

    async fn get_snapshot(
        &self,
        _request: Request<pb::GetSnapshotRequest>,
    ) -> RpcResult<pb::Snapshot> {
        Err(unimplemented_snapshots())
    }

    async fn list_snapshots(
        &self,
        _request: Request<pb::ListSnapshotsRequest>,
    ) -> RpcResult<pb::ListSnapshotsResponse> {
        Err(unimplemented_snapshots())
    }

    async fn create_snapshot(
        &self,
        _request: Request<pb::CreateSnapshotRequest>,
    ) -> RpcResult<pb::Snapshot> {
        Err(unimplemented_snapshots())
    }

    async fn update_snapshot(
        &self,
        _request: Request<pb::UpdateSnapshotRequest>,
    ) -> RpcResult<pb::Snapshot> {
        Err(unimplemented_snapshots())
    }

    async fn delete_snapshot(&self, _request: Request<pb::DeleteSnapshotRequest>) -> RpcResult<()> {
        Err(unimplemented_snapshots())
    }

    async fn seek(&self, request: Request<pb::SeekRequest>) -> RpcResult<pb::SeekResponse> {
        use pb::seek_request::Target as SeekTo;
        let request = request.into_inner();
        let target = self
            .target(Permission::Consume, &request.subscription)
            .await?;
        let since_ms = match request.target {
            Some(SeekTo::Time(time)) => {
                let since = Duration::new(time.seconds.max(0) as u64, time.nanos.max(0) as u32);
                millis(since)
            }
            Some(SeekTo::Snapshot(_)) => return Err(unimplemented_snapshots()),
            None => {
                return Err(BrokerError::invalid("target", "is required: set time").into());
            }
        };
        // As on Pub/Sub: what was published before the time counts as acknowledged, what
        // came after (acknowledged or not) is delivered again.
        self.shared
            .serving
            .core
            .seek(
                &target.stream,
                target.group(),
                SeekTarget::Since(since_ms),
                true,
            )
            .await?;
        tracing::info!(subscription = %target.name, since_ms, "Pub/Sub subscription seeked");
        Ok(Response::new(pb::SeekResponse {}))
    }
}
