//! Deadlines: a unary call past its `grpc-timeout` ends with DEADLINE_EXCEEDED.
//!
//! tonic enforces the header too, but answers CANCELLED ("Timeout expired"), which tells a
//! client the wrong thing (it did not cancel). This layer, inside tonic's, ends the call a few
//! milliseconds earlier with the right code. Whatever the handler was doing is dropped: a Redis
//! reply that arrives later is discarded by the multiplexed connection, which stays usable.
//! For streaming calls the limit applies until the stream starts, as in tonic.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::BrokerError;
use crate::grpc::convert::parse_grpc_timeout;

/// How much earlier than tonic's own timer this layer answers.
const AHEAD_OF_TONIC: Duration = Duration::from_millis(5);

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower_layer::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

type HttpRequest<B> = tonic::codegen::http::Request<B>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<HttpRequest<B>> for Deadline<S>
where
    S: tower_service::Service<HttpRequest<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let response = self.inner.call(request);
        let Some(timeout) = timeout else {
            return Box::pin(response);
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout.saturating_sub(AHEAD_OF_TONIC), response).await {
                Ok(response) => response,
                Err(_) => {
                    Ok(tonic::Status::from(BrokerError::DeadlineExceeded(timeout)).into_http())
                }
            }
        })
    }
}
