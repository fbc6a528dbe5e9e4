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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::select_all;
use tokio::sync::{Notify, watch};

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
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            added: watch::Sender::new(0),
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
        if let Some(slot) = self.slots().get(stream) {
            slot.version.send_modify(|v| *v = v.wrapping_add(1));
            for member in slot.groups.values() {
                member.notify.notify_one();
            }
        }
    }

    /// The streams somebody waits on right now.
    pub fn watched(&self) -> Vec<String> {
        self.slots().keys().cloned().collect()
    }

    /// How many registrations there are (a subscription counts once per stream it reads).
    pub fn watcher_count(&self) -> usize {
        self.slots().values().map(|slot| slot.watchers).sum()
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
    pub async fn changed(&mut self) {
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
