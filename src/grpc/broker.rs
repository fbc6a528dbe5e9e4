//! `streamgate.v1.Broker`: Produce, Subscribe, Ack.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::config::Limits;
use crate::error::BrokerResult;
use crate::fetch;
use crate::grpc::convert;
use crate::grpc::pb;
use crate::store::Store;
use crate::subscription::{Event, Subscriptions};

/// The data-plane service over any [`Store`].
pub struct BrokerService<S> {
    store: S,
    subscriptions: Subscriptions<S>,
    limits: Arc<Limits>,
    stopping: CancellationToken,
}

impl<S: Store> BrokerService<S> {
    /// Serves `store`; subscriptions are started through `subscriptions`. When `stopping` is
    /// cancelled (shutdown), waiting Fetch calls return their empty batch at once.
    pub fn new(
        store: S,
        subscriptions: Subscriptions<S>,
        limits: Arc<Limits>,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            store,
            subscriptions,
            limits,
            stopping,
        }
    }
}

fn to_response(item: BrokerResult<Event>) -> Result<pb::SubscribeResponse, Status> {
    item.map(Into::into).map_err(Into::into)
}

/// The Subscribe response stream: the pump's channel, converted item by item.
pub type SubscribeStream = tokio_stream::adapters::Map<
    ReceiverStream<BrokerResult<Event>>,
    fn(BrokerResult<Event>) -> Result<pb::SubscribeResponse, Status>,
>;

#[tonic::async_trait]
impl<S: Store> pb::broker_server::Broker for BrokerService<S> {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let request = request.into_inner();
        let require_existing = request.require_existing_stream;
        let (stream, messages, trim) = convert::produce(request, &self.limits)?;
        let ids = self
            .store
            .append(&stream, &messages, trim, require_existing)
            .await?;
        Ok(Response::new(pb::ProduceResponse {
            ids: convert::id_strings(&ids),
        }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let spec = convert::subscription(request.into_inner(), &self.limits)?;
        let events = self.subscriptions.open(spec);
        let to_response: fn(_) -> _ = to_response;
        Ok(Response::new(ReceiverStream::new(events).map(to_response)))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let request = request.into_inner();
        let stream = convert::name("stream", &request.stream, &self.limits)?;
        let group = convert::name("group", &request.group, &self.limits)?;
        let ids = convert::ids("ids", &request.ids, &self.limits)?;
        let acknowledged = self.store.ack(&stream, &group, &ids).await?;
        Ok(Response::new(pb::AckResponse { acknowledged }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let deadline = convert::grpc_timeout(request.metadata());
        let spec = convert::fetch(request.into_inner(), deadline, &self.limits)?;
        let fetched = fetch::fetch(&self.store, spec, &self.stopping).await?;
        Ok(Response::new(fetched.into()))
    }
}
