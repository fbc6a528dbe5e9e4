//! Security: authentication, per-stream permissions, TLS and mTLS, key-prefix namespaces,
//! limits, and a flood of bad requests beside well-behaved clients. One test binary, a file per
//! topic: [`authorization`] (credentials and per-stream permissions), [`tls`] (TLS and mTLS to
//! the broker, TLS to Redis), [`namespaces`] (`--key-prefix`), [`limits`] (subscription
//! limits, a flood of bad requests); the principals and clients they share are here.

#[path = "../support/mod.rs"]
mod support;

mod authorization;
mod limits;
mod namespaces;
mod tls;

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
