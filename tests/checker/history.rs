//! Random histories from a seed, run through a [`Driver`] and checked by the [`Model`]: several
//! producers (plain, ordering keys, dedupe keys sent again, atomic batches, messages the filter
//! drops), members joining, leaving, crashing without a word, polling, acking, nacking with
//! and without a delay, extending, letting deadlines pass, the subscription paused and resumed;
//! then a drain in which every live member acks whatever it gets, with the liveness bound
//! checked throughout.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::model::{AckOutcome, Event, Id, Model, Sent};

/// The subscription every history reads: short deadlines so that histories let them pass.
pub const ACK_DEADLINE_MS: u64 = 400;
/// The ack deadline a subscription update switches to now and then (and back).
pub const LONGER_ACK_DEADLINE_MS: u64 = 600;
/// The subscription's backoff.
pub const BACKOFF_MIN_MS: u64 = 50;
/// The subscription's longest backoff.
pub const BACKOFF_MAX_MS: u64 = 200;
/// The subscription's filter: messages whose `kind` is `noise` are never delivered.
pub const FILTER: &str = r#"NOT kind = "noise""#;
/// The ordering keys producers use.
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
/// Members at most at once.
pub const MEMBERS: usize = 4;

/// What a history may use: the deterministic core or a real broker.
pub trait Driver {
    /// The driver's clock in milliseconds (virtual on the paused clock).
    fn now_ms(&self) -> u64;
    /// Produces `batch` (all or nothing when `atomic`); the ids in order, `None` when the call
    /// failed (a fault: a real driver retries what carries a dedupe key).
    async fn produce(&mut self, batch: &[Sent], atomic: bool) -> Option<Vec<Id>>;
    /// Produces `batch` to be appended `delay_ms` from now (no ids: the history knows its
    /// messages by number when they arrive); whether the broker answered.
    async fn produce_delayed(&mut self, batch: &[Sent], delay_ms: u64) -> bool;
    /// Member `member` joins (a new consumer name) asking for an in-flight limit; the limit
    /// the driver enforces (0: none).
    async fn join(&mut self, member: usize, max_in_flight: u64) -> u64;
    /// The member leaves, handing back what it holds, or, with `crash`, vanishes.
    async fn leave(&mut self, member: usize, crash: bool);
    /// One batch of at most `room` for the member: (id, delivery count, number) each.
    async fn poll(&mut self, member: usize, room: usize) -> Vec<(Id, u64, u64)>;
    /// Acks `ids` as the member; one answer per id.
    async fn ack(&mut self, member: usize, ids: &[Id]) -> Vec<AckOutcome>;
    /// Nacks `ids` as the member; the ids nacked (those it still held).
    async fn nack(&mut self, member: usize, ids: &[Id], delay_ms: Option<u64>) -> Vec<Id>;
    /// Extends the deadline of `ids` the member holds; the ids extended.
    async fn extend(&mut self, member: usize, ids: &[Id]) -> Vec<Id>;
    /// Pauses or resumes the subscription.
    async fn set_paused(&mut self, paused: bool);
    /// Updates the subscription's ack deadline.
    async fn set_ack_deadline(&mut self, ack_deadline_ms: u64);
    /// Seeks the group to just after `position`, acknowledging what is pending up to it.
    async fn seek(&mut self, position: Id);
    /// Runs the stream's retention now: it deletes what the group acknowledged (the policy
    /// every history's stream has), and nothing else.
    async fn apply_retention(&mut self);
    /// Lets `ms` pass.
    async fn advance(&mut self, ms: u64);
    /// A fault of the driver's kind, if it has any (real drivers: kill and restart things).
    async fn fault(&mut self, rng: &mut StdRng);
    /// After the drain: the ids on the dead-letter stream and in the stream.
    async fn finish(&mut self) -> (Vec<Id>, Vec<Id>);
    /// Whether acks apply only to the member's own messages (exactly-once confirmations).
    fn checks_holder(&self) -> bool;
    /// What the store says of `ids` (who holds them, in what state), for a stall's report.
    async fn diagnose(&mut self, ids: &[Id]) -> String;
    /// When the last fault ended (now, while one lasts), on [`now_ms`](Self::now_ms)'s clock;
    /// `None` for a driver without faults. The liveness bound is measured from then.
    fn faults_quiet_since_ms(&self) -> Option<u64>;
}

/// The shape of one history.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Random steps before the drain.
    pub steps: usize,
    /// Faults (for drivers that have them): the chance per step.
    pub fault_chance: f64,
    /// Liveness: most time without anything settled while members poll with room.
    pub stall_bound_ms: u64,
    /// The drain gives up after this long (the liveness check fires first).
    pub drain_limit_ms: u64,
    /// Messages with TTLs and delayed produces (real drivers only: expiry and the delayed
    /// mover read the wall clock, not tokio's).
    pub timed: bool,
}

/// One member as the history sees it.
#[derive(Default)]
struct MemberState {
    alive: bool,
    /// What it received and has not settled, oldest first.
    holding: Vec<Id>,
    /// It stopped working on these (let their deadline pass): not acked in the random phase.
    ignored: Vec<Id>,
}

/// Runs the history of `seed` on `driver`, returning the model with what it found.
pub async fn run<D: Driver>(driver: &mut D, seed: u64, shape: Shape, clock_slack_ms: u64) -> Model {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new(clock_slack_ms, ACK_DEADLINE_MS);
    let mut members: Vec<MemberState> = (0..MEMBERS).map(|_| MemberState::default()).collect();
    let mut dedupe_sent: Vec<(String, Sent)> = Vec::new();
    let mut next_message = 0u64;
    let mut paused = false;
    let mut longer = false;
    join(driver, &mut model, &mut members, 0, &mut rng).await;
    for _ in 0..shape.steps {
        let choice = rng.random_range(0..100);
        match choice {
            0..=21 => {
                if shape.timed && rng.random_bool(0.1) {
                    let batch = delayed_batch(&mut rng, &mut next_message);
                    let delay_ms = rng.random_range(100..2000);
                    let started_ms = driver.now_ms();
                    let certain = driver.produce_delayed(&batch, delay_ms).await;
                    model.apply(Event::Delayed {
                        sent: batch,
                        started_ms,
                        delay_ms,
                        certain,
                    });
                } else {
                    let batch = batch(&mut rng, &mut next_message, &mut dedupe_sent, shape.timed);
                    let atomic = rng.random_bool(0.3);
                    produce(driver, &mut model, &batch, atomic).await;
                }
            }
            22..=25 => {
                if let Some(m) = pick(&members, &mut rng, false) {
                    join(driver, &mut model, &mut members, m, &mut rng).await;
                }
            }
            26..=28 => {
                if let Some(m) = pick(&members, &mut rng, true)
                    && members.iter().filter(|m| m.alive).count() > 1
                {
                    let crash = rng.random_bool(0.5);
                    driver.leave(m, crash).await;
                    model.apply(Event::Left { member: m });
                    members[m] = MemberState::default();
                }
            }
            29..=55 => {
                if let Some(m) = pick(&members, &mut rng, true) {
                    let room = rng.random_range(1..=6);
                    poll(driver, &mut model, &mut members[m], m, room).await;
                }
            }
            56..=80 => {
                if let Some(m) = pick(&members, &mut rng, true) {
                    settle_some(driver, &mut model, &mut members[m], m, &mut rng).await;
                }
            }
            81..=91 => {
                let ms = rng.random_range(1..=ACK_DEADLINE_MS / 2);
                driver.advance(ms).await;
            }
            92 => {
                // Skip the backlog: move the group past everything produced so far.
                if let Some(position) = model.seek_position()
                    && rng.random_bool(0.15)
                {
                    driver.seek(position).await;
                    model.apply(Event::Seeked { position });
                    model.apply(Event::Progress {
                        at_ms: driver.now_ms(),
                    });
                }
            }
            93 => {
                paused = !paused;
                driver.set_paused(paused).await;
            }
            94 => {
                longer = !longer;
                let ack_deadline_ms = if longer {
                    LONGER_ACK_DEADLINE_MS
                } else {
                    ACK_DEADLINE_MS
                };
                driver.set_ack_deadline(ack_deadline_ms).await;
                model.apply(Event::DeadlineChanged {
                    ack_deadline_ms,
                    at_ms: driver.now_ms(),
                });
            }
            95 => driver.apply_retention().await,
            _ => {
                if rng.random_bool(shape.fault_chance) {
                    driver.fault(&mut rng).await;
                }
            }
        }
    }
    if paused {
        driver.set_paused(false).await;
    }
    drain(driver, &mut model, &mut members, shape).await;
    let (dead, stored) = driver.finish().await;
    model.apply(Event::DeadLettered { ids: dead });
    model.apply(Event::StreamEntries { ids: stored });
    model.finish();
    model
}

fn pick(members: &[MemberState], rng: &mut StdRng, alive: bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..members.len())
        .filter(|m| members[*m].alive == alive)
        .collect();
    (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())])
}

async fn join<D: Driver>(
    driver: &mut D,
    model: &mut Model,
    members: &mut [MemberState],
    m: usize,
    rng: &mut StdRng,
) {
    let asked = rng.random_range(1..=8);
    let max_in_flight = driver.join(m, asked).await;
    model.apply(Event::Joined {
        member: m,
        max_in_flight,
    });
    members[m] = MemberState {
        alive: true,
        ..MemberState::default()
    };
}

/// One producer's batch: plain messages, keyed ones, a dedupe key now and then (sometimes one
/// sent before, which must store nothing new), and noise the filter drops.
fn batch(
    rng: &mut StdRng,
    next: &mut u64,
    dedupe_sent: &mut Vec<(String, Sent)>,
    ttls: bool,
) -> Vec<Sent> {
    let n = rng.random_range(1..=4);
    (0..n)
        .map(|_| {
            if !dedupe_sent.is_empty() && rng.random_bool(0.08) {
                return dedupe_sent[rng.random_range(0..dedupe_sent.len())]
                    .1
                    .clone();
            }
            *next += 1;
            let sent = Sent {
                key: rng
                    .random_bool(0.6)
                    .then(|| KEYS[rng.random_range(0..KEYS.len())].to_owned()),
                dedupe: rng.random_bool(0.15).then(|| format!("d{next}")),
                filtered: rng.random_bool(0.08),
                ttl_ms: (ttls && rng.random_bool(0.1)).then(|| rng.random_range(200..3000)),
                number: *next,
            };
            if let Some(dedupe) = &sent.dedupe {
                dedupe_sent.push((dedupe.clone(), sent.clone()));
            }
            sent
        })
        .collect()
}

/// A delayed produce's batch: plain and keyed messages (no dedupe keys, no TTLs, none the
/// filter drops: a delay is what it checks).
fn delayed_batch(rng: &mut StdRng, next: &mut u64) -> Vec<Sent> {
    (0..rng.random_range(1..=3))
        .map(|_| {
            *next += 1;
            Sent {
                key: rng
                    .random_bool(0.5)
                    .then(|| KEYS[rng.random_range(0..KEYS.len())].to_owned()),
                number: *next,
                ..Sent::default()
            }
        })
        .collect()
}

async fn produce<D: Driver>(driver: &mut D, model: &mut Model, batch: &[Sent], atomic: bool) {
    let started_ms = driver.now_ms();
    if let Some(ids) = driver.produce(batch, atomic).await {
        model.apply(Event::Produced {
            sent: batch.to_vec(),
            ids,
            started_ms,
            at_ms: driver.now_ms(),
        });
    }
}

async fn poll<D: Driver>(
    driver: &mut D,
    model: &mut Model,
    member: &mut MemberState,
    m: usize,
    room: usize,
) -> usize {
    let polled_at_ms = driver.now_ms();
    let got = driver.poll(m, room).await;
    let at_ms = driver.now_ms();
    for (id, count, number) in &got {
        model.apply(Event::Delivered {
            member: m,
            id: *id,
            count: *count,
            at_ms,
            polled_at_ms,
            number: *number,
        });
        member.ignored.retain(|i| i != id);
        if !member.holding.contains(id) {
            member.holding.push(*id);
        }
    }
    got.len()
}

async fn ack<D: Driver>(driver: &mut D, model: &mut Model, m: usize, ids: &[Id]) {
    for id in ids {
        model.apply(Event::AckSent { member: m, id: *id });
    }
    let outcomes = driver.ack(m, ids).await;
    let checked_holder = driver.checks_holder();
    for (id, outcome) in ids.iter().zip(outcomes) {
        if outcome == AckOutcome::Acked {
            model.apply(Event::Progress {
                at_ms: driver.now_ms(),
            });
        }
        model.apply(Event::AckAnswered {
            member: m,
            id: *id,
            outcome,
            checked_holder,
        });
    }
}

/// The member works on some of what it holds: acks (the usual), nacks with or without a
/// delay, extends, or stops working on one and lets its deadline pass.
async fn settle_some<D: Driver>(
    driver: &mut D,
    model: &mut Model,
    member: &mut MemberState,
    m: usize,
    rng: &mut StdRng,
) {
    let workable: Vec<Id> = member
        .holding
        .iter()
        .filter(|id| !member.ignored.contains(id))
        .copied()
        .collect();
    if workable.is_empty() {
        return;
    }
    let take = rng.random_range(1..=workable.len());
    let ids: Vec<Id> = workable[..take].to_vec();
    match rng.random_range(0..100) {
        0..=64 => {
            ack(driver, model, m, &ids).await;
            member.holding.retain(|id| !ids.contains(id));
        }
        65..=79 => {
            let delay = rng
                .random_bool(0.5)
                .then(|| rng.random_range(0..=ACK_DEADLINE_MS));
            let at_ms = driver.now_ms();
            let nacked = driver.nack(m, &ids, delay).await;
            for id in &nacked {
                model.apply(Event::Nacked {
                    member: m,
                    id: *id,
                    delay_ms: delay,
                    at_ms,
                });
            }
            member.holding.retain(|id| !ids.contains(id));
        }
        80..=89 => {
            let extended = driver.extend(m, &ids).await;
            let at_ms = driver.now_ms();
            model.apply(Event::Extended {
                member: m,
                ids: extended,
                at_ms,
            });
        }
        _ => member.ignored.extend(ids),
    }
}

/// Every live member polls and acks what it gets until everything is settled, checking that
/// something is settled at least once per stall bound.
async fn drain<D: Driver>(
    driver: &mut D,
    model: &mut Model,
    members: &mut [MemberState],
    shape: Shape,
) {
    let started = driver.now_ms();
    // Whatever the random phase left held or ignored is worked on now.
    for (m, member) in members.iter_mut().enumerate() {
        if member.alive && !member.holding.is_empty() {
            let ids = std::mem::take(&mut member.holding);
            member.ignored.clear();
            ack(driver, model, m, &ids).await;
        }
    }
    model.apply(Event::Progress { at_ms: started });
    while model.unsettled() > 0 {
        let now = driver.now_ms();
        if let Some(at_ms) = driver.faults_quiet_since_ms() {
            model.apply(Event::Progress { at_ms });
        }
        if !model.check_live(now, shape.stall_bound_ms, "while draining") {
            let stuck: Vec<Id> = model.unsettled_ids().into_iter().take(5).collect();
            let diagnosis = driver.diagnose(&stuck).await;
            model.note(format!("the store says: {diagnosis}"));
            return;
        }
        if now - started > shape.drain_limit_ms {
            return;
        }
        let mut got = 0;
        for (m, member) in members.iter_mut().enumerate() {
            if !member.alive {
                continue;
            }
            got += poll(driver, model, member, m, 8).await;
            if !member.holding.is_empty() {
                let ids = std::mem::take(&mut member.holding);
                member.ignored.clear();
                ack(driver, model, m, &ids).await;
            }
        }
        if got == 0 {
            driver.advance(ACK_DEADLINE_MS / 8).await;
        }
    }
}
