//! Pub/Sub's StreamingPull with acks and deadline changes sent on the stream itself (which the
//! protocol allows and some clients use; Google's Python and Node clients send theirs as unary
//! calls, covered in tests/pubsub.rs), driven by a client generated from the same proto:
//! exactly-once confirmations name what took and what did not, a modify-deadline of 0
//! redelivers on the same stream, and a stream without its required first settings is refused.

mod support;

use std::time::Duration;

use streamgate::grpc::pubsub::pb;
use streamgate::grpc::pubsub::pb::publisher_client::PublisherClient;
use streamgate::grpc::pubsub::pb::subscriber_client::SubscriberClient;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const TOPIC: &str = "projects/p/topics/events";
const SUBSCRIPTION: &str = "projects/p/subscriptions/events-sub";

async fn next_response(
    stream: &mut tonic::Streaming<pb::StreamingPullResponse>,
) -> pb::StreamingPullResponse {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a StreamingPull response within the deadline")
        .expect("the stream failed")
        .expect("the stream ended")
}

fn first_request() -> pb::StreamingPullRequest {
    pb::StreamingPullRequest {
        subscription: SUBSCRIPTION.into(),
        stream_ack_deadline_seconds: 10,
        max_outstanding_messages: 10,
        ..Default::default()
    }
}

/// The topic and its subscription (exactly-once or not), and clients for both services.
async fn topic_and_subscription(
    broker: &TestBroker,
    exactly_once: bool,
) -> (PublisherClient<Channel>, SubscriberClient<Channel>) {
    let mut publisher = PublisherClient::new(broker.channel.clone());
    let mut subscriber = SubscriberClient::new(broker.channel.clone());
    publisher
        .create_topic(pb::Topic {
            name: TOPIC.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    subscriber
        .create_subscription(pb::Subscription {
            name: SUBSCRIPTION.into(),
            topic: TOPIC.into(),
            enable_exactly_once_delivery: exactly_once,
            ..Default::default()
        })
        .await
        .unwrap();
    (publisher, subscriber)
}

#[tokio::test]
async fn acks_and_deadline_changes_on_the_stream_are_confirmed() {
    let broker = TestBroker::start_config(streamgate::config::ServeConfig::in_memory()).await;
    let (mut publisher, mut subscriber) = topic_and_subscription(&broker, true).await;
    publisher
        .publish(pb::PublishRequest {
            topic: TOPIC.into(),
            messages: (0..2)
                .map(|i| pb::PubsubMessage {
                    data: format!("m{i}").into_bytes(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap();

    let (requests, outgoing) = mpsc::channel(8);
    requests.send(first_request()).await.unwrap();
    let mut stream = subscriber
        .streaming_pull(ReceiverStream::new(outgoing))
        .await
        .expect("open StreamingPull")
        .into_inner();
    let mut received = Vec::new();
    while received.len() < 2 {
        received.extend(next_response(&mut stream).await.received_messages);
    }
    let (first, second) = (received[0].ack_id.clone(), received[1].ack_id.clone());
    // Ack the first, hand the second back, and ack an id that holds nothing.
    let stale = format!(
        "{}/someone-else",
        received[0].message.as_ref().unwrap().message_id
    );
    requests
        .send(pb::StreamingPullRequest {
            ack_ids: vec![first.clone(), stale.clone()],
            modify_deadline_ack_ids: vec![second.clone()],
            modify_deadline_seconds: vec![0],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut acks = None;
    let mut modacks = None;
    let mut redelivered = None;
    while acks.is_none() || modacks.is_none() || redelivered.is_none() {
        let response = next_response(&mut stream).await;
        if let Some(confirmation) = response.acknowledge_confirmation {
            acks = Some(confirmation);
        }
        if let Some(confirmation) = response.modify_ack_deadline_confirmation {
            modacks = Some(confirmation);
        }
        if let Some(message) = response.received_messages.into_iter().next() {
            redelivered = Some(message);
        }
    }
    let acks = acks.unwrap();
    assert_eq!(acks.ack_ids, [first]);
    assert_eq!(acks.invalid_ack_ids, [stale]);
    assert_eq!(modacks.unwrap().ack_ids, [second]);
    let redelivered = redelivered.unwrap();
    assert_eq!(redelivered.message.unwrap().data, b"m1");
    drop(requests);
}

#[tokio::test]
async fn a_stream_without_its_first_settings_is_refused_by_name() {
    let broker = TestBroker::start_config(streamgate::config::ServeConfig::in_memory()).await;
    let (_publisher, mut subscriber) = topic_and_subscription(&broker, false).await;
    let (requests, outgoing) = mpsc::channel(1);
    requests
        .send(pb::StreamingPullRequest {
            stream_ack_deadline_seconds: 0,
            ..first_request()
        })
        .await
        .unwrap();
    let status = match subscriber
        .streaming_pull(ReceiverStream::new(outgoing))
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an answer")
                .expect_err("refused")
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("stream_ack_deadline_seconds"),
        "{status:?}"
    );
}
