//! `streamgate.v1.Broker`: Produce, ProduceStream, Subscribe, Ack, Nack, ExtendDeadline, Fetch,
//! and Consume (in [`consume`], a session of [`calls::session`](crate::calls::session), with
//! the framing it shares with Subscribe in [`calls::frames`](crate::calls::frames)).

mod consume;

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Permission};
use crate::calls::Event;
use crate::calls::fetch;
use crate::calls::frames::{Frame, framed};
use crate::config::Limits;
use crate::delivery::{DeliveryCore, Origin, Produced, ReadMode, ResolvedSpec};
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::Serving;
use crate::grpc::convert;
use crate::grpc::pb;
use crate::model::Append;
use crate::ops::metrics::{self, Hop};
use crate::store::Store;

/// The data-plane service over any [`Store`].
pub struct BrokerService<S> {
    serving: Serving<S>,
}

impl<S: Store> BrokerService<S> {
    /// Serves through `serving`: when its `stopping` is cancelled (shutdown), waiting Fetch
    /// calls return their empty batch at once and Subscribe and Consume streams end.
    pub fn new(serving: Serving<S>) -> Self {
        Self { serving }
    }
}

/// What turns one Produce request into an append: validation, permission, then the core's
/// preparation (topic routing, the trace context). Shared by Produce and ProduceStream (whose
/// every request goes through it).
struct Producer<S> {
    core: DeliveryCore<S>,
    limits: Arc<Limits>,
    caller: Caller,
    traceparent: Option<String>,
}

impl<S: Store> Producer<S> {
    /// A request, checked and authorized, with what the core needs besides its messages.
    fn check(&self, request: pb::ProduceRequest) -> Result<(Append, Origin), Status> {
        let origin = Origin {
            partition_key: request.partition_key.clone(),
            traceparent: self.traceparent.clone(),
        };
        let append = convert::produce(request, &self.limits)?;
        self.caller
            .require(Permission::Produce, [append.stream.as_str()])?;
        Ok((append, origin))
    }

    /// A request of a ProduceStream, ready to append.
    async fn prepare(&self, request: pb::ProduceRequest) -> Result<Append, Status> {
        let (append, origin) = self.check(request)?;
        Ok(self.core.prepare(append, &origin).await?)
    }
}

impl<S: Store> BrokerService<S> {
    fn producer(&self, metadata: &tonic::metadata::MetadataMap) -> Producer<S> {
        Producer {
            core: self.serving.core.clone(),
            limits: self.serving.limits.clone(),
            caller: Caller::current(),
            traceparent: convert::traceparent(metadata),
        }
    }
}

/// Most requests of one ProduceStream coalesced into one pipelined round trip.
const PRODUCE_STREAM_BATCH: usize = 64;

/// Appends validated requests in one round trip; invalid ones are answered without touching
/// Redis. Answers come back in request order.
async fn append_stream_batch<S: Store>(
    core: &DeliveryCore<S>,
    requests: Vec<Result<Append, Status>>,
) -> Vec<Result<pb::ProduceResponse, Status>> {
    // Split without copying: the valid requests go to the store, the rest keep their errors.
    let mut valid = Vec::with_capacity(requests.len());
    let slots: Vec<Option<Status>> = requests
        .into_iter()
        .map(|request| match request {
            Ok(append) if append.deliver_at_ms.is_some() => {
                Some(Status::from(BrokerError::invalid(
                    "deliver_at_ms",
                    "a delayed Produce is served by the unary Produce, not ProduceStream",
                )))
            }
            Ok(append) => {
                valid.push(append);
                None
            }
            Err(status) => Some(status),
        })
        .collect();
    let stored: Vec<Result<_, Status>> = match core.append(&valid).await {
        Ok(answers) => answers
            .into_iter()
            .map(|answer| answer.map_err(Status::from))
            .collect(),
        // The round trip itself failed: every valid request shares that fate.
        Err(err) => vec![Err(Status::from(err)); valid.len()],
    };
    let mut stored = stored.into_iter();
    slots
        .into_iter()
        .map(|slot| {
            if let Some(status) = slot {
                return Err(status);
            }
            let ids = stored.next().unwrap_or_else(|| {
                Err(
                    BrokerError::Internal("the store gave fewer answers than requests".into())
                        .into(),
                )
            })?;
            Ok(pb::ProduceResponse {
                ids: convert::id_strings(&ids),
                delayed: Vec::new(),
            })
        })
        .collect()
}

/// One request's answer on a ProduceStream: its ids, or its error as data (the stream goes on).
fn stream_answer(result: Result<pb::ProduceResponse, Status>) -> pb::ProduceStreamResponse {
    use pb::produce_stream_response::Result as Outcome;
    let outcome = match result {
        Ok(produced) => Outcome::Produced(produced),
        Err(status) => Outcome::Error(pb::ProduceError {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }),
    };
    pb::ProduceStreamResponse {
        result: Some(outcome),
    }
}

/// Serves one ProduceStream: waits for a request, takes the others already received (up to
/// [`PRODUCE_STREAM_BATCH`]), appends them in one pipelined round trip, answers each in order,
/// and repeats. One round trip at a time per stream is what keeps the stored order equal to the
/// sent order; coalescing is what keeps it fast.
async fn pump_produce_stream<S: Store>(
    mut requests: tonic::Streaming<pb::ProduceRequest>,
    tx: mpsc::Sender<Result<pb::ProduceStreamResponse, Status>>,
    producer: Producer<S>,
    stopping: CancellationToken,
) {
    let core = producer.core.clone();
    loop {
        let mut next = tokio::select! {
            biased;
            _ = stopping.cancelled() => {
                let _ = tx.send(Err(BrokerError::ShuttingDown.into())).await;
                return;
            }
            _ = tx.closed() => return,
            request = requests.message() => request,
        };
        let taken = Instant::now();
        let mut batch = Vec::new();
        // Set when the client half-closed (Ok) or the transport failed (Err).
        let mut end: Option<Result<(), Status>> = None;
        loop {
            match next {
                Ok(Some(request)) => batch.push(producer.prepare(request).await),
                Ok(None) => end = Some(Ok(())),
                Err(status) => end = Some(Err(status)),
            }
            if end.is_some() || batch.len() == PRODUCE_STREAM_BATCH {
                break;
            }
            // Only what has arrived already; never wait for more here.
            match requests.message().now_or_never() {
                Some(request) => next = request,
                None => break,
            }
        }
        // Appends already started finish even during shutdown, and are answered: no request is
        // left in doubt.
        let answers = append_stream_batch(&core, batch).await;
        metrics::hop(Hop::Append, taken);
        for answer in answers {
            if tx.send(Ok(stream_answer(answer))).await.is_err() {
                return;
            }
        }
        match end {
            None => {}
            // Dropping `tx` ends the response stream with OK.
            Some(Ok(())) => return,
            Some(Err(status)) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}

/// Names the streams, group and consumer of a read on the call's `rpc` span (opened by the
/// server for every call; see `server::rpc_span`), so that its log lines say what it was about.
fn record_reader(spec: &ResolvedSpec) {
    let span = tracing::Span::current();
    span.record("stream", spec.streams().join(",").as_str());
    if let ReadMode::Group { membership, .. } = spec.reading() {
        span.record("group", membership.group.as_str());
        span.record("consumer", membership.consumer.as_str());
    }
}

/// [`record_reader`] for calls about messages of one stream and group.
fn record_target(stream: &str, group: &str, consumer: &str) {
    let span = tracing::Span::current();
    span.record("stream", stream);
    span.record("group", group);
    if !consumer.is_empty() {
        span.record("consumer", consumer);
    }
}

fn to_response(item: BrokerResult<Event>) -> Result<pb::SubscribeResponse, Status> {
    if let Ok(Event::Message(delivery)) = &item {
        metrics::hop(Hop::Deliver, delivery.read_at);
    }
    item.map(Into::into).map_err(Into::into)
}

/// A Subscribe item from a frame (with `max_messages_per_response` above 1).
fn frame_to_response(frame: Frame) -> Result<pb::SubscribeResponse, Status> {
    match frame {
        Frame::Messages(deliveries) => Ok(pb::SubscribeResponse {
            event: Some(pb::subscribe_response::Event::Messages(pb::MessageBatch {
                messages: deliveries.into_iter().map(Into::into).collect(),
            })),
        }),
        Frame::Event(item) => to_response(item),
    }
}

/// The Subscribe response stream: the pump's channel, item by item or framed.
pub type SubscribeStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl<S: Store> pb::broker_server::Broker for BrokerService<S> {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let producer = self.producer(request.metadata());
        tracing::Span::current().record("stream", request.get_ref().stream.as_str());
        let (append, origin) = producer.check(request.into_inner())?;
        let response = match self.serving.core.produce(append, &origin).await? {
            Produced::Stored(ids) => pb::ProduceResponse {
                ids: convert::id_strings(&ids),
                delayed: Vec::new(),
            },
            Produced::Held(delayed) => pb::ProduceResponse {
                ids: Vec::new(),
                delayed,
            },
        };
        Ok(Response::new(response))
    }

    type ProduceStreamStream = ReceiverStream<Result<pb::ProduceStreamResponse, Status>>;

    async fn produce_stream(
        &self,
        request: Request<tonic::Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(PRODUCE_STREAM_BATCH);
        // A task of its own, so that a client that stops reading, or leaves, is noticed.
        let producer = self.producer(request.metadata());
        self.serving.pumps.spawn_call_loop(pump_produce_stream(
            request.into_inner(),
            tx,
            producer,
            self.serving.stopping.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let per_response = request.max_messages_per_response;
        let spec =
            convert::subscription(request, &self.serving.limits, self.serving.core.backoff())?;
        let caller = Caller::current();
        caller.require(
            Permission::Consume,
            spec.member.streams.iter().map(String::as_str),
        )?;
        let resolved = self.serving.core.resolve(spec.member).await?;
        record_reader(&resolved);
        let events = self
            .serving
            .pumps
            .open(resolved, spec.batch_size, caller.name())?;
        if per_response <= 1 {
            return Ok(Response::new(Box::pin(
                ReceiverStream::new(events).map(to_response),
            )));
        }
        let frames = convert::consume::frame_limits(per_response, 0, &self.serving.limits)?;
        Ok(Response::new(Box::pin(
            framed(events, frames).map(frame_to_response),
        )))
    }

    type ConsumeStream = consume::ConsumeStream;

    async fn consume(
        &self,
        request: Request<tonic::Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        self.consume_call(request).await
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let request = request.into_inner();
        let convert::PendingTarget { stream, group, ids } = convert::pending_target(
            &request.stream,
            &request.group,
            &request.ids,
            &self.serving.limits,
        )?;
        record_target(&stream, &group, "");
        Caller::current().require(Permission::Consume, [stream.as_str()])?;
        let acknowledged = self.serving.core.ack(&stream, &group, &ids).await?;
        Ok(Response::new(pb::AckResponse { acknowledged }))
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        let request = request.into_inner();
        let limits = &self.serving.limits;
        let target =
            convert::pending_target(&request.stream, &request.group, &request.ids, limits)?;
        record_target(&target.stream, &target.group, &request.consumer);
        Caller::current().require(Permission::Consume, [target.stream.as_str()])?;
        let holder = match request.consumer.as_str() {
            "" => None,
            consumer => Some(convert::name("consumer", consumer, limits)?),
        };
        let delay = request
            .delay_ms
            .map(|ms| convert::delay("delay_ms", ms))
            .transpose()?;
        let nacked = self
            .serving
            .core
            .nack(&target.stream, &target.group, holder, &target.ids, delay)
            .await?;
        Ok(Response::new(pb::NackResponse {
            ids: convert::id_strings(&nacked),
        }))
    }

    async fn extend_deadline(
        &self,
        request: Request<pb::ExtendDeadlineRequest>,
    ) -> Result<Response<pb::ExtendDeadlineResponse>, Status> {
        let request = request.into_inner();
        let limits = &self.serving.limits;
        let target =
            convert::pending_target(&request.stream, &request.group, &request.ids, limits)?;
        if request.consumer.is_empty() {
            return Err(BrokerError::invalid(
                "consumer",
                "is required: only the consumer holding a message may extend it",
            )
            .into());
        }
        let consumer = convert::name("consumer", &request.consumer, limits)?;
        record_target(&target.stream, &target.group, &consumer);
        Caller::current().require(Permission::Consume, [target.stream.as_str()])?;
        let extended = self
            .serving
            .core
            .extend(&target.stream, &target.group, &consumer, &target.ids)
            .await?;
        Ok(Response::new(pb::ExtendDeadlineResponse {
            ids: convert::id_strings(&extended),
        }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let deadline = convert::grpc_timeout(request.metadata());
        let spec = convert::fetch(
            request.into_inner(),
            deadline,
            &self.serving.limits,
            self.serving.core.backoff(),
        )?;
        Caller::current().require(
            Permission::Consume,
            spec.member.streams.iter().map(String::as_str),
        )?;
        let resolved = self.serving.core.resolve(spec.member).await?;
        record_reader(&resolved);
        let fetched = fetch::fetch(
            &self.serving.core,
            resolved,
            spec.count,
            spec.wait,
            &self.serving.stopping,
        )
        .await?;
        Ok(Response::new(fetched.into()))
    }
}
