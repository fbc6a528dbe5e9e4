//! Nacks and dead letters: a nacked message comes back after its delay or backoff; a poison
//! message goes to the dead-letter stream and can be replayed; entries deleted before their
//! ack are counted, never delivered empty.

use super::*;

#[tokio::test]
async fn a_nacked_message_comes_back_after_its_delay_or_backoff_with_its_count() {
    let redis = RedisServer::start();
    let mut broker = quick_broker(&redis).await;
    let mut member = Subscription::open(&mut broker.broker, member("m", 60_000)).await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..1).await;
    let first = member.next().await;
    assert_eq!(
        (first.id.as_str(), first.delivery_count),
        (sent[0].as_str(), 1)
    );

    // Only the holder's messages: a nack naming another consumer changes nothing.
    let other = broker
        .broker
        .nack(nack(sent.clone(), "someone-else", Some(0)))
        .await
        .unwrap();
    assert!(other.into_inner().ids.is_empty());

    // An explicit delay.
    let nacked_at = Instant::now();
    let nacked = broker
        .broker
        .nack(nack(sent.clone(), "m", Some(400)))
        .await
        .unwrap();
    assert_eq!(nacked.into_inner().ids, sent);
    let again = member.next().await;
    assert!(
        nacked_at.elapsed() >= Duration::from_millis(380),
        "{:?}",
        nacked_at.elapsed()
    );
    assert_eq!(
        (again.id.as_str(), again.delivery_count),
        (sent[0].as_str(), 2)
    );

    // No delay given: the backoff for 2 deliveries, 2 × 300 ms.
    let nacked_at = Instant::now();
    broker
        .broker
        .nack(nack(sent.clone(), "m", None))
        .await
        .unwrap();
    let third = member.next().await;
    assert!(
        nacked_at.elapsed() >= Duration::from_millis(580),
        "{:?}",
        nacked_at.elapsed()
    );
    assert_eq!(third.delivery_count, 3);
    broker.broker.ack(ack_one(&third.id)).await.unwrap();
    member.expect_quiet(Duration::from_millis(800)).await;
    assert_eq!(redis.pending_count("work", "g").await, 0);
    println!("sent 1, delivered 3 (2 nacks), duplicates 0 unasked, lost 0");

    // Bad requests say what is wrong.
    let status = broker
        .broker
        .nack(nack(sent.clone(), "m", Some(3_600_001)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("delay_ms"), "{status:?}");
    let mut missing = nack(sent.clone(), "m", None);
    missing.group = "no-such-group".into();
    let status = broker.broker.nack(missing).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_stream_and_can_be_replayed() {
    let redis = RedisServer::start();
    let mut broker = quick_broker(&redis).await;
    let mut request = member("m", 60_000);
    request.max_deliveries = Some(3);
    let mut consumer = Subscription::open(&mut broker.broker, request).await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..10).await;
    let poison = sent[3].clone();

    // The consumer acks everything but the poison message, which it always nacks.
    let mut poison_deliveries = Vec::new();
    let mut acked = HashSet::new();
    while acked.len() < 9 || poison_deliveries.len() < 3 {
        let m = consumer.next().await;
        if m.id == poison {
            poison_deliveries.push(m.delivery_count);
            broker
                .broker
                .nack(nack(vec![m.id.clone()], "m", Some(0)))
                .await
                .unwrap();
        } else {
            broker.broker.ack(ack_one(&m.id)).await.unwrap();
            acked.insert(m.id);
        }
    }
    assert_eq!(poison_deliveries, [1, 2, 3]);
    // Delivered three times, then dead: never a fourth time; the rest flowed past it.
    produce_numbered(&mut broker.broker, "work", 10..11).await;
    let after = consumer.next().await;
    assert_eq!(number(&after), 10);
    broker.broker.ack(ack_one(&after.id)).await.unwrap();
    consumer.expect_quiet(Duration::from_millis(800)).await;
    assert_eq!(redis.pending_count("work", "g").await, 0);
    assert_eq!(
        broker
            .stats
            .redelivery()
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    let letters = broker
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            dead_letter_stream: "work:dlq".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(
        (
            letter.stream.as_str(),
            letter.original_id.as_str(),
            letter.group.as_str(),
            letter.delivery_count
        ),
        ("work", poison.as_str(), "g", 3)
    );
    assert!(
        letter.reason.contains("max_deliveries 3"),
        "{}",
        letter.reason
    );
    assert_eq!(letter.fields, fields(&[("n", "3")]));

    // Replay puts it back as a new message, which the group delivers afresh.
    let replay = pb::ReplayDeadLettersRequest {
        dead_letter_stream: "work:dlq".into(),
        ids: vec![letter.id.clone()],
        ..Default::default()
    };
    let replayed = broker
        .admin
        .replay_dead_letters(replay.clone())
        .await
        .unwrap()
        .into_inner()
        .replayed;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].stream, "work");
    let back = consumer.next().await;
    assert_eq!(
        (back.id.as_str(), number(&back), back.delivery_count),
        (replayed[0].id.as_str(), 3, 1)
    );
    let dlq_len: u64 = redis.cmd(&["XLEN", "work:dlq"]).await;
    assert_eq!(dlq_len, 0);
    // Replaying it again finds nothing: it is never in both places.
    let twice = broker
        .admin
        .replay_dead_letters(replay)
        .await
        .unwrap()
        .into_inner()
        .replayed;
    assert!(twice.is_empty());
    println!(
        "sent 11, delivered {}, dead-lettered 1, replayed 1, lost 0",
        10 + 3 + 1
    );
}

#[tokio::test]
async fn pending_messages_deleted_before_ack_are_counted_never_delivered_empty() {
    let redis = RedisServer::start();
    let mut broker = quick_broker(&redis).await;
    let mut member = Subscription::open(&mut broker.broker, member("m", 300)).await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..3).await;
    let first = member.take(3).await;
    assert!(first.iter().all(|m| m.delivery_count == 1));
    let _: u64 = redis.cmd(&["XDEL", "work", &sent[1]]).await;

    let again = member.take(2).await;
    let numbers: Vec<_> = again.iter().map(number).collect();
    assert_eq!(numbers, [0, 2]);
    assert!(
        again
            .iter()
            .all(|m| m.delivery_count == 2 && !m.fields.is_empty())
    );
    let lost = broker
        .stats
        .redelivery()
        .lost_before_ack
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(lost, 1);
    // Redis forgot it too: only the two redelivered ones are pending.
    assert_eq!(redis.pending_count("work", "g").await, 2);
}
