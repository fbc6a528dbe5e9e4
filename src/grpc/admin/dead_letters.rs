//! The dead-letter calls of `streamgate.v1.Admin` (list, replay): authorize, convert, call
//! [`crate::delivery::dead_letters`], convert back. Replay also needs `produce` on every stream the
//! letters go back to.

use tonic::{Request, Response};

use super::{AdminService, RpcResult};
use crate::auth::{Caller, Permission};
use crate::delivery::dead_letters::{self, Selection};
use crate::error::BrokerError;
use crate::grpc::convert;
use crate::grpc::pb;
use crate::store::Store;

impl<S: Store> AdminService<S> {
    pub(super) async fn list_dead_letters_call(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> RpcResult<pb::ListDeadLettersResponse> {
        let request = request.into_inner();
        let stream = self.stream_as(
            "dead_letter_stream",
            Permission::AdminRead,
            &request.dead_letter_stream,
        )?;
        let range = convert::range("start", &request.start, "end", &request.end)?;
        let count = self.listing_count(request.count)?;
        let letters = dead_letters::list(&self.store, &stream, range, count).await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: letters.into_iter().map(Into::into).collect(),
        }))
    }

    pub(super) async fn replay_dead_letters_call(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> RpcResult<pb::ReplayDeadLettersResponse> {
        let request = request.into_inner();
        let stream = self.stream_as(
            "dead_letter_stream",
            Permission::AdminWrite,
            &request.dead_letter_stream,
        )?;
        let selection = if request.ids.is_empty() {
            Selection::Range(
                convert::range("start", &request.start, "end", &request.end)?,
                self.listing_count(request.count)?,
            )
        } else {
            if !request.start.is_empty() || !request.end.is_empty() || request.count != 0 {
                return Err(BrokerError::invalid(
                    "ids",
                    "give either ids, or start/end/count, not both",
                )
                .into());
            }
            Selection::Ids(convert::ids("ids", &request.ids, &self.limits)?)
        };
        // Replaying appends to the streams the letters came from: the caller must be allowed
        // to produce there too.
        let caller = Caller::current();
        let replayed = dead_letters::replay(&self.store, &stream, selection, |targets| {
            caller.require(Permission::Produce, targets.iter().copied())
        })
        .await?;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: replayed
                .into_iter()
                .map(|r| pb::ReplayedMessage {
                    dead_letter_id: r.dead_letter_id.to_string(),
                    stream: r.stream,
                    id: r.id.to_string(),
                })
                .collect(),
        }))
    }
}
