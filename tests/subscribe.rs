//! Subscribe in both modes, and Ack: what a consumer sees, and what stays pending.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use support::*;
use tonic::Code;

fn ack(stream: &str, group: &str, ids: Vec<String>) -> pb::AckRequest {
    pb::AckRequest {
        stream: stream.into(),
        group: group.into(),
        ids,
    }
}

#[tokio::test]
async fn group_mode_delivers_then_ack_clears_pending() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "jobs", 0..10).await;

    // An empty consumer name is generated and reported first.
    let mut sub =
        Subscription::open(&mut broker.broker, group_request(&["jobs"], "workers", "")).await;
    assert!(sub.consumer.starts_with("sg-"), "{}", sub.consumer);
    let got = sub.take(10).await;
    assert_eq!(
        got.iter().map(number).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert!(
        got.iter()
            .all(|m| m.stream == "jobs" && m.delivery_count == 1)
    );

    // Everything delivered is pending for that consumer until acked.
    let pending: Vec<(String, String, u64, u64)> = redis
        .cmd(&["XPENDING", "jobs", "workers", "-", "+", "100"])
        .await;
    assert_eq!(pending.len(), 10);
    assert!(pending.iter().all(|p| p.1 == sub.consumer));

    let ids: Vec<String> = got.iter().take(6).map(|m| m.id.clone()).collect();
    let acked = broker
        .broker
        .ack(ack("jobs", "workers", ids.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acknowledged, 6);
    // Acking again counts nothing: they are no longer pending.
    let again = broker
        .broker
        .ack(ack("jobs", "workers", ids))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.acknowledged, 0);
    assert_eq!(redis.pending_count("jobs", "workers").await, 4);

    // New messages keep flowing to the live subscription.
    produce_numbered(&mut broker.broker, "jobs", 10..13).await;
    assert_eq!(
        sub.take(3).await.iter().map(number).collect::<Vec<_>>(),
        [10, 11, 12]
    );
}

#[tokio::test]
async fn a_reconnecting_consumer_gets_back_what_it_did_not_ack() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "jobs", 0..5).await;

    let mut first = Subscription::open(
        &mut broker.broker,
        group_request(&["jobs"], "g", "worker-1"),
    )
    .await;
    let got = first.take(5).await;
    broker
        .broker
        .ack(ack("jobs", "g", vec![got[0].id.clone(), got[2].id.clone()]))
        .await
        .unwrap();
    drop(first);

    // Meanwhile one unacked entry is deleted: it must be skipped, not delivered empty.
    let _: u64 = redis.cmd(&["XDEL", "jobs", &got[3].id]).await;
    produce_numbered(&mut broker.broker, "jobs", 5..6).await;

    let mut again = Subscription::open(
        &mut broker.broker,
        group_request(&["jobs"], "g", "worker-1"),
    )
    .await;
    assert_eq!(again.consumer, "worker-1");
    let replayed = again.take(2).await;
    assert_eq!(replayed.iter().map(number).collect::<Vec<_>>(), [1, 4]);
    // Delivered before, delivered again: the count says so.
    assert!(
        replayed.iter().all(|m| m.delivery_count == 2),
        "{replayed:?}"
    );
    assert!(replayed.iter().all(|m| !m.fields.is_empty()));
    // Then the new one.
    let fresh = again.next().await;
    assert_eq!((number(&fresh), fresh.delivery_count), (5, 1));
    again.expect_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn consumers_of_one_group_share_the_work() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut a = Subscription::open(&mut broker.broker, group_request(&["work"], "g", "a")).await;
    let mut b = Subscription::open(&mut broker.broker, group_request(&["work"], "g", "b")).await;
    produce_numbered(&mut broker.broker, "work", 0..40).await;

    let mut seen = Vec::new();
    while seen.len() < 40 {
        tokio::select! {
            m = a.next() => seen.push(number(&m)),
            m = b.next() => seen.push(number(&m)),
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..40).collect::<Vec<_>>(),
        "each message exactly once across the group"
    );
}

#[tokio::test]
async fn a_group_over_several_streams_and_no_ack_mode() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut request = group_request(&["s1", "s2"], "g", "c");
    request.no_ack = true;
    let mut sub = Subscription::open(&mut broker.broker, request).await;
    produce_numbered(&mut broker.broker, "s1", 0..3).await;
    produce_numbered(&mut broker.broker, "s2", 3..6).await;
    let got = sub.take(6).await;
    let mut by_stream: Vec<_> = got.iter().map(|m| (m.stream.clone(), number(m))).collect();
    by_stream.sort();
    assert_eq!(
        by_stream,
        [
            ("s1".into(), 0),
            ("s1".into(), 1),
            ("s1".into(), 2),
            ("s2".into(), 3),
            ("s2".into(), 4),
            ("s2".into(), 5)
        ]
    );
    assert!(got.iter().all(|m| m.delivery_count == 0));
    // NOACK: nothing pending.
    assert_eq!(redis.pending_count("s1", "g").await, 0);
}

#[tokio::test]
async fn a_missing_group_is_not_found_unless_create_group() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "s", 0..1).await;
    let mut request = group_request(&["s"], "nope", "c");
    request.create_group = false;
    request.group_start_id = String::new();
    let mut stream = broker.broker.subscribe(request).await.unwrap().into_inner();
    let status = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("`nope`"), "{}", status.message());

    // create_group from `$` skips what is already there.
    let mut request = group_request(&["s"], "late", "c");
    request.group_start_id = "$".into();
    let mut sub = Subscription::open(&mut broker.broker, request).await;
    sub.expect_quiet(Duration::from_millis(300)).await;
    produce_numbered(&mut broker.broker, "s", 1..2).await;
    assert_eq!(number(&sub.next().await), 1);
}

#[tokio::test]
async fn tail_mode_fans_out_and_resumes_by_id() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let old = produce_numbered(&mut broker.broker, "feed", 0..3).await;

    let mut everything =
        Subscription::open(&mut broker.broker, tail_request(&[("feed", "0")])).await;
    let mut only_new = Subscription::open(&mut broker.broker, tail_request(&[("feed", "$")])).await;
    let mut resumed =
        Subscription::open(&mut broker.broker, tail_request(&[("feed", &old[1])])).await;
    assert_eq!(everything.consumer, "");

    produce_numbered(&mut broker.broker, "feed", 3..5).await;
    assert_eq!(
        everything
            .take(5)
            .await
            .iter()
            .map(number)
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(
        only_new
            .take(2)
            .await
            .iter()
            .map(number)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(
        resumed.take(3).await.iter().map(number).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert!(everything.take(0).await.is_empty());
    only_new.expect_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn writes_from_outside_the_broker_wake_subscribers() {
    let redis = RedisServer::start();
    // A long watcher block shows the wake-up does not wait for its timeout.
    let mut broker = TestBroker::start_with(&redis, |c| {
        c.watch_block = std::time::Duration::from_secs(30)
    })
    .await;
    let mut tail = Subscription::open(&mut broker.broker, tail_request(&[("ext", "$")])).await;
    let mut group = Subscription::open(&mut broker.broker, group_request(&["ext"], "g", "c")).await;
    // Give the watcher a moment to include the stream, then write with plain redis.
    eventually("subscriptions registered", || async {
        broker.stats.waiting_registrations() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let _: String = redis.cmd(&["XADD", "ext", "*", "n", "7"]).await;
    assert_eq!(number(&tail.next().await), 7);
    assert_eq!(number(&group.next().await), 7);
    // Woken by the watcher, not by the idle re-check (10s) or the watcher's block (30s).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_watcher_re_reads_no_stream_for_appends_this_broker_made() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut group = Subscription::open(&mut broker.broker, group_request(&["own"], "g", "c")).await;
    eventually("subscription registered", || async {
        broker.stats.waiting_registrations() == 1
    })
    .await;
    // The watcher reads the stream's top once when it starts watching it.
    eventually("the watcher watches the stream", || async {
        calls_of(&redis, "xrevrange").await >= 1
    })
    .await;
    let re_reads = calls_of(&redis, "xrevrange").await;
    // Each append ends the watcher's blocked read; the append woke the reader already, so the
    // watcher only moves past it.
    for n in 0..20 {
        produce_numbered(&mut broker.broker, "own", n..n + 1).await;
        assert_eq!(number(&group.next().await), n);
    }
    assert_eq!(
        calls_of(&redis, "xrevrange").await,
        re_reads,
        "the watcher re-read the stream after the broker's own appends"
    );
    // A write from outside is still news, and still wakes the reader.
    let _: String = redis.cmd(&["XADD", "own", "*", "n", "99"]).await;
    assert_eq!(number(&group.next().await), 99);
    assert_eq!(calls_of(&redis, "xrevrange").await, re_reads + 1);
}

#[tokio::test]
async fn idle_for_longer_than_the_redis_timeout_and_still_delivers() {
    // redis-rs 1.x cuts replies after 500 ms by default, BLOCK included. Our subscriptions never
    // block on a pooled connection, and the watcher's connection has its own deadline.
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| {
        c.redis_timeout = Duration::from_millis(300);
        c.watch_block = Duration::from_millis(1500);
    })
    .await;
    let mut sub = Subscription::open(&mut broker.broker, group_request(&["quiet"], "g", "c")).await;
    sub.expect_quiet(Duration::from_secs(4)).await;
    let _: String = redis.cmd(&["XADD", "quiet", "*", "n", "1"]).await;
    assert_eq!(number(&sub.next().await), 1);
    produce_numbered(&mut broker.broker, "quiet", 2..3).await;
    assert_eq!(number(&sub.next().await), 2);
}

#[tokio::test]
async fn ack_to_a_missing_group_is_not_found() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let ids = produce_numbered(&mut broker.broker, "s", 0..1).await;
    let status = broker.broker.ack(ack("s", "typo", ids)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("`typo`"));
}

/// Calls of `command` Redis has served so far (INFO commandstats).
async fn calls_of(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]).await;
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

/// XREADGROUP calls Redis has served so far.
async fn xreadgroup_calls(redis: &RedisServer) -> u64 {
    calls_of(redis, "xreadgroup").await
}

#[tokio::test]
async fn idle_members_share_one_redelivery_sweep_and_read_nothing_meanwhile() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |config| {
        config.redelivery_backoff_min = Duration::from_millis(100);
    })
    .await;
    let mut members = Vec::new();
    for i in 0..20 {
        members.push(
            Subscription::open(
                &mut broker.broker,
                group_request(&["quiet"], "g", &format!("m{i}")),
            )
            .await,
        );
    }
    eventually("all members waiting", || async {
        broker.stats.waiting_registrations() == 20
    })
    .await;
    // A member registers before its first read: on a busy machine the last first reads land
    // after that. Start counting once the reads have stopped.
    let mut settled = xreadgroup_calls(&redis).await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = xreadgroup_calls(&redis).await;
        if now == settled {
            break;
        }
        settled = now;
    }
    let (reads, sweeps) = (
        xreadgroup_calls(&redis).await,
        calls_of(&redis, "evalsha").await,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads = xreadgroup_calls(&redis).await - reads;
    let sweeps = calls_of(&redis, "evalsha").await - sweeps;
    println!("20 idle members, 2 s, sweeps every ~100 ms: {sweeps} sweeps, {reads} reads");
    // One sweep per interval for the whole group (about 20, each two scripts: the sweep lease
    // and the sweep), not one per member (about 400 sweeps); and no reads: nothing announced
    // new entries (the idle recheck is 10 s).
    assert!((5..=60).contains(&sweeps), "{sweeps} script calls");
    assert_eq!(reads, 0);
}

#[tokio::test]
async fn one_message_wakes_one_idle_group_member_not_all_of_them() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut members = Vec::new();
    for i in 0..20 {
        members.push(
            Subscription::open(
                &mut broker.broker,
                group_request(&["herd"], "g", &format!("m{i}")),
            )
            .await,
        );
    }
    eventually("all members waiting", || async {
        broker.stats.waiting_registrations() == 20
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let before = xreadgroup_calls(&redis).await;
    for i in 0..20 {
        produce_numbered(&mut broker.broker, "herd", i..i + 1).await;
        // Wait until some member got it, so that every message meets an idle group.
        let mut got = None;
        while got.is_none() {
            for member in &mut members {
                let item =
                    tokio::time::timeout(Duration::from_millis(5), member.stream.message()).await;
                if let Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Message(m)),
                }))) = item
                {
                    got = Some(number(&m));
                }
            }
        }
        assert_eq!(got, Some(i));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reads = xreadgroup_calls(&redis).await - before;
    // Waking everybody would cost 20 reads a message (400); one member and a pass-on, a few.
    println!("{reads} XREADGROUP calls for 20 messages to a group of 20 idle members");
    assert!(
        reads <= 100,
        "{reads} reads for 20 messages: every idle member was woken"
    );
}

#[tokio::test]
async fn a_trickle_costs_one_group_read_per_message() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut member =
        Subscription::open(&mut broker.broker, group_request(&["trickle"], "g", "c")).await;
    member.expect_quiet(Duration::from_millis(200)).await;
    let before = xreadgroup_calls(&redis).await;
    for n in 0..20 {
        produce_numbered(&mut broker.broker, "trickle", n..n + 1).await;
        assert_eq!(number(&member.next().await), n);
    }
    member.expect_quiet(Duration::from_millis(200)).await;
    let reads = xreadgroup_calls(&redis).await - before;
    println!("{reads} XREADGROUP calls for 20 messages, one at a time");
    // The read that found a message came back short, so the member waited for the next one
    // instead of reading again at once (which found nothing: two reads a message).
    assert!(reads <= 22, "{reads} group reads for 20 messages");
}
