//! The workloads: each one against the broker and, where the issue asks, the same work done
//! directly with redis-rs against the same Redis, at the same concurrency, in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::setup;

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
            })
            .collect(),
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
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

/// Unary Produce, `batch` messages of `size` bytes per call.
pub(crate) async fn produce_broker(
    bench: &Bench,
    batch: usize,
    size: usize,
) -> anyhow::Result<f64> {
    let stream = format!("bench-produce-{batch}-{size}");
    let value = payload(size);
    let result = rate(bench.producers, bench.duration, |i, deadline| {
        let mut client = bench.broker(i);
        let request = request(&stream, batch, &value);
        async move {
            let mut moved = 0;
            while Instant::now() < deadline {
                client.produce(request.clone()).await?;
                moved += batch as u64;
            }
            Ok(moved)
        }
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
        let mut client = BrokerClient::new(channels[i % channels.len()].clone());
        let request = request("bench-topic", batch, &value);
        async move {
            let mut moved = 0;
            while Instant::now() < deadline {
                client.produce(request.clone()).await?;
                moved += batch as u64;
            }
            Ok(moved)
        }
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

/// Drains a pre-filled stream with `consumers` group Subscribe streams, acking in batches.
pub(crate) async fn consume_broker(bench: &Bench, consumers: usize) -> anyhow::Result<f64> {
    let stream = format!("bench-consume-{consumers}");
    let n = bench.messages;
    prefill(bench, &stream, n).await?;
    create_group(bench, &stream, "g", "0").await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..consumers)
        .map(|i| {
            let request = pb::SubscribeRequest {
                streams: vec![pb::StreamStart {
                    stream: stream.clone(),
                    after_id: String::new(),
                }],
                group: "g".into(),
                consumer: format!("c{i}"),
                batch_size: 100,
                ..Default::default()
            };
            tokio::spawn(consume_group(
                bench.broker(i),
                request,
                delivered.clone(),
                stop.clone(),
                |_| {},
            ))
        })
        .collect();
    wait_for(&delivered, n as u64, Duration::from_secs(300)).await?;
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    bench.del(&stream).await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// The same drain with XREADGROUP COUNT 100 + one XACK per batch, directly.
pub(crate) async fn consume_raw(bench: &Bench, consumers: usize) -> anyhow::Result<f64> {
    let stream = format!("bench-raw-consume-{consumers}");
    let n = bench.messages as u64;
    prefill(bench, &stream, n as usize).await?;
    create_group(bench, &stream, "g", "0").await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..consumers)
        .map(|i| {
            let mut conn = bench.redis.clone();
            let (stream, delivered) = (stream.clone(), delivered.clone());
            tokio::spawn(async move {
                let options = StreamReadOptions::default()
                    .group("g", format!("c{i}"))
                    .count(100);
                while delivered.load(Ordering::Relaxed) < n {
                    let reply: StreamReadReply = redis::AsyncCommands::xread_options(
                        &mut conn,
                        &[&stream],
                        &[">"],
                        &options,
                    )
                    .await?;
                    let ids: Vec<String> = reply
                        .keys
                        .into_iter()
                        .flat_map(|k| k.ids)
                        .map(|e| e.id)
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let _: u64 = redis::AsyncCommands::xack(&mut conn, &stream, "g", &ids).await?;
                    delivered.fetch_add(ids.len() as u64, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    bench.del(&stream).await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    /// Rate asked for.
    pub(crate) target_rate: u64,
    /// Rate achieved by the producer.
    pub(crate) achieved_rate: f64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// 99.9th percentile.
    pub(crate) p999_ms: f64,
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// Produce at a fixed rate (one unary call per message), consume through a group Subscribe with
/// batched acks; time from the Produce call to delivery.
pub(crate) async fn latency(bench: &Bench, rate: u64, epoch: Instant) -> anyhow::Result<Latency> {
    let stream = format!("bench-latency-{rate}");
    create_group(bench, &stream, "g", "$").await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let consumer = {
        let histogram = histogram.clone();
        let request = pb::SubscribeRequest {
            streams: vec![pb::StreamStart {
                stream: stream.clone(),
                after_id: String::new(),
            }],
            group: "g".into(),
            consumer: "latency".into(),
            batch_size: 100,
            ..Default::default()
        };
        tokio::spawn(consume_group(
            bench.broker(0),
            request,
            delivered.clone(),
            stop.clone(),
            move |m| {
                let sent = m
                    .fields
                    .iter()
                    .find(|f| f.name == "t")
                    .and_then(|f| std::str::from_utf8(&f.value).ok()?.parse::<u64>().ok());
                if let Some(sent) = sent {
                    let micros = (epoch.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000;
                    let _ = histogram.lock().map(|mut h| h.record(micros.max(1)));
                }
            },
        ))
    };
    // Every millisecond, send what the rate allows by now; at most 1,000 calls outstanding.
    let in_flight = Arc::new(Semaphore::new(1000));
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut calls = Vec::new();
    while started.elapsed() < bench.duration {
        ticker.tick().await;
        let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
        while sent < due {
            let permit = in_flight.clone().acquire_owned().await?;
            let mut client = bench.broker(sent as usize);
            let stamp = (epoch.elapsed().as_nanos() as u64).to_string();
            let request = pb::ProduceRequest {
                stream: stream.clone(),
                messages: vec![pb::OutgoingMessage {
                    id: String::new(),
                    fields: vec![
                        pb::Field {
                            name: "t".into(),
                            value: Bytes::from(stamp),
                        },
                        pb::Field {
                            name: "v".into(),
                            value: payload(100),
                        },
                    ],
                }],
                trim: None,
                require_existing_stream: false,
                partition_key: String::new(),
            };
            calls.push(tokio::spawn(async move {
                let result = client.produce(request).await;
                drop(permit);
                result
            }));
            sent += 1;
        }
    }
    let achieved_rate = sent as f64 / started.elapsed().as_secs_f64();
    for call in calls {
        call.await?.context("produce")?;
    }
    wait_for(&delivered, sent, Duration::from_secs(60)).await?;
    stop.cancel();
    consumer.await??;
    bench.del(&stream).await?;
    let histogram = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?;
    Ok(Latency {
        target_rate: rate,
        achieved_rate,
        p50_ms: ms(&histogram, 0.5),
        p99_ms: ms(&histogram, 0.99),
        p999_ms: ms(&histogram, 0.999),
    })
}

/// One stream, `subscribers` tail Subscribe streams; deliveries per second across all of them.
pub(crate) async fn fan_out(bench: &Bench, subscribers: usize) -> anyhow::Result<f64> {
    let stream = "bench-fanout";
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let mut client = bench.broker(i);
        let request = pb::SubscribeRequest {
            streams: vec![pb::StreamStart {
                stream: stream.into(),
                after_id: "$".into(),
            }],
            batch_size: 1000,
            ..Default::default()
        };
        let mut events = client.subscribe(request).await?.into_inner();
        events.message().await?.context("no `started`")?;
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(event)) = events.message().await {
                if let Some(pb::subscribe_response::Event::Message(_)) = event.event {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let value = payload(100);
    let produced = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..4)
        .map(|i| {
            let mut client = bench.broker(i);
            let request = request(stream, 100, &value);
            let (produced, duration) = (produced.clone(), bench.duration);
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    client.produce(request.clone()).await?;
                    produced.fetch_add(100, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for producer in producers {
        producer.await??;
    }
    let expected = produced.load(Ordering::Relaxed) * subscribers as u64;
    wait_for(&delivered, expected, Duration::from_secs(120)).await?;
    let elapsed = started.elapsed();
    for reader in readers {
        reader.abort();
    }
    bench.del(stream).await?;
    Ok(expected as f64 / elapsed.as_secs_f64())
}

/// What holding many idle subscriptions costs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idle {
    /// Subscriptions held open (half tail, half group).
    pub(crate) subscriptions: usize,
    /// Broker RSS growth per subscription, bytes (None when the broker is not ours).
    pub(crate) rss_per_subscription: Option<f64>,
    /// Broker RSS with them open, bytes.
    pub(crate) rss: Option<u64>,
    /// Redis connections the broker holds with them open.
    pub(crate) redis_connections: usize,
    /// Produce p99 before opening them, ms.
    pub(crate) produce_p99_before_ms: f64,
    /// Produce p99 with them open, ms.
    pub(crate) produce_p99_ms: f64,
}

/// p99 of sequential unary Produce calls, ms.
async fn produce_p99(bench: &Bench, calls: usize) -> anyhow::Result<f64> {
    let mut client = bench.broker(0);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let request = request("bench-idle-probe", 1, &payload(100));
    for _ in 0..calls {
        let started = Instant::now();
        client.produce(request.clone()).await?;
        histogram.record((started.elapsed().as_micros() as u64).max(1))?;
    }
    bench.del("bench-idle-probe").await?;
    Ok(ms(&histogram, 0.99))
}

/// Redis clients connected, less this benchmark's own connection.
async fn redis_clients(bench: &Bench) -> anyhow::Result<usize> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut bench.redis.clone())
        .await?;
    Ok(list.lines().count().saturating_sub(1))
}

/// Opens `count` Subscribe streams (half tail, half group, over 100 streams), holds them, and
/// measures the broker: RSS, Redis connections, and Produce p99 beside them.
pub(crate) async fn idle(bench: &Bench, count: usize, probe_calls: usize) -> anyhow::Result<Idle> {
    let produce_p99_before_ms = produce_p99(bench, probe_calls).await?;
    let rss_before = bench.broker_pid.and_then(setup::rss_bytes);
    // Each connection carries at most 500 streams (the broker allows 1,000 by default).
    let connections = count.div_ceil(500).max(1);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(setup::connect(&bench.addr).await?);
    }
    let mut held = Vec::with_capacity(count);
    let mut opening = FuturesUnordered::new();
    for i in 0..count {
        let mut client = BrokerClient::new(channels[i % connections].clone());
        let stream = format!("bench-idle-{}", i % 100);
        let request = if i % 2 == 0 {
            pb::SubscribeRequest {
                streams: vec![pb::StreamStart {
                    stream,
                    after_id: "$".into(),
                }],
                ..Default::default()
            }
        } else {
            pb::SubscribeRequest {
                streams: vec![pb::StreamStart {
                    stream,
                    after_id: String::new(),
                }],
                group: "idle".into(),
                consumer: format!("c{i}"),
                create_group: true,
                ..Default::default()
            }
        };
        opening.push(async move {
            let mut events = client.subscribe(request).await?.into_inner();
            events.message().await?.context("no `started`")?;
            anyhow::Ok(events)
        });
        // Open in waves so the broker is not asked for thousands of set-ups at once.
        if opening.len() >= 200 {
            held.push(opening.next().await.context("opening")??);
        }
    }
    while let Some(events) = opening.next().await {
        held.push(events?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = bench.broker_pid.and_then(setup::rss_bytes);
    let redis_connections = redis_clients(bench).await?;
    let produce_p99_ms = produce_p99(bench, probe_calls).await?;
    drop(held);
    let mut conn = bench.redis.clone();
    for i in 0..100 {
        let _: u64 = redis::cmd("DEL")
            .arg(format!("bench-idle-{i}"))
            .query_async(&mut conn)
            .await?;
    }
    Ok(Idle {
        subscriptions: count,
        rss_per_subscription: rss
            .zip(rss_before)
            .map(|(after, before)| after.saturating_sub(before) as f64 / count as f64),
        rss,
        redis_connections,
        produce_p99_before_ms,
        produce_p99_ms,
    })
}
