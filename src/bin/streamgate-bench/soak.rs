//! `--soak DURATION`: hours, not seconds. Produces at a steady rate over many streams to many
//! subscriptions that churn (a share reconnect every minute, half of them vanishing without
//! closing their stream), with acks, nacks and a trickle of poison messages that end as dead
//! letters. Every window it prints what must not grow without bound — broker RSS, open
//! subscriptions, wake-up registrations, swept groups, Redis clients, metric label sets — and
//! the end-to-end p99; at the end, what was sent, delivered, lost (must be 0) and left pending.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::Rng;
use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

/// The shape of a soak run.
#[derive(Debug, Clone)]
pub(crate) struct SoakPlan {
    pub(crate) duration: Duration,
    pub(crate) window: Duration,
    pub(crate) rate: u64,
    pub(crate) streams: usize,
    pub(crate) subscriptions: usize,
    /// Share of the subscriptions that reconnect every churn interval.
    pub(crate) churn: f64,
    pub(crate) churn_every: Duration,
}

/// What every task records.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    produce_errors: AtomicU64,
    deliveries: AtomicU64,
    nacks: AtomicU64,
    /// Every message produced, every one delivered at least once, and every one acknowledged
    /// (an hour at 5,000 msg/s is 18 million of each: kept as numbers, not strings).
    produced: Mutex<HashSet<MessageKey>>,
    delivered: Mutex<HashSet<MessageKey>>,
    acked: Mutex<HashSet<MessageKey>>,
    latency: Mutex<Option<Histogram<u64>>>,
}

/// A message: its stream's index and its entry id's two numbers.
type MessageKey = (u32, u64, u64);

fn key(stream: usize, id: &str) -> MessageKey {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (
        stream as u32,
        ms.parse().unwrap_or(0),
        seq.parse().unwrap_or(0),
    )
}

/// Redis's clients, and how many of them are the broker's (its pool and watcher, by the names
/// they carry in CLIENT LIST): the rest are this run's own connection and anyone else's.
async fn redis_clients(
    redis: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<(usize, usize)> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(redis).await?;
    let clients: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let brokers = clients
        .iter()
        .filter(|l| {
            l.split(' ')
                .any(|f| f == "name=streamgate" || f == "name=streamgate-watcher")
        })
        .count();
    Ok((clients.len(), brokers))
}

/// Producers, each sending its share of the rate on a fixed schedule.
const PRODUCERS: u64 = 8;
/// Produce calls one producer may have in flight: the schedule does not wait for replies
/// (open loop), so a slow reply shows as latency instead of a lower rate.
const IN_FLIGHT_PER_PRODUCER: usize = 64;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn stream_name(index: usize) -> String {
    format!("soak-{index}")
}

/// Runs the plan against the broker at `channel` (metrics at `metrics_addr`, process `pid`,
/// Redis at `redis`); prints a table per window and the totals. Fails if anything was lost.
pub(crate) async fn run(
    plan: SoakPlan,
    channels: Vec<Channel>,
    metrics_addr: String,
    pid: Option<u32>,
    mut redis: redis::aio::MultiplexedConnection,
) -> anyhow::Result<()> {
    // Subscriptions spread over several HTTP/2 connections, as many clients' would be.
    let channel = |i: usize| channels[i % channels.len()].clone();
    let mut admin = AdminClient::new(channel(0));
    for stream in 0..plan.streams {
        admin
            .create_subscription(pb::CreateSubscriptionRequest {
                stream: stream_name(stream),
                group: "soak".into(),
                policy: Some(pb::SubscriptionPolicy {
                    ack_deadline_ms: Some(10_000),
                    backoff_min_ms: Some(200),
                    backoff_max_ms: Some(1_000),
                    max_deliveries: Some(3),
                    ..Default::default()
                }),
                start_id: "0".into(),
            })
            .await
            .context("create the soak subscriptions")?;
    }
    let tally = Arc::new(Tally {
        latency: Mutex::new(Some(Histogram::new_with_bounds(1, 60_000_000, 3)?)),
        ..Tally::default()
    });
    let started = Instant::now();
    let end = started + plan.duration;
    let producers: Vec<JoinHandle<()>> = (0..PRODUCERS as usize)
        .map(|p| tokio::spawn(produce(channel(p), tally.clone(), plan.clone(), p, end)))
        .collect();
    let mut members: Vec<JoinHandle<()>> = (0..plan.subscriptions)
        .map(|i| tokio::spawn(consume(channel(i), tally.clone(), i % plan.streams, i)))
        .collect();
    println!(
        "| minute | sent | delivered | broker RSS MiB | tasks | subscriptions open | wake-up registrations | swept groups | Redis clients | of them the broker's | connections opened | metric series | p99 e2e ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut next_window = started + plan.window;
    let mut next_churn = started + plan.churn_every;
    let mut generation = plan.subscriptions;
    let mut opened_before = 0.0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        if now >= next_churn {
            next_churn += plan.churn_every;
            let count = ((plan.subscriptions as f64) * plan.churn).round() as usize;
            for _ in 0..count {
                let slot = rand::rng().random_range(0..members.len());
                // Half close their stream, half vanish (the task is dropped mid-call).
                members[slot].abort();
                generation += 1;
                members[slot] = tokio::spawn(consume(
                    channel(generation),
                    tally.clone(),
                    slot % plan.streams,
                    generation,
                ));
            }
        }
        if now >= next_window || now >= end {
            next_window += plan.window;
            let p99 = tally
                .latency
                .lock()
                .unwrap()
                .replace(Histogram::new_with_bounds(1, 60_000_000, 3)?)
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
            let metrics = crate::hops::scrape(&metrics_addr).unwrap_or_default();
            let gauge = |name: &str| {
                metrics
                    .lines()
                    .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(-1.0)
            };
            let series = metrics
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count();
            let (clients, brokers) = redis_clients(&mut redis).await?;
            let opened = gauge("streamgate_redis_connections_opened_total");
            let newly_opened = opened - std::mem::replace(&mut opened_before, opened);
            println!(
                "| {:.1} | {} | {} | {:.1} | {} | {} | {} | {} | {clients} | {brokers} | {newly_opened:.0} | {series} | {p99:.1} |",
                now.duration_since(started).as_secs_f64() / 60.0,
                tally.sent.load(Ordering::Relaxed),
                tally.deliveries.load(Ordering::Relaxed),
                rss_mib(pid),
                gauge("streamgate_tasks_alive"),
                gauge("streamgate_subscriptions_open"),
                gauge("streamgate_wakeup_registrations"),
                gauge("streamgate_swept_groups"),
            );
        }
    }
    for producer in producers {
        producer.await?;
    }
    // Let what is in flight arrive (poison messages need their deliveries and backoffs).
    let settle_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < settle_until {
        let produced = tally.produced.lock().unwrap().len();
        if tally.delivered.lock().unwrap().len() >= produced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for member in members {
        member.abort();
    }
    let produced = tally.produced.lock().unwrap().clone();
    let delivered = tally.delivered.lock().unwrap().clone();
    let acked = tally.acked.lock().unwrap().len();
    let mut dead_letters = 0u64;
    let mut pending = 0u64;
    for stream in 0..plan.streams {
        let name = stream_name(stream);
        dead_letters += redis::cmd("XLEN")
            .arg(format!("{name}:dlq"))
            .query_async::<u64>(&mut redis)
            .await?;
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(&name)
            .arg("soak")
            .query_async(&mut redis)
            .await?;
        if let redis::Value::Array(parts) = summary
            && let Some(redis::Value::Int(n)) = parts.first()
        {
            pending += *n as u64;
        }
    }
    // Lost: produced (the broker answered with its id) and never delivered to anyone.
    let lost = produced.difference(&delivered).count() as u64;
    println!(
        "\nsent {} (produce errors {}), delivered {} ({} distinct, nacked {}), acknowledged {acked}, dead-lettered {dead_letters}, lost {lost}, left pending {pending}",
        produced.len(),
        tally.produce_errors.load(Ordering::Relaxed),
        tally.deliveries.load(Ordering::Relaxed),
        delivered.len(),
        tally.nacks.load(Ordering::Relaxed),
    );
    anyhow::ensure!(lost == 0, "{lost} messages were lost");
    Ok(())
}

/// One producer: its share of the rate on a fixed schedule, one message per Produce, up to
/// [`IN_FLIGHT_PER_PRODUCER`] calls at once, a poison message now and then.
async fn produce(channel: Channel, tally: Arc<Tally>, plan: SoakPlan, index: usize, end: Instant) {
    let client = BrokerClient::new(channel);
    let per_producer = (plan.rate / PRODUCERS).max(1);
    let gap = Duration::from_secs_f64(1.0 / per_producer as f64);
    let room = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_PER_PRODUCER));
    let mut calls = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    let mut n = 0u64;
    while Instant::now() < end {
        next += gap;
        tokio::time::sleep_until(next).await;
        n += 1;
        let stream = rand::rng().random_range(0..plan.streams);
        let poison = n % 1000 == 7;
        let request = pb::ProduceRequest {
            stream: stream_name(stream),
            messages: vec![pb::OutgoingMessage {
                fields: vec![
                    pb::Field {
                        name: "sent_us".into(),
                        value: now_us().to_string().into(),
                    },
                    pb::Field {
                        name: "poison".into(),
                        value: if poison { "1" } else { "0" }.into(),
                    },
                    pb::Field {
                        name: "producer".into(),
                        value: index.to_string().into(),
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let Ok(permit) = room.clone().acquire_owned().await else {
            break;
        };
        let mut client = client.clone();
        let tally = tally.clone();
        calls.spawn(async move {
            let _permit = permit;
            match client.produce(request).await {
                Ok(reply) => {
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = reply.into_inner().ids.pop() {
                        tally.produced.lock().unwrap().insert(key(stream, &id));
                    }
                }
                Err(_) => {
                    tally.produce_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Reap finished calls as we go, so the set stays as small as what is in flight.
        while calls.try_join_next().is_some() {}
    }
    calls.join_all().await;
}

/// How long a subscription collects acks before sending them in one Ack call, as client
/// libraries do (one call per message would be the soak measuring Ack calls, not the broker).
const ACK_FLUSH: Duration = Duration::from_millis(500);

/// One subscription of a stream's group: acks what it gets in batches, nacks one in a hundred
/// once, and always nacks poison (which then ends as a dead letter).
async fn consume(channel: Channel, tally: Arc<Tally>, stream: usize, generation: usize) {
    let mut client = BrokerClient::new(channel);
    let name = stream_name(stream);
    let Ok(response) = client
        .subscribe(pb::SubscribeRequest {
            streams: vec![pb::StreamStart {
                stream: name.clone(),
                after_id: String::new(),
            }],
            group: "soak".into(),
            consumer: format!("c{generation}"),
            ..Default::default()
        })
        .await
    else {
        return;
    };
    let mut events = response.into_inner();
    let mut to_ack: Vec<String> = Vec::new();
    let mut flush = tokio::time::interval(ACK_FLUSH);
    loop {
        let event = tokio::select! {
            event = events.message() => event,
            _ = flush.tick() => {
                ack_batch(&mut client, &tally, stream, &name, &mut to_ack).await;
                continue;
            }
        };
        let Ok(Some(event)) = event else {
            break;
        };
        let Some(pb::subscribe_response::Event::Message(message)) = event.event else {
            continue;
        };
        tally.deliveries.fetch_add(1, Ordering::Relaxed);
        tally
            .delivered
            .lock()
            .unwrap()
            .insert(key(stream, &message.id));
        let field = |n: &str| {
            message
                .fields
                .iter()
                .find(|f| f.name == n)
                .map(|f| String::from_utf8_lossy(&f.value).into_owned())
        };
        if message.delivery_count == 1
            && let Some(sent) = field("sent_us").and_then(|s| s.parse::<u64>().ok())
            && let Some(histogram) = tally.latency.lock().unwrap().as_mut()
        {
            let _ = histogram.record(now_us().saturating_sub(sent).max(1));
        }
        let poison = field("poison").as_deref() == Some("1");
        let nack = poison || (message.delivery_count == 1 && rand::rng().random_bool(0.01));
        if nack {
            tally.nacks.fetch_add(1, Ordering::Relaxed);
            let _ = client
                .nack(pb::NackRequest {
                    stream: name.clone(),
                    group: "soak".into(),
                    ids: vec![message.id],
                    ..Default::default()
                })
                .await;
            continue;
        }
        to_ack.push(message.id);
    }
    ack_batch(&mut client, &tally, stream, &name, &mut to_ack).await;
}

/// Acknowledges what a subscription collected; what was acknowledged is tallied.
async fn ack_batch(
    client: &mut BrokerClient<Channel>,
    tally: &Tally,
    stream: usize,
    name: &str,
    to_ack: &mut Vec<String>,
) {
    if to_ack.is_empty() {
        return;
    }
    let ids = std::mem::take(to_ack);
    if client
        .ack(pb::AckRequest {
            stream: name.to_owned(),
            group: "soak".into(),
            ids: ids.clone(),
        })
        .await
        .is_ok()
    {
        let mut acked = tally.acked.lock().unwrap();
        acked.extend(ids.iter().map(|id| key(stream, id)));
    }
}

fn rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else {
        return -1.0;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(-1.0, |kib| kib / 1024.0)
}
