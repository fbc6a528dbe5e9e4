//! The calls the console is built on (`streamgate.v1.Admin` GetHistory, DescribeCaller): the
//! sampled history of a stream, and what the caller may do, so that the page offers only what
//! the server would allow.

use tonic::{Request, Response};

use super::{AdminService, RpcResult};
use crate::auth::{Caller, Permission};
use crate::error::BrokerError;
use crate::grpc::convert;
use crate::grpc::pb;
use crate::store::Store;

fn permission_names(held: impl Fn(Permission) -> bool) -> Vec<String> {
    Permission::ALL
        .into_iter()
        .filter(|p| held(*p))
        .map(|p| p.to_string())
        .collect()
}

impl<S: Store> AdminService<S> {
    pub(super) async fn get_history_call(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> RpcResult<pb::StreamHistory> {
        let request = request.into_inner();
        let stream = self.stream(Permission::AdminRead, &request.stream)?;
        let Some(history) = &self.history else {
            return Err(BrokerError::FailedPrecondition(
                "no history is sampled: start the broker with --console-addr".into(),
            )
            .into());
        };
        let interval_ms = u64::try_from(history.interval().as_millis()).unwrap_or(u64::MAX);
        // A stream not sampled yet (created since the last round) has no points: not an error.
        let sampled = history.stream(&stream).unwrap_or_default();
        Ok(Response::new(pb::StreamHistory {
            interval_ms,
            samples: sampled
                .points
                .into_iter()
                .map(|p| pb::StreamSample {
                    at_ms: p.at_ms,
                    length: p.length,
                    produced_per_second: p.produced_per_second,
                    delivered_per_second: p.delivered_per_second,
                })
                .collect(),
            groups: sampled
                .groups
                .into_iter()
                .map(|(group, points)| pb::GroupHistory {
                    group,
                    samples: points
                        .into_iter()
                        .map(|p| pb::GroupSample {
                            at_ms: p.at_ms,
                            lag: p.lag,
                            pending: p.pending,
                            delivered_per_second: p.delivered_per_second,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    pub(super) async fn describe_caller_call(
        &self,
        request: Request<pb::DescribeCallerRequest>,
    ) -> RpcResult<pb::CallerDescription> {
        let request = request.into_inner();
        let caller = Caller::current();
        let streams = request
            .streams
            .iter()
            .map(|stream| {
                let stream = convert::name("streams", stream, &self.limits)?;
                Ok(pb::StreamPermissions {
                    permissions: permission_names(|p| caller.may(p, &stream)),
                    stream,
                })
            })
            .collect::<Result<Vec<_>, BrokerError>>()?;
        Ok(Response::new(pb::CallerDescription {
            authentication: matches!(caller, Caller::Principal(_)),
            principal: caller.name().to_owned(),
            streams,
            any_stream: permission_names(|p| caller.may_any(p)),
        }))
    }
}
