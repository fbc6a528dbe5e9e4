//! Filters: only matching messages are delivered, the rest acknowledged without delivery.

use super::*;

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

conformance!(a_filter_delivers_only_matching_messages_and_acknowledges_the_rest,);
