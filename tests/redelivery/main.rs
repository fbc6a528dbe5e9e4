//! At-least-once: what a subscriber took and did not acknowledge comes back, to it or to another
//! member of its group. Each test prints sent / delivered / duplicates / lost and asserts lost == 0.
//! One test binary, a file per topic: [`deadlines`], [`nacks`] (with dead letters),
//! [`flow_control`], [`idle`] consumers; the brokers and requests they share are here.

#[path = "../support/mod.rs"]
mod support;

mod deadlines;
mod flow_control;
mod idle;
mod nacks;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use streamgate::grpc::pb;
use support::*;

fn member(consumer: &str, ack_deadline_ms: u32) -> pb::SubscribeRequest {
    let mut request = group_request(&["work"], "g", consumer);
    request.ack_deadline_ms = ack_deadline_ms;
    request
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
