//! The deterministic driver: the delivery core itself over the embedded store, on a
//! current-thread runtime with tokio's clock paused. Nothing runs unless the history makes it
//! run, time moves only when the history lets it, and the sweeps' spread is seeded: a seed is
//! a history, replayed exactly.

use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use streamgate::delivery::seek::SeekTarget;
use streamgate::delivery::{
    Batch, DeliveryCore, GroupMembership, Member, MemberSpec, ReadMode, RedeliverySettings, Replay,
    Requested, replay_everything,
};
use streamgate::model::{
    AckOutcome as CoreOutcome, Append, Backoff, EntryId, Field, IdRange, NewEntryId, NewMessage,
    ORDERING_KEY_FIELD, PendingQuery, RangeBound, StartId, Subscription, SubscriptionPolicy,
};
use streamgate::store::{Inspect, MemoryStore};

use super::history::{ACK_DEADLINE_MS, BACKOFF_MAX_MS, BACKOFF_MIN_MS, Driver, FILTER, MEMBERS};
use super::model::{AckOutcome, Id, Sent, number_of};

const STREAM: &str = "orders";
const GROUP: &str = "billing";

/// The core on a fresh embedded store, one ordered, filtered subscription.
pub struct CoreDriver {
    core: DeliveryCore<MemoryStore>,
    members: Vec<Option<Member<MemoryStore>>>,
    generation: usize,
    started: tokio::time::Instant,
    exactly_once: bool,
}

/// Every history's stream deletes what its group acknowledged, when retention runs.
pub fn acked_retention() -> streamgate::model::RetentionPolicy {
    streamgate::model::RetentionPolicy {
        acked: true,
        ..Default::default()
    }
}

fn id_of(id: Id) -> EntryId {
    EntryId::new(id.0, id.1)
}

fn model_id(id: EntryId) -> Id {
    Id(id.ms, id.seq)
}

/// The subscription every history reads (ordered, filtered, short deadlines).
pub fn policy(paused: bool) -> SubscriptionPolicy {
    SubscriptionPolicy {
        ack_deadline_ms: ACK_DEADLINE_MS,
        backoff_min_ms: BACKOFF_MIN_MS,
        backoff_max_ms: BACKOFF_MAX_MS,
        max_in_flight: 0,
        paused,
        filter: Some(FILTER.to_owned()),
        ordered: true,
        ..SubscriptionPolicy::default()
    }
}

/// The fields a model message is produced with.
pub fn fields(sent: &Sent) -> Vec<(String, String)> {
    let mut fields = vec![
        ("n".to_owned(), sent.number.to_string()),
        (
            "kind".to_owned(),
            if sent.filtered { "noise" } else { "work" }.to_owned(),
        ),
    ];
    if let Some(key) = &sent.key {
        fields.push((ORDERING_KEY_FIELD.to_owned(), key.clone()));
    }
    fields
}

impl CoreDriver {
    /// A fresh store and core, the sweeps' spread seeded by `seed`; with `exactly_once`, acks
    /// apply only to the member's own messages.
    pub async fn new(seed: u64, exactly_once: bool) -> Self {
        let store = MemoryStore::new();
        let core = DeliveryCore::new(
            store.clone(),
            RedeliverySettings {
                backoff: Backoff {
                    min: Duration::from_millis(BACKOFF_MIN_MS),
                    max: Duration::from_millis(BACKOFF_MAX_MS),
                },
                consumer_idle_timeout: Duration::ZERO,
                slot_safe_dead_letters: false,
            },
        );
        core.redelivery().seed_jitter(seed);
        store
            .create_group(STREAM, GROUP, StartId::After(EntryId::ZERO), true, None)
            .await
            .expect("create the group");
        core.policies()
            .create(&Subscription {
                stream: STREAM.into(),
                group: GROUP.into(),
                policy: policy(false),
            })
            .await
            .expect("store the subscription");
        core.retention()
            .set(STREAM, &acked_retention())
            .await
            .expect("set the retention policy");
        Self {
            core,
            members: (0..MEMBERS).map(|_| None).collect(),
            generation: 0,
            started: tokio::time::Instant::now(),
            exactly_once,
        }
    }

    /// Updates the stored subscription.
    async fn update(&self, change: impl FnOnce(&mut SubscriptionPolicy)) {
        self.core
            .policies()
            .update(STREAM, GROUP, |p| {
                change(p);
                Ok(())
            })
            .await
            .expect("update the subscription");
    }

    fn consumer(&self, member: usize) -> String {
        self.members[member]
            .as_ref()
            .map(|m| m.consumer().to_owned())
            .expect("a live member")
    }
}

impl Driver for CoreDriver {
    fn faults_quiet_since_ms(&self) -> Option<u64> {
        None
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn produce(&mut self, batch: &[Sent], atomic: bool) -> Option<Vec<Id>> {
        let messages = batch
            .iter()
            .map(|sent| NewMessage {
                id: NewEntryId::Auto,
                fields: fields(sent)
                    .into_iter()
                    .map(|(name, value)| Field {
                        name,
                        value: Bytes::from(value),
                    })
                    .collect(),
                dedupe_key: sent.dedupe.clone(),
            })
            .collect();
        let answers = self
            .core
            .append(&[Append {
                stream: STREAM.into(),
                messages,
                atomic,
                ..Default::default()
            }])
            .await
            .expect("append round trip");
        let ids = answers
            .into_iter()
            .next()
            .expect("one answer")
            .expect("append");
        Some(ids.into_iter().map(model_id).collect())
    }

    async fn produce_delayed(&mut self, _batch: &[Sent], _delay_ms: u64) -> bool {
        unreachable!(
            "deterministic histories have no delays (the delayed mover reads the wall clock)"
        )
    }

    async fn join(&mut self, member: usize, max_in_flight: u64) -> u64 {
        self.generation += 1;
        let spec = MemberSpec {
            streams: vec![STREAM.into()],
            reading: ReadMode::Group {
                membership: GroupMembership {
                    group: GROUP.into(),
                    consumer: format!("m{member}-{}", self.generation),
                    create_from: None,
                    no_ack: false,
                    generated_name: false,
                    delivery: policy(false).delivery(),
                    max_in_flight,
                    requested: Requested {
                        flow_controlled: true,
                        max_in_flight: true,
                        ..Requested::default()
                    },
                    paused: false,
                    filter: None,
                    ordered: false,
                    dead_letter_expired: false,
                },
                cursors: replay_everything(1),
            },
            replay: Replay::Continuous,
        };
        let resolved = self.core.resolve(spec).await.expect("resolve");
        self.members[member] = Some(self.core.join(resolved).await.expect("join"));
        max_in_flight
    }

    async fn leave(&mut self, member: usize, crash: bool) {
        if let Some(m) = self.members[member].take()
            && !crash
        {
            m.hand_back().await.expect("hand back");
        }
    }

    async fn poll(&mut self, member: usize, room: usize) -> Vec<(Id, u64, u64)> {
        let m = self.members[member].as_mut().expect("a live member");
        match m.next_batch(room, false).await.expect("next batch") {
            Batch::Messages(batch) | Batch::Last(batch) => batch
                .iter()
                .map(|d| {
                    (
                        model_id(d.entry.id),
                        d.delivery_count,
                        number_of(
                            d.entry
                                .fields
                                .iter()
                                .map(|f| (f.name.as_str(), &f.value[..])),
                        ),
                    )
                })
                .collect(),
            Batch::Empty | Batch::AtLimit => Vec::new(),
        }
    }

    async fn ack(&mut self, member: usize, ids: &[Id]) -> Vec<AckOutcome> {
        let consumer = self.consumer(member);
        let holder = self.exactly_once.then_some(consumer.as_str());
        let ids: Vec<EntryId> = ids.iter().copied().map(id_of).collect();
        self.core
            .ack_confirmed(STREAM, GROUP, holder, &ids)
            .await
            .expect("ack")
            .into_iter()
            .map(|o| match o {
                CoreOutcome::Acked => AckOutcome::Acked,
                CoreOutcome::NotPending => AckOutcome::NotPending,
                CoreOutcome::HeldByOther => AckOutcome::HeldByOther,
            })
            .collect()
    }

    async fn nack(&mut self, member: usize, ids: &[Id], delay_ms: Option<u64>) -> Vec<Id> {
        let consumer = self.consumer(member);
        let ids: Vec<EntryId> = ids.iter().copied().map(id_of).collect();
        self.core
            .nack(
                STREAM,
                GROUP,
                Some(consumer),
                &ids,
                delay_ms.map(Duration::from_millis),
            )
            .await
            .expect("nack")
            .into_iter()
            .map(model_id)
            .collect()
    }

    async fn extend(&mut self, member: usize, ids: &[Id]) -> Vec<Id> {
        let consumer = self.consumer(member);
        let ids: Vec<EntryId> = ids.iter().copied().map(id_of).collect();
        self.core
            .extend(STREAM, GROUP, &consumer, &ids)
            .await
            .expect("extend")
            .into_iter()
            .map(model_id)
            .collect()
    }

    async fn set_paused(&mut self, paused: bool) {
        self.update(|p| p.paused = paused).await;
    }

    async fn set_ack_deadline(&mut self, ack_deadline_ms: u64) {
        self.update(|p| p.ack_deadline_ms = ack_deadline_ms).await;
    }

    async fn seek(&mut self, position: Id) {
        self.core
            .seek(STREAM, GROUP, SeekTarget::After(id_of(position)), true)
            .await
            .expect("seek");
    }

    async fn apply_retention(&mut self) {
        self.core
            .retention()
            .apply(STREAM)
            .await
            .expect("apply retention");
    }

    async fn advance(&mut self, ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    async fn fault(&mut self, _rng: &mut StdRng) {}

    async fn finish(&mut self) -> (Vec<Id>, Vec<Id>) {
        let store = self.core.store();
        let dlq = policy(false)
            .delivery()
            .dead_letter_stream_for(STREAM, false);
        let all = |stream: String| async move {
            store
                .range(
                    &stream,
                    IdRange {
                        min: RangeBound::Unbounded,
                        max: RangeBound::Unbounded,
                    },
                    100_000,
                    false,
                )
                .await
                .unwrap_or_default()
        };
        let dead = all(dlq)
            .await
            .iter()
            .filter_map(|e| {
                e.fields
                    .iter()
                    .find(|f| f.name == "dlq.id")
                    .map(|f| Id::parse(std::str::from_utf8(&f.value).unwrap()))
            })
            .collect();
        let stored = all(STREAM.to_owned())
            .await
            .iter()
            .map(|e| model_id(e.id))
            .collect();
        (dead, stored)
    }

    fn checks_holder(&self) -> bool {
        self.exactly_once
    }

    async fn diagnose(&mut self, ids: &[Id]) -> String {
        let mut lines = Vec::new();
        for id in ids {
            let bound = RangeBound::Inclusive(id_of(*id));
            let query = PendingQuery {
                range: IdRange {
                    min: bound,
                    max: bound,
                },
                count: 1,
                consumer: None,
                min_idle_ms: 0,
            };
            let pending = self.core.store().pending(STREAM, GROUP, &query).await;
            lines.push(format!("{id}: {pending:?}"));
        }
        lines.join("; ")
    }
}
