//! StreamingPull, the Pub/Sub clients' default way to receive: a session
//! ([`open_session`](crate::calls::session::open_session)) in Pub/Sub's words. Reading is the
//! subscription pump (frames of what is ready, the stream's `max_outstanding_messages` as the
//! member's in-flight limit); this file opens it and turns what it sends into responses; its
//! wire, ack ids in and confirmations out, is [`settling`](super::settling).

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::settling::{PullWire, check_deadlines};
use super::subscriber::{Target, received};
use super::{PubsubService, StreamingPullStream, pb};
use crate::auth::{Caller, Permission};
use crate::calls::Event;
use crate::calls::frames::{Frame, FrameLimits};
use crate::calls::session::{Outgoing, SessionMember, SessionOptions, open_session};
use crate::error::BrokerError;
use crate::store::Store;

/// The in-flight limit of a stream whose client sets none (the clients' own default).
const DEFAULT_MAX_OUTSTANDING: i64 = 1000;

/// What the session sends, as a StreamingPull response; `None` for what Pub/Sub has no word
/// for.
fn response(
    out: Outgoing<pb::StreamingPullResponse>,
    consumer: &str,
    attempts: bool,
    properties: pb::streaming_pull_response::SubscriptionProperties,
) -> Option<Result<pb::StreamingPullResponse, Status>> {
    let deliveries = match out {
        Outgoing::Frame(Frame::Messages(deliveries)) => deliveries,
        Outgoing::Frame(Frame::Event(Ok(Event::Message(delivery)))) => vec![delivery],
        Outgoing::Frame(Frame::Event(Ok(Event::Started { .. } | Event::Heartbeat))) => {
            return None;
        }
        Outgoing::Frame(Frame::Event(Err(err))) | Outgoing::Broken(err) => {
            return Some(Err(err.into()));
        }
        Outgoing::Answer(answer) => return Some(Ok(answer)),
    };
    Some(Ok(pb::StreamingPullResponse {
        received_messages: deliveries
            .into_iter()
            .map(|d| received(d, consumer, attempts))
            .collect(),
        subscription_properties: Some(properties),
        ..Default::default()
    }))
}

impl<S: Store> PubsubService<S> {
    /// Opens the session from its first request (the subscription, its deadline and flow
    /// control, maybe acks already, settled as the session's first request).
    pub(super) async fn streaming_pull_call(
        &self,
        request: Request<Streaming<pb::StreamingPullRequest>>,
    ) -> Result<Response<StreamingPullStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            BrokerError::invalid("subscription", "the stream ended before its first request")
        })?;
        let target: Target = self
            .target(Permission::Consume, &first.subscription)
            .await?;
        if !(10..=600).contains(&first.stream_ack_deadline_seconds) {
            return Err(BrokerError::invalid(
                "stream_ack_deadline_seconds",
                "is required on the first request, between 10 and 600",
            )
            .into());
        }
        check_deadlines(&first)?;
        let max_outstanding = match first.max_outstanding_messages {
            n if n <= 0 => DEFAULT_MAX_OUTSTANDING,
            n => n,
        };
        let max_outstanding = u64::from(u32::try_from(max_outstanding).unwrap_or(u32::MAX));
        let exactly_once = target.subscription.enable_exactly_once_delivery;
        let shared = &self.shared;
        let member = self.member(&target, None, Some(max_outstanding));
        let resolved = shared.serving.core.resolve(member).await?;
        let consumer = SessionMember::of(&resolved)?.consumer;
        let wire = PullWire {
            stream: target.stream.clone(),
            consumer: consumer.clone(),
            exactly_once,
        };
        let options = SessionOptions {
            batch_size: shared.serving.limits.default_batch_size,
            frames: FrameLimits::defaults(shared.serving.limits.max_read_count),
            credit: None,
            exactly_once,
            max_ids: shared.serving.limits.max_read_count,
        };
        let inbound = tokio_stream::iter([Ok(first)]).chain(inbound);
        let outgoing = open_session(
            &shared.serving.pumps,
            resolved,
            options,
            Caller::current().name(),
            wire,
            inbound,
        )?;
        let attempts = target.subscription.dead_letter_policy.is_some();
        let properties = pb::streaming_pull_response::SubscriptionProperties {
            exactly_once_delivery_enabled: exactly_once,
            // The clients read it to know the stream's messages come in key order.
            message_ordering_enabled: target.subscription.enable_message_ordering,
        };
        Ok(Response::new(Box::pin(outgoing.filter_map(move |out| {
            response(out, &consumer, attempts, properties)
        }))))
    }
}
