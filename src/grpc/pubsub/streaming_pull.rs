//! StreamingPull, the Pub/Sub clients' default way to receive: a Consume session in Pub/Sub's
//! words. Reading is the subscription pump (frames of what is ready, the stream's
//! `max_outstanding_messages` as the member's in-flight limit); acks and deadline changes that
//! arrive on the stream go through the same [`Settler`] as Consume's, requests already
//! received taken together, consecutive acks in one round trip. With exactly-once delivery
//! every request is answered with the confirmations the clients wait for.

use std::collections::HashMap;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::ack_ids;
use super::subscriber::{Target, member_request, received};
use super::{PubsubService, StreamingPullStream, pb};
use crate::auth::{Caller, Permission};
use crate::delivery::Reading;
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::convert;
use crate::grpc::frames::{Frame, framed};
use crate::grpc::pb as sg;
use crate::grpc::settle::{Settler, Settling};
use crate::store::Store;
use crate::subscription::{Event, Session};

/// Most requests already received that are applied together.
const SETTLE_BATCH: usize = 64;

/// The in-flight limit of a stream whose client sets none (the clients' own default).
const DEFAULT_MAX_OUTSTANDING: i64 = 1000;

/// One StreamingPull request's acks and deadline changes as settle requests, with the ack id
/// of every entry id (to answer in the client's terms).
struct Translated {
    settles: Vec<(Settling, sg::Settle)>,
    ack_ids: HashMap<String, String>,
    /// Ack ids that are not this stream's to settle (malformed, or, with exactly-once
    /// delivery, delivered to another member).
    invalid_acks: Vec<String>,
    invalid_modacks: Vec<String>,
}

/// The session's side of settling: the member it acts for and the mapping back.
struct Settle<S> {
    settler: Settler<S>,
    stream: String,
    exactly_once: bool,
}

impl<S: Store> Settle<S> {
    /// Splits a request into settle requests: acks; a deadline of 0 (a nack); others (an
    /// extension: the member's deadline starts again).
    fn translate(&self, request: &pb::StreamingPullRequest) -> BrokerResult<Translated> {
        if request.modify_deadline_seconds.len() != request.modify_deadline_ack_ids.len() {
            return Err(BrokerError::invalid(
                "modify_deadline_seconds",
                "must have one deadline per entry of modify_deadline_ack_ids",
            ));
        }
        let mut translated = Translated {
            settles: Vec::new(),
            ack_ids: HashMap::new(),
            invalid_acks: Vec::new(),
            invalid_modacks: Vec::new(),
        };
        let acks = self.entry_ids(
            request.ack_ids.iter(),
            &mut translated.ack_ids,
            &mut translated.invalid_acks,
        );
        let (mut nacked, mut extended) = (Vec::new(), Vec::new());
        for (seconds, ack_id) in request
            .modify_deadline_seconds
            .iter()
            .zip(&request.modify_deadline_ack_ids)
        {
            if !(0..=600).contains(seconds) {
                return Err(BrokerError::invalid(
                    "modify_deadline_seconds",
                    format!("{seconds} is not between 0 (nack) and 600"),
                ));
            }
            if *seconds == 0 {
                nacked.push(ack_id);
            } else {
                extended.push(ack_id);
            }
        }
        let nacks = self.entry_ids(
            nacked.into_iter(),
            &mut translated.ack_ids,
            &mut translated.invalid_modacks,
        );
        let extends = self.entry_ids(
            extended.into_iter(),
            &mut translated.ack_ids,
            &mut translated.invalid_modacks,
        );
        for (settling, ids) in [
            (Settling::Ack, acks),
            (Settling::Nack, nacks),
            (Settling::Extend, extends),
        ] {
            if !ids.is_empty() {
                translated.settles.push((
                    settling,
                    sg::Settle {
                        request_id: 0,
                        stream: self.stream.clone(),
                        ids,
                        delay_ms: None,
                    },
                ));
            }
        }
        Ok(translated)
    }

    /// The entry ids of `ack_ids` this session may settle (remembering each one's ack id);
    /// the others (malformed, or with exactly-once delivery another member's) into `invalid`.
    fn entry_ids<'a>(
        &self,
        ack_ids: impl Iterator<Item = &'a String>,
        by_entry: &mut HashMap<String, String>,
        invalid: &mut Vec<String>,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        for ack_id in ack_ids {
            match ack_ids::decode(ack_id) {
                Some((id, consumer)) if !self.exactly_once || consumer == self.settler.consumer => {
                    by_entry.insert(id.to_string(), ack_id.clone());
                    ids.push(id.to_string());
                }
                _ => invalid.push(ack_id.clone()),
            }
        }
        ids
    }

    /// Applies the requests taken together; with exactly-once delivery, the confirmations.
    async fn apply(&self, requests: Vec<Translated>) -> Vec<pb::StreamingPullResponse> {
        let mut checked = Vec::new();
        let mut kinds = Vec::new();
        let mut ack_ids = HashMap::new();
        let mut acks = pb::streaming_pull_response::AcknowledgeConfirmation::default();
        let mut modacks = pb::streaming_pull_response::ModifyAckDeadlineConfirmation::default();
        for request in requests {
            ack_ids.extend(request.ack_ids);
            acks.invalid_ack_ids.extend(request.invalid_acks);
            modacks.invalid_ack_ids.extend(request.invalid_modacks);
            for (settling, settle) in request.settles {
                kinds.push(settling);
                checked.push(self.settler.check(settling, settle));
            }
        }
        let confirmations = self.settler.apply(checked).await;
        if !self.exactly_once {
            return Vec::new();
        }
        let client_id = |id: String| ack_ids.get(&id).cloned().unwrap_or(id);
        for (settling, confirmation) in kinds.into_iter().zip(confirmations) {
            let succeeded = confirmation.succeeded.into_iter().map(&client_id);
            let (ok, invalid, temporary) = match settling {
                Settling::Ack => (
                    &mut acks.ack_ids,
                    &mut acks.invalid_ack_ids,
                    &mut acks.temporary_failed_ack_ids,
                ),
                _ => (
                    &mut modacks.ack_ids,
                    &mut modacks.invalid_ack_ids,
                    &mut modacks.temporary_failed_ack_ids,
                ),
            };
            ok.extend(succeeded);
            for failure in confirmation.failed {
                let id = client_id(failure.id);
                if failure.reason == sg::SettleFailureReason::Failed as i32 {
                    temporary.push(id);
                } else {
                    invalid.push(id);
                }
            }
        }
        let mut responses = Vec::new();
        if !(acks.ack_ids.is_empty()
            && acks.invalid_ack_ids.is_empty()
            && acks.temporary_failed_ack_ids.is_empty())
        {
            responses.push(pb::StreamingPullResponse {
                acknowledge_confirmation: Some(acks),
                ..Default::default()
            });
        }
        if !(modacks.ack_ids.is_empty()
            && modacks.invalid_ack_ids.is_empty()
            && modacks.temporary_failed_ack_ids.is_empty())
        {
            responses.push(pb::StreamingPullResponse {
                modify_ack_deadline_confirmation: Some(modacks),
                ..Default::default()
            });
        }
        responses
    }

    /// Takes the client's requests until it half-closes, goes away or the broker stops, then
    /// ends the session's reading (`finished`). A malformed request ends the call with
    /// INVALID_ARGUMENT, after what came before it was applied.
    async fn run(
        self,
        first: Translated,
        mut inbound: Streaming<pb::StreamingPullRequest>,
        out: mpsc::Sender<Result<pb::StreamingPullResponse, Status>>,
        finished: CancellationToken,
        stopping: CancellationToken,
    ) {
        let mut pending = vec![first];
        let mut open = true;
        while open {
            let mut broken = None;
            while pending.len() < SETTLE_BATCH {
                let request = if pending.is_empty() {
                    tokio::select! {
                        biased;
                        _ = stopping.cancelled() => None,
                        _ = out.closed() => None,
                        request = inbound.message() => Some(request),
                    }
                } else {
                    inbound.message().now_or_never()
                };
                match request {
                    None if pending.is_empty() => {
                        open = false;
                        break;
                    }
                    None => break,
                    Some(Ok(Some(request))) => match self.translate(&request) {
                        Ok(translated) => pending.push(translated),
                        Err(err) => {
                            broken = Some(Status::from(err));
                            open = false;
                            break;
                        }
                    },
                    // Half-closed, or the client's side failed: the client is done.
                    Some(Ok(None) | Err(_)) => {
                        open = false;
                        break;
                    }
                }
            }
            let answers = self.apply(std::mem::take(&mut pending)).await;
            for answer in answers.into_iter().map(Ok).chain(broken.map(Err)) {
                if out.send(answer).await.is_err() {
                    open = false;
                    break;
                }
            }
        }
        finished.cancel();
    }
}

/// A frame of the pump as a StreamingPull response; `None` for what Pub/Sub has no word for.
fn response(
    frame: Frame,
    consumer: &str,
    attempts: bool,
    properties: pb::streaming_pull_response::SubscriptionProperties,
) -> Option<Result<pb::StreamingPullResponse, Status>> {
    match frame {
        Frame::Messages(deliveries) => Some(Ok(pb::StreamingPullResponse {
            received_messages: deliveries
                .into_iter()
                .map(|d| received(d, consumer, attempts))
                .collect(),
            subscription_properties: Some(properties),
            ..Default::default()
        })),
        Frame::Event(Ok(Event::Message(delivery))) => Some(Ok(pb::StreamingPullResponse {
            received_messages: vec![received(delivery, consumer, attempts)],
            subscription_properties: Some(properties),
            ..Default::default()
        })),
        Frame::Event(Ok(Event::Started { .. } | Event::Heartbeat)) => None,
        Frame::Event(Err(err)) => Some(Err(err.into())),
    }
}

impl<S: Store> PubsubService<S> {
    /// Opens the session from its first request (the subscription, its deadline and flow
    /// control, maybe acks already), starts the pump and the settle loop, merges what both send.
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
        let max_outstanding = match first.max_outstanding_messages {
            n if n <= 0 => DEFAULT_MAX_OUTSTANDING,
            n => n,
        };
        let exactly_once = target.subscription.enable_exactly_once_delivery;
        let shared = &self.shared;
        let read = member_request(&target, "", 0);
        let open = sg::ConsumeOpen {
            streams: read.streams,
            group: read.group,
            max_in_flight: Some(u32::try_from(max_outstanding).unwrap_or(u32::MAX)),
            exactly_once,
            ..Default::default()
        };
        let spec = convert::consume::consume(open, &shared.limits, shared.core.backoff())?;
        let caller = Caller::current();
        let resolved = shared.core.resolve(spec.subscription.member).await?;
        let Reading::Group { membership, .. } = resolved.reading() else {
            return Err(BrokerError::Internal("a StreamingPull without a group".into()).into());
        };
        let consumer = membership.consumer.clone();
        let settle = Settle {
            settler: Settler {
                core: shared.core.clone(),
                limits: shared.limits.clone(),
                streams: vec![target.stream.clone()],
                group: membership.group.clone(),
                consumer: consumer.clone(),
                credit: None,
                exactly_once,
            },
            stream: target.stream.clone(),
            exactly_once,
        };
        let first = settle.translate(&first)?;
        let session = Session {
            credit: None,
            finished: CancellationToken::new(),
        };
        let finished = session.finished.clone();
        let events = shared.subscriptions.open_session(
            resolved,
            spec.subscription.batch_size,
            caller.name(),
            session,
        )?;
        let (out, answers) = mpsc::channel(SETTLE_BATCH);
        #[allow(
            clippy::disallowed_methods,
            reason = "the call's settle loop ends with its stream, or when the broker stops"
        )]
        tokio::spawn(settle.run(first, inbound, out, finished, shared.stopping.clone()));
        let attempts = target.subscription.dead_letter_policy.is_some();
        let properties = pb::streaming_pull_response::SubscriptionProperties {
            exactly_once_delivery_enabled: exactly_once,
            // The clients read it to know the stream's messages come in key order.
            message_ordering_enabled: target.subscription.enable_message_ordering,
        };
        let messages = framed(events, spec.frames)
            .filter_map(move |frame| response(frame, &consumer, attempts, properties));
        Ok(Response::new(Box::pin(
            messages.merge(ReceiverStream::new(answers)),
        )))
    }
}
