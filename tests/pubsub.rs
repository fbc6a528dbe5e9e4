//! Google's Pub/Sub API served by streamgate, driven by Google's own client libraries for Python
//! (`google-cloud-pubsub`) and Node.js (`@google-cloud/pubsub`), unmodified, pointed at the
//! broker with `PUBSUB_EMULATOR_HOST`, on
//! Redis and on the embedded store: topics and subscriptions, 10,000 messages with attributes
//! through a streaming-pull callback, nack and redelivery, dead letters with delivery_attempt,
//! exactly-once ack confirmations, ordering keys over 100 keys with the client's multi-threaded
//! scheduler, seek to a time, filters, Pull, and the error codes of the
//! real service. The flows are `tests/python/pubsub_flows.py` and `tests/node/pubsub_flows.js`;
//! this file checks what they saw, with the same checks.

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
    repository().join(".venv/bin/python")
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Which of Google's client libraries runs the flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// `google-cloud-pubsub`, `tests/python/pubsub_flows.py`.
    Python,
    /// `@google-cloud/pubsub`, `tests/node/pubsub_flows.js`.
    Node,
}

impl Client {
    /// The command that runs `script` (`tests/python/<script>.py`, `tests/node/<script>.js`),
    /// after checking that the client library is installed (failing loudly with how to install
    /// it otherwise).
    fn command(self, script: &str) -> Command {
        let install = "Install the test packages with `bash scripts/test.sh`";
        match self {
            Client::Python => {
                let python = python();
                let probe = Command::new(&python)
                    .args(["-c", "import google.cloud.pubsub_v1"])
                    .output();
                match probe {
                    Ok(out) if out.status.success() => {}
                    other => panic!(
                        "{} lacks google-cloud-pubsub ({other:?}). {install} (or: python3 -m venv \
                         .venv && .venv/bin/pip install -r tests/python/requirements.txt)",
                        python.display()
                    ),
                }
                let mut command = Command::new(python);
                command.arg(repository().join(format!("tests/python/{script}.py")));
                command
            }
            Client::Node => {
                let package = repository().join("tests/node/node_modules/@google-cloud/pubsub");
                assert!(
                    package.is_dir(),
                    "{} is missing. {install} (or: npm ci --prefix tests/node)",
                    package.display()
                );
                let mut command = Command::new("node");
                command
                    .arg(repository().join(format!("tests/node/{script}.js")))
                    // Not on Google Cloud: no metadata server to look for.
                    .env("METADATA_SERVER_DETECTION", "none");
                command
            }
        }
    }
}

/// Runs `client`'s flows against the broker at `addr`; what the client saw.
async fn run_flows(client: Client, addr: std::net::SocketAddr, project: &str) -> Value {
    let mut command = client.command("pubsub_flows");
    command
        .arg(project)
        .arg(MESSAGES.to_string())
        .env("PUBSUB_EMULATOR_HOST", addr.to_string());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("run the {client:?} Pub/Sub client: {err}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the {client:?} Pub/Sub flows failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("no result from the flows ({err}):\n{stdout}\n{stderr}"))
}

fn check(client: Client, seen: &Value) {
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
    if client == Client::Python {
        assert_eq!(
            seen["exactly_once_second_ack"],
            serde_json::json!(["INVALID_ACK_ID"]),
            "{seen}"
        );
    }
    assert_eq!(seen["replayed"], serde_json::json!([10, 10]), "{seen}");
    let kept: Vec<String> = (0..10).map(|i| format!("keep {i}")).collect();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(seen["filtered"], serde_json::json!(kept_sorted), "{seen}");
    // Pull is in the Python client's low-level API; Node's high-level client has none.
    if client == Client::Python {
        assert_eq!(seen["pulled"], serde_json::json!(["pulled"]), "{seen}");
    }
    assert!(seen.get("subscriber_errors").is_none(), "{seen}");
    assert_eq!(
        seen["ordered"],
        serde_json::json!({"keys": 100, "in_order": true, "messages": 1000, "overlaps": 0}),
        "{seen}"
    );
    println!(
        "{client:?}: 1,000 ordered messages over 100 keys in {} s",
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
    assert_eq!(errors["short_retention"], "InvalidArgument", "{seen}");
    assert_eq!(seen["default_retention_seconds"], 604_800.0, "{seen}");
    assert_eq!(seen["after_delete"], "NotFound", "{seen}");
}

/// Flows on Redis, and what the client acknowledged settled in Redis, in plain entries any client
/// reads.
async fn on_redis(client: Client, project: &str) {
    let redis = RedisServer::start();
    let broker = TestBroker::start(&redis).await;
    let seen = run_flows(client, broker.addr, project).await;
    check(client, &seen);
    let orders = format!("{project}/orders");
    assert_eq!(redis.pending_count(&orders, "orders-sub").await, 0);
    let length: u64 = redis.cmd(&["XLEN", &orders]).await;
    assert_eq!(length as usize, MESSAGES);
    let first: Vec<redis::Value> = redis
        .cmd(&["XRANGE", &orders, "-", "+", "COUNT", "1"])
        .await;
    let text = format!("{first:?}");
    for field in ["data", "kind", "order", "n"] {
        assert!(text.contains(field), "{text}");
    }
    // Pub/Sub's retention became the streams' stored policies: `orders` keeps what its
    // subscription acknowledged (retain_acked_messages), `mixed` (a default subscription, every
    // message acknowledged or filtered out) is emptied by the broker's retention.
    let orders_policy: String = redis.cmd(&["HGET", "streamgate:retention", &orders]).await;
    assert!(
        orders_policy.contains(r#""acked":false"#),
        "{orders_policy}"
    );
    assert!(
        orders_policy.contains(r#""max_age_ms":604800000"#),
        "{orders_policy}"
    );
    let mixed = format!("{project}/mixed");
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = redis.cmd(&["XLEN", &mixed]).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        left, 0,
        "the acknowledged entries of {mixed} were not deleted"
    );
}

async fn on_the_embedded_store(client: Client, project: &str) {
    let broker = TestBroker::start_config(streamgate::config::ServeConfig::in_memory()).await;
    let seen = run_flows(client, broker.addr, project).await;
    check(client, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_on_redis() {
    on_redis(Client::Python, "proj-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_on_the_embedded_store() {
    on_the_embedded_store(Client::Python, "proj-memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_node_client_on_redis() {
    on_redis(Client::Node, "proj-node-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_node_client_on_the_embedded_store() {
    on_the_embedded_store(Client::Node, "proj-node-memory").await;
}

/// A broker SIGKILLed while Google's Python client publishes and streaming-pulls through it,
/// started again at the same address a second later: nothing the publisher got an id for is
/// lost, and the subscriber's stream reconnects by itself (the script never reopens it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_rides_through_a_broker_sigkill() {
    const CRASH_MESSAGES: usize = 600;
    let redis = RedisServer::start();
    let mut broker = BrokerProcess::start(&redis, &[]);
    let mut command = Client::Python.command("pubsub_crash");
    command
        .args(["proj-crash", &CRASH_MESSAGES.to_string()])
        .env("PUBSUB_EMULATOR_HOST", broker.addr.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("start the Python client");
    // The trickle lasts 10 s or so; the broker dies 2.5 s in and is back a second later.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    broker.kill();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    broker.restart();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .expect("the Python client's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the crash flow failed:\n{stdout}\n{stderr}"
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("no result ({err}):\n{stdout}\n{stderr}"));
    println!("through a broker SIGKILL: {seen}");
    let published = seen["published"].as_u64().unwrap();
    assert!(published > 0, "{seen}");
    assert_eq!(seen["received"], published, "lost messages: {seen}");
    assert_eq!(seen["missing"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["stream_ended_by_itself"], false, "{seen}");
    // Every publish got an id in the end (the client retries UNAVAILABLE by itself).
    assert_eq!(published as usize, CRASH_MESSAGES, "{seen}");
}

/// Issue 27's ordering scenario with Google's Python client (20 keys × 100 messages, a 1 ms
/// callback acking each), with the reply to one ack lost on the broker's link to Redis: Redis
/// acknowledges, the broker times out (what a loaded machine does now and then). Every key
/// goes on, in order, well before the ordering heal pass (30 s) would have released it: before
/// an ack and its release were one step, the key whose ack took while its reply was lost
/// stopped until that pass, with nothing logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_keeps_every_ordering_key_moving_when_an_ack_reply_is_lost() {
    use std::io::{BufRead, Write};
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let mut config = streamgate::config::ServeConfig::for_redis(&format!("redis://{}", proxy.addr));
    config.redis_timeout = std::time::Duration::from_millis(250);
    let broker = TestBroker::start_config(config).await;
    let project = "proj-ordering-faults";
    let mut command = Client::Python.command("pubsub_ordering_faults");
    command
        .arg(project)
        .env("PUBSUB_EMULATOR_HOST", broker.addr.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("start the Python client");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::task::block_in_place(|| stdout.read_line(&mut line)).expect("the client's output");
    assert_eq!(line.trim(), "published", "{line}");
    // The 20th message of key 7: its id goes to Redis first in the client's receipt
    // (ModifyAckDeadline), then in its ack, whose reply is the one lost.
    let stream = format!("{project}/ordered-faults");
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis.cmd(&["XRANGE", &stream, "-", "+"]).await;
    let (id, _) = entries
        .iter()
        .find(|(_, fields)| fields.iter().any(|(k, v)| k == "data" && v == "7:19"))
        .expect("message 7:19 in the stream");
    proxy.lose_reply_to(id.as_bytes(), 2, std::time::Duration::from_millis(400));
    writeln!(stdin, "go").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).map(|_| rest)
    })
    .await
    .unwrap()
    .expect("the client's output");
    let status = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "the flow failed:\n{stderr}");
    let last = out.lines().last().unwrap_or_default();
    let seen: Value = serde_json::from_str(last)
        .unwrap_or_else(|err| panic!("no result ({err}): {out}\n{stderr}"));
    println!("ordering with an ack's reply lost: {seen}");
    assert!(proxy.reply_lost(), "the ack of 7:19 never reached Redis");
    assert_eq!(seen["arrived"], 2000, "{seen}");
    assert_eq!(seen["in_order"], true, "{seen}");
    // A key stopped until the heal pass takes 30 s.
    let seconds = seen["seconds"].as_f64().unwrap();
    assert!(seconds < 20.0, "a key waited for the heal pass: {seen}");
}
