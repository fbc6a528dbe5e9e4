//! OpenTelemetry export: the broker binary with `OTEL_EXPORTER_OTLP_ENDPOINT` pointed at an
//! OTLP receiver in this test (a tonic server implementing the collector's trace service). A
//! Produce sent with a W3C `traceparent` and the delivery of its message arrive as spans of
//! the client's trace, children of the client's span; so do a Pub/Sub Publish and the Pull of
//! its message (the core stores the context and opens the delivery span, whichever transport);
//! an Admin call's Redis round trip is a child span of its RPC span, named by its command.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Every span the broker exported, with its service name.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(text) => Some(text.clone()),
            AnyValue::IntValue(n) => Some(n.to_string()),
            _ => None,
        }
    })
}

fn with_traceparent<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

/// An OTLP receiver, and a broker on its own Redis exporting to it.
async fn exporting_broker() -> (Receiver, RedisServer, BrokerProcess) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let receiver = Receiver::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let redis = RedisServer::start();
    let broker = BrokerProcess::start_with_env(
        &redis,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "streamgate-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    (receiver, redis, broker)
}

impl Receiver {
    /// Waits until spans of `trace_id` named all of `names` arrived; returns that trace's spans.
    async fn trace(&self, trace_id: &str, names: &[&str]) -> Vec<Span> {
        let ours = |s: &Span| hex(&s.trace_id) == trace_id;
        eventually("the broker's spans of the client's trace", || {
            let spans = self.spans.clone();
            async move {
                let spans = spans.lock().unwrap();
                names
                    .iter()
                    .all(|name| spans.iter().any(|(_, s)| ours(s) && s.name == *name))
            }
        })
        .await;
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(_, s)| ours(s))
            .map(|(_, s)| s.clone())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_publish_and_its_pull_arrive_as_one_trace() {
    use streamgate::grpc::pubsub::pb as ps;
    let (receiver, _redis, broker) = exporting_broker().await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let client_span = "b7ad6b7169203331";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let mut publisher = ps::publisher_client::PublisherClient::new(broker.channel());
    let mut subscriber = ps::subscriber_client::SubscriberClient::new(broker.channel());
    let (topic, subscription) = (
        "projects/p/topics/traced",
        "projects/p/subscriptions/traced",
    );
    publisher
        .create_topic(ps::Topic {
            name: topic.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    subscriber
        .create_subscription(ps::Subscription {
            name: subscription.into(),
            topic: topic.into(),
            ack_deadline_seconds: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let message = ps::PubsubMessage {
        data: b"hello".to_vec(),
        ..Default::default()
    };
    publisher
        .publish(with_traceparent(
            ps::PublishRequest {
                topic: topic.into(),
                messages: vec![message],
            },
            &traceparent,
        ))
        .await
        .unwrap();
    let pulled = subscriber
        .pull(ps::PullRequest {
            subscription: subscription.into(),
            max_messages: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let received = pulled.received_messages[0].message.as_ref().unwrap();
    // The trace context travels with the message, as Produce stores it.
    assert_eq!(received.attributes["traceparent"], traceparent);
    let spans = receiver.trace(trace_id, &["rpc", "deliver"]).await;
    let publish = spans
        .iter()
        .find(|s| {
            s.name == "rpc" && attribute(s, "method").is_some_and(|m| m.ends_with("/Publish"))
        })
        .expect("the Publish RPC span");
    assert_eq!(hex(&publish.parent_span_id), client_span);
    let deliver = spans
        .iter()
        .find(|s| s.name == "deliver")
        .expect("the delivery span of the pulled message");
    assert_eq!(hex(&deliver.parent_span_id), client_span);
    assert_eq!(attribute(deliver, "stream").as_deref(), Some("p/traced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_and_its_delivery_arrive_as_one_trace() {
    let (receiver, _redis, broker) = exporting_broker().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let mut client = BrokerClient::new(broker.channel());
    client
        .produce(with_traceparent(numbered("traced", 0..1), &traceparent))
        .await
        .unwrap();
    let mut subscription =
        Subscription::open(&mut client, group_request(&["traced"], "g", "c")).await;
    let message = subscription.next().await;
    assert_eq!(message.traceparent, traceparent);
    AdminClient::new(broker.channel())
        .get_stream_info(with_traceparent(
            pb::GetStreamInfoRequest {
                stream: "traced".into(),
            },
            &traceparent,
        ))
        .await
        .unwrap();

    let ours = |s: &Span| hex(&s.trace_id) == trace_id;
    eventually("the broker's spans of the client's trace", || {
        let spans = receiver.spans.clone();
        async move {
            let spans = spans.lock().unwrap();
            let names: Vec<&str> = spans
                .iter()
                .filter(|(_, s)| ours(s))
                .map(|(_, s)| s.name.as_str())
                .collect();
            names.contains(&"rpc") && names.contains(&"deliver") && names.contains(&"redis")
        }
    })
    .await;
    let spans = receiver.spans.lock().unwrap().clone();
    let in_trace: Vec<&(String, Span)> = spans.iter().filter(|(_, s)| ours(s)).collect();
    for (service, _) in &in_trace {
        assert_eq!(service, "streamgate-under-test");
    }
    let produce = in_trace
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.name == "rpc" && attribute(s, "method").is_some_and(|m| m.ends_with("/Produce"))
        })
        .expect("the Produce RPC span");
    assert_eq!(
        hex(&produce.parent_span_id),
        client_span,
        "a child of the client's span"
    );
    let deliver = in_trace
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "deliver")
        .expect("the delivery span");
    assert_eq!(hex(&deliver.parent_span_id), client_span);
    assert_eq!(attribute(deliver, "stream").as_deref(), Some("traced"));
    let admin = in_trace
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.name == "rpc" && attribute(s, "method").is_some_and(|m| m.ends_with("/GetStreamInfo"))
        })
        .expect("the Admin RPC span");
    let round_trip = in_trace
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "redis" && s.parent_span_id == admin.span_id)
        .expect("a Redis round trip under the Admin call");
    let command = attribute(round_trip, "command").unwrap_or_default();
    assert!(
        command.starts_with("XINFO") || command.starts_with("XLEN"),
        "{command}"
    );
    println!(
        "{} spans of the client's trace: {:?}",
        in_trace.len(),
        in_trace
            .iter()
            .map(|(_, s)| s.name.as_str())
            .collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
