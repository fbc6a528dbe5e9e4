//! The processes a benchmark runs against: a `redis-server` and a `streamgate` broker of its
//! own on free loopback ports (unless pointed at existing ones), killed when the run ends.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed on drop.
pub(crate) struct Guard(Option<Child>);

impl Guard {
    /// Its process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `redis-server` with no persistence; returns its URL and guard.
pub(crate) fn start_redis(dir: &std::path::Path) -> anyhow::Result<(String, Guard)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server (Debian/Ubuntu: apt-get install redis-server)")?;
    let url = format!("redis://127.0.0.1:{port}");
    let guard = Guard(Some(child));
    let client = redis::Client::open(url.as_str())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
            && redis::cmd("PING").query::<String>(&mut conn).is_ok()
        {
            return Ok((url, guard));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("redis-server on port {port} did not answer within 10 s")
}

/// Starts a Redis Cluster of `masters` masters (no replicas) on loopback ports: each node gets
/// an equal share of the slots, node 0 meets the others. Returns the seed URLs and the guards.
pub(crate) fn start_cluster(
    dir: &std::path::Path,
    masters: u16,
) -> anyhow::Result<(String, Vec<Guard>)> {
    let mut guards = Vec::new();
    let mut ports = Vec::new();
    for i in 0..masters {
        let port = free_port()?;
        let node_dir = dir.join(format!("cluster-{masters}-{i}"));
        std::fs::create_dir_all(&node_dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (Debian/Ubuntu: apt-get install redis-server)")?;
        guards.push(Guard(Some(child)));
        ports.push(port);
    }
    let cli = |port: u16, args: &[&str]| -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in &ports {
        while !cli(*port, &["PING"]).contains("PONG") {
            if Instant::now() > deadline {
                bail!("cluster node {port} did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let n = u32::from(masters);
    for (i, port) in ports.iter().enumerate() {
        let (low, high) = (i as u32 * 16384 / n, (i as u32 + 1) * 16384 / n - 1);
        cli(
            *port,
            &[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &low.to_string(),
                &high.to_string(),
            ],
        );
        if i > 0 {
            cli(
                ports[0],
                &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()],
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ports
        .iter()
        .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    {
        if Instant::now() > deadline {
            bail!("the {masters}-master cluster did not become ok");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let urls = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok((urls, guards))
}

/// The `streamgate` binary next to this one (both are built by the same `cargo build`).
fn broker_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("streamgate");
    if !path.exists() {
        bail!(
            "{} not found: build it too (cargo build --release --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// Starts the broker binary on `redis_url`; returns its address and guard once it is SERVING.
pub(crate) async fn start_broker(
    redis_url: &str,
    pool_size: u32,
) -> anyhow::Result<(String, Guard)> {
    start_broker_with(&["--redis-url", redis_url], pool_size).await
}

/// Starts the broker binary on `redis_url` with its metrics endpoint on a free port: the
/// broker's address, the metrics address, and the guard.
/// `gauges_every` is its `--metrics-interval` (the gauges' sampling costs Redis commands).
pub(crate) async fn start_broker_with_metrics(
    redis_url: &str,
    pool_size: u32,
    gauges_every: &str,
) -> anyhow::Result<(String, String, Guard)> {
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let args = [
        "--redis-url",
        redis_url,
        "--metrics-addr",
        metrics.as_str(),
        "--metrics-interval",
        gauges_every,
    ];
    let (addr, guard) = start_broker_with(&args, pool_size).await?;
    Ok((addr, metrics, guard))
}

/// Starts the broker binary on a Redis Cluster (`urls`: comma-separated seeds).
pub(crate) async fn start_cluster_broker(urls: &str) -> anyhow::Result<(String, Guard)> {
    start_broker_with(&["--redis-cluster-url", urls], 8).await
}

async fn start_broker_with(store: &[&str], pool_size: u32) -> anyhow::Result<(String, Guard)> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(broker_binary()?)
        .args(["serve", "--listen", &addr, "--log", "warn"])
        .args(store)
        .args(["--redis-pool-size", &pool_size.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start streamgate")?;
    let guard = Guard(Some(child));
    wait_serving(&addr).await?;
    Ok((addr, guard))
}

/// Waits until the broker at `addr` reports SERVING.
pub(crate) async fn wait_serving(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(channel) = connect(addr).await {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if status.ok() == Some(ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the broker at {addr} did not become SERVING within 20 s")
}

/// A gRPC channel (one HTTP/2 connection) to `addr`.
pub(crate) async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// Resident memory of a process in bytes (Linux `/proc`), if it can be read.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
