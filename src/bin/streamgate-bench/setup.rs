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
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(broker_binary()?)
        .args([
            "serve",
            "--listen",
            &addr,
            "--redis-url",
            redis_url,
            "--log",
            "warn",
        ])
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
