//! Requests and readers a test client uses: numbered messages, Subscribe requests, a Subscribe
//! stream read with deadlines, and polling for state that settles asynchronously.

use std::time::{Duration, Instant};

use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use tonic::transport::Channel;

/// A field list from text pairs.
pub fn fields(pairs: &[(&str, &str)]) -> Vec<pb::Field> {
    pairs
        .iter()
        .map(|(name, value)| pb::Field {
            name: (*name).to_owned(),
            value: bytes::Bytes::copy_from_slice(value.as_bytes()),
        })
        .collect()
}

/// A Produce request of single-field messages `n=<i>` for each i in `range`.
pub fn numbered(stream: &str, range: std::ops::Range<usize>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.to_owned(),
        messages: range
            .map(|i| pb::OutgoingMessage {
                id: String::new(),
                fields: fields(&[("n", &i.to_string())]),
                ..Default::default()
            })
            .collect(),
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    }
}

/// Produces `n=<i>` messages and returns their ids.
pub async fn produce_numbered(
    broker: &mut BrokerClient<Channel>,
    stream: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    broker
        .produce(numbered(stream, range))
        .await
        .expect("produce")
        .into_inner()
        .ids
}

/// A Subscribe request over `streams` in `group` as `consumer` (create the group from `0`).
pub fn group_request(streams: &[&str], group: &str, consumer: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        streams: streams
            .iter()
            .map(|s| pb::StreamStart {
                stream: (*s).to_owned(),
                after_id: String::new(),
            })
            .collect(),
        group: group.to_owned(),
        consumer: consumer.to_owned(),
        create_group: true,
        group_start_id: "0".to_owned(),
        batch_size: 0,
        no_ack: false,
        ack_deadline_ms: 0,
        ..Default::default()
    }
}

/// A tail Subscribe request starting after `after` on each stream.
pub fn tail_request(streams: &[(&str, &str)]) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        streams: streams
            .iter()
            .map(|(s, after)| pb::StreamStart {
                stream: (*s).to_owned(),
                after_id: (*after).to_owned(),
            })
            .collect(),
        ..Default::default()
    }
}

/// An open Subscribe stream with helpers to read it with deadlines (a hung stream fails the
/// test instead of hanging it).
pub struct Subscription {
    pub stream: tonic::Streaming<pb::SubscribeResponse>,
    pub consumer: String,
}

/// How long a test waits for an item that should come.
pub const WAIT: Duration = Duration::from_secs(10);

impl Subscription {
    /// Opens the subscription and reads its `started` item.
    pub async fn open(broker: &mut BrokerClient<Channel>, request: pb::SubscribeRequest) -> Self {
        let mut stream = broker
            .subscribe(request)
            .await
            .expect("subscribe")
            .into_inner();
        let first = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("no `started` within the deadline")
            .expect("stream failed before `started`")
            .expect("stream ended before `started`");
        match first.event {
            Some(pb::subscribe_response::Event::Started(started)) => Self {
                stream,
                consumer: started.consumer,
            },
            other => panic!("first item was not `started`: {other:?}"),
        }
    }

    /// The next message (heartbeats skipped); fails the test on timeout, error or end.
    pub async fn next(&mut self) -> pb::ReceivedMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.message()).await {
                Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Message(m)),
                }))) => return m,
                Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Heartbeat(_)),
                }))) => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next `n` messages.
    pub async fn take(&mut self, n: usize) -> Vec<pb::ReceivedMessage> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    /// Asserts no message arrives for `quiet` (heartbeats are not messages).
    pub async fn expect_quiet(&mut self, quiet: Duration) {
        let until = Instant::now() + quiet;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.message()).await {
                Err(_) => return,
                Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Heartbeat(_)),
                }))) => continue,
                Ok(item) => panic!("expected nothing, got {item:?}"),
            }
        }
    }

    /// Reads until the stream ends with a status; fails on timeout or a clean end.
    pub async fn final_status(&mut self) -> tonic::Status {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Err(status)) => return status,
                Ok(Ok(None)) => panic!("stream ended without an error status"),
                Err(_) => panic!("stream did not end within {WAIT:?}"),
            }
        }
    }
}

/// The `n` field of a numbered message.
pub fn number(message: &pb::ReceivedMessage) -> usize {
    let field = message
        .fields
        .iter()
        .find(|f| f.name == "n")
        .expect("field n");
    std::str::from_utf8(&field.value)
        .expect("utf8")
        .parse()
        .expect("number")
}

/// Polls `check` until it holds or `WAIT` passes; for state that settles asynchronously.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// How many messages `group` has pending on `stream`, through Admin.GetPendingSummary.
pub async fn pending_count(
    admin: &mut streamgate::grpc::pb::admin_client::AdminClient<Channel>,
    stream: &str,
    group: &str,
) -> u64 {
    admin
        .get_pending_summary(pb::GetPendingSummaryRequest {
            stream: stream.to_owned(),
            group: group.to_owned(),
        })
        .await
        .expect("pending summary")
        .into_inner()
        .count
}
