//! Property tests (proptest): id parsing and formatting, range bounds, and the embedded store's
//! range logic against a naive model, over generated inputs.

use proptest::prelude::*;
use streamgate::config::ServeConfig;
use streamgate::grpc::convert;
use streamgate::model::{
    Append, EntryId, Field, IdRange, NewEntryId, NewMessage, RangeBound, StartId,
};
use streamgate::store::{Inspect, MemoryStore, Streams};

fn entry_id() -> impl Strategy<Value = EntryId> {
    (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| EntryId::new(ms, seq))
}

fn small_id() -> impl Strategy<Value = EntryId> {
    (1u64..20, 0u64..4).prop_map(|(ms, seq)| EntryId::new(ms, seq))
}

fn bound() -> impl Strategy<Value = RangeBound> {
    prop_oneof![
        Just(RangeBound::Unbounded),
        small_id().prop_map(RangeBound::Inclusive),
        small_id().prop_map(RangeBound::Exclusive),
    ]
}

fn within(id: EntryId, min: RangeBound, max: RangeBound) -> bool {
    let above = match min {
        RangeBound::Unbounded => true,
        RangeBound::Inclusive(m) => id >= m,
        RangeBound::Exclusive(m) => id > m,
    };
    let below = match max {
        RangeBound::Unbounded => true,
        RangeBound::Inclusive(m) => id <= m,
        RangeBound::Exclusive(m) => id < m,
    };
    above && below
}

proptest! {
    #[test]
    fn ids_print_and_parse_back_and_order_like_their_parts(a in entry_id(), b in entry_id()) {
        prop_assert_eq!(a.to_string().parse::<EntryId>().unwrap(), a);
        prop_assert_eq!(a.cmp(&b), (a.ms, a.seq).cmp(&(b.ms, b.seq)));
        let explicit = NewEntryId::Explicit(a);
        if a != EntryId::ZERO {
            prop_assert_eq!(explicit.to_string().parse::<NewEntryId>().unwrap(), explicit);
        }
        prop_assert_eq!(a.to_string().parse::<StartId>().unwrap(), StartId::After(a));
    }

    #[test]
    fn range_bounds_survive_their_redis_form(b in bound()) {
        prop_assert_eq!(RangeBound::parse(&b.to_arg("-"), "-").unwrap(), b);
        prop_assert_eq!(RangeBound::parse(&b.to_arg("+"), "+").unwrap(), b);
    }

    #[test]
    fn parsing_never_panics_and_accepted_names_hold_no_pattern(text in ".{0,40}") {
        let _ = text.parse::<EntryId>();
        let _ = text.parse::<NewEntryId>();
        let _ = RangeBound::parse(&text, "-");
        let limits = ServeConfig::in_memory().limits;
        if let Ok(name) = convert::name("stream", &text, &limits) {
            prop_assert!(!name.contains(['*', '?', '[', ']', '\\']) && !name.is_empty());
            prop_assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()));
        }
    }

    #[test]
    fn the_embedded_store_ranges_like_a_naive_filter(
        ids in proptest::collection::btree_set(small_id(), 0..30),
        min in bound(),
        max in bound(),
        count in 1usize..10,
        reverse in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = runtime.block_on(async {
            let store = MemoryStore::new();
            let messages = ids
                .iter()
                .map(|id| NewMessage {
                    id: NewEntryId::Explicit(*id),
                    fields: vec![Field { name: "f".into(), value: "v".into() }],
                    ..Default::default()
                })
                .collect();
            if !ids.is_empty() {
                store
                    .append(&[Append {
                        stream: "s".into(),
                        messages,
                        trim: None,
                        require_existing_stream: false,
                        ..Default::default()
                    }])
                    .await
                    .unwrap()
                    .pop()
                    .unwrap()
                    .unwrap();
            }
            store.range("s", IdRange { min, max }, count, reverse).await.unwrap()
        });
        let matching: Vec<EntryId> = ids.iter().copied().filter(|id| within(*id, min, max)).collect();
        let expected: Vec<EntryId> = if reverse {
            matching.into_iter().rev().take(count).collect()
        } else {
            matching.into_iter().take(count).collect()
        };
        let got: Vec<EntryId> = got.iter().map(|e| e.id).collect();
        prop_assert_eq!(got, expected);
    }
}
