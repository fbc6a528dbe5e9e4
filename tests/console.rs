//! The web console (`--console-addr`), end to end: the real broker binary on the embedded store
//! with a principals file, Debian's Chromium driven by playwright-core
//! (`tests/node/console_flows.js`) doing what an operator does, and this side checking through
//! the gRPC API that what the page showed and did is what happened. Screenshots land in
//! `target/console-screenshots`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use streamgate::auth::hash_token;
use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_TOKEN: &str = "console-admin-token";
const VIEWER_TOKEN: &str = "console-viewer-token";
const ONCALL_TOKEN: &str = "console-oncall-token";
const STREAM: &str = "orders";
const GROUP: &str = "billing";

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn principals_file(dir: &Path) -> PathBuf {
    let path = dir.join("principals.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[principal]]
name = "admin"
token_sha256 = ["{admin}"]
allow = [{{ permissions = ["produce", "consume", "admin-read", "admin-write"], streams = ["*"] }}]

[[principal]]
name = "viewer"
token_sha256 = ["{viewer}"]
allow = [{{ permissions = ["admin-read"], streams = ["*"] }}]

[[principal]]
name = "oncall"
token_sha256 = ["{oncall}"]
allow = [
  {{ permissions = ["admin-read"], streams = ["*"] }},
  {{ permissions = ["admin-write"], streams = ["*:dlq"] }},
]
"#,
            admin = hash_token(ADMIN_TOKEN),
            viewer = hash_token(VIEWER_TOKEN),
            oncall = hash_token(ONCALL_TOKEN),
        ),
    )
    .unwrap();
    path
}

/// Adds the admin's `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct AsAdmin;

impl Interceptor for AsAdmin {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value: MetadataValue<_> = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

type Broker = BrokerClient<InterceptedService<Channel, AsAdmin>>;
type Admin = AdminClient<InterceptedService<Channel, AsAdmin>>;

/// Starts the broker binary on the embedded store with the console on a port it picks itself
/// (no race with other tests for a free port); the console's port, read from its log line.
fn start_with_console(extra_args: &[&str]) -> (BrokerProcess, u16) {
    let mut args = vec!["--console-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra_args);
    let process = BrokerProcess::start_in_memory(&args);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = process.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("serving the console")) {
            let after = &line[line.find("http://127.0.0.1:").expect("console url") + 17..];
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            return (process, digits.parse().expect("console port"));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker never said where the console is; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fetch_as(consumer: &str, count: u32) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: STREAM.into(),
            after_id: ">".into(),
        }],
        group: GROUP.into(),
        consumer: consumer.into(),
        count,
        ..Default::default()
    }
}

async fn dead_letters(admin: &mut Admin) -> Vec<pb::DeadLetter> {
    admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            dead_letter_stream: format!("{STREAM}:dlq"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

/// What the operator will find: entries in `orders`, a subscription whose member `worker-1`
/// holds two of them, and two dead letters (nacked at their last allowed delivery).
async fn set_up(broker: &mut Broker, admin: &mut Admin) {
    broker.produce(numbered(STREAM, 0..8)).await.unwrap();
    admin
        .create_subscription(pb::CreateSubscriptionRequest {
            stream: STREAM.into(),
            group: GROUP.into(),
            start_id: "0".into(),
            policy: Some(pb::SubscriptionPolicy {
                max_deliveries: Some(1),
                ack_deadline_ms: Some(300_000),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let first = broker
        .fetch(fetch_as("worker-1", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.messages.len(), 2);
    broker
        .nack(pb::NackRequest {
            stream: STREAM.into(),
            group: GROUP.into(),
            consumer: "worker-1".into(),
            ids: first.messages.iter().map(|m| m.id.clone()).collect(),
            delay_ms: Some(0),
        })
        .await
        .unwrap();
    // Their next delivery would be the second of one allowed: they go to the dead letters, and
    // the member gets new entries instead, which it keeps pending.
    let mut held = 0;
    for _ in 0..50 {
        held += broker
            .fetch(fetch_as("worker-1", 2))
            .await
            .unwrap()
            .into_inner()
            .messages
            .len();
        if dead_letters(admin).await.len() == 2 && held >= 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "set-up: {held} held, dead letters {:?}",
        dead_letters(admin).await
    );
}

#[tokio::test]
async fn an_operator_sees_and_repairs_the_broker_in_a_real_browser() {
    let playwright = repository().join("tests/node/node_modules/playwright-core");
    assert!(
        playwright.is_dir(),
        "{} is missing: install the test packages with `bash scripts/test.sh` (or npm ci --prefix tests/node)",
        playwright.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: `bash scripts/test.sh` installs Debian's chromium (or apt-get install chromium)"
    );
    let dir = tempfile::tempdir().unwrap();
    let principals = principals_file(dir.path());
    let (process, console_port) = start_with_console(&[
        "--principals-file",
        principals.to_str().unwrap(),
        "--console-sample-interval",
        "300ms",
        "--redelivery-backoff-min",
        "10ms",
        "--redelivery-backoff-max",
        "20ms",
    ]);
    let channel = process.channel();
    let mut broker = BrokerClient::with_interceptor(channel.clone(), AsAdmin);
    let mut admin = AdminClient::with_interceptor(channel, AsAdmin);
    set_up(&mut broker, &mut admin).await;

    let shots = repository().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut command = Command::new("node");
    command
        .arg(repository().join("tests/node/console_flows.js"))
        .env(
            "CONSOLE_URL",
            format!("http://127.0.0.1:{console_port}/console/"),
        )
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("VIEWER_TOKEN", VIEWER_TOKEN)
        .env("ONCALL_TOKEN", ONCALL_TOKEN)
        .env("STREAM", STREAM)
        .env("GROUP", GROUP);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run node tests/node/console_flows.js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser flows failed (screenshots in {}):\n{stdout}\n{stderr}\nbroker log:\n{}",
        shots.display(),
        process.log_text()
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|err| panic!("flows printed no JSON ({err}): {stdout}"));
    println!("{seen:#}");

    // What the page did happened: the browser's three produces and the replayed letter are on
    // the stream, and one dead letter is left.
    let entries = admin
        .query_messages(pb::QueryMessagesRequest {
            stream: STREAM.into(),
            count: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    for id in seen["produced_from_browser"].as_array().unwrap() {
        assert!(ids.contains(&id.as_str().unwrap()), "{id} from the browser");
    }
    let replayed = seen["replayed"]["id"].as_str().unwrap();
    assert!(
        ids.contains(&replayed),
        "the replayed letter {replayed} is back"
    );
    assert_eq!(dead_letters(&mut admin).await.len(), 1);
    let lag = &seen["lag_chart"];
    assert_eq!(
        lag["after"].as_i64().unwrap(),
        lag["before"].as_i64().unwrap() + 3
    );
    for shot in [
        "1-streams",
        "2-stream-lag-chart",
        "3-group-pending",
        "6-replayed",
    ] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot}.png");
    }
}

#[tokio::test]
async fn the_console_port_serves_the_page_and_the_grpc_port_does_not() {
    let (process, console_port) = start_with_console(&[]);

    let root = http_get(console_port, "/");
    assert!(root.starts_with("HTTP/1.1 302"), "{root}");
    assert!(root.contains("location: /console/"), "{root}");
    let page = http_get(console_port, "/console/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("content-type: text/html"), "{page}");
    assert!(page.contains("content-security-policy: default-src 'self'"));
    let proto = http_get(console_port, "/console/proto/streamgate/v1/admin.proto");
    assert!(
        proto.contains("rpc GetHistory"),
        "the page reads the served protos"
    );
    let missing = http_get(console_port, "/console/nothing.js");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // The gRPC port is what it was: HTTP/2 gRPC only, no page.
    let on_grpc = http_get(process.addr.port(), "/console/");
    assert!(!on_grpc.contains("<!doctype html>"), "{on_grpc}");
    let mut admin = AdminClient::new(process.channel());
    let caller = admin
        .describe_caller(pb::DescribeCallerRequest {
            streams: vec!["orders".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!caller.authentication);
    assert_eq!(caller.streams[0].permissions.len(), 4);
    let history = admin
        .get_history(pb::GetHistoryRequest {
            stream: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.interval_ms, 10_000);
}

#[tokio::test]
async fn without_the_console_history_is_refused_with_the_flag_to_set() {
    let process = BrokerProcess::start_in_memory(&[]);
    let mut admin = AdminClient::new(process.channel());
    let err = admin
        .get_history(pb::GetHistoryRequest {
            stream: "orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("--console-addr"),
        "{}",
        err.message()
    );
}
