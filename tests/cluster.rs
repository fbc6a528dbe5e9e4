//! Redis Cluster: subscriptions over streams on different shards, a master failover under
//! load, and two broker instances sharing one cluster. Every other RPC runs against a cluster in
//! `tests/conformance.rs` (`on_cluster::*`).

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use clap::Parser;
use streamgate::config::ServeConfig;
use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;

async fn cluster(masters: usize, replicas: usize) -> RedisCluster {
    tokio::task::spawn_blocking(move || RedisCluster::start(masters, replicas))
        .await
        .unwrap()
}

async fn broker_on(cluster: &RedisCluster) -> TestBroker {
    let mut config = ServeConfig::parse_from(["serve", "--redis-cluster-url", &cluster.urls()]);
    config.health_interval = Duration::from_millis(200);
    TestBroker::start_config(config).await
}

/// One stream name per master, so that a subscription over them spans every shard.
fn one_stream_per_master(cluster: &RedisCluster) -> Vec<String> {
    let mut by_master: HashMap<u16, String> = HashMap::new();
    for i in 0.. {
        let name = format!("shard-{i}");
        by_master.entry(cluster.master_of(&name)).or_insert(name);
        if by_master.len() == cluster.masters().len() {
            break;
        }
    }
    let mut streams: Vec<String> = by_master.into_values().collect();
    streams.sort();
    streams
}

#[tokio::test]
async fn a_subscription_over_streams_on_three_shards_gets_them_all() {
    let cluster = cluster(3, 0).await;
    let mut broker = broker_on(&cluster).await;
    let streams = one_stream_per_master(&cluster);
    assert_eq!(streams.len(), 3, "{streams:?}");
    let names: Vec<&str> = streams.iter().map(String::as_str).collect();
    let masters: HashSet<u16> = names.iter().map(|s| cluster.master_of(s)).collect();
    assert_eq!(masters.len(), 3);

    let mut member = Subscription::open(&mut broker.broker, group_request(&names, "g", "m")).await;
    let starts: Vec<(&str, &str)> = names.iter().map(|s| (*s, "$")).collect();
    let mut tail = Subscription::open(&mut broker.broker, tail_request(&starts)).await;
    for (i, stream) in names.iter().enumerate() {
        produce_numbered(&mut broker.broker, stream, i * 10..i * 10 + 2).await;
    }
    let delivered: Vec<(String, usize)> = member
        .take(6)
        .await
        .iter()
        .map(|m| (m.stream.clone(), number(m)))
        .collect();
    // Per stream, in order.
    for stream in &names {
        let order: Vec<usize> = delivered
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, n)| *n)
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{stream}: {order:?}");
    }
    let mut got = delivered;
    got.sort();
    let mut expected: Vec<(String, usize)> = names
        .iter()
        .enumerate()
        .flat_map(|(i, s)| [(s.to_string(), i * 10), (s.to_string(), i * 10 + 1)])
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(tail.take(6).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_load_and_what_async_replication_loses() {
    let mut cluster = cluster(3, 1).await;
    let broker = broker_on(&cluster).await;
    let stream = "failover";
    let master = cluster.master_of(stream);
    let mut client = broker.broker.clone();

    let mut acknowledged: Vec<(String, usize)> = Vec::new();
    let mut failures = 0;
    let mut killed_at = None;
    let started = Instant::now();
    let mut n = 0;
    // Produce for a while; kill the stream's master a third of the way through; keep going
    // until some messages were acknowledged after the replica took over.
    let mut acknowledged_after_kill = 0;
    while acknowledged_after_kill < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recovery within 60 s"
        );
        if killed_at.is_none() && acknowledged.len() >= 300 {
            cluster.kill(master);
            killed_at = Some((Instant::now(), acknowledged.len()));
        }
        match client.produce(numbered(stream, n..n + 1)).await {
            Ok(response) => {
                acknowledged.push((response.into_inner().ids[0].clone(), n));
                if killed_at.is_some() {
                    acknowledged_after_kill += 1;
                }
            }
            Err(status) => {
                failures += 1;
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        n += 1;
    }
    let (killed, before_kill) = killed_at.unwrap();
    let new_master = cluster.master_of(stream);
    assert_ne!(new_master, master, "the replica took over");

    // What survived: everything Produce acknowledged, except what the replica had not yet
    // received when its master died.
    let mut admin = broker.admin.clone();
    let stored: HashSet<String> = admin
        .query_messages(pb::QueryMessagesRequest {
            stream: stream.into(),
            count: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.id)
        .collect();
    let lost: Vec<usize> = acknowledged
        .iter()
        .filter(|(id, _)| !stored.contains(id))
        .map(|(_, n)| *n)
        .collect();
    println!(
        "failover: {before_kill} acknowledged before the kill, {} in all; {failures} calls failed \
         with UNAVAILABLE during {:.1} s of failover; lost (acknowledged, then gone with the old \
         master): {} {lost:?}",
        acknowledged.len(),
        killed.elapsed().as_secs_f64().min(60.0),
        lost.len()
    );
    // Only messages acknowledged before the kill can be lost, and only the last few.
    assert!(lost.iter().all(|n| *n < before_kill + 1), "{lost:?}");
    assert!(acknowledged_after_kill >= 200);
}

#[tokio::test]
async fn two_brokers_share_one_cluster_without_double_delivery() {
    let cluster = cluster(3, 0).await;
    let mut first = broker_on(&cluster).await;
    let mut second = broker_on(&cluster).await;
    let streams = one_stream_per_master(&cluster);
    let names: Vec<&str> = streams.iter().map(String::as_str).collect();
    let mut members = Vec::new();
    for i in 0..4 {
        let broker = if i % 2 == 0 { &mut first } else { &mut second };
        members.push(
            Subscription::open(
                &mut broker.broker,
                group_request(&names, "g", &format!("m{i}")),
            )
            .await,
        );
    }
    for (i, stream) in names.iter().enumerate() {
        produce_numbered(&mut first.broker, stream, i * 100..i * 100 + 50).await;
    }
    // Every member read at once (polling them in turn with a timeout each cost 60 ms per
    // message when one member held the batch, and ran past the deadline on a loaded machine).
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    for mut member in members {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(item)) = member.stream.message().await {
                if let Some(pb::subscribe_response::Event::Message(m)) = item.event
                    && tx.send(m).is_err()
                {
                    return;
                }
            }
        });
    }
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut client = BrokerClient::new(first.channel.clone());
    while seen.len() < 150 {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, received.recv()).await else {
            break;
        };
        *seen.entry((m.stream.clone(), m.id.clone())).or_default() += 1;
        client
            .ack(pb::AckRequest {
                stream: m.stream,
                group: "g".into(),
                ids: vec![m.id],
            })
            .await
            .unwrap();
    }
    let duplicates = seen.values().filter(|c| **c > 1).count();
    println!(
        "two brokers on a cluster: {} delivered, {duplicates} duplicates",
        seen.len()
    );
    assert_eq!(seen.len(), 150);
    assert_eq!(duplicates, 0);
}

fn keyed(topic: &str, key: &str, n: usize) -> pb::ProduceRequest {
    let mut request = numbered(topic, n..n + 1);
    request.partition_key = key.to_owned();
    request.messages[0].fields.push(pb::Field {
        name: "key".into(),
        value: key.as_bytes().to_vec().into(),
    });
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_topic_spreads_over_shards_keeps_key_order_and_balances() {
    let cluster = cluster(3, 0).await;
    let mut broker = broker_on(&cluster).await;
    let created = broker
        .admin
        .create_topic(pb::CreateTopicRequest {
            topic: "orders".into(),
            partitions: 6,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let partitions = created.partitions;
    // Six partitions, two on each of the three masters.
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for stream in &partitions {
        *per_master.entry(cluster.master_of(stream)).or_default() += 1;
    }
    assert_eq!(
        per_master.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_master:?}"
    );

    let mut member =
        Subscription::open(&mut broker.broker, group_request(&["orders"], "g", "m")).await;
    // Keyed: 10 keys x 20 messages, interleaved.
    for n in 0..200 {
        let key = format!("customer-{}", n % 10);
        broker
            .broker
            .produce(keyed("orders", &key, n))
            .await
            .unwrap();
    }
    // Unkeyed: 600 requests spread round-robin.
    for n in 1000..1600 {
        broker
            .broker
            .produce(numbered("orders", n..n + 1))
            .await
            .unwrap();
    }
    let delivered = member.take(800).await;
    let mut per_key: HashMap<String, (HashSet<String>, Vec<usize>)> = HashMap::new();
    let mut unkeyed_per_partition: HashMap<String, usize> = HashMap::new();
    for m in &delivered {
        assert!(partitions.contains(&m.stream), "{}", m.stream);
        match m.fields.iter().find(|f| f.name == "key") {
            Some(key) => {
                let entry = per_key
                    .entry(String::from_utf8_lossy(&key.value).into_owned())
                    .or_default();
                entry.0.insert(m.stream.clone());
                entry.1.push(number(m));
            }
            None => *unkeyed_per_partition.entry(m.stream.clone()).or_default() += 1,
        }
    }
    assert_eq!(per_key.len(), 10);
    for (key, (streams, order)) in &per_key {
        assert_eq!(
            streams.len(),
            1,
            "{key} went to several partitions: {streams:?}"
        );
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{key}: {order:?}");
        assert_eq!(order.len(), 20);
    }
    let counts: Vec<usize> = partitions
        .iter()
        .map(|p| unkeyed_per_partition.get(p).copied().unwrap_or(0))
        .collect();
    println!("unkeyed messages per partition (600 over 6): {counts:?}");
    assert!(counts.iter().all(|c| (80..=120).contains(c)), "{counts:?}");

    // Described: lengths add up; the group is there on every partition.
    let info = broker
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            topic: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let total: u64 = info.partitions.iter().map(|p| p.length).sum();
    assert_eq!(total, 800);
    assert!(
        info.partitions
            .iter()
            .all(|p| p.groups.len() == 1 && p.groups[0].name == "g")
    );

    // Mistakes are named.
    let mut plain = numbered("plain", 0..1);
    plain.partition_key = "k".into();
    let status = broker.broker.produce(plain).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let status = broker
        .admin
        .create_topic(pb::CreateTopicRequest {
            topic: "orders".into(),
            partitions: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    let status = broker
        .admin
        .create_topic(pb::CreateTopicRequest {
            topic: "empty".into(),
            partitions: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

/// Every key on every master of `cluster`.
fn all_keys(cluster: &RedisCluster) -> Vec<String> {
    let mut keys = Vec::new();
    for port in cluster.live_ports() {
        let listed = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--scan"])
            .output()
            .expect("redis-cli --scan");
        keys.extend(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    keys
}

/// The keys of the prefixed `stream` (itself and those named after it, `team:{team:stream}…`),
/// at least `count` of them, all in the slot of `team:stream`.
fn assert_one_slot(keys: &[String], stream: &str, count: usize) {
    let own_key = format!("team:{stream}");
    let tagged = format!("team:{{team:{stream}}}");
    let own: Vec<&String> = keys
        .iter()
        .filter(|k| **k == own_key || k.starts_with(&tagged))
        .collect();
    assert!(own.len() >= count, "{stream}: {own:?} of {keys:?}");
    let slot = streamgate::store::key_slot(&own_key);
    for key in own {
        assert_eq!(
            streamgate::store::key_slot(key),
            slot,
            "{key} is not with {own_key}"
        );
    }
}

/// A tenant on a Cluster (`--key-prefix team:`): every key of one of its streams keeps the
/// stream's slot, its own and the ones the broker derives (the default dead-letter stream, the
/// ordering state, dedupe keys), so the scripts that touch several at once run. Before, the
/// prefix went in front of the broker's hash tag (`team:{orders}:dlq`, the slot of `orders`,
/// while the stream `team:orders` hashes whole): dead-lettering, ordering and dedupe failed
/// with CROSSSLOT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefixed_tenant_keeps_each_streams_keys_in_one_slot() {
    let cluster = cluster(3, 0).await;
    let mut config = ServeConfig::parse_from([
        "serve",
        "--redis-cluster-url",
        &cluster.urls(),
        "--key-prefix",
        "team:",
    ]);
    config.health_interval = Duration::from_millis(200);
    let mut broker = TestBroker::start_config(config).await;
    let create = |stream: &str, policy: pb::SubscriptionPolicy| pb::CreateSubscriptionRequest {
        stream: stream.into(),
        group: "billing".into(),
        policy: Some(policy),
        start_id: "0".into(),
    };
    let message = |body: &str, key: &str, dedupe: &str| pb::OutgoingMessage {
        fields: fields(&[("body", body)]),
        ordering_key: key.into(),
        dedupe_key: dedupe.into(),
        ..Default::default()
    };
    let produce = |stream: &str, messages: Vec<pb::OutgoingMessage>| pb::ProduceRequest {
        stream: stream.into(),
        messages,
        ..Default::default()
    };

    // Dead letters: a message nacked past max_deliveries moves to `{orders}:dlq`.
    broker
        .admin
        .create_subscription(create(
            "orders",
            pb::SubscriptionPolicy {
                max_deliveries: Some(1),
                backoff_min_ms: Some(50),
                backoff_max_ms: Some(50),
                ..Default::default()
            },
        ))
        .await
        .expect("a subscription on a prefixed cluster");
    // Dedupe keys: sent twice, stored once.
    for _ in 0..2 {
        broker
            .broker
            .produce(produce("orders", vec![message("poison", "", "once")]))
            .await
            .expect("a produce with a dedupe key");
    }
    let mut member = Subscription::open(
        &mut broker.broker,
        pb::SubscribeRequest {
            create_group: false,
            group_start_id: String::new(),
            ..group_request(&["orders"], "billing", "m")
        },
    )
    .await;
    let poison = member.next().await;
    broker
        .broker
        .nack(pb::NackRequest {
            stream: "orders".into(),
            group: "billing".into(),
            ids: vec![poison.id.clone()],
            delay_ms: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    let dead_letters = |mut admin: pb::admin_client::AdminClient<tonic::transport::Channel>| async move {
        admin
            .query_messages(pb::QueryMessagesRequest {
                stream: "{orders}:dlq".into(),
                ..Default::default()
            })
            .await
            .is_ok_and(|r| r.into_inner().entries.len() == 1)
    };
    eventually("the poison message dead-lettered", || {
        dead_letters(broker.admin.clone())
    })
    .await;
    drop(member);

    // Ordering: a key's second message only after its first is acknowledged.
    broker
        .admin
        .create_subscription(create(
            "payments",
            pb::SubscriptionPolicy {
                ordered: Some(true),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    broker
        .broker
        .produce(produce(
            "payments",
            vec![
                message("first", "customer-7", ""),
                message("second", "customer-7", ""),
            ],
        ))
        .await
        .expect("ordered produce");
    let mut member = Subscription::open(
        &mut broker.broker,
        pb::SubscribeRequest {
            create_group: false,
            group_start_id: String::new(),
            ..group_request(&["payments"], "billing", "m")
        },
    )
    .await;
    let first = member.next().await;
    member.expect_quiet(Duration::from_millis(300)).await;
    // The ordering state (the key's head, the message held behind it) is with its stream.
    assert_one_slot(&all_keys(&cluster), "payments", 3);
    broker
        .broker
        .ack(pb::AckRequest {
            stream: "payments".into(),
            group: "billing".into(),
            ids: vec![first.id],
        })
        .await
        .expect("an ordered ack on a prefixed cluster");
    let second = member.next().await;
    assert_eq!(second.fields[0].value, b"second".to_vec());

    // Retention: what the group acknowledged is deleted.
    broker
        .admin
        .set_retention(pb::SetRetentionRequest {
            stream: "payments".into(),
            policy: Some(pb::RetentionPolicy {
                acked: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    broker
        .broker
        .ack(pb::AckRequest {
            stream: "payments".into(),
            group: "billing".into(),
            ids: vec![second.id],
        })
        .await
        .unwrap();
    let mut admin = broker.admin.clone();
    admin
        .apply_retention(pb::GetRetentionRequest {
            stream: "payments".into(),
        })
        .await
        .expect("retention on a prefixed cluster");
    let left = broker
        .admin
        .query_messages(pb::QueryMessagesRequest {
            stream: "payments".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(left.is_empty(), "{left:?}");

    // Every key is under the prefix, the dead-letter stream and dedupe keys with their stream.
    let keys = all_keys(&cluster);
    assert!(keys.iter().all(|k| k.starts_with("team:")), "{keys:?}");
    assert_one_slot(&keys, "orders", 3);
}
