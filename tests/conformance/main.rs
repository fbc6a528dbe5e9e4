//! One behavioural suite, run against every store: a real `redis-server`, a real Redis Cluster
//! of three masters, and the embedded in-memory store. Every test talks to the broker over gRPC
//! only, so whatever a client can observe must come out the same; this is how we know the
//! embedded store tells the truth.
//!
//! Each test is written once as `async fn name(store: Backend)` and listed in `conformance!` at
//! the end of its file (see `support::backends`), which makes `on_redis::name`,
//! `on_memory::name` and `on_cluster::name` of it. One test binary (`--test conformance`), a
//! file per topic: [`streams`], [`groups`], [`delivery`]; the request builders are here.

#[path = "../support/mod.rs"]
mod support;

mod delivery;
mod groups;
mod streams;

use std::time::Duration;

use streamgate::grpc::pb;
use support::*;
use tonic::Code;

fn produce(stream: &str, ids: &[&str]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.into(),
        messages: ids
            .iter()
            .enumerate()
            .map(|(i, id)| pb::OutgoingMessage {
                id: (*id).into(),
                fields: fields(&[("n", &i.to_string())]),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("expected an error").code()
}

fn ids_of(entries: &[pb::Entry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

fn fetch(stream: &str, consumer: &str, after: &str, count: u32) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: stream.into(),
            after_id: after.into(),
        }],
        group: "g".into(),
        consumer: consumer.into(),
        count,
        ..Default::default()
    }
}

async fn create_group(env: &mut Env, stream: &str, start: &str) {
    env.broker
        .admin
        .create_group(pb::CreateGroupRequest {
            stream: stream.into(),
            group: "g".into(),
            start_id: start.into(),
            create_stream: true,
            entries_read: None,
        })
        .await
        .expect("create group");
}

/// `value.tap(|v| ...)`: a changed copy, for one-off request tweaks.
trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl<T> Tap for T {}
