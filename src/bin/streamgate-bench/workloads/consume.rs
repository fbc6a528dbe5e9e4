//! Group consume + ack against raw XREADGROUP + XACK, and tail fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use redis::streams::{StreamReadOptions, StreamReadReply};
use streamgate::grpc::pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

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
