//! Every row of README's error table: bad input never reaches Redis and never panics, and
//! Redis's answers map to codes a client can act on.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use support::*;
use tonic::{Code, Status};

fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, mentions: &str) {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(mentions),
        "`{}` does not mention `{mentions}`",
        status.message()
    );
}

fn produce_with_id(stream: &str, id: &str) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.into(),
        messages: vec![pb::OutgoingMessage {
            id: id.into(),
            fields: fields(&[("a", "1")]),
            ..Default::default()
        }],
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn invalid_arguments_name_the_field_and_send_nothing_to_redis() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| {
        c.limits.max_message_bytes = 64;
        c.limits.max_batch = 3;
        c.limits.max_name_bytes = 16;
    })
    .await;
    let (b, a) = (&mut broker.broker, &mut broker.admin);

    // Names.
    assert_status(
        b.produce(numbered("", 0..1)).await,
        Code::InvalidArgument,
        "invalid stream: must not be empty",
    );
    assert_status(
        b.produce(numbered(&"x".repeat(17), 0..1)).await,
        Code::InvalidArgument,
        "over the limit of 16",
    );
    assert_status(
        b.ack(pb::AckRequest {
            stream: "s".into(),
            group: "".into(),
            ids: vec!["1-1".into()],
        })
        .await,
        Code::InvalidArgument,
        "invalid group",
    );
    assert_status(
        a.create_consumer(pb::CreateConsumerRequest {
            stream: "s".into(),
            group: "g".into(),
            consumer: "".into(),
        })
        .await,
        Code::InvalidArgument,
        "invalid consumer",
    );

    // Malformed ids, wherever an id goes.
    for bad in ["1-x", "abc", "-5"] {
        assert_status(
            b.produce(produce_with_id("s", bad)).await,
            Code::InvalidArgument,
            "invalid messages[0].id",
        );
        assert_status(
            b.ack(pb::AckRequest {
                stream: "s".into(),
                group: "g".into(),
                ids: vec!["1-0".into(), bad.into()],
            })
            .await,
            Code::InvalidArgument,
            "invalid ids[1]",
        );
        assert_status(
            a.query_messages(pb::QueryMessagesRequest {
                stream: "s".into(),
                min_id: bad.into(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "invalid min_id",
        );
        let mut tail = tail_request(&[("s", bad)]);
        tail.batch_size = 1;
        assert_status(
            b.subscribe(tail).await,
            Code::InvalidArgument,
            "invalid streams[0].after_id",
        );
        assert_status(
            a.create_group(pb::CreateGroupRequest {
                stream: "s".into(),
                group: "g".into(),
                start_id: bad.into(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "invalid start_id",
        );
    }
    assert_status(
        b.produce(produce_with_id("s", "0-0")).await,
        Code::InvalidArgument,
        "greater than 0-0",
    );

    // Message shape and limits.
    let empty = pb::ProduceRequest {
        stream: "s".into(),
        messages: vec![pb::OutgoingMessage {
            id: String::new(),
            fields: vec![],
            ..Default::default()
        }],
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    };
    assert_status(
        b.produce(empty).await,
        Code::InvalidArgument,
        "invalid messages[0].fields",
    );
    assert_status(
        b.produce(numbered("s", 0..0)).await,
        Code::InvalidArgument,
        "invalid messages",
    );
    assert_status(
        b.produce(numbered("s", 0..4)).await,
        Code::InvalidArgument,
        "batch limit of 3",
    );
    let big = pb::ProduceRequest {
        stream: "s".into(),
        messages: vec![pb::OutgoingMessage {
            id: String::new(),
            fields: fields(&[("a", &"x".repeat(100))]),
            ..Default::default()
        }],
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    };
    assert_status(
        b.produce(big).await,
        Code::InvalidArgument,
        "invalid messages[0]: is 101 bytes",
    );
    assert_status(
        a.trim_stream(pb::TrimStreamRequest {
            stream: "s".into(),
            trim: None,
        })
        .await,
        Code::InvalidArgument,
        "invalid trim",
    );
    assert_status(
        b.ack(pb::AckRequest {
            stream: "s".into(),
            group: "g".into(),
            ids: vec![],
        })
        .await,
        Code::InvalidArgument,
        "invalid ids",
    );
    assert_status(
        b.subscribe(tail_request(&[])).await,
        Code::InvalidArgument,
        "invalid streams",
    );

    // None of that reached Redis.
    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]).await;
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_request_over_the_transport_limit_is_refused_whole() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| c.limits.max_request_bytes = 1024).await;
    let big = pb::ProduceRequest {
        stream: "s".into(),
        messages: vec![pb::OutgoingMessage {
            id: String::new(),
            fields: fields(&[("a", &"x".repeat(4096))]),
            ..Default::default()
        }],
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    };
    let status = broker.broker.produce(big).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let exists: u64 = redis.cmd(&["EXISTS", "s"]).await;
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn missing_things_are_not_found() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "s", 0..1).await;
    let a = &mut broker.admin;
    let group = |stream: &str, group: &str| (stream.to_owned(), group.to_owned());

    // NOGROUP.
    let (stream, g) = group("s", "nope");
    assert_status(
        a.list_consumers(pb::ListConsumersRequest { stream, group: g })
            .await,
        Code::NotFound,
        "`nope`",
    );
    assert_status(
        a.get_pending_summary(pb::GetPendingSummaryRequest {
            stream: "s".into(),
            group: "nope".into(),
        })
        .await,
        Code::NotFound,
        "consumer group `nope` does not exist on stream `s`",
    );
    assert_status(
        a.auto_claim(pb::AutoClaimRequest {
            stream: "s".into(),
            group: "nope".into(),
            consumer: "c".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "`nope`",
    );
    // Missing stream.
    assert_status(
        a.get_stream_info(pb::GetStreamInfoRequest {
            stream: "ghost".into(),
        })
        .await,
        Code::NotFound,
        "stream `ghost` does not exist",
    );
    assert_status(
        a.list_groups(pb::ListGroupsRequest {
            stream: "ghost".into(),
        })
        .await,
        Code::NotFound,
        "`ghost`",
    );
    assert_status(
        a.destroy_group(pb::DestroyGroupRequest {
            stream: "ghost".into(),
            group: "g".into(),
        })
        .await,
        Code::NotFound,
        "`ghost`",
    );
}

#[tokio::test]
async fn conflicts_are_already_exists_or_failed_precondition() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let _: () = redis.cmd(&["SET", "plain", "x"]).await;
    let create = pb::CreateGroupRequest {
        stream: "s".into(),
        group: "g".into(),
        create_stream: true,
        ..Default::default()
    };
    broker.admin.create_group(create.clone()).await.unwrap();
    assert_status(
        broker.admin.create_group(create).await,
        Code::AlreadyExists,
        "consumer group `g` already exists",
    );

    // WRONGTYPE, from the data and from the admin planes.
    assert_status(
        broker.broker.produce(numbered("plain", 0..1)).await,
        Code::FailedPrecondition,
        "`plain` exists and is not a stream",
    );
    assert_status(
        broker
            .admin
            .query_messages(pb::QueryMessagesRequest {
                stream: "plain".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "not a stream",
    );
    let mut sub = broker
        .broker
        .subscribe(tail_request(&[("plain", "0")]))
        .await
        .unwrap()
        .into_inner();
    let status = tokio::time::timeout(WAIT, sub.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // An id not above the top.
    produce_numbered(&mut broker.broker, "s", 0..1).await;
    assert_status(
        broker.broker.produce(produce_with_id("s", "1-1")).await,
        Code::FailedPrecondition,
        "equal to or smaller",
    );
}

#[tokio::test]
async fn other_redis_refusals_are_invalid_argument_with_redis_words() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let create = pb::CreateGroupRequest {
        stream: "s".into(),
        group: "g".into(),
        create_stream: true,
        entries_read: Some(-5),
        ..Default::default()
    };
    assert_status(
        broker.admin.create_group(create).await,
        Code::InvalidArgument,
        "ENTRIESREAD",
    );
}

#[tokio::test]
async fn redis_down_is_unavailable_and_recovery_needs_no_restart() {
    let mut redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "s", 0..1).await;
    let mut tail = Subscription::open(&mut broker.broker, tail_request(&[("s", "$")])).await;
    let mut member = Subscription::open(&mut broker.broker, group_request(&["s"], "g", "")).await;
    assert_eq!(number(&member.next().await), 0);

    redis.kill();
    assert_status(
        broker.broker.produce(numbered("s", 1..2)).await,
        Code::Unavailable,
        "redis is unavailable",
    );
    assert_status(
        broker
            .admin
            .get_stream_info(pb::GetStreamInfoRequest { stream: "s".into() })
            .await,
        Code::Unavailable,
        "redis is unavailable",
    );
    // Open subscriptions do not end: they wait for Redis to come back.
    tail.expect_quiet(Duration::from_millis(500)).await;

    // The pooled connections to the dead server are discarded, not reused forever.
    redis.restart();
    let ids = broker
        .broker
        .produce(numbered("s", 2..3))
        .await
        .expect("produce after redis came back")
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 1);
    // Both resume on their own. Redis kept nothing (no persistence), so the group member's
    // group was recreated from the start of what is there now: message 2.
    assert_eq!(number(&tail.next().await), 2);
    assert_eq!(number(&member.next().await), 2);
}

#[tokio::test]
async fn a_wrong_redis_password_is_unavailable_and_says_why() {
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["CONFIG", "SET", "requirepass", "right"]).await;
    let mut broker = TestBroker::start_config(streamgate::config::ServeConfig::for_redis(
        &format!("redis://:wrong@127.0.0.1:{}", redis.port()),
    ))
    .await;
    let status = broker
        .broker
        .produce(numbered("s", 0..1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("authentication failed"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("wrong@"),
        "the URL leaked: {}",
        status.message()
    );
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded_and_leaves_the_connection_usable() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "slow", 0..1).await;
    // Redis holds every write for 1.5 s; the client gives its call 300 ms.
    let _: () = redis.cmd(&["CLIENT", "PAUSE", "1500", "WRITE"]).await;
    // The deadline as a client in any language sends it: the grpc-timeout header, enforced by
    // the server (no client-side timer here to race it).
    let mut request = tonic::Request::new(numbered("slow", 1..2));
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = std::time::Instant::now();
    let status = broker.broker.produce(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    // Once Redis answers again, the same pooled connections serve the next calls.
    let _: () = redis.cmd(&["CLIENT", "UNPAUSE"]).await;
    let ids = produce_numbered(&mut broker.broker, "slow", 2..3).await;
    assert_eq!(ids.len(), 1);
}
