//! The delivery core checked against a model of its promises (`checker/model.rs`) over random
//! histories (`checker/history.rs`): deterministically on the embedded store with tokio's
//! clock paused, and with real concurrency and faults through real broker processes on Redis
//! (and Valkey: set `STREAMGATE_TEST_REDIS_SERVER` to a `valkey-server`).
//!
//! - `STREAMGATE_CHECKER_HISTORIES=N`: how many histories per test (a soak: thousands);
//! - `STREAMGATE_CHECKER_SEED=S`: replays the one history of seed `S` (what a failure prints).

// The drivers share the history and the model; a test uses the parts it needs.
#[allow(dead_code, unreachable_pub)]
mod checker {
    pub mod core_driver;
    pub mod events;
    pub mod grpc_driver;
    pub mod history;
    pub mod model;
}

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use checker::core_driver::CoreDriver;
use checker::grpc_driver::{FaultClock, GrpcDriver};
use checker::history::{self, Shape};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{BrokerProcess, Fault, FaultProxy, RedisServer};

/// How many histories a test runs: the env var, else `default`.
fn histories(default: u64) -> u64 {
    std::env::var("STREAMGATE_CHECKER_HISTORIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seeds a test runs: the one to replay, else `count` from a base that varies per run
/// (printed, so that any run can be replayed).
fn seeds(count: u64, base_default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("STREAMGATE_CHECKER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![seed];
    }
    let base = std::env::var("STREAMGATE_CHECKER_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(base_default);
    (base..base + count).collect()
}

/// A deterministic history: one current-thread runtime with the clock paused, per seed.
fn deterministic(seed: u64, exactly_once: bool) -> checker::model::Model {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut driver = CoreDriver::new(seed, exactly_once).await;
        let shape = Shape {
            steps: 300,
            fault_chance: 0.0,
            stall_bound_ms: stall_bound_ms(),
            drain_limit_ms: 120_000,
            timed: false,
        };
        history::run(&mut driver, seed, shape, 0).await
    })
}

/// Liveness: one ack deadline, the longest backoff and two sweep intervals, plus a margin.
fn stall_bound_ms() -> u64 {
    history::LONGER_ACK_DEADLINE_MS + history::BACKOFF_MAX_MS + 2 * history::BACKOFF_MIN_MS + 500
}

/// Fails with every violating seed of `results` and how to replay it; prints the figures.
fn check_all(test: &str, results: Vec<(u64, checker::model::Model)>) {
    let mut failures = Vec::new();
    let (mut events, mut messages, mut longest_gap, mut expired, mut delayed) = (0, 0, 0, 0, 0);
    let (mut seeks, mut skipped) = (0, 0);
    let seeds: Vec<u64> = results.iter().map(|(seed, _)| *seed).collect();
    for (seed, model) in results {
        events += model.events();
        messages += model.produced();
        longest_gap = longest_gap.max(model.longest_gap_ms());
        expired += model.expired();
        delayed += model.delayed();
        seeks += model.seeks().0;
        skipped += model.seeks().1;
        if !model.violations().is_empty() {
            failures.push(format!(
                "seed {seed}:\n  {}\n  replay: STREAMGATE_CHECKER_SEED={seed} cargo test --test checker {test} -- --nocapture",
                model.violations().join("\n  ")
            ));
        }
    }
    println!(
        "{test}: {} histories (seeds {}..={}), {events} events, {messages} messages ({delayed} delayed, {expired} settled by their TTL, {skipped} skipped by {seeks} seeks), longest wait for progress {longest_gap} ms, {} violating",
        seeds.len(),
        seeds.first().unwrap_or(&0),
        seeds.last().unwrap_or(&0),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deterministic_histories_on_the_embedded_store() {
    let seeds = seeds(histories(300), 1);
    let results = seeds
        .iter()
        .map(|&s| (s, deterministic(s, false)))
        .collect();
    check_all("deterministic_histories_on_the_embedded_store", results);
}

#[test]
fn deterministic_histories_with_exactly_once_acks() {
    let seeds = seeds(histories(150), 100_001);
    let results = seeds.iter().map(|&s| (s, deterministic(s, true))).collect();
    check_all("deterministic_histories_with_exactly_once_acks", results);
}

#[test]
fn a_seed_replays_the_same_history() {
    let seed = 42;
    let first = deterministic(seed, false);
    let second = deterministic(seed, false);
    assert_eq!(
        (first.events(), first.produced(), first.longest_gap_ms()),
        (second.events(), second.produced(), second.longest_gap_ms())
    );
}

/// Real histories at once on one broker, each on its own stream.
const AT_ONCE: usize = 4;

/// What the fault task did, by kind.
#[derive(Debug, Default)]
struct FaultsMade {
    broker_kills: usize,
    redis_restarts: usize,
    latency: usize,
    dropped_connections: usize,
    black_holes: usize,
    lost_replies: usize,
}

/// Every second or two until `done`, one fault: the broker SIGKILLed and restarted, Redis
/// SIGKILLed and back from its append-only file, or the broker's link to Redis (through
/// `proxy`) slowed, cut, black-holed or made to lose its replies for up to two seconds.
/// `clock` records when each ends, for the histories' liveness bound.
async fn faults(
    mut broker: BrokerProcess,
    mut redis: RedisServer,
    proxy: FaultProxy,
    clock: Arc<FaultClock>,
    seed: u64,
    done: Arc<AtomicBool>,
) -> FaultsMade {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut made = FaultsMade::default();
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2500))).await;
        if done.load(Ordering::SeqCst) {
            break;
        }
        let lasting = Duration::from_millis(rng.random_range(300..2000));
        clock.begin();
        match rng.random_range(0..100) {
            0..30 => {
                tokio::task::block_in_place(|| broker.restart());
                made.broker_kills += 1;
            }
            30..50 => {
                tokio::task::block_in_place(|| redis.restart());
                made.redis_restarts += 1;
            }
            50..65 => {
                let delay = Duration::from_millis(rng.random_range(5..150));
                proxy.set(Fault::Latency(delay));
                tokio::time::sleep(lasting).await;
                made.latency += 1;
            }
            65..75 => {
                proxy.drop_connections();
                made.dropped_connections += 1;
            }
            75..87 => {
                proxy.set(Fault::BlackHole);
                tokio::time::sleep(lasting).await;
                made.black_holes += 1;
            }
            _ => {
                proxy.set(Fault::HoldReplies);
                tokio::time::sleep(lasting).await;
                made.lost_replies += 1;
            }
        }
        proxy.set(Fault::None);
        clock.end();
    }
    made
}

/// Histories through a real broker on a real Redis (or what `STREAMGATE_TEST_REDIS_SERVER`
/// names), `AT_ONCE` at a time, with the broker and Redis killed and restarted beneath them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_through_a_real_broker_with_faults() {
    let test = "histories_through_a_real_broker_with_faults";
    let seeds = seeds(histories(8), 500_001);
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    // The broker reaches Redis through a proxy that misbehaves on demand; it gives up on a
    // reply after 500 ms (2 s by default), so that a fault costs it errors, not just waiting.
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let redis_url = format!("redis://{}", proxy.addr);
    let broker = BrokerProcess::start_at(&redis_url, &["--redis-timeout", "500ms"]);
    let channel = broker.channel();
    let clock = Arc::new(FaultClock::default());
    // Every history's subscription exists before the faults start: these histories check
    // delivery (a CreateSubscription cut by a Redis restart left the policy without its group
    // until a retry made it: README, "Checked against a model").
    let mut drivers = Vec::new();
    for &seed in &seeds {
        drivers.push((
            seed,
            GrpcDriver::new(channel.clone(), format!("h{seed}"), clock.clone()).await,
        ));
    }
    let done = Arc::new(AtomicBool::new(false));
    let fault_task = tokio::spawn(faults(broker, redis, proxy, clock, seeds[0], done.clone()));
    let shape = Shape {
        steps: 150,
        fault_chance: 0.0,
        // Measured from the end of the last fault (drivers say when): a redelivery after a
        // lost reply needs the ack deadline and its backoff, the broker a moment to reconnect.
        stall_bound_ms: 8_000,
        drain_limit_ms: 60_000,
        timed: true,
    };
    let mut models = Vec::new();
    while !drivers.is_empty() {
        let chunk: Vec<_> = drivers.drain(..AT_ONCE.min(drivers.len())).collect();
        let runs: Vec<_> = chunk
            .into_iter()
            .map(|(seed, mut driver)| {
                tokio::spawn(async move {
                    // Redis counts idle time in milliseconds, and the driver sees a delivery a
                    // little after the broker made it.
                    (seed, history::run(&mut driver, seed, shape, 25).await)
                })
            })
            .collect();
        for run in runs {
            models.push(run.await.expect("history task"));
        }
    }
    done.store(true, Ordering::SeqCst);
    let made = fault_task.await.expect("fault task");
    println!("{test}: faults {made:?}");
    check_all(test, models);
}
