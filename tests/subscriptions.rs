//! Stored subscriptions, on every store: a group's policy kept in Redis is what every member
//! applies; requests may narrow it but not contradict it; an update reaches members that are
//! already reading; a paused subscription delivers nothing until resumed.

mod support;

use std::time::Duration;

use streamgate::grpc::pb;
use streamgate::grpc::pb::admin_client::AdminClient;
use support::*;
use tonic::Code;

/// Names share one hash tag so that a dead-letter stream named in a policy shares its stream's
/// slot on a cluster.
const STREAM: &str = "{o}.orders";
const DEAD: &str = "{o}.dead";

fn name(stream: &str, group: &str) -> pb::SubscriptionName {
    pb::SubscriptionName {
        stream: stream.into(),
        group: group.into(),
    }
}

/// The groups on `STREAM`.
async fn groups_of(admin: &mut AdminClient<tonic::transport::Channel>) -> Vec<pb::GroupInfo> {
    admin
        .list_groups(pb::ListGroupsRequest {
            stream: STREAM.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups
}

fn create(
    stream: &str,
    group: &str,
    policy: pb::SubscriptionPolicy,
) -> pb::CreateSubscriptionRequest {
    pb::CreateSubscriptionRequest {
        stream: stream.into(),
        group: group.into(),
        policy: Some(policy),
        start_id: "0".into(),
    }
}

fn update(
    stream: &str,
    group: &str,
    policy: pb::SubscriptionPolicy,
) -> pb::UpdateSubscriptionRequest {
    pb::UpdateSubscriptionRequest {
        stream: stream.into(),
        group: group.into(),
        policy: Some(policy),
    }
}

/// A Subscribe with no delivery options at all: whatever it applies comes from the store.
fn plain_member(stream: &str, group: &str, consumer: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        create_group: false,
        group_start_id: String::new(),
        ..group_request(&[stream], group, consumer)
    }
}

/// A group Fetch of new messages with no delivery options.
fn fetch_new(stream: &str, group: &str, consumer: &str) -> pb::FetchRequest {
    pb::FetchRequest {
        streams: vec![pb::StreamStart {
            stream: stream.into(),
            after_id: String::new(),
        }],
        group: group.into(),
        consumer: consumer.into(),
        ..Default::default()
    }
}

/// The status a Subscribe stream fails with before `started`.
async fn refused(env: &mut Env, request: pb::SubscribeRequest) -> tonic::Status {
    match env.broker.broker.subscribe(request).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(WAIT, stream.message()).await {
                Ok(Err(status)) => status,
                other => panic!("expected the subscription to be refused, got {other:?}"),
            }
        }
    }
}

async fn dead_letters(
    mut admin: AdminClient<tonic::transport::Channel>,
    stream: &str,
) -> Vec<pb::DeadLetter> {
    admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            dead_letter_stream: stream.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

async fn a_stored_policy_is_what_members_that_send_no_options_apply(backend: Backend) {
    let mut env = start(backend).await;
    let created = env
        .broker
        .admin
        .create_subscription(create(
            STREAM,
            "g",
            pb::SubscriptionPolicy {
                ack_deadline_ms: Some(200),
                backoff_min_ms: Some(50),
                backoff_max_ms: Some(100),
                max_deliveries: Some(2),
                dead_letter_stream: Some(DEAD.into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // Unset fields took the server's defaults, and the answer says which.
    let policy = created.policy.unwrap();
    assert_eq!(policy.max_in_flight, Some(1000));
    assert_eq!(policy.paused, Some(false));
    produce_numbered(&mut env.broker.broker, STREAM, 0..1).await;
    // The group was created by CreateSubscription: the member need not ask.
    let mut member =
        Subscription::open(&mut env.broker.broker, plain_member(STREAM, "g", "m")).await;
    // Never acknowledged: redelivered after the stored 200 ms deadline (not the server's 30 s),
    // then dead-lettered after the stored two deliveries, to the stored stream.
    let first = member.next().await;
    let second = member.next().await;
    assert_eq!((first.delivery_count, second.delivery_count), (1, 2));
    eventually("the message reaches the stored dead-letter stream", || {
        let admin = env.broker.admin.clone();
        async move {
            let letters = dead_letters(admin, DEAD).await;
            letters.len() == 1 && letters[0].delivery_count == 2
        }
    })
    .await;
    member.expect_quiet(Duration::from_millis(400)).await;
}

async fn requests_may_narrow_the_stored_policy_but_not_contradict_it(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .admin
        .create_subscription(create(
            STREAM,
            "g",
            pb::SubscriptionPolicy {
                ack_deadline_ms: Some(5000),
                max_in_flight: Some(10),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    type Change = fn(&mut pb::SubscribeRequest);
    let cases: [(&str, Change); 4] = [
        ("ack_deadline_ms", |r| r.ack_deadline_ms = 1000),
        ("dead_letter_stream", |r| r.dead_letter_stream = DEAD.into()),
        ("max_in_flight", |r| r.max_in_flight = Some(20)),
        ("max_in_flight", |r| r.max_in_flight = Some(0)),
    ];
    for (field, change) in cases {
        let mut request = plain_member(STREAM, "g", "m");
        change(&mut request);
        let status = refused(&mut env, request).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field) && status.message().contains("stored subscription"),
            "{status:?}"
        );
    }
    // Fetch is held to the same policy.
    let status = env
        .broker
        .broker
        .fetch(pb::FetchRequest {
            max_deliveries: Some(3),
            ..fetch_new(STREAM, "g", "f")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("max_deliveries"), "{status:?}");
    // Naming the stored value is no contradiction; asking for fewer in flight narrows.
    let mut request = plain_member(STREAM, "g", "m");
    request.ack_deadline_ms = 5000;
    request.max_in_flight = Some(3);
    let mut member = Subscription::open(&mut env.broker.broker, request).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..6).await;
    member.take(3).await;
    member.expect_quiet(Duration::from_millis(300)).await;
    // Without its own limit a member gets the stored one.
    let mut other =
        Subscription::open(&mut env.broker.broker, plain_member(STREAM, "g", "n")).await;
    produce_numbered(&mut env.broker.broker, STREAM, 6..20).await;
    let got = other.take(10).await;
    assert_eq!(got.len(), 10);
    other.expect_quiet(Duration::from_millis(300)).await;
}

async fn an_update_reaches_open_members_and_a_pause_holds_deliveries(backend: Backend) {
    let mut env = start(backend).await;
    env.broker
        .admin
        .create_subscription(create(STREAM, "g", pb::SubscriptionPolicy::default()))
        .await
        .unwrap();
    let mut member =
        Subscription::open(&mut env.broker.broker, plain_member(STREAM, "g", "m")).await;
    produce_numbered(&mut env.broker.broker, STREAM, 0..1).await;
    let first = member.next().await;
    assert_eq!(number(&first), 0);
    env.broker
        .broker
        .ack(pb::AckRequest {
            stream: STREAM.into(),
            group: "g".into(),
            ids: vec![first.id],
        })
        .await
        .unwrap();
    let paused = env
        .broker
        .admin
        .update_subscription(update(
            STREAM,
            "g",
            pb::SubscriptionPolicy {
                paused: Some(true),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // Only `paused` changed.
    assert_eq!(
        paused.policy.as_ref().unwrap().ack_deadline_ms,
        Some(30_000)
    );
    produce_numbered(&mut env.broker.broker, STREAM, 1..3).await;
    member.expect_quiet(Duration::from_millis(800)).await;
    let fetched = env
        .broker
        .broker
        .fetch(fetch_new(STREAM, "g", "f"))
        .await
        .unwrap()
        .into_inner();
    assert!(fetched.messages.is_empty(), "{fetched:?}");
    env.broker
        .admin
        .update_subscription(update(
            STREAM,
            "g",
            pb::SubscriptionPolicy {
                paused: Some(false),
                ack_deadline_ms: Some(300),
                backoff_min_ms: Some(50),
                backoff_max_ms: Some(50),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // What waited is delivered once resumed; the new deadline applies to the open member: an
    // unacknowledged message comes back after 300 ms, not 30 s.
    let resumed = member.take(2).await;
    assert_eq!(resumed.iter().map(number).collect::<Vec<_>>(), [1, 2]);
    let again = member.next().await;
    assert_eq!(again.delivery_count, 2, "{again:?}");
}

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

fn seek(
    stream: &str,
    target: pb::seek_subscription_request::Target,
    clear: bool,
) -> pb::SeekSubscriptionRequest {
    pb::SeekSubscriptionRequest {
        stream: stream.into(),
        group: "g".into(),
        target: Some(target),
        clear_pending: clear,
    }
}

async fn a_seek_moves_a_group_to_a_point_in_time_and_may_clear_what_is_before(backend: Backend) {
    use pb::seek_subscription_request::Target;
    let mut env = start(backend).await;
    for (i, id) in ["1000-0", "2000-0", "3000-0"].into_iter().enumerate() {
        env.broker
            .broker
            .produce(pb::ProduceRequest {
                messages: vec![pb::OutgoingMessage {
                    id: id.into(),
                    fields: fields(&[("n", &i.to_string())]),
                    ..Default::default()
                }],
                ..numbered(STREAM, 0..0)
            })
            .await
            .unwrap();
    }
    env.broker
        .admin
        .create_subscription(create(STREAM, "g", pb::SubscriptionPolicy::default()))
        .await
        .unwrap();
    let fetch = |env: &mut Env| {
        let mut broker = env.broker.broker.clone();
        async move {
            let messages = broker
                .fetch(fetch_new(STREAM, "g", "f"))
                .await
                .unwrap()
                .into_inner()
                .messages;
            messages
                .into_iter()
                .map(|m| (m.id, m.delivery_count))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(fetch(&mut env).await.len(), 3);
    // Back to "since 2 s after the epoch": what was added from then on comes again, and what
    // is pending before it is acknowledged.
    let seeked = env
        .broker
        .admin
        .seek_subscription(seek(STREAM, Target::SinceMs(2000), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seeked.cleared, 1);
    assert_eq!(seeked.streams, [STREAM]);
    assert!(seeked.position.starts_with("1999-"), "{seeked:?}");
    // Delivered anew (Redis counts a re-read through `>` as a first delivery again).
    assert_eq!(
        fetch(&mut env).await,
        [("2000-0".to_owned(), 1), ("3000-0".to_owned(), 1)]
    );
    // Forward past everything, clearing: nothing pending, nothing new.
    let seeked = env
        .broker
        .admin
        .seek_subscription(seek(STREAM, Target::AfterId("3000-0".into()), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seeked.cleared, 2);
    assert!(fetch(&mut env).await.is_empty());
    assert_eq!(pending_count(&mut env.broker.admin, STREAM, "g").await, 0);
    // Errors a person can act on.
    let missing = env
        .broker
        .admin
        .seek_subscription(pb::SeekSubscriptionRequest {
            group: "nobody".into(),
            ..seek(STREAM, Target::SinceMs(0), false)
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let untargeted = env
        .broker
        .admin
        .seek_subscription(pb::SeekSubscriptionRequest {
            target: None,
            ..seek(STREAM, Target::SinceMs(0), false)
        })
        .await
        .unwrap_err();
    assert_eq!(untargeted.code(), Code::InvalidArgument);
    assert!(untargeted.message().contains("target"), "{untargeted:?}");
}

/// A subscription of group `g` on [`STREAM`] with `filter` and the server's defaults.
fn filtered(filter: &str) -> pb::CreateSubscriptionRequest {
    create(
        STREAM,
        "g",
        pb::SubscriptionPolicy {
            filter: Some(filter.into()),
            ..Default::default()
        },
    )
}

async fn a_filter_delivers_only_matching_messages_and_acknowledges_the_rest(backend: Backend) {
    let mut env = start(backend).await;
    let malformed = env
        .broker
        .admin
        .create_subscription(filtered(r#"type = "order" AND"#))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("policy.filter")
            && malformed.message().contains("position 19"),
        "{malformed:?}"
    );
    env.broker
        .admin
        .create_subscription(filtered(r#"type = "order" AND NOT has(test)"#))
        .await
        .unwrap();
    let kinds: [&[(&str, &str)]; 5] = [
        &[("type", "order"), ("n", "0")],
        &[("type", "refund"), ("n", "1")],
        &[("type", "order"), ("test", "yes"), ("n", "2")],
        &[("n", "3")],
        &[("type", "order"), ("n", "4")],
    ];
    for kind in kinds {
        env.broker
            .broker
            .produce(pb::ProduceRequest {
                messages: vec![pb::OutgoingMessage {
                    id: String::new(),
                    fields: fields(kind),
                    ..Default::default()
                }],
                ..numbered(STREAM, 0..0)
            })
            .await
            .unwrap();
    }
    let mut member =
        Subscription::open(&mut env.broker.broker, plain_member(STREAM, "g", "m")).await;
    let got = member.take(2).await;
    assert_eq!(got.iter().map(number).collect::<Vec<_>>(), [0, 4]);
    member.expect_quiet(Duration::from_millis(300)).await;
    // The three that did not match were acknowledged without delivery: only the two delivered
    // are pending.
    assert_eq!(pending_count(&mut env.broker.admin, STREAM, "g").await, 2);
    // Without the filter, everything is delivered again.
    env.broker
        .admin
        .update_subscription(update(
            STREAM,
            "g",
            pb::SubscriptionPolicy {
                filter: Some(String::new()),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    env.broker
        .broker
        .produce(numbered(STREAM, 5..6))
        .await
        .unwrap();
    assert_eq!(number(&member.next().await), 5);
}

conformance!(
    a_stored_policy_is_what_members_that_send_no_options_apply,
    requests_may_narrow_the_stored_policy_but_not_contradict_it,
    an_update_reaches_open_members_and_a_pause_holds_deliveries,
    subscriptions_are_created_listed_and_deleted,
    a_topic_subscription_applies_to_every_partition,
    a_seek_moves_a_group_to_a_point_in_time_and_may_clear_what_is_before,
    a_filter_delivers_only_matching_messages_and_acknowledges_the_rest,
);
