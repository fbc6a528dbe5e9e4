//! Produce's options for a message's life, on every store: idempotent produce (a dedupe key
//! within its stream's window stores one message; batches and ProduceStream included),
//! all-or-nothing batches, and expiry (not delivered once past, acknowledged or dead-lettered). On Redis, a producer that sends every request twice through a broker
//! SIGKILL loop stores each key once.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tokio_stream::StreamExt;
use tonic::Code;

const STREAM: &str = "{p}.payments";

fn keyed(key: &str, n: usize) -> pb::OutgoingMessage {
    pb::OutgoingMessage {
        fields: fields(&[("n", &n.to_string())]),
        dedupe_key: key.into(),
        ..Default::default()
    }
}

fn request(messages: Vec<pb::OutgoingMessage>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: STREAM.into(),
        messages,
        ..Default::default()
    }
}

async fn length(env: &mut Env) -> u64 {
    env.broker
        .admin
        .get_stream_info(pb::GetStreamInfoRequest {
            stream: STREAM.into(),
        })
        .await
        .map(|info| info.into_inner().length)
        .unwrap_or(0)
}

async fn a_dedupe_key_stores_one_message_within_its_window(backend: Backend) {
    let mut env = start(backend).await;
    let broker = &mut env.broker.broker;
    let first = broker
        .produce(request(vec![keyed("order-1", 0)]))
        .await
        .unwrap();
    let again = broker
        .produce(request(vec![keyed("order-1", 1)]))
        .await
        .unwrap();
    assert_eq!(
        first.get_ref().ids,
        again.get_ref().ids,
        "the retry gets the first id"
    );
    // In one batch: each message its own key, a repeat answered with the first one's id.
    let batch = broker
        .produce(request(vec![
            keyed("order-2", 2),
            keyed("order-2", 3),
            keyed("order-3", 4),
        ]))
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(batch[0], batch[1]);
    assert_ne!(batch[1], batch[2]);
    // ProduceStream too.
    let answers: Vec<_> = broker
        .produce_stream(tokio_stream::iter(vec![
            request(vec![keyed("order-4", 5)]),
            request(vec![keyed("order-4", 6)]),
        ]))
        .await
        .unwrap()
        .into_inner()
        .take(2)
        .collect::<Vec<_>>()
        .await;
    let ids: Vec<Vec<String>> = answers
        .into_iter()
        .map(|a| match a.unwrap().result {
            Some(pb::produce_stream_response::Result::Produced(p)) => p.ids,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(length(&mut env).await, 4, "one entry per key");
    // A stream's window can be shortened: after it, the key stores again.
    env.broker
        .admin
        .set_retention(pb::SetRetentionRequest {
            stream: STREAM.into(),
            policy: Some(pb::RetentionPolicy {
                dedupe_window_ms: 300,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // The window is cached for up to a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let broker = &mut env.broker.broker;
    let a = broker
        .produce(request(vec![keyed("short", 7)]))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let b = broker
        .produce(request(vec![keyed("short", 8)]))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.ids, b.ids, "remembered for the window only");
    assert_eq!(length(&mut env).await, 6);
}

async fn an_atomic_batch_is_stored_whole_or_not_at_all(backend: Backend) {
    let mut env = start(backend).await;
    let broker = &mut env.broker.broker;
    let explicit = |id: &str| pb::OutgoingMessage {
        id: id.into(),
        fields: fields(&[("id", id)]),
        ..Default::default()
    };
    broker
        .produce(request(vec![explicit("100-0")]))
        .await
        .unwrap();
    // The second id is too small: nothing of the batch is stored.
    let status = broker
        .produce(pb::ProduceRequest {
            atomic: true,
            ..request(vec![explicit("200-0"), explicit("150-0")])
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(length(&mut env).await, 1);
    // Without `atomic`, a batch is not a transaction: what came before the failure stays.
    let broker = &mut env.broker.broker;
    broker
        .produce(request(vec![explicit("200-0"), explicit("150-0")]))
        .await
        .unwrap_err();
    assert_eq!(length(&mut env).await, 2);
    // A missing stream with require_existing_stream: nothing created.
    let broker = &mut env.broker.broker;
    let status = broker
        .produce(pb::ProduceRequest {
            stream: "{p}.missing".into(),
            messages: vec![explicit("1-1"), explicit("1-2")],
            require_existing_stream: true,
            atomic: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // And a good atomic batch, mixing generated and explicit ids, with dedupe keys.
    let ids = broker
        .produce(pb::ProduceRequest {
            atomic: true,
            ..request(vec![
                pb::OutgoingMessage {
                    id: "300-*".into(),
                    ..keyed("a", 1)
                },
                keyed("b", 2),
                keyed("a", 3),
            ])
        })
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], ids[2]);
    assert!(ids[0].starts_with("300-"), "{ids:?}");
    assert_eq!(length(&mut env).await, 4);
}

async fn bad_dedupe_keys_are_refused_by_name(backend: Backend) {
    let mut env = start(backend).await;
    let status = env
        .broker
        .broker
        .produce(request(vec![keyed(&"k".repeat(513), 0)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("messages[0].dedupe_key"),
        "{status:?}"
    );
}

async fn expired_messages_are_not_delivered(backend: Backend) {
    let mut env = start(backend).await;
    let now = streamgate::model::now_ms();
    let message = |n: usize, ttl_ms: u64, expire_at_ms: u64| pb::OutgoingMessage {
        fields: fields(&[("n", &n.to_string())]),
        ttl_ms,
        expire_at_ms,
        ..Default::default()
    };
    // A dead-lettering subscription, and plain groups created on first use.
    env.broker
        .admin
        .create_subscription(pb::CreateSubscriptionRequest {
            stream: STREAM.into(),
            group: "dead-lettering".into(),
            policy: Some(pb::SubscriptionPolicy {
                dead_letter_expired: Some(true),
                ..Default::default()
            }),
            start_id: "0".into(),
        })
        .await
        .unwrap();
    env.broker
        .broker
        .produce(request(vec![
            message(0, 200, 0),
            message(1, 0, 0),
            message(2, 0, now - 1000),
            message(3, 3_600_000, 0),
        ]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fetch = |group: &str| pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: STREAM.into(),
            after_id: if group.is_empty() { "0" } else { ">" }.into(),
        }],
        group: group.into(),
        consumer: if group.is_empty() { "" } else { "c" }.into(),
        create_group: group == "g",
        group_start_id: if group == "g" { "0" } else { "" }.into(),
        count: 10,
        ..Default::default()
    };
    for group in ["g", "dead-lettering", ""] {
        let got: Vec<usize> = env
            .broker
            .broker
            .fetch(fetch(group))
            .await
            .unwrap()
            .into_inner()
            .messages
            .iter()
            .map(number)
            .collect();
        assert_eq!(got, [1, 3], "group {group:?}");
    }
    // The expired ones were acknowledged for the groups: only what was delivered is pending.
    assert_eq!(pending_count(&mut env.broker.admin, STREAM, "g").await, 2);
    assert_eq!(
        pending_count(&mut env.broker.admin, STREAM, "dead-lettering").await,
        2
    );
    // The dead-lettering subscription's went to its dead-letter stream, saying why.
    let dead = env
        .broker
        .admin
        .query_messages(pb::QueryMessagesRequest {
            // The stream has a hash tag: its dead-letter stream shares it on every store.
            stream: format!("{STREAM}:dlq"),
            count: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reason = dead[0]
        .fields
        .iter()
        .find(|f| f.name == "dlq.reason")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reason.value).starts_with("expired at"),
        "{reason:?}"
    );
    let status = env
        .broker
        .broker
        .produce(request(vec![message(9, 10, now)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("messages[0].ttl_ms"),
        "{status:?}"
    );
}

conformance!(
    expired_messages_are_not_delivered,
    a_dedupe_key_stores_one_message_within_its_window,
    an_atomic_batch_is_stored_whole_or_not_at_all,
    bad_dedupe_keys_are_refused_by_name,
);

/// A producer that sends every request twice (as a client retrying after a timeout would),
/// through a broker SIGKILLed and restarted again and again: each key is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_a_broker_kill_loop_store_each_key_once() {
    const KEYS: usize = 300;
    let redis = RedisServer::start();
    let mut broker = BrokerProcess::start(&redis, &[]);
    let channel = broker.channel();
    let producer = tokio::spawn(async move {
        let mut client = BrokerClient::new(channel);
        let mut retries = 0;
        for key in 0..KEYS {
            let mut ids = Vec::new();
            while ids.len() < 2 {
                match client
                    .produce(request(vec![keyed(&format!("k{key}"), key)]))
                    .await
                {
                    Ok(reply) => ids.push(reply.into_inner().ids),
                    Err(_) => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            assert_eq!(ids[0], ids[1], "key {key}");
            // Spread over the kills.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        retries
    });
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.restart();
    }
    let retries = producer.await.unwrap();
    let length: u64 = redis.cmd(&["XLEN", STREAM]).await;
    println!(
        "{KEYS} keys sent twice each through 4 broker kills: {retries} failed calls retried, {length} entries"
    );
    assert_eq!(length as usize, KEYS);
    assert!(retries > 0, "the kills should have failed some calls");
}
