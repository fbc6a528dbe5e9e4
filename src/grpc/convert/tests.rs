//! Validation and conversion, checked without a server: every refusal names its field.

use bytes::Bytes;
use clap::Parser;
use tonic::Code;

use super::*;
use crate::config::ServeConfig;
use crate::delivery::ReadMode;
use crate::model::{Backoff, StartId};
use crate::store::GroupCursor;

fn limits() -> Limits {
    ServeConfig::parse_from(["serve"]).limits
}

fn backoff() -> Backoff {
    ServeConfig::parse_from(["serve"]).redelivery().backoff
}

fn status_of<T: std::fmt::Debug>(result: BrokerResult<T>) -> tonic::Status {
    tonic::Status::from(result.unwrap_err())
}

fn message(fields: &[(&str, &str)]) -> pb::OutgoingMessage {
    pb::OutgoingMessage {
        id: String::new(),
        fields: fields
            .iter()
            .map(|(n, v)| pb::Field {
                name: (*n).into(),
                value: Bytes::from(v.to_string()),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn produce_errors_name_the_field() {
    let request = |stream: &str, messages| pb::ProduceRequest {
        stream: stream.into(),
        messages,
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    };
    let cases = [
        (
            request("", vec![message(&[("a", "1")])]),
            "invalid stream: must not be empty",
        ),
        (request("s", vec![]), "invalid messages:"),
        (
            request("s", vec![message(&[("a", "1")]), message(&[])]),
            "invalid messages[1].fields:",
        ),
        (
            request("s", vec![message(&[("", "1")])]),
            "invalid messages[0].fields[0].name:",
        ),
    ];
    for (req, expected) in cases {
        let status = status_of(produce(req, &limits()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(expected),
            "{} !~ {expected}",
            status.message()
        );
    }
    let mut bad_id = message(&[("a", "1")]);
    bad_id.id = "1-x".into();
    let status = status_of(produce(request("s", vec![bad_id]), &limits()));
    assert!(
        status
            .message()
            .starts_with("invalid messages[0].id: `1-x`"),
        "{}",
        status.message()
    );
}

#[test]
fn size_limits_are_enforced() {
    let mut limits = limits();
    limits.max_message_bytes = 10;
    limits.max_batch = 2;
    let req = |n: usize, value: &str| pb::ProduceRequest {
        stream: "s".into(),
        messages: (0..n).map(|_| message(&[("f", value)])).collect(),
        trim: None,
        require_existing_stream: false,
        partition_key: String::new(),
        ..Default::default()
    };
    assert!(produce(req(2, "123456789"), &limits).is_ok());
    assert!(
        status_of(produce(req(1, "1234567890"), &limits))
            .message()
            .contains("over the limit of 10")
    );
    assert!(
        status_of(produce(req(3, "1"), &limits))
            .message()
            .contains("batch limit of 2")
    );
}

#[test]
fn trim_limit_needs_approximate() {
    let policy = pb::TrimPolicy {
        threshold: Some(pb::trim_policy::Threshold::MaxLen(5)),
        approximate: false,
        limit: 10,
    };
    let status = status_of(trim_policy("trim", &policy));
    assert!(
        status.message().starts_with("invalid trim.limit"),
        "{}",
        status.message()
    );
    assert!(
        status_of(trim_policy("trim", &pb::TrimPolicy::default()))
            .message()
            .contains("max_len or min_id")
    );
}

#[test]
fn subscribe_requests_are_checked() {
    let start = |stream: &str, after: &str| pb::StreamStart {
        stream: stream.into(),
        after_id: after.into(),
    };
    let tail = pb::SubscribeRequest {
        streams: vec![start("a", "0"), start("b", "")],
        ..Default::default()
    };
    let spec = subscription(tail, &limits(), backoff()).unwrap();
    assert_eq!(
        spec.member.reading,
        ReadMode::Tail(vec![StartId::After(EntryId::ZERO), StartId::Latest])
    );

    let group = pb::SubscribeRequest {
        streams: vec![start("a", "")],
        group: "g".into(),
        ..Default::default()
    };
    match subscription(group, &limits(), backoff())
        .unwrap()
        .member
        .reading
    {
        ReadMode::Group {
            membership: m,
            cursors,
        } => {
            assert_eq!(cursors, [GroupCursor::PendingAfter(EntryId::ZERO)]);
            assert!(m.consumer.starts_with("sg-") && m.generated_name);
            // Server defaults: 30 s deadline, 1000 in flight, no delivery limit, `<s>:dlq`.
            assert_eq!(m.delivery.ack_deadline, Duration::from_secs(30));
            assert_eq!((m.max_in_flight, m.delivery.max_deliveries), (1000, 0));
            assert_eq!(m.delivery.dead_letter_stream_for("a", false), "a:dlq");
        }
        other => panic!("{other:?}"),
    }

    let bad = [
        (pb::SubscribeRequest::default(), "invalid streams:"),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", ""), start("a", "")],
                ..Default::default()
            },
            "invalid streams[1].stream",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "abc")],
                ..Default::default()
            },
            "invalid streams[0].after_id",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "")],
                consumer: "c".into(),
                ..Default::default()
            },
            "invalid consumer",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "0")],
                group: "g".into(),
                ..Default::default()
            },
            "invalid streams[0].after_id",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "")],
                batch_size: 1_000_000,
                ..Default::default()
            },
            "invalid batch_size",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "")],
                max_in_flight: Some(10),
                ..Default::default()
            },
            "invalid max_in_flight: only applies in group mode",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "")],
                max_deliveries: Some(3),
                ..Default::default()
            },
            "invalid max_deliveries: only applies in group mode",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "")],
                group: "g".into(),
                ack_deadline_ms: 3_600_001,
                ..Default::default()
            },
            "invalid ack_deadline_ms: must be at most 3600000 ms",
        ),
        (
            pb::SubscribeRequest {
                streams: vec![start("a", "")],
                group: "g".into(),
                dead_letter_stream: "x".repeat(10_000),
                ..Default::default()
            },
            "invalid dead_letter_stream",
        ),
    ];
    for (req, expected) in bad {
        let status = status_of(subscription(req, &limits(), backoff()));
        assert!(
            status.message().starts_with(expected),
            "{} !~ {expected}",
            status.message()
        );
    }
}

#[test]
fn grpc_timeouts_parse() {
    let timeout = |value: &str| {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&metadata)
    };
    assert_eq!(timeout("5S"), Some(Duration::from_secs(5)));
    assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
    assert_eq!(timeout("2M"), Some(Duration::from_secs(120)));
    assert_eq!(timeout("7x"), None);
    assert_eq!(timeout("S"), None);
    assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
}

#[test]
fn fetch_requests_are_checked() {
    let start = |stream: &str, after: &str| pb::StreamStart {
        stream: stream.into(),
        after_id: after.into(),
    };
    let group = pb::FetchRequest {
        streams: vec![start("a", ""), start("b", "0"), start("c", ">")],
        group: "g".into(),
        consumer: "c".into(),
        ..Default::default()
    };
    match fetch(group, None, &limits(), backoff())
        .unwrap()
        .member
        .reading
    {
        ReadMode::Group { cursors, .. } => assert_eq!(
            cursors,
            [
                GroupCursor::New,
                GroupCursor::PendingAfter(EntryId::ZERO),
                GroupCursor::New
            ]
        ),
        other => panic!("{other:?}"),
    }
    let bad = [
        (
            pb::FetchRequest {
                streams: vec![start("a", "")],
                group: "g".into(),
                ..Default::default()
            },
            "invalid consumer: is required",
        ),
        (
            pb::FetchRequest {
                streams: vec![start("a", "1-x")],
                group: "g".into(),
                consumer: "c".into(),
                ..Default::default()
            },
            "invalid streams[0].after_id",
        ),
        (
            pb::FetchRequest {
                streams: vec![start("a", ">")],
                ..Default::default()
            },
            "invalid streams[0].after_id",
        ),
        (pb::FetchRequest::default(), "invalid streams"),
        (
            pb::FetchRequest {
                streams: vec![start("a", "")],
                no_ack: true,
                ..Default::default()
            },
            "invalid no_ack",
        ),
    ];
    for (req, expected) in bad {
        let status = status_of(fetch(req, None, &limits(), backoff()));
        assert!(
            status.message().starts_with(expected),
            "{} !~ {expected}",
            status.message()
        );
    }
}
