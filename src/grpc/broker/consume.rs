//! `Broker.Consume`: a group member's whole session on one bidirectional stream. The reading
//! side is the Subscribe pump (with the client's credit, see [`Session`]); this file adds the
//! other direction: acks, nacks, extensions and credit arriving on the same stream, each ack,
//! nack and extend answered by a confirmation that says which ids it applied to and why not the
//! others.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::frames::{Frame, framed};
use super::{BrokerService, record_reader};
use crate::auth::{Caller, Permission};
use crate::config::Limits;
use crate::delivery::{Credit, DeliveryCore, Reading};
use crate::error::BrokerError;
use crate::grpc::convert;
use crate::grpc::pb;
use crate::model::{AckOutcome, EntryId};
use crate::store::Store;
use crate::subscription::{Event, Session};

/// The Consume response stream.
pub(super) type ConsumeStream =
    Pin<Box<dyn Stream<Item = Result<pb::ConsumeResponse, Status>> + Send>>;

/// How long a client may take to send `open` after opening the stream.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// Confirmations waiting for the client to read them; when full, the session stops taking
/// requests until it reads (a client that stops reading cannot make the broker buffer more).
const CONFIRMATIONS_BUFFERED: usize = 64;

/// What a settle request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settling {
    Ack,
    Nack,
    Extend,
}

/// The member a session's settle requests act for.
struct Settler<S> {
    core: DeliveryCore<S>,
    limits: std::sync::Arc<Limits>,
    streams: Vec<String>,
    group: String,
    consumer: String,
    credit: Option<Credit>,
}

fn failure(id: String, reason: pb::SettleFailureReason, message: String) -> pb::SettleFailure {
    pb::SettleFailure {
        id,
        reason: reason as i32,
        message,
    }
}

impl<S: Store> Settler<S> {
    /// Applies one settle request and says what it did to each id.
    async fn confirm(&self, settling: Settling, settle: pb::Settle) -> pb::Confirmation {
        use pb::SettleFailureReason as Reason;
        let request_id = settle.request_id;
        let refuse_all = |reason: Reason, message: String, ids: Vec<String>| pb::Confirmation {
            request_id,
            succeeded: Vec::new(),
            failed: ids
                .into_iter()
                .map(|id| failure(id, reason, message.clone()))
                .collect(),
        };
        if !self.streams.contains(&settle.stream) {
            let message = format!(
                "`{}` is not a stream this session reads ({})",
                settle.stream,
                self.streams.join(", ")
            );
            return refuse_all(Reason::Invalid, message, settle.ids);
        }
        let ids = match convert::ids("ids", &settle.ids, &self.limits) {
            Ok(ids) => ids,
            Err(err) => return refuse_all(Reason::Invalid, err.to_string(), settle.ids),
        };
        let applied = match self.apply(settling, &settle, &ids).await {
            Ok(applied) => applied,
            Err(err @ BrokerError::InvalidArgument { .. }) => {
                return refuse_all(Reason::Invalid, err.to_string(), settle.ids);
            }
            Err(err) => {
                return refuse_all(Reason::Failed, crate::error::chain(&err), settle.ids);
            }
        };
        let mut confirmation = pb::Confirmation {
            request_id,
            succeeded: Vec::with_capacity(ids.len()),
            failed: Vec::new(),
        };
        for (text, outcome) in settle.ids.into_iter().zip(applied) {
            match outcome {
                Ok(()) => confirmation.succeeded.push(text),
                Err((reason, message)) => {
                    confirmation
                        .failed
                        .push(failure(text, reason, message.to_owned()))
                }
            }
        }
        confirmation
    }

    /// Per id, in order: applied, or why not.
    async fn apply(
        &self,
        settling: Settling,
        settle: &pb::Settle,
        ids: &[EntryId],
    ) -> Result<Vec<Result<(), (pb::SettleFailureReason, &'static str)>>, BrokerError> {
        use pb::SettleFailureReason as Reason;
        const NOT_HELD: &str = "this consumer does not hold it: acknowledged, redelivered to \
                                another member after its deadline, or never delivered";
        let (stream, group, consumer) = (&settle.stream, &self.group, &self.consumer);
        if settling != Settling::Nack && settle.delay_ms.is_some() {
            return Err(BrokerError::invalid("delay_ms", "only applies to a nack"));
        }
        let held = match settling {
            Settling::Ack => {
                let outcomes = self.core.ack_held(stream, group, consumer, ids).await?;
                return Ok(outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        AckOutcome::Acked => Ok(()),
                        AckOutcome::NotPending => Err((
                            Reason::NotPending,
                            "not pending in the group: acknowledged already, or never delivered",
                        )),
                        AckOutcome::HeldByOther => Err((
                            Reason::HeldByAnotherConsumer,
                            "another consumer holds it: its deadline passed and the group \
                             redelivered it, so the work done on it is a duplicate",
                        )),
                    })
                    .collect());
            }
            Settling::Nack => {
                let delay = settle
                    .delay_ms
                    .map(|ms| convert::delay("delay_ms", ms))
                    .transpose()?;
                self.core
                    .nack(stream, group, Some(consumer.clone()), ids, delay)
                    .await?
            }
            Settling::Extend => self.core.extend(stream, group, consumer, ids).await?,
        };
        Ok(ids
            .iter()
            .map(|id| {
                if held.contains(id) {
                    Ok(())
                } else {
                    Err((Reason::NotHeld, NOT_HELD))
                }
            })
            .collect())
    }

    /// Takes the client's requests until it half-closes, goes away or the broker stops; then
    /// ends the session's reading (`finished`). A request that breaks the protocol ends the call
    /// with INVALID_ARGUMENT.
    async fn run(
        self,
        mut inbound: Streaming<pb::ConsumeRequest>,
        confirmations: mpsc::Sender<Result<pb::ConsumeResponse, Status>>,
        finished: CancellationToken,
        stopping: CancellationToken,
    ) {
        use pb::consume_request::Request as Kind;
        loop {
            let request = tokio::select! {
                biased;
                _ = stopping.cancelled() => break,
                _ = confirmations.closed() => break,
                request = inbound.message() => request,
            };
            let kind = match request {
                Ok(Some(request)) => request.request,
                // Half-closed: the client is done.
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(%status, "the client's side of the Consume stream failed");
                    break;
                }
            };
            let (settling, settle) = match kind {
                Some(Kind::Ack(settle)) => (Settling::Ack, settle),
                Some(Kind::Nack(settle)) => (Settling::Nack, settle),
                Some(Kind::Extend(settle)) => (Settling::Extend, settle),
                Some(Kind::Credit(credit)) => {
                    if let Some(granted) = &self.credit {
                        granted.grant(u64::from(credit.messages), credit.bytes);
                    }
                    continue;
                }
                Some(Kind::Open(_)) | None => {
                    let field = if kind.is_some() { "open" } else { "request" };
                    let err = BrokerError::invalid(
                        field,
                        if kind.is_some() {
                            "may only be the first request of a Consume stream"
                        } else {
                            "is empty: set ack, nack, extend or credit"
                        },
                    );
                    let _ = confirmations.send(Err(err.into())).await;
                    break;
                }
            };
            let confirmation = self.confirm(settling, settle).await;
            let item = pb::ConsumeResponse {
                event: Some(pb::consume_response::Event::Confirmation(confirmation)),
            };
            if confirmations.send(Ok(item)).await.is_err() {
                break;
            }
        }
        finished.cancel();
    }
}

/// The opening request: the first of the stream, within [`OPEN_WAIT`].
async fn receive_open(
    inbound: &mut Streaming<pb::ConsumeRequest>,
) -> Result<pb::ConsumeOpen, Status> {
    let first = tokio::time::timeout(OPEN_WAIT, inbound.message())
        .await
        .map_err(|_| {
            BrokerError::invalid(
                "open",
                format!(
                    "was not sent within {} s of opening the stream",
                    OPEN_WAIT.as_secs()
                ),
            )
        })??;
    match first.and_then(|r| r.request) {
        Some(pb::consume_request::Request::Open(open)) => Ok(open),
        _ => Err(
            BrokerError::invalid("open", "must be the first request of a Consume stream").into(),
        ),
    }
}

fn consume_response(frame: Frame) -> Result<pb::ConsumeResponse, Status> {
    use pb::consume_response::Event as Kind;
    let event = match frame {
        Frame::Messages(deliveries) => Kind::Messages(pb::MessageBatch {
            messages: deliveries.into_iter().map(Into::into).collect(),
        }),
        Frame::Event(Ok(Event::Started { consumer, streams })) => {
            Kind::Started(pb::SubscriptionStarted { consumer, streams })
        }
        Frame::Event(Ok(Event::Heartbeat)) => Kind::Heartbeat(pb::Heartbeat {}),
        Frame::Event(Ok(Event::Message(delivery))) => Kind::Messages(pb::MessageBatch {
            messages: vec![delivery.into()],
        }),
        Frame::Event(Err(err)) => return Err(err.into()),
    };
    Ok(pb::ConsumeResponse { event: Some(event) })
}

impl<S: Store> BrokerService<S> {
    /// Opens the session: validates `open`, starts the pump with the client's credit and the
    /// settle loop beside it, and merges what both send.
    pub(super) async fn consume_call(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<ConsumeStream>, Status> {
        let mut inbound = request.into_inner();
        let open = receive_open(&mut inbound).await?;
        let spec = convert::consume::consume(open, &self.limits, self.core.backoff())?;
        let caller = Caller::current();
        caller.require(
            Permission::Consume,
            spec.subscription.member.streams.iter().map(String::as_str),
        )?;
        let resolved = self.core.resolve(spec.subscription.member).await?;
        record_reader(&resolved);
        let Reading::Group { membership, .. } = resolved.reading() else {
            return Err(BrokerError::Internal("a Consume session without a group".into()).into());
        };
        let credit = spec
            .credit
            .map(|(messages, bytes)| Credit::new(messages, bytes));
        let settler = Settler {
            core: self.core.clone(),
            limits: self.limits.clone(),
            streams: resolved.streams().to_vec(),
            group: membership.group.clone(),
            consumer: membership.consumer.clone(),
            credit: credit.clone(),
        };
        let session = Session {
            credit,
            finished: CancellationToken::new(),
        };
        let finished = session.finished.clone();
        let events = self.subscriptions.open_session(
            resolved,
            spec.subscription.batch_size,
            caller.name(),
            session,
        )?;
        let (confirmations, confirmed) = mpsc::channel(CONFIRMATIONS_BUFFERED);
        tokio::spawn(settler.run(inbound, confirmations, finished, self.stopping.clone()));
        let messages = framed(events, spec.frames).map(consume_response);
        Ok(Response::new(Box::pin(
            messages.merge(ReceiverStream::new(confirmed)),
        )))
    }
}
