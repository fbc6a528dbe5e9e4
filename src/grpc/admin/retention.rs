//! The retention calls of `streamgate.v1.Admin` (set, get, apply): authorize, convert, call the
//! core's [`Retention`](crate::delivery::Retention), convert back.

use tonic::{Request, Response};

use super::{AdminService, RpcResult};
use crate::auth::Permission;
use crate::error::BrokerError;
use crate::grpc::pb;
use crate::model::RetentionPolicy;
use crate::store::Store;

impl From<pb::RetentionPolicy> for RetentionPolicy {
    fn from(policy: pb::RetentionPolicy) -> Self {
        Self {
            acked: policy.acked,
            max_age_ms: (policy.max_age_ms > 0).then_some(policy.max_age_ms),
            keep_pending: policy.keep_pending,
            max_len: (policy.max_len > 0).then_some(policy.max_len),
            dedupe_window_ms: (policy.dedupe_window_ms > 0).then_some(policy.dedupe_window_ms),
        }
    }
}

impl From<RetentionPolicy> for pb::RetentionPolicy {
    fn from(policy: RetentionPolicy) -> Self {
        Self {
            acked: policy.acked,
            max_age_ms: policy.max_age_ms.unwrap_or(0),
            keep_pending: policy.keep_pending,
            max_len: policy.max_len.unwrap_or(0),
            dedupe_window_ms: policy.dedupe_window_ms.unwrap_or(0),
        }
    }
}

impl<S: Store> AdminService<S> {
    pub(super) async fn set_retention_call(
        &self,
        request: Request<pb::SetRetentionRequest>,
    ) -> RpcResult<pb::RetentionPolicy> {
        let request = request.into_inner();
        let stream = self.stream(Permission::AdminWrite, &request.stream)?;
        let policy = RetentionPolicy::from(request.policy.unwrap_or_default());
        if policy.keep_pending && policy.max_age_ms.is_none() {
            return Err(BrokerError::invalid(
                "policy.keep_pending",
                "applies to max_age_ms only; set max_age_ms too",
            )
            .into());
        }
        self.core.retention().set(&stream, &policy).await?;
        Ok(Response::new(policy.into()))
    }

    pub(super) async fn get_retention_call(
        &self,
        request: Request<pb::GetRetentionRequest>,
    ) -> RpcResult<pb::RetentionPolicy> {
        let stream = self.stream(Permission::AdminRead, &request.get_ref().stream)?;
        let policy =
            self.core.retention().get(&stream).await?.ok_or_else(|| {
                BrokerError::NotFound(format!("`{stream}` has no retention policy"))
            })?;
        Ok(Response::new(policy.into()))
    }

    pub(super) async fn apply_retention_call(
        &self,
        request: Request<pb::GetRetentionRequest>,
    ) -> RpcResult<pb::ApplyRetentionResponse> {
        let stream = self.stream(Permission::AdminWrite, &request.get_ref().stream)?;
        let trimmed = self.core.retention().apply(&stream).await?;
        Ok(Response::new(pb::ApplyRetentionResponse {
            trimmed_acked: trimmed.acked,
            trimmed_max_age: trimmed.max_age,
            trimmed_max_len: trimmed.max_len,
        }))
    }
}
