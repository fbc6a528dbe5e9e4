//! A Consume session's opening request (Subscribe's reading options, group mode only; the
//! client's opening credit; how messages are framed), its settle requests, and the
//! confirmations that answer them.

use super::subscription;
use crate::calls::SubscribeSpec;
use crate::calls::frames::{DEFAULT_FRAME_BYTES, DEFAULT_FRAME_MESSAGES, FrameLimits};
use crate::calls::settle::{Refusal, SettleKind, SettleOutcome, SettleRequest, Settled};
use crate::config::Limits;
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::pb;
use crate::model::Backoff;

/// A validated ConsumeOpen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeSpec {
    /// What to read, as for Subscribe.
    pub subscription: SubscribeSpec,
    /// The opening credit (messages, bytes); `None`: no credit accounting.
    pub credit: Option<(u64, u64)>,
    /// How messages are framed.
    pub frames: FrameLimits,
    /// Acks apply only to what the consumer still holds.
    pub exactly_once: bool,
}

/// Frame limits from a request's two fields (0: the defaults), within the read limit.
pub fn frame_limits(messages: u32, bytes: u32, limits: &Limits) -> BrokerResult<FrameLimits> {
    let messages = match messages as usize {
        0 => DEFAULT_FRAME_MESSAGES.min(limits.max_read_count),
        n if n > limits.max_read_count => {
            return Err(BrokerError::invalid(
                "max_messages_per_frame",
                format!("must be at most {}", limits.max_read_count),
            ));
        }
        n => n,
    };
    let bytes = match bytes as usize {
        0 => DEFAULT_FRAME_BYTES,
        n => n,
    };
    Ok(FrameLimits { messages, bytes })
}

/// A ConsumeOpen; group members redeliver with `backoff` (the server's).
pub fn consume(
    open: pb::ConsumeOpen,
    limits: &Limits,
    backoff: Backoff,
) -> BrokerResult<ConsumeSpec> {
    if open.group.is_empty() {
        return Err(BrokerError::invalid(
            "open.group",
            "is required: Consume reads as a member of a consumer group",
        ));
    }
    let frames = frame_limits(
        open.max_messages_per_frame,
        open.max_bytes_per_frame,
        limits,
    )?;
    let credit = open.credit.map(|c| (u64::from(c.messages), c.bytes));
    let exactly_once = open.exactly_once;
    let subscription = subscription(
        pb::SubscribeRequest {
            streams: open.streams,
            group: open.group,
            consumer: open.consumer,
            create_group: open.create_group,
            group_start_id: open.group_start_id,
            batch_size: open.batch_size,
            no_ack: false,
            ack_deadline_ms: open.ack_deadline_ms,
            max_in_flight: open.max_in_flight,
            max_deliveries: open.max_deliveries,
            dead_letter_stream: open.dead_letter_stream,
            max_messages_per_response: 0,
        },
        limits,
        backoff,
    )?;
    Ok(ConsumeSpec {
        subscription,
        credit,
        frames,
        exactly_once,
    })
}

/// A settle request of a Consume stream (an ack, nack or extend): ids that parse, a delay only
/// on a nack. What fails is the refusal of the whole request, confirmed as INVALID.
pub fn settle_request(
    kind: SettleKind,
    settle: &pb::Settle,
    limits: &Limits,
) -> Result<SettleRequest, Refusal> {
    let invalid = |err: BrokerError| Refusal::Invalid(err.to_string());
    let kind = match (kind, settle.delay_ms) {
        (SettleKind::Nack { .. }, Some(ms)) => SettleKind::Nack {
            delay: Some(super::delay("delay_ms", ms).map_err(invalid)?),
        },
        (_, Some(_)) => {
            return Err(invalid(BrokerError::invalid(
                "delay_ms",
                "only applies to a nack",
            )));
        }
        (kind, None) => kind,
    };
    Ok(SettleRequest {
        kind,
        stream: settle.stream.clone(),
        ids: super::ids("ids", &settle.ids, limits).map_err(invalid)?,
    })
}

/// A confirmation: every id of the request, in order, among the succeeded or the failed.
pub fn confirmation(request_id: u64, ids: Vec<String>, settled: Settled) -> pb::Confirmation {
    use pb::SettleFailureReason as Reason;
    let failure = |id, reason: Reason, message: &str| pb::SettleFailure {
        id,
        reason: reason as i32,
        message: message.to_owned(),
    };
    let mut confirmation = pb::Confirmation {
        request_id,
        succeeded: Vec::new(),
        failed: Vec::new(),
    };
    match settled {
        Ok(outcomes) => {
            for (id, outcome) in ids.into_iter().zip(outcomes) {
                let reason = match outcome {
                    SettleOutcome::Applied => {
                        confirmation.succeeded.push(id);
                        continue;
                    }
                    SettleOutcome::NotPending => Reason::NotPending,
                    SettleOutcome::HeldByAnotherConsumer => Reason::HeldByAnotherConsumer,
                    SettleOutcome::NotHeld => Reason::NotHeld,
                };
                let message = outcome.explanation().unwrap_or_default();
                confirmation.failed.push(failure(id, reason, message));
            }
        }
        Err(refusal) => {
            let reason = match refusal {
                Refusal::Invalid(_) => Reason::Invalid,
                Refusal::Failed(_) => Reason::Failed,
            };
            confirmation.failed = ids
                .into_iter()
                .map(|id| failure(id, reason, refusal.message()))
                .collect();
        }
    }
    confirmation
}
