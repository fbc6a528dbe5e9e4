//! `Broker.Consume`: a group member's whole session on one bidirectional stream
//! ([`open_session`]). This file only translates: the opening request into the session's
//! options, acks, nacks, extensions and credit into settle requests, and what became of each
//! into a confirmation that says which ids it applied to and why not the others.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{BrokerService, record_reader};
use crate::auth::{Caller, Permission};
use crate::calls::Event;
use crate::calls::frames::Frame;
use crate::calls::session::{Outgoing, SessionOptions, SessionWire, Step, open_session};
use crate::calls::settle::{Refusal, SettleKind, Settled};
use crate::config::Limits;
use crate::delivery::Credit;
use crate::error::BrokerError;
use crate::grpc::convert;
use crate::grpc::pb;
use crate::store::Store;

/// The Consume response stream.
pub(super) type ConsumeStream =
    Pin<Box<dyn Stream<Item = Result<pb::ConsumeResponse, Status>> + Send>>;

/// How long a client may take to send `open` after opening the stream.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// How Consume spells a session: `pb::Settle` in, `pb::Confirmation` out.
struct ConsumeWire {
    limits: Arc<Limits>,
    /// The session's credit, if the client grants any.
    credit: Option<Credit>,
}

/// What a confirmation repeats of its request: its id and the ids as the client wrote them.
struct Note {
    request_id: u64,
    ids: Vec<String>,
}

impl SessionWire for ConsumeWire {
    type Request = pb::ConsumeRequest;
    type Note = Note;
    type Answer = pb::Confirmation;

    fn take(&mut self, request: pb::ConsumeRequest) -> Step<Note> {
        use pb::consume_request::Request as Kind;
        let (kind, settle) = match request.request {
            Some(Kind::Ack(settle)) => (SettleKind::Ack, settle),
            Some(Kind::Nack(settle)) => (SettleKind::Nack { delay: None }, settle),
            Some(Kind::Extend(settle)) => (SettleKind::Extend, settle),
            Some(Kind::Credit(credit)) => {
                if let Some(granted) = &self.credit {
                    granted.grant(u64::from(credit.messages), credit.bytes);
                }
                return Step::Nothing;
            }
            Some(Kind::Open(_)) => {
                return Step::End(Some(BrokerError::invalid(
                    "open",
                    "may only be the first request of a Consume stream",
                )));
            }
            None => {
                return Step::End(Some(BrokerError::invalid(
                    "request",
                    "is empty: set ack, nack, extend or credit",
                )));
            }
        };
        let request = convert::consume::settle_request(kind, &settle, &self.limits);
        let note = Note {
            request_id: settle.request_id,
            ids: settle.ids,
        };
        Step::Settle(note, vec![request])
    }

    fn answer(&mut self, settled: Vec<(Note, Vec<Settled>)>) -> Vec<pb::Confirmation> {
        settled
            .into_iter()
            .map(|(note, mut settled)| {
                let settled = settled
                    .pop()
                    .unwrap_or_else(|| Err(Refusal::Failed("not applied".into())));
                convert::consume::confirmation(note.request_id, note.ids, settled)
            })
            .collect()
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

/// What the session sends, as a Consume response.
fn consume_response(out: Outgoing<pb::Confirmation>) -> Result<pb::ConsumeResponse, Status> {
    use pb::consume_response::Event as Kind;
    let event = match out {
        Outgoing::Frame(Frame::Messages(deliveries)) => Kind::Messages(pb::MessageBatch {
            messages: deliveries.into_iter().map(Into::into).collect(),
        }),
        Outgoing::Frame(Frame::Event(Ok(Event::Started { consumer, streams }))) => {
            Kind::Started(pb::SubscriptionStarted { consumer, streams })
        }
        Outgoing::Frame(Frame::Event(Ok(Event::Heartbeat))) => Kind::Heartbeat(pb::Heartbeat {}),
        Outgoing::Frame(Frame::Event(Ok(Event::Message(delivery)))) => {
            Kind::Messages(pb::MessageBatch {
                messages: vec![delivery.into()],
            })
        }
        Outgoing::Answer(confirmation) => Kind::Confirmation(confirmation),
        Outgoing::Frame(Frame::Event(Err(err))) | Outgoing::Broken(err) => {
            return Err(err.into());
        }
    };
    Ok(pb::ConsumeResponse { event: Some(event) })
}

impl<S: Store> BrokerService<S> {
    /// Opens the session: validates `open`, authorizes, and starts it with the client's
    /// credit.
    pub(super) async fn consume_call(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<ConsumeStream>, Status> {
        let mut inbound = request.into_inner();
        let open = receive_open(&mut inbound).await?;
        let spec =
            convert::consume::consume(open, &self.serving.limits, self.serving.core.backoff())?;
        let caller = Caller::current();
        caller.require(
            Permission::Consume,
            spec.subscription.member.streams.iter().map(String::as_str),
        )?;
        let resolved = self.serving.core.resolve(spec.subscription.member).await?;
        record_reader(&resolved);
        let credit = spec
            .credit
            .map(|(messages, bytes)| Credit::new(messages, bytes));
        let wire = ConsumeWire {
            limits: self.serving.limits.clone(),
            credit: credit.clone(),
        };
        let options = SessionOptions {
            batch_size: spec.subscription.batch_size,
            frames: spec.frames,
            credit,
            exactly_once: spec.exactly_once,
            max_ids: self.serving.limits.max_read_count,
        };
        let outgoing = open_session(
            &self.serving.pumps,
            resolved,
            options,
            caller.name(),
            wire,
            inbound,
        )?;
        Ok(Response::new(Box::pin(outgoing.map(consume_response))))
    }
}
