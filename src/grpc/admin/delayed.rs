//! The delayed-delivery calls of `streamgate.v1.Admin` (list, cancel): authorize, convert, call
//! the core's [`DelayedDelivery`](crate::delivery::DelayedDelivery), convert back.

use tonic::{Request, Response};

use super::{AdminService, RpcResult};
use crate::auth::Permission;
use crate::error::BrokerError;
use crate::grpc::pb;
use crate::store::Store;

/// How many held messages a listing shows unless asked.
const DEFAULT_LISTED: usize = 100;

impl<S: Store> AdminService<S> {
    pub(super) async fn list_delayed_call(
        &self,
        request: Request<pb::ListDelayedRequest>,
    ) -> RpcResult<pb::ListDelayedResponse> {
        let request = request.into_inner();
        let stream = self.stream(Permission::AdminRead, &request.stream)?;
        let count = match request.count {
            0 => DEFAULT_LISTED,
            n => (n as usize).min(self.limits.max_read_count),
        };
        let held = self.core.delayed().list(&stream, count).await?;
        Ok(Response::new(pb::ListDelayedResponse {
            messages: held
                .into_iter()
                .map(|message| pb::DelayedMessage {
                    token: message.token,
                    deliver_at_ms: message.due_ms,
                    fields: message.fields.into_iter().map(pb::Field::from).collect(),
                })
                .collect(),
        }))
    }

    pub(super) async fn cancel_delayed_call(
        &self,
        request: Request<pb::CancelDelayedRequest>,
    ) -> RpcResult<pb::CancelDelayedResponse> {
        let request = request.into_inner();
        let stream = self.stream(Permission::AdminWrite, &request.stream)?;
        if request.tokens.is_empty() {
            return Err(BrokerError::invalid("tokens", "must name at least one").into());
        }
        let cancelled = self.core.delayed().cancel(&stream, request.tokens).await?;
        Ok(Response::new(pb::CancelDelayedResponse { cancelled }))
    }
}
