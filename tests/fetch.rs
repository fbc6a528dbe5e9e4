//! Fetch: one batch per call, in plain and group mode, with and without waiting.

mod support;

use std::time::{Duration, Instant};

use streamgate::grpc::pb;
use support::*;
use tonic::Code;

fn starts(streams: &[(&str, &str)]) -> Vec<pb::StreamStart> {
    streams
        .iter()
        .map(|(s, after)| pb::StreamStart {
            stream: (*s).into(),
            after_id: (*after).into(),
        })
        .collect()
}

fn plain(streams: &[(&str, &str)], count: u32, wait_ms: u32) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: starts(streams),
        count,
        wait_ms,
        ..Default::default()
    }
}

fn group(streams: &[(&str, &str)], consumer: &str, count: u32) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: starts(streams),
        group: "g".into(),
        consumer: consumer.into(),
        create_group: true,
        group_start_id: "0".into(),
        count,
        ..Default::default()
    }
}

fn numbers(response: &pb::FetchResponse) -> Vec<usize> {
    response.messages.iter().map(number).collect()
}

fn next_of(response: &pb::FetchResponse) -> Vec<(String, String)> {
    response
        .next
        .iter()
        .map(|s| (s.stream.clone(), s.after_id.clone()))
        .collect()
}

#[tokio::test]
async fn plain_fetch_pages_through_one_and_several_streams() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let a = produce_numbered(&mut broker.broker, "a", 0..5).await;
    let b = produce_numbered(&mut broker.broker, "b", 100..102).await;

    let first = broker
        .broker
        .fetch(plain(&[("a", "0")], 3, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(numbers(&first), [0, 1, 2]);
    assert!(
        first
            .messages
            .iter()
            .all(|m| m.stream == "a" && m.delivery_count == 0)
    );
    assert_eq!(next_of(&first), [("a".into(), a[2].clone())]);

    // Continue where `next` says, over two streams; count is per stream.
    let mut request = plain(&[], 2, 0);
    request.streams = first.next.clone();
    request.streams.extend(starts(&[("b", "0")]));
    let second = broker.broker.fetch(request).await.unwrap().into_inner();
    assert_eq!(numbers(&second), [3, 4, 100, 101]);
    assert_eq!(
        next_of(&second),
        [("a".into(), a[4].clone()), ("b".into(), b[1].clone())]
    );

    // Nothing left and no wait: an empty batch at once, not an error.
    let mut request = plain(&[], 10, 0);
    request.streams = second.next;
    let empty = broker.broker.fetch(request).await.unwrap().into_inner();
    assert!(empty.messages.is_empty());
}

#[tokio::test]
async fn wait_returns_early_when_a_message_arrives_and_empty_otherwise() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "w", 0..1).await;

    // A message produced 300 ms into a 10 s wait ends the wait.
    let mut producer = broker.broker.clone();
    let produce_later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        produce_numbered(&mut producer, "w", 1..2).await;
    });
    let started = Instant::now();
    let got = broker
        .broker
        .fetch(plain(&[("w", "$")], 10, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(numbers(&got), [1]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited the whole time"
    );
    produce_later.await.unwrap();

    // So does a write made with plain Redis, seen by the watcher.
    let redis_url = redis.url();
    let external = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client = redis::Client::open(redis_url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: String = redis::cmd("XADD")
            .arg("w")
            .arg("*")
            .arg("n")
            .arg(2)
            .query_async(&mut conn)
            .await
            .unwrap();
    });
    let mut request = plain(&[], 10, 10_000);
    request.streams = got.next;
    let got = broker.broker.fetch(request).await.unwrap().into_inner();
    assert_eq!(numbers(&got), [2]);
    external.await.unwrap();

    // Nothing arrives: an empty batch after the wait.
    let started = Instant::now();
    let mut request = plain(&[], 10, 400);
    request.streams = got.next;
    let empty = broker.broker.fetch(request).await.unwrap().into_inner();
    assert!(empty.messages.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "returned after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_wait_longer_than_the_deadline_ends_inside_it() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut request = tonic::Request::new(plain(&[("d", "$")], 10, 30_000));
    request.set_timeout(Duration::from_millis(800));
    let reply = broker
        .broker
        .fetch(request)
        .await
        .expect("an empty batch, not DEADLINE_EXCEEDED");
    assert!(reply.into_inner().messages.is_empty());
}

#[tokio::test]
async fn fetched_but_unacked_messages_are_pending_and_come_back_from_zero() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "jobs", 0..5).await;

    let first = broker
        .broker
        .fetch(group(&[("jobs", ">")], "w1", 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(numbers(&first), [0, 1, 2]);
    assert!(first.messages.iter().all(|m| m.delivery_count == 1));
    assert_eq!(next_of(&first), [("jobs".into(), ">".into())]);

    let pending = broker
        .admin
        .list_pending(pb::ListPendingRequest {
            stream: "jobs".into(),
            group: "g".into(),
            consumer: "w1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(pending.len(), 3);

    broker
        .broker
        .ack(pb::AckRequest {
            stream: "jobs".into(),
            group: "g".into(),
            ids: vec![first.messages[1].id.clone()],
        })
        .await
        .unwrap();

    // From `0`: this consumer's unacked messages, counted as second deliveries, one page at a time.
    let replay = broker
        .broker
        .fetch(group(&[("jobs", "0")], "w1", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (numbers(&replay), replay.messages[0].delivery_count),
        (vec![0], 2)
    );
    assert_eq!(
        next_of(&replay),
        [("jobs".into(), first.messages[0].id.clone())]
    );
    let mut request = group(&[], "w1", 10);
    request.streams = replay.next;
    let replay = broker.broker.fetch(request).await.unwrap().into_inner();
    assert_eq!(numbers(&replay), [2]);
    // Replay over: next points back at new messages, which a second consumer has not taken.
    let mut request = group(&[], "w1", 10);
    request.streams = replay.next;
    let done = broker.broker.fetch(request).await.unwrap().into_inner();
    assert!(done.messages.is_empty());
    assert_eq!(next_of(&done), [("jobs".into(), ">".into())]);
    let mut request = group(&[], "w1", 10);
    request.streams = done.next;
    assert_eq!(
        numbers(&broker.broker.fetch(request).await.unwrap().into_inner()),
        [3, 4]
    );
}

#[tokio::test]
async fn group_fetch_over_several_streams_and_no_ack() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "x", 0..2).await;
    produce_numbered(&mut broker.broker, "y", 2..4).await;
    let mut request = group(&[("x", ""), ("y", "")], "w", 10);
    request.no_ack = true;
    let got = broker.broker.fetch(request).await.unwrap().into_inner();
    let mut got_numbers = numbers(&got);
    got_numbers.sort();
    assert_eq!(got_numbers, [0, 1, 2, 3]);
    assert!(got.messages.iter().all(|m| m.delivery_count == 0));
    assert_eq!(redis.pending_count("x", "g").await, 0);
    assert_eq!(redis.pending_count("y", "g").await, 0);
}

#[tokio::test]
async fn errors_invalid_input_and_missing_groups() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "s", 0..1).await;
    for request in [
        plain(&[("s", "1-x")], 1, 0),
        plain(&[], 1, 0),
        group(&[("s", "abc")], "w", 1),
    ] {
        let status = broker.broker.fetch(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let mut request = group(&[("s", "")], "w", 1);
    request.create_group = false;
    request.group_start_id = String::new();
    let status = broker.broker.fetch(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    request.create_group = true;
    assert_eq!(
        broker
            .broker
            .fetch(request)
            .await
            .unwrap()
            .into_inner()
            .messages
            .len(),
        0
    );
}

#[tokio::test]
async fn fifty_waiting_fetches_hold_no_connection_and_produce_keeps_answering() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| c.redis_pool_size = 2).await;
    let mut waiting = Vec::new();
    for i in 0..50 {
        let mut client = broker.broker.clone();
        waiting.push(tokio::spawn(async move {
            let mut request = group(&[("many", ">")], &format!("w{i}"), 1);
            request.wait_ms = 20_000;
            client.fetch(request).await
        }));
    }
    eventually("50 fetches waiting", || async {
        broker.stats.waiting_registrations() == 50
    })
    .await;
    let clients = redis.client_count().await;
    assert!(
        clients <= 4,
        "{clients} redis clients for 50 waiting fetches"
    );

    for i in 0..50 {
        let reply =
            tokio::time::timeout(WAIT, broker.broker.produce(numbered("many", i..i + 1))).await;
        assert_eq!(
            reply
                .expect("produce answered")
                .expect("produce ok")
                .into_inner()
                .ids
                .len(),
            1
        );
    }
    // Each message ends one wait; together the 50 fetches got each message exactly once.
    let mut seen = Vec::new();
    for call in waiting {
        let reply = tokio::time::timeout(WAIT, call)
            .await
            .expect("fetch returned")
            .unwrap()
            .unwrap();
        seen.extend(numbers(&reply.into_inner()));
    }
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_fetch_cancelled_mid_wait_leaves_nothing_behind() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| c.redis_pool_size = 1).await;
    let mut client = broker.broker.clone();
    let call = tokio::spawn(async move { client.fetch(plain(&[("c", "$")], 1, 20_000)).await });
    eventually("fetch waiting", || async {
        broker.stats.waiting_registrations() == 1
    })
    .await;
    call.abort();
    eventually("registration released", || async {
        broker.stats.waiting_registrations() == 0
    })
    .await;
    // The single pooled connection is still in step.
    let ids = produce_numbered(&mut broker.broker, "c", 0..3).await;
    let got = broker
        .broker
        .fetch(plain(&[("c", "0")], 10, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.messages
            .iter()
            .map(|m| m.id.clone())
            .collect::<Vec<_>>(),
        ids
    );
}

#[tokio::test]
async fn a_fetched_message_left_unacknowledged_is_redelivered_then_dead_lettered() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |config| {
        config.redelivery_backoff_min = Duration::from_millis(100);
        config.redelivery_backoff_max = Duration::from_millis(200);
    })
    .await;
    let sent = produce_numbered(&mut broker.broker, "jobs", 0..1).await;
    let fetch_as = |consumer: &str| {
        let mut request = group(&[("jobs", ">")], consumer, 10);
        request.ack_deadline_ms = 200;
        request.max_deliveries = Some(2);
        request.wait_ms = 2_000;
        request
    };
    let first = broker
        .broker
        .fetch(fetch_as("a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.messages[0].id, sent[0]);
    assert_eq!(first.messages[0].delivery_count, 1);
    // Nobody acks: after the deadline and backoff a fetch of new messages gets it first.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = broker
        .broker
        .fetch(fetch_as("b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            second.messages[0].id.as_str(),
            second.messages[0].delivery_count
        ),
        (sent[0].as_str(), 2)
    );
    // Delivered twice, the limit: the next expiry sends it to the dead-letter stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = broker
        .broker
        .fetch({
            let mut request = fetch_as("c");
            request.wait_ms = 0;
            request
        })
        .await
        .unwrap()
        .into_inner();
    assert!(third.messages.is_empty(), "{:?}", third.messages);
    let letters = broker
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            dead_letter_stream: "jobs:dlq".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].original_id.as_str(), letters[0].delivery_count),
        (sent[0].as_str(), 2)
    );
    assert!(
        letters[0].reason.contains("ack deadline"),
        "{}",
        letters[0].reason
    );
    assert_eq!(redis.pending_count("jobs", "g").await, 0);
}
