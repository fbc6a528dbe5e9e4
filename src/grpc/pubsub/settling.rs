//! StreamingPull's wire for its session: a request's ack ids and deadline changes as settle
//! requests (acks; a deadline of 0 is a nack; others extend), and, with exactly-once delivery,
//! what became of them as the acknowledgement and deadline confirmations the clients wait for.

use super::{ack_ids, pb};
use crate::calls::session::{SessionWire, Step};
use crate::calls::settle::{Refusal, SettleKind, SettleOutcome, SettleRequest, Settled};
use crate::error::{BrokerError, BrokerResult};
use crate::model::EntryId;

/// How a StreamingPull spells a session: ack ids in, confirmations out.
pub(super) struct PullWire {
    /// The topic's stream: the one every ack id settles on.
    pub(super) stream: String,
    /// The session's consumer: with exactly-once delivery, only its ack ids are valid.
    pub(super) consumer: String,
    /// Only with exactly-once delivery are requests answered.
    pub(super) exactly_once: bool,
}

/// What a request's settle requests were, to answer in the client's terms.
#[derive(Default)]
pub(super) struct Note {
    /// Per settle request given, in order: whether it acks (or modifies a deadline), and the
    /// ack id of each of its ids.
    settles: Vec<(bool, Vec<String>)>,
    /// Ack ids that are not this stream's to settle (malformed, or, with exactly-once
    /// delivery, delivered to another member).
    invalid_acks: Vec<String>,
    invalid_modacks: Vec<String>,
}

/// Deadline changes are one per ack id, each between 0 (a nack) and 600 seconds.
pub(super) fn check_deadlines(request: &pb::StreamingPullRequest) -> BrokerResult<()> {
    if request.modify_deadline_seconds.len() != request.modify_deadline_ack_ids.len() {
        return Err(BrokerError::invalid(
            "modify_deadline_seconds",
            "must have one deadline per entry of modify_deadline_ack_ids",
        ));
    }
    match request
        .modify_deadline_seconds
        .iter()
        .find(|s| !(0..=600).contains(*s))
    {
        Some(seconds) => Err(BrokerError::invalid(
            "modify_deadline_seconds",
            format!("{seconds} is not between 0 (nack) and 600"),
        )),
        None => Ok(()),
    }
}

impl PullWire {
    /// The entry ids of `ack_ids` this session may settle, beside their ack ids; the others
    /// (malformed, or with exactly-once delivery another member's) into `invalid`.
    fn entry_ids<'a>(
        &self,
        ack_ids: impl Iterator<Item = &'a String>,
        invalid: &mut Vec<String>,
    ) -> (Vec<EntryId>, Vec<String>) {
        let mut valid = (Vec::new(), Vec::new());
        for ack_id in ack_ids {
            match ack_ids::decode(ack_id) {
                Some((id, consumer)) if !self.exactly_once || consumer == self.consumer => {
                    valid.0.push(id);
                    valid.1.push(ack_id.clone());
                }
                _ => invalid.push(ack_id.clone()),
            }
        }
        valid
    }

    /// Splits a request into settle requests: acks; a deadline of 0 (a nack); others (an
    /// extension: the member's deadline starts again).
    fn translate(
        &self,
        request: &pb::StreamingPullRequest,
    ) -> BrokerResult<(Note, Vec<Result<SettleRequest, Refusal>>)> {
        check_deadlines(request)?;
        let mut note = Note::default();
        let acks = self.entry_ids(request.ack_ids.iter(), &mut note.invalid_acks);
        let (nacked, extended): (Vec<_>, Vec<_>) = request
            .modify_deadline_seconds
            .iter()
            .zip(&request.modify_deadline_ack_ids)
            .partition(|(seconds, _)| **seconds == 0);
        let nacks = self.entry_ids(
            nacked.into_iter().map(|(_, a)| a),
            &mut note.invalid_modacks,
        );
        let extends = self.entry_ids(
            extended.into_iter().map(|(_, a)| a),
            &mut note.invalid_modacks,
        );
        let mut settles = Vec::new();
        for (kind, (ids, ack_ids)) in [
            (SettleKind::Ack, acks),
            (SettleKind::Nack { delay: None }, nacks),
            (SettleKind::Extend, extends),
        ] {
            if !ids.is_empty() {
                note.settles.push((kind == SettleKind::Ack, ack_ids));
                settles.push(Ok(SettleRequest {
                    kind,
                    stream: self.stream.clone(),
                    ids,
                }));
            }
        }
        Ok((note, settles))
    }
}

/// The three lists both of Pub/Sub's confirmations carry.
#[derive(Default)]
struct Confirmed {
    ok: Vec<String>,
    invalid: Vec<String>,
    temporary: Vec<String>,
}

impl Confirmed {
    /// Sorts the ack ids of one settle request by what became of it.
    fn add(&mut self, ack_ids: Vec<String>, settled: Settled) {
        match settled {
            Ok(outcomes) => {
                for (ack_id, outcome) in ack_ids.into_iter().zip(outcomes) {
                    match outcome {
                        SettleOutcome::Applied => self.ok.push(ack_id),
                        _ => self.invalid.push(ack_id),
                    }
                }
            }
            Err(Refusal::Failed(_)) => self.temporary.extend(ack_ids),
            Err(Refusal::Invalid(_)) => self.invalid.extend(ack_ids),
        }
    }

    fn is_empty(&self) -> bool {
        self.ok.is_empty() && self.invalid.is_empty() && self.temporary.is_empty()
    }
}

impl SessionWire for PullWire {
    type Request = pb::StreamingPullRequest;
    type Note = Note;
    type Answer = pb::StreamingPullResponse;

    fn take(&mut self, request: pb::StreamingPullRequest) -> Step<Note> {
        match self.translate(&request) {
            Ok((note, settles)) => Step::Settle(note, settles),
            Err(err) => Step::End(Some(err)),
        }
    }

    /// With exactly-once delivery, one acknowledgement and one deadline confirmation for the
    /// requests taken together; without, nothing (the clients expect none).
    fn answer(&mut self, settled: Vec<(Note, Vec<Settled>)>) -> Vec<pb::StreamingPullResponse> {
        if !self.exactly_once {
            return Vec::new();
        }
        let (mut acks, mut modacks) = (Confirmed::default(), Confirmed::default());
        for (note, settled) in settled {
            acks.invalid.extend(note.invalid_acks);
            modacks.invalid.extend(note.invalid_modacks);
            for ((is_ack, ack_ids), settled) in note.settles.into_iter().zip(settled) {
                let confirmed = if is_ack { &mut acks } else { &mut modacks };
                confirmed.add(ack_ids, settled);
            }
        }
        use pb::streaming_pull_response::{AcknowledgeConfirmation, ModifyAckDeadlineConfirmation};
        let mut responses = Vec::new();
        if !acks.is_empty() {
            responses.push(pb::StreamingPullResponse {
                acknowledge_confirmation: Some(AcknowledgeConfirmation {
                    ack_ids: acks.ok,
                    invalid_ack_ids: acks.invalid,
                    unordered_ack_ids: Vec::new(),
                    temporary_failed_ack_ids: acks.temporary,
                }),
                ..Default::default()
            });
        }
        if !modacks.is_empty() {
            responses.push(pb::StreamingPullResponse {
                modify_ack_deadline_confirmation: Some(ModifyAckDeadlineConfirmation {
                    ack_ids: modacks.ok,
                    invalid_ack_ids: modacks.invalid,
                    temporary_failed_ack_ids: modacks.temporary,
                }),
                ..Default::default()
            });
        }
        responses
    }
}
