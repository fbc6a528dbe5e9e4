//! Acks, nacks and extensions a session sends on its stream, applied for the member it acts
//! for, with what became of each id. Spoken in domain terms ([`SettleRequest`],
//! [`SettleOutcome`], [`Refusal`]): `Broker.Consume` and Pub/Sub's StreamingPull each translate
//! their wire requests into these and the outcomes back, and share everything between (the
//! checks, one round trip per stream for consecutive acks, what a store failure means).

use std::time::Duration;

use crate::delivery::DeliveryCore;
use crate::error::BrokerError;
use crate::model::{AckOutcome, EntryId};
use crate::store::Store;

/// What a settle request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleKind {
    /// Acknowledge: done with these messages.
    Ack,
    /// Negative acknowledgement: deliver them again after the delay, or the policy's backoff.
    Nack {
        /// Overrides the backoff when set.
        delay: Option<Duration>,
    },
    /// Still working on them: their deadline starts again.
    Extend,
}

/// One settle request of a session: ids of one stream, all settled the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRequest {
    /// How the ids are settled.
    pub kind: SettleKind,
    /// The stream they were delivered from; must be one the session reads.
    pub stream: String,
    /// The entries, parsed by the transport.
    pub ids: Vec<EntryId>,
}

/// What became of one id of a request that was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Acked, nacked or extended as asked.
    Applied,
    /// An ack of an entry the group does not hold pending.
    NotPending,
    /// An ack (exactly-once) of an entry another consumer holds now.
    HeldByAnotherConsumer,
    /// A nack or extension of an entry this consumer does not hold.
    NotHeld,
}

impl SettleOutcome {
    /// Why the id was not settled, in words a client can log; `None` when it was.
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            Self::Applied => None,
            Self::NotPending => {
                Some("not pending in the group: acknowledged already, or never delivered")
            }
            Self::HeldByAnotherConsumer => Some(
                "another consumer holds it: its deadline passed and the group redelivered it, so \
                 the work done on it is a duplicate",
            ),
            Self::NotHeld => Some(
                "this consumer does not hold it: acknowledged, redelivered to another member \
                 after its deadline, or never delivered",
            ),
        }
    }
}

impl From<AckOutcome> for SettleOutcome {
    fn from(outcome: AckOutcome) -> Self {
        match outcome {
            AckOutcome::Acked => Self::Applied,
            AckOutcome::NotPending => Self::NotPending,
            AckOutcome::HeldByOther => Self::HeldByAnotherConsumer,
        }
    }
}

/// Why a whole request was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client got it wrong (a stream the session does not read, ids that do not parse...):
    /// sending it again will not help.
    Invalid(String),
    /// The broker could not apply it (Redis failed): the client may try again.
    Failed(String),
}

impl Refusal {
    /// The refusal a failed core call means: INVALID_ARGUMENT is the client's, anything else
    /// the broker's (with the error's whole chain, for the client's log).
    pub fn of(err: &BrokerError) -> Self {
        match err {
            BrokerError::InvalidArgument { .. } => Self::Invalid(err.to_string()),
            _ => Self::Failed(crate::error::chain(err)),
        }
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid(message) | Self::Failed(message) => message,
        }
    }
}

/// What became of one request: each id's outcome in request order, or the refusal of the
/// whole.
pub type Settled = Result<Vec<SettleOutcome>, Refusal>;

/// The member a session's settle requests act for.
pub struct Settler<S> {
    /// The core the requests are applied through.
    pub core: DeliveryCore<S>,
    /// The streams the session reads: the only ones its requests may name.
    pub streams: Vec<String>,
    /// The member's group.
    pub group: String,
    /// The member's consumer name.
    pub consumer: String,
    /// Acks apply only to what this consumer holds.
    pub exactly_once: bool,
    /// Most ids one request may list (the server's read limit).
    pub max_ids: usize,
}

impl<S: Store> Settler<S> {
    /// Whose messages an ack may apply to: this consumer's only, with `exactly_once`.
    fn holder(&self) -> Option<&str> {
        self.exactly_once.then_some(self.consumer.as_str())
    }

    /// A request this session may apply: a stream it reads, no more ids than the limit.
    fn check(&self, request: SettleRequest) -> Result<SettleRequest, Refusal> {
        if !self.streams.contains(&request.stream) {
            return Err(Refusal::Invalid(format!(
                "`{}` is not a stream this session reads ({})",
                request.stream,
                self.streams.join(", ")
            )));
        }
        if request.ids.len() > self.max_ids {
            let err = BrokerError::invalid(
                "ids",
                format!(
                    "lists {} ids, over the limit of {}",
                    request.ids.len(),
                    self.max_ids
                ),
            );
            return Err(Refusal::Invalid(err.to_string()));
        }
        Ok(request)
    }

    /// Applies requests taken together, in order; consecutive acks share one round trip per
    /// stream. A request the transport already refused stays refused, in its place.
    pub async fn apply(&self, requests: Vec<Result<SettleRequest, Refusal>>) -> Vec<Settled> {
        let mut settled = Vec::with_capacity(requests.len());
        let mut acks = Vec::new();
        for request in requests {
            match request.and_then(|r| self.check(r)) {
                Ok(request) if request.kind == SettleKind::Ack => acks.push(request),
                other => {
                    if !acks.is_empty() {
                        settled.extend(self.apply_acks(std::mem::take(&mut acks)).await);
                    }
                    settled.push(match other {
                        Ok(request) => self.apply_one(request).await,
                        Err(refusal) => Err(refusal),
                    });
                }
            }
        }
        if !acks.is_empty() {
            settled.extend(self.apply_acks(acks).await);
        }
        settled
    }

    /// Applies consecutive acks: one atomic ack per stream for all their ids, the outcomes
    /// split back per request.
    async fn apply_acks(&self, acks: Vec<SettleRequest>) -> Vec<Settled> {
        let mut streams: Vec<&str> = acks.iter().map(|a| a.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let mut settled: Vec<Settled> = (0..acks.len())
            .map(|_| Err(Refusal::Failed("not applied".into())))
            .collect();
        for stream in streams {
            let mine: Vec<usize> = (0..acks.len())
                .filter(|i| acks[*i].stream == stream)
                .collect();
            let ids: Vec<EntryId> = mine.iter().flat_map(|i| acks[*i].ids.clone()).collect();
            match self
                .core
                .ack_confirmed(stream, &self.group, self.holder(), &ids)
                .await
            {
                Ok(all) => {
                    let mut all = all.into_iter().map(SettleOutcome::from);
                    for i in mine {
                        settled[i] = Ok(all.by_ref().take(acks[i].ids.len()).collect());
                    }
                }
                Err(err) => {
                    // A store failure is the broker's, whatever the error says.
                    let refusal = Refusal::Failed(crate::error::chain(&err));
                    for i in mine {
                        settled[i] = Err(refusal.clone());
                    }
                }
            }
        }
        settled
    }

    /// Applies a nack or an extension: each id is applied if this consumer held it.
    async fn apply_one(&self, request: SettleRequest) -> Settled {
        let SettleRequest { kind, stream, ids } = request;
        let (group, consumer) = (&self.group, &self.consumer);
        let held = match kind {
            SettleKind::Nack { delay } => {
                self.core
                    .nack(&stream, group, Some(consumer.clone()), &ids, delay)
                    .await
            }
            SettleKind::Extend => self.core.extend(&stream, group, consumer, &ids).await,
            SettleKind::Ack => {
                let request = SettleRequest { kind, stream, ids };
                let mut settled = self.apply_acks(vec![request]).await;
                return settled
                    .pop()
                    .unwrap_or_else(|| Err(Refusal::Failed("not applied".into())));
            }
        };
        let held = held.map_err(|err| Refusal::of(&err))?;
        Ok(ids
            .iter()
            .map(|id| {
                if held.contains(id) {
                    SettleOutcome::Applied
                } else {
                    SettleOutcome::NotHeld
                }
            })
            .collect())
    }
}
