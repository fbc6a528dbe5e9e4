//! One redelivery sweep per group per interval across broker instances: three real broker
//! processes serve one group; the one holding the group's sweep lease in Redis sweeps and the
//! others skip; when it is killed, another takes over.

mod support;

use std::time::Duration;

use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;

/// A broker process with its metrics endpoint.
struct Instance {
    process: BrokerProcess,
    metrics_port: u16,
}

impl Instance {
    fn start(redis: &RedisServer) -> Self {
        let metrics_port = free_port();
        let addr = format!("127.0.0.1:{metrics_port}");
        Self {
            process: BrokerProcess::start(redis, &["--metrics-addr", &addr]),
            metrics_port,
        }
    }

    /// (swept, skipped) so far.
    fn sweeps(&self) -> (f64, f64) {
        let metrics = scrape(self.metrics_port);
        let count = |outcome: &str| {
            sample(
                &metrics,
                &format!("streamgate_sweeps_total{{outcome=\"{outcome}\"}}"),
            )
            .unwrap_or(0.0)
        };
        (count("swept"), count("skipped"))
    }
}

#[tokio::test]
async fn three_instances_sweep_a_group_about_once_per_interval_and_take_over_from_a_dead_one() {
    let redis = RedisServer::start();
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::start(&redis)).collect();
    // One idle member of the group on each instance: a 400 ms deadline makes the sweep
    // interval 200 ms.
    let mut members = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let mut client = BrokerClient::new(instance.process.channel());
        let mut request = group_request(&["s"], "g", &format!("m{i}"));
        request.ack_deadline_ms = 400;
        members.push(Subscription::open(&mut client, request).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts: Vec<(f64, f64)> = instances.iter().map(Instance::sweeps).collect();
    let swept: f64 = counts.iter().map(|c| c.0).sum();
    let skipped: f64 = counts.iter().map(|c| c.1).sum();
    println!("per instance (swept, skipped) over 3 s: {counts:?}");
    // Without the lease every instance would sweep on its own schedule (skipped = 0, swept ≈ 3
    // per interval); with it, about one in three attempts sweeps.
    assert!(swept >= 5.0, "{counts:?}");
    assert!(swept * 2.0 < swept + skipped, "{counts:?}");
    let holder = counts
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.0.total_cmp(&b.1.0))
        .map(|(i, _)| i)
        .unwrap();
    let others_before: f64 = counts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != holder)
        .map(|(_, c)| c.0)
        .sum();
    // The holder dies without a word; its lease expires and another instance sweeps.
    instances[holder].process.kill();
    drop(members.remove(holder));
    let survivors: Vec<&Instance> = instances
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != holder)
        .map(|(_, instance)| instance)
        .collect();
    eventually("another instance takes the sweeps over", || {
        let swept: f64 = survivors.iter().map(|s| s.sweeps().0).sum();
        async move { swept >= others_before + 5.0 }
    })
    .await;
}
