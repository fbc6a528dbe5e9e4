//! Google Cloud Pub/Sub's `google.pubsub.v1` Publisher and Subscriber, served over the delivery
//! core, so that the official Pub/Sub client libraries (pointed at streamgate with
//! `PUBSUB_EMULATOR_HOST`) are streamgate clients without a line of ours.
//!
//! A facade like the other services: every handler authorizes on the mapped stream names
//! ([`names`]), converts, calls the core, converts back. Topics are streams, subscriptions are
//! stored subscriptions (consumer groups with a policy) plus a Pub/Sub record ([`records`]),
//! messages are plain entries ([`messages`]). Publish shares the core's group commit with
//! Produce; StreamingPull ([`streaming_pull`]) is Consume's loop in Pub/Sub's words.

mod ack_ids;
mod messages;
mod names;
mod publisher;
mod records;
mod retention;
mod settings;
mod settling;
mod streaming_pull;
mod subscriber;

pub use records::{PUBSUB_SUBSCRIPTION_RECORDS, PUBSUB_TOPIC_RECORDS};

use std::sync::Arc;

use crate::grpc::Serving;
use crate::store::Store;
use records::Records;

/// The StreamingPull response stream.
pub(super) type StreamingPullStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::StreamingPullResponse, tonic::Status>> + Send>,
>;

/// Code generated from `proto/google/pubsub/v1/pubsub.proto` (the subset served).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("google.pubsub.v1");
}

/// Both Pub/Sub services over one core; a clone shares everything.
#[derive(Clone)]
pub struct PubsubService<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    serving: Serving<S>,
    records: Records<S>,
}

impl<S: Store> PubsubService<S> {
    /// Serves Pub/Sub through `serving`; StreamingPull sessions end when its `stopping` is
    /// cancelled.
    pub fn new(serving: Serving<S>) -> Self {
        Self {
            shared: Arc::new(Shared {
                records: Records::new(serving.core.store().clone()),
                serving,
            }),
        }
    }

    /// The Publisher service, for the server.
    pub fn publisher(&self) -> pb::publisher_server::PublisherServer<Self> {
        pb::publisher_server::PublisherServer::new(self.clone())
    }

    /// The Subscriber service, for the server.
    pub fn subscriber(&self) -> pb::subscriber_server::SubscriberServer<Self> {
        pb::subscriber_server::SubscriberServer::new(self.clone())
    }
}
