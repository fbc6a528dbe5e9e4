//! Acks, nacks and extensions a session sends on its stream, applied for the member it acts
//! for and answered with a confirmation per request (which ids it applied to and why not the
//! others). Shared by `Broker.Consume` and Pub/Sub's StreamingPull, which differ only in how
//! requests and confirmations are spelled on the wire.

use std::sync::Arc;

use crate::config::Limits;
use crate::delivery::{Credit, DeliveryCore};
use crate::error::BrokerError;
use crate::grpc::convert;
use crate::grpc::pb;
use crate::model::{AckOutcome, EntryId};
use crate::store::Store;

/// What a settle request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settling {
    /// Acknowledge: done with these messages.
    Ack,
    /// Negative acknowledgement: deliver them again after the backoff (or the given delay).
    Nack,
    /// Still working on them: their deadline starts again.
    Extend,
}

/// The member a session's settle requests act for.
pub struct Settler<S> {
    /// The core the requests are applied through.
    pub core: DeliveryCore<S>,
    /// The server's limits (on ids per request).
    pub limits: Arc<Limits>,
    /// The streams the session reads: the only ones its requests may name.
    pub streams: Vec<String>,
    /// The member's group.
    pub group: String,
    /// The member's consumer name.
    pub consumer: String,
    /// The session's flow-control credit, if the client grants any.
    pub credit: Option<Credit>,
    /// Acks apply only to what this consumer holds.
    pub exactly_once: bool,
}

fn failure(id: String, reason: pb::SettleFailureReason, message: String) -> pb::SettleFailure {
    pb::SettleFailure {
        id,
        reason: reason as i32,
        message,
    }
}

/// Per id, in request order: applied, or why not.
pub type Outcomes = Vec<Result<(), (pb::SettleFailureReason, &'static str)>>;

/// A settle request that passed its checks, with its ids parsed.
pub struct Checked {
    settling: Settling,
    settle: pb::Settle,
    ids: Vec<EntryId>,
}

/// Every id of `settle` refused for one reason.
fn refused(
    settle: pb::Settle,
    reason: pb::SettleFailureReason,
    message: String,
) -> pb::Confirmation {
    pb::Confirmation {
        request_id: settle.request_id,
        succeeded: Vec::new(),
        failed: settle
            .ids
            .into_iter()
            .map(|id| failure(id, reason, message.clone()))
            .collect(),
    }
}

/// A confirmation from the outcome of each id, in order.
fn confirmation(settle: pb::Settle, outcomes: Outcomes) -> pb::Confirmation {
    let mut confirmation = pb::Confirmation {
        request_id: settle.request_id,
        succeeded: Vec::with_capacity(settle.ids.len()),
        failed: Vec::new(),
    };
    for (text, outcome) in settle.ids.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => confirmation.succeeded.push(text),
            Err((reason, message)) => {
                confirmation
                    .failed
                    .push(failure(text, reason, message.to_owned()))
            }
        }
    }
    confirmation
}

/// A request that failed as a whole: INVALID for what the client got wrong, FAILED otherwise.
fn failed_whole(settle: pb::Settle, err: &BrokerError) -> pb::Confirmation {
    match err {
        BrokerError::InvalidArgument { .. } => {
            refused(settle, pb::SettleFailureReason::Invalid, err.to_string())
        }
        _ => refused(
            settle,
            pb::SettleFailureReason::Failed,
            crate::error::chain(err),
        ),
    }
}

fn ack_outcome(outcome: AckOutcome) -> Result<(), (pb::SettleFailureReason, &'static str)> {
    use pb::SettleFailureReason as Reason;
    match outcome {
        AckOutcome::Acked => Ok(()),
        AckOutcome::NotPending => Err((
            Reason::NotPending,
            "not pending in the group: acknowledged already, or never delivered",
        )),
        AckOutcome::HeldByOther => Err((
            Reason::HeldByAnotherConsumer,
            "another consumer holds it: its deadline passed and the group redelivered it, so \
             the work done on it is a duplicate",
        )),
    }
}

impl<S: Store> Settler<S> {
    /// Whose messages an ack may apply to: this consumer's only, with `exactly_once`.
    fn holder(&self) -> Option<&str> {
        self.exactly_once.then_some(self.consumer.as_str())
    }

    /// Checks a settle request: a stream this session reads, ids that parse, a delay only on a
    /// nack. The refusal is its confirmation.
    pub fn check(
        &self,
        settling: Settling,
        settle: pb::Settle,
    ) -> Result<Checked, pb::Confirmation> {
        use pb::SettleFailureReason as Reason;
        if !self.streams.contains(&settle.stream) {
            let message = format!(
                "`{}` is not a stream this session reads ({})",
                settle.stream,
                self.streams.join(", ")
            );
            return Err(refused(settle, Reason::Invalid, message));
        }
        if settling != Settling::Nack && settle.delay_ms.is_some() {
            let err = BrokerError::invalid("delay_ms", "only applies to a nack");
            return Err(refused(settle, Reason::Invalid, err.to_string()));
        }
        match convert::ids("ids", &settle.ids, &self.limits) {
            Ok(ids) => Ok(Checked {
                settling,
                settle,
                ids,
            }),
            Err(err) => Err(refused(settle, Reason::Invalid, err.to_string())),
        }
    }

    /// Applies consecutive acks: one atomic ack per stream for all their ids, the outcomes
    /// split back per request.
    async fn apply_acks(&self, acks: Vec<Checked>) -> Vec<pb::Confirmation> {
        let mut streams: Vec<&str> = acks.iter().map(|a| a.settle.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let mut outcomes: Vec<Option<Result<Vec<AckOutcome>, BrokerError>>> =
            (0..acks.len()).map(|_| None).collect();
        for stream in streams {
            let mine: Vec<usize> = (0..acks.len())
                .filter(|i| acks[*i].settle.stream == stream)
                .collect();
            let ids: Vec<EntryId> = mine.iter().flat_map(|i| acks[*i].ids.clone()).collect();
            match self
                .core
                .ack_confirmed(stream, &self.group, self.holder(), &ids)
                .await
            {
                Ok(all) => {
                    let mut all = all.into_iter();
                    for i in mine {
                        outcomes[i] = Some(Ok(all.by_ref().take(acks[i].ids.len()).collect()));
                    }
                }
                Err(err) => {
                    for i in mine {
                        outcomes[i] = Some(Err(BrokerError::Internal(crate::error::chain(&err))));
                    }
                }
            }
        }
        acks.into_iter()
            .zip(outcomes)
            .map(|(ack, outcome)| match outcome {
                Some(Ok(outcomes)) => {
                    confirmation(ack.settle, outcomes.into_iter().map(ack_outcome).collect())
                }
                Some(Err(err)) => failed_whole(ack.settle, &err),
                None => failed_whole(ack.settle, &BrokerError::Internal("not applied".into())),
            })
            .collect()
    }

    /// Applies a nack or an extension.
    async fn apply_one(&self, checked: Checked) -> pb::Confirmation {
        use pb::SettleFailureReason as Reason;
        const NOT_HELD: &str = "this consumer does not hold it: acknowledged, redelivered to \
                                another member after its deadline, or never delivered";
        let Checked {
            settling,
            settle,
            ids,
        } = checked;
        let (stream, group, consumer) = (&settle.stream, &self.group, &self.consumer);
        let applied = match settling {
            Settling::Nack => match settle
                .delay_ms
                .map(|ms| convert::delay("delay_ms", ms))
                .transpose()
            {
                Ok(delay) => {
                    self.core
                        .nack(stream, group, Some(consumer.clone()), &ids, delay)
                        .await
                }
                Err(err) => Err(err),
            },
            Settling::Extend => self.core.extend(stream, group, consumer, &ids).await,
            Settling::Ack => {
                let checked = Checked {
                    settling,
                    settle,
                    ids,
                };
                let mut confirmed = self.apply_acks(vec![checked]).await;
                return confirmed.pop().unwrap_or_default();
            }
        };
        match applied {
            Ok(held) => {
                let outcomes = ids
                    .iter()
                    .map(|id| {
                        if held.contains(id) {
                            Ok(())
                        } else {
                            Err((Reason::NotHeld, NOT_HELD))
                        }
                    })
                    .collect();
                confirmation(settle, outcomes)
            }
            Err(err) => failed_whole(settle, &err),
        }
    }

    /// Applies requests taken together, in order; consecutive acks share round trips.
    pub async fn apply(
        &self,
        requests: Vec<Result<Checked, pb::Confirmation>>,
    ) -> Vec<pb::Confirmation> {
        let mut confirmations = Vec::with_capacity(requests.len());
        let mut acks = Vec::new();
        for request in requests {
            match request {
                Ok(checked) if checked.settling == Settling::Ack => acks.push(checked),
                other => {
                    if !acks.is_empty() {
                        confirmations.extend(self.apply_acks(std::mem::take(&mut acks)).await);
                    }
                    confirmations.push(match other {
                        Ok(checked) => self.apply_one(checked).await,
                        Err(refusal) => refusal,
                    });
                }
            }
        }
        if !acks.is_empty() {
            confirmations.extend(self.apply_acks(acks).await);
        }
        confirmations
    }
}
