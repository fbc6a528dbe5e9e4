//! Wake-ups for idle subscriptions: who is waiting on which stream, and a way to poke them.
//!
//! A subscription that found nothing to read registers the streams it waits on and sleeps on a
//! [`StreamWatch`]; whoever learns of new entries (an append through this broker, or the store's
//! own watcher of outside writes) calls [`Wakeups::notify`]. No Redis connection is held while
//! waiting, which is what lets one broker keep thousands of subscriptions open.
//!
//! Lost wake-ups are avoided by ordering: a subscriber calls [`StreamWatch::mark_seen`] *before*
//! it reads, so a notification that lands between its read and its wait still wakes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures_util::future::select_all;
use tokio::sync::{Notify, watch};

use crate::model::EntryId;

/// The registry of watched streams, shared by the store, its watcher task and subscriptions.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    slots: Mutex<HashMap<String, Slot>>,
    /// Bumped whenever a stream becomes watched, so the store's watcher can widen its read.
    added: watch::Sender<u64>,
    /// Bumped whenever an append of this broker's ends, for a watcher waiting to know whether
    /// an entry it saw was this broker's (see [`Wakeups::coverage`]).
    appends_ended: watch::Sender<u64>,
    /// Numbers the slots, so that an append counted in a slot since removed does not uncount
    /// itself from a new slot of the same stream.
    generations: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            added: watch::Sender::new(0),
            appends_ended: watch::Sender::new(0),
            generations: AtomicU64::new(0),
        }
    }
}

/// Who waits on one stream.
#[derive(Debug)]
struct Slot {
    /// Tail readers: every one of them needs every entry, so all are woken (a broadcast).
    version: watch::Sender<u64>,
    /// Group members, per group: an entry goes to one member, so one is woken at a time.
    groups: HashMap<String, GroupSlot>,
    /// Registrations of both kinds.
    watchers: usize,
    /// The newest entry this broker appended to the stream while it was watched: the store's
    /// watcher of outside writes need not wake anybody for it (the append already did).
    own_top: Option<EntryId>,
    /// Appends of this broker to the stream under way (sent, not yet answered).
    appending: usize,
    /// Which slot of the stream this is (see [`Inner::generations`]).
    generation: u64,
    /// When it was last notified: where a woken reader's `wake` hop starts.
    notified_at: Option<Instant>,
}

#[derive(Debug)]
struct GroupSlot {
    notify: Arc<Notify>,
    watchers: usize,
}

impl Wakeups {
    // A `std` mutex, not a tokio one: no await happens while it is held. A panic elsewhere
    // cannot leave the map half-updated, so a poisoned lock is safe to keep using.
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers interest in `streams` until the returned handle is dropped: as a tail reader
    /// (`group` is `None`, woken by every notification) or as a member of `group` (woken only
    /// when it is this member's turn).
    pub fn watch(&self, streams: &[String], group: Option<&str>) -> StreamWatch {
        let mut slots = self.slots();
        let mut added = false;
        let mut receivers = Vec::new();
        let mut notifies = Vec::new();
        for stream in streams {
            let slot = slots.entry(stream.clone()).or_insert_with(|| {
                added = true;
                Slot {
                    version: watch::Sender::new(0),
                    groups: HashMap::new(),
                    watchers: 0,
                    own_top: None,
                    appending: 0,
                    generation: self.inner.generations.fetch_add(1, Ordering::Relaxed),
                    notified_at: None,
                }
            });
            slot.watchers += 1;
            match group {
                None => receivers.push(slot.version.subscribe()),
                Some(group) => {
                    let member = slot
                        .groups
                        .entry(group.to_owned())
                        .or_insert_with(|| GroupSlot {
                            notify: Arc::new(Notify::new()),
                            watchers: 0,
                        });
                    member.watchers += 1;
                    notifies.push(member.notify.clone());
                }
            }
        }
        drop(slots);
        if added {
            self.inner.added.send_modify(|v| *v = v.wrapping_add(1));
        }
        let waits = match group {
            None => Waits::Broadcast(receivers),
            Some(_) => Waits::OneAtATime(notifies),
        };
        StreamWatch {
            wakeups: self.clone(),
            streams: streams.to_vec(),
            group: group.map(str::to_owned),
            waits,
        }
    }

    /// `stream` may have new entries: wakes every tail reader of it and one member of each group
    /// waiting on it. A no-op when nobody waits.
    pub fn notify(&self, stream: &str) {
        if let Some(slot) = self.slots().get_mut(stream) {
            slot.wake();
        }
    }

    /// This broker appended `ids` to `stream`: wakes its readers as [`notify`](Self::notify)
    /// does, and remembers the newest id, so the watcher of outside writes, whose blocked read
    /// the append also ends, knows there is nobody left to wake (see [`own_top`](Self::own_top)).
    pub fn appended(&self, stream: &str, ids: &[EntryId]) {
        if let Some(slot) = self.slots().get_mut(stream) {
            if let Some(&newest) = ids.iter().max() {
                slot.own_top = slot.own_top.max(Some(newest));
            }
            slot.wake();
        }
    }

    /// The newest entry this broker appended to `stream` since it became watched. Every entry
    /// up to it was there when the append woke the stream's readers (ids only grow), so they
    /// read it: an outside write at or below it needs no wake-up of its own.
    pub fn own_top(&self, stream: &str) -> Option<EntryId> {
        self.slots().get(stream).and_then(|slot| slot.own_top)
    }

    /// Moves each of the watcher's `positions` past the stream's [`own_top`](Self::own_top),
    /// under one lock for all of them.
    pub fn skip_own_appends(&self, positions: &mut HashMap<String, EntryId>) {
        let slots = self.slots();
        for (stream, position) in positions.iter_mut() {
            if let Some(top) = slots.get(stream).and_then(|slot| slot.own_top) {
                *position = (*position).max(top);
            }
        }
    }

    /// Counts appends to `streams` as under way until the returned guard is dropped (after
    /// [`appended`](Self::appended)): the watcher of outside writes, whose blocked read such an
    /// append ends, may get the entry before the append hears back, and waits for it rather
    /// than take it for an outside write.
    pub fn appending<'a>(&self, streams: impl IntoIterator<Item = &'a str>) -> Appending {
        let mut slots = self.slots();
        let mut counted = Vec::new();
        for stream in streams {
            if let Some(slot) = slots.get_mut(stream) {
                slot.appending += 1;
                counted.push((stream.to_owned(), slot.generation));
            }
        }
        Appending {
            wakeups: self.clone(),
            counted,
        }
    }

    /// Whether readers of `stream` were woken for its entry `id` by an append of this broker.
    pub fn coverage(&self, stream: &str, id: EntryId) -> Coverage {
        match self.slots().get(stream) {
            Some(slot) => match slot.own_top {
                Some(top) if id <= top => Coverage::Covered(top),
                _ if slot.appending > 0 => Coverage::Unknown,
                _ => Coverage::Outside,
            },
            None => Coverage::Outside,
        }
    }

    /// A receiver that changes whenever an append of this broker ends.
    pub fn appends_ended(&self) -> watch::Receiver<u64> {
        self.inner.appends_ended.subscribe()
    }

    /// The streams somebody waits on right now.
    pub fn watched(&self) -> Vec<String> {
        self.slots().keys().cloned().collect()
    }

    /// How many registrations there are (a subscription counts once per stream it reads).
    pub fn watcher_count(&self) -> usize {
        self.slots().values().map(|slot| slot.watchers).sum()
    }

    /// The latest notification of any of `streams`.
    fn notified_at(&self, streams: &[String]) -> Option<Instant> {
        let slots = self.slots();
        streams
            .iter()
            .filter_map(|stream| slots.get(stream).and_then(|slot| slot.notified_at))
            .max()
    }

    /// A receiver that changes whenever a stream becomes watched.
    pub fn additions(&self) -> watch::Receiver<u64> {
        self.inner.added.subscribe()
    }

    fn release(&self, streams: &[String], group: Option<&str>) {
        let mut slots = self.slots();
        for stream in streams {
            let Some(slot) = slots.get_mut(stream) else {
                continue;
            };
            slot.watchers -= 1;
            if let Some(group) = group
                && let Some(member) = slot.groups.get_mut(group)
            {
                member.watchers -= 1;
                if member.watchers == 0 {
                    slot.groups.remove(group);
                }
            }
            if slot.watchers == 0 {
                slots.remove(stream);
            }
        }
    }
}

impl Slot {
    fn wake(&mut self) {
        self.notified_at = Some(Instant::now());
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        for member in self.groups.values() {
            member.notify.notify_one();
        }
    }
}

/// Appends under way, as counted by [`Wakeups::appending`]; dropping it ends them.
#[derive(Debug)]
pub struct Appending {
    wakeups: Wakeups,
    counted: Vec<(String, u64)>,
}

impl Drop for Appending {
    fn drop(&mut self) {
        if self.counted.is_empty() {
            return;
        }
        {
            let mut slots = self.wakeups.slots();
            for (stream, generation) in &self.counted {
                if let Some(slot) = slots.get_mut(stream)
                    && slot.generation == *generation
                {
                    slot.appending -= 1;
                }
            }
        }
        let ended = &self.wakeups.inner.appends_ended;
        ended.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// What [`Wakeups::coverage`] knows of an entry the watcher saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// An append of this broker up to this id woke the stream's readers after the entry
    /// existed: nobody needs waking for it.
    Covered(EntryId),
    /// Not covered yet, but an append of this broker to the stream is under way: its answer
    /// may cover it.
    Unknown,
    /// Written by somebody else: its readers need waking.
    Outside,
}

/// How one registration waits.
#[derive(Debug)]
enum Waits {
    /// Tail reader: a version per stream; any change wakes it.
    Broadcast(Vec<watch::Receiver<u64>>),
    /// Group member: `notify_one` per (stream, group). A notification sent while no member
    /// waits is kept as a permit, so one landing between a read and the wait is not lost.
    OneAtATime(Vec<Arc<Notify>>),
}

/// One subscription's interest in a set of streams; dropping it unregisters.
#[derive(Debug)]
pub struct StreamWatch {
    wakeups: Wakeups,
    streams: Vec<String>,
    group: Option<String>,
    waits: Waits,
}

impl StreamWatch {
    /// Forgets notifications so far; call before each read.
    pub fn mark_seen(&mut self) {
        if let Waits::Broadcast(receivers) = &mut self.waits {
            for receiver in receivers {
                receiver.borrow_and_update();
            }
        }
    }

    /// Resolves at the first notification since the last [`mark_seen`](Self::mark_seen)
    /// (tail readers), or when it is this member's turn (group members).
    ///
    /// Cancel-safe: a tail reader sees the same notification on the next call; a group
    /// member's turn, if it was given one, passes to another member when this future is dropped.
    ///
    /// Returns when the notification that ended the wait was sent, if it came during it (not
    /// one kept from before): how long the wake-up took, for the `wake` hop.
    pub async fn changed(&mut self) -> Option<Instant> {
        let began = Instant::now();
        self.wait().await;
        self.wakeups
            .notified_at(&self.streams)
            .filter(|&notified| notified >= began)
    }

    async fn wait(&mut self) {
        match &mut self.waits {
            Waits::Broadcast(receivers) => {
                let waits = receivers.iter_mut().map(|r| Box::pin(r.changed()));
                // The senders live in the registry for as long as this handle exists, so
                // `changed` cannot fail with "sender dropped".
                let _ = select_all(waits).await;
            }
            Waits::OneAtATime(notifies) => {
                let _ = select_all(notifies.iter().map(|n| Box::pin(n.notified()))).await;
            }
        }
    }

    /// After a read that found entries: there may be more, so a group member hands a turn to
    /// the next idle member, which is how a burst spreads over the group. Tail readers have
    /// nothing to pass on.
    pub fn pass_on(&self) {
        if let Waits::OneAtATime(notifies) = &self.waits {
            for notify in notifies {
                notify.notify_one();
            }
        }
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        self.wakeups.release(&self.streams, self.group.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_notification_between_read_and_wait_is_not_lost() {
        let wakeups = Wakeups::default();
        let mut watch = wakeups.watch(&["a".into(), "b".into()], None);
        watch.mark_seen();
        wakeups.notify("b"); // lands "after the read"
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn marking_seen_clears_and_unrelated_streams_do_not_wake() {
        let wakeups = Wakeups::default();
        let mut watch = wakeups.watch(&["a".into()], None);
        wakeups.notify("a");
        watch.mark_seen();
        wakeups.notify("zzz");
        let woke = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(woke.is_err(), "woken without a notification");
    }

    #[tokio::test]
    async fn an_append_wakes_and_is_remembered_only_while_watched() {
        let wakeups = Wakeups::default();
        let early = EntryId { ms: 5, seq: 0 };
        wakeups.appended("s", &[early]);
        assert_eq!(
            wakeups.own_top("s"),
            None,
            "not watched: nothing to remember"
        );
        let mut watch = wakeups.watch(&["s".into()], None);
        watch.mark_seen();
        let (one, two) = (EntryId { ms: 7, seq: 1 }, EntryId { ms: 7, seq: 0 });
        wakeups.appended("s", &[one, two]);
        assert_eq!(wakeups.own_top("s"), Some(one));
        wakeups.appended("s", &[early]);
        assert_eq!(wakeups.own_top("s"), Some(one), "the newest stays");
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("woken");
        drop(watch);
        let _again = wakeups.watch(&["s".into()], None);
        assert_eq!(
            wakeups.own_top("s"),
            None,
            "forgotten with the last watcher"
        );
    }

    #[test]
    fn an_entry_is_unknown_while_an_append_is_under_way_then_covered_or_outside() {
        let wakeups = Wakeups::default();
        let watch = wakeups.watch(&["s".into()], None);
        let (ours, theirs) = (EntryId { ms: 9, seq: 0 }, EntryId { ms: 10, seq: 0 });
        assert_eq!(wakeups.coverage("s", ours), Coverage::Outside);
        let mut ended = wakeups.appends_ended();
        let appending = wakeups.appending(["s", "unwatched"]);
        assert_eq!(wakeups.coverage("s", ours), Coverage::Unknown);
        wakeups.appended("s", &[ours]);
        assert_eq!(wakeups.coverage("s", ours), Coverage::Covered(ours));
        assert_eq!(wakeups.coverage("s", theirs), Coverage::Unknown);
        drop(appending);
        assert!(ended.has_changed().unwrap());
        ended.borrow_and_update();
        assert_eq!(wakeups.coverage("s", theirs), Coverage::Outside);
        // A slot made again after the append began is not uncounted by its end.
        let appending = wakeups.appending(["s"]);
        drop(watch);
        let _watch = wakeups.watch(&["s".into()], None);
        let again = wakeups.appending(["s"]);
        drop(appending);
        assert_eq!(wakeups.coverage("s", theirs), Coverage::Unknown);
        drop(again);
        assert_eq!(wakeups.coverage("s", theirs), Coverage::Outside);
    }

    #[test]
    fn dropping_the_handle_unregisters() {
        let wakeups = Wakeups::default();
        let additions = wakeups.additions();
        let one = wakeups.watch(&["a".into()], None);
        let two = wakeups.watch(&["a".into(), "b".into()], None);
        assert!(additions.has_changed().unwrap());
        assert_eq!(wakeups.watcher_count(), 3);
        drop(one);
        let mut watched = wakeups.watched();
        watched.sort();
        assert_eq!(watched, ["a", "b"]);
        drop(two);
        assert!(wakeups.watched().is_empty());
        assert_eq!(wakeups.watcher_count(), 0);
    }

    #[tokio::test]
    async fn a_group_notification_wakes_one_member_and_is_kept_if_none_waits() {
        let wakeups = Wakeups::default();
        let mut one = wakeups.watch(&["s".into()], Some("g"));
        let mut two = wakeups.watch(&["s".into()], Some("g"));
        let mut tail = wakeups.watch(&["s".into()], None);
        tail.mark_seen();
        // Nobody waits yet: the notification is kept for whoever waits first.
        wakeups.notify("s");
        let short = Duration::from_millis(50);
        tokio::time::timeout(short, one.changed())
            .await
            .expect("kept for the first waiter");
        assert!(
            tokio::time::timeout(short, two.changed()).await.is_err(),
            "both members woken"
        );
        tokio::time::timeout(short, tail.changed())
            .await
            .expect("tail readers all wake");
        // Passing on hands the next turn to another member.
        one.pass_on();
        tokio::time::timeout(short, two.changed())
            .await
            .expect("turn passed on");
        drop((one, two, tail));
        assert!(wakeups.watched().is_empty());
    }
}
