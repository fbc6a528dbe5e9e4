//! Deadlines: what a member took and did not acknowledge comes back after its deadline, to it
//! or to another member; an extension keeps it.

use super::*;

#[tokio::test]
async fn a_subscriber_dropped_mid_batch_has_everything_it_held_redelivered_to_another() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..10).await;

    let mut first = Subscription::open(&mut broker.broker, member("first", 60_000)).await;
    let held = first.take(10).await;
    assert!(held.iter().all(|m| m.delivery_count == 1));
    let mut second = Subscription::open(&mut broker.broker, member("second", 60_000)).await;
    second.expect_quiet(Duration::from_millis(200)).await;

    // Gone without a single ack. A one-minute deadline: only the hand-back can make this quick.
    drop(first);
    let redelivered = second.take(10).await;
    let ids: HashSet<_> = redelivered.iter().map(|m| m.id.clone()).collect();
    let expected: HashSet<_> = sent.iter().cloned().collect();
    assert!(
        redelivered.iter().all(|m| m.delivery_count == 2),
        "{redelivered:?}"
    );
    broker
        .broker
        .ack(pb::AckRequest {
            stream: "work".into(),
            group: "g".into(),
            ids: ids.iter().cloned().collect(),
        })
        .await
        .unwrap();
    let lost = expected.difference(&ids).count();
    println!(
        "sent 10, acknowledged by Produce 10, delivered {}, duplicates {}, lost {lost}",
        held.len() + redelivered.len(),
        held.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(redis.pending_count("work", "g").await, 0);
}

#[tokio::test]
async fn an_unacknowledged_message_comes_back_after_the_deadline() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut slow = Subscription::open(&mut broker.broker, member("slow", 500)).await;
    let mut other = Subscription::open(&mut broker.broker, member("other", 500)).await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..1).await;

    // Whoever got it first does not ack, and stays connected.
    let first = tokio::select! {
        m = slow.next() => m,
        m = other.next() => m,
    };
    assert_eq!(
        (first.id.as_str(), first.delivery_count),
        (sent[0].as_str(), 1)
    );
    let again = tokio::select! {
        m = slow.next() => m,
        m = other.next() => m,
    };
    assert_eq!(
        (again.id.as_str(), again.delivery_count),
        (sent[0].as_str(), 2)
    );
    broker
        .broker
        .ack(pb::AckRequest {
            stream: "work".into(),
            group: "g".into(),
            ids: vec![again.id.clone()],
        })
        .await
        .unwrap();
    println!("sent 1, delivered 2, duplicates 1, lost 0");
    // Acked: nothing more comes.
    slow.expect_quiet(Duration::from_millis(1200)).await;
    assert_eq!(redis.pending_count("work", "g").await, 0);
}

#[tokio::test]
async fn extending_the_deadline_keeps_a_message_from_being_redelivered() {
    let redis = RedisServer::start();
    let mut broker = quick_broker(&redis).await;
    let mut worker = Subscription::open(&mut broker.broker, member("worker", 400)).await;
    let mut other = Subscription::open(&mut broker.broker, member("other", 400)).await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..1).await;
    let (held, holder, mut idle) = tokio::select! {
        m = worker.next() => (m, "worker", other),
        m = other.next() => (m, "other", worker),
    };
    let extend = |consumer: &str| pb::ExtendDeadlineRequest {
        stream: "work".into(),
        group: "g".into(),
        consumer: consumer.into(),
        ids: sent.clone(),
    };
    // Long past the 400 ms deadline (and its backoff), kept alive every 200 ms.
    for _ in 0..8 {
        let extended = broker.broker.extend_deadline(extend(holder)).await.unwrap();
        assert_eq!(extended.into_inner().ids, sent);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    idle.expect_quiet(Duration::from_millis(10)).await;
    // Someone else cannot extend it, and the consumer is required.
    let stranger = if holder == "worker" {
        "other"
    } else {
        "worker"
    };
    let refused = broker
        .broker
        .extend_deadline(extend(stranger))
        .await
        .unwrap();
    assert!(refused.into_inner().ids.is_empty());
    let status = broker.broker.extend_deadline(extend("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Once the extensions stop, the deadline applies again: it comes back (to either member;
    // the holder's copy is not read here, so it may bounce there first).
    let _ = holder;
    let again = idle.next().await;
    assert_eq!(again.id, held.id);
    assert!(again.delivery_count >= 2, "{again:?}");
}
