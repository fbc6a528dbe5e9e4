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

use super::{BrokerService, record_reader};
use crate::auth::{Caller, Permission};
use crate::delivery::{Credit, Reading};
use crate::error::BrokerError;
use crate::grpc::convert;
use crate::grpc::frames::{Frame, framed};
use crate::grpc::pb;
use crate::grpc::settle::{Checked, Settler, Settling};
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

/// Most requests already received that are taken together: consecutive acks among them are
/// applied in one round trip per stream.
const SETTLE_BATCH: usize = 64;

impl<S: Store> Settler<S> {
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
        #[allow(
            clippy::disallowed_methods,
            reason = "the call's settle loop ends with its stream, or when the broker stops"
        )]
        tokio::spawn(settler.run(inbound, confirmations, finished, self.stopping.clone()));
        let messages = framed(events, spec.frames).map(consume_response);
        Ok(Response::new(Box::pin(
            messages.merge(ReceiverStream::new(confirmed)),
        )))
    }
}
