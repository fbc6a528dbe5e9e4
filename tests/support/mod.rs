//! Guards for the real processes integration tests run against: a `redis-server` of their own on
//! an ephemeral loopback port, and the broker serving in-process on another.
//!
//! No mocks, no shared state: each test starts its own Redis, so tests can run in parallel and
//! may kill and restart it at will. The machine's shared Redis on 6379 is never touched.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate::config::ServeConfig;
use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use streamgate::server::{Broker, BrokerStats};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const INSTALL_HINT: &str = "redis-server was not found on PATH. Install it (Debian/Ubuntu: \
`sudo apt-get install -y redis-server`, or run `scripts/setup-test-deps.sh`) and run the tests again.";

/// A `redis-server` child process on a loopback port, killed on drop.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl RedisServer {
    /// Starts a fresh Redis with no persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh Redis with extra `redis-server` arguments.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = Self {
            port: 0,
            dir,
            child: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        // Another process may take the port between our probe and redis's bind: retry afresh.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start after 5 attempts; see {}",
            server.log_path().display()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns on `self.port` and waits until it answers PING; false if it died (port taken).
    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(err) => panic!("cannot start redis-server: {err}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if self.answers_ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10s",
            self.port
        );
    }

    fn answers_ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILLs the server (no chance to save or say goodbye).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            // The old socket may linger for a moment.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server could not restart on port {}", self.port);
    }

    /// A direct connection, for checking what the broker did with plain Redis commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("direct redis connection")
    }

    /// Runs one command directly against this Redis.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
            .query_async(&mut self.connection().await)
            .await
            .unwrap_or_else(|err| panic!("{args:?} failed: {err}"))
    }

    /// How many entries of `group` on `stream` are pending, as XPENDING reports it.
    pub async fn pending_count(&self, stream: &str, group: &str) -> u64 {
        let summary: Vec<redis::Value> = self.cmd(&["XPENDING", stream, group]).await;
        match summary.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("unexpected XPENDING reply {other:?}"),
        }
    }

    /// Connected clients, as CLIENT LIST sees them (this probe included).
    pub async fn client_count(&self) -> usize {
        let list: String = self.cmd(&["CLIENT", "LIST"]).await;
        list.lines().count()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Never panic here: Drop also runs while a failed assertion unwinds.
        self.kill();
    }
}

/// The broker serving in-process on a loopback port, with clients connected to it.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: BrokerClient<Channel>,
    pub admin: AdminClient<Channel>,
    pub channel: Channel,
    pub stats: BrokerStats,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), streamgate::server::ServeError>>>,
}

impl TestBroker {
    /// A broker on `redis` with default settings (fast health checks).
    pub async fn start(redis: &RedisServer) -> Self {
        Self::start_with(redis, |_| {}).await
    }

    /// A broker on `redis` with settings adjusted by `configure`.
    pub async fn start_with(redis: &RedisServer, configure: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = ServeConfig::for_redis(&redis.url());
        config.health_interval = Duration::from_millis(200);
        config.drain_timeout = Duration::from_secs(5);
        configure(&mut config);
        Self::start_config(config).await
    }

    /// A broker with exactly `config` (its `listen` is ignored: a free port is bound).
    pub async fn start_config(config: ServeConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind broker");
        let addr = listener.local_addr().expect("broker addr");
        let broker = Broker::new(config).expect("broker set-up");
        let stats = broker.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker.serve(listener, shutdown.clone()));
        // The listener is bound already, so connecting cannot race the server's start.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to broker");
        Self {
            addr,
            broker: BrokerClient::new(channel.clone()),
            admin: AdminClient::new(channel.clone()),
            channel,
            stats,
            shutdown,
            task: Some(task),
        }
    }

    /// Starts the graceful shutdown and waits for `serve` to return; returns how long it took.
    pub async fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve result");
        }
        started.elapsed()
    }

    /// Starts the graceful shutdown without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A field list from text pairs.
pub fn fields(pairs: &[(&str, &str)]) -> Vec<pb::Field> {
    pairs
        .iter()
        .map(|(name, value)| pb::Field {
            name: (*name).to_owned(),
            value: bytes::Bytes::copy_from_slice(value.as_bytes()),
        })
        .collect()
}

/// A Produce request of single-field messages `n=<i>` for each i in `range`.
pub fn numbered(stream: &str, range: std::ops::Range<usize>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.to_owned(),
        messages: range
            .map(|i| pb::OutgoingMessage {
                id: String::new(),
                fields: fields(&[("n", &i.to_string())]),
            })
            .collect(),
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
    }
}

/// Produces `n=<i>` messages and returns their ids.
pub async fn produce_numbered(
    broker: &mut BrokerClient<Channel>,
    stream: &str,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    broker
        .produce(numbered(stream, range))
        .await
        .expect("produce")
        .into_inner()
        .ids
}

/// A Subscribe request over `streams` in `group` as `consumer` (create the group from `0`).
pub fn group_request(streams: &[&str], group: &str, consumer: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        streams: streams
            .iter()
            .map(|s| pb::StreamStart {
                stream: (*s).to_owned(),
                after_id: String::new(),
            })
            .collect(),
        group: group.to_owned(),
        consumer: consumer.to_owned(),
        create_group: true,
        group_start_id: "0".to_owned(),
        batch_size: 0,
        no_ack: false,
        ack_deadline_ms: 0,
        ..Default::default()
    }
}

/// A tail Subscribe request starting after `after` on each stream.
pub fn tail_request(streams: &[(&str, &str)]) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        streams: streams
            .iter()
            .map(|(s, after)| pb::StreamStart {
                stream: (*s).to_owned(),
                after_id: (*after).to_owned(),
            })
            .collect(),
        ..Default::default()
    }
}

/// An open Subscribe stream with helpers to read it with deadlines (a hung stream fails the
/// test instead of hanging it).
pub struct Subscription {
    pub stream: tonic::Streaming<pb::SubscribeResponse>,
    pub consumer: String,
}

/// How long a test waits for an item that should come.
pub const WAIT: Duration = Duration::from_secs(10);

impl Subscription {
    /// Opens the subscription and reads its `started` item.
    pub async fn open(broker: &mut BrokerClient<Channel>, request: pb::SubscribeRequest) -> Self {
        let mut stream = broker
            .subscribe(request)
            .await
            .expect("subscribe")
            .into_inner();
        let first = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("no `started` within the deadline")
            .expect("stream failed before `started`")
            .expect("stream ended before `started`");
        match first.event {
            Some(pb::subscribe_response::Event::Started(started)) => Self {
                stream,
                consumer: started.consumer,
            },
            other => panic!("first item was not `started`: {other:?}"),
        }
    }

    /// The next message (heartbeats skipped); fails the test on timeout, error or end.
    pub async fn next(&mut self) -> pb::ReceivedMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.message()).await {
                Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Message(m)),
                }))) => return m,
                Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Heartbeat(_)),
                }))) => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next `n` messages.
    pub async fn take(&mut self, n: usize) -> Vec<pb::ReceivedMessage> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    /// Asserts no message arrives for `quiet` (heartbeats are not messages).
    pub async fn expect_quiet(&mut self, quiet: Duration) {
        let until = Instant::now() + quiet;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.message()).await {
                Err(_) => return,
                Ok(Ok(Some(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Heartbeat(_)),
                }))) => continue,
                Ok(item) => panic!("expected nothing, got {item:?}"),
            }
        }
    }

    /// Reads until the stream ends with a status; fails on timeout or a clean end.
    pub async fn final_status(&mut self) -> tonic::Status {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Err(status)) => return status,
                Ok(Ok(None)) => panic!("stream ended without an error status"),
                Err(_) => panic!("stream did not end within {WAIT:?}"),
            }
        }
    }
}

/// The `n` field of a numbered message.
pub fn number(message: &pb::ReceivedMessage) -> usize {
    let field = message
        .fields
        .iter()
        .find(|f| f.name == "n")
        .expect("field n");
    std::str::from_utf8(&field.value)
        .expect("utf8")
        .parse()
        .expect("number")
}

/// Polls `check` until it holds or `WAIT` passes; for state that settles asynchronously.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A loopback TCP proxy that can go silent without closing anything: what a client looks like
/// when its machine vanishes or a NAT drops its flow (a "half-open" connection).
pub struct FreezableProxy {
    pub addr: SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl FreezableProxy {
    /// Proxies a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (mut from, mut to) in [(client_read, server_write), (server_read, client_write)]
                {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) {
                                // Silent: keep both sockets open, forward nothing, ever.
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, frozen, task }
    }

    /// From now on nothing passes in either direction, and nothing is closed.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `streamgate` binary as a child process on a fixed loopback port, so that it can be
/// SIGKILLed and started again at the same address. Killed on drop.
pub struct BrokerProcess {
    pub addr: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
    started_once: bool,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl BrokerProcess {
    /// Starts `streamgate serve` against `redis` with extra flags, and waits until it serves.
    pub fn start(redis: &RedisServer, extra_args: &[&str]) -> Self {
        let url = redis.url();
        let mut args = vec!["--redis-url", url.as_str()];
        args.extend_from_slice(extra_args);
        Self::start_args(&args)
    }

    /// Starts `streamgate serve` on the embedded in-memory store.
    pub fn start_in_memory(extra_args: &[&str]) -> Self {
        Self::start_args(extra_args)
    }

    fn start_args(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the broker log");
        let mut broker = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            args: [
                "serve",
                "--health-interval",
                "200ms",
                "--drain-timeout",
                "2s",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(extra_args.iter().map(|s| s.to_string()))
            .collect(),
            child: None,
            started_once: false,
            log: dir.path().join("broker.log"),
            _dir: dir,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log file");
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(&self.args)
            .args(["--listen", &self.addr.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the streamgate binary");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            // Exited: on a first start, another test took the probed port; try another.
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                assert!(
                    !self.started_once && Instant::now() < deadline,
                    "streamgate exited; log: {}",
                    self.log_text()
                );
                self.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                return self.spawn();
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "streamgate did not listen on {} within {WAIT:?}; log: {}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.started_once = true;
    }

    /// What the broker logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no drain, no hand-back, nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again at the same address.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Resident memory of the process, from /proc, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("broker running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// A channel that reconnects by itself after the broker restarts.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of real `redis-server --cluster-enabled yes` processes on loopback ports,
/// formed with `redis-cli --cluster create`. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `masters` masters, each with `replicas` replicas; returns once every slot is served.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..masters * (1 + replicas) {
            let node = cluster.spawn_on_a_free_port();
            cluster.nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (port, _) in &cluster.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli (installed with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_ok();
        cluster
    }

    /// Another test may take a probed port before redis binds it (tests run in parallel):
    /// try afresh a few times, as [`RedisServer::start`] does.
    fn spawn_on_a_free_port(&self) -> (u16, Option<Child>) {
        for _ in 0..5 {
            let port = loop {
                let port = free_port();
                if !self.nodes.iter().any(|(p, _)| *p == port) {
                    break port;
                }
            };
            let mut child = self.spawn(port);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if cli(port, &["PING"]).contains("PONG") {
                    return (port, Some(child));
                }
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                if exited || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no cluster node could start after 5 attempts; {INSTALL_HINT}");
    }

    fn spawn(&self, port: u16) -> Child {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args([
                "--cluster-require-full-coverage",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{INSTALL_HINT} ({err})"))
    }

    /// Waits until every live node says the cluster is ok and knows every slot, and every
    /// replica is in sync with its master (else it could not take over).
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.live_ports().iter().all(|port| {
                let info = cli(*port, &["CLUSTER", "INFO"]);
                let replication = cli(*port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (!replication.contains("role:slave")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ok within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    /// Seed URLs for `--redis-cluster-url`.
    pub fn urls(&self) -> String {
        self.live_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master serving `key` now.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .unwrap_or_else(|| panic!("no live master serves `{key}`"))
    }

    /// The port of the live master serving `key` now, if any (none during a failover).
    pub fn try_master_of(&self, key: &str) -> Option<u16> {
        let port = self.live_ports()[0];
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(port, &["CLUSTER", "NODES"]).lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 9 || !parts[2].contains("master") || parts[2].contains("fail") {
                continue;
            }
            let serves = parts[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&slot)
                }
                None => range.parse::<u16>().ok() == Some(slot),
            });
            if serves {
                let address = parts[1].split('@').next().unwrap();
                return address.rsplit_once(':').unwrap().1.parse().ok();
            }
        }
        None
    }

    /// Distinct masters.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .iter()
            .map(|k| self.master_of(k))
            .collect();
        masters.sort_unstable();
        masters.dedup();
        masters
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.nodes.iter_mut().find(|(p, _)| *p == port)
            && let Some(mut child) = child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `redis-cli -p <port> <args>`'s output (empty on failure).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
