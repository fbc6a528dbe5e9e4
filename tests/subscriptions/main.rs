//! Stored subscriptions, on every store: a group's policy kept in Redis is what every member
//! applies; requests may narrow it but not contradict it; an update reaches members that are
//! already reading; a paused subscription delivers nothing until resumed. One test binary, a
//! file per topic: [`policy`], [`lifecycle`] (create, list, delete, topics), [`seek`],
//! [`filters`]; the names and request builders they share are here.

#[path = "../support/mod.rs"]
mod support;

mod filters;
mod lifecycle;
mod policy;
mod seek;

use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use support::*;
use tonic::Code;

/// Names share one hash tag so that a dead-letter stream named in a policy shares its stream's
/// slot on a cluster.
const STREAM: &str = "{o}.orders";
const DEAD: &str = "{o}.dead";

fn name(stream: &str, group: &str) -> pb::SubscriptionName {
    pb::SubscriptionName {
        stream: stream.into(),
        group: group.into(),
    }
}

/// The groups on `STREAM`.
async fn groups_of(admin: &mut AdminClient<tonic::transport::Channel>) -> Vec<pb::GroupInfo> {
    admin
        .list_groups(pb::ListGroupsRequest {
            stream: STREAM.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups
}

fn create(
    stream: &str,
    group: &str,
    policy: pb::SubscriptionPolicy,
) -> pb::CreateSubscriptionRequest {
    pb::CreateSubscriptionRequest {
        stream: stream.into(),
        group: group.into(),
        policy: Some(policy),
        start_id: "0".into(),
    }
}

fn update(
    stream: &str,
    group: &str,
    policy: pb::SubscriptionPolicy,
) -> pb::UpdateSubscriptionRequest {
    pb::UpdateSubscriptionRequest {
        stream: stream.into(),
        group: group.into(),
        policy: Some(policy),
    }
}

/// A Subscribe with no delivery options at all: whatever it applies comes from the store.
fn plain_member(stream: &str, group: &str, consumer: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        create_group: false,
        group_start_id: String::new(),
        ..group_request(&[stream], group, consumer)
    }
}

/// A group Fetch of new messages with no delivery options.
fn fetch_new(stream: &str, group: &str, consumer: &str) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: stream.into(),
            after_id: String::new(),
        }],
        group: group.into(),
        consumer: consumer.into(),
        ..Default::default()
    }
}

/// The status a Subscribe stream fails with before `started`.
async fn refused(env: &mut Env, request: pb::SubscribeRequest) -> tonic::Status {
    match env.broker.broker.subscribe(request).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(WAIT, stream.message()).await {
                Ok(Err(status)) => status,
                other => panic!("expected the subscription to be refused, got {other:?}"),
            }
        }
    }
}

async fn dead_letters(
    mut admin: AdminClient<tonic::transport::Channel>,
    stream: &str,
) -> Vec<pb::DeadLetter> {
    admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            dead_letter_stream: stream.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}
