//! Security: authentication, per-stream permissions, TLS and mTLS, key-prefix namespaces,
//! limits, and a flood of bad requests beside well-behaved clients.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streamgate::auth::hash_token;
use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const ORDERS_TOKEN: &str = "orders-secret-token";
const READER_TOKEN: &str = "reader-secret-token";

fn principals_file(dir: &Path) -> PathBuf {
    let path = dir.join("principals.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[principal]]
name = "orders-service"
token_sha256 = ["{orders}"]
cert_cn = "orders-service"
allow = [
  {{ permissions = ["produce", "consume", "admin-read", "admin-write"], streams = ["orders.*"] }},
]

[[principal]]
name = "auditor"
token_sha256 = ["{reader}"]
allow = [{{ permissions = ["admin-read"], streams = ["*"] }}]
"#,
            orders = hash_token(ORDERS_TOKEN),
            reader = hash_token(READER_TOKEN),
        ),
    )
    .unwrap();
    path
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<&'static str>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0 {
            let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

type Broker = BrokerClient<InterceptedService<Channel, Bearer>>;
type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

fn clients(channel: &Channel, token: Option<&'static str>) -> (Broker, Admin) {
    (
        BrokerClient::with_interceptor(channel.clone(), Bearer(token)),
        AdminClient::with_interceptor(channel.clone(), Bearer(token)),
    )
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("expected an error");
    (status.code(), status.message().to_owned())
}

fn subscribe_request(stream: &str) -> pb::SubscribeRequest {
    group_request(&[stream], "g", "c")
}

fn fetch_request(stream: &str) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: stream.into(),
            after_id: String::new(),
        }],
        group: "g".into(),
        consumer: "c".into(),
        create_group: true,
        ..Default::default()
    }
}

fn settle(stream: &str) -> pb::AckRequest {
    pb::AckRequest {
        stream: stream.into(),
        group: "g".into(),
        ids: vec!["1-0".into()],
    }
}

/// Every Broker RPC and a read and a write Admin RPC, for `stream`: the codes they end with.
async fn codes_of_every_rpc(
    broker: &mut Broker,
    admin: &mut Admin,
    stream: &str,
) -> Vec<(String, Code)> {
    let mut out = Vec::new();
    let mut record = |name: &str, result: Result<(), tonic::Status>| {
        out.push((name.to_owned(), result.err().map_or(Code::Ok, |s| s.code())));
    };
    record(
        "Produce",
        broker.produce(numbered(stream, 0..1)).await.map(drop),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(numbered(stream, 1..2)).await.unwrap();
    drop(tx);
    let produced_on_stream = match broker
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(response) => {
            let mut answers = response.into_inner();
            match answers.message().await {
                Ok(Some(pb::ProduceStreamResponse {
                    result: Some(pb::produce_stream_response::Result::Error(e)),
                })) => Err(tonic::Status::new(Code::from(e.code), e.message)),
                Ok(_) => Ok(()),
                Err(status) => Err(status),
            }
        }
        Err(status) => Err(status),
    };
    record("ProduceStream", produced_on_stream);
    let subscribed = match broker.subscribe(subscribe_request(stream)).await {
        Ok(response) => response.into_inner().message().await.map(drop),
        Err(status) => Err(status),
    };
    record("Subscribe", subscribed);
    record("Fetch", broker.fetch(fetch_request(stream)).await.map(drop));
    record("Ack", broker.ack(settle(stream)).await.map(drop));
    record(
        "Nack",
        broker
            .nack(pb::NackRequest {
                stream: stream.into(),
                group: "g".into(),
                ids: vec!["1-0".into()],
                ..Default::default()
            })
            .await
            .map(drop),
    );
    record(
        "ExtendDeadline",
        broker
            .extend_deadline(pb::ExtendDeadlineRequest {
                stream: stream.into(),
                group: "g".into(),
                consumer: "c".into(),
                ids: vec!["1-0".into()],
            })
            .await
            .map(drop),
    );
    record(
        "GetStreamInfo",
        admin
            .get_stream_info(pb::GetStreamInfoRequest {
                stream: stream.into(),
            })
            .await
            .map(drop),
    );
    record(
        "ListPending",
        admin
            .list_pending(pb::ListPendingRequest {
                stream: stream.into(),
                group: "g".into(),
                ..Default::default()
            })
            .await
            .map(drop),
    );
    record(
        "DeleteStream",
        admin
            .delete_stream(pb::DeleteStreamRequest {
                stream: stream.into(),
            })
            .await
            .map(drop),
    );
    out
}

#[tokio::test]
async fn without_credentials_every_service_is_unauthenticated_but_probes_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&["--principals-file", file.to_str().unwrap()]);
    let channel = broker.channel();
    for token in [None, Some("wrong-token")] {
        let (mut b, mut a) = clients(&channel, token);
        let codes = codes_of_every_rpc(&mut b, &mut a, "orders.eu").await;
        assert!(
            codes.iter().all(|(_, c)| *c == Code::Unauthenticated),
            "{token:?}: {codes:?}"
        );
        let (c, _) = code(a.list_streams(pb::ListStreamsRequest::default()).await);
        assert_eq!(c, Code::Unauthenticated);
    }
    // Meshes and load balancers probe without credentials.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // Tokens never reach the log.
    let log = broker.log_text();
    assert!(
        !log.contains("wrong-token") && !log.contains(ORDERS_TOKEN),
        "{log}"
    );

    let protected = BrokerProcess::start_in_memory(&[
        "--principals-file",
        file.to_str().unwrap(),
        "--auth-probes",
    ]);
    let mut health = tonic_health::pb::health_client::HealthClient::new(protected.channel());
    let (c, _) = code(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await,
    );
    assert_eq!(c, Code::Unauthenticated);
}

#[tokio::test]
async fn a_principal_limited_to_orders_can_neither_read_nor_list_nor_delete_payments() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&["--principals-file", file.to_str().unwrap()]);
    let channel = broker.channel();
    let (mut b, mut a) = clients(&channel, Some(ORDERS_TOKEN));
    let (mut auditor_b, mut auditor) = clients(&channel, Some(READER_TOKEN));

    // Allowed on its own streams (errors other than permission are fine: no such group...).
    let mine = codes_of_every_rpc(&mut b, &mut a, "orders.eu").await;
    assert!(
        mine.iter()
            .all(|(_, c)| *c != Code::PermissionDenied && *c != Code::Unauthenticated),
        "{mine:?}"
    );
    // Denied everywhere else, naming the permission and the stream.
    let theirs = codes_of_every_rpc(&mut b, &mut a, "payments").await;
    assert!(
        theirs.iter().all(|(_, c)| *c == Code::PermissionDenied),
        "{theirs:?}"
    );
    let (c, message) = code(b.produce(numbered("payments", 0..1)).await);
    assert_eq!(c, Code::PermissionDenied);
    assert_eq!(
        message,
        "principal `orders-service` lacks `produce` on stream `payments`"
    );

    // The auditor may look at everything and change nothing.
    let (c, message) = code(
        auditor
            .delete_stream(pb::DeleteStreamRequest {
                stream: "orders.eu".into(),
            })
            .await,
    );
    assert_eq!(
        (c, message.contains("admin-write")),
        (Code::PermissionDenied, true)
    );
    let (c, _) = code(auditor_b.produce(numbered("orders.eu", 0..1)).await);
    assert_eq!(c, Code::PermissionDenied);

    // Listing shows each caller only what it may see.
    let (mut auditor_producer, _) = clients(&channel, Some(ORDERS_TOKEN));
    auditor_producer
        .produce(numbered("orders.us", 0..1))
        .await
        .unwrap();
    let listed = |mut admin: Admin| async move {
        let mut names = admin
            .list_streams(pb::ListStreamsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .streams;
        names.sort();
        names
    };
    let everything = listed(auditor.clone()).await;
    assert!(
        everything.iter().any(|s| s.starts_with("orders.")),
        "{everything:?}"
    );
    let own = listed(a.clone()).await;
    assert!(own.iter().all(|s| s.starts_with("orders.")), "{own:?}");
}

fn tls_channel(addr: std::net::SocketAddr, pki: &Pki, with_client_cert: bool) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

#[tokio::test]
async fn tls_and_mtls_handshakes_and_the_certificate_as_principal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("orders-service");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
        write("ca.pem", &pki.ca),
    );

    // TLS: a client that trusts the CA works; a plaintext client does not.
    let tls = BrokerProcess::start_in_memory(&["--tls-cert", &cert, "--tls-key", &key]);
    let mut client = BrokerClient::new(tls_channel(tls.addr, &pki, false));
    let ids = client
        .produce(numbered("orders.eu", 0..1))
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 1);
    let mut plain = BrokerClient::new(tls.channel());
    assert!(plain.produce(numbered("orders.eu", 0..1)).await.is_err());

    // mTLS with principals: the certificate's CN is the principal.
    let file = principals_file(dir.path());
    let mtls = BrokerProcess::start_in_memory(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--principals-file",
        file.to_str().unwrap(),
    ]);
    let mut with_cert = BrokerClient::new(tls_channel(mtls.addr, &pki, true));
    with_cert
        .produce(numbered("orders.eu", 0..1))
        .await
        .unwrap();
    let (c, message) = code(with_cert.produce(numbered("payments", 0..1)).await);
    assert_eq!(c, Code::PermissionDenied, "{message}");
    assert!(message.contains("orders-service"), "{message}");
    // No client certificate: the handshake is refused.
    let mut without = BrokerClient::new(tls_channel(mtls.addr, &pki, false));
    let refused = without
        .produce(numbered("orders.eu", 0..1))
        .await
        .unwrap_err();
    // Refused in the handshake, never by a handler: the client sees a transport error (the TLS
    // alert, or the connection closed or broken under it, depending on timing), not a status
    // the broker sent.
    assert!(
        std::error::Error::source(&refused).is_some()
            && matches!(
                refused.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_key_prefix_confines_every_rpc_to_its_namespace() {
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["SET", "outside", "x"]).await;
    let _: String = redis.cmd(&["XADD", "tenant-b:s", "*", "f", "v"]).await;
    let broker = BrokerProcess::start(&redis, &["--key-prefix", "tenant-a:"]);
    let channel = broker.channel();
    let mut client = BrokerClient::new(channel.clone());
    let mut admin = AdminClient::new(channel);

    produce_numbered(&mut client, "s", 0..2).await;
    let exists: u64 = redis.cmd(&["EXISTS", "tenant-a:s"]).await;
    assert_eq!(exists, 1);
    let listed = admin
        .list_streams(pb::ListStreamsRequest {
            pattern: "*".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert_eq!(listed, ["s"]);
    // Names that could act as patterns, or reach other keys, are refused or stay inside.
    for name in ["*", "tenant-b:*", "s\n", "a b"] {
        let (c, _) = code(client.produce(numbered(name, 0..1)).await);
        assert_eq!(c, Code::InvalidArgument, "{name:?}");
    }
    let (c, message) = code(
        admin
            .delete_stream(pb::DeleteStreamRequest {
                stream: "outside".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert!(
        !message.contains("tenant-a"),
        "the prefix leaked: {message}"
    );
    let outside: u64 = redis.cmd(&["EXISTS", "outside"]).await;
    assert_eq!(outside, 1);
    let info = admin
        .get_stream_info(pb::GetStreamInfoRequest {
            stream: "tenant-b:s".into(),
        })
        .await;
    assert_eq!(code(info).0, Code::NotFound);
    // Reserved consumer names cannot be used to read as the broker.
    let mut request = group_request(&["s"], "g", "streamgate:parked");
    request.create_group = true;
    let (c, _) = code(client.subscribe(request).await);
    assert_eq!(c, Code::InvalidArgument);
}

#[tokio::test]
async fn open_subscription_limits_answer_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&[
        "--principals-file",
        file.to_str().unwrap(),
        "--max-subscriptions",
        "3",
        "--max-subscriptions-per-principal",
        "2",
    ]);
    let channel = broker.channel();
    let (mut orders, _) = clients(&channel, Some(ORDERS_TOKEN));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = orders
            .subscribe(tail_request(&[("orders.eu", "$")]))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap();
        open.push(stream);
    }
    let (c, message) = code(orders.subscribe(tail_request(&[("orders.eu", "$")])).await);
    assert_eq!(c, Code::ResourceExhausted);
    assert!(
        message.contains("--max-subscriptions-per-principal"),
        "{message}"
    );
    // Closing one frees its slot.
    drop(open.pop());
    eventually("the slot is freed", || {
        let mut orders = orders.clone();
        async move {
            orders
                .subscribe(tail_request(&[("orders.eu", "$")]))
                .await
                .is_ok()
        }
    })
    .await;
}

/// Produce + subscribe as fast as one well-behaved client pair can for `window`; messages/s.
async fn good_client_throughput(channel: &Channel, stream: &str, window: Duration) -> f64 {
    let (mut producer, _) = clients(channel, Some(ORDERS_TOKEN));
    let (mut consumer, _) = clients(channel, Some(ORDERS_TOKEN));
    let mut events = consumer
        .subscribe(tail_request(&[(stream, "$")]))
        .await
        .unwrap()
        .into_inner();
    events.message().await.unwrap();
    let started = Instant::now();
    let mut received = 0u64;
    while started.elapsed() < window {
        producer.produce(numbered(stream, 0..10)).await.unwrap();
        for _ in 0..10 {
            tokio::time::timeout(WAIT, events.message())
                .await
                .expect("delivery within the wait")
                .unwrap();
            received += 1;
        }
    }
    received as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_requests_does_not_stop_well_behaved_clients() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&["--principals-file", file.to_str().unwrap()]);
    let good = broker.channel();
    let window = Duration::from_secs(2);
    let quiet = good_client_throughput(&good, "orders.quiet", window).await;

    // 50 connections, each sending bad requests without pause: no token, a wrong token,
    // invalid names, oversized batches, forbidden streams. They run on their own threads, so
    // that what is measured is the broker's fairness, not this test process's scheduler.
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let stop = stop.clone();
        let addr = broker.addr;
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..50 {
                    let channel = Channel::from_shared(format!("http://{addr}"))
                        .unwrap()
                        .connect_lazy();
                    let stop = stop.clone();
                    tasks.push(tokio::spawn(async move {
                        let token = [None, Some("wrong"), Some(ORDERS_TOKEN)][i % 3];
                        let (mut client, mut admin) = clients(&channel, token);
                        let oversized = numbered("orders.x", 0..1001);
                        let mut refused = 0u64;
                        while !stop.is_cancelled() {
                            let bad = match i % 4 {
                                0 => client.produce(numbered("", 0..1)).await.map(drop),
                                1 => client.produce(oversized.clone()).await.map(drop),
                                2 => client.produce(numbered("payments", 0..1)).await.map(drop),
                                _ => admin
                                    .delete_stream(pb::DeleteStreamRequest { stream: "*".into() })
                                    .await
                                    .map(drop),
                            };
                            assert!(bad.is_err());
                            refused += 1;
                        }
                        refused
                    }));
                }
                let mut refused = 0;
                for task in tasks {
                    refused += task.await.unwrap();
                }
                refused
            })
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flooded = good_client_throughput(&good, "orders.flooded", window).await;
    stop.cancel();
    let refused = flood.join().unwrap();
    println!(
        "well-behaved produce+subscribe: {quiet:.0} msg/s alone, {flooded:.0} msg/s beside 50 \
         connections that sent {refused} bad requests ({:.2} of alone)",
        flooded / quiet
    );
    assert!(refused > 1000, "the flood did not flood: {refused}");
    // It keeps working; a 2-core machine shares its CPU with the flood, so no ratio is promised.
    assert!(flooded > 0.0);
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca_and_a_password_that_never_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("unused");
    let redis = TlsRedis::start(dir.path(), &pki, &["--requirepass", "tls-s3cret"]);
    let (_, _, ca) = write_pki(dir.path(), &pki);
    let port = redis.port;
    let url = format!("rediss://:tls-s3cret@127.0.0.1:{port}");

    let trusted = BrokerProcess::start_in_memory(&["--redis-url", &url, "--redis-ca-file", &ca]);
    let mut client = BrokerClient::new(trusted.channel());
    let ids = produce_numbered(&mut client, "over-tls", 0..3).await;
    assert_eq!(ids.len(), 3);

    // Without the CA, Redis's certificate is not trusted: UNAVAILABLE, saying why, and the
    // password appears nowhere.
    let untrusted = BrokerProcess::start_in_memory(&["--redis-url", &url]);
    let mut client = BrokerClient::new(untrusted.channel());
    let (c, message) = code(client.produce(numbered("over-tls", 0..1)).await);
    assert_eq!(c, Code::Unavailable, "{message}");
    assert!(!message.contains("tls-s3cret"), "{message}");
    let log = untrusted.log_text() + &trusted.log_text();
    assert!(!log.contains("tls-s3cret"), "{log}");
}
