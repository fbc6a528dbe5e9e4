//! What happens around the calls: clients leaving, more subscribers than connections, cancelled
//! reads, health following Redis, and graceful shutdown.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::server::HEALTH_SERVICE_NAMES;
use support::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

#[tokio::test]
async fn a_client_that_leaves_stops_its_pump_and_holds_no_redis_connection() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| c.redis_pool_size = 2).await;
    produce_numbered(&mut broker.broker, "s", 0..1).await;
    let mut subs = Vec::new();
    for i in 0..20 {
        let request = if i % 2 == 0 {
            group_request(&["s"], "g", &format!("c{i}"))
        } else {
            tail_request(&[("s", "$")])
        };
        subs.push(Subscription::open(&mut broker.broker, request).await);
    }
    eventually("20 pumps running", || async {
        broker.stats.open_subscriptions() == 20
    })
    .await;
    // 20 open subscriptions, yet at most the pool (2), the watcher (1) and this probe (1).
    let clients = redis.client_count().await;
    assert!(clients <= 4, "{clients} redis clients for 20 subscriptions");

    drop(subs);
    eventually("pumps stopped", || async {
        broker.stats.open_subscriptions() == 0
    })
    .await;
    eventually("wake-up registrations released", || async {
        broker.stats.waiting_registrations() == 0
    })
    .await;

    // Nobody reads for the group any more: a new message stays undelivered.
    produce_numbered(&mut broker.broker, "s", 1..2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let groups = broker
        .admin
        .list_groups(pb::ListGroupsRequest { stream: "s".into() })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(groups[0].lag, Some(1), "{groups:?}");
}

#[tokio::test]
async fn more_subscribers_than_pool_connections_and_produce_still_answers() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| c.redis_pool_size = 2).await;
    let mut subs = Vec::new();
    for i in 0..50 {
        subs.push(
            Subscription::open(
                &mut broker.broker,
                group_request(&["busy"], "g", &format!("c{i}")),
            )
            .await,
        );
    }
    // All 50 are idle and waiting; every Produce and Admin call still gets through.
    let mut calls = Vec::new();
    for i in 0..100 {
        let mut client = broker.broker.clone();
        calls.push(tokio::spawn(async move {
            client.produce(numbered("busy", i..i + 1)).await
        }));
    }
    for call in calls {
        let ids = tokio::time::timeout(WAIT, call)
            .await
            .expect("produce answered")
            .unwrap()
            .expect("produce ok");
        assert_eq!(ids.into_inner().ids.len(), 1);
    }
    broker
        .admin
        .get_stream_info(pb::GetStreamInfoRequest {
            stream: "busy".into(),
        })
        .await
        .unwrap();

    // And the 100 messages are spread over the 50 subscribers, each delivered once.
    let mut seen = Vec::new();
    for sub in &mut subs {
        while let Ok(Ok(Some(item))) =
            tokio::time::timeout(Duration::from_millis(100), sub.stream.message()).await
        {
            if let Some(pb::subscribe_response::Event::Message(m)) = item.event {
                seen.push(number(&m));
            }
        }
    }
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn cancelled_reads_leave_no_connection_out_of_step() {
    // One pooled connection for everything: if a reply of a cancelled read were left unread on
    // it, the next command would receive it and fail (or, worse, return the wrong data).
    let redis = RedisServer::start();
    let mut broker = TestBroker::start_with(&redis, |c| c.redis_pool_size = 1).await;
    produce_numbered(&mut broker.broker, "big", 0..1000).await;
    produce_numbered(&mut broker.broker, "big", 1000..2000).await;
    let producer = {
        let mut client = broker.broker.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..200 {
                let reply = client
                    .produce(numbered("side", i..i + 1))
                    .await
                    .expect("produce during cancellations");
                ids.extend(reply.into_inner().ids);
            }
            ids
        })
    };
    for _ in 0..40 {
        let mut request = tail_request(&[("big", "0")]);
        request.batch_size = 1000;
        let mut sub = Subscription::open(&mut broker.broker, request).await;
        sub.next().await;
        drop(sub); // mid-stream, often mid-read
    }
    let ids = producer.await.unwrap();
    let stored: Vec<(String, Vec<(String, String)>)> =
        redis.cmd(&["XRANGE", "side", "-", "+"]).await;
    assert_eq!(
        stored.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    for (i, (_, fields)) in stored.iter().enumerate() {
        assert_eq!(fields, &vec![("n".to_owned(), i.to_string())]);
    }
}

async fn health_status(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

#[tokio::test]
async fn health_follows_redis_for_every_service_name() {
    let mut redis = RedisServer::start();
    let broker = TestBroker::start(&redis).await;
    let mut health = HealthClient::new(broker.channel.clone());
    for name in HEALTH_SERVICE_NAMES {
        let mut h = health.clone();
        eventually(&format!("`{name}` SERVING"), || {
            let mut h = h.clone();
            async move { health_status(&mut h, name).await == ServingStatus::Serving as i32 }
        })
        .await;
        h.check(HealthCheckRequest {
            service: name.into(),
        })
        .await
        .unwrap();
    }

    redis.kill();
    for name in HEALTH_SERVICE_NAMES {
        let h = health.clone();
        eventually(&format!("`{name}` NOT_SERVING"), || {
            let mut h = h.clone();
            async move { health_status(&mut h, name).await == ServingStatus::NotServing as i32 }
        })
        .await;
    }

    redis.restart();
    eventually("SERVING again", || async {
        health_status(&mut health.clone(), "").await == ServingStatus::Serving as i32
    })
    .await;
    let status = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn shutdown_flips_health_ends_streams_with_unavailable_and_lets_calls_finish() {
    let redis = RedisServer::start();
    let mut broker =
        TestBroker::start_with(&redis, |c| c.drain_timeout = Duration::from_secs(3)).await;
    let mut health = HealthClient::new(broker.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut subs = vec![
        Subscription::open(&mut broker.broker, group_request(&["s"], "g", "c")).await,
        Subscription::open(&mut broker.broker, tail_request(&[("s", "0")])).await,
    ];
    eventually("SERVING", || async {
        health_status(&mut health.clone(), "").await == ServingStatus::Serving as i32
    })
    .await;

    // Calls in flight while the shutdown starts.
    let mut calls = Vec::new();
    for i in 0..20 {
        let mut client = broker.broker.clone();
        calls.push(tokio::spawn(async move {
            client.produce(numbered("s", i..i + 1)).await
        }));
    }
    broker.begin_shutdown();

    for sub in &mut subs {
        let status = sub.final_status().await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("shutting down"),
            "{}",
            status.message()
        );
    }
    // The health watcher saw NOT_SERVING before its stream went away.
    let mut saw_not_serving = false;
    while let Ok(Ok(Some(HealthCheckResponse { status }))) =
        tokio::time::timeout(WAIT, watch.message()).await
    {
        if status == ServingStatus::NotServing as i32 {
            saw_not_serving = true;
            break;
        }
    }
    assert!(
        saw_not_serving,
        "health never reported NOT_SERVING during shutdown"
    );

    // Every Produce that answered with ids really stored them.
    let mut acknowledged = Vec::new();
    for call in calls {
        if let Ok(reply) = call.await.unwrap() {
            acknowledged.extend(reply.into_inner().ids);
        }
    }
    let stored: Vec<(String, Vec<(String, String)>)> = redis.cmd(&["XRANGE", "s", "-", "+"]).await;
    for id in &acknowledged {
        assert!(
            stored.iter().any(|(stored_id, _)| stored_id == id),
            "acknowledged {id} was not stored"
        );
    }

    // The open Health/Watch stream would hold the server forever; the drain timeout does not.
    let took = broker.shutdown().await;
    assert!(
        took < Duration::from_secs(3) + WAIT,
        "serve returned after {took:?}"
    );
    drop(watch);
}

/// Opens a subscription through a proxy, freezes the proxy, and reports whether the broker
/// ended the subscription within `wait`.
async fn half_open_client_is_noticed(keepalive: Duration, wait: Duration) -> bool {
    let redis = RedisServer::start();
    let broker = TestBroker::start_with(&redis, |c| {
        c.http2_keepalive_interval = keepalive;
        c.http2_keepalive_timeout = Duration::from_millis(500);
    })
    .await;
    let proxy = FaultProxy::start(broker.addr).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::broker_client::BrokerClient::new(channel);
    let _sub = Subscription::open(&mut client, group_request(&["s"], "g", "c")).await;
    assert_eq!(broker.stats.open_subscriptions(), 1);

    proxy.freeze();
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if broker.stats.open_subscriptions() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_half_open_client_is_noticed_by_http2_keepalive() {
    assert!(
        half_open_client_is_noticed(Duration::from_millis(500), WAIT).await,
        "the subscription of a vanished client was never ended"
    );
    // The control: without keepalive nothing notices, which is why it is on by default.
    assert!(
        !half_open_client_is_noticed(Duration::ZERO, Duration::from_secs(3)).await,
        "ended without keepalive: this test would not show what keepalive does"
    );
}
