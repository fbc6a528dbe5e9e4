//! The operators' console on its own port (`--console-addr`): the page, and the Broker and
//! Admin services over gRPC-Web behind the same layers as the gRPC port.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::{ServeError, rpc_span};
use crate::auth::AuthLayer;
use crate::console;

/// Most streams the console's history samples (the first ones a SCAN returns).
pub(super) const CONSOLE_MAX_STREAMS: usize = 1000;

/// Binds `addr` and serves the console there: its page, and `routes` over gRPC-Web (HTTP/1.1
/// and HTTP/2) with the same authentication, metrics and deadlines as the gRPC port. Stops
/// accepting when `shutdown` is cancelled; the returned task ends when its calls have.
pub(super) async fn serve_console(
    addr: std::net::SocketAddr,
    routes: Routes,
    auth: AuthLayer,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let listener = TcpListener::bind(addr).await.map_err(|err| {
        ServeError::Config(format!("--console-addr: cannot listen on {addr}: {err}"))
    })?;
    let local = listener.local_addr().map_err(|err| {
        ServeError::Config(format!(
            "--console-addr: cannot read the bound address: {err}"
        ))
    })?;
    tracing::info!(url = %format!("http://{local}{}", console::ASSET_PREFIX), "serving the console");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .accept_http1(true)
        .trace_fn(rpc_span)
        .layer(crate::ops::metrics::RpcMetricsLayer)
        .layer(crate::grpc::deadline::DeadlineLayer)
        .layer(auth.with_public_prefix(console::ASSET_PREFIX))
        .add_routes(console::routes(routes))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
    #[allow(
        clippy::disallowed_methods,
        reason = "the caller awaits the handle at the end of the drain"
    )]
    let console = tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(error = %err, "the console server failed");
        }
    });
    Ok(console)
}
