//! `Broker.Consume`: a group member's whole session on one bidirectional stream. The reading
//! side is the Subscribe pump (with the client's credit, see [`Session`]); this file adds the
//! other direction: acks, nacks, extensions and credit arriving on the same stream, each ack,
//! nack and extend answered by a confirmation that says which ids it applied to and why not the
//! others.

use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;
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
    /// Acks apply only to what this consumer holds.
    exactly_once: bool,
}

fn failure(id: String, reason: pb::SettleFailureReason, message: String) -> pb::SettleFailure {
    pb::SettleFailure {
        id,
        reason: reason as i32,
        message,
    }
}

/// Per id, in request order: applied, or why not.
type Outcomes = Vec<Result<(), (pb::SettleFailureReason, &'static str)>>;

/// A settle request that passed its checks, with its ids parsed.
struct Checked {
    settling: Settling,
    settle: pb::Settle,
    ids: Vec<EntryId>,
}

/// Most requests already received that are taken together: consecutive acks among them are
/// applied in one round trip per stream.
const SETTLE_BATCH: usize = 64;

/// Every id of `settle` refused for one reason.
fn refused(
    settle: pb::Settle,
    reason: pb::SettleFailureReason,
    message: String,
) -> pb::Confirmation {
    pb::Confirmation {
        request_id: settle.request_id,
        succeeded: Vec::new(),
        failed: settle
            .ids
            .into_iter()
            .map(|id| failure(id, reason, message.clone()))
            .collect(),
    }
}

/// A confirmation from the outcome of each id, in order.
fn confirmation(settle: pb::Settle, outcomes: Outcomes) -> pb::Confirmation {
    let mut confirmation = pb::Confirmation {
        request_id: settle.request_id,
        succeeded: Vec::with_capacity(settle.ids.len()),
        failed: Vec::new(),
    };
    for (text, outcome) in settle.ids.into_iter().zip(outcomes) {
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

/// A request that failed as a whole: INVALID for what the client got wrong, FAILED otherwise.
fn failed_whole(settle: pb::Settle, err: &BrokerError) -> pb::Confirmation {
    match err {
        BrokerError::InvalidArgument { .. } => {
            refused(settle, pb::SettleFailureReason::Invalid, err.to_string())
        }
        _ => refused(
            settle,
            pb::SettleFailureReason::Failed,
            crate::error::chain(err),
        ),
    }
}

fn ack_outcome(outcome: AckOutcome) -> Result<(), (pb::SettleFailureReason, &'static str)> {
    use pb::SettleFailureReason as Reason;
    match outcome {
        AckOutcome::Acked => Ok(()),
        AckOutcome::NotPending => Err((
            Reason::NotPending,
            "not pending in the group: acknowledged already, or never delivered",
        )),
        AckOutcome::HeldByOther => Err((
            Reason::HeldByAnotherConsumer,
            "another consumer holds it: its deadline passed and the group redelivered it, so \
             the work done on it is a duplicate",
        )),
    }
}

impl<S: Store> Settler<S> {
    /// Whose messages an ack may apply to: this consumer's only, with `exactly_once`.
    fn holder(&self) -> Option<&str> {
        self.exactly_once.then_some(self.consumer.as_str())
    }

    /// Checks a settle request: a stream this session reads, ids that parse, a delay only on a
    /// nack. The refusal is its confirmation.
    fn check(&self, settling: Settling, settle: pb::Settle) -> Result<Checked, pb::Confirmation> {
        use pb::SettleFailureReason as Reason;
        if !self.streams.contains(&settle.stream) {
            let message = format!(
                "`{}` is not a stream this session reads ({})",
                settle.stream,
                self.streams.join(", ")
            );
            return Err(refused(settle, Reason::Invalid, message));
        }
        if settling != Settling::Nack && settle.delay_ms.is_some() {
            let err = BrokerError::invalid("delay_ms", "only applies to a nack");
            return Err(refused(settle, Reason::Invalid, err.to_string()));
        }
        match convert::ids("ids", &settle.ids, &self.limits) {
            Ok(ids) => Ok(Checked {
                settling,
                settle,
                ids,
            }),
            Err(err) => Err(refused(settle, Reason::Invalid, err.to_string())),
        }
    }

    /// Applies consecutive acks: one atomic ack per stream for all their ids, the outcomes
    /// split back per request.
    async fn apply_acks(&self, acks: Vec<Checked>) -> Vec<pb::Confirmation> {
        let mut streams: Vec<&str> = acks.iter().map(|a| a.settle.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let mut outcomes: Vec<Option<Result<Vec<AckOutcome>, BrokerError>>> =
            (0..acks.len()).map(|_| None).collect();
        for stream in streams {
            let mine: Vec<usize> = (0..acks.len())
                .filter(|i| acks[*i].settle.stream == stream)
                .collect();
            let ids: Vec<EntryId> = mine.iter().flat_map(|i| acks[*i].ids.clone()).collect();
            match self
                .core
                .ack_confirmed(stream, &self.group, self.holder(), &ids)
                .await
            {
                Ok(all) => {
                    let mut all = all.into_iter();
                    for i in mine {
                        outcomes[i] = Some(Ok(all.by_ref().take(acks[i].ids.len()).collect()));
                    }
                }
                Err(err) => {
                    for i in mine {
                        outcomes[i] = Some(Err(BrokerError::Internal(crate::error::chain(&err))));
                    }
                }
            }
        }
        acks.into_iter()
            .zip(outcomes)
            .map(|(ack, outcome)| match outcome {
                Some(Ok(outcomes)) => {
                    confirmation(ack.settle, outcomes.into_iter().map(ack_outcome).collect())
                }
                Some(Err(err)) => failed_whole(ack.settle, &err),
                None => failed_whole(ack.settle, &BrokerError::Internal("not applied".into())),
            })
            .collect()
    }

    /// Applies a nack or an extension.
    async fn apply_one(&self, checked: Checked) -> pb::Confirmation {
        use pb::SettleFailureReason as Reason;
        const NOT_HELD: &str = "this consumer does not hold it: acknowledged, redelivered to \
                                another member after its deadline, or never delivered";
        let Checked {
            settling,
            settle,
            ids,
        } = checked;
        let (stream, group, consumer) = (&settle.stream, &self.group, &self.consumer);
        let applied = match settling {
            Settling::Nack => match settle
                .delay_ms
                .map(|ms| convert::delay("delay_ms", ms))
                .transpose()
            {
                Ok(delay) => {
                    self.core
                        .nack(stream, group, Some(consumer.clone()), &ids, delay)
                        .await
                }
                Err(err) => Err(err),
            },
            Settling::Extend => self.core.extend(stream, group, consumer, &ids).await,
            Settling::Ack => {
                let checked = Checked {
                    settling,
                    settle,
                    ids,
                };
                let mut confirmed = self.apply_acks(vec![checked]).await;
                return confirmed.pop().unwrap_or_default();
            }
        };
        match applied {
            Ok(held) => {
                let outcomes = ids
                    .iter()
                    .map(|id| {
                        if held.contains(id) {
                            Ok(())
                        } else {
                            Err((Reason::NotHeld, NOT_HELD))
                        }
                    })
                    .collect();
                confirmation(settle, outcomes)
            }
            Err(err) => failed_whole(settle, &err),
        }
    }

    /// Applies requests taken together, in order; consecutive acks share round trips.
    async fn apply(
        &self,
        requests: Vec<Result<Checked, pb::Confirmation>>,
    ) -> Vec<pb::Confirmation> {
        let mut confirmations = Vec::with_capacity(requests.len());
        let mut acks = Vec::new();
        for request in requests {
            match request {
                Ok(checked) if checked.settling == Settling::Ack => acks.push(checked),
                other => {
                    if !acks.is_empty() {
                        confirmations.extend(self.apply_acks(std::mem::take(&mut acks)).await);
                    }
                    confirmations.push(match other {
                        Ok(checked) => self.apply_one(checked).await,
                        Err(refusal) => refusal,
                    });
                }
            }
        }
        if !acks.is_empty() {
            confirmations.extend(self.apply_acks(acks).await);
        }
        confirmations
    }

    /// Takes the client's requests until it half-closes, goes away or the broker stops; then
    /// ends the session's reading (`finished`). The requests already received are taken
    /// together (up to [`SETTLE_BATCH`]) and applied in order. A request that breaks the
    /// protocol ends the call with INVALID_ARGUMENT.
    async fn run(
        self,
        mut inbound: Streaming<pb::ConsumeRequest>,
        confirmations: mpsc::Sender<Result<pb::ConsumeResponse, Status>>,
        finished: CancellationToken,
        stopping: CancellationToken,
    ) {
        let mut open = true;
        while open {
            let first = tokio::select! {
                biased;
                _ = stopping.cancelled() => break,
                _ = confirmations.closed() => break,
                request = inbound.message() => request,
            };
            let mut received = vec![first];
            while received.len() < SETTLE_BATCH {
                match inbound.message().now_or_never() {
                    Some(request) => received.push(request),
                    None => break,
                }
            }
            let mut settles = Vec::new();
            let mut broken = None;
            for request in received {
                match self.take(request) {
                    Taken::Settle(checked) => settles.push(checked),
                    Taken::Nothing => {}
                    Taken::End(status) => {
                        open = false;
                        broken = status;
                        break;
                    }
                }
            }
            // What came before a broken request is applied and confirmed first.
            let items = self.apply(settles).await.into_iter().map(|confirmation| {
                Ok(pb::ConsumeResponse {
                    event: Some(pb::consume_response::Event::Confirmation(confirmation)),
                })
            });
            for item in items.chain(broken.map(Err)) {
                if confirmations.send(item).await.is_err() {
                    open = false;
                    break;
                }
            }
        }
        finished.cancel();
    }

    /// What one received request means for the loop: a settle to apply, credit granted (here),
    /// or the end (half-close, transport gone, or the protocol broken).
    fn take(&self, request: Result<Option<pb::ConsumeRequest>, Status>) -> Taken {
        use pb::consume_request::Request as Kind;
        let kind = match request {
            Ok(Some(request)) => request.request,
            // Half-closed: the client is done.
            Ok(None) => return Taken::End(None),
            Err(status) => {
                tracing::debug!(%status, "the client's side of the Consume stream failed");
                return Taken::End(None);
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
                return Taken::Nothing;
            }
            Some(Kind::Open(_)) => {
                let err = BrokerError::invalid(
                    "open",
                    "may only be the first request of a Consume stream",
                );
                return Taken::End(Some(err.into()));
            }
            None => {
                let err =
                    BrokerError::invalid("request", "is empty: set ack, nack, extend or credit");
                return Taken::End(Some(err.into()));
            }
        };
        Taken::Settle(self.check(settling, settle))
    }
}

/// See [`Settler::take`].
enum Taken {
    Settle(Result<Checked, pb::Confirmation>),
    Nothing,
    /// With the status to end the call with, when the protocol was broken.
    End(Option<Status>),
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
            exactly_once: spec.exactly_once,
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
