//! Behind a real proxy: nginx (`grpc_pass`) in front of the broker, started by each test on a
//! loopback port with a generated config. What a mesh sidecar or gateway does to long, quiet
//! streams is what these tests look at.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate::config::ServeConfig;
use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tonic::transport::Channel;

const NGINX_HINT: &str = "nginx was not found. Install it (Debian/Ubuntu: `sudo apt-get install -y \
nginx-light`, or run `scripts/test.sh`, which does) and run the tests again.";

/// nginx proxying gRPC to `upstream`, with `grpc_read_timeout` = `read_timeout`.
struct Nginx {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstream: SocketAddr, read_timeout: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = nginx_config(port, upstream, read_timeout, dir.path());
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let binary = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| Command::new(b).arg("-v").output().is_ok())
            .unwrap_or_else(|| panic!("{NGINX_HINT}"));
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{NGINX_HINT} ({err})"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen; error log: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { addr, child, dir }
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config README shows, with the ports and paths of a test.
fn nginx_config(
    port: u16,
    upstream: SocketAddr,
    read_timeout: &str,
    dir: &std::path::Path,
) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream streamgate {{
        server {upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://streamgate;
            grpc_read_timeout {read_timeout};
            grpc_send_timeout {read_timeout};
        }}
    }}
}}
"#
    )
}

async fn broker(heartbeat: Duration, keepalive: Duration) -> TestBroker {
    let mut config = ServeConfig::in_memory();
    config.heartbeat_interval = heartbeat;
    config.http2_keepalive_interval = keepalive;
    config.health_interval = Duration::from_millis(200);
    config.drain_timeout = Duration::from_secs(3);
    TestBroker::start_config(config).await
}

#[tokio::test]
async fn produce_subscribe_ack_and_probes_go_through_nginx() {
    let broker = broker(Duration::from_secs(15), Duration::from_secs(30)).await;
    let nginx = Nginx::start(broker.addr, "60s");
    let mut client = BrokerClient::new(nginx.channel());
    let mut member = Subscription::open(&mut client, group_request(&["via-nginx"], "g", "c")).await;
    let ids = produce_numbered(&mut client, "via-nginx", 0..3).await;
    let got = member.take(3).await;
    assert_eq!(got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids);
    let acked = client
        .ack(pb::AckRequest {
            stream: "via-nginx".into(),
            group: "g".into(),
            ids,
        })
        .await
        .unwrap()
        .into_inner()
        .acknowledged;
    assert_eq!(acked, 3);

    use tonic_health::pb::health_check_response::ServingStatus;
    let mut health = tonic_health::pb::health_client::HealthClient::new(nginx.channel());
    for service in ["", "liveness", "streamgate.v1.Broker"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}

/// Opens a tail Subscribe through nginx and keeps it quiet for `quiet`; returns how many
/// heartbeats arrived, or the status the stream ended with.
async fn quiet_subscription(nginx: &Nginx, quiet: Duration) -> Result<usize, tonic::Status> {
    let mut client = BrokerClient::new(nginx.channel());
    let mut stream = client
        .subscribe(tail_request(&[("quiet", "$")]))
        .await?
        .into_inner();
    stream.message().await?;
    let until = tokio::time::Instant::now() + quiet;
    let mut heartbeats = 0;
    loop {
        match tokio::time::timeout_at(until, stream.message()).await {
            Err(_) => break,
            Ok(Ok(Some(item))) => match item.event {
                Some(pb::subscribe_response::Event::Heartbeat(_)) => heartbeats += 1,
                other => panic!("unexpected {other:?}"),
            },
            Ok(Ok(None)) => return Err(tonic::Status::cancelled("the stream ended")),
            Ok(Err(status)) => return Err(status),
        }
    }
    // Still up: a message still gets through.
    produce_numbered(&mut client, "quiet", 0..1).await;
    loop {
        match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(pb::SubscribeResponse {
                event: Some(pb::subscribe_response::Event::Message(_)),
            }))) => return Ok(heartbeats),
            Ok(Ok(Some(_))) => continue,
            other => {
                return Err(tonic::Status::unknown(format!(
                    "after the quiet: {other:?}"
                )));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_subscribe_outlives_read_timeouts_with_heartbeats_or_pings_and_not_without() {
    // nginx cuts a stream that carried no data for 2 s; each stays quiet for 7 s.
    let quiet = Duration::from_secs(7);

    let with_heartbeats = broker(Duration::from_millis(700), Duration::ZERO).await;
    let nginx = Nginx::start(with_heartbeats.addr, "2s");
    let heartbeats = quiet_subscription(&nginx, quiet)
        .await
        .unwrap_or_else(|status| {
            panic!("cut despite heartbeats: {status:?}\n{}", nginx.error_log())
        });
    println!(
        "heartbeats on (0.7 s), keepalive off: survived 7 s of quiet with {heartbeats} heartbeats"
    );
    assert!(heartbeats >= 5, "{heartbeats}");

    // Without heartbeats, do HTTP/2 keepalive pings from the broker keep nginx's timer from
    // firing? They are not data; nginx's grpc_read_timeout counts reads of the upstream
    // connection, and a PING is read from it.
    let pings_only = broker(Duration::ZERO, Duration::from_millis(500)).await;
    let nginx = Nginx::start(pings_only.addr, "2s");
    let outcome = quiet_subscription(&nginx, quiet).await;
    println!("heartbeats off, keepalive pings every 0.5 s: {outcome:?}");
    // Observed with nginx 1.22: yes, the pings alone keep it (README says so). Other proxies
    // (Envoy's per-stream idle timeout) do not count pings: heartbeats are the portable answer.
    assert!(outcome.is_ok(), "{outcome:?}");

    // Neither: it must be cut, which shows the first case proves something.
    let neither = broker(Duration::ZERO, Duration::ZERO).await;
    let nginx = Nginx::start(neither.addr, "2s");
    let cut = quiet_subscription(&nginx, quiet).await;
    println!("heartbeats off, keepalive off: {cut:?}");
    assert!(
        cut.is_err(),
        "a quiet stream through nginx should have been cut"
    );
}

#[tokio::test]
async fn a_graceful_drain_reaches_clients_through_nginx_as_unavailable() {
    let broker = broker(Duration::from_secs(15), Duration::from_secs(30)).await;
    let nginx = Nginx::start(broker.addr, "60s");
    let mut client = BrokerClient::new(nginx.channel());
    let mut tail = Subscription::open(&mut client, tail_request(&[("drain", "$")])).await;
    broker.begin_shutdown();
    let status = tail.final_status().await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}
