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
    pub mod history;
    pub mod model;
}

use checker::core_driver::CoreDriver;
use checker::history::{self, Shape};

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
        };
        history::run(&mut driver, seed, shape, 0).await
    })
}

/// Liveness: one ack deadline, the longest backoff and two sweep intervals, plus a margin.
fn stall_bound_ms() -> u64 {
    history::ACK_DEADLINE_MS + history::BACKOFF_MAX_MS + 2 * history::BACKOFF_MIN_MS + 500
}

/// Runs `seeds` through `one`, and fails with every violating seed and how to replay it.
fn check_all(test: &str, seeds: &[u64], one: impl Fn(u64) -> checker::model::Model) {
    let mut failures = Vec::new();
    let (mut events, mut messages, mut longest_gap) = (0, 0, 0);
    for &seed in seeds {
        let model = one(seed);
        events += model.events();
        messages += model.produced();
        longest_gap = longest_gap.max(model.longest_gap_ms());
        if !model.violations().is_empty() {
            failures.push(format!(
                "seed {seed}:\n  {}\n  replay: STREAMGATE_CHECKER_SEED={seed} cargo test --test checker {test} -- --nocapture",
                model.violations().join("\n  ")
            ));
        }
    }
    println!(
        "{test}: {} histories (seeds {}..={}), {events} events, {messages} messages, longest wait for progress {longest_gap} ms, {} violating",
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
    check_all(
        "deterministic_histories_on_the_embedded_store",
        &seeds,
        |seed| deterministic(seed, false),
    );
}

#[test]
fn deterministic_histories_with_exactly_once_acks() {
    let seeds = seeds(histories(150), 100_001);
    check_all(
        "deterministic_histories_with_exactly_once_acks",
        &seeds,
        |seed| deterministic(seed, true),
    );
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
