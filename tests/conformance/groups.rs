//! Consumer groups: their lifecycle and lag, group reads with replays, acks and deleted
//! entries, consumers and pending views, claims.

use super::*;

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

conformance!(
    groups_lifecycle_lag_and_errors,
    group_reads_replays_acks_and_deleted_entries,
    consumers_and_pending_views,
    claim_and_autoclaim_take_only_entries_idle_long_enough,
);
