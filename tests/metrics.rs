//! Prometheus metrics, scraped over HTTP from the real binary.

mod support;

use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;

#[tokio::test]
async fn a_scrape_shows_messages_rpcs_subscriptions_and_groups() {
    let redis = RedisServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::start(
        &redis,
        &["--metrics-addr", &addr, "--metrics-interval", "100ms"],
    );
    let mut client = BrokerClient::new(broker.channel());
    produce_numbered(&mut client, "m", 0..3).await;
    let mut member = Subscription::open(&mut client, group_request(&["m"], "g", "c")).await;
    let got = member.take(3).await;
    // A second member, at its limit of one.
    produce_numbered(&mut client, "m2", 0..2).await;
    let mut full = group_request(&["m2"], "g", "full");
    full.max_in_flight = Some(1);
    let mut full = Subscription::open(&mut client, full).await;
    full.take(1).await;
    client
        .ack(pb::AckRequest {
            stream: "m".into(),
            group: "g".into(),
            ids: vec![got[0].id.clone(), got[1].id.clone()],
        })
        .await
        .unwrap();
    client
        .nack(pb::NackRequest {
            stream: "m".into(),
            group: "g".into(),
            ids: vec![got[2].id.clone()],
            consumer: "c".into(),
            delay_ms: Some(60_000),
        })
        .await
        .unwrap();
    let status = client
        .ack(pb::AckRequest {
            stream: "m".into(),
            group: "typo".into(),
            ids: vec![got[0].id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let mut metrics = String::new();
    eventually("group gauges sampled", || {
        metrics = scrape(port);
        let ready = metrics.contains("streamgate_group_pending{");
        async move { ready }
    })
    .await;
    println!("{metrics}");
    let expect = |prefix: &str, value: f64| {
        assert_eq!(
            sample(&metrics, prefix),
            Some(value),
            "{prefix} in\n{metrics}"
        );
    };
    expect(r#"streamgate_messages_produced_total{stream="m"}"#, 3.0);
    expect(
        r#"streamgate_messages_delivered_total{stream="m",mode="group"}"#,
        3.0,
    );
    expect(r#"streamgate_messages_acked_total{stream="m"}"#, 2.0);
    expect(r#"streamgate_messages_nacked_total{stream="m"}"#, 1.0);
    expect("streamgate_subscriptions_open", 2.0);
    expect("streamgate_subscriptions_at_limit", 1.0);
    expect(r#"streamgate_group_pending{stream="m",group="g"}"#, 1.0);
    expect(r#"streamgate_group_lag{stream="m",group="g"}"#, 0.0);
    expect(
        r#"streamgate_store_errors_total{kind="no_such_group"}"#,
        1.0,
    );
    assert!(
        sample(
            &metrics,
            r#"streamgate_redis_pool_connections{state="idle"}"#
        )
        .is_some(),
        "{metrics}"
    );
    // The pool's history, and the broker's connections named in Redis's client list.
    let opened = sample(&metrics, "streamgate_redis_connections_opened_total");
    assert!(opened.is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"streamgate_redis_connections_closed_total{reason="broken"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    let clients: String = redis.cmd(&["CLIENT", "LIST"]).await;
    assert!(clients.contains("name=streamgate "), "{clients}");
    assert!(clients.contains("name=streamgate-watcher "), "{clients}");
    let produce_calls = sample(
        &metrics,
        r#"streamgate_rpc_duration_seconds_count{method="/streamgate.v1.Broker/Produce",code="Ok"}"#,
    );
    assert_eq!(produce_calls, Some(2.0), "{metrics}");
    let not_found = sample(
        &metrics,
        r#"streamgate_rpc_duration_seconds_count{method="/streamgate.v1.Broker/Ack",code="NotFound"}"#,
    );
    assert_eq!(not_found, Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_message_s_hops_through_the_broker_are_timed() {
    let redis = RedisServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::start(&redis, &["--metrics-addr", &addr]);
    let mut client = BrokerClient::new(broker.channel());
    let mut session = ConsumeSession::open(
        &mut client,
        pb::ConsumeOpen {
            streams: vec![pb::StreamStart {
                stream: "hops".into(),
                after_id: String::new(),
            }],
            group: "g".into(),
            create_group: true,
            group_start_id: "$".into(),
            ..Default::default()
        },
    )
    .await;
    // One at a time, each while the session waits for it: every hop is taken once per message.
    for n in 0..5 {
        produce_numbered(&mut client, "hops", n..n + 1).await;
        let got = session.take(1).await;
        let request = session.settle(ack, &[got[0].id.clone()], None).await;
        assert!(session.confirmation(request).await.failed.is_empty());
    }
    let metrics = scrape(port);
    // A wake-up is timed when the session was waiting as the message came; one that came while
    // it was still reading (it reads again after each delivery) finds it awake.
    for (hop, at_least) in [
        ("append", 5.0),
        ("wake", 1.0),
        ("read", 5.0),
        ("deliver", 5.0),
        ("settle", 5.0),
    ] {
        let count = sample(
            &metrics,
            &format!(r#"streamgate_hop_seconds_count{{hop="{hop}"}}"#),
        );
        assert!(
            count.is_some_and(|n| n >= at_least),
            "hop {hop} taken {count:?} times in\n{metrics}"
        );
    }
    // The hop buckets are finer than the RPC ones: a hop of a few microseconds is told apart.
    assert!(
        metrics.contains(r#"streamgate_hop_seconds_bucket{hop="append",le="0.000025"}"#),
        "{metrics}"
    );
}
