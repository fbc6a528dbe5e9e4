//! Idle Subscribe streams: memory per subscription, Redis connections, Produce p99 beside them.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use tokio::time::Instant;

use crate::setup;

use super::*;

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
