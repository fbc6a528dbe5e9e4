//! The workloads: each one against the broker and, where the issue asks, the same work done
//! directly with redis-rs against the same Redis, at the same concurrency, in the same run.

mod consume;
mod idle;
mod latency;
mod produce;

pub(crate) use consume::*;
pub(crate) use idle::*;
pub(crate) use latency::*;
pub(crate) use produce::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// What every workload needs: where things are and how hard to push.
pub(crate) struct Bench {
    /// Broker address.
    pub(crate) addr: String,
    /// A few HTTP/2 connections to the broker, shared round-robin by the load tasks.
    pub(crate) channels: Vec<Channel>,
    /// One multiplexed connection for the raw baseline and for set-up.
    pub(crate) redis: MultiplexedConnection,
    /// The broker's pid, when this run started it (for RSS).
    pub(crate) broker_pid: Option<u32>,
    /// Concurrent producers.
    pub(crate) producers: usize,
    /// How long each throughput measurement runs.
    pub(crate) duration: Duration,
    /// Messages pre-filled for the consume workloads.
    pub(crate) messages: usize,
    /// Requests each streaming producer keeps outstanding.
    pub(crate) window: usize,
    /// The broker's metrics endpoint, with `--hops`.
    pub(crate) metrics: Option<String>,
}

impl Bench {
    fn broker(&self, i: usize) -> BrokerClient<Channel> {
        BrokerClient::new(self.channels[i % self.channels.len()].clone())
    }

    async fn del(&self, key: &str) -> anyhow::Result<()> {
        let _: u64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

fn payload(size: usize) -> Bytes {
    Bytes::from(vec![b'x'; size])
}

fn request(stream: &str, batch: usize, value: &Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.to_owned(),
        messages: (0..batch)
            .map(|_| pb::OutgoingMessage {
                id: String::new(),
                fields: vec![pb::Field {
                    name: "v".into(),
                    value: value.clone(),
                }],
                ..Default::default()
            })
            .collect(),
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    }
}

/// Runs `tasks` copies of a loop until `duration` passes; each returns how many messages it
/// moved. Returns messages per second.
async fn rate<F, Fut>(tasks: usize, duration: Duration, make: F) -> anyhow::Result<f64>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..tasks)
        .map(|i| tokio::spawn(make(i, deadline)))
        .collect();
    let mut total = 0;
    for handle in handles {
        total += handle.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Fills `stream` with `n` messages of 100 bytes, in pipelines of 1,000.
async fn prefill(bench: &Bench, stream: &str, n: usize) -> anyhow::Result<()> {
    let value = payload(100);
    let mut conn = bench.redis.clone();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for _ in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("v")
                .arg(value.as_ref())
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(())
}

async fn create_group(bench: &Bench, stream: &str, group: &str, start: &str) -> anyhow::Result<()> {
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(&mut bench.redis.clone())
        .await?;
    Ok(())
}

/// Acks collected ids in batches of this many, without waiting for each Ack.
const ACK_BATCH: usize = 100;

/// Reads a group Subscribe until `stop`, acking in batches; counts into `delivered`.
async fn consume_group(
    mut client: BrokerClient<Channel>,
    request: pb::SubscribeRequest,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
    mut on_message: impl FnMut(&pb::ReceivedMessage) + Send,
) -> anyhow::Result<()> {
    let stream = request.streams[0].stream.clone();
    let group = request.group.clone();
    let mut events = client.subscribe(request).await?.into_inner();
    let mut ids = Vec::with_capacity(ACK_BATCH);
    let mut acks = Vec::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = events.message() => event?,
        };
        let Some(pb::SubscribeResponse {
            event: Some(pb::subscribe_response::Event::Message(message)),
        }) = event
        else {
            continue;
        };
        on_message(&message);
        ids.push(message.id);
        delivered.fetch_add(1, Ordering::Relaxed);
        if ids.len() >= ACK_BATCH {
            let mut acker = client.clone();
            let request = pb::AckRequest {
                stream: stream.clone(),
                group: group.clone(),
                ids: std::mem::take(&mut ids),
            };
            acks.push(tokio::spawn(async move { acker.ack(request).await }));
        }
    }
    if !ids.is_empty() {
        client.ack(pb::AckRequest { stream, group, ids }).await?;
    }
    for ack in acks {
        ack.await??;
    }
    Ok(())
}

async fn wait_for(counter: &AtomicU64, target: u64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::Relaxed) < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {target} delivered within {limit:?}",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

pub(super) fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}
