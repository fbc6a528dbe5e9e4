//! One behavioural suite, run against every store: a real `redis-server`, a real Redis Cluster
//! of three masters, and the embedded in-memory store. Every test talks to the broker over gRPC only, so whatever a client can
//! observe must come out the same; this is how we know the embedded store tells the truth.
//!
//! Each test is written once as `async fn name(store: Backend)` and listed in `conformance!` at
//! the end (see `support::backends`), which makes `on_redis::name`, `on_memory::name` and
//! `on_cluster::name` of it.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use support::*;
use tonic::Code;

fn produce(stream: &str, ids: &[&str]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        stream: stream.into(),
        messages: ids
            .iter()
            .enumerate()
            .map(|(i, id)| pb::OutgoingMessage {
                id: (*id).into(),
                fields: fields(&[("n", &i.to_string())]),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("expected an error").code()
}

fn ids_of(entries: &[pb::Entry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

fn fetch(stream: &str, consumer: &str, after: &str, count: u32) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: stream.into(),
            after_id: after.into(),
        }],
        group: "g".into(),
        consumer: consumer.into(),
        count,
        ..Default::default()
    }
}

async fn create_group(env: &mut Env, stream: &str, start: &str) {
    env.broker
        .admin
        .create_group(pb::CreateGroupRequest {
            stream: stream.into(),
            group: "g".into(),
            start_id: start.into(),
            create_stream: true,
            entries_read: None,
        })
        .await
        .expect("create group");
}

async fn ids_must_increase_and_explicit_forms_work(backend: Backend) {
    let mut env = start(backend).await;
    let b = &mut env.broker.broker;
    let ids = b
        .produce(produce("s", &["5-0", "5-*", "7-3"]))
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(ids, ["5-0", "5-1", "7-3"]);
    assert_eq!(
        code(b.produce(produce("s", &["7-3"])).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(b.produce(produce("s", &["6-*"])).await),
        Code::FailedPrecondition
    );
    let auto = b
        .produce(produce("s", &["", ""]))
        .await
        .unwrap()
        .into_inner()
        .ids;
    let ms = |id: &str| -> u64 { id.split('-').next().unwrap().parse().unwrap() };
    assert!(ms(&auto[0]) > 7 && auto[1] > auto[0], "{auto:?}");
    let mut missing = produce("nope", &[""]);
    missing.require_existing_stream = true;
    assert_eq!(code(b.produce(missing).await), Code::NotFound);
}

async fn ranges_counts_and_reverse(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("r", &["1-0", "2-0", "3-0", "4-0"]))
        .await
        .unwrap();
    let query = |min: &str, max: &str, count: u32, reverse: bool| pb::QueryMessagesRequest {
        stream: "r".into(),
        min_id: min.into(),
        max_id: max.into(),
        count,
        reverse,
    };
    let admin = &mut env.broker.admin;
    let all = admin
        .query_messages(query("", "", 0, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&all.entries), ["1-0", "2-0", "3-0", "4-0"]);
    assert_eq!(all.entries[2].fields, fields(&[("n", "2")]));
    let some = admin
        .query_messages(query("(1-0", "3", 0, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&some.entries), ["2-0", "3-0"]);
    let back = admin
        .query_messages(query("", "", 2, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&back.entries), ["4-0", "3-0"]);
    let none = admin
        .query_messages(query("3", "2", 0, false))
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());
    let missing = admin
        .query_messages(pb::QueryMessagesRequest {
            stream: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(missing.entries.is_empty());
}

async fn delete_trim_and_stream_info(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("t", &["1-0", "2-0", "3-0", "4-0", "5-0"]))
        .await
        .unwrap();
    let admin = &mut env.broker.admin;
    let deleted = admin
        .delete_messages(pb::DeleteMessagesRequest {
            stream: "t".into(),
            ids: vec!["2-0".into(), "9-0".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
    let trim = |threshold| pb::TrimStreamRequest {
        stream: "t".into(),
        trim: Some(pb::TrimPolicy {
            threshold: Some(threshold),
            approximate: false,
            limit: 0,
        }),
    };
    let trimmed = admin
        .trim_stream(trim(pb::trim_policy::Threshold::MaxLen(3)))
        .await
        .unwrap()
        .into_inner()
        .trimmed;
    assert_eq!(trimmed, 1);
    let trimmed = admin
        .trim_stream(trim(pb::trim_policy::Threshold::MinId("4-0".into())))
        .await
        .unwrap()
        .into_inner()
        .trimmed;
    assert_eq!(trimmed, 1);
    let info = admin
        .get_stream_info(pb::GetStreamInfoRequest { stream: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            info.length,
            info.entries_added,
            info.last_generated_id.as_str(),
            info.max_deleted_entry_id.as_str(),
            info.groups
        ),
        (2, 5, "5-0", "2-0", 0)
    );
    assert_eq!(info.first_entry.map(|e| e.id), Some("4-0".into()));
    assert_eq!(info.last_entry.map(|e| e.id), Some("5-0".into()));
    let missing = admin
        .get_stream_info(pb::GetStreamInfoRequest {
            stream: "nope".into(),
        })
        .await;
    assert_eq!(code(missing), Code::NotFound);
    admin
        .delete_stream(pb::DeleteStreamRequest { stream: "t".into() })
        .await
        .unwrap();
    let again = admin
        .delete_stream(pb::DeleteStreamRequest { stream: "t".into() })
        .await;
    assert_eq!(code(again), Code::NotFound);
}

async fn listing_by_pattern_returns_only_the_matching_streams(backend: Backend) {
    let mut env = start(backend).await;
    for stream in ["orders.eu", "orders.us", "users"] {
        env.broker
            .broker
            .produce(produce(stream, &[""]))
            .await
            .unwrap();
    }
    let mut found = Vec::new();
    let mut token = String::new();
    loop {
        let page = env
            .broker
            .admin
            .list_streams(pb::ListStreamsRequest {
                pattern: "orders.*".into(),
                page_size: 0,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        found.extend(page.streams);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    found.sort();
    found.dedup();
    assert_eq!(found, ["orders.eu", "orders.us"]);
}

async fn groups_lifecycle_lag_and_errors(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("g1", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    let create = |start: &str, mkstream: bool| pb::CreateGroupRequest {
        stream: "g1".into(),
        group: "g".into(),
        start_id: start.into(),
        create_stream: mkstream,
        entries_read: None,
    };
    let admin = &mut env.broker.admin;
    admin.create_group(create("0", false)).await.unwrap();
    assert_eq!(
        code(admin.create_group(create("$", false)).await),
        Code::AlreadyExists
    );
    let mut on_missing = create("$", false);
    on_missing.stream = "absent".into();
    assert_eq!(
        code(admin.create_group(on_missing.clone()).await),
        Code::NotFound
    );
    on_missing.create_stream = true;
    admin.create_group(on_missing).await.unwrap();

    let groups = |admin: &mut pb::admin_client::AdminClient<_>| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_groups(pb::ListGroupsRequest {
                    stream: "g1".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .groups
        }
    };
    let before = groups(admin).await;
    assert_eq!(
        (before[0].lag, before[0].last_delivered_id.as_str()),
        (Some(3), "0-0")
    );
    env.broker
        .broker
        .fetch(fetch("g1", "c", ">", 2))
        .await
        .unwrap();
    let admin = &mut env.broker.admin;
    let after = groups(admin).await;
    assert_eq!(
        (
            after[0].entries_read,
            after[0].lag,
            after[0].pending,
            after[0].consumers
        ),
        (Some(2), Some(1), 2, 1)
    );
    assert_eq!(after[0].last_delivered_id, "2-0");
    admin
        .set_group_id(pb::SetGroupIdRequest {
            stream: "g1".into(),
            group: "g".into(),
            id: "$".into(),
            entries_read: None,
        })
        .await
        .unwrap();
    assert_eq!(groups(admin).await[0].last_delivered_id, "3-0");
    let destroy = |group: &str| pb::DestroyGroupRequest {
        stream: "g1".into(),
        group: group.into(),
    };
    admin.destroy_group(destroy("g")).await.unwrap();
    assert_eq!(
        code(admin.destroy_group(destroy("g")).await),
        Code::NotFound
    );
    let no_groups = admin
        .list_groups(pb::ListGroupsRequest {
            stream: "nope".into(),
        })
        .await;
    assert_eq!(code(no_groups), Code::NotFound);
}

async fn group_reads_replays_acks_and_deleted_entries(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("q", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    create_group(&mut env, "q", "0").await;
    let b = &mut env.broker.broker;
    let first = b
        .fetch(fetch("q", "c", ">", 10))
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<u64> = first.messages.iter().map(|m| m.delivery_count).collect();
    assert_eq!(counts, [1, 1, 1]);
    let acked = b
        .ack(pb::AckRequest {
            stream: "q".into(),
            group: "g".into(),
            ids: vec!["1-0".into(), "9-0".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .acknowledged;
    assert_eq!(acked, 1);
    let misspelt = b
        .ack(pb::AckRequest {
            stream: "q".into(),
            group: "typo".into(),
            ids: vec!["2-0".into()],
        })
        .await;
    assert_eq!(code(misspelt), Code::NotFound);
    env.broker
        .admin
        .delete_messages(pb::DeleteMessagesRequest {
            stream: "q".into(),
            ids: vec!["2-0".into()],
        })
        .await
        .unwrap();
    // A replay of the consumer's own pending: the deleted one is skipped, never empty; the
    // other's delivery count went up.
    let replay = env
        .broker
        .broker
        .fetch(fetch("q", "c", "0", 10))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(String, u64)> = replay
        .messages
        .iter()
        .map(|m| (m.id.clone(), m.delivery_count))
        .collect();
    assert_eq!(got, [("3-0".to_owned(), 2)]);
    assert!(replay.messages.iter().all(|m| !m.fields.is_empty()));
    let missing_group = env
        .broker
        .broker
        .fetch(fetch("q", "c", ">", 10).tap(|r| r.group = "typo".into()))
        .await;
    assert_eq!(code(missing_group), Code::NotFound);
}

async fn consumers_and_pending_views(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("p", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    create_group(&mut env, "p", "0").await;
    let admin = &mut env.broker.admin;
    let consumer = |name: &str| pb::CreateConsumerRequest {
        stream: "p".into(),
        group: "g".into(),
        consumer: name.into(),
    };
    assert!(
        admin
            .create_consumer(consumer("idle"))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    assert!(
        !admin
            .create_consumer(consumer("idle"))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    env.broker
        .broker
        .fetch(fetch("p", "a", ">", 2))
        .await
        .unwrap();
    env.broker
        .broker
        .fetch(fetch("p", "b", ">", 1))
        .await
        .unwrap();
    let admin = &mut env.broker.admin;
    let summary = admin
        .get_pending_summary(pb::GetPendingSummaryRequest {
            stream: "p".into(),
            group: "g".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            summary.count,
            summary.min_id.as_str(),
            summary.max_id.as_str()
        ),
        (3, "1-0", "3-0")
    );
    let per: Vec<(String, u64)> = summary
        .consumers
        .iter()
        .map(|c| (c.consumer.clone(), c.pending))
        .collect();
    assert_eq!(per, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    let listed = admin
        .list_pending(pb::ListPendingRequest {
            stream: "p".into(),
            group: "g".into(),
            consumer: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["1-0", "2-0"]
    );
    assert!(
        listed
            .iter()
            .all(|e| e.consumer == "a" && e.delivery_count == 1)
    );
    let idle_filter = admin
        .list_pending(pb::ListPendingRequest {
            stream: "p".into(),
            group: "g".into(),
            min_idle_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(idle_filter.is_empty());
    let mut consumers: Vec<(String, u64)> = admin
        .list_consumers(pb::ListConsumersRequest {
            stream: "p".into(),
            group: "g".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .consumers
        .into_iter()
        .map(|c| (c.name, c.pending))
        .collect();
    consumers.sort();
    assert_eq!(
        consumers,
        [
            ("a".to_owned(), 2),
            ("b".to_owned(), 1),
            ("idle".to_owned(), 0)
        ]
    );
    let dropped = admin
        .delete_consumer(pb::DeleteConsumerRequest {
            stream: "p".into(),
            group: "g".into(),
            consumer: "a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pending_dropped;
    assert_eq!(dropped, 2);
    let summary = admin
        .get_pending_summary(pb::GetPendingSummaryRequest {
            stream: "p".into(),
            group: "g".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.count, 1);
}

async fn claim_and_autoclaim_take_only_entries_idle_long_enough(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("c", &["1-0", "2-0", "3-0", "4-0"]))
        .await
        .unwrap();
    create_group(&mut env, "c", "0").await;
    env.broker
        .broker
        .fetch(fetch("c", "a", ">", 10))
        .await
        .unwrap();
    let claim = |ids: &[&str], min_idle_ms: u64| pb::ClaimRequest {
        stream: "c".into(),
        group: "g".into(),
        consumer: "b".into(),
        min_idle_ms,
        ids: ids.iter().map(|s| (*s).into()).collect(),
        ..Default::default()
    };
    let admin = &mut env.broker.admin;
    // Too recently delivered: nothing moves.
    let none = admin
        .claim(claim(&["1-0"], 60_000))
        .await
        .unwrap()
        .into_inner();
    assert!(none.claimed_ids.is_empty());
    // Claimed: delivery count up; JUSTID leaves it; RETRYCOUNT sets it.
    let got = admin.claim(claim(&["1-0"], 0)).await.unwrap().into_inner();
    assert_eq!(ids_of(&got.messages), ["1-0"]);
    let mut just = claim(&["2-0"], 0);
    just.just_id = true;
    let got = admin.claim(just).await.unwrap().into_inner();
    assert_eq!(
        (got.claimed_ids.as_slice(), got.messages.len()),
        (&["2-0".to_owned()][..], 0)
    );
    let mut retry = claim(&["3-0"], 0);
    retry.retry_count = Some(7);
    retry.idle_ms = Some(5_000);
    admin.claim(retry).await.unwrap();
    let pending = admin
        .list_pending(pb::ListPendingRequest {
            stream: "c".into(),
            group: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let view: Vec<(&str, &str, u64)> = pending
        .iter()
        .map(|e| (e.id.as_str(), e.consumer.as_str(), e.delivery_count))
        .collect();
    assert_eq!(
        view,
        [
            ("1-0", "b", 2),
            ("2-0", "b", 1),
            ("3-0", "b", 7),
            ("4-0", "a", 1)
        ]
    );
    assert!(pending[2].idle_ms >= 5_000, "{:?}", pending[2]);
    // A deleted pending entry: XCLAIM drops it silently, XAUTOCLAIM reports it.
    admin
        .delete_messages(pb::DeleteMessagesRequest {
            stream: "c".into(),
            ids: vec!["4-0".into(), "1-0".into()],
        })
        .await
        .unwrap();
    let dropped = admin.claim(claim(&["4-0"], 0)).await.unwrap().into_inner();
    assert!(dropped.claimed_ids.is_empty());
    let auto = admin
        .auto_claim(pb::AutoClaimRequest {
            stream: "c".into(),
            group: "g".into(),
            consumer: "z".into(),
            min_idle_ms: 0,
            start_id: "0".into(),
            count: 10,
            just_id: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&auto.messages), ["2-0", "3-0"]);
    assert_eq!(auto.deleted_ids, ["1-0"]);
    assert_eq!(auto.next_start_id, "0-0");
    let missing = admin
        .claim(claim(&["2-0"], 0).tap(|r| r.group = "typo".into()))
        .await;
    assert_eq!(code(missing), Code::NotFound);
}

async fn subscribe_tail_and_group_deliver_in_order(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("sub", &["1-0", "2-0"]))
        .await
        .unwrap();
    let mut from_start =
        Subscription::open(&mut env.broker.broker, tail_request(&[("sub", "0")])).await;
    let mut from_now =
        Subscription::open(&mut env.broker.broker, tail_request(&[("sub", "$")])).await;
    let mut member =
        Subscription::open(&mut env.broker.broker, group_request(&["sub"], "g", "m")).await;
    let ids: Vec<String> = from_start.take(2).await.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["1-0", "2-0"]);
    assert_eq!(member.take(2).await.len(), 2);
    env.broker
        .broker
        .produce(produce("sub", &["3-0"]))
        .await
        .unwrap();
    assert_eq!(from_now.next().await.id, "3-0");
    assert_eq!(from_start.next().await.id, "3-0");
    let third = member.next().await;
    assert_eq!((third.id.as_str(), third.delivery_count), ("3-0", 1));
}

async fn nack_dead_letters_and_replay(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("dl", &["1-0"]))
        .await
        .unwrap();
    let mut request = group_request(&["dl"], "g", "m");
    request.max_deliveries = Some(2);
    let mut member = Subscription::open(&mut env.broker.broker, request).await;
    for expected in 1..=2 {
        let m = member.next().await;
        assert_eq!((m.id.as_str(), m.delivery_count), ("1-0", expected));
        let nacked = env
            .broker
            .broker
            .nack(pb::NackRequest {
                stream: "dl".into(),
                group: "g".into(),
                ids: vec![m.id],
                consumer: "m".into(),
                delay_ms: Some(0),
            })
            .await
            .unwrap()
            .into_inner()
            .ids;
        assert_eq!(nacked, ["1-0"]);
    }
    member.expect_quiet(Duration::from_millis(600)).await;
    let letters = env
        .broker
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            dead_letter_stream: default_dlq(backend, "dl"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].stream.as_str(),
            letters[0].original_id.as_str(),
            letters[0].delivery_count
        ),
        ("dl", "1-0", 2)
    );
    assert_eq!(letters[0].fields, fields(&[("n", "0")]));
    let replayed = env
        .broker
        .admin
        .replay_dead_letters(pb::ReplayDeadLettersRequest {
            dead_letter_stream: default_dlq(backend, "dl"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .replayed;
    assert_eq!(replayed.len(), 1);
    let back = member.next().await;
    assert_eq!(
        (back.id.as_str(), back.delivery_count),
        (replayed[0].id.as_str(), 1)
    );
}

/// A group member on `stream` that may hold `max_in_flight` messages, each for `ack_deadline_ms`.
async fn limited_member(
    env: &mut Env,
    stream: &str,
    consumer: &str,
    max_in_flight: u32,
    ack_deadline_ms: u32,
) -> Subscription {
    let mut request = group_request(&[stream], "g", consumer);
    request.max_in_flight = Some(max_in_flight);
    request.ack_deadline_ms = ack_deadline_ms;
    Subscription::open(&mut env.broker.broker, request).await
}

async fn extend_keeps_and_flow_control_limits(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .broker
        .produce(produce("fc", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    let mut member = limited_member(&mut env, "fc", "m", 2, 300).await;
    let held = member.take(2).await;
    for _ in 0..4 {
        let extended = env
            .broker
            .broker
            .extend_deadline(pb::ExtendDeadlineRequest {
                stream: "fc".into(),
                group: "g".into(),
                consumer: "m".into(),
                ids: held.iter().map(|m| m.id.clone()).collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .ids;
        assert_eq!(extended.len(), 2);
        member.expect_quiet(Duration::from_millis(150)).await;
    }
    env.broker
        .broker
        .ack(pb::AckRequest {
            stream: "fc".into(),
            group: "g".into(),
            ids: vec![held[0].id.clone()],
        })
        .await
        .unwrap();
    assert_eq!(member.next().await.id, "3-0");

    // A member back at its limit (what a crashed broker leaves: a full window that nobody
    // handed back) gets its own pending entries again at once; they are already counted.
    env.broker
        .broker
        .produce(produce("fc2", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    create_group(&mut env, "fc2", "0").await;
    let fetched = env
        .broker
        .broker
        .fetch(fetch("fc2", "f", ">", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.messages.len(), 2);
    let mut back = limited_member(&mut env, "fc2", "f", 2, 60_000).await;
    let replayed = back.take(2).await;
    let ids: Vec<_> = replayed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0"]);
    assert!(
        replayed.iter().all(|m| m.delivery_count == 2),
        "{replayed:?}"
    );
    back.expect_quiet(Duration::from_millis(200)).await;

    // Messages past their deadline no longer count against the limit: a sole member at its
    // limit that never acks gets them again once they expire, instead of waiting forever.
    env.broker
        .broker
        .produce(produce("fc3", &["1-0", "2-0", "3-0"]))
        .await
        .unwrap();
    let mut slow = limited_member(&mut env, "fc3", "slow", 2, 300).await;
    let first: Vec<_> = slow.take(2).await.into_iter().map(|m| m.id).collect();
    assert_eq!(first, ["1-0", "2-0"]);
    // Both come back (3-0 may slip in first, when a read beats the sweep).
    let mut redelivered = std::collections::BTreeSet::new();
    while redelivered.len() < 2 {
        let m = slow.next().await;
        if m.delivery_count >= 2 && m.id != "3-0" {
            redelivered.insert(m.id);
        }
    }
}

async fn topics_route_by_key_and_read_every_partition(backend: Backend) {
    let mut env = start(backend).await;
    let partitions = env
        .broker
        .admin
        .create_topic(pb::CreateTopicRequest {
            topic: "events".into(),
            partitions: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .partitions;
    assert_eq!(partitions.len(), 3);
    let mut member =
        Subscription::open(&mut env.broker.broker, group_request(&["events"], "g", "m")).await;
    for n in 0..6 {
        let mut request = produce("events", &[""]);
        request.partition_key = format!("k{}", n % 2);
        request.messages[0].fields = fields(&[("n", &n.to_string())]);
        env.broker.broker.produce(request).await.unwrap();
    }
    let got = member.take(6).await;
    let stream_of = |n: usize| got.iter().find(|m| number(m) == n).unwrap().stream.clone();
    // Same key, same partition; every partition a stream of the topic.
    assert_eq!(stream_of(0), stream_of(2));
    assert_eq!(stream_of(1), stream_of(5));
    assert!(got.iter().all(|m| partitions.contains(&m.stream)));
    let info = env
        .broker
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            topic: "events".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.partitions.iter().map(|p| p.length).sum::<u64>(), 6);
}

async fn produce_stream_keeps_order_across_streams(backend: Backend) {
    let env = start(backend).await;
    let mut client = env.broker.broker.clone();
    // Requests for three streams, interleaved: on a cluster they sit on different slots and
    // are pipelined per slot, yet every answer comes back in request order.
    let requests: Vec<pb::ProduceRequest> = (0..30)
        .map(|i| {
            let mut request = produce(&format!("ps-{}", i % 3), &[""]);
            request.messages[0].fields = fields(&[("n", &i.to_string())]);
            request
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(30);
    for request in requests {
        tx.send(request).await.unwrap();
    }
    drop(tx);
    let mut answers = client
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        match answer.result {
            Some(pb::produce_stream_response::Result::Produced(p)) => ids.push(p.ids[0].clone()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ids.len(), 30);
    for s in 0..3 {
        let stored = env
            .broker
            .admin
            .clone()
            .query_messages(pb::QueryMessagesRequest {
                stream: format!("ps-{s}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        let numbers: Vec<usize> = stored
            .iter()
            .map(|e| {
                std::str::from_utf8(&e.fields[0].value)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(numbers, (0..30).filter(|i| i % 3 == s).collect::<Vec<_>>());
        // Each answer named the id its request got.
        for (e, n) in stored.iter().zip(&numbers) {
            assert_eq!(e.id, ids[*n]);
        }
    }
}

/// `value.tap(|v| ...)`: a changed copy, for one-off request tweaks.
trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl<T> Tap for T {}

conformance!(
    ids_must_increase_and_explicit_forms_work,
    ranges_counts_and_reverse,
    delete_trim_and_stream_info,
    listing_by_pattern_returns_only_the_matching_streams,
    groups_lifecycle_lag_and_errors,
    group_reads_replays_acks_and_deleted_entries,
    consumers_and_pending_views,
    claim_and_autoclaim_take_only_entries_idle_long_enough,
    subscribe_tail_and_group_deliver_in_order,
    nack_dead_letters_and_replay,
    extend_keeps_and_flow_control_limits,
    topics_route_by_key_and_read_every_partition,
    produce_stream_keeps_order_across_streams,
);
