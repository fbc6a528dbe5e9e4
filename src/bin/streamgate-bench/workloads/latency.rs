//! End-to-end latency at fixed rates: Produce call (unary, or a request on one ProduceStream)
//! to group delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use streamgate::grpc::pb;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::hops::Reading;

/// How the producer of a latency measurement sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// One unary Produce call per message.
    Unary,
    /// One request per message on one ProduceStream.
    Stream,
}

impl Via {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Via::Unary => "unary Produce",
            Via::Stream => "ProduceStream",
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct Latency {
    /// How messages were sent.
    pub(crate) via: Via,
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
    /// Redis commands per message sent, all of them (the run's `INFO commandstats`).
    pub(crate) redis_commands_per_message: f64,
    /// The commands that made most of them, with their count per message.
    pub(crate) top_commands: Vec<(String, f64)>,
    /// Where the time went inside the broker (with `--hops`).
    pub(crate) hops: Vec<crate::hops::HopFigures>,
}

/// Produce at a fixed rate (one message per unary call or per ProduceStream request), consume
/// through a group Subscribe with batched acks; time from the send to delivery.
pub(crate) async fn latency(
    bench: &Bench,
    rate: u64,
    via: Via,
    epoch: Instant,
) -> anyhow::Result<Latency> {
    let stream = format!("bench-latency-{rate}-{via:?}");
    create_group(bench, &stream, "g", "$").await?;
    let hops_before = bench.metrics.as_deref().map(Reading::take).transpose()?;
    let commands_before = command_calls(bench).await?;
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
    let mut sender = Sender::open(bench, via).await?;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < bench.duration {
        ticker.tick().await;
        let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
        while sent < due {
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
                    ..Default::default()
                }],
                trim: None,
                require_existing_stream: false,
                partition_key: String::new(),
                ..Default::default()
            };
            sender.send(bench, sent as usize, request).await?;
            sent += 1;
        }
    }
    let achieved_rate = sent as f64 / started.elapsed().as_secs_f64();
    sender.finish().await?;
    wait_for(&delivered, sent, Duration::from_secs(60)).await?;
    stop.cancel();
    consumer.await??;
    let commands = command_calls(bench).await?;
    let hops = match (&bench.metrics, hops_before) {
        (Some(addr), Some(before)) => Reading::take(addr)?.since(&before),
        _ => Vec::new(),
    };
    bench.del(&stream).await?;
    let mut per_message: Vec<(String, f64)> = commands
        .iter()
        .map(|(name, calls)| {
            let was = commands_before.get(name).copied().unwrap_or(0);
            (
                name.clone(),
                calls.saturating_sub(was) as f64 / sent.max(1) as f64,
            )
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    per_message.sort_by(|a, b| b.1.total_cmp(&a.1));
    let redis_commands_per_message = per_message.iter().map(|(_, n)| n).sum();
    per_message.truncate(6);
    let histogram = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?;
    Ok(Latency {
        via,
        target_rate: rate,
        achieved_rate,
        p50_ms: ms(&histogram, 0.5),
        p99_ms: ms(&histogram, 0.99),
        p999_ms: ms(&histogram, 0.999),
        redis_commands_per_message,
        top_commands: per_message,
        hops,
    })
}

/// Calls so far per Redis command (`INFO commandstats`), without INFO itself.
async fn command_calls(bench: &Bench) -> anyhow::Result<HashMap<String, u64>> {
    let mut conn = bench.redis.clone();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            (name != "info").then(|| (name.to_uppercase(), calls))
        })
        .collect())
}

/// The producer side of a latency measurement.
enum Sender {
    /// Unary calls in tasks of their own, at most 1,000 outstanding.
    Unary {
        in_flight: Arc<Semaphore>,
        calls: Vec<tokio::task::JoinHandle<Result<(), tonic::Status>>>,
    },
    /// Requests on one ProduceStream, and the task reading its answers.
    Stream {
        requests: mpsc::Sender<pb::ProduceRequest>,
        answers: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

impl Sender {
    async fn open(bench: &Bench, via: Via) -> anyhow::Result<Self> {
        Ok(match via {
            Via::Unary => Sender::Unary {
                in_flight: Arc::new(Semaphore::new(1000)),
                calls: Vec::new(),
            },
            Via::Stream => {
                let (requests, outgoing) = mpsc::channel(1000);
                let mut answers = bench
                    .broker(0)
                    .produce_stream(ReceiverStream::new(outgoing))
                    .await
                    .context("ProduceStream")?
                    .into_inner();
                let answers = tokio::spawn(async move {
                    while let Some(answer) = answers.message().await? {
                        use pb::produce_stream_response::Result as Outcome;
                        if let Some(Outcome::Error(error)) = answer.result {
                            anyhow::bail!("a ProduceStream request failed: {}", error.message);
                        }
                    }
                    Ok(())
                });
                Sender::Stream { requests, answers }
            }
        })
    }

    async fn send(
        &mut self,
        bench: &Bench,
        index: usize,
        request: pb::ProduceRequest,
    ) -> anyhow::Result<()> {
        match self {
            Sender::Unary { in_flight, calls } => {
                let permit = in_flight.clone().acquire_owned().await?;
                let mut client = bench.broker(index);
                calls.push(tokio::spawn(async move {
                    let result = client.produce(request).await.map(drop);
                    drop(permit);
                    result
                }));
            }
            Sender::Stream { requests, .. } => requests
                .send(request)
                .await
                .context("the ProduceStream ended early")?,
        }
        Ok(())
    }

    /// Waits for every answer.
    async fn finish(self) -> anyhow::Result<()> {
        match self {
            Sender::Unary { calls, .. } => {
                for call in calls {
                    call.await?.context("produce")?;
                }
            }
            Sender::Stream { requests, answers } => {
                drop(requests);
                answers.await??;
            }
        }
        Ok(())
    }
}
