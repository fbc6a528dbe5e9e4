//! Admin: every RPC against a real Redis, checked against what Redis itself reports.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use streamgate::grpc::pb;
use support::*;
use tonic::Code;

#[tokio::test]
async fn list_streams_pages_through_streams_only() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    for i in 0..25 {
        produce_numbered(&mut broker.broker, &format!("orders.{i}"), 0..1).await;
    }
    produce_numbered(&mut broker.broker, "payments", 0..1).await;
    let _: () = redis.cmd(&["SET", "orders.not-a-stream", "x"]).await;

    let mut found = BTreeSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = broker
            .admin
            .list_streams(pb::ListStreamsRequest {
                pattern: "orders.*".into(),
                page_size: 5,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        found.extend(page.streams);
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages > 1, "expected several pages");
    let expected: BTreeSet<String> = (0..25).map(|i| format!("orders.{i}")).collect();
    assert_eq!(found, expected);

    let status = broker
        .admin
        .list_streams(pb::ListStreamsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn stream_info_and_queries_show_what_was_produced_and_delete_and_trim_remove_it() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let ids = produce_numbered(&mut broker.broker, "s", 0..10).await;

    let info = broker
        .admin
        .get_stream_info(pb::GetStreamInfoRequest { stream: "s".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.length, 10);
    assert_eq!(info.last_generated_id, ids[9]);
    assert_eq!(info.entries_added, 10);
    assert_eq!(info.first_entry.as_ref().unwrap().id, ids[0]);
    assert_eq!(info.last_entry.as_ref().unwrap().id, ids[9]);

    let query = |min: &str, max: &str, count: u32, reverse: bool| pb::QueryMessagesRequest {
        stream: "s".into(),
        min_id: min.into(),
        max_id: max.into(),
        count,
        reverse,
    };
    let ids_of =
        |r: pb::QueryMessagesResponse| r.entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let all = ids_of(
        broker
            .admin
            .query_messages(query("", "", 0, false))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(all, ids);
    let page = ids_of(
        broker
            .admin
            .query_messages(query(&format!("({}", ids[2]), "+", 3, false))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(page, ids[3..6]);
    let newest = ids_of(
        broker
            .admin
            .query_messages(query("-", "+", 2, true))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(newest, [ids[9].clone(), ids[8].clone()]);

    let deleted = broker
        .admin
        .delete_messages(pb::DeleteMessagesRequest {
            stream: "s".into(),
            ids: vec![ids[0].clone(), ids[0].clone(), "1-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);

    let trim = |threshold| pb::TrimStreamRequest {
        stream: "s".into(),
        trim: Some(pb::TrimPolicy {
            threshold: Some(threshold),
            approximate: false,
            limit: 0,
        }),
    };
    let trimmed = broker
        .admin
        .trim_stream(trim(pb::trim_policy::Threshold::MaxLen(4)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trimmed.trimmed, 5);
    let trimmed = broker
        .admin
        .trim_stream(trim(pb::trim_policy::Threshold::MinId(ids[8].clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trimmed.trimmed, 2);
    let len: u64 = redis.cmd(&["XLEN", "s"]).await;
    assert_eq!(len, 2);
}

#[tokio::test]
async fn delete_stream_only_deletes_streams() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "s", 0..3).await;
    let _: () = redis.cmd(&["SET", "plain", "x"]).await;
    let delete = |stream: &str| pb::DeleteStreamRequest {
        stream: stream.into(),
    };

    broker.admin.delete_stream(delete("s")).await.unwrap();
    let exists: u64 = redis.cmd(&["EXISTS", "s"]).await;
    assert_eq!(exists, 0);
    assert_eq!(
        broker
            .admin
            .delete_stream(delete("s"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        broker
            .admin
            .delete_stream(delete("plain"))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let kept: String = redis.cmd(&["GET", "plain"]).await;
    assert_eq!(kept, "x");
}

#[tokio::test]
async fn a_group_is_created_listed_repositioned_and_destroyed_as_asked() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let create = |stream: &str, group: &str, start: &str, mkstream: bool| pb::CreateGroupRequest {
        stream: stream.into(),
        group: group.into(),
        start_id: start.into(),
        create_stream: mkstream,
        entries_read: None,
    };

    // Without MKSTREAM a missing stream is NOT_FOUND; with it the stream appears.
    let status = broker
        .admin
        .create_group(create("s", "g", "$", false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    broker
        .admin
        .create_group(create("s", "g", "$", true))
        .await
        .unwrap();
    let status = broker
        .admin
        .create_group(create("s", "g", "0", true))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let ids = produce_numbered(&mut broker.broker, "s", 0..4).await;
    let mut from_start = create("s", "from-start", "0", false);
    from_start.entries_read = Some(0);
    broker.admin.create_group(from_start).await.unwrap();

    let groups = broker
        .admin
        .list_groups(pb::ListGroupsRequest { stream: "s".into() })
        .await
        .unwrap()
        .into_inner()
        .groups;
    let by_name = |name: &str| groups.iter().find(|g| g.name == name).unwrap().clone();
    assert_eq!(by_name("from-start").lag, Some(4));
    assert_eq!(by_name("from-start").last_delivered_id, "0-0");
    assert_eq!(by_name("g").lag, Some(4));

    broker
        .admin
        .set_group_id(pb::SetGroupIdRequest {
            stream: "s".into(),
            group: "g".into(),
            id: ids[2].clone(),
            entries_read: Some(3),
        })
        .await
        .unwrap();
    let groups = broker
        .admin
        .list_groups(pb::ListGroupsRequest { stream: "s".into() })
        .await
        .unwrap()
        .into_inner()
        .groups;
    let g = groups.iter().find(|g| g.name == "g").unwrap();
    assert_eq!(
        (g.last_delivered_id.as_str(), g.lag),
        (ids[2].as_str(), Some(1))
    );

    let destroy = |group: &str| pb::DestroyGroupRequest {
        stream: "s".into(),
        group: group.into(),
    };
    broker.admin.destroy_group(destroy("g")).await.unwrap();
    assert_eq!(
        broker
            .admin
            .destroy_group(destroy("g"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let status = broker
        .admin
        .set_group_id(pb::SetGroupIdRequest {
            stream: "s".into(),
            group: "g".into(),
            id: "0".into(),
            entries_read: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn admin_sees_each_consumer_and_the_entries_it_holds() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    let ids = produce_numbered(&mut broker.broker, "s", 0..6).await;
    let mut alice =
        Subscription::open(&mut broker.broker, group_request(&["s"], "g", "alice")).await;
    let got = alice.take(6).await;
    assert_eq!(got.len(), 6);
    // Alice stays connected until her entries have been inspected: once she leaves, they are
    // handed back for redelivery and look long idle.

    let consumer = |name: &str| pb::CreateConsumerRequest {
        stream: "s".into(),
        group: "g".into(),
        consumer: name.into(),
    };
    assert!(
        broker
            .admin
            .create_consumer(consumer("bob"))
            .await
            .unwrap()
            .into_inner()
            .created
    );
    assert!(
        !broker
            .admin
            .create_consumer(consumer("bob"))
            .await
            .unwrap()
            .into_inner()
            .created
    );

    let consumers = broker
        .admin
        .list_consumers(pb::ListConsumersRequest {
            stream: "s".into(),
            group: "g".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .consumers;
    let pending_of = |name: &str| consumers.iter().find(|c| c.name == name).map(|c| c.pending);
    assert_eq!((pending_of("alice"), pending_of("bob")), (Some(6), Some(0)));

    let summary = broker
        .admin
        .get_pending_summary(pb::GetPendingSummaryRequest {
            stream: "s".into(),
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
        (6, ids[0].as_str(), ids[5].as_str())
    );
    assert_eq!(
        summary.consumers,
        [pb::ConsumerPendingCount {
            consumer: "alice".into(),
            pending: 6
        }]
    );

    let list = |consumer: &str, min_idle_ms: u64| pb::ListPendingRequest {
        stream: "s".into(),
        group: "g".into(),
        count: 3,
        consumer: consumer.into(),
        min_idle_ms,
        ..Default::default()
    };
    let pending = broker
        .admin
        .list_pending(list("alice", 0))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        pending.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        ids[0..3]
    );
    assert!(
        pending
            .iter()
            .all(|p| p.consumer == "alice" && p.delivery_count == 1)
    );
    assert!(
        broker
            .admin
            .list_pending(list("bob", 0))
            .await
            .unwrap()
            .into_inner()
            .entries
            .is_empty()
    );
    assert!(
        broker
            .admin
            .list_pending(list("", 3_600_000))
            .await
            .unwrap()
            .into_inner()
            .entries
            .is_empty()
    );
    drop(alice);

    // Claim two to bob, one of them with JUSTID semantics checked below.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let claimed = broker
        .admin
        .claim(pb::ClaimRequest {
            stream: "s".into(),
            group: "g".into(),
            consumer: "bob".into(),
            min_idle_ms: 10,
            ids: vec![ids[0].clone(), ids[1].clone()],
            retry_count: Some(7),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claimed.claimed_ids, ids[0..2]);
    assert_eq!(claimed.messages.len(), 2);
    let pending = broker
        .admin
        .list_pending(list("bob", 0))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        pending.iter().map(|p| p.delivery_count).collect::<Vec<_>>(),
        [7, 7]
    );

    // JUSTID returns ids only. FORCE creates a pending entry for an entry nobody read yet.
    let extra = produce_numbered(&mut broker.broker, "s", 6..7).await;
    let claimed = broker
        .admin
        .claim(pb::ClaimRequest {
            stream: "s".into(),
            group: "g".into(),
            consumer: "bob".into(),
            ids: vec![extra[0].clone()],
            force: true,
            just_id: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (claimed.claimed_ids, claimed.messages.len()),
        (extra.clone(), 0)
    );

    // AutoClaim the rest of alice's to carol; a deleted one is reported as deleted.
    let _: u64 = redis.cmd(&["XDEL", "s", &ids[3]]).await;
    let auto = broker
        .admin
        .auto_claim(pb::AutoClaimRequest {
            stream: "s".into(),
            group: "g".into(),
            consumer: "carol".into(),
            min_idle_ms: 0,
            start_id: String::new(),
            count: 100,
            just_id: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(auto.next_start_id, "0-0");
    assert_eq!(auto.deleted_ids, [ids[3].clone()]);
    assert!(auto.claimed_ids.contains(&ids[2]) && auto.claimed_ids.contains(&ids[5]));
    assert!(auto.messages.iter().all(|m| !m.fields.is_empty()));

    // Deleting a consumer reports the pending entries it dropped.
    let dropped = broker
        .admin
        .delete_consumer(pb::DeleteConsumerRequest {
            stream: "s".into(),
            group: "g".into(),
            consumer: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dropped.pending_dropped, auto.claimed_ids.len() as u64);
}

/// A nacked message reads as what it is: parked, due in about its delay, held by the parked
/// consumer; not as a delivered message idle for an hour.
#[tokio::test]
async fn a_parked_entry_says_when_it_is_due() {
    let redis = RedisServer::start();
    let mut broker = TestBroker::start(&redis).await;
    produce_numbered(&mut broker.broker, "jobs", 0..2).await;
    let fetched = broker
        .broker
        .fetch(pb::FetchRequest {
            streams: vec![pb::StreamStart {
                stream: "jobs".into(),
                after_id: ">".into(),
            }],
            group: "g".into(),
            consumer: "worker".into(),
            create_group: true,
            group_start_id: "0".into(),
            count: 2,
            ack_deadline_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages;
    broker
        .broker
        .nack(pb::NackRequest {
            stream: "jobs".into(),
            group: "g".into(),
            ids: vec![fetched[0].id.clone()],
            delay_ms: Some(30_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let entries = broker
        .admin
        .list_pending(pb::ListPendingRequest {
            stream: "jobs".into(),
            group: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let parked = &entries[0];
    assert_eq!(parked.state, pb::PendingState::Parked as i32, "{entries:?}");
    let due = parked.due_in_ms.unwrap();
    assert!((25_000..=30_000).contains(&due), "due in {due} ms");
    let delivered = &entries[1];
    assert_eq!(delivered.state, pb::PendingState::Delivered as i32);
    assert!(delivered.due_in_ms.is_some());
}
