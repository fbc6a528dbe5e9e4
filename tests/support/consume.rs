//! The client's end of a `Broker.Consume` stream, for tests: open, read frames and
//! confirmations with deadlines, settle by id.

use std::collections::VecDeque;
use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use streamgate::grpc::pb::consume_response::Event as Item;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::WAIT;

/// The client's end of a Consume stream, read with deadlines.
pub struct ConsumeSession {
    requests: Option<mpsc::Sender<pb::ConsumeRequest>>,
    /// The stream settle requests name (the first the session opened with).
    stream: String,
    responses: tonic::Streaming<pb::ConsumeResponse>,
    pub consumer: String,
    /// Confirmations that arrived while waiting for messages, and the other way round.
    confirmations: VecDeque<pb::Confirmation>,
    batches: VecDeque<Vec<pb::ReceivedMessage>>,
    next_request_id: u64,
}

impl ConsumeSession {
    /// Opens the stream, sends `open`; returns the stream's first answer (started, or an error).
    pub async fn start(
        client: &mut BrokerClient<Channel>,
        open: Option<pb::ConsumeOpen>,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let stream = open
            .as_ref()
            .and_then(|o| o.streams.first())
            .map(|s| s.stream.clone())
            .unwrap_or_default();
        if let Some(open) = open {
            tx.send(pb::ConsumeRequest {
                request: Some(pb::consume_request::Request::Open(open)),
            })
            .await
            .unwrap();
        }
        let mut responses = client.consume(ReceiverStream::new(rx)).await?.into_inner();
        let first = tokio::time::timeout(WAIT, responses.message())
            .await
            .expect("no answer to `open` within the deadline")?;
        match first.and_then(|r| r.event) {
            Some(Item::Started(started)) => Ok(Self {
                requests: Some(tx),
                stream,
                responses,
                consumer: started.consumer,
                confirmations: VecDeque::new(),
                batches: VecDeque::new(),
                next_request_id: 1,
            }),
            other => panic!("first item was not `started`: {other:?}"),
        }
    }

    /// Opens the stream with `open`, which must succeed.
    pub async fn open(client: &mut BrokerClient<Channel>, open: pb::ConsumeOpen) -> Self {
        Self::start(client, Some(open)).await.expect("consume")
    }

    pub async fn send(&mut self, request: pb::consume_request::Request) {
        self.requests
            .as_ref()
            .expect("still sending")
            .send(pb::ConsumeRequest {
                request: Some(request),
            })
            .await
            .unwrap();
    }

    /// Sends an ack, nack or extend of `ids`; returns its request id.
    pub async fn settle(
        &mut self,
        kind: fn(pb::Settle) -> pb::consume_request::Request,
        ids: &[String],
        delay_ms: Option<u32>,
    ) -> u64 {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send(kind(pb::Settle {
            request_id,
            stream: self.stream.clone(),
            ids: ids.to_vec(),
            delay_ms,
        }))
        .await;
        request_id
    }

    /// Reads one item into the queues; `false` on timeout. Fails on an error or the end.
    pub async fn read(&mut self, wait: Duration) -> bool {
        loop {
            match tokio::time::timeout(wait, self.responses.message()).await {
                Err(_) => return false,
                Ok(Ok(Some(pb::ConsumeResponse { event: Some(event) }))) => match event {
                    Item::Messages(batch) => self.batches.push_back(batch.messages),
                    Item::Confirmation(c) => self.confirmations.push_back(c),
                    Item::Heartbeat(_) => continue,
                    Item::Started(_) => panic!("a second `started`"),
                },
                other => panic!("expected an item, got {other:?}"),
            }
            return true;
        }
    }

    /// The next frame of messages.
    pub async fn batch(&mut self) -> Vec<pb::ReceivedMessage> {
        while self.batches.is_empty() {
            assert!(self.read(WAIT).await, "no messages within {WAIT:?}");
        }
        self.batches.pop_front().unwrap()
    }

    /// The next `n` messages, however framed.
    pub async fn take(&mut self, n: usize) -> Vec<pb::ReceivedMessage> {
        let mut out = Vec::new();
        while out.len() < n {
            out.extend(self.batch().await);
        }
        assert_eq!(out.len(), n, "more messages than expected");
        out
    }

    /// The confirmation of request `request_id`.
    pub async fn confirmation(&mut self, request_id: u64) -> pb::Confirmation {
        loop {
            if let Some(i) = self
                .confirmations
                .iter()
                .position(|c| c.request_id == request_id)
            {
                return self.confirmations.remove(i).unwrap();
            }
            assert!(self.read(WAIT).await, "no confirmation within {WAIT:?}");
        }
    }

    /// Asserts no messages arrive for `quiet`.
    pub async fn expect_no_messages(&mut self, quiet: Duration) {
        let until = tokio::time::Instant::now() + quiet;
        while self
            .read(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {}
        assert!(
            self.batches.is_empty(),
            "unexpected messages: {:?}",
            self.batches
        );
    }

    /// Half-closes and reads to the end: the status it ends with (OK included).
    pub async fn finish(mut self) -> Result<(), tonic::Status> {
        self.requests = None;
        loop {
            match tokio::time::timeout(WAIT, self.responses.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(status)) => return Err(status),
                Err(_) => panic!("the stream did not end after half-close"),
            }
        }
    }
}

/// An ack of a Consume session.
pub fn ack(settle: pb::Settle) -> pb::consume_request::Request {
    pb::consume_request::Request::Ack(settle)
}

/// A nack of a Consume session.
pub fn nack(settle: pb::Settle) -> pb::consume_request::Request {
    pb::consume_request::Request::Nack(settle)
}

/// An extension of a Consume session.
pub fn extend(settle: pb::Settle) -> pb::consume_request::Request {
    pb::consume_request::Request::Extend(settle)
}
