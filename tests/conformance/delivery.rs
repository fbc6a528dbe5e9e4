//! Delivery through the broker's own calls: Subscribe in order, nacks and dead letters,
//! extensions and flow control, topics, ProduceStream's order.

use super::*;

async fn subscribe_tail_and_group_deliver_in_order(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("sub", &["1-0", "2-0"]))
        .await
        .unwrap();
    let mut from_start =
        Subscription::open(&mut env.broker.broker, tail_request(&[("sub", "0")])).await;
    let mut from_now =
        Subscription::open(&mut env.broker.broker, tail_request(&[("sub", "$")])).await;
    let mut member =
        Subscription::open(&mut env.broker.broker, group_request(&["sub"], "g", "m")).await;
    let ids: Vec<String> = from_start.take(2).await.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["1-0", "2-0"]);
    assert_eq!(member.take(2).await.len(), 2);
    env.broker
        .broker
        .produce(produce("sub", &["3-0"]))
        .await
        .unwrap();
    assert_eq!(from_now.next().await.id, "3-0");
    assert_eq!(from_start.next().await.id, "3-0");
    let third = member.next().await;
    assert_eq!((third.id.as_str(), third.delivery_count), ("3-0", 1));
}

async fn nack_dead_letters_and_replay(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("dl", &["1-0"]))
        .await
        .unwrap();
    let mut request = group_request(&["dl"], "g", "m");
    request.max_deliveries = Some(2);
    let mut member = Subscription::open(&mut env.broker.broker, request).await;
    for expected in 1..=2 {
        let m = member.next().await;
        assert_eq!((m.id.as_str(), m.delivery_count), ("1-0", expected));
        let nacked = env
            .broker
            .broker
            .nack(pb::NackRequest {
                stream: "dl".into(),
                group: "g".into(),
                ids: vec![m.id],
                consumer: "m".into(),
                delay_ms: Some(0),
            })
            .await
            .unwrap()
            .into_inner()
            .ids;
        assert_eq!(nacked, ["1-0"]);
    }
    member.expect_quiet(Duration::from_millis(600)).await;
    let letters = env
        .broker
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            dead_letter_stream: default_dlq(backend, "dl"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].stream.as_str(),
            letters[0].original_id.as_str(),
            letters[0].delivery_count
        ),
        ("dl", "1-0", 2)
    );
    assert_eq!(letters[0].fields, fields(&[("n", "0")]));
    let replayed = env
        .broker
        .admin
        .replay_dead_letters(pb::ReplayDeadLettersRequest {
            dead_letter_stream: default_dlq(backend, "dl"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .replayed;
    assert_eq!(replayed.len(), 1);
    let back = member.next().await;
    assert_eq!(
        (back.id.as_str(), back.delivery_count),
        (replayed[0].id.as_str(), 1)
    );
}

/// A group member on `stream` that may hold `max_in_flight` messages, each for `ack_deadline_ms`.
async fn limited_member(
    env: &mut Env,
    stream: &str,
    consumer: &str,
    max_in_flight: u32,
    ack_deadline_ms: u32,
) -> Subscription {
    let mut request = group_request(&[stream], "g", consumer);
    request.max_in_flight = Some(max_in_flight);
    request.ack_deadline_ms = ack_deadline_ms;
    Subscription::open(&mut env.broker.broker, request).await
}

async fn extend_keeps_and_flow_control_limits(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("fc", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    let mut member = limited_member(&mut env, "fc", "m", 2, 300).await;
    let held = member.take(2).await;
    for _ in 0..4 {
        let extended = env
            .broker
            .broker
            .extend_deadline(pb::ExtendDeadlineRequest {
                stream: "fc".into(),
                group: "g".into(),
                consumer: "m".into(),
                ids: held.iter().map(|m| m.id.clone()).collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .ids;
        assert_eq!(extended.len(), 2);
        member.expect_quiet(Duration::from_millis(150)).await;
    }
    env.broker
        .broker
        .ack(pb::AckRequest {
            stream: "fc".into(),
            group: "g".into(),
            ids: vec![held[0].id.clone()],
        })
        .await
        .unwrap();
    assert_eq!(member.next().await.id, "3-0");

    // A member back at its limit (what a crashed broker leaves: a full window that nobody
    // handed back) gets its own pending entries again at once; they are already counted.
    env.broker
        .broker
        .produce(produce("fc2", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    create_group(&mut env, "fc2", "0").await;
    let fetched = env
        .broker
        .broker
        .fetch(fetch("fc2", "f", ">", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.messages.len(), 2);
    let mut back = limited_member(&mut env, "fc2", "f", 2, 60_000).await;
    let replayed = back.take(2).await;
    let ids: Vec<_> = replayed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0"]);
    assert!(
        replayed.iter().all(|m| m.delivery_count == 2),
        "{replayed:?}"
    );
    back.expect_quiet(Duration::from_millis(200)).await;

    // Messages past their deadline no longer count against the limit: a sole member at its
    // limit that never acks gets them again once they expire, instead of waiting forever.
    env.broker
        .broker
        .produce(produce("fc3", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    let mut slow = limited_member(&mut env, "fc3", "slow", 2, 300).await;
    let first: Vec<_> = slow.take(2).await.into_iter().map(|m| m.id).collect();
    assert_eq!(first, ["1-0", "2-0"]);
    // Both come back (3-0 may slip in first, when a read beats the sweep).
    let mut redelivered = std::collections::BTreeSet::new();
    while redelivered.len() < 2 {
        let m = slow.next().await;
        if m.delivery_count >= 2 && m.id != "3-0" {
            redelivered.insert(m.id);
        }
    }
}

async fn topics_route_by_key_and_read_every_partition(backend: Backend) {
    let mut env = start(backend).await;
    let partitions = env
        .broker
        .admin
        .create_topic(pb::CreateTopicRequest {
            topic: "events".into(),
            partitions: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .partitions;
    assert_eq!(partitions.len(), 3);
    let mut member =
        Subscription::open(&mut env.broker.broker, group_request(&["events"], "g", "m")).await;
    for n in 0..6 {
        let mut request = produce("events", &[""]);
        request.partition_key = format!("k{}", n % 2);
        request.messages[0].fields = fields(&[("n", &n.to_string())]);
        env.broker.broker.produce(request).await.unwrap();
    }
    let got = member.take(6).await;
    let stream_of = |n: usize| got.iter().find(|m| number(m) == n).unwrap().stream.clone();
    // Same key, same partition; every partition a stream of the topic.
    assert_eq!(stream_of(0), stream_of(2));
    assert_eq!(stream_of(1), stream_of(5));
    assert!(got.iter().all(|m| partitions.contains(&m.stream)));
    let info = env
        .broker
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            topic: "events".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.partitions.iter().map(|p| p.length).sum::<u64>(), 6);
}

async fn produce_stream_keeps_order_across_streams(backend: Backend) {
    let env = start(backend).await;
    let mut client = env.broker.broker.clone();
    // Requests for three streams, interleaved: on a cluster they sit on different slots and
    // are pipelined per slot, yet every answer comes back in request order.
    let requests: Vec<pb::ProduceRequest> = (0..30)
        .map(|i| {
            let mut request = produce(&format!("ps-{}", i % 3), &[""]);
            request.messages[0].fields = fields(&[("n", &i.to_string())]);
            request
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(30);
    for request in requests {
        tx.send(request).await.unwrap();
    }
    drop(tx);
    let mut answers = client
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        match answer.result {
            Some(pb::produce_stream_response::Result::Produced(p)) => ids.push(p.ids[0].clone()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ids.len(), 30);
    for s in 0..3 {
        let stored = env
            .broker
            .admin
            .clone()
            .query_messages(pb::QueryMessagesRequest {
                stream: format!("ps-{s}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        let numbers: Vec<usize> = stored
            .iter()
            .map(|e| {
                std::str::from_utf8(&e.fields[0].value)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(numbers, (0..30).filter(|i| i % 3 == s).collect::<Vec<_>>());
        // Each answer named the id its request got.
        for (e, n) in stored.iter().zip(&numbers) {
            assert_eq!(e.id, ids[*n]);
        }
    }
}

conformance!(
    subscribe_tail_and_group_deliver_in_order,
    nack_dead_letters_and_replay,
    extend_keeps_and_flow_control_limits,
    topics_route_by_key_and_read_every_partition,
    produce_stream_keeps_order_across_streams,
);
