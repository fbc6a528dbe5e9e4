//! Streams: ids and their explicit forms, ranges, deletes and trims, stream info, listing by
//! pattern.

use super::*;

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

conformance!(
    ids_must_increase_and_explicit_forms_work,
    ranges_counts_and_reverse,
    delete_trim_and_stream_info,
    listing_by_pattern_returns_only_the_matching_streams,
);
