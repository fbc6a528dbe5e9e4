//! Several messages per frame: the events a subscription pump has ready together are grouped,
//! consecutive messages into one frame of at most [`FrameLimits`]. A client pays per received
//! frame (a Python gRPC client ~60 µs of CPU each), so one message per frame caps it far below
//! what the broker can deliver.

use futures_util::StreamExt as _;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use super::subscribe::{Event, EventReceiver};
use crate::error::BrokerResult;
use crate::model::Delivery;
use crate::ops::metrics::{self, Hop};

/// Messages per frame when the client does not say.
pub const DEFAULT_FRAME_MESSAGES: usize = 100;

/// Bytes of message fields per frame when the client does not say.
pub const DEFAULT_FRAME_BYTES: usize = 1 << 20;

/// How many messages, and bytes of their fields, travel in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Messages; at least 1.
    pub messages: usize,
    /// Bytes; a message larger than this travels alone.
    pub bytes: usize,
}

impl FrameLimits {
    /// The defaults, for a client that does not say: at most `max_messages` (the server's read
    /// limit) per frame.
    pub fn defaults(max_messages: usize) -> Self {
        Self {
            messages: DEFAULT_FRAME_MESSAGES.min(max_messages),
            bytes: DEFAULT_FRAME_BYTES,
        }
    }
}

/// One frame of a framed subscription.
#[derive(Debug)]
pub enum Frame {
    /// Messages, in delivery order.
    Messages(Vec<Delivery>),
    /// Anything else (started, heartbeat, the final error), as it came.
    Event(BrokerResult<Event>),
}

/// The pump's events, framed: never waits to fill a frame, only takes what is ready.
pub fn framed(events: EventReceiver, limits: FrameLimits) -> impl Stream<Item = Frame> + Send {
    ReceiverStream::new(events)
        .ready_chunks(limits.messages.max(1))
        .flat_map(move |chunk| futures_util::stream::iter(frames_of(chunk, limits)))
}

/// Splits one ready chunk into frames.
fn frames_of(chunk: Vec<BrokerResult<Event>>, limits: FrameLimits) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for item in chunk {
        match item {
            Ok(Event::Message(delivery)) => {
                let size = delivery.entry.field_bytes();
                if !batch.is_empty()
                    && (batch.len() >= limits.messages || bytes + size > limits.bytes)
                {
                    frames.push(messages(std::mem::take(&mut batch)));
                    bytes = 0;
                }
                bytes += size;
                batch.push(delivery);
            }
            other => {
                if !batch.is_empty() {
                    frames.push(messages(std::mem::take(&mut batch)));
                    bytes = 0;
                }
                frames.push(Frame::Event(other));
            }
        }
    }
    if !batch.is_empty() {
        frames.push(messages(batch));
    }
    frames
}

/// A frame of messages, taken by the transport to write now: the end of their `deliver` hop,
/// counted from the oldest read among them.
fn messages(batch: Vec<Delivery>) -> Frame {
    if let Some(read_at) = batch.iter().map(|d| d.read_at).min() {
        metrics::hop(Hop::Deliver, read_at);
    }
    Frame::Messages(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, EntryId, Field};

    fn message(n: u64, size: usize) -> BrokerResult<Event> {
        Ok(Event::Message(Delivery {
            stream: "s".into(),
            entry: Entry {
                id: EntryId::new(n, 0),
                fields: vec![Field {
                    name: "v".into(),
                    value: vec![b'x'; size - 1].into(),
                }],
            },
            delivery_count: 1,
            read_at: std::time::Instant::now(),
        }))
    }

    fn shape(frames: &[Frame]) -> Vec<usize> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Messages(m) => m.len(),
                Frame::Event(_) => 0,
            })
            .collect()
    }

    #[test]
    fn messages_ready_together_share_frames_within_the_limits() {
        let limits = FrameLimits {
            messages: 3,
            bytes: 100,
        };
        let chunk = vec![
            Ok(Event::Heartbeat),
            message(1, 10),
            message(2, 10),
            message(3, 10),
            message(4, 10),
            // Over the byte budget with the one before: a frame of its own.
            message(5, 95),
            // Larger than a whole frame: still travels, alone.
            message(6, 500),
            Ok(Event::Heartbeat),
            message(7, 10),
        ];
        assert_eq!(shape(&frames_of(chunk, limits)), [0, 3, 1, 1, 1, 0, 1]);
    }
}
