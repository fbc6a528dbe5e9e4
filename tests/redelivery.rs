//! At-least-once: what a subscriber took and did not acknowledge comes back, to it or to another
//! member of its group. Each test prints sent / delivered / duplicates / lost and asserts lost == 0.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use streamgate::grpc::pb;
use support::*;

fn member(consumer: &str, ack_deadline_ms: u32) -> pb::SubscribeRequest {
    let mut request = group_request(&["work"], "g", consumer);
    request.ack_deadline_ms = ack_deadline_ms;
    request
}

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

/// A broker whose redelivery backoff is short enough for tests.
async fn quick_broker(redis: &RedisServer) -> TestBroker {
    TestBroker::start_with(redis, |config| {
        config.redelivery_backoff_min = Duration::from_millis(300);
        config.redelivery_backoff_max = Duration::from_secs(1);
    })
    .await
}

fn nack(ids: Vec<String>, consumer: &str, delay_ms: Option<u32>) -> pb::NackRequest {
    pb::NackRequest {
        stream: "work".into(),
        group: "g".into(),
        ids,
        consumer: consumer.into(),
        delay_ms,
    }
}

fn ack_one(id: &str) -> pb::AckRequest {
    pb::AckRequest {
        stream: "work".into(),
        group: "g".into(),
        ids: vec![id.to_owned()],
    }
}

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

#[tokio::test]
async fn a_subscriber_at_its_in_flight_limit_gets_more_only_as_acks_make_room() {
    let redis = RedisServer::start();
    let mut broker = quick_broker(&redis).await;
    let mut request = member("m", 60_000);
    request.max_in_flight = Some(5);
    let mut member = Subscription::open(&mut broker.broker, request).await;
    produce_numbered(&mut broker.broker, "work", 0..20).await;

    let first = member.take(5).await;
    member.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(redis.pending_count("work", "g").await, 5);

    // Acks through this broker make room at once.
    for m in &first[..2] {
        broker.broker.ack(ack_one(&m.id)).await.unwrap();
    }
    let more = member.take(2).await;
    member.expect_quiet(Duration::from_millis(300)).await;

    // Acks through anyone else (another broker instance, a plain Redis client) count too.
    let mut xack = vec!["XACK", "work", "g"];
    xack.extend(first[2..].iter().map(|m| m.id.as_str()));
    let _: u64 = redis.cmd(&xack).await;
    let rest = member.take(3).await;
    member.expect_quiet(Duration::from_millis(300)).await;
    let numbers: Vec<_> = first.iter().chain(&more).chain(&rest).map(number).collect();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    assert_eq!(redis.pending_count("work", "g").await, 5);
}

/// What a broker that crashed with a member's window full leaves behind: the member's own
/// pending entries, `max_in_flight` of them, with nobody to hand them back. The member coming
/// back under its name must get them again at once (they are already counted in its window), not
/// wait at its limit for acks that can never come. Every member of a group in that state stalled
/// the whole group until this was fixed (fault test 2, under CI load).
#[tokio::test]
async fn a_member_back_at_its_in_flight_limit_after_a_crash_gets_its_pending_entries_again() {
    let redis = RedisServer::start();
    let mut broker = quick_broker(&redis).await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..8).await;
    let _: () = redis.cmd(&["XGROUP", "CREATE", "work", "g", "0"]).await;
    // The crashed broker's last read for "m": a full window, never sent on.
    let _: redis::Value = redis
        .cmd(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "m",
            "COUNT",
            "5",
            "STREAMS",
            "work",
            ">",
        ])
        .await;

    // A one-minute deadline: only the replay can bring them back within the test.
    let mut request = member("m", 60_000);
    request.max_in_flight = Some(5);
    let mut member = Subscription::open(&mut broker.broker, request).await;
    let replayed = member.take(5).await;
    assert_eq!(
        replayed.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        sent[..5]
    );
    assert!(
        replayed.iter().all(|m| m.delivery_count == 2),
        "{replayed:?}"
    );
    // Still at its limit: nothing new until acks make room.
    member.expect_quiet(Duration::from_millis(300)).await;
    for m in &replayed {
        broker.broker.ack(ack_one(&m.id)).await.unwrap();
    }
    let rest = member.take(3).await;
    assert_eq!(
        rest.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        sent[5..]
    );
    for m in &rest {
        broker.broker.ack(ack_one(&m.id)).await.unwrap();
    }
    assert_eq!(redis.pending_count("work", "g").await, 0);
}

#[tokio::test]
async fn idle_consumers_are_deleted_after_handing_back_what_they_held() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |config| {
        config.consumer_idle_timeout = Duration::from_millis(800);
    })
    .await;
    let sent = produce_numbered(&mut broker.broker, "work", 0..2).await;
    // A consumer that read two messages and vanished, as a crashed client of any broker would.
    let _: () = redis.cmd(&["XGROUP", "CREATE", "work", "g", "0"]).await;
    let _: redis::Value = redis
        .cmd(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "ghost",
            "COUNT",
            "2",
            "STREAMS",
            "work",
            ">",
        ])
        .await;

    // A live member with a one-minute deadline: only the clean-up can bring them back soon.
    let mut live = Subscription::open(&mut broker.broker, member("live", 60_000)).await;
    let got = live.take(2).await;
    assert_eq!(got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), sent);
    assert!(got.iter().all(|m| m.delivery_count == 2));
    let consumers: Vec<Vec<redis::Value>> = redis.cmd(&["XINFO", "CONSUMERS", "work", "g"]).await;
    let names: Vec<String> = consumers
        .iter()
        .map(|c| match &c[1] {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(!names.contains(&"ghost".to_owned()), "{names:?}");
    assert!(
        broker
            .stats
            .redelivery()
            .consumers_deleted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // A generated consumer name is deleted as soon as its subscription ends.
    let anonymous = Subscription::open(&mut broker.broker, member("", 60_000)).await;
    let generated = anonymous.consumer.clone();
    drop(anonymous);
    eventually("the generated consumer is deleted", || async {
        let consumers: Vec<Vec<redis::Value>> =
            redis.cmd(&["XINFO", "CONSUMERS", "work", "g"]).await;
        !format!("{consumers:?}").contains(&generated)
    })
    .await;
}

#[tokio::test]
async fn messages_waiting_in_the_send_buffer_keep_their_lease() {
    let redis = RedisServer::start();
    let mut broker = quick_broker(&redis).await;
    // A member that takes one message and then stops reading. Eight messages of 900 KB: the
    // first few fill the transport (the client's HTTP/2 window is 2 MB), the last ones wait in
    // the broker's own buffer (one in the channel, one in the pump), ageing toward a 600 ms
    // deadline while nobody works on them.
    let mut request = member("slow", 600);
    request.batch_size = 1;
    let mut slow = Subscription::open(&mut broker.broker, request).await;
    let big = "x".repeat(900_000);
    for i in 0..8 {
        let request = pb::ProduceRequest {
            stream: "work".into(),
            messages: vec![pb::OutgoingMessage {
                id: String::new(),
                fields: fields(&[("n", &i.to_string()), ("big", &big)]),
                ..Default::default()
            }],
            ..Default::default()
        };
        broker.broker.produce(request).await.unwrap();
    }
    assert_eq!(number(&slow.next().await), 0);

    // Another member takes (and acks) whatever expires, for five deadlines. What left the
    // broker for the network can expire; what is still in its buffer must not: its lease is
    // renewed every third of a deadline.
    let mut other = Subscription::open(&mut broker.broker, member("other", 600)).await;
    let mut taken = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(Some(item))) =
        tokio::time::timeout_at(until.into(), other.stream.message()).await
    {
        if let Some(pb::subscribe_response::Event::Message(m)) = item.event {
            broker.broker.ack(ack_one(&m.id)).await.unwrap();
            taken.push(number(&m));
        }
    }
    println!("taken by the other member while the slow one held the rest: {taken:?}");
    // At least the two in the broker's buffer (channel and pump) kept their lease; without
    // renewal all eight would have expired by now.
    let held: Vec<usize> = (0..8).filter(|n| !taken.contains(n)).collect();
    assert!(
        held.len() >= 2,
        "messages in the broker's buffer expired: {taken:?}"
    );

    // The slow member leaves: what it still held goes to the other at once.
    drop(slow);
    while !held.iter().all(|n| taken.contains(n)) {
        let m = other.next().await;
        broker.broker.ack(ack_one(&m.id)).await.unwrap();
        taken.push(number(&m));
    }
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken, (0..8).collect::<Vec<_>>());
}

/// The flow-control count on both stores, straight through the `Store` trait: only entries whose
/// lease runs count, through a pending list longer than one page of the Redis script's walk.
#[tokio::test]
async fn flow_control_counts_only_live_leases_through_a_long_pending_list() {
    use streamgate::model::{Append, ClaimOptions, Field, NewEntryId, NewMessage, StartId};
    use streamgate::store::{GroupCursor, MemoryStore, RedisStore, RedisStoreConfig, Store};

    async fn check(store: impl Store) {
        let messages = (0..1500)
            .map(|_| NewMessage {
                id: NewEntryId::Auto,
                fields: vec![Field {
                    name: "n".into(),
                    value: bytes::Bytes::from_static(b"x"),
                }],
                ..Default::default()
            })
            .collect();
        let appended = store
            .append(&[Append {
                stream: "long".into(),
                messages,
                trim: None,
                require_existing_stream: false,
                ..Default::default()
            }])
            .await
            .unwrap();
        let ids = appended.into_iter().next().unwrap().unwrap();
        store
            .create_group("long", "g", StartId::After(Default::default()), false, None)
            .await
            .unwrap();
        let cursor = [("long".to_owned(), GroupCursor::New)];
        let read = store
            .read_group("g", "m", &cursor, 1500, false)
            .await
            .unwrap();
        assert_eq!(read[0].1.len(), 1500);
        // The first 700 delivered two minutes ago: past a one-minute deadline.
        let claim = ClaimOptions {
            min_idle_ms: 0,
            ids: ids[..700].to_vec(),
            idle_ms: Some(120_000),
            time_ms: None,
            retry_count: None,
            force: false,
            just_id: true,
        };
        store.claim("long", "g", "m", &claim).await.unwrap();
        let store = &store;
        let count = |lease_ms, limit| async move {
            store
                .leases("long", "g", "m", lease_ms, limit)
                .await
                .map(|held| held.len())
        };
        assert_eq!(count(60_000, 5000).await.unwrap(), 800);
        assert_eq!(count(60_000, 500).await.unwrap(), 500);
        assert_eq!(count(600_000, 5000).await.unwrap(), 1500);
        assert_eq!(count(600_000, 1000).await.unwrap(), 1000);
        assert_eq!(
            count(60_000, 5000).await.unwrap(),
            800,
            "counting changes nothing"
        );
        assert_eq!(
            store
                .leases("long", "g", "nobody", 60_000, 10)
                .await
                .unwrap()
                .len(),
            0
        );
    }

    let redis = RedisServer::start();
    let store = RedisStore::new(RedisStoreConfig {
        url: redis.url(),
        pool_size: 2,
        response_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        watch_block: Duration::from_secs(1),
        ca_pem: None,
        cluster_seeds: Vec::new(),
        sentinel: None,
    })
    .unwrap();
    check(store).await;
    check(MemoryStore::new()).await;
}
