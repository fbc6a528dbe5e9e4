//! A stored policy is what members apply: requests may narrow it but not contradict it, and
//! an update or a pause reaches members that are already reading.

use super::*;

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

conformance!(
    a_stored_policy_is_what_members_that_send_no_options_apply,
    requests_may_narrow_the_stored_policy_but_not_contradict_it,
    an_update_reaches_open_members_and_a_pause_holds_deliveries,
);
