//! The broker seen from outside Rust's test harness: the real binary under signals, and a
//! Python client that knows nothing but what reflection tells it (as grpcurl would).

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// The Python that has the test packages: `STREAMGATE_TEST_PYTHON`, else the repo's `.venv`,
/// else `python3`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("STREAMGATE_TEST_PYTHON") {
        return python.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

#[tokio::test]
async fn a_python_client_round_trips_through_reflection_alone() {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_reflection, google.protobuf"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "{} lacks the test's Python packages ({other:?}). Install them with \
             `scripts/setup-test-deps.sh` (or: python3 -m venv .venv && \
             .venv/bin/pip install -r tests/python/requirements.txt)",
            python.display()
        ),
    }
    let redis = RedisServer::start();
    let broker = TestBroker::start(&redis).await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/reflection_roundtrip.py");
    let addr = broker.addr.to_string();
    let out =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(addr).output())
            .await
            .unwrap()
            .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
    // What Python acknowledged is really settled in Redis.
    assert_eq!(redis.pending_count("py-orders", "py-workers").await, 0);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for flag in [
        "--listen",
        "--redis-url",
        "--redis-pool-size",
        "--redis-timeout",
        "--drain-timeout",
        "--log-format",
        "--max-batch",
        "--max-message-bytes",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(
        help.contains("STREAMGATE_LISTEN") && help.contains("STREAMGATE_REDIS_URL"),
        "{help}"
    );
    let top = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"));
}

#[tokio::test]
async fn the_binary_serves_then_drains_on_sigterm_without_leaking_the_password() {
    let redis = RedisServer::start();
    let _: () = redis
        .cmd(&["CONFIG", "SET", "requirepass", "s3cret-pw"])
        .await;
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port());
    let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--drain-timeout",
            "3s",
        ])
        .env("STREAMGATE_REDIS_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start streamgate");
    // Killed on drop, so that a failed assertion does not leave a broker running.
    let mut child = KillOnDrop(child);
    // Read the log on a thread; the first line tells the bound address.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let listening = loop {
        let line = lines.recv_timeout(WAIT).expect("no 'listening' log line");
        log.push(line.clone());
        if line.contains("streamgate listening") {
            break line;
        }
    };
    let record: serde_json::Value = serde_json::from_str(&listening).expect("JSON log line");
    let addr = record["listen"].as_str().expect("listen field").to_owned();

    // It really serves.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = streamgate::grpc::pb::broker_client::BrokerClient::new(channel);
    let ids = produce_numbered(&mut client, "bin", 0..3).await;
    assert_eq!(ids.len(), 3);
    let mut sub = Subscription::open(&mut client, tail_request(&[("bin", "0")])).await;
    assert_eq!(sub.take(3).await.len(), 3);

    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = sub.final_status().await;
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3) + WAIT,
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    log.extend(lines.try_iter());
    let log = log.join("\n");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("streamgate stopped"), "{log}");
    assert!(
        !log.contains("s3cret-pw"),
        "password leaked into logs:\n{log}"
    );
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let redis = RedisServer::start();
    let broker = TestBroker::start(&redis).await;
    let mut client = ServerReflectionClient::new(broker.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply: ServerReflectionResponse = replies.message().await.unwrap().expect("a reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "streamgate.v1.Broker",
        "streamgate.v1.Admin",
        "google.pubsub.v1.Publisher",
        "google.pubsub.v1.Subscriber",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// Docker cannot run here, so check what it would run: the binary the image starts, the
/// subcommands and flags of its CMD and HEALTHCHECK, and every STREAMGATE_* variable the
/// Dockerfile and docker-compose.yml set, against the real binary's `--help`.
#[test]
fn the_container_files_use_only_flags_and_variables_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} --help failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json_array = |line: &str| -> Vec<String> {
        let start = line.find('[').expect("exec-form JSON array");
        serde_json::from_str(&line[start..]).expect("a JSON array")
    };
    let line_of = |prefix: &str| {
        dockerfile
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("Dockerfile has no {prefix}"))
            .to_owned()
    };
    assert_eq!(json_array(&line_of("ENTRYPOINT")), ["streamgate"]);
    let cmd = dockerfile
        .lines()
        .rfind(|l| l.starts_with("CMD ["))
        .expect("the image's CMD");
    assert_eq!(json_array(cmd), ["serve"]);
    assert!(dockerfile.contains("COPY --from=build /src/target/release/streamgate"));
    assert!(dockerfile.contains("USER streamgate") && dockerfile.contains("EXPOSE 50051"));

    // The HEALTHCHECK's command: a subcommand whose flags all exist.
    let probe = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .find(|l| l.trim_start().starts_with("CMD"))
        .expect("HEALTHCHECK CMD");
    let probe = json_array(probe);
    assert_eq!(&probe[..2], ["streamgate", "health"]);
    let health_help = help(&["health"]);
    for flag in probe.iter().filter(|a| a.starts_with("--")) {
        assert!(
            health_help.contains(flag.as_str()),
            "`health` has no {flag}"
        );
    }

    let serve_help = help(&["serve"]);
    for text in [&dockerfile, &compose] {
        for var in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("STREAMGATE_"))
        {
            assert!(
                serve_help.contains(var),
                "`serve --help` does not know {var}"
            );
        }
    }
    assert!(compose.contains("--appendonly") && compose.contains("STREAMGATE_REDIS_URL"));
}
