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
use tokio::sync::watch;

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

#[derive(Debug)]
struct Slot {
    version: watch::Sender<u64>,
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

    /// Registers interest in `streams` until the returned handle is dropped.
    pub fn watch(&self, streams: &[String]) -> StreamWatch {
        let mut slots = self.slots();
        let mut added = false;
        let receivers = streams
            .iter()
            .map(|stream| {
                let slot = slots.entry(stream.clone()).or_insert_with(|| {
                    added = true;
                    Slot {
                        version: watch::Sender::new(0),
                        watchers: 0,
                    }
                });
                slot.watchers += 1;
                slot.version.subscribe()
            })
            .collect();
        drop(slots);
        if added {
            self.inner.added.send_modify(|v| *v = v.wrapping_add(1));
        }
        StreamWatch {
            wakeups: self.clone(),
            streams: streams.to_vec(),
            receivers,
        }
    }

    /// Wakes everyone waiting on `stream`; a no-op when nobody is.
    pub fn notify(&self, stream: &str) {
        if let Some(slot) = self.slots().get(stream) {
            slot.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The streams somebody waits on right now.
    pub fn watched(&self) -> Vec<String> {
        self.slots().keys().cloned().collect()
    }

    /// How many subscriptions are registered in total (a stream counted once per watcher).
    pub fn watcher_count(&self) -> usize {
        self.slots().values().map(|slot| slot.watchers).sum()
    }

    /// A receiver that changes whenever a stream becomes watched.
    pub fn additions(&self) -> watch::Receiver<u64> {
        self.inner.added.subscribe()
    }

    fn release(&self, streams: &[String]) {
        let mut slots = self.slots();
        for stream in streams {
            if let Some(slot) = slots.get_mut(stream) {
                slot.watchers -= 1;
                if slot.watchers == 0 {
                    slots.remove(stream);
                }
            }
        }
    }
}

/// One subscription's interest in a set of streams; dropping it unregisters.
#[derive(Debug)]
pub struct StreamWatch {
    wakeups: Wakeups,
    streams: Vec<String>,
    receivers: Vec<watch::Receiver<u64>>,
}

impl StreamWatch {
    /// Forgets notifications so far; call before each read.
    pub fn mark_seen(&mut self) {
        for receiver in &mut self.receivers {
            receiver.borrow_and_update();
        }
    }

    /// Resolves at the first notification since the last [`mark_seen`](Self::mark_seen).
    ///
    /// Cancel-safe: dropping it loses nothing, the next call sees the same notification.
    pub async fn changed(&mut self) {
        let waits = self.receivers.iter_mut().map(|r| Box::pin(r.changed()));
        // The senders live in the registry for as long as this handle exists, so `changed`
        // cannot fail with "sender dropped".
        let _ = select_all(waits).await;
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        self.wakeups.release(&self.streams);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_notification_between_read_and_wait_is_not_lost() {
        let wakeups = Wakeups::default();
        let mut watch = wakeups.watch(&["a".into(), "b".into()]);
        watch.mark_seen();
        wakeups.notify("b"); // lands "after the read"
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn marking_seen_clears_and_unrelated_streams_do_not_wake() {
        let wakeups = Wakeups::default();
        let mut watch = wakeups.watch(&["a".into()]);
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
        let one = wakeups.watch(&["a".into()]);
        let two = wakeups.watch(&["a".into(), "b".into()]);
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
}
