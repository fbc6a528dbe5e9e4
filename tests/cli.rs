//! The command-line client, driven as a subprocess against a real broker process (on the
//! embedded store: what a new user gets from `scripts/run.sh` with nothing else installed).

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::*;

/// Runs `streamgate <args>` against `broker`.
fn cli(broker: &BrokerProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(args)
        .env("STREAMGATE_SERVER", broker.addr.to_string())
        .output()
        .expect("run the streamgate binary")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn produce_subscribe_ack_with_the_cli_alone() {
    let broker = BrokerProcess::start_in_memory(&[]);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "from a file").unwrap();

    let first = stdout(&cli(&broker, &["produce", "orders", "item=book", "qty=2"]));
    let id = first.trim().to_owned();
    assert!(id.contains('-'), "{first}");
    let second = json_lines(&cli(
        &broker,
        &[
            "--json",
            "produce",
            "orders",
            &format!("note=@{}", body.display()),
        ],
    ));
    assert_eq!(second[0]["stream"], "orders");

    // Group mode acks each message after printing it.
    let got = json_lines(&cli(
        &broker,
        &[
            "--json",
            "subscribe",
            "orders",
            "--group",
            "billing",
            "--from",
            "0",
            "--count",
            "2",
        ],
    ));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(
        got[0]["fields"],
        serde_json::json!([["item", "book"], ["qty", "2"]])
    );
    assert_eq!(got[1]["fields"][0][1], "from a file");
    assert_eq!(got[0]["deliveryCount"], 1);
    let summary = json_lines(&cli(
        &broker,
        &[
            "--json",
            "admin",
            "get-pending-summary",
            "stream=orders",
            "group=billing",
        ],
    ));
    assert_eq!(summary[0]["count"], 0, "{summary:?}");

    // People get aligned text.
    let third = stdout(&cli(&broker, &["produce", "orders", "item=pen"]));
    let text = stdout(&cli(
        &broker,
        &[
            "subscribe",
            "orders",
            "--group",
            "billing",
            "--count",
            "1",
            "--no-ack",
        ],
    ));
    assert_eq!(text.trim(), format!("orders  {}  item=pen", third.trim()));
    // --no-ack left it pending; nack gives it back, ack settles it.
    let nacked = stdout(&cli(
        &broker,
        &[
            "nack",
            "orders",
            third.trim(),
            "--group",
            "billing",
            "--delay",
            "1ms",
        ],
    ));
    assert_eq!(nacked.trim(), "nacked 1");
    let acked = stdout(&cli(
        &broker,
        &["ack", "orders", third.trim(), "--group", "billing"],
    ));
    assert_eq!(acked.trim(), "acknowledged 1");
}

#[test]
fn every_admin_rpc_is_reachable_and_errors_are_clear() {
    let broker = BrokerProcess::start_in_memory(&[]);
    let listing = stdout(&cli(&broker, &["admin"]));
    for rpc in [
        "list-streams",
        "list-pending",
        "auto-claim",
        "replay-dead-letters",
    ] {
        assert!(listing.contains(rpc), "{listing}");
    }
    stdout(&cli(&broker, &["produce", "s", "n=1"]));
    stdout(&cli(&broker, &["produce", "s", "n=2"]));
    stdout(&cli(
        &broker,
        &["admin", "create-group", "stream=s", "group=g", "start_id=0"],
    ));
    let groups = stdout(&cli(&broker, &["admin", "list-groups", "stream=s"]));
    assert!(
        groups.contains("name") && groups.contains("lag"),
        "{groups}"
    );
    let trimmed = json_lines(&cli(
        &broker,
        &[
            "--json",
            "admin",
            "trim-stream",
            "stream=s",
            r#"trim={"maxLen":1}"#,
        ],
    ));
    assert_eq!(trimmed[0]["trimmed"], 1);
    let messages = json_lines(&cli(
        &broker,
        &["--json", "admin", "QueryMessages", "stream=s"],
    ));
    assert_eq!(messages[0]["entries"][0]["fields"]["n"], "2");
    let deleted = json_lines(&cli(
        &broker,
        &[
            "--json",
            "admin",
            "delete-messages",
            "stream=s",
            "ids=1-0,2-0",
        ],
    ));
    assert_eq!(deleted[0]["deleted"], 0);

    // Errors name the problem and exit 1.
    let missing = cli(&broker, &["admin", "get-stream-info", "stream=nope"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("NotFound") && stderr.contains("`nope`"),
        "{stderr}"
    );
    let typo = cli(&broker, &["admin", "list-groups", "strem=s"]);
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        !typo.status.success() && stderr.contains("no field `strem`"),
        "{stderr}"
    );
    let unknown = cli(&broker, &["admin", "frobnicate"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no Admin RPC `frobnicate`"));
}

#[test]
fn health_exits_zero_when_serving_and_one_when_not() {
    let broker = BrokerProcess::start_in_memory(&[]);
    let ok = cli(&broker, &["health"]);
    assert_eq!(stdout(&ok).trim(), "SERVING");
    let mut gone = broker;
    gone.kill();
    let down = cli(&gone, &["health", "--timeout", "1s"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

#[test]
fn the_cli_sends_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.toml");
    std::fs::write(
        &file,
        format!(
            "[[principal]]\nname = \"me\"\ntoken_sha256 = [\"{}\"]\nallow = [{{ permissions = [\"produce\"], streams = [\"mine.*\"] }}]\n",
            streamgate::auth::hash_token("cli-token")
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start_in_memory(&["--principals-file", file.to_str().unwrap()]);
    let anonymous = cli(&broker, &["produce", "mine.a", "k=v"]);
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("Unauthenticated"));
    let ok = cli(
        &broker,
        &["--token", "cli-token", "produce", "mine.a", "k=v"],
    );
    assert!(stdout(&ok).contains('-'));
    let denied = cli(
        &broker,
        &["--token", "cli-token", "produce", "theirs", "k=v"],
    );
    assert!(String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"));
}

#[test]
fn subscriptions_and_consume_with_the_cli_alone() {
    let broker = BrokerProcess::start_in_memory(&[]);
    for n in 0..5 {
        stdout(&cli(&broker, &["produce", "jobs", &format!("n={n}")]));
    }
    let created = json_lines(&cli(
        &broker,
        &[
            "--json",
            "subscription",
            "create",
            "jobs",
            "workers",
            "--from",
            "0",
            "--ack-deadline",
            "5s",
            "--filter",
            r#"n != "3""#,
        ],
    ));
    assert_eq!(created[0]["policy"]["ackDeadlineMs"], 5000);
    assert_eq!(created[0]["policy"]["filter"], r#"n != "3""#);
    let paused = json_lines(&cli(
        &broker,
        &["--json", "subscription", "pause", "jobs", "workers"],
    ));
    assert_eq!(paused[0]["policy"]["paused"], true);
    stdout(&cli(
        &broker,
        &["subscription", "resume", "jobs", "workers"],
    ));
    let listed = json_lines(&cli(&broker, &["--json", "subscription", "list"]));
    assert_eq!(listed[0]["subscriptions"][0]["group"], "workers");
    // Consume over the bidirectional call: the filter holds, and the acks took.
    let got = json_lines(&cli(
        &broker,
        &[
            "--json", "consume", "jobs", "--group", "workers", "--count", "4",
        ],
    ));
    let messages: Vec<&Value> = got.iter().filter(|l| l.get("id").is_some()).collect();
    let numbers: Vec<&str> = messages
        .iter()
        .map(|m| m["fields"][0][1].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["0", "1", "2", "4"]);
    let pending = json_lines(&cli(
        &broker,
        &[
            "--json",
            "admin",
            "get-pending-summary",
            "stream=jobs",
            "group=workers",
        ],
    ));
    assert_eq!(pending[0]["count"], 0, "{pending:?}");
    // Seek back to the start, then delete; a bad filter is refused with its position.
    let seeked = json_lines(&cli(
        &broker,
        &[
            "--json",
            "subscription",
            "seek",
            "jobs",
            "workers",
            "--after",
            "0",
        ],
    ));
    assert_eq!(seeked[0]["position"], "0-0");
    let refused = cli(
        &broker,
        &[
            "subscription",
            "update",
            "jobs",
            "workers",
            "--filter",
            "n =",
        ],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("position 4"), "{stderr}");
    stdout(&cli(
        &broker,
        &["subscription", "delete", "jobs", "workers"],
    ));
    let gone = cli(&broker, &["subscription", "get", "jobs", "workers"]);
    assert!(!gone.status.success());
}

#[test]
fn ordering_keys_and_retention_with_the_cli_alone() {
    let broker = BrokerProcess::start_in_memory(&[]);
    stdout(&cli(
        &broker,
        &[
            "subscription",
            "create",
            "orders",
            "billing",
            "--from",
            "0",
            "--ordered",
            "true",
        ],
    ));
    for step in ["created", "paid"] {
        stdout(&cli(
            &broker,
            &[
                "produce",
                "orders",
                "--ordering-key",
                "customer-7",
                &format!("kind={step}"),
            ],
        ));
    }
    let got = json_lines(&cli(
        &broker,
        &[
            "--json",
            "subscribe",
            "orders",
            "--group",
            "billing",
            "--count",
            "2",
        ],
    ));
    let kinds: Vec<&str> = got
        .iter()
        .map(|m| {
            m["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f[0] == "kind")
                .unwrap()[1]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(kinds, ["created", "paid"]);
    assert!(
        got[0]["fields"].to_string().contains("sg.ordering_key"),
        "{got:?}"
    );

    let set = stdout(&cli(
        &broker,
        &["retention", "set", "orders", "--acked", "--max-len", "1000"],
    ));
    assert!(
        set.contains("acked: true") && set.contains("maxLen: 1000"),
        "{set}"
    );
    let applied = stdout(&cli(&broker, &["retention", "apply", "orders"]));
    assert!(applied.contains("trimmedAcked"), "{applied}");
    let missing = cli(&broker, &["retention", "get", "nothing-here"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("has no retention policy"),
        "{missing:?}"
    );
}
