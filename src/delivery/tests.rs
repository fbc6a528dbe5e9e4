//! The core's promises on the embedded store, with tokio's clock paused: each test runs in
//! milliseconds of real time however long the deadlines it lets pass.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::error::BrokerError;
use crate::model::{DeliveryPolicy, Field, NewMessage, StartId};
use crate::store::{Inspect, MemoryStore};

const DEADLINE: Duration = Duration::from_secs(1);

fn core(store: &MemoryStore) -> DeliveryCore<MemoryStore> {
    DeliveryCore::new(
        store.clone(),
        RedeliverySettings {
            backoff: Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            consumer_idle_timeout: Duration::ZERO,
            slot_safe_dead_letters: false,
        },
    )
}

async fn produce(core: &DeliveryCore<MemoryStore>, range: std::ops::Range<usize>) {
    let messages = range
        .map(|i| NewMessage {
            id: crate::model::NewEntryId::Auto,
            fields: vec![Field {
                name: "n".into(),
                value: Bytes::from(i.to_string()),
            }],
            ..Default::default()
        })
        .collect();
    let answers = core
        .append(&[Append {
            stream: "s".into(),
            messages,
            trim: None,
            require_existing_stream: false,
            ..Default::default()
        }])
        .await
        .unwrap();
    answers.into_iter().next().unwrap().unwrap();
}

async fn member(
    core: &DeliveryCore<MemoryStore>,
    consumer: &str,
    max_in_flight: u64,
) -> Member<MemoryStore> {
    let spec = MemberSpec {
        streams: vec!["s".into()],
        reading: ReadMode::Group {
            membership: GroupMembership {
                group: "g".into(),
                consumer: consumer.into(),
                create_from: Some(StartId::After(EntryId::ZERO)),
                no_ack: false,
                generated_name: false,
                delivery: DeliveryPolicy {
                    ack_deadline: DEADLINE,
                    backoff: core.backoff(),
                    max_deliveries: 0,
                    dead_letter_stream: None,
                },
                max_in_flight,
                requested: Requested {
                    flow_controlled: true,
                    max_in_flight: true,
                    ..Requested::default()
                },
                paused: false,
                filter: None,
                ordered: false,
                dead_letter_expired: false,
            },
            cursors: replay_everything(1),
        },
        replay: Replay::Continuous,
    };
    core.join(core.resolve(spec).await.unwrap()).await.unwrap()
}

/// The numbers and delivery counts of the next batch; empty for `Empty`, panics on `AtLimit`.
async fn next(member: &mut Member<MemoryStore>, room: usize) -> Vec<(usize, u64)> {
    match member.next_batch(room, false).await.unwrap() {
        Batch::Messages(batch) | Batch::Last(batch) => batch
            .iter()
            .map(|d| {
                let n = std::str::from_utf8(&d.entry.fields[0].value).unwrap();
                (n.parse().unwrap(), d.delivery_count)
            })
            .collect(),
        Batch::Empty => Vec::new(),
        Batch::AtLimit => panic!("unexpectedly at the in-flight limit"),
    }
}

#[tokio::test(start_paused = true)]
async fn own_pending_entries_come_first_then_redeliveries_then_new_entries() {
    let store = MemoryStore::new();
    let core = core(&store);
    produce(&core, 0..6).await;
    let mut a = member(&core, "a", 0).await;
    assert_eq!(next(&mut a, 2).await, [(0, 1), (1, 1)]);
    let mut b = member(&core, "b", 0).await;
    assert_eq!(next(&mut b, 2).await, [(2, 1), (3, 1)]);
    // `b` vanishes without handing back; `a` comes back under its name after b's deadline.
    drop(b);
    drop(a);
    tokio::time::advance(DEADLINE * 2).await;
    let mut a = member(&core, "a", 0).await;
    assert_eq!(next(&mut a, 10).await, [(0, 2), (1, 2)], "its own first");
    assert_eq!(next(&mut a, 10).await, [(2, 2), (3, 2)], "then b's, due");
    assert_eq!(next(&mut a, 10).await, [(4, 1), (5, 1)], "then new ones");
    assert_eq!(next(&mut a, 10).await, []);
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_limit_holds_until_an_ack_frees_room() {
    let store = MemoryStore::new();
    let core = core(&store);
    produce(&core, 0..10).await;
    let mut m = member(&core, "m", 3).await;
    let first = match m.next_batch(10, false).await.unwrap() {
        Batch::Messages(batch) | Batch::Last(batch) => batch,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.len(), 3, "the limit caps the batch");
    assert_eq!(m.next_batch(10, false).await.unwrap(), Batch::AtLimit);
    let acked = core.ack("s", "g", &[first[0].entry.id]).await.unwrap();
    assert_eq!(acked, 1);
    assert_eq!(next(&mut m, 10).await, [(3, 1)], "one acked, one more");
    assert_eq!(m.next_batch(10, false).await.unwrap(), Batch::AtLimit);
    // A nack frees room too.
    core.nack(
        "s",
        "g",
        None,
        &[first[1].entry.id],
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut m, 10).await, [(4, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_member_at_its_limit_reads_again_once_a_quarter_of_its_window_is_free() {
    let store = MemoryStore::new();
    let core = core(&store);
    produce(&core, 0..20).await;
    let mut m = member(&core, "m", 8).await;
    let first = match m.next_batch(10, false).await.unwrap() {
        Batch::Messages(batch) | Batch::Last(batch) => batch,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.len(), 8);
    assert_eq!(
        m.next_batch(10, false).await.unwrap(),
        Batch::AtLimit,
        "full"
    );
    core.ack("s", "g", &[first[0].entry.id]).await.unwrap();
    assert_eq!(
        m.next_batch(10, false).await.unwrap(),
        Batch::AtLimit,
        "one free slot of eight: not yet"
    );
    core.ack("s", "g", &[first[1].entry.id]).await.unwrap();
    m.wait_for_room().await;
    assert_eq!(
        next(&mut m, 10).await,
        [(8, 1), (9, 1)],
        "two free: one read of two"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_frees_room_and_comes_back_after_its_deadline_and_backoff() {
    let store = MemoryStore::new();
    let core = core(&store);
    produce(&core, 0..2).await;
    let mut m = member(&core, "m", 2).await;
    assert_eq!(next(&mut m, 10).await, [(0, 1), (1, 1)]);
    assert_eq!(m.next_batch(10, false).await.unwrap(), Batch::AtLimit);
    tokio::time::advance(DEADLINE / 2).await;
    assert_eq!(m.next_batch(10, false).await.unwrap(), Batch::AtLimit);
    // Past the deadline plus the first backoff (100 ms), and the sweep interval.
    tokio::time::advance(DEADLINE).await;
    assert_eq!(next(&mut m, 10).await, [(0, 2), (1, 2)]);
}

#[tokio::test(start_paused = true)]
async fn a_nacked_message_comes_back_after_its_delay_and_not_before() {
    let store = MemoryStore::new();
    let core = core(&store);
    produce(&core, 0..1).await;
    let mut m = member(&core, "m", 0).await;
    let id = match m.next_batch(10, false).await.unwrap() {
        Batch::Messages(batch) | Batch::Last(batch) => batch[0].entry.id,
        other => panic!("{other:?}"),
    };
    let nacked = core
        .nack(
            "s",
            "g",
            Some("m".into()),
            &[id],
            Some(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert_eq!(nacked, [id]);
    assert_eq!(next(&mut m, 10).await, []);
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(next(&mut m, 10).await, [], "still inside its delay");
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(next(&mut m, 10).await, [(0, 2)]);
}

#[tokio::test(start_paused = true)]
async fn what_a_member_hands_back_is_due_at_once_for_another() {
    let store = MemoryStore::new();
    let core = core(&store);
    produce(&core, 0..3).await;
    let mut a = member(&core, "a", 0).await;
    assert_eq!(next(&mut a, 2).await, [(0, 1), (1, 1)]);
    assert_eq!(a.hand_back().await.unwrap(), 2);
    let mut b = member(&core, "b", 0).await;
    assert_eq!(
        next(&mut b, 10).await,
        [(0, 2), (1, 2)],
        "no deadline to wait for"
    );
    assert_eq!(next(&mut b, 10).await, [(2, 1)]);
}

#[tokio::test(start_paused = true)]
async fn acks_through_another_instance_are_seen_once_the_member_waited_at_its_limit() {
    let store = MemoryStore::new();
    let here = core(&store);
    let elsewhere = core(&store);
    produce(&here, 0..4).await;
    let mut m = member(&here, "m", 2).await;
    let batch = match m.next_batch(10, false).await.unwrap() {
        Batch::Messages(batch) | Batch::Last(batch) => batch,
        other => panic!("{other:?}"),
    };
    let ids: Vec<EntryId> = batch.iter().map(|d| d.entry.id).collect();
    assert_eq!(elsewhere.ack("s", "g", &ids).await.unwrap(), 2);
    // This instance's book does not know yet...
    assert_eq!(m.next_batch(10, false).await.unwrap(), Batch::AtLimit);
    // ...until its wait at the limit ends without an ack here, and it counts from the store.
    m.wait_for_room().await;
    assert_eq!(next(&mut m, 10).await, [(2, 1), (3, 1)]);
}

#[tokio::test(start_paused = true)]
async fn an_extended_message_keeps_its_lease_past_the_first_deadline() {
    let store = MemoryStore::new();
    let core = core(&store);
    produce(&core, 0..1).await;
    let mut m = member(&core, "m", 1).await;
    let id = match m.next_batch(10, false).await.unwrap() {
        Batch::Messages(batch) | Batch::Last(batch) => batch[0].entry.id,
        other => panic!("{other:?}"),
    };
    tokio::time::advance(DEADLINE * 3 / 4).await;
    assert_eq!(core.extend("s", "g", "m", &[id]).await.unwrap(), [id]);
    tokio::time::advance(DEADLINE * 3 / 4).await;
    assert_eq!(
        m.next_batch(10, false).await.unwrap(),
        Batch::AtLimit,
        "the lease runs from the extension"
    );
}

/// A facade's record that logs what the core asked of it.
#[derive(Default)]
struct LoggedRecord {
    log: std::sync::Mutex<Vec<&'static str>>,
    refuse: bool,
}

impl SubscriptionRecord for LoggedRecord {
    async fn store(&self) -> BrokerResult<()> {
        self.log.lock().unwrap().push("store");
        if self.refuse {
            return Err(BrokerError::AlreadyExists("the record exists".into()));
        }
        Ok(())
    }

    async fn remove(&self) -> BrokerResult<()> {
        self.log.lock().unwrap().push("remove");
        Ok(())
    }
}

#[tokio::test]
async fn a_subscription_is_created_whole_or_not_at_all() {
    let store = MemoryStore::new();
    let core = core(&store);
    let subscription = crate::model::Subscription {
        stream: "s".into(),
        group: "g".into(),
        policy: crate::model::SubscriptionPolicy::default(),
    };
    let first = LoggedRecord::default();
    core.create_subscription(&subscription, StartId::Latest, &first)
        .await
        .unwrap();
    assert_eq!(*first.log.lock().unwrap(), ["store"]);
    assert_eq!(
        store.groups("s").await.unwrap().len(),
        1,
        "the group is made"
    );
    // The policy exists already: the record stored for this attempt is taken back.
    let again = LoggedRecord::default();
    let err = core
        .create_subscription(&subscription, StartId::Latest, &again)
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::AlreadyExists(_)), "{err}");
    assert_eq!(*again.log.lock().unwrap(), ["store", "remove"]);
    // A record that exists stops everything before the policy is touched.
    let other = crate::model::Subscription {
        group: "h".into(),
        ..subscription
    };
    let refused = LoggedRecord {
        refuse: true,
        ..LoggedRecord::default()
    };
    let err = core
        .create_subscription(&other, StartId::Latest, &refused)
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::AlreadyExists(_)), "{err}");
    assert!(core.policies().get("s", "h").await.unwrap().is_none());
    assert_eq!(store.groups("s").await.unwrap().len(), 1, "no group `h`");
    // Deleting with the group leaves neither.
    core.delete_subscription("s", "g", true).await.unwrap();
    assert!(core.policies().get("s", "g").await.unwrap().is_none());
    assert!(store.groups("s").await.unwrap().is_empty());
}
