//! Subscriptions created, listed and deleted, on a stream and on every partition of a topic.

use super::*;

async fn subscriptions_are_created_listed_and_deleted(backend: Backend) {
    let mut env = start(backend).await;
    let admin = &mut env.broker.admin;
    // An existing group keeps its position.
    produce_numbered(&mut env.broker.broker, STREAM, 0..3).await;
    admin
        .create_group(pb::CreateGroupRequest {
            stream: STREAM.into(),
            group: "old".into(),
            start_id: "$".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_subscription(create(STREAM, "old", pb::SubscriptionPolicy::default()))
        .await
        .unwrap();
    let groups = groups_of(admin).await;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].lag, Some(0), "{groups:?}");
    let again = admin
        .create_subscription(create(STREAM, "old", pb::SubscriptionPolicy::default()))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // A create cut short by an outage leaves the policy without its group (the model checker
    // found it, seed 700224): a retry is refused, and makes the group.
    admin
        .destroy_group(pb::DestroyGroupRequest {
            stream: STREAM.into(),
            group: "old".into(),
        })
        .await
        .unwrap();
    let retried = admin
        .create_subscription(create(STREAM, "old", pb::SubscriptionPolicy::default()))
        .await
        .unwrap_err();
    assert_eq!(retried.code(), Code::AlreadyExists, "{retried:?}");
    let groups = groups_of(admin).await;
    assert_eq!(
        groups.len(),
        1,
        "the retry made the group again: {groups:?}"
    );
    let invalid = admin
        .create_subscription(create(
            STREAM,
            "new",
            pb::SubscriptionPolicy {
                backoff_min_ms: Some(500),
                backoff_max_ms: Some(100),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("policy.backoff_min_ms"),
        "{invalid:?}"
    );
    admin
        .create_subscription(create(
            "{o}.other",
            "new",
            pb::SubscriptionPolicy::default(),
        ))
        .await
        .unwrap();
    let listed = admin
        .list_subscriptions(pb::ListSubscriptionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let names: Vec<_> = listed
        .iter()
        .map(|s| (s.stream.as_str(), s.group.as_str()))
        .collect();
    assert_eq!(names, [("{o}.orders", "old"), ("{o}.other", "new")]);
    let only = admin
        .list_subscriptions(pb::ListSubscriptionsRequest {
            stream: "{o}.other".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(only.len(), 1);
    admin
        .delete_subscription(name(STREAM, "old"))
        .await
        .unwrap();
    let gone = admin
        .get_subscription(name(STREAM, "old"))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let gone = admin
        .delete_subscription(name(STREAM, "old"))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let missing = admin
        .update_subscription(update(STREAM, "old", pb::SubscriptionPolicy::default()))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    // The group itself stays.
    let groups = groups_of(admin).await;
    assert_eq!(groups.len(), 1);
}

async fn a_topic_subscription_applies_to_every_partition(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .admin
        .create_topic(pb::CreateTopicRequest {
            topic: "events".into(),
            partitions: 3,
        })
        .await
        .unwrap();
    env.broker
        .admin
        .create_subscription(create(
            "events",
            "g",
            pb::SubscriptionPolicy {
                max_in_flight: Some(4),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // The group exists on every partition, and the topic's limit holds its members.
    let mut member =
        Subscription::open(&mut env.broker.broker, plain_member("events", "g", "m")).await;
    for key in 0..12 {
        env.broker
            .broker
            .produce(pb::ProduceRequest {
                partition_key: format!("k{key}"),
                ..numbered("events", key..key + 1)
            })
            .await
            .unwrap();
    }
    member.take(4).await;
    member.expect_quiet(Duration::from_millis(300)).await;
    let status = refused(
        &mut env,
        pb::SubscribeRequest {
            max_in_flight: Some(8),
            ..plain_member("events", "g", "n")
        },
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A seek moves every partition: to a minute from now, clearing the four held messages.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    let seeked = env
        .broker
        .admin
        .seek_subscription(pb::SeekSubscriptionRequest {
            stream: "events".into(),
            group: "g".into(),
            target: Some(pb::seek_subscription_request::Target::SinceMs(later)),
            clear_pending: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((seeked.streams.len(), seeked.cleared), (3, 4));
}

conformance!(
    subscriptions_are_created_listed_and_deleted,
    a_topic_subscription_applies_to_every_partition,
);
