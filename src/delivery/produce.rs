//! Producing, as every facade does it (Produce, ProduceStream, Pub/Sub's Publish): a request is
//! routed to its partition when its stream is a topic, the caller's trace context is stored
//! with each message (so its deliveries are spans of the producer's trace), and then it is
//! either held until it is due (a delayed produce) or appended in the group commit. Dedupe
//! keys are resolved on the way in ([`DeliveryCore::append`]).

use std::time::Instant;

use super::DeliveryCore;
use crate::error::BrokerResult;
use crate::model::{Append, EntryId, Field};
use crate::ops::metrics::{self, Hop};
use crate::ops::telemetry::TRACEPARENT;
use crate::store::Store;

/// What a producing call carries besides its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Picks the partition when the stream is a topic; empty: spread by the messages' ids.
    pub partition_key: String,
    /// The caller's W3C trace context, stored with every message that has none of its own.
    pub traceparent: Option<String>,
}

/// What became of one produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Produced {
    /// Appended: the ids, in order.
    Stored(Vec<EntryId>),
    /// Delayed: the tokens of the held messages, in order (they get ids when they are due).
    Held(Vec<String>),
}

impl<S: Store> DeliveryCore<S> {
    /// Makes `append` ready to store: routed to its partition, the trace context attached.
    pub async fn prepare(&self, mut append: Append, origin: &Origin) -> BrokerResult<Append> {
        self.topics()
            .route(&mut append, &origin.partition_key)
            .await?;
        if let Some(traceparent) = &origin.traceparent {
            for message in &mut append.messages {
                if !message.fields.iter().any(|f| f.name == TRACEPARENT) {
                    message.fields.push(Field {
                        name: TRACEPARENT.to_owned(),
                        value: bytes::Bytes::copy_from_slice(traceparent.as_bytes()),
                    });
                }
            }
        }
        Ok(append)
    }

    /// One produce, prepared, then held or appended (sharing a round trip with the other
    /// produces waiting at that moment).
    pub async fn produce(&self, append: Append, origin: &Origin) -> BrokerResult<Produced> {
        let received = Instant::now();
        let append = self.prepare(append, origin).await?;
        match append.deliver_at_ms {
            Some(due_ms) => {
                let messages = append.messages.into_iter().map(|m| m.fields).collect();
                let held = self
                    .delayed()
                    .hold(&append.stream, due_ms, messages)
                    .await?;
                Ok(Produced::Held(held))
            }
            None => {
                let ids = self.append_one(append).await?;
                metrics::hop(Hop::Append, received);
                Ok(Produced::Stored(ids))
            }
        }
    }
}
