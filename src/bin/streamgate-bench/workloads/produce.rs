//! Produce, ProduceStream and the empty unary call, against raw XADD.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::setup;

use super::*;

/// Unary Produce, `batch` messages of `size` bytes per call.
pub(crate) async fn produce_broker(
    bench: &Bench,
    batch: usize,
    size: usize,
) -> anyhow::Result<f64> {
    let stream = format!("bench-produce-{batch}-{size}");
    let value = payload(size);
    let result = rate(bench.producers, bench.duration, |i, deadline| {
        let client = bench.broker(i);
        let request = request(&stream, batch, &value);
        produce_until(client, request, deadline)
    })
    .await;
    bench.del(&stream).await?;
    result
}

/// Unary Produce to a partitioned topic of `partitions` partitions on the broker at `addr`
/// (batches of `batch`, no partition key: spread round-robin), with `producers` producers.
pub(crate) async fn topic_produce(
    addr: &str,
    partitions: u32,
    batch: usize,
    producers: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(setup::connect(addr).await?);
    }
    pb::admin_client::AdminClient::new(channels[0].clone())
        .create_topic(pb::CreateTopicRequest {
            topic: "bench-topic".into(),
            partitions,
        })
        .await?;
    let value = payload(100);
    rate(producers, duration, |i, deadline| {
        let client = BrokerClient::new(channels[i % channels.len()].clone());
        let request = request("bench-topic", batch, &value);
        produce_until(client, request, deadline)
    })
    .await
}

/// XADD directly (batches as one pipeline), same concurrency.
pub(crate) async fn produce_raw(bench: &Bench, batch: usize, size: usize) -> anyhow::Result<f64> {
    let stream = format!("bench-raw-{batch}-{size}");
    let value = payload(size);
    let result = rate(bench.producers, bench.duration, |_, deadline| {
        let mut conn = bench.redis.clone();
        let (stream, value) = (stream.clone(), value.clone());
        async move {
            let mut pipe = redis::pipe();
            for _ in 0..batch {
                pipe.cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg("v")
                    .arg(value.as_ref());
            }
            let mut moved = 0;
            while Instant::now() < deadline {
                let _: Vec<String> = pipe.query_async(&mut conn).await?;
                moved += batch as u64;
            }
            Ok(moved)
        }
    })
    .await;
    bench.del(&stream).await?;
    result
}

/// The cheapest unary call the server has (Health/Check): gRPC's own cost on this machine.
pub(crate) async fn empty_unary(bench: &Bench) -> anyhow::Result<f64> {
    rate(bench.producers, bench.duration, |i, deadline| {
        let mut client = HealthClient::new(bench.channels[i % bench.channels.len()].clone());
        async move {
            let mut calls = 0;
            while Instant::now() < deadline {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                calls += 1;
            }
            Ok(calls)
        }
    })
    .await
}

/// ProduceStream, one message per request, `window` requests outstanding per producer.
pub(crate) async fn stream_produce_broker(bench: &Bench) -> anyhow::Result<f64> {
    let stream = "bench-stream-produce";
    let value = payload(100);
    let window = bench.window;
    let result = rate(bench.producers, bench.duration, |i, deadline| {
        let mut client = bench.broker(i);
        let request = request(stream, 1, &value);
        async move {
            let (tx, rx) = mpsc::channel(window);
            let credits = Arc::new(Semaphore::new(window));
            let sender_credits = credits.clone();
            let sender = tokio::spawn(async move {
                while Instant::now() < deadline {
                    let Ok(permit) = sender_credits.acquire().await else {
                        break;
                    };
                    permit.forget();
                    if tx.send(request.clone()).await.is_err() {
                        break;
                    }
                }
                // Dropping `tx` half-closes the call; the broker answers the rest and ends it.
            });
            let mut answers = client
                .produce_stream(ReceiverStream::new(rx))
                .await?
                .into_inner();
            let mut moved = 0;
            while let Some(answer) = answers.message().await? {
                if let Some(pb::produce_stream_response::Result::Error(error)) = answer.result {
                    anyhow::bail!("ProduceStream request failed: {}", error.message);
                }
                moved += 1;
                credits.add_permits(1);
            }
            sender.await?;
            Ok(moved)
        }
    })
    .await;
    bench.del(stream).await?;
    result
}

/// Single XADDs, `window` outstanding per producer, on one multiplexed connection.
pub(crate) async fn stream_produce_raw(bench: &Bench) -> anyhow::Result<f64> {
    let stream = "bench-raw-stream-produce";
    let value = payload(100);
    let window = bench.window;
    let result = rate(bench.producers, bench.duration, |_, deadline| {
        let conn = bench.redis.clone();
        let value = value.clone();
        async move {
            let xadd = || {
                let mut conn = conn.clone();
                let value = value.clone();
                async move {
                    redis::cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg("v")
                        .arg(value.as_ref())
                        .query_async::<String>(&mut conn)
                        .await
                }
            };
            let mut in_flight = FuturesUnordered::new();
            let mut moved = 0;
            while Instant::now() < deadline {
                while in_flight.len() < window {
                    in_flight.push(xadd());
                }
                if let Some(done) = in_flight.next().await {
                    done?;
                    moved += 1;
                }
            }
            while let Some(done) = in_flight.next().await {
                done?;
                moved += 1;
            }
            Ok(moved)
        }
    })
    .await;
    bench.del(stream).await?;
    result
}

/// One producer's loop: the same request, one call after another, until `deadline`; the
/// messages it moved.
async fn produce_until(
    mut client: BrokerClient<tonic::transport::Channel>,
    request: pb::ProduceRequest,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let mut moved = 0;
    while Instant::now() < deadline {
        client.produce(request.clone()).await?;
        moved += request.messages.len() as u64;
    }
    Ok(moved)
}
