//! The real driver: a history over gRPC against a real broker process on a real Redis (or
//! Valkey), in real time. Several histories run at once on one broker (each on its own stream
//! and subscription), while faults kill and restart the broker and Redis beneath them: the
//! interleavings are whatever the machine makes of it. A call that fails in a fault is retried
//! where that is safe (a produce, by its dedupe key) and otherwise reported as unknown.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use tonic::transport::Channel;

use super::core_driver::fields;
use super::history::{ACK_DEADLINE_MS, BACKOFF_MAX_MS, BACKOFF_MIN_MS, Driver, FILTER, MEMBERS};
use super::model::{AckOutcome, Id, Sent, number_of};

const GROUP: &str = "billing";
/// How long a produce keeps retrying through a fault before the history gives up on it.
const PRODUCE_RETRY: Duration = Duration::from_secs(20);

/// When faults happen, shared by the task that makes them and the histories that live through
/// them: the liveness bound is measured from a fault's end.
#[derive(Default)]
pub struct FaultClock {
    /// Whether a fault lasts now, and when the last one ended.
    state: std::sync::Mutex<(bool, Option<Instant>)>,
}

impl FaultClock {
    /// A fault starts.
    pub fn begin(&self) {
        self.state.lock().unwrap().0 = true;
    }

    /// The fault is over (the process is back, the network heals).
    pub fn end(&self) {
        *self.state.lock().unwrap() = (false, Some(Instant::now()));
    }

    /// When the last fault ended; now while one lasts.
    fn quiet_since(&self) -> Option<Instant> {
        match *self.state.lock().unwrap() {
            (true, _) => Some(Instant::now()),
            (false, ended) => ended,
        }
    }
}

/// One history's view of the broker: its own stream and subscription.
pub struct GrpcDriver {
    broker: BrokerClient<Channel>,
    admin: AdminClient<Channel>,
    stream: String,
    consumers: Vec<Option<String>>,
    generation: usize,
    started: Instant,
    produced: u64,
    faults: std::sync::Arc<FaultClock>,
}

/// Ids as the API answers them; a failed call (a fault) answers none.
fn parse_ids(ids: &[String]) -> Vec<Id> {
    ids.iter().map(|i| Id::parse(i)).collect()
}

/// A message's fields as the API takes them (the ordering key goes in its own field).
fn api_fields(sent: &Sent) -> Vec<pb::Field> {
    fields(sent)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("sg."))
        .map(|(name, value)| pb::Field {
            name,
            value: value.into_bytes().into(),
        })
        .collect()
}

/// The subscription's policy in the API's terms.
fn policy(paused: bool) -> pb::SubscriptionPolicy {
    pb::SubscriptionPolicy {
        ack_deadline_ms: Some(ACK_DEADLINE_MS as u32),
        backoff_min_ms: Some(BACKOFF_MIN_MS as u32),
        backoff_max_ms: Some(BACKOFF_MAX_MS as u32),
        max_in_flight: Some(0),
        paused: Some(paused),
        filter: Some(FILTER.to_owned()),
        ordered: Some(true),
        ..Default::default()
    }
}

impl GrpcDriver {
    /// A history on `stream` through `channel`, living through the faults `faults` records: its
    /// subscription is created (retried through a fault).
    pub async fn new(channel: Channel, stream: String, faults: std::sync::Arc<FaultClock>) -> Self {
        let mut driver = Self {
            broker: BrokerClient::new(channel.clone()),
            admin: AdminClient::new(channel),
            stream,
            consumers: vec![None; MEMBERS],
            generation: 0,
            started: Instant::now(),
            produced: 0,
            faults,
        };
        let request = pb::CreateSubscriptionRequest {
            stream: driver.stream.clone(),
            group: GROUP.into(),
            policy: Some(policy(false)),
            start_id: "0".into(),
        };
        let deadline = Instant::now() + PRODUCE_RETRY;
        loop {
            match driver.admin.create_subscription(request.clone()).await {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::AlreadyExists => break,
                Err(status) if Instant::now() < deadline => {
                    let _ = status;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("cannot create the subscription: {status}"),
            }
        }
        let retention = pb::SetRetentionRequest {
            stream: driver.stream.clone(),
            policy: Some(pb::RetentionPolicy {
                acked: true,
                ..Default::default()
            }),
        };
        let deadline = Instant::now() + PRODUCE_RETRY;
        while let Err(status) = driver.admin.set_retention(retention.clone()).await {
            assert!(
                Instant::now() < deadline,
                "cannot set the retention policy: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    /// Updates the subscription with what `policy` sets, retried through faults: a resume
    /// must land, or the drain would wait on a paused subscription.
    async fn update(&mut self, policy: pb::SubscriptionPolicy) {
        let request = pb::UpdateSubscriptionRequest {
            stream: self.stream.clone(),
            group: GROUP.into(),
            policy: Some(policy),
        };
        let deadline = Instant::now() + PRODUCE_RETRY;
        while self
            .admin
            .update_subscription(request.clone())
            .await
            .is_err()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn consumer(&self, member: usize) -> String {
        self.consumers[member].clone().expect("a live member")
    }

    fn ids(ids: &[Id]) -> Vec<String> {
        ids.iter().map(Id::to_string).collect()
    }
}

impl Driver for GrpcDriver {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn faults_quiet_since_ms(&self) -> Option<u64> {
        let since = self.faults.quiet_since()?;
        Some(since.saturating_duration_since(self.started).as_millis() as u64)
    }

    async fn produce(&mut self, batch: &[Sent], atomic: bool) -> Option<Vec<Id>> {
        // Every message carries a dedupe key, so that a produce retried after a fault never
        // stores a message twice; the model only checks the keys the history chose.
        let messages: Vec<pb::OutgoingMessage> = batch
            .iter()
            .map(|sent| {
                self.produced += 1;
                pb::OutgoingMessage {
                    fields: api_fields(sent),
                    ordering_key: sent.key.clone().unwrap_or_default(),
                    ttl_ms: sent.ttl_ms.unwrap_or(0),
                    dedupe_key: sent
                        .dedupe
                        .clone()
                        .unwrap_or_else(|| format!("unique-{}", self.produced)),
                    ..Default::default()
                }
            })
            .collect();
        let request = pb::ProduceRequest {
            stream: self.stream.clone(),
            messages,
            atomic,
            ..Default::default()
        };
        let deadline = Instant::now() + PRODUCE_RETRY;
        loop {
            match self.broker.produce(request.clone()).await {
                Ok(reply) => {
                    return Some(
                        reply
                            .into_inner()
                            .ids
                            .iter()
                            .map(|i| Id::parse(i))
                            .collect(),
                    );
                }
                Err(status) if Instant::now() < deadline => {
                    let _ = status;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("produce kept failing for 20 s: {status}"),
            }
        }
    }

    async fn produce_delayed(&mut self, batch: &[Sent], delay_ms: u64) -> bool {
        // One attempt, no dedupe keys: a call cut by a fault may or may not have stored the
        // batch, which the model allows for.
        let messages = batch
            .iter()
            .map(|sent| pb::OutgoingMessage {
                fields: api_fields(sent),
                ordering_key: sent.key.clone().unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        let request = pb::ProduceRequest {
            stream: self.stream.clone(),
            messages,
            delay_ms,
            ..Default::default()
        };
        self.broker.produce(request).await.is_ok()
    }

    async fn join(&mut self, member: usize, _max_in_flight: u64) -> u64 {
        self.generation += 1;
        self.consumers[member] = Some(format!("m{member}-{}", self.generation));
        // Fetch has no in-flight limit of its own (its count is the room): none to check.
        0
    }

    async fn leave(&mut self, member: usize, crash: bool) {
        let Some(consumer) = self.consumers[member].take() else {
            return;
        };
        if crash {
            return;
        }
        // Leaving as a Fetch client does: what it holds is given back at once.
        let held = self
            .admin
            .list_pending(pb::ListPendingRequest {
                stream: self.stream.clone(),
                group: GROUP.into(),
                consumer: consumer.clone(),
                count: 1000,
                ..Default::default()
            })
            .await;
        if let Ok(held) = held {
            let ids: Vec<String> = held
                .into_inner()
                .entries
                .into_iter()
                .map(|e| e.id)
                .collect();
            if !ids.is_empty() {
                let _ = self
                    .broker
                    .nack(pb::NackRequest {
                        stream: self.stream.clone(),
                        group: GROUP.into(),
                        ids,
                        consumer,
                        delay_ms: Some(0),
                    })
                    .await;
            }
        }
    }

    async fn poll(&mut self, member: usize, room: usize) -> Vec<(Id, u64, u64)> {
        let request = pb::FetchRequest {
            streams: vec![pb::StreamStart {
                stream: self.stream.clone(),
                after_id: ">".into(),
            }],
            group: GROUP.into(),
            consumer: self.consumer(member),
            count: room as u32,
            ..Default::default()
        };
        match self.broker.fetch(request).await {
            Ok(reply) => reply
                .into_inner()
                .messages
                .into_iter()
                .map(|m| {
                    let number =
                        number_of(m.fields.iter().map(|f| (f.name.as_str(), &f.value[..])));
                    (Id::parse(&m.id), m.delivery_count, number)
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn ack(&mut self, _member: usize, ids: &[Id]) -> Vec<AckOutcome> {
        let mut outcomes = Vec::with_capacity(ids.len());
        // One id per call: the answer's count says what happened to each.
        for id in ids {
            let reply = self
                .broker
                .ack(pb::AckRequest {
                    stream: self.stream.clone(),
                    group: GROUP.into(),
                    ids: vec![id.to_string()],
                })
                .await;
            outcomes.push(match reply {
                Ok(reply) if reply.get_ref().acknowledged == 1 => AckOutcome::Acked,
                Ok(_) => AckOutcome::NotPending,
                Err(_) => AckOutcome::Unknown,
            });
        }
        outcomes
    }

    async fn nack(&mut self, member: usize, ids: &[Id], delay_ms: Option<u64>) -> Vec<Id> {
        let reply = self
            .broker
            .nack(pb::NackRequest {
                stream: self.stream.clone(),
                group: GROUP.into(),
                ids: Self::ids(ids),
                consumer: self.consumer(member),
                delay_ms: delay_ms.map(|d| d as u32),
            })
            .await;
        reply.map_or_else(|_| Vec::new(), |r| parse_ids(&r.get_ref().ids))
    }

    async fn extend(&mut self, member: usize, ids: &[Id]) -> Vec<Id> {
        let reply = self
            .broker
            .extend_deadline(pb::ExtendDeadlineRequest {
                stream: self.stream.clone(),
                group: GROUP.into(),
                consumer: self.consumer(member),
                ids: Self::ids(ids),
            })
            .await;
        reply.map_or_else(|_| Vec::new(), |r| parse_ids(&r.get_ref().ids))
    }

    async fn set_paused(&mut self, paused: bool) {
        self.update(pb::SubscriptionPolicy {
            paused: Some(paused),
            ..Default::default()
        })
        .await;
    }

    async fn seek(&mut self, position: Id) {
        let request = pb::SeekSubscriptionRequest {
            stream: self.stream.clone(),
            group: GROUP.into(),
            target: Some(pb::seek_subscription_request::Target::AfterId(
                position.to_string(),
            )),
            clear_pending: true,
        };
        // Retried through a fault: moving to the same place again, and acknowledging what is
        // pending up to it again, changes nothing (nothing of this history reads meanwhile).
        let deadline = Instant::now() + PRODUCE_RETRY;
        while let Err(status) = self.admin.seek_subscription(request.clone()).await {
            assert!(Instant::now() < deadline, "seek kept failing: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn set_ack_deadline(&mut self, ack_deadline_ms: u64) {
        self.update(pb::SubscriptionPolicy {
            ack_deadline_ms: Some(ack_deadline_ms as u32),
            ..Default::default()
        })
        .await;
    }

    async fn apply_retention(&mut self) {
        // A fault may cut it: retention runs again at the broker's own interval anyway.
        let _ = self
            .admin
            .apply_retention(pb::GetRetentionRequest {
                stream: self.stream.clone(),
            })
            .await;
    }

    async fn advance(&mut self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn fault(&mut self, _rng: &mut StdRng) {}

    async fn finish(&mut self) -> (Vec<Id>, Vec<Id>) {
        let read = |stream: String| {
            let mut admin = self.admin.clone();
            async move {
                admin
                    .query_messages(pb::QueryMessagesRequest {
                        stream,
                        count: 100_000,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().entries)
                    .unwrap_or_default()
            }
        };
        let dead = read(format!("{}:dlq", self.stream))
            .await
            .iter()
            .filter_map(|m| {
                m.fields
                    .iter()
                    .find(|f| f.name == "dlq.id")
                    .map(|f| Id::parse(std::str::from_utf8(&f.value).unwrap()))
            })
            .collect();
        let stored = read(self.stream.clone())
            .await
            .iter()
            .map(|m| Id::parse(&m.id))
            .collect();
        (dead, stored)
    }

    fn checks_holder(&self) -> bool {
        false
    }

    async fn diagnose(&mut self, ids: &[Id]) -> String {
        let mut lines = Vec::new();
        for id in ids {
            let pending = self
                .admin
                .list_pending(pb::ListPendingRequest {
                    stream: self.stream.clone(),
                    group: GROUP.into(),
                    min_id: id.to_string(),
                    max_id: id.to_string(),
                    count: 1,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().entries);
            lines.push(format!("{id}: {pending:?}"));
        }
        let group = self
            .admin
            .list_groups(pb::ListGroupsRequest {
                stream: self.stream.clone(),
            })
            .await
            .map(|r| r.into_inner());
        lines.push(format!("groups: {group:?}"));
        lines.join("; ")
    }
}
