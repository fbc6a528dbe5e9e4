//! Tracing: a W3C `traceparent` crosses the broker with the message, and every call's log
//! lines carry its method, stream, group and consumer.

mod support;

use streamgate::grpc::pb;
use streamgate::grpc::pb::broker_client::BrokerClient;
use support::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn with_traceparent<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

#[tokio::test]
async fn a_traceparent_sent_with_produce_comes_back_on_delivery() {
    let broker = TestBroker::start_config(streamgate::config::ServeConfig::in_memory()).await;
    let mut client = broker.broker.clone();
    let mut tail = Subscription::open(&mut client, tail_request(&[("traced", "$")])).await;

    client
        .produce(with_traceparent(numbered("traced", 0..1), TRACEPARENT))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(numbered("traced", 1..2)).await.unwrap();
    drop(tx);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut answers = client
        .produce_stream(with_traceparent(stream, TRACEPARENT))
        .await
        .unwrap()
        .into_inner();
    while answers.message().await.unwrap().is_some() {}
    // A malformed one is ignored, not stored.
    client
        .produce(with_traceparent(numbered("traced", 2..3), "not-a-trace"))
        .await
        .unwrap();

    let got = tail.take(3).await;
    assert_eq!(got[0].traceparent, TRACEPARENT);
    assert_eq!(got[1].traceparent, TRACEPARENT);
    assert!(
        got[0]
            .fields
            .iter()
            .any(|f| f.name == "traceparent" && f.value == TRACEPARENT.as_bytes()),
        "stored as a plain field, readable by any Redis client: {:?}",
        got[0].fields
    );
    assert_eq!(got[2].traceparent, "");
    assert!(got[2].fields.iter().all(|f| f.name != "traceparent"));
}

#[tokio::test]
async fn json_logs_name_the_method_stream_and_group_of_each_call() {
    let broker =
        BrokerProcess::start_in_memory(&["--log-format", "json", "--log", "streamgate=debug"]);
    let mut client = BrokerClient::new(broker.channel());
    let status = client
        .ack(pb::AckRequest {
            stream: "orders".into(),
            group: "missing-group".into(),
            ids: vec!["1-0".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut line = None;
    eventually("the failed call is logged", || {
        line = broker
            .log_text()
            .lines()
            .find(|l| l.contains("call failed"))
            .map(str::to_owned);
        let found = line.is_some();
        async move { found }
    })
    .await;
    let record: serde_json::Value = serde_json::from_str(&line.unwrap()).expect("a JSON log line");
    let span = &record["span"];
    assert_eq!(span["method"], "/streamgate.v1.Broker/Ack", "{record}");
    assert_eq!(span["stream"], "orders", "{record}");
    assert_eq!(span["group"], "missing-group", "{record}");
    assert_eq!(record["code"], "NotFound", "{record}");
}
