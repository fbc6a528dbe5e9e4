//! The reference model of what the delivery core promises, and the check of a history against
//! it. A driver reports what it did and saw ([`Event`]s, in the order it saw them); every event
//! is checked as it arrives, and [`Model::finish`] checks what must hold once the history is
//! drained. Each broken promise is one line of [`Model::violations`].
//!
//! The promises (README, "Delivery guarantees" and "Ordered delivery"):
//! - at-least-once: every produced message ends acknowledged (exactly one ack says so),
//!   dead-lettered, expired past its TTL or skipped by a seek; nothing vanishes, and a delayed
//!   message arrives, not before it is due;
//! - ordering keys: a message is delivered only once every earlier message of its key was
//!   acknowledged (so in publish order, never two of a key outstanding, and a nacked or expired
//!   message holds its key until it is delivered again and settled);
//! - exactly-once confirmations: an ack confirmed as succeeded was sent by the member that holds
//!   the message's latest delivery, and no message is confirmed acknowledged twice;
//! - flow control: a member never holds more than its in-flight limit;
//! - a nack with a delay is not redelivered before the delay passed;
//! - dedupe: a dedupe key sent again within the window stores nothing new and answers the
//!   first id;
//! - a filtered-out message is never delivered;
//! - liveness: while messages are unsettled and members poll with room, something is settled
//!   at least once per [`Model::stall_bound`]; a stall is a violation, not a timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use streamgate::delivery::POLICY_TTL;

pub use super::events::{AckOutcome, Event, Id, Sent, number_of};

#[derive(Debug, Default)]
struct MessageState {
    sent: Sent,
    /// Acks sent for it (by anyone).
    ack_sent: bool,
    /// Answers that said it was acknowledged now.
    acked: u32,
    /// An ack of it failed: it may have been applied.
    maybe_acked: bool,
    dead_lettered: bool,
    /// The latest delivery: who, and its delivery count.
    latest: Option<(usize, u64)>,
    /// Its current holder, as far as flow control counts.
    holder: Option<usize>,
    /// Not to be delivered before this (a nack's delay).
    not_before_ms: u64,
    /// When its holder's lease started (its delivery, or its latest extension): flow control
    /// stops counting it one ack deadline later, as the broker does (it is due to anyone then).
    lease_ms: u64,
    deliveries: u32,
    /// With a TTL: the earliest and the latest moment it can have expired at the broker.
    expires: Option<(u64, u64)>,
    /// A seek moved the group past it.
    skipped: bool,
}

/// The model and the violations found so far.
#[derive(Debug, Default)]
pub struct Model {
    messages: BTreeMap<Id, MessageState>,
    /// Per ordering key, its messages in publish (id) order.
    keys: HashMap<String, BTreeSet<Id>>,
    dedupe: HashMap<String, Id>,
    limits: HashMap<usize, u64>,
    /// Which messages each member holds, as flow control counts.
    held: HashMap<usize, BTreeSet<Id>>,
    /// Tolerance of the clocks the delay check compares (real runs: Redis counts milliseconds).
    pub clock_slack_ms: u64,
    /// The subscription's ack deadline.
    ack_deadline_ms: u64,
    /// The deadline before the latest change, and when it changed: until every member has
    /// applied the change, a lease counts for the shorter of the two.
    previous_deadline: Option<(u64, u64)>,
    violations: Vec<String>,
    /// Prints every event (`STREAMGATE_CHECKER_TRACE`), to read a replayed history.
    trace: bool,
    events: usize,
    last_progress_ms: u64,
    longest_gap_ms: u64,
    /// The latest moment an event told of.
    now_ms: u64,
    /// Delayed messages not seen yet, by number: what they are, when they are due at the
    /// earliest, and whether they were surely stored.
    delayed: HashMap<u64, (Sent, u64, bool)>,
    /// Delayed messages that arrived.
    delayed_seen: usize,
    /// Seeks, and the messages they skipped.
    seeks: (usize, usize),
}

impl Model {
    /// A model whose time checks allow `clock_slack_ms` between the driver's clock and the
    /// store's, for a subscription with `ack_deadline_ms`.
    pub fn new(clock_slack_ms: u64, ack_deadline_ms: u64) -> Self {
        Self {
            clock_slack_ms,
            ack_deadline_ms,
            trace: std::env::var_os("STREAMGATE_CHECKER_TRACE").is_some(),
            ..Self::default()
        }
    }

    /// What was broken, one line each.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// How many events were checked.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Messages produced (distinct ids).
    pub fn produced(&self) -> usize {
        self.messages.len()
    }

    /// Messages not yet settled: neither acknowledged, filtered, nor dead-lettered.
    pub fn unsettled(&self) -> usize {
        let waiting = self.delayed.values().filter(|(_, _, certain)| *certain);
        self.messages
            .values()
            .filter(|m| self.is_unsettled(m))
            .count()
            + waiting.count()
    }

    /// Unsettled ids, for a report.
    pub fn unsettled_ids(&self) -> Vec<Id> {
        self.messages
            .iter()
            .filter(|(_, m)| self.is_unsettled(m))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Seeks, and the messages they skipped before anyone acknowledged them.
    pub fn seeks(&self) -> (usize, usize) {
        self.seeks
    }

    /// Delayed messages that arrived (each checked against its due time).
    pub fn delayed(&self) -> usize {
        self.delayed_seen
    }

    /// Messages settled by their TTL (never acknowledged, expired by now).
    pub fn expired(&self) -> usize {
        self.messages
            .values()
            .filter(|m| {
                m.acked == 0
                    && !m.maybe_acked
                    && m.expires.is_some_and(|(_, latest)| latest <= self.now_ms)
            })
            .count()
    }

    /// Neither acknowledged, filtered, dead-lettered, nor surely expired by now.
    fn is_unsettled(&self, m: &MessageState) -> bool {
        let expired = m
            .expires
            .is_some_and(|(_, latest)| latest + self.clock_slack_ms <= self.now_ms);
        m.acked == 0
            && !m.dead_lettered
            && !m.sent.filtered
            && !m.maybe_acked
            && !expired
            && !m.skipped
    }

    /// The highest id produced so far, when no delayed message is still to come (its id,
    /// unknown until it arrives, might be higher: a seek to this id would move the group back).
    pub fn seek_position(&self) -> Option<Id> {
        if !self.delayed.is_empty() {
            return None;
        }
        self.messages.keys().next_back().copied()
    }

    /// The messages `member` holds, oldest first.
    pub fn held_by(&self, member: usize) -> Vec<Id> {
        self.held
            .get(&member)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The longest time without progress seen while messages were unsettled.
    pub fn longest_gap_ms(&self) -> u64 {
        self.longest_gap_ms
    }

    /// Adds a line to the report of the violations found (what a driver could tell of them).
    pub fn note(&mut self, text: String) {
        self.violation(text);
    }

    fn violation(&mut self, text: String) {
        if self.trace {
            eprintln!("VIOLATION {text}");
        }
        if self.violations.len() < 20 {
            self.violations.push(text);
        }
    }

    /// Checks `event` and applies it.
    pub fn apply(&mut self, event: Event) {
        self.events += 1;
        if self.trace {
            eprintln!("{:>6} {event:?}", self.events);
        }
        match event {
            Event::Produced {
                sent,
                ids,
                started_ms,
                at_ms,
            } => {
                self.now_ms = self.now_ms.max(at_ms);
                self.produced_event(sent, ids, started_ms, at_ms);
            }
            Event::Delayed {
                sent,
                started_ms,
                delay_ms,
                certain,
            } => {
                for sent in sent {
                    self.delayed
                        .insert(sent.number, (sent, started_ms + delay_ms, certain));
                }
            }
            Event::Joined {
                member,
                max_in_flight,
            } => {
                self.limits.insert(member, max_in_flight);
                self.held.entry(member).or_default();
            }
            Event::Left { member } => {
                self.limits.remove(&member);
                for id in self.held.remove(&member).unwrap_or_default() {
                    if let Some(m) = self.messages.get_mut(&id) {
                        m.holder = None;
                    }
                }
            }
            Event::Delivered {
                member,
                id,
                count,
                at_ms,
                polled_at_ms,
                number,
            } => {
                self.now_ms = self.now_ms.max(at_ms);
                self.appended_late(id, number, at_ms);
                self.delivered(member, id, count, at_ms, polled_at_ms);
            }
            Event::AckSent { member: _, id } => {
                // Whoever holds it stops counting it: an ack without a holder check applies to
                // anyone's (and one with a check that fails leaves a holder we undercount,
                // which can only hide a violation, never invent one).
                if let Some(m) = self.messages.get_mut(&id) {
                    m.ack_sent = true;
                    if let Some(holder) = m.holder.take()
                        && let Some(held) = self.held.get_mut(&holder)
                    {
                        held.remove(&id);
                    }
                }
            }
            Event::AckAnswered {
                member,
                id,
                outcome,
                checked_holder,
            } => self.ack_answered(member, id, outcome, checked_holder),
            Event::Nacked {
                member,
                id,
                delay_ms,
                at_ms,
            } => {
                if let Some(m) = self.messages.get_mut(&id) {
                    if m.holder == Some(member) {
                        m.holder = None;
                    }
                    if let Some(delay) = delay_ms {
                        m.not_before_ms = m.not_before_ms.max(at_ms + delay);
                    }
                }
                if let Some(held) = self.held.get_mut(&member) {
                    held.remove(&id);
                }
            }
            Event::Extended { member, ids, at_ms } => {
                for id in ids {
                    if let Some(m) = self.messages.get_mut(&id)
                        && m.holder == Some(member)
                    {
                        m.lease_ms = at_ms;
                    }
                }
            }
            Event::DeadLettered { ids } => {
                for id in ids {
                    match self.messages.get_mut(&id) {
                        Some(m) => m.dead_lettered = true,
                        None => self.violation(format!("dead letter of {id}, never produced")),
                    }
                }
            }
            Event::StreamEntries { ids } => {
                let stored: BTreeSet<Id> = ids.into_iter().collect();
                let produced: BTreeSet<Id> = self.messages.keys().copied().collect();
                // A delayed produce whose answer was lost may have stored what nobody received.
                let unsure = self.delayed.values().filter(|(_, _, c)| !*c).count();
                let unknown: Vec<&Id> = stored.difference(&produced).collect();
                if unknown.len() > unsure {
                    for id in unknown {
                        self.violation(format!("entry {id} is in the stream but no produce returned it (a dedupe key stored twice?)"));
                    }
                }
            }
            Event::DeadlineChanged {
                ack_deadline_ms,
                at_ms,
            } => {
                self.previous_deadline = Some((self.ack_deadline_ms, at_ms));
                self.ack_deadline_ms = ack_deadline_ms;
            }
            Event::Seeked { position } => {
                // Acknowledged by the seek: nobody holds them any more.
                self.seeks.0 += 1;
                for (id, m) in self.messages.range_mut(..=position) {
                    if !m.skipped && m.acked == 0 && !m.sent.filtered {
                        self.seeks.1 += 1;
                    }
                    m.skipped = true;
                    if let Some(holder) = m.holder.take()
                        && let Some(held) = self.held.get_mut(&holder)
                    {
                        held.remove(id);
                    }
                }
            }
            Event::Progress { at_ms } => {
                self.now_ms = self.now_ms.max(at_ms);
                self.last_progress_ms = self.last_progress_ms.max(at_ms);
            }
        }
    }

    fn produced_event(&mut self, sent: Vec<Sent>, ids: Vec<Id>, started_ms: u64, at_ms: u64) {
        for (sent, id) in sent.into_iter().zip(ids) {
            if let Some(dedupe) = &sent.dedupe {
                match self.dedupe.get(dedupe) {
                    Some(first) if *first != id => {
                        let first = *first;
                        self.violation(format!(
                            "dedupe key {dedupe} sent again answered {id}, not the first id {first}"
                        ));
                    }
                    Some(_) => continue,
                    None => {
                        self.dedupe.insert(dedupe.clone(), id);
                    }
                }
            }
            if self.messages.contains_key(&id) {
                if sent.dedupe.is_none() {
                    self.violation(format!("two produces answered the same id {id}"));
                }
                continue;
            }
            if let Some(key) = &sent.key {
                self.keys.entry(key.clone()).or_default().insert(id);
            }
            let expires = sent.ttl_ms.map(|ttl| (started_ms + ttl, at_ms + ttl));
            self.messages.insert(
                id,
                MessageState {
                    sent,
                    expires,
                    ..MessageState::default()
                },
            );
        }
    }

    /// A delayed message's first delivery: from now on it is known by its id. Delivered before
    /// it was due is a violation.
    fn appended_late(&mut self, id: Id, number: u64, at_ms: u64) {
        if self.messages.contains_key(&id) {
            return;
        }
        let Some((sent, due_ms, _)) = self.delayed.remove(&number) else {
            return;
        };
        self.delayed_seen += 1;
        if at_ms + self.clock_slack_ms < due_ms {
            self.violation(format!(
                "{id} (delayed message {number}) was delivered {} ms before it was due",
                due_ms - at_ms
            ));
        }
        if let Some(key) = &sent.key {
            self.keys.entry(key.clone()).or_default().insert(id);
        }
        self.messages.insert(
            id,
            MessageState {
                sent,
                ..MessageState::default()
            },
        );
    }

    fn delivered(&mut self, member: usize, id: Id, count: u64, at_ms: u64, polled_at_ms: u64) {
        let Some(m) = self.messages.get(&id) else {
            self.violation(format!(
                "member {member} got {id}, which no produce returned"
            ));
            return;
        };
        let mut found = Vec::new();
        if m.skipped {
            found.push(format!(
                "member {member} got {id} after a seek moved the group past it"
            ));
        }
        if m.sent.filtered {
            found.push(format!("member {member} got {id}, which the filter drops"));
        }
        // Once acknowledged nothing can claim it again: no later delivery (a higher count).
        if m.acked > 0 && m.latest.is_some_and(|(_, c)| count > c) {
            found.push(format!(
                "member {member} got {id} (delivery {count}) after it was confirmed acknowledged"
            ));
        }
        if at_ms + self.clock_slack_ms < m.not_before_ms {
            let early = m.not_before_ms - at_ms;
            found.push(format!(
                "member {member} got {id} {early} ms before its nack's delay ended"
            ));
        }
        if let Some((_, latest)) = m.expires
            && polled_at_ms > latest + self.clock_slack_ms
        {
            found.push(format!(
                "member {member} got {id} {} ms after its TTL ended",
                polled_at_ms - latest
            ));
        }
        if let Some(key) = &m.sent.key {
            for before in self.keys[key].range(..id) {
                let b = &self.messages[before];
                // An earlier message that may have expired by now settled its key.
                let expired = b
                    .expires
                    .is_some_and(|(earliest, _)| earliest <= at_ms + self.clock_slack_ms);
                if !b.ack_sent
                    && !b.dead_lettered
                    && !b.maybe_acked
                    && !b.sent.filtered
                    && !b.skipped
                    && !expired
                {
                    found.push(format!(
                        "ordering key {key}: member {member} got {id} while the earlier {before} was not acknowledged"
                    ));
                    break;
                }
            }
        }
        for text in found {
            self.violation(text);
        }
        let m = self.messages.get_mut(&id).expect("checked above");
        m.deliveries += 1;
        m.lease_ms = at_ms;
        if m.latest.is_none_or(|(_, c)| count >= c) {
            m.latest = Some((member, count));
        }
        let previous = m.holder.replace(member);
        if let Some(previous) = previous
            && let Some(held) = self.held.get_mut(&previous)
        {
            held.remove(&id);
        }
        let held = self.held.entry(member).or_default();
        held.insert(id);
        // Leases surely still running at the broker (it started them a little before we saw).
        let live_until = at_ms + self.clock_slack_ms;
        let deadline = match self.previous_deadline {
            Some((previous, changed_ms))
                if at_ms <= changed_ms + POLICY_TTL.as_millis() as u64 + self.clock_slack_ms =>
            {
                previous.min(self.ack_deadline_ms)
            }
            _ => self.ack_deadline_ms,
        };
        let holding = held
            .iter()
            .filter(|h| self.messages[*h].lease_ms + deadline > live_until)
            .count() as u64;
        if let Some(&limit) = self.limits.get(&member)
            && limit > 0
            && holding > limit
        {
            self.violation(format!(
                "member {member} holds {holding} messages, over its in-flight limit {limit}"
            ));
        }
    }

    fn ack_answered(&mut self, member: usize, id: Id, outcome: AckOutcome, checked_holder: bool) {
        let Some(m) = self.messages.get_mut(&id) else {
            return;
        };
        match outcome {
            AckOutcome::Acked => {
                m.acked += 1;
                let latest = m.latest;
                if m.acked > 1 {
                    self.violation(format!("{id} was confirmed acknowledged twice"));
                }
                if checked_holder && latest.is_some_and(|(holder, _)| holder != member) {
                    self.violation(format!(
                        "member {member}'s ack of {id} was confirmed, but its latest delivery went to member {}",
                        latest.unwrap().0
                    ));
                }
            }
            AckOutcome::Unknown => m.maybe_acked = true,
            AckOutcome::NotPending | AckOutcome::HeldByOther => {}
        }
    }

    /// The time since the last progress, noted while messages are unsettled: called by a driver
    /// that polls; a gap past `bound_ms` is a stall.
    pub fn check_live(&mut self, now_ms: u64, bound_ms: u64, what: &str) -> bool {
        if self.unsettled() == 0 {
            self.last_progress_ms = now_ms;
            return true;
        }
        let gap = now_ms.saturating_sub(self.last_progress_ms);
        self.longest_gap_ms = self.longest_gap_ms.max(gap);
        if gap > bound_ms {
            let stuck: Vec<String> = self
                .unsettled_ids()
                .iter()
                .take(5)
                .map(|id| {
                    let m = &self.messages[id];
                    format!(
                        "{id} (key {:?}, {} deliveries, latest {:?})",
                        m.sent.key, m.deliveries, m.latest
                    )
                })
                .collect();
            self.violation(format!(
                "stall {what}: nothing settled for {gap} ms (bound {bound_ms} ms) with {} unsettled, e.g. {}",
                self.unsettled(),
                stuck.join(", ")
            ));
            return false;
        }
        true
    }

    /// What must hold once the history is drained: every message settled once.
    pub fn finish(&mut self) {
        let mut never: Vec<u64> = self
            .delayed
            .iter()
            .filter(|(_, (_, _, certain))| *certain)
            .map(|(number, _)| *number)
            .collect();
        never.sort();
        if !never.is_empty() {
            self.violation(format!(
                "at-least-once: delayed messages {never:?} were never delivered"
            ));
        }
        let lost: Vec<Id> = self.unsettled_ids();
        if !lost.is_empty() {
            let shown: Vec<String> = lost.iter().take(10).map(Id::to_string).collect();
            self.violation(format!(
                "at-least-once: {} of {} messages never acknowledged nor dead-lettered: {}",
                lost.len(),
                self.messages.len(),
                shown.join(", ")
            ));
        }
        let twice: Vec<Id> = self
            .messages
            .iter()
            .filter(|(_, m)| m.acked > 0 && m.dead_lettered)
            .map(|(id, _)| *id)
            .collect();
        for id in twice.into_iter().take(5) {
            self.violation(format!("{id} was acknowledged and dead-lettered"));
        }
    }
}
