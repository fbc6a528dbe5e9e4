//! Redis Sentinel: a primary, a replica and three real `redis-server --sentinel` processes. The
//! broker finds the primary through the sentinels; when the primary is SIGKILLed under a steady
//! producer, calls fail with UNAVAILABLE while the sentinels fail over, then succeed on the new
//! primary without a broker restart, and a subscription opened before the failover receives
//! what is produced after it. Prints how long calls failed and how many acknowledged messages
//! the asynchronous replication lost (not asserted: that is Redis's window).

mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use streamgate::config::ServeConfig;
use streamgate::grpc::pb;
use support::*;
use tonic::Code;

const MASTER: &str = "streamgate-test";
const STREAM: &str = "failover";

/// A `redis-server --sentinel` process with its own config file (sentinels rewrite it).
struct Sentinel {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(primary_port: u16) -> Self {
        Self::start_listening(primary_port, |port| format!("port {port}\n"))
    }

    /// A sentinel whose listening lines (`port`, or `tls-port` and its files) `listen` writes.
    fn start_listening(primary_port: u16, listen: impl FnOnce(u16) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "{listen}bind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                listen = listen(port),
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .arg("--logfile")
            .arg(dir.path().join("sentinel.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server --sentinel");
        Self {
            port,
            child,
            _dir: dir,
        }
    }
}

/// What the sentinel on `port` answers `args`.
fn ask<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut conn)
}

/// The port the sentinel on `port` says the primary is on.
fn primary_port_from(port: u16) -> Option<u16> {
    let addr: Vec<String> = ask(port, &["SENTINEL", "get-master-addr-by-name", MASTER]).ok()?;
    addr.get(1)?.parse().ok()
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_follows_a_sentinel_failover() {
    // No delay before the first sync (Redis waits 5 s by default for more replicas).
    let mut primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let primary_port = primary.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary_port]);
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(primary.port())).collect();
    tokio::task::spawn_blocking({
        let ports: Vec<u16> = sentinels.iter().map(|s| s.port).collect();
        move || {
            wait_for(
                "the sentinels to see the primary and its replica",
                30,
                || {
                    ports.iter().all(|port| {
                        ask::<Vec<redis::Value>>(*port, &["SENTINEL", "replicas", MASTER])
                            .is_ok_and(|replicas| replicas.len() == 1)
                    })
                },
            )
        }
    })
    .await
    .unwrap();
    eventually("the replica to be in sync", || async {
        let info: String = replica.cmd(&["INFO", "replication"]).await;
        info.contains("master_link_status:up")
    })
    .await;
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/{MASTER}", hosts.join(","));
    let mut config = ServeConfig::parse_from(["serve", "--redis-sentinel-url", &url]);
    config.redis_timeout = Duration::from_secs(1);
    config.redis_connect_timeout = Duration::from_millis(500);
    let mut broker = TestBroker::start_config(config).await;
    produce_numbered(&mut broker.broker, STREAM, 0..1).await;
    let mut subscription =
        Subscription::open(&mut broker.broker, group_request(&[STREAM], "g", "c")).await;
    assert_eq!(number(&subscription.next().await), 0);

    // A steady producer: what it got ids for, and when calls failed.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<(Instant, Code)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (acked, failures, stop) = (acked.clone(), failures.clone(), stop.clone());
        let mut client = broker.broker.clone();
        tokio::spawn(async move {
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.produce(numbered(STREAM, n..n + 1)).await {
                    Ok(reply) => acked.lock().unwrap().extend(reply.into_inner().ids),
                    Err(status) => failures
                        .lock()
                        .unwrap()
                        .push((Instant::now(), status.code())),
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    primary.kill();
    let new_primary = tokio::task::spawn_blocking({
        let ports: Vec<u16> = sentinels.iter().map(|s| s.port).collect();
        let old = primary_port.parse::<u16>().unwrap();
        move || {
            let mut port = None;
            wait_for("the sentinels to promote the replica", 60, || {
                port = primary_port_from(ports[0]).filter(|p| *p != old);
                port.is_some()
            });
            port.unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(new_primary, replica.port());
    // Calls succeed again without a broker restart.
    let before = acked.lock().unwrap().len();
    eventually("produce to succeed on the new primary", || {
        let acked = acked.clone();
        async move { acked.lock().unwrap().len() > before + 20 }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.iter().all(|(_, code)| *code == Code::Unavailable),
        "calls during the switch fail with UNAVAILABLE: {failures:?}"
    );
    let window = failures
        .last()
        .map(|(at, _)| at.duration_since(killed_at))
        .unwrap_or_default();
    // What the producer got ids for and the new primary holds.
    let acked = acked.lock().unwrap().clone();
    let stored: Vec<(String, Vec<Vec<u8>>)> = replica.cmd(&["XRANGE", STREAM, "-", "+"]).await;
    let stored: HashSet<String> = stored.into_iter().map(|(id, _)| id).collect();
    let lost: HashSet<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    println!(
        "sentinel failover: calls failed for {window:?} after the primary was killed ({} failed \
         calls); {} messages acknowledged, {} not on the new primary (asynchronous replication)",
        failures.len(),
        acked.len(),
        lost.len()
    );
    // The subscription opened before the failover gets what is produced after it.
    broker
        .broker
        .produce(pb::ProduceRequest {
            stream: STREAM.into(),
            messages: vec![pb::OutgoingMessage {
                fields: fields(&[("n", "999999")]),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the subscription never resumed");
        let message = subscription.next().await;
        if number(&message) == 999_999 {
            break;
        }
    }
}

/// `rediss+sentinel://`: TLS to the sentinels and to the primary they name, trusted through
/// `--redis-ca-file`; without the CA the broker refuses the sentinel's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_finds_the_primary_through_sentinels_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("unused");
    let primary = TlsRedis::start(dir.path(), &pki, &[]);
    let (cert, key, ca) = write_pki(dir.path(), &pki);
    let sentinel = Sentinel::start_listening(primary.port, |port| {
        format!(
            "port 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\n\
             tls-ca-cert-file {ca}\ntls-auth-clients no\ntls-replication yes\n"
        )
    });
    let url = format!("rediss+sentinel://127.0.0.1:{}/{MASTER}", sentinel.port);
    let mut config = ServeConfig::parse_from([
        "serve",
        "--redis-sentinel-url",
        &url,
        "--redis-ca-file",
        &ca,
    ]);
    config.redis_timeout = Duration::from_secs(1);
    let mut broker = TestBroker::start_config(config).await;
    // The sentinel needs a moment to learn the primary is up.
    let deadline = Instant::now() + Duration::from_secs(15);
    let ids = loop {
        match broker.broker.produce(numbered(STREAM, 0..3)).await {
            Ok(reply) => break reply.into_inner().ids,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "no produce through the TLS sentinel: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(ids.len(), 3);

    // Without the CA the sentinel's certificate is not trusted: UNAVAILABLE, saying so.
    let mut untrusted = ServeConfig::parse_from(["serve", "--redis-sentinel-url", &url]);
    untrusted.redis_timeout = Duration::from_secs(1);
    untrusted.redis_connect_timeout = Duration::from_millis(500);
    let mut untrusted = TestBroker::start_config(untrusted).await;
    let err = untrusted
        .broker
        .produce(numbered(STREAM, 0..1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
}
