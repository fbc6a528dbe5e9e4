//! Seek: a group moved to a point in time, optionally clearing what is before it.

use super::*;

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

conformance!(a_seek_moves_a_group_to_a_point_in_time_and_may_clear_what_is_before,);
