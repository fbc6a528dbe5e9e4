//! Prometheus metrics: what happened to messages, how long RPCs take, and what Redis holds.
//!
//! Counters and histograms go through the `metrics` facade, which costs nothing when no recorder
//! is installed (`--metrics-addr` unset). With one, `metrics-exporter-prometheus` serves them
//! at `http://<addr>/metrics`. Gauges of things that live outside this process (group pending and
//! lag, pool connections) are sampled periodically by [`crate::ops::gauges::sample`].
//!
//! Labels are the stream (and group) names: keep their number bounded, as with any Prometheus
//! label.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// The name of the per-hop histogram (see [`Hop`]).
pub const HOP_SECONDS: &str = "streamgate_hop_seconds";

/// Starts the exporter on `addr` and makes it the process's recorder.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .and_then(|builder| {
            // A hop takes tens of microseconds when all is well: finer buckets at the bottom.
            builder.set_buckets_for_metric(
                Matcher::Full(HOP_SECONDS.to_owned()),
                &[
                    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                    0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ],
            )
        })
        .map_err(|err| err.to_string())?
        .install()
        .map_err(|err| format!("cannot serve metrics on {addr}: {err}"))
}

/// One hop of a message's way through the broker, for `streamgate_hop_seconds{hop}`: which
/// one grows is where end-to-end latency goes. The client's own time (from a frame written to
/// its ack arriving) is not a hop of the broker's and is not measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// A produce request received → its append returned by the store (a ProduceStream
    /// request: from when its batch was taken).
    Append,
    /// An append (or the watcher of outside writes) notified a stream → a reader waiting on
    /// it woke.
    Wake,
    /// A woken reader's read → the store returned its messages (the read, its sweep, filters).
    Read,
    /// Messages returned by a read → the frame carrying them taken by the transport to write.
    Deliver,
    /// Acks, nacks or extensions received on a session → applied by the store.
    Settle,
}

impl Hop {
    fn label(self) -> &'static str {
        match self {
            Hop::Append => "append",
            Hop::Wake => "wake",
            Hop::Read => "read",
            Hop::Deliver => "deliver",
            Hop::Settle => "settle",
        }
    }
}

/// Records how long one `hop` took, from `since` until now.
pub fn hop(hop: Hop, since: Instant) {
    histogram!(HOP_SECONDS, "hop" => hop.label()).record(since.elapsed().as_secs_f64());
}

/// Messages appended by Produce / ProduceStream.
pub fn produced(stream: &str, count: usize) {
    counter!("streamgate_messages_produced_total", "stream" => stream.to_owned())
        .increment(count as u64);
}

/// Messages handed to a client (Subscribe or Fetch; `mode` is `group` or `tail`).
pub fn delivered(stream: &str, mode: &'static str, count: usize) {
    counter!("streamgate_messages_delivered_total", "stream" => stream.to_owned(), "mode" => mode)
        .increment(count as u64);
}

/// Messages acknowledged through this broker.
pub fn acked(stream: &str, count: u64) {
    counter!("streamgate_messages_acked_total", "stream" => stream.to_owned()).increment(count);
}

/// Messages nacked through this broker.
pub fn nacked(stream: &str, count: usize) {
    counter!("streamgate_messages_nacked_total", "stream" => stream.to_owned())
        .increment(count as u64);
}

/// Messages a subscription's filter did not match: acknowledged for the group without delivery.
pub fn filtered(stream: &str, count: usize) {
    counter!("streamgate_messages_filtered_total", "stream" => stream.to_owned())
        .increment(count as u64);
}

/// Delayed messages `held` by a Produce, or `delivered` (appended to their stream when due).
pub fn delayed(what: &'static str, stream: &str, count: usize) {
    if count > 0 {
        counter!("streamgate_messages_delayed_total", "stream" => stream.to_owned(), "event" => what)
            .increment(count as u64);
    }
}

/// Messages past their expiry, not delivered (acknowledged for the group, or dead-lettered).
pub fn expired(stream: &str, count: usize) {
    counter!("streamgate_messages_expired_total", "stream" => stream.to_owned())
        .increment(count as u64);
}

/// Entries a stream's retention policy deleted, by reason (`acked`, `max_age`, `max_len`).
pub fn trimmed(stream: &str, trimmed: &crate::model::Trimmed) {
    for (reason, count) in [
        ("acked", trimmed.acked),
        ("max_age", trimmed.max_age),
        ("max_len", trimmed.max_len),
    ] {
        if count > 0 {
            counter!("streamgate_entries_trimmed_total", "stream" => stream.to_owned(), "reason" => reason)
                .increment(count);
        }
    }
}

/// Messages redelivered, dead-lettered, or found deleted before ack, by this broker's sweeps.
pub fn redelivery(stream: &str, redelivered: usize, dead_lettered: usize, lost: usize) {
    let stream = stream.to_owned();
    for (name, count) in [
        ("streamgate_messages_redelivered_total", redelivered),
        ("streamgate_messages_dead_lettered_total", dead_lettered),
        ("streamgate_messages_lost_before_ack_total", lost),
    ] {
        if count > 0 {
            counter!(name, "stream" => stream.clone()).increment(count as u64);
        }
    }
}

/// One redelivery sweep of a group's pending list: `swept` by this instance, or `skipped`
/// because another instance holds the group's sweep lease. Summed over instances, `swept` is
/// about one per sweep interval per group.
pub fn sweep(outcome: &'static str) {
    counter!("streamgate_sweeps_total", "outcome" => outcome).increment(1);
}

/// A store call failed; `kind` is the error's class.
pub fn store_error(kind: &'static str) {
    counter!("streamgate_store_errors_total", "kind" => kind).increment(1);
}

/// Open Subscribe streams, kept by the pumps themselves.
pub fn subscriptions_open(delta: f64) {
    gauge!("streamgate_subscriptions_open").increment(delta);
}

/// Subscriptions waiting at their in-flight limit: one that stays there means a client that
/// stopped acknowledging (or acks that do not arrive).
pub fn subscriptions_at_limit(delta: f64) {
    gauge!("streamgate_subscriptions_at_limit").increment(delta);
}

/// A tower layer timing every gRPC call: `streamgate_rpc_duration_seconds{method, code}`,
/// until the response headers (for a stream: until it started).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

type Http<B> = tonic::codegen::http::Request<B>;
type HttpResponse<B> = tonic::codegen::http::Response<B>;

impl<S, B, R> tower_service::Service<Http<B>> for RpcMetrics<S>
where
    S: tower_service::Service<Http<B>, Response = HttpResponse<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Http<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            // An error status before any message comes in the headers (trailers-only); a
            // status in the trailers is almost always OK.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("Ok".to_owned(), |c| format!("{:?}", tonic::Code::from(c))),
                Err(_) => "TransportError".to_owned(),
            };
            histogram!("streamgate_rpc_duration_seconds", "method" => method, "code" => code)
                .record(started.elapsed().as_secs_f64());
            response
        })
    }
}
