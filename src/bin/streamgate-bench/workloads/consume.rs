//! Group consume + ack (Subscribe with unary Acks, and Consume with acks on the stream)
//! against raw XREADGROUP + XACK, and tail fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use redis::streams::{StreamReadOptions, StreamReadReply};
use streamgate::grpc::pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

/// A drain of a pre-filled stream by `consumers` broker clients, each started by `consumer`
/// (its index, the stream, the delivered counter, the stop token); messages per second.
async fn drain<F, Fut>(
    bench: &Bench,
    name: &str,
    consumers: usize,
    consumer: F,
) -> anyhow::Result<f64>
where
    F: Fn(usize, String, Arc<AtomicU64>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stream = format!("bench-{name}-{consumers}");
    let n = bench.messages;
    prefill(bench, &stream, n).await?;
    create_group(bench, &stream, "g", "0").await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..consumers)
        .map(|i| tokio::spawn(consumer(i, stream.clone(), delivered.clone(), stop.clone())))
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

/// Drains a pre-filled stream with `consumers` group Subscribe streams, acking in batches.
pub(crate) async fn consume_broker(bench: &Bench, consumers: usize) -> anyhow::Result<f64> {
    drain(bench, "consume", consumers, |i, stream, delivered, stop| {
        let request = pb::SubscribeRequest {
            streams: vec![pb::StreamStart {
                stream,
                after_id: String::new(),
            }],
            group: "g".into(),
            consumer: format!("c{i}"),
            batch_size: 100,
            ..Default::default()
        };
        consume_group(bench.broker(i), request, delivered, stop, |_| {})
    })
    .await
}

/// Drains a pre-filled stream with `consumers` Consume sessions: frames of up to 100
/// messages, each acknowledged by one request on the same stream (`exactly_once`: acks checked
/// against who holds each message); a message counts once its ack is confirmed.
pub(crate) async fn consume_session(
    bench: &Bench,
    consumers: usize,
    exactly_once: bool,
) -> anyhow::Result<f64> {
    drain(bench, "session", consumers, |i, stream, delivered, stop| {
        let open = pb::ConsumeOpen {
            streams: vec![pb::StreamStart {
                stream,
                after_id: String::new(),
            }],
            group: "g".into(),
            consumer: format!("c{i}"),
            batch_size: 100,
            max_messages_per_frame: 100,
            exactly_once,
            ..Default::default()
        };
        consume_on_session(bench.broker(i), open, delivered, stop)
    })
    .await
}

async fn consume_on_session(
    mut client: BrokerClient<Channel>,
    open: pb::ConsumeOpen,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use pb::consume_request::Request;
    use pb::consume_response::Event;
    let (requests, outgoing) = tokio::sync::mpsc::channel(64);
    let stream = open.streams[0].stream.clone();
    let send = |request| pb::ConsumeRequest {
        request: Some(request),
    };
    requests.send(send(Request::Open(open))).await?;
    let mut responses = client
        .consume(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let mut request_id = 0;
    loop {
        let response = tokio::select! {
            _ = stop.cancelled() => break,
            response = responses.message() => response?.context("the Consume stream ended")?,
        };
        match response.event {
            Some(Event::Messages(batch)) => {
                request_id += 1;
                let ids = batch.messages.into_iter().map(|m| m.id).collect();
                let ack = pb::Settle {
                    request_id,
                    stream: stream.clone(),
                    ids,
                    delay_ms: None,
                };
                requests.send(send(Request::Ack(ack))).await?;
            }
            Some(Event::Confirmation(confirmation)) => {
                anyhow::ensure!(
                    confirmation.failed.is_empty(),
                    "acks failed: {confirmation:?}"
                );
                delivered.fetch_add(confirmation.succeeded.len() as u64, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The same drain with XREADGROUP COUNT 100 + one XACK per batch, directly.
pub(crate) async fn consume_raw(bench: &Bench, consumers: usize) -> anyhow::Result<f64> {
    let n = bench.messages as u64;
    drain(
        bench,
        "raw-consume",
        consumers,
        |i, stream, delivered, stop| {
            let mut conn = bench.redis.clone();
            async move {
                let options = StreamReadOptions::default()
                    .group("g", format!("c{i}"))
                    .count(100);
                while delivered.load(Ordering::Relaxed) < n && !stop.is_cancelled() {
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
            }
        },
    )
    .await
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
