//! `Broker.Consume`, on every store: batches of messages per frame, acks, nacks and extensions
//! on the same stream with confirmations per id, credit, hand-back when the client half-closes,
//! and the protocol's errors. Also Subscribe's opt-in for several messages per response.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const STREAM: &str = "{c}.jobs";

fn open_request(consumer: &str) -> pb::ConsumeOpen {
    pb::ConsumeOpen {
        streams: vec![pb::StreamStart {
            stream: STREAM.into(),
            after_id: String::new(),
        }],
        group: "g".into(),
        consumer: consumer.into(),
        create_group: true,
        group_start_id: "0".into(),
        ..Default::default()
    }
}

fn ids(messages: &[pb::ReceivedMessage]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

fn reasons(confirmation: &pb::Confirmation) -> Vec<(String, pb::SettleFailureReason)> {
    confirmation
        .failed
        .iter()
        .map(|f| (f.id.clone(), f.reason()))
        .collect()
}

async fn pending(env: &mut Env) -> u64 {
    pending_count(&mut env.broker.admin, STREAM, "g").await
}

async fn messages_come_in_batches_and_acks_are_confirmed_per_id(backend: Backend) {
    let mut env = start(backend).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..250).await;
    let mut session = ConsumeSession::open(
        &mut env.broker.broker,
        pb::ConsumeOpen {
            max_messages_per_frame: 100,
            ..open_request("m")
        },
    )
    .await;
    let mut frames = Vec::new();
    let mut got = Vec::new();
    while got.len() < 250 {
        let batch = session.batch().await;
        frames.push(batch.len());
        got.extend(batch);
    }
    assert_eq!(
        got.iter().map(number).collect::<Vec<_>>(),
        (0..250).collect::<Vec<_>>()
    );
    assert!(frames.iter().all(|n| *n <= 100), "{frames:?}");
    assert!(frames.len() < 50, "messages were not batched: {frames:?}");
    // One ack request for many ids; an id never delivered is reported, not fatal.
    let mut acked = ids(&got[..200]);
    acked.push("1-0".into());
    let first = session.settle(ack, &acked, None).await;
    let second = session.settle(ack, &ids(&got[200..]), None).await;
    let confirmed = session.confirmation(first).await;
    assert_eq!(confirmed.succeeded, ids(&got[..200]));
    assert_eq!(
        reasons(&confirmed),
        [("1-0".to_owned(), pb::SettleFailureReason::NotPending)]
    );
    assert_eq!(session.confirmation(second).await.succeeded.len(), 50);
    assert_eq!(pending(&mut env).await, 0);
    // Acked twice: not pending any more.
    let again = session.settle(ack, &ids(&got[..1]), None).await;
    let confirmed = session.confirmation(again).await;
    assert_eq!(
        reasons(&confirmed)[0].1,
        pb::SettleFailureReason::NotPending
    );
}

async fn with_exactly_once_an_ack_after_the_message_went_to_another_member_fails(backend: Backend) {
    let mut env = start(backend).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..1).await;
    let quick = |consumer| pb::ConsumeOpen {
        ack_deadline_ms: 200,
        exactly_once: true,
        ..open_request(consumer)
    };
    // Credit for one message: the slow member cannot take the redelivery itself.
    let mut slow = ConsumeSession::open(
        &mut env.broker.broker,
        pb::ConsumeOpen {
            credit: Some(pb::Credit {
                messages: 1,
                bytes: 0,
            }),
            ..quick("slow")
        },
    )
    .await;
    let first = slow.take(1).await;
    // The deadline passes; the group redelivers it to the other member.
    let mut other = ConsumeSession::open(&mut env.broker.broker, quick("other")).await;
    let again = other.take(1).await;
    assert_eq!(
        (again[0].id.clone(), again[0].delivery_count),
        (first[0].id.clone(), 2)
    );
    let late = slow.settle(ack, &ids(&first), None).await;
    let confirmed = slow.confirmation(late).await;
    assert!(confirmed.succeeded.is_empty());
    assert_eq!(
        reasons(&confirmed),
        [(
            first[0].id.clone(),
            pb::SettleFailureReason::HeldByAnotherConsumer
        )]
    );
    assert!(
        confirmed.failed[0].message.contains("duplicate"),
        "{confirmed:?}"
    );
    let request = other.settle(ack, &ids(&again), None).await;
    assert_eq!(other.confirmation(request).await.succeeded, ids(&again));
    assert_eq!(pending(&mut env).await, 0);
}

/// The default: an ack applies to any pending message of the group (as the unary Ack does), so
/// the member the message went to learns from its own confirmation that it was acked already.
async fn without_exactly_once_a_late_ack_takes_and_the_new_holder_learns_it(backend: Backend) {
    let mut env = start(backend).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..1).await;
    let mut slow = ConsumeSession::open(
        &mut env.broker.broker,
        pb::ConsumeOpen {
            ack_deadline_ms: 200,
            credit: Some(pb::Credit {
                messages: 1,
                bytes: 0,
            }),
            ..open_request("slow")
        },
    )
    .await;
    let first = slow.take(1).await;
    let mut other = ConsumeSession::open(
        &mut env.broker.broker,
        pb::ConsumeOpen {
            ack_deadline_ms: 200,
            ..open_request("other")
        },
    )
    .await;
    let again = other.take(1).await;
    assert_eq!(again[0].delivery_count, 2);
    let late = slow.settle(ack, &ids(&first), None).await;
    assert_eq!(slow.confirmation(late).await.succeeded, ids(&first));
    let request = other.settle(ack, &ids(&again), None).await;
    let confirmed = other.confirmation(request).await;
    assert_eq!(
        reasons(&confirmed),
        [(again[0].id.clone(), pb::SettleFailureReason::NotPending)]
    );
}

async fn nacks_and_extensions_are_confirmed_for_the_ids_this_consumer_holds(backend: Backend) {
    let mut env = start(backend).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..2).await;
    let mut session = ConsumeSession::open(&mut env.broker.broker, open_request("m")).await;
    let got = session.take(2).await;
    let extended = session
        .settle(extend, &[got[0].id.clone(), "1-1".into()], None)
        .await;
    let confirmed = session.confirmation(extended).await;
    assert_eq!(confirmed.succeeded, [got[0].id.clone()]);
    assert_eq!(
        reasons(&confirmed),
        [("1-1".to_owned(), pb::SettleFailureReason::NotHeld)]
    );
    let nacked = session.settle(nack, &ids(&got[1..]), Some(0)).await;
    assert_eq!(session.confirmation(nacked).await.succeeded, ids(&got[1..]));
    // Redelivered on the same stream, its count up by one.
    let back = session.take(1).await;
    assert_eq!(
        (back[0].id.clone(), back[0].delivery_count),
        (got[1].id.clone(), 2)
    );
    // A delay on anything but a nack, an id that is no id, a stream the session does not read:
    // each refused by its confirmation, the stream goes on.
    let odd = session.settle(ack, &ids(&got[..1]), Some(5)).await;
    assert_eq!(
        reasons(&session.confirmation(odd).await)[0].1,
        pb::SettleFailureReason::Invalid
    );
    let bad = session.settle(ack, &["nonsense".into()], None).await;
    let confirmed = session.confirmation(bad).await;
    assert_eq!(reasons(&confirmed)[0].1, pb::SettleFailureReason::Invalid);
    assert!(
        confirmed.failed[0].message.contains("ids[0]"),
        "{confirmed:?}"
    );
    session
        .send(ack(pb::Settle {
            request_id: 99,
            stream: "elsewhere".into(),
            ids: ids(&got[..1]),
            delay_ms: None,
        }))
        .await;
    let confirmed = session.confirmation(99).await;
    assert_eq!(reasons(&confirmed)[0].1, pb::SettleFailureReason::Invalid);
    assert!(
        confirmed.failed[0].message.contains("elsewhere"),
        "{confirmed:?}"
    );
    let all = session.settle(ack, &ids(&got), None).await;
    assert_eq!(session.confirmation(all).await.succeeded.len(), 2);
}

async fn credit_limits_what_is_sent(backend: Backend) {
    let mut env = start(backend).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..30).await;
    let mut session = ConsumeSession::open(
        &mut env.broker.broker,
        pb::ConsumeOpen {
            credit: Some(pb::Credit {
                messages: 5,
                bytes: 0,
            }),
            ..open_request("m")
        },
    )
    .await;
    let first = session.take(5).await;
    session.expect_no_messages(Duration::from_millis(400)).await;
    // Acks free nothing: credit is the client's to grant.
    let request = session.settle(ack, &ids(&first), None).await;
    session.confirmation(request).await;
    session.expect_no_messages(Duration::from_millis(300)).await;
    session
        .send(pb::consume_request::Request::Credit(pb::Credit {
            messages: 10,
            bytes: 0,
        }))
        .await;
    let next = session.take(10).await;
    assert_eq!(number(&next[0]), 5);
    session.expect_no_messages(Duration::from_millis(300)).await;
    session
        .send(pb::consume_request::Request::Credit(pb::Credit {
            messages: 100,
            bytes: 0,
        }))
        .await;
    let rest = session.take(15).await;
    assert_eq!(number(&rest[14]), 29);
}

async fn byte_credit_stops_reading_once_used_up(backend: Backend) {
    let mut env = start(backend).await;
    // Each message is 2 bytes of fields (`n` and one digit).
    produce_numbered(&mut env.broker.broker, STREAM, 0..10).await;
    let mut session = ConsumeSession::open(
        &mut env.broker.broker,
        pb::ConsumeOpen {
            batch_size: 2,
            credit: Some(pb::Credit {
                messages: 100,
                bytes: 5,
            }),
            ..open_request("m")
        },
    )
    .await;
    // 4 bytes read, 1 left: one more read of 2, sent whole; then nothing.
    session.take(4).await;
    session.expect_no_messages(Duration::from_millis(400)).await;
    session
        .send(pb::consume_request::Request::Credit(pb::Credit {
            messages: 0,
            bytes: 100,
        }))
        .await;
    let rest = session.take(6).await;
    assert_eq!(number(&rest[5]), 9);
}

async fn a_client_that_half_closes_ends_with_ok_and_its_messages_go_back(backend: Backend) {
    let mut env = start(backend).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..3).await;
    let mut leaving = ConsumeSession::open(&mut env.broker.broker, open_request("leaving")).await;
    assert_eq!(leaving.consumer, "leaving");
    let held = leaving.take(3).await;
    leaving
        .finish()
        .await
        .expect("a half-close ends the call with OK");
    // Handed back at once, not after the 30 s deadline.
    let mut other = ConsumeSession::open(&mut env.broker.broker, open_request("other")).await;
    let again = other.take(3).await;
    assert_eq!(ids(&again), ids(&held));
    assert!(again.iter().all(|m| m.delivery_count == 2), "{again:?}");
}

async fn the_protocol_is_enforced_with_clear_errors(backend: Backend) {
    let mut env = start(backend).await;
    // The first request must be `open`.
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Credit(pb::Credit::default())),
    })
    .await
    .unwrap();
    let status = env
        .broker
        .broker
        .consume(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("open"), "{status:?}");
    // Consume is group mode only.
    let status = ConsumeSession::start(
        &mut env.broker.broker,
        Some(pb::ConsumeOpen {
            group: String::new(),
            ..open_request("m")
        }),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("open.group"), "{status:?}");
    // A second `open` ends the call.
    let mut session = ConsumeSession::open(&mut env.broker.broker, open_request("m")).await;
    session
        .send(pb::consume_request::Request::Open(open_request("m")))
        .await;
    let status = session.finish().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("first request"), "{status:?}");
}

async fn subscribe_may_ask_for_several_messages_per_response(backend: Backend) {
    let mut env = start(backend).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..50).await;
    let request = pb::SubscribeRequest {
        max_messages_per_response: 20,
        ..group_request(&[STREAM], "g", "m")
    };
    let mut stream = env
        .broker
        .broker
        .subscribe(request)
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut responses = 0;
    while got.len() < 50 {
        let item = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        match item.event {
            Some(pb::subscribe_response::Event::Messages(batch)) => {
                assert!(batch.messages.len() <= 20);
                responses += 1;
                got.extend(batch.messages);
            }
            Some(pb::subscribe_response::Event::Started(_))
            | Some(pb::subscribe_response::Event::Heartbeat(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got.iter().map(number).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    assert!(responses < 50, "not batched: {responses} responses");
}

conformance!(
    messages_come_in_batches_and_acks_are_confirmed_per_id,
    with_exactly_once_an_ack_after_the_message_went_to_another_member_fails,
    without_exactly_once_a_late_ack_takes_and_the_new_holder_learns_it,
    nacks_and_extensions_are_confirmed_for_the_ids_this_consumer_holds,
    credit_limits_what_is_sent,
    byte_credit_stops_reading_once_used_up,
    a_client_that_half_closes_ends_with_ok_and_its_messages_go_back,
    the_protocol_is_enforced_with_clear_errors,
    subscribe_may_ask_for_several_messages_per_response,
);
