//! Idle consumers are deleted after handing back what they held.

use super::*;

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
