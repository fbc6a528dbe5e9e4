//! Flow control: a member at its in-flight limit gets more only as acks make room (also back
//! after a crash), and buffered messages keep their lease.

use super::*;

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
