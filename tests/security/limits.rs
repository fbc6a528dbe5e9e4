//! Limits: open subscriptions, and a flood of bad requests beside well-behaved clients.

use super::*;

#[tokio::test]
async fn open_subscription_limits_answer_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&[
        "--principals-file",
        file.to_str().unwrap(),
        "--max-subscriptions",
        "3",
        "--max-subscriptions-per-principal",
        "2",
    ]);
    let channel = broker.channel();
    let (mut orders, _) = clients(&channel, Some(ORDERS_TOKEN));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = orders
            .subscribe(tail_request(&[("orders.eu", "$")]))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap();
        open.push(stream);
    }
    let (c, message) = code(orders.subscribe(tail_request(&[("orders.eu", "$")])).await);
    assert_eq!(c, Code::ResourceExhausted);
    assert!(
        message.contains("--max-subscriptions-per-principal"),
        "{message}"
    );
    // Closing one frees its slot.
    drop(open.pop());
    eventually("the slot is freed", || {
        let mut orders = orders.clone();
        async move {
            orders
                .subscribe(tail_request(&[("orders.eu", "$")]))
                .await
                .is_ok()
        }
    })
    .await;
}

/// Produce + subscribe as fast as one well-behaved client pair can for `window`; messages/s.
async fn good_client_throughput(channel: &Channel, stream: &str, window: Duration) -> f64 {
    let (mut producer, _) = clients(channel, Some(ORDERS_TOKEN));
    let (mut consumer, _) = clients(channel, Some(ORDERS_TOKEN));
    let mut events = consumer
        .subscribe(tail_request(&[(stream, "$")]))
        .await
        .unwrap()
        .into_inner();
    events.message().await.unwrap();
    let started = Instant::now();
    let mut received = 0u64;
    while started.elapsed() < window {
        producer.produce(numbered(stream, 0..10)).await.unwrap();
        for _ in 0..10 {
            tokio::time::timeout(WAIT, events.message())
                .await
                .expect("delivery within the wait")
                .unwrap();
            received += 1;
        }
    }
    received as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_requests_does_not_stop_well_behaved_clients() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&["--principals-file", file.to_str().unwrap()]);
    let good = broker.channel();
    let window = Duration::from_secs(2);
    let quiet = good_client_throughput(&good, "orders.quiet", window).await;

    // 50 connections, each sending bad requests without pause: no token, a wrong token,
    // invalid names, oversized batches, forbidden streams. They run on their own threads, so
    // that what is measured is the broker's fairness, not this test process's scheduler.
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let stop = stop.clone();
        let addr = broker.addr;
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..50 {
                    let channel = Channel::from_shared(format!("http://{addr}"))
                        .unwrap()
                        .connect_lazy();
                    let stop = stop.clone();
                    tasks.push(tokio::spawn(async move {
                        let token = [None, Some("wrong"), Some(ORDERS_TOKEN)][i % 3];
                        let (mut client, mut admin) = clients(&channel, token);
                        let oversized = numbered("orders.x", 0..1001);
                        let mut refused = 0u64;
                        while !stop.is_cancelled() {
                            let bad = match i % 4 {
                                0 => client.produce(numbered("", 0..1)).await.map(drop),
                                1 => client.produce(oversized.clone()).await.map(drop),
                                2 => client.produce(numbered("payments", 0..1)).await.map(drop),
                                _ => admin
                                    .delete_stream(pb::DeleteStreamRequest { stream: "*".into() })
                                    .await
                                    .map(drop),
                            };
                            assert!(bad.is_err());
                            refused += 1;
                        }
                        refused
                    }));
                }
                let mut refused = 0;
                for task in tasks {
                    refused += task.await.unwrap();
                }
                refused
            })
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flooded = good_client_throughput(&good, "orders.flooded", window).await;
    stop.cancel();
    let refused = flood.join().unwrap();
    println!(
        "well-behaved produce+subscribe: {quiet:.0} msg/s alone, {flooded:.0} msg/s beside 50 \
         connections that sent {refused} bad requests ({:.2} of alone)",
        flooded / quiet
    );
    assert!(refused > 1000, "the flood did not flood: {refused}");
    // It keeps working; a 2-core machine shares its CPU with the flood, so no ratio is promised.
    assert!(flooded > 0.0);
}
