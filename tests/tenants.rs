//! Tenants confined by Redis itself: a Redis ACL user allowed only the keys under its prefix
//! (`~team-a:*`), without `@dangerous`, runs a broker with `--key-prefix team-a:`. Every Broker
//! and Admin RPC must work, and what Redis refuses (NOPERM) must reach the client as
//! PERMISSION_DENIED naming the user and the command, logged once.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const PREFIX: &str = "team-a:";

/// Creates a Redis user confined to `team-a:*` with every command but the dangerous ones, plus
/// `extra` ACL rules; returns the broker's URL for it.
async fn tenant_user(redis: &RedisServer, user: &str, extra: &[&str]) -> String {
    let mut rules = vec![
        "ACL",
        "SETUSER",
        user,
        "reset",
        "on",
        ">tenant-password",
        "~team-a:*",
        "+@all",
        "-@dangerous",
    ];
    rules.extend_from_slice(extra);
    let _: String = redis.cmd(&rules).await;
    format!("redis://{user}:tenant-password@127.0.0.1:{}", redis.port())
}

fn tenant_broker(url: &str, extra: &[&str]) -> BrokerProcess {
    let mut args = vec!["--redis-url", url, "--key-prefix", PREFIX];
    args.extend_from_slice(extra);
    BrokerProcess::start_in_memory(&args)
}

fn clients(broker: &BrokerProcess) -> (BrokerClient<Channel>, AdminClient<Channel>) {
    let channel = broker.channel();
    (
        BrokerClient::new(channel.clone()),
        AdminClient::new(channel),
    )
}

/// Calls `client.rpc(request)` and returns the response, or fails naming the RPC and status.
macro_rules! ok {
    ($client:ident . $rpc:ident ( $request:expr )) => {
        match $client.$rpc($request).await {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("{} failed for the tenant: {status:?}", stringify!($rpc)),
        }
    };
}

fn fetch_request(stream: &str, group: &str, consumer: &str) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: stream.into(),
            after_id: String::new(),
        }],
        group: group.into(),
        consumer: consumer.into(),
        create_group: true,
        group_start_id: "0".into(),
        count: 10,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tenant_confined_to_its_prefix_by_a_redis_acl_can_use_every_rpc() {
    let redis = RedisServer::start();
    let url = tenant_user(&redis, "team-a", &[]).await;
    let broker = tenant_broker(&url, &["--redelivery-backoff-min", "50ms"]);
    let (mut client, mut admin) = clients(&broker);

    // Broker: Produce, ProduceStream, Subscribe (tail and group), Fetch, Ack, Nack, Extend.
    let ids = produce_numbered(&mut client, "orders", 0..4).await;
    let answers = ok!(client.produce_stream(tokio_stream::iter(vec![numbered("orders", 4..6)])));
    let mut answers = answers;
    let answer = answers.message().await.unwrap().unwrap();
    assert!(
        matches!(
            answer.result,
            Some(pb::produce_stream_response::Result::Produced(_))
        ),
        "{answer:?}"
    );
    // Dedupe keys live under the prefix too (before, they did not: NOPERM here, and two
    // tenants' equal dedupe keys on equally named streams collided).
    let once = |n: &str| pb::ProduceRequest {
        stream: "receipts".into(),
        messages: vec![pb::OutgoingMessage {
            fields: fields(&[("n", n)]),
            dedupe_key: "receipt-1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let first = ok!(client.produce(once("1")));
    let again = ok!(client.produce(once("2")));
    assert_eq!(
        first.ids, again.ids,
        "a dedupe key sent twice is stored once"
    );
    let mut tail = Subscription::open(&mut client, tail_request(&[("orders", "0")])).await;
    assert_eq!(tail.take(6).await.len(), 6);
    let mut member = Subscription::open(&mut client, group_request(&["orders"], "g", "c1")).await;
    let got = member.take(6).await;
    let acked = ok!(client.ack(pb::AckRequest {
        stream: "orders".into(),
        group: "g".into(),
        ids: vec![got[0].id.clone()],
    }));
    assert_eq!(acked.acknowledged, 1);
    let extended = ok!(client.extend_deadline(pb::ExtendDeadlineRequest {
        stream: "orders".into(),
        group: "g".into(),
        consumer: "c1".into(),
        ids: vec![got[1].id.clone()],
    }));
    assert_eq!(extended.ids, [got[1].id.clone()]);
    let nacked = ok!(client.nack(pb::NackRequest {
        stream: "orders".into(),
        group: "g".into(),
        ids: vec![got[2].id.clone()],
        consumer: "c1".into(),
        delay_ms: Some(0),
    }));
    assert_eq!(nacked.ids, [got[2].id.clone()]);
    drop(member);
    let fetched = ok!(client.fetch(fetch_request("orders", "g2", "f")));
    assert_eq!(fetched.messages.len(), 6);

    // Dead letters: one delivery allowed, never acked.
    let dead = ok!(client.fetch(pb::FetchRequest {
        max_deliveries: Some(1),
        ack_deadline_ms: 100,
        ..fetch_request("orders", "dl", "x")
    }));
    assert_eq!(dead.messages.len(), 6);
    let redis_ref = &redis;
    eventually("the messages are dead-lettered", || {
        let mut client = client.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = client
                .fetch(pb::FetchRequest {
                    max_deliveries: Some(1),
                    ack_deadline_ms: 100,
                    ..fetch_request("orders", "dl", "x")
                })
                .await;
            let len: u64 = redis_len(redis_ref, "team-a:orders:dlq").await;
            len == 6
        }
    })
    .await;

    // Admin, every RPC.
    let listed = ok!(admin.list_streams(pb::ListStreamsRequest {
        pattern: "*".into(),
        ..Default::default()
    }));
    assert!(listed.streams.contains(&"orders".to_owned()), "{listed:?}");
    let info = ok!(admin.get_stream_info(pb::GetStreamInfoRequest {
        stream: "orders".into(),
    }));
    assert_eq!(info.length, 6);
    let queried = ok!(admin.query_messages(pb::QueryMessagesRequest {
        stream: "orders".into(),
        count: 2,
        ..Default::default()
    }));
    assert_eq!(queried.entries.len(), 2);
    let dead_letters = ok!(admin.list_dead_letters(pb::ListDeadLettersRequest {
        dead_letter_stream: "orders:dlq".into(),
        ..Default::default()
    }));
    assert_eq!(dead_letters.dead_letters.len(), 6);
    let replayed = ok!(admin.replay_dead_letters(pb::ReplayDeadLettersRequest {
        dead_letter_stream: "orders:dlq".into(),
        count: 2,
        ..Default::default()
    }));
    assert_eq!(replayed.replayed.len(), 2);
    ok!(admin.create_group(pb::CreateGroupRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
        start_id: "0".into(),
        ..Default::default()
    }));
    ok!(admin.set_group_id(pb::SetGroupIdRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
        id: "0".into(),
        ..Default::default()
    }));
    let groups = ok!(admin.list_groups(pb::ListGroupsRequest {
        stream: "orders".into(),
    }));
    assert!(groups.groups.iter().any(|g| g.name == "admin-g"));
    let created = ok!(admin.create_consumer(pb::CreateConsumerRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
        consumer: "worker".into(),
    }));
    assert!(created.created);
    let consumers = ok!(admin.list_consumers(pb::ListConsumersRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
    }));
    assert_eq!(consumers.consumers.len(), 1);
    let mut as_worker = fetch_request("orders", "admin-g", "worker");
    as_worker.create_group = false;
    as_worker.group_start_id.clear();
    ok!(client.fetch(as_worker));
    let summary = ok!(admin.get_pending_summary(pb::GetPendingSummaryRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
    }));
    assert!(summary.count > 0);
    let pending = ok!(admin.list_pending(pb::ListPendingRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
        count: 10,
        ..Default::default()
    }));
    let claimed = ok!(admin.claim(pb::ClaimRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
        consumer: "other".into(),
        ids: vec![pending.entries[0].id.clone()],
        just_id: true,
        ..Default::default()
    }));
    assert_eq!(claimed.claimed_ids.len(), 1);
    ok!(admin.auto_claim(pb::AutoClaimRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
        consumer: "other".into(),
        start_id: "0".into(),
        count: 10,
        ..Default::default()
    }));
    ok!(admin.delete_consumer(pb::DeleteConsumerRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
        consumer: "other".into(),
    }));
    ok!(admin.destroy_group(pb::DestroyGroupRequest {
        stream: "orders".into(),
        group: "admin-g".into(),
    }));
    let deleted = ok!(admin.delete_messages(pb::DeleteMessagesRequest {
        stream: "orders".into(),
        ids: vec![ids[0].clone()],
    }));
    assert_eq!(deleted.deleted, 1);
    ok!(admin.trim_stream(pb::TrimStreamRequest {
        stream: "orders".into(),
        trim: Some(pb::TrimPolicy {
            threshold: Some(pb::trim_policy::Threshold::MaxLen(3)),
            approximate: false,
            limit: 0,
        }),
    }));

    // Topics: the registry lives under the prefix too.
    let topic = ok!(admin.create_topic(pb::CreateTopicRequest {
        topic: "events".into(),
        partitions: 3,
    }));
    assert!(topic.created);
    let described = ok!(admin.describe_topic(pb::DescribeTopicRequest {
        topic: "events".into(),
    }));
    assert_eq!(described.partitions.len(), 3);
    produce_numbered(&mut client, "events", 0..9).await;
    let from_topic = ok!(client.fetch(fetch_request("events", "tg", "t")));
    assert_eq!(from_topic.messages.len(), 9);
    let registry: u64 = redis.cmd(&["HLEN", "team-a:streamgate:topics"]).await;
    assert_eq!(registry, 1);

    // Stored subscriptions (and the sweep's lease) live under the prefix too.
    let sub = |group: &str| pb::SubscriptionName {
        stream: "orders".into(),
        group: group.into(),
    };
    ok!(admin.create_subscription(pb::CreateSubscriptionRequest {
        stream: "orders".into(),
        group: "s".into(),
        policy: Some(pb::SubscriptionPolicy {
            max_deliveries: Some(3),
            ..Default::default()
        }),
        start_id: "0".into(),
    }));
    ok!(admin.get_subscription(sub("s")));
    ok!(admin.update_subscription(pb::UpdateSubscriptionRequest {
        stream: "orders".into(),
        group: "s".into(),
        policy: Some(pb::SubscriptionPolicy {
            paused: Some(true),
            ..Default::default()
        }),
    }));
    let subscriptions = ok!(admin.list_subscriptions(pb::ListSubscriptionsRequest::default()));
    assert_eq!(subscriptions.subscriptions.len(), 1);
    let paused = ok!(client.fetch(fetch_request("orders", "s", "p")));
    assert!(paused.messages.is_empty());
    let seeked = ok!(admin.seek_subscription(pb::SeekSubscriptionRequest {
        stream: "orders".into(),
        group: "s".into(),
        target: Some(pb::seek_subscription_request::Target::AfterId("0".into())),
        clear_pending: true,
    }));
    assert_eq!(seeked.position, "0-0");
    ok!(admin.delete_subscription(sub("s")));
    // Consume, with both kinds of confirmed ack (each a Lua script on the tenant's keys).
    produce_numbered(&mut client, "orders", 100..102).await;
    for exactly_once in [false, true] {
        let (requests, outgoing) = tokio::sync::mpsc::channel(4);
        requests
            .send(pb::ConsumeRequest {
                request: Some(pb::consume_request::Request::Open(pb::ConsumeOpen {
                    streams: vec![pb::StreamStart {
                        stream: "orders".into(),
                        after_id: String::new(),
                    }],
                    group: format!("consume-{exactly_once}"),
                    consumer: "c".into(),
                    create_group: true,
                    group_start_id: "0".into(),
                    exactly_once,
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
        let mut session =
            ok!(client.consume(tokio_stream::wrappers::ReceiverStream::new(outgoing)));
        let mut acked = false;
        while let Some(item) = tokio::time::timeout(WAIT, session.message())
            .await
            .expect("a Consume item within the deadline")
            .expect("consume for the tenant")
        {
            match item.event {
                Some(pb::consume_response::Event::Messages(batch)) if !acked => {
                    acked = true;
                    let ack = pb::Settle {
                        request_id: 1,
                        stream: "orders".into(),
                        ids: batch.messages.iter().map(|m| m.id.clone()).collect(),
                        delay_ms: None,
                    };
                    requests
                        .send(pb::ConsumeRequest {
                            request: Some(pb::consume_request::Request::Ack(ack)),
                        })
                        .await
                        .unwrap();
                }
                Some(pb::consume_response::Event::Confirmation(confirmation)) => {
                    assert!(confirmation.failed.is_empty(), "{confirmation:?}");
                    assert!(!confirmation.succeeded.is_empty());
                    break;
                }
                _ => {}
            }
        }
    }
    let registry: u64 = redis
        .cmd(&["EXISTS", "team-a:streamgate:subscriptions"])
        .await;
    assert_eq!(registry, 0);

    ok!(admin.delete_stream(pb::DeleteStreamRequest {
        stream: "orders".into(),
    }));

    // Nothing outside the prefix was touched, and Redis refused nothing.
    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]).await;
    assert!(keys.iter().all(|k| k.starts_with(PREFIX)), "{keys:?}");
    let log = broker.log_text();
    assert!(!log.contains("NOPERM"), "{log}");
}

async fn redis_len(redis: &RedisServer, key: &str) -> u64 {
    let exists: u64 = redis.cmd(&["EXISTS", key]).await;
    if exists == 0 {
        return 0;
    }
    redis.cmd(&["XLEN", key]).await
}

#[tokio::test]
async fn a_command_redis_refuses_is_permission_denied_naming_the_user_and_command_logged_once() {
    let redis = RedisServer::start();
    // Allowed to read its keys, not to append to them.
    let url = tenant_user(&redis, "reader", &["-xadd"]).await;
    let broker = tenant_broker(&url, &[]);
    let (mut client, _) = clients(&broker);
    for _ in 0..3 {
        let status = client.produce(numbered("orders", 0..1)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let message = status.message();
        assert!(
            message.contains("`reader`") && message.contains("XADD"),
            "{message}"
        );
        assert!(!message.contains(PREFIX), "the prefix leaked: {message}");
    }
    // Another command refused (keys outside its pattern: a second user's prefix).
    let other = tenant_user(&redis, "elsewhere", &["resetkeys", "~team-b:*"]).await;
    let elsewhere = tenant_broker(&other, &[]);
    let (mut client, _) = clients(&elsewhere);
    let status = client
        .fetch(fetch_request("orders", "g", "c"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("`elsewhere`"), "{status:?}");

    let log = broker.log_text();
    let lines = log.lines().filter(|l| l.contains("NOPERM")).count();
    assert_eq!(lines, 1, "one log line for three refusals of XADD:\n{log}");
    assert!(log.contains("XADD") && log.contains("reader"), "{log}");
}

#[tokio::test]
async fn topics_an_earlier_version_recorded_outside_the_prefix_are_moved_into_it() {
    let redis = RedisServer::start();
    // Where earlier versions kept a prefixed broker's topics: the unprefixed registry, with
    // prefixed names as fields.
    let _: u64 = redis
        .cmd(&["HSET", "streamgate:topics", "team-a:events", "3"])
        .await;
    let broker = tenant_broker(&redis.url(), &[]);
    let (_, mut admin) = clients(&broker);
    let described = ok!(admin.describe_topic(pb::DescribeTopicRequest {
        topic: "events".into(),
    }));
    assert_eq!(described.partitions.len(), 3);
    let moved: Option<String> = redis
        .cmd(&["HGET", "team-a:streamgate:topics", "events"])
        .await;
    assert_eq!(moved.as_deref(), Some("3"));
}
