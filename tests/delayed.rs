//! Delayed delivery, on every store: a Produce with a delivery time is held and appended to its
//! stream when due (lateness printed, not asserted), listed and cancelled through Admin, and
//! refused by name where it cannot apply. On Redis with AOF, held messages survive a broker
//! SIGKILL and a Redis restart, and each is appended exactly once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use streamgate::model::now_ms;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const STREAM: &str = "{d}.reminders";

fn delayed(n: usize, delay_ms: u64) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: STREAM.into(),
        messages: vec![pb::OutgoingMessage {
            fields: fields(&[
                ("n", &n.to_string()),
                ("due", &(now_ms() + delay_ms).to_string()),
            ]),
            ..Default::default()
        }],
        delay_ms,
        ..Default::default()
    }
}

/// Reads `count` messages as group `g` from the start; each with its lateness (receipt minus
/// the `due` field), in ms.
async fn receive(broker: &mut BrokerClient<Channel>, count: usize) -> Vec<(usize, i64)> {
    let mut subscription = Subscription::open(broker, group_request(&[STREAM], "g", "c")).await;
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let message = subscription.next().await;
        let due: i64 = message
            .fields
            .iter()
            .find(|f| f.name == "due")
            .map(|f| String::from_utf8_lossy(&f.value).parse().unwrap())
            .unwrap();
        got.push((number(&message), now_ms() as i64 - due));
    }
    got
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn held_messages_are_appended_when_due(backend: Backend) {
    const MESSAGES: usize = 40;
    let mut env = start(backend).await;
    let broker = &mut env.broker.broker;
    let mut tokens = Vec::new();
    for n in 0..MESSAGES {
        let reply = broker
            .produce(delayed(n, 300 + (n as u64 % 8) * 100))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.ids.is_empty(), "ids come when appended");
        tokens.extend(reply.delayed);
    }
    assert_eq!(tokens.len(), MESSAGES);
    // Nothing is in the stream yet; everything is listed as held, earliest first.
    let held = env
        .broker
        .admin
        .list_delayed(pb::ListDelayedRequest {
            stream: STREAM.into(),
            count: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(held.len(), MESSAGES);
    assert!(
        held.windows(2)
            .all(|w| w[0].deliver_at_ms <= w[1].deliver_at_ms)
    );
    let mut got = receive(&mut env.broker.broker, MESSAGES).await;
    let numbers: HashSet<usize> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers.len(), MESSAGES, "each once");
    got.sort_by_key(|(_, late)| *late);
    let late: Vec<i64> = got.iter().map(|(_, late)| *late).collect();
    println!(
        "{backend:?}: {MESSAGES} delayed messages, lateness ms: min {} p50 {} p99 {} max {}",
        late[0],
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late[late.len() - 1]
    );
    assert!(late[0] >= -5, "none early: {late:?}");
}

async fn held_messages_can_be_cancelled(backend: Backend) {
    let mut env = start(backend).await;
    let keep = env
        .broker
        .broker
        .produce(delayed(1, 300))
        .await
        .unwrap()
        .into_inner();
    let cancel = env
        .broker
        .broker
        .produce(delayed(2, 300))
        .await
        .unwrap()
        .into_inner();
    let cancelled = env
        .broker
        .admin
        .cancel_delayed(pb::CancelDelayedRequest {
            stream: STREAM.into(),
            tokens: cancel.delayed.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .cancelled;
    assert_eq!(cancelled, 1);
    let got = receive(&mut env.broker.broker, 1).await;
    assert_eq!(got[0].0, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = env
        .broker
        .admin
        .get_stream_info(pb::GetStreamInfoRequest {
            stream: STREAM.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.length, 1, "the cancelled one never arrived ({keep:?})");
}

async fn delays_that_cannot_apply_are_refused_by_name(backend: Backend) {
    let mut env = start(backend).await;
    let broker = &mut env.broker.broker;
    let refused = |field: &'static str, request: pb::ProduceRequest| {
        let mut broker = broker.clone();
        async move {
            let status = broker.produce(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
            assert!(status.message().contains(field), "{field}: {status:?}");
        }
    };
    refused(
        "delay_ms",
        pb::ProduceRequest {
            deliver_at_ms: now_ms() + 1000,
            ..delayed(0, 1000)
        },
    )
    .await;
    refused(
        "delay_ms",
        pb::ProduceRequest {
            delay_ms: 31 * 24 * 3_600_000,
            ..delayed(0, 1000)
        },
    )
    .await;
    refused(
        "atomic",
        pb::ProduceRequest {
            atomic: true,
            ..delayed(0, 1000)
        },
    )
    .await;
    let mut explicit = delayed(0, 1000);
    explicit.messages[0].id = "5-5".into();
    refused("messages[].id", explicit).await;
}

conformance!(
    held_messages_are_appended_when_due,
    held_messages_can_be_cancelled,
    delays_that_cannot_apply_are_refused_by_name,
);

/// Held messages through a broker SIGKILL and a Redis restart (AOF, fsync always): every one is
/// appended exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_survive_a_broker_kill_and_a_redis_restart() {
    const MESSAGES: usize = 200;
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut broker = BrokerProcess::start(&redis, &[]);
    let mut client = BrokerClient::new(broker.channel());
    for n in 0..MESSAGES {
        client
            .produce(delayed(n, 500 + (n as u64 % 25) * 100))
            .await
            .unwrap();
    }
    // Some are due while the broker is down, some while Redis is.
    tokio::time::sleep(Duration::from_millis(800)).await;
    broker.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    broker.restart();
    let mut client = BrokerClient::new(broker.channel());
    let got = receive(&mut client, MESSAGES).await;
    let numbers: HashSet<usize> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers.len(), MESSAGES, "every held message arrived");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let length: u64 = redis.cmd(&["XLEN", STREAM]).await;
    assert_eq!(length as usize, MESSAGES, "and only once");
    let mut late: Vec<i64> = got.iter().map(|(_, late)| *late).collect();
    late.sort_unstable();
    println!(
        "through a broker kill and a Redis restart: {MESSAGES} delayed messages, lateness ms: p50 {} p99 {} max {}",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late[late.len() - 1]
    );
}
