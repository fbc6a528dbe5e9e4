//! Produce: what a producer sends is stored as plain Redis stream entries, ids come back in order.

mod support;

use streamgate::grpc::pb;
use support::*;
use tonic::Code;

fn message(id: &str, pairs: &[(&str, &str)]) -> pb::OutgoingMessage {
    pb::OutgoingMessage {
        id: id.into(),
        fields: fields(pairs),
        ..Default::default()
    }
}

fn request(stream: &str, messages: Vec<pb::OutgoingMessage>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.into(),
        messages,
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_batch_is_stored_in_order_as_plain_redis_entries() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;

    let ids = produce_numbered(&mut broker.broker, "orders", 0..50).await;
    assert_eq!(ids.len(), 50);

    // Any Redis client reads exactly what we wrote, in order, with our ids.
    let stored: Vec<(String, Vec<(String, String)>)> =
        redis.cmd(&["XRANGE", "orders", "-", "+"]).await;
    assert_eq!(stored.len(), 50);
    for (i, (id, fields)) in stored.iter().enumerate() {
        assert_eq!(id, &ids[i]);
        assert_eq!(fields, &vec![("n".to_owned(), i.to_string())]);
    }
}

#[tokio::test]
async fn field_order_and_binary_values_survive() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let binary = vec![0u8, 255, 13, 10, 0, 7];
    let message = pb::OutgoingMessage {
        id: String::new(),
        fields: vec![
            pb::Field {
                name: "z".into(),
                value: "last-name-first".into(),
            },
            pb::Field {
                name: "blob".into(),
                value: binary.clone().into(),
            },
            pb::Field {
                name: "a".into(),
                value: "".into(),
            },
        ],
        ..Default::default()
    };
    broker
        .broker
        .produce(request("bin", vec![message]))
        .await
        .unwrap();
    let stored = broker
        .admin
        .query_messages(pb::QueryMessagesRequest {
            stream: "bin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let names: Vec<_> = stored[0].fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["z", "blob", "a"]);
    assert_eq!(stored[0].fields[1].value.as_ref(), binary.as_slice());
}

#[tokio::test]
async fn explicit_and_partial_ids() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let ids = broker
        .broker
        .produce(request(
            "ids",
            vec![
                message("5-1", &[("a", "1")]),
                message("6-*", &[("a", "2")]),
                message("7", &[("a", "3")]),
            ],
        ))
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(ids, ["5-1", "6-0", "7-0"]);

    // Not above the top id: FAILED_PRECONDITION, and the stream is unchanged.
    let status = broker
        .broker
        .produce(request("ids", vec![message("7-0", &[("a", "4")])]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("`ids`"), "{}", status.message());
    let len: u64 = redis.cmd(&["XLEN", "ids"]).await;
    assert_eq!(len, 3);
}

#[tokio::test]
async fn a_produce_with_a_trim_policy_keeps_the_stream_at_its_cap() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut req = numbered("capped", 0..20);
    req.trim = Some(pb::TrimPolicy {
        threshold: Some(pb::trim_policy::Threshold::MaxLen(5)),
        approximate: false,
        limit: 0,
    });
    let ids = broker.broker.produce(req).await.unwrap().into_inner().ids;
    let len: u64 = redis.cmd(&["XLEN", "capped"]).await;
    assert_eq!(len, 5);

    // MINID: evict everything below the 18th id.
    let mut req = numbered("capped", 20..21);
    req.trim = Some(pb::TrimPolicy {
        threshold: Some(pb::trim_policy::Threshold::MinId(ids[18].clone())),
        approximate: false,
        limit: 0,
    });
    broker.broker.produce(req).await.unwrap();
    let first: Vec<(String, Vec<(String, String)>)> = redis
        .cmd(&["XRANGE", "capped", "-", "+", "COUNT", "1"])
        .await;
    assert_eq!(first[0].0, ids[18]);

    // Approximate with LIMIT is accepted (Redis may keep more than MAXLEN).
    let mut req = numbered("capped", 21..30);
    req.trim = Some(pb::TrimPolicy {
        threshold: Some(pb::trim_policy::Threshold::MaxLen(2)),
        approximate: true,
        limit: 100,
    });
    broker.broker.produce(req).await.unwrap();
    let len: u64 = redis.cmd(&["XLEN", "capped"]).await;
    assert!(len >= 2, "{len}");
}

#[tokio::test]
async fn require_existing_stream_refuses_to_create() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut req = numbered("nowhere", 0..1);
    req.require_existing_stream = true;
    let status = broker.broker.produce(req.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("`nowhere`"));
    let exists: u64 = redis.cmd(&["EXISTS", "nowhere"]).await;
    assert_eq!(exists, 0);

    produce_numbered(&mut broker.broker, "nowhere", 0..1).await;
    assert_eq!(
        broker
            .broker
            .produce(req)
            .await
            .unwrap()
            .into_inner()
            .ids
            .len(),
        1
    );
}

#[tokio::test]
async fn produce_stream_answers_every_request_in_order_errors_included() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let mut requests: Vec<pb::ProduceRequest> =
        (0..100).map(|i| numbered("streamed", i..i + 1)).collect();
    requests.push(numbered("", 0..1)); // invalid: empty stream name
    requests.extend((100..200).map(|i| numbered("streamed", i..i + 1)));
    let mut answers = broker
        .broker
        .produce_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut outcomes = Vec::new();
    while let Some(answer) = answers.message().await.expect("the stream ends cleanly") {
        outcomes.push(answer.result.expect("an outcome"));
    }
    assert_eq!(outcomes.len(), 201, "one answer per request");
    use pb::produce_stream_response::Result as Outcome;
    match &outcomes[100] {
        Outcome::Error(error) => {
            assert_eq!(error.code, Code::InvalidArgument as i32);
            assert!(
                error.message.contains("invalid stream"),
                "{}",
                error.message
            );
        }
        other => panic!("request 100 should have failed: {other:?}"),
    }
    let ids: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Produced(p) => Some(p.ids[0].clone()),
            Outcome::Error(_) => None,
        })
        .collect();
    // Answers in request order: the ids are the stream's, in the order of the numbers sent.
    let stored: Vec<(String, Vec<(String, String)>)> =
        redis.cmd(&["XRANGE", "streamed", "-", "+"]).await;
    assert_eq!(stored.len(), 200);
    for (i, (id, fields)) in stored.iter().enumerate() {
        assert_eq!(id, &ids[i]);
        assert_eq!(fields[0].1, i.to_string());
    }
}
