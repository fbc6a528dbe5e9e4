//! Retention that respects consumers, on every store: `acked` deletes only what every group has
//! acknowledged (a lagging group keeps its unacknowledged tail), `max_age` with `keep_pending`
//! spares what is still pending, `max_len` trims to a length, policies are applied in the
//! background, and bad policies are refused by name. On Redis, two brokers applying a policy
//! concurrently under a reading group never delete an entry the group has not read.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const STREAM: &str = "{r}.jobs";

fn set(policy: pb::RetentionPolicy) -> pb::SetRetentionRequest {
    pb::SetRetentionRequest {
        stream: STREAM.into(),
        policy: Some(policy),
    }
}

fn this_stream() -> pb::GetRetentionRequest {
    pb::GetRetentionRequest {
        stream: STREAM.into(),
    }
}

/// `count` messages read by `group` (created from the start on first use), acknowledged or not.
async fn read(
    broker: &mut BrokerClient<Channel>,
    group: &str,
    count: usize,
    ack: bool,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let batch = broker
            .fetch(pb::FetchRequest {
                streams: vec![pb::StreamStart {
                    stream: STREAM.into(),
                    after_id: ">".into(),
                }],
                group: group.into(),
                consumer: "c".into(),
                create_group: true,
                group_start_id: "0".into(),
                count: (count - ids.len()).min(1000) as u32,
                ..Default::default()
            })
            .await
            .expect("fetch")
            .into_inner()
            .messages;
        assert!(
            !batch.is_empty(),
            "{group}: only {} of {count} to read",
            ids.len()
        );
        let batch: Vec<String> = batch.into_iter().map(|m| m.id).collect();
        if ack {
            acknowledge(broker, group, &batch).await;
        }
        ids.extend(batch);
    }
    ids
}

async fn acknowledge(broker: &mut BrokerClient<Channel>, group: &str, ids: &[String]) {
    for chunk in ids.chunks(1000) {
        broker
            .ack(pb::AckRequest {
                stream: STREAM.into(),
                group: group.into(),
                ids: chunk.to_vec(),
            })
            .await
            .expect("ack");
    }
}

/// Stores `policy` for the stream and applies it at once: what it deleted.
async fn set_and_apply(
    admin: &mut AdminClient<Channel>,
    policy: pb::RetentionPolicy,
) -> pb::ApplyRetentionResponse {
    admin.set_retention(set(policy)).await.unwrap();
    admin
        .apply_retention(this_stream())
        .await
        .unwrap()
        .into_inner()
}

async fn length(admin: &mut AdminClient<Channel>) -> u64 {
    admin
        .get_stream_info(pb::GetStreamInfoRequest {
            stream: STREAM.into(),
        })
        .await
        .expect("stream info")
        .into_inner()
        .length
}

async fn fill(broker: &mut BrokerClient<Channel>, count: usize) {
    for start in (0..count).step_by(1000) {
        broker
            .produce(numbered(STREAM, start..(start + 1000).min(count)))
            .await
            .expect("produce");
    }
}

async fn acked_keeps_what_a_lagging_group_has_not_acknowledged(backend: Backend) {
    const ENTRIES: usize = 100_000;
    let mut env = start(backend).await;
    let broker = &mut env.broker.broker;
    fill(broker, ENTRIES).await;
    // One group reads and acknowledges everything; the other reads 30,000 and acknowledges the
    // first 20,000 of them.
    read(broker, "fast", ENTRIES, true).await;
    let slow = read(broker, "slow", 30_000, false).await;
    acknowledge(broker, "slow", &slow[..20_000]).await;
    let admin = &mut env.broker.admin;
    let applied = set_and_apply(
        admin,
        pb::RetentionPolicy {
            acked: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(applied.trimmed_acked, 20_000, "{applied:?}");
    assert_eq!(length(admin).await, 80_000);
    // The slow group's pending and unread messages are all still there for it.
    acknowledge(broker, "slow", &slow[20_000..]).await;
    read(broker, "slow", ENTRIES - 30_000, true).await;
    assert_eq!(
        pending_count(admin, STREAM, "slow").await,
        0,
        "every message the slow group needed was there"
    );
    // Caught up: the stream shrinks to nothing (the policy is applied in the background too).
    eventually("the stream emptied by the background retention", || {
        let mut admin = env.broker.admin.clone();
        async move { length(&mut admin).await == 0 }
    })
    .await;
}

async fn max_age_spares_pending_entries_when_asked(backend: Backend) {
    let mut env = start(backend).await;
    let broker = &mut env.broker.broker;
    // Ten entries two hours old, then ten new ones.
    let old_ms = streamgate::model::now_ms() - 2 * 3_600_000;
    let old: Vec<pb::OutgoingMessage> = (0..10)
        .map(|i| pb::OutgoingMessage {
            id: format!("{old_ms}-{i}"),
            fields: fields(&[("n", &i.to_string())]),
            ..Default::default()
        })
        .collect();
    broker
        .produce(pb::ProduceRequest {
            stream: STREAM.into(),
            messages: old,
            ..Default::default()
        })
        .await
        .unwrap();
    broker.produce(numbered(STREAM, 10..20)).await.unwrap();
    // A group acknowledges the first four and holds the next two.
    let ids = read(broker, "g", 6, false).await;
    acknowledge(broker, "g", &ids[..4]).await;
    let admin = &mut env.broker.admin;
    let hour = 3_600_000;
    let applied = set_and_apply(
        admin,
        pb::RetentionPolicy {
            max_age_ms: hour,
            keep_pending: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        applied.trimmed_max_age, 4,
        "only what is before the first pending entry"
    );
    assert_eq!(length(admin).await, 16);
    // Without keep_pending the old ones go, pending or not.
    let applied = set_and_apply(
        admin,
        pb::RetentionPolicy {
            max_age_ms: hour,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(applied.trimmed_max_age, 6);
    assert_eq!(length(admin).await, 10);
    // And a length limit on top.
    let applied = set_and_apply(
        admin,
        pb::RetentionPolicy {
            max_len: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(applied.trimmed_max_len, 7);
    let policy = admin
        .get_retention(this_stream())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.max_len, 3);
}

async fn bad_policies_are_refused_by_name(backend: Backend) {
    let mut env = start(backend).await;
    let admin = &mut env.broker.admin;
    let status = admin
        .set_retention(set(pb::RetentionPolicy {
            keep_pending: true,
            max_len: 5,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("policy.keep_pending"),
        "{status:?}"
    );
    let status = admin.get_retention(this_stream()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // An empty policy removes it.
    admin
        .set_retention(set(pb::RetentionPolicy {
            acked: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    admin
        .set_retention(set(pb::RetentionPolicy::default()))
        .await
        .unwrap();
    let status = admin.apply_retention(this_stream()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

conformance!(
    acked_keeps_what_a_lagging_group_has_not_acknowledged,
    max_age_spares_pending_entries_when_asked,
    bad_policies_are_refused_by_name,
);

/// Two brokers on one Redis apply `acked` over and over while a producer writes and a group
/// reads slowly: the group still receives every message, in order, none deleted before it read
/// and acknowledged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appliers_never_delete_what_a_group_has_not_read() {
    const MESSAGES: usize = 5_000;
    let redis = RedisServer::start();
    let first = TestBroker::start(&redis).await;
    let second = TestBroker::start(&redis).await;
    let mut broker = first.broker.clone();
    first
        .admin
        .clone()
        .set_retention(set(pb::RetentionPolicy {
            acked: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    first
        .admin
        .clone()
        .create_group(pb::CreateGroupRequest {
            stream: STREAM.into(),
            group: "g".into(),
            start_id: "0".into(),
            create_stream: true,
            ..Default::default()
        })
        .await
        .unwrap();
    broker.produce(numbered(STREAM, 0..1)).await.unwrap();
    let producer = {
        let mut broker = second.broker.clone();
        tokio::spawn(async move {
            for start in (1..MESSAGES).step_by(50) {
                broker
                    .produce(numbered(STREAM, start..(start + 50).min(MESSAGES)))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let appliers: Vec<_> = [first.admin.clone(), second.admin.clone()]
        .into_iter()
        .map(|mut admin| {
            tokio::spawn(async move {
                let mut trimmed = 0;
                for _ in 0..400 {
                    trimmed += admin
                        .apply_retention(this_stream())
                        .await
                        .unwrap()
                        .into_inner()
                        .trimmed_acked;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                trimmed
            })
        })
        .collect();
    let mut numbers = Vec::with_capacity(MESSAGES);
    while numbers.len() < MESSAGES {
        let batch = broker
            .fetch(pb::FetchRequest {
                streams: vec![pb::StreamStart {
                    stream: STREAM.into(),
                    after_id: ">".into(),
                }],
                group: "g".into(),
                consumer: "c".into(),
                count: 37,
                wait_ms: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .messages;
        numbers.extend(batch.iter().map(number));
        let ids: Vec<String> = batch.into_iter().map(|m| m.id).collect();
        if !ids.is_empty() {
            acknowledge(&mut broker, "g", &ids).await;
        }
    }
    producer.await.unwrap();
    let mut trimmed = 0;
    for applier in appliers {
        trimmed += applier.await.unwrap();
    }
    assert_eq!(numbers, (0..MESSAGES).collect::<Vec<_>>());
    println!("{trimmed} entries trimmed by two concurrent appliers while the group read");
    assert!(trimmed > 0);
}
