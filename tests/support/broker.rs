//! The broker under test: in-process on a loopback port ([`TestBroker`]), or the real binary as
//! a child process that can be SIGKILLed and restarted at the same address ([`BrokerProcess`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate::config::ServeConfig;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use streamgate::server::{Broker, BrokerStats};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::*;

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

/// The `streamgate` binary as a child process on a fixed loopback port, so that it can be
/// SIGKILLed and started again at the same address. Killed on drop.
pub struct BrokerProcess {
    pub addr: SocketAddr,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    started_once: bool,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl BrokerProcess {
    /// Starts `streamgate serve` against `redis` with extra flags, and waits until it serves.
    pub fn start(redis: &RedisServer, extra_args: &[&str]) -> Self {
        Self::start_at(&redis.url(), extra_args)
    }

    /// Starts `streamgate serve` against the Redis at `url` (a proxy in front of one, say)
    /// with extra flags, and waits until it serves.
    pub fn start_at(url: &str, extra_args: &[&str]) -> Self {
        let mut args = vec!["--redis-url", url];
        args.extend_from_slice(extra_args);
        Self::start_args(&args, &[])
    }

    /// Starts `streamgate serve` on the embedded in-memory store.
    pub fn start_in_memory(extra_args: &[&str]) -> Self {
        Self::start_args(extra_args, &[])
    }

    /// Starts `streamgate serve` against `redis` with extra flags and environment variables.
    pub fn start_with_env(redis: &RedisServer, extra_args: &[&str], envs: &[(&str, &str)]) -> Self {
        let url = redis.url();
        let mut args = vec!["--redis-url", url.as_str()];
        args.extend_from_slice(extra_args);
        Self::start_args(&args, envs)
    }

    fn start_args(extra_args: &[&str], envs: &[(&str, &str)]) -> Self {
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
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
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
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
