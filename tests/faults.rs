//! Fault tests: real `redis-server` and `streamgate` processes, killed and restarted while
//! producers and group subscribers move messages. Each prints its figures (sent, acknowledged by
//! Produce, delivered, duplicates, lost) and asserts that nothing Produce acknowledged is lost.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const STREAM: &str = "faults";
const GROUP: &str = "workers";

/// What happened to every message, as producers and subscribers saw it.
#[derive(Default)]
struct Ledger {
    /// Message numbers whose Produce returned ids.
    produced: Mutex<HashSet<u64>>,
    /// Every delivery: message number → subscribers it went to, in order.
    delivered: Mutex<HashMap<u64, Vec<usize>>>,
    /// Message numbers whose Ack returned OK.
    acked: Mutex<HashSet<u64>>,
    /// Produce calls that failed with UNAVAILABLE (and were retried).
    unavailable: AtomicU64,
    /// Subscribe streams that ended (or failed to open) and were opened again.
    resubscribed: AtomicU64,
}

struct Figures {
    sent: usize,
    produced: usize,
    deliveries: usize,
    duplicates: usize,
    lost: usize,
}

impl Ledger {
    /// Lost: acknowledged by Produce, never delivered. (A delivered message whose Ack reply was
    /// lost in a crash may well be acknowledged in Redis; [`settle`] checks Redis for that.)
    fn figures(&self, sent: usize) -> Figures {
        let produced = self.produced.lock().unwrap();
        let delivered = self.delivered.lock().unwrap();
        let deliveries: usize = delivered.values().map(Vec::len).sum();
        Figures {
            sent,
            produced: produced.len(),
            deliveries,
            duplicates: deliveries - delivered.len(),
            lost: produced
                .iter()
                .filter(|n| !delivered.contains_key(n))
                .count(),
        }
    }

    fn print(&self, test: &str, sent: usize) -> Figures {
        let f = self.figures(sent);
        println!(
            "{test}: sent {}, acknowledged by Produce {}, delivered {}, duplicates {}, lost {}, \
             produce retries after UNAVAILABLE {}, resubscriptions {}",
            f.sent,
            f.produced,
            f.deliveries,
            f.duplicates,
            f.lost,
            self.unavailable.load(Ordering::Relaxed),
            self.resubscribed.load(Ordering::Relaxed),
        );
        f
    }

    fn all_produced_delivered(&self) -> bool {
        let produced = self.produced.lock().unwrap();
        let delivered = self.delivered.lock().unwrap();
        produced.iter().all(|n| delivered.contains_key(n))
    }
}

/// Produces `count` messages numbered from `first`, in batches, retrying a batch until a
/// Produce call for it returns ids (a retry after an unknown outcome may store it twice: that
/// is a duplicate, never a loss).
async fn produce(channel: Channel, ledger: Arc<Ledger>, first: u64, count: u64, batch: u64) {
    let mut client = BrokerClient::new(channel);
    let mut next = first;
    while next < first + count {
        let end = (next + batch).min(first + count);
        let request = pb::ProduceRequest {
            stream: STREAM.into(),
            messages: (next..end)
                .map(|n| pb::OutgoingMessage {
                    id: String::new(),
                    fields: fields(&[("n", &n.to_string()), ("pad", "x")]),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        match client.produce(request).await {
            Ok(_) => {
                ledger.produced.lock().unwrap().extend(next..end);
                next = end;
            }
            Err(status) => {
                if status.code() == tonic::Code::Unavailable {
                    ledger.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn message_number(message: &pb::ReceivedMessage) -> u64 {
    number(message) as u64
}

/// A group member that acknowledges each message as it arrives, under a fixed consumer name, and
/// subscribes again whenever its stream ends, until `stop`.
async fn subscribe(
    channel: Channel,
    ledger: Arc<Ledger>,
    index: usize,
    ack_deadline_ms: u32,
    stop: CancellationToken,
) {
    let mut client = BrokerClient::new(channel);
    let mut request = group_request(&[STREAM], GROUP, &format!("sub-{index}"));
    request.ack_deadline_ms = ack_deadline_ms;
    request.batch_size = 50;
    // What a crash makes come back again is what was in flight: keep it modest.
    request.max_in_flight = Some(200);
    let mut first = true;
    while !stop.is_cancelled() {
        if !first {
            ledger.resubscribed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let mut stream = match client.subscribe(request.clone()).await {
            Ok(response) => response.into_inner(),
            Err(_) => continue,
        };
        loop {
            // No watchdog: a stream that goes silent while work remains is a broker bug, and
            // must fail the test (through `settle`), not be papered over by resubscribing.
            let item = tokio::select! {
                _ = stop.cancelled() => return,
                item = stream.message() => item,
            };
            let message = match item {
                Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Message(m)),
                })) => m,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            };
            // The work: slower than the producers, so each member's window is full most of
            // the time, which is when a crash leaves the most behind.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let n = message_number(&message);
            ledger
                .delivered
                .lock()
                .unwrap()
                .entry(n)
                .or_default()
                .push(index);
            let ack = pb::AckRequest {
                stream: STREAM.into(),
                group: GROUP.into(),
                ids: vec![message.id.clone()],
            };
            let acked = tokio::select! {
                _ = stop.cancelled() => return,
                acked = client.ack(ack) => acked,
            };
            if acked.is_ok() {
                ledger.acked.lock().unwrap().insert(n);
            }
        }
    }
}

/// What Redis says about the lost messages, for a failure message worth reading at 3 a.m.
async fn diagnose(redis: &RedisServer, ledger: &Ledger) -> String {
    let lost: Vec<u64> = {
        let produced = ledger.produced.lock().unwrap();
        let delivered = ledger.delivered.lock().unwrap();
        produced
            .iter()
            .filter(|n| !delivered.contains_key(n))
            .copied()
            .collect()
    };
    let delivered: Vec<(u64, Vec<usize>)> = {
        let delivered = ledger.delivered.lock().unwrap();
        lost.iter()
            .map(|n| (*n, delivered.get(n).cloned().unwrap_or_default()))
            .collect()
    };
    let summary: redis::Value = redis.cmd(&["XPENDING", STREAM, GROUP]).await;
    let consumers: redis::Value = redis.cmd(&["XINFO", "CONSUMERS", STREAM, GROUP]).await;
    let groups: redis::Value = redis.cmd(&["XINFO", "GROUPS", STREAM]).await;
    let pending: redis::Value = redis
        .cmd(&["XPENDING", STREAM, GROUP, "-", "+", "20"])
        .await;
    format!(
        "lost {lost:?}\ndeliveries of the lost: {delivered:?}\nXPENDING {summary:?}\n\
         XPENDING - + 20 {pending:?}\nconsumers {consumers:?}\ngroups {groups:?}"
    )
}

/// Waits until every message Produce acknowledged was delivered and the group has nothing
/// pending in Redis (everything delivered was acknowledged, or redelivered and then acknowledged),
/// or `limit` passes.
async fn settle(redis: &RedisServer, ledger: &Ledger, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ledger.all_produced_delivered() && redis.pending_count(STREAM, GROUP).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fault test 2: the broker is SIGKILLed three times at random points while 4 producers and 4
/// group subscribers move 20,000 messages; each time it is started again and work goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_killed_three_times_loses_nothing_produce_acknowledged() {
    let redis = RedisServer::start();
    let mut broker = BrokerProcess::start(
        &redis,
        &[
            "--redelivery-backoff-min",
            "100ms",
            "--redelivery-backoff-max",
            "1s",
        ],
    );
    let ledger = Arc::new(Ledger::default());
    let stop = CancellationToken::new();
    // All on one connection, as the tasks of one service share a tonic Channel. (This is how
    // the test first caught every member stalled at its in-flight limit after a crash.)
    let channel = broker.channel();
    const PER_PRODUCER: u64 = 5_000;
    let subscribers: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(subscribe(
                channel.clone(),
                ledger.clone(),
                i,
                5_000,
                stop.clone(),
            ))
        })
        .collect();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            tokio::spawn(produce(
                channel.clone(),
                ledger.clone(),
                p * 1_000_000,
                PER_PRODUCER,
                50,
            ))
        })
        .collect();

    let total = 4 * PER_PRODUCER as usize;
    let mut kills = 0;
    for quarter in 1..=3 {
        // A random point within each quarter of the run.
        let at = total * quarter / 4 - rand::rng().random_range(0..total / 8);
        let deadline = Instant::now() + Duration::from_secs(60);
        while ledger.produced.lock().unwrap().len() < at && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        broker.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(100..400))).await;
        broker.restart();
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let settling = Instant::now();
    settle(&redis, &ledger, Duration::from_secs(120)).await;
    println!(
        "settled {:.1} s after the producers finished",
        settling.elapsed().as_secs_f64()
    );
    stop.cancel();
    for subscriber in subscribers {
        subscriber.await.unwrap();
    }
    let figures = ledger.print("broker SIGKILLed 3 times", total);
    assert_eq!(kills, 3);
    assert_eq!(figures.produced, total);
    let pending = redis.pending_count(STREAM, GROUP).await;
    if figures.lost > 0 || pending > 0 {
        panic!(
            "{}\nbroker log:\n{}",
            diagnose(&redis, &ledger).await,
            broker.log_text()
        );
    }
}

/// Fault test 3: Redis (AOF, fsync on every write) is SIGKILLed mid-run and restarted: producers
/// see UNAVAILABLE meanwhile, nothing Produce acknowledged is lost, and subscribers resume on
/// their own, without opening a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof_loses_nothing_and_subscribers_resume() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let aof: Vec<String> = redis.cmd(&["CONFIG", "GET", "appendonly"]).await;
    assert_eq!(aof[1], "yes");
    let broker = TestBroker::start_with(&redis, |config| {
        config.redelivery_backoff_min = Duration::from_millis(100);
        config.redelivery_backoff_max = Duration::from_secs(1);
    })
    .await;
    let ledger = Arc::new(Ledger::default());
    let stop = CancellationToken::new();
    const PER_PRODUCER: u64 = 3_000;
    let subscribers: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(subscribe(
                broker.channel.clone(),
                ledger.clone(),
                i,
                5_000,
                stop.clone(),
            ))
        })
        .collect();
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            tokio::spawn(produce(
                broker.channel.clone(),
                ledger.clone(),
                p * 1_000_000,
                PER_PRODUCER,
                20,
            ))
        })
        .collect();
    let total = 2 * PER_PRODUCER as usize;
    while ledger.produced.lock().unwrap().len() < total / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    // While it is down, a Produce fails with UNAVAILABLE (asked directly: the load's own calls
    // may all be waiting elsewhere at that moment).
    let mut probe = BrokerClient::new(broker.channel.clone());
    let down_since = Instant::now();
    let unavailable_while_down = loop {
        match probe.produce(numbered(STREAM, 0..1)).await {
            Err(status) if status.code() == tonic::Code::Unavailable => break 1,
            Err(status) => panic!("expected UNAVAILABLE while redis is down, got {status:?}"),
            Ok(_) => {
                assert!(
                    down_since.elapsed() < WAIT,
                    "Produce kept succeeding with redis down"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    } + ledger.unavailable.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(down_since.elapsed())).await;
    redis.restart();

    for producer in producers {
        producer.await.unwrap();
    }
    settle(&redis, &ledger, Duration::from_secs(60)).await;
    stop.cancel();
    for subscriber in subscribers {
        subscriber.await.unwrap();
    }
    let figures = ledger.print("redis SIGKILLed and restarted (AOF)", total);
    assert!(
        unavailable_while_down > 0,
        "producers should have seen UNAVAILABLE"
    );
    assert_eq!(figures.produced, total);
    assert_eq!(figures.lost, 0, "{}", diagnose(&redis, &ledger).await);
    assert_eq!(
        redis.pending_count(STREAM, GROUP).await,
        0,
        "{}",
        diagnose(&redis, &ledger).await
    );
    assert_eq!(
        ledger.resubscribed.load(Ordering::Relaxed),
        0,
        "subscriptions should have waited for Redis, not ended"
    );
}

/// Fault test 5: a client that opens subscriptions and never reads them: the broker stops reading
/// for them once its small buffers are full, so its memory stays bounded however much is
/// produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_keeps_broker_memory_bounded() {
    let redis = RedisServer::start();
    let broker = BrokerProcess::start(&redis, &[]);
    let channel = broker.channel();
    let mut client = BrokerClient::new(channel.clone());
    // A tail reader, and a group member without an in-flight limit: only the send buffers
    // bound them.
    let mut tail = Subscription::open(&mut client, tail_request(&[(STREAM, "$")])).await;
    let mut member_request = group_request(&[STREAM], GROUP, "never-reads");
    member_request.max_in_flight = Some(0);
    let _member = Subscription::open(&mut client, member_request).await;
    let before = broker.rss_kib();

    let value = "v".repeat(1000);
    const MESSAGES: usize = 100_000;
    for batch in 0..MESSAGES / 1000 {
        let request = pb::ProduceRequest {
            stream: STREAM.into(),
            messages: (0..1000)
                .map(|i| pb::OutgoingMessage {
                    id: String::new(),
                    fields: fields(&[("n", &(batch * 1000 + i).to_string()), ("v", &value)]),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        client.produce(request).await.expect("produce");
    }
    // Let the pumps run into their buffers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = broker.rss_kib();
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "never-reading client: {MESSAGES} messages of ~1 KiB (~98 MiB) produced; broker RSS \
         before {before} KiB, after {after} KiB, grown {grown_mib:.1} MiB"
    );
    assert!(
        grown_mib < 48.0,
        "broker memory grew by {grown_mib:.1} MiB while a client did not read"
    );
    // The subscription is still alive and reads from where it stopped.
    assert_eq!(number(&tail.next().await), 0);
}

/// Fault test 6: two broker instances on one Redis, 6 members of one group spread over them:
/// no message is delivered to two members while its deadline runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_never_deliver_a_message_twice_before_its_deadline() {
    let redis = RedisServer::start();
    let brokers = [
        BrokerProcess::start(&redis, &[]),
        BrokerProcess::start(&redis, &[]),
    ];
    let ledger = Arc::new(Ledger::default());
    let stop = CancellationToken::new();
    let subscribers: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(subscribe(
                brokers[i % 2].channel(),
                ledger.clone(),
                i,
                30_000,
                stop.clone(),
            ))
        })
        .collect();
    // Every member is in the group before anything is produced.
    eventually("all six members subscribed", || async {
        let consumers: Vec<redis::Value> = redis
            .connection()
            .await
            .send_packed_command(redis::cmd("XINFO").arg("CONSUMERS").arg(STREAM).arg(GROUP))
            .await
            .ok()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        consumers.len() == 6
    })
    .await;
    const TOTAL: u64 = 3_000;
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            tokio::spawn(produce(
                brokers[p as usize].channel(),
                ledger.clone(),
                p * 1_000_000,
                TOTAL / 2,
                10,
            ))
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    settle(&redis, &ledger, Duration::from_secs(30)).await;
    stop.cancel();
    for subscriber in subscribers {
        subscriber.await.unwrap();
    }
    let figures = ledger.print("two brokers, six members", TOTAL as usize);
    let members_used: HashSet<usize> = ledger
        .delivered
        .lock()
        .unwrap()
        .values()
        .flatten()
        .copied()
        .collect();
    println!("members that received messages: {members_used:?}");
    assert_eq!(figures.lost, 0);
    assert_eq!(redis.pending_count(STREAM, GROUP).await, 0);
    assert_eq!(
        figures.duplicates, 0,
        "a message went to two members within its 30 s deadline"
    );
    assert!(members_used.len() >= 4, "{members_used:?}");
}

/// While Redis is down, waiting subscriptions log the outage at most about once a second each
/// (other Redis-backed brokers have filled disks with such loops), and when Redis comes back
/// empty a subscription that may create its group recreates it and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_about_once_a_second_per_subscription() {
    let mut redis = RedisServer::start();
    let broker = BrokerProcess::start(&redis, &["--idle-recheck", "100ms"]);
    let mut client = BrokerClient::new(broker.channel());
    produce_numbered(&mut client, STREAM, 0..1).await;
    let mut member = Subscription::open(&mut client, group_request(&[STREAM], GROUP, "m")).await;
    assert_eq!(number(&member.next().await), 0);

    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    // Redis kept nothing: the group is recreated from the start of the new stream.
    produce_numbered(&mut client, STREAM, 1..2).await;
    assert_eq!(number(&member.next().await), 1);

    let log = broker.log_text();
    let outage_lines = log
        .lines()
        .filter(|l| l.contains("the subscription waits and retries"))
        .count();
    println!("3 s outage: {outage_lines} outage log lines from one subscription");
    assert!(
        (1..=5).contains(&outage_lines),
        "{outage_lines} lines:\n{log}"
    );
    assert!(log.contains("recreated it from the start"), "{log}");
    assert!(log.contains("redis is back"), "{log}");
}
