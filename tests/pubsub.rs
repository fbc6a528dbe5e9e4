//! Google's Pub/Sub API served by streamgate, driven by Google's own Python client library
//! (`google-cloud-pubsub`, unmodified, pointed at the broker with `PUBSUB_EMULATOR_HOST`), on
//! Redis and on the embedded store: topics and subscriptions, 10,000 messages with attributes
//! through a streaming-pull callback, nack and redelivery, dead letters with delivery_attempt,
//! exactly-once ack confirmations, ordering keys over 100 keys with the client's multi-threaded
//! scheduler, seek to a time, filters, Pull, and the error codes of the
//! real service. The flows are `tests/python/pubsub_flows.py`; this file checks what it saw.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::*;

const MESSAGES: usize = 10_000;

/// The Python with the test packages: `STREAMGATE_TEST_PYTHON`, else the repository's `.venv`
/// (which `scripts/test.sh` fills from tests/python/requirements.txt).
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("STREAMGATE_TEST_PYTHON") {
        return python.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Runs the flows against the broker at `addr`; what the client saw.
async fn run_flows(addr: std::net::SocketAddr, project: &str) -> Value {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import google.cloud.pubsub_v1"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "{} lacks google-cloud-pubsub ({other:?}). Install the test packages with \
             `bash scripts/test.sh` (or: python3 -m venv .venv && \
             .venv/bin/pip install -r tests/python/requirements.txt)",
            python.display()
        ),
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/pubsub_flows.py");
    let project = project.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(project)
            .arg(MESSAGES.to_string())
            .env("PUBSUB_EMULATOR_HOST", addr.to_string())
            .output()
    })
    .await
    .unwrap()
    .expect("run the Python Pub/Sub client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Pub/Sub flows failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("no result from the flows ({err}):\n{stdout}\n{stderr}"))
}

fn check(seen: &Value) {
    assert_eq!(seen["published"], MESSAGES, "{seen}");
    assert_eq!(seen["received"], MESSAGES, "{seen}");
    assert_eq!(seen["attributes_ok"], true, "{seen}");
    assert_eq!(seen["nack_redelivered"], true, "{seen}");
    assert_eq!(
        seen["delivery_attempts"],
        serde_json::json!([1, 2, 3, 4, 5]),
        "{seen}"
    );
    assert_eq!(
        seen["dead_lettered"],
        serde_json::json!(["poison"]),
        "{seen}"
    );
    let confirmed = seen["exactly_once"].as_array().unwrap();
    assert_eq!(confirmed.len(), 20, "{seen}");
    assert!(confirmed.iter().all(|c| c == "SUCCESS"), "{seen}");
    assert_eq!(seen["replayed"], serde_json::json!([10, 10]), "{seen}");
    let kept: Vec<String> = (0..10).map(|i| format!("keep {i}")).collect();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(seen["filtered"], serde_json::json!(kept_sorted), "{seen}");
    assert_eq!(seen["pulled"], serde_json::json!(["pulled"]), "{seen}");
    assert_eq!(
        seen["ordered"],
        serde_json::json!({"keys": 100, "in_order": true, "messages": 1000, "overlaps": 0}),
        "{seen}"
    );
    println!(
        "1,000 ordered messages over 100 keys in {} s",
        seen["ordered_seconds"]
    );
    for topic in [
        "dead", "mixed", "once", "ordered", "orders", "poison", "replay", "retry",
    ] {
        assert!(
            seen["topics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == topic),
            "{topic} missing: {seen}"
        );
    }
    assert_eq!(
        seen["topic_subscriptions"].as_array().unwrap().len(),
        1,
        "{seen}"
    );
    let errors = &seen["errors"];
    assert_eq!(errors["create_existing_topic"], "AlreadyExists", "{seen}");
    assert_eq!(errors["get_missing_topic"], "NotFound", "{seen}");
    assert_eq!(errors["bad_topic_name"], "InvalidArgument", "{seen}");
    assert_eq!(errors["publish_missing_topic"], "NotFound", "{seen}");
    assert_eq!(
        errors["push_subscription"], "MethodNotImplemented",
        "{seen}"
    );
    assert_eq!(errors["snapshot"], "MethodNotImplemented", "{seen}");
    assert_eq!(seen["after_delete"], "NotFound", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_on_redis() {
    let redis = RedisServer::start();
    let broker = TestBroker::start(&redis).await;
    let seen = run_flows(broker.addr, "proj-redis").await;
    check(&seen);
    // What the client acknowledged is settled in Redis, in plain entries any client reads.
    assert_eq!(
        redis.pending_count("proj-redis/orders", "orders-sub").await,
        0
    );
    let length: u64 = redis.cmd(&["XLEN", "proj-redis/orders"]).await;
    assert_eq!(length as usize, MESSAGES);
    let first: Vec<redis::Value> = redis
        .cmd(&["XRANGE", "proj-redis/orders", "-", "+", "COUNT", "1"])
        .await;
    let text = format!("{first:?}");
    for field in ["data", "kind", "order", "n"] {
        assert!(text.contains(field), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_on_the_embedded_store() {
    let broker = TestBroker::start_config(streamgate::config::ServeConfig::in_memory()).await;
    let seen = run_flows(broker.addr, "proj-memory").await;
    check(&seen);
}
