//! Flow control without a Redis round trip per read: each flow-controlled member keeps a book of
//! the messages it holds and when their lease started. Deliveries add to it, acks, nacks and
//! extensions through this broker update it (the core tells every book of the group), and a
//! lease past its ack deadline stops counting, as it does in Redis: an expired message is due
//! for redelivery to anyone. The book is rebuilt from Redis only when it cannot be trusted — at
//! the start, after the member's own pending entries were replayed, and when the member has
//! waited at its limit without an ack through this broker (acks through another instance).
//!
//! A member at its limit is woken by its own book, once a quarter of its window is free: not by
//! every ack of its group, which for a client acking one message at a time would mean one wake-up
//! and one tiny read per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::model::EntryId;

/// One group on one stream: (stream, group).
type GroupKey = (String, String);

/// How much a member may hold, and for how long a lease counts: its subscription's, which an
/// update may change while it reads (see [`Leases::follow`]).
#[derive(Debug, Clone, Copy)]
struct Window {
    limit: u64,
    deadline: Duration,
    /// Free room at which a member waiting at its limit reads again.
    resume_at: u64,
}

impl Window {
    fn new(limit: u64, deadline: Duration) -> Self {
        Self {
            limit,
            deadline,
            resume_at: (limit / 4).max(1),
        }
    }
}

/// What one member holds: (stream, id) → when its current lease started. `None` until it has
/// been counted from Redis.
#[derive(Debug)]
struct Book {
    window: Window,
    held: Option<HashMap<(String, EntryId), Instant>>,
    /// No lease in `held` started before this: expiry needs no walk until a deadline after it.
    oldest: Option<Instant>,
    /// The member filled its window and waits for its `resume_at` of room.
    paused: bool,
}

impl Book {
    fn new(window: Window) -> Self {
        Self {
            window,
            held: None,
            oldest: None,
            paused: false,
        }
    }
}

/// A member's book and its limits, shared with the [`LeaseBooks`] registry.
#[derive(Debug)]
struct Shared {
    book: Mutex<Book>,
    /// The consumer whose book this is: an extension renews its leases, nobody else's.
    consumer: String,
    /// Signalled when releases bring the free room to `resume_at`.
    freed: Notify,
}

/// A member's book of leases.
#[derive(Debug, Clone)]
pub struct Leases {
    shared: Arc<Shared>,
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    // No await happens while it is held, and every update is a whole insert or removal.
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Book {
    /// Drops the leases past the deadline; walks the book only when one may have expired.
    fn expire(&mut self, now: Instant) {
        let deadline = self.window.deadline;
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if self
            .oldest
            .is_some_and(|oldest| now.duration_since(oldest) < deadline)
        {
            return;
        }
        held.retain(|_, started| now.duration_since(*started) < deadline);
        self.oldest = held.values().min().copied();
    }
}

impl Leases {
    /// The most messages the member may hold unacknowledged.
    pub fn limit(&self) -> u64 {
        lock(&self.shared.book).window.limit
    }

    /// The free room at which a member at its limit reads again: a quarter of its window.
    pub fn resume_at(&self) -> u64 {
        lock(&self.shared.book).window.resume_at
    }

    /// The subscription's limit and ack deadline as they are now (an update may change them
    /// while the member reads): a lease counts for the current deadline, as Redis redelivers
    /// by it. Before, a book kept the deadline it was opened with: after an update to a longer
    /// one it let leases go that Redis still held for the member, which read past its limit
    /// (found by the model checker, seed 100061).
    pub fn follow(&self, limit: u64, deadline: Duration) {
        let mut book = lock(&self.shared.book);
        if book.window.limit != limit || book.window.deadline != deadline {
            book.window = Window::new(limit, deadline);
        }
    }

    /// How many more messages the member may take now, or `None` when the book must first be
    /// rebuilt from Redis ([`Leases::replace`]). Expired leases are dropped on the way. Once the
    /// window is full, the answer stays 0 until [`resume_at`](Self::resume_at) is free.
    pub fn room(&self) -> Option<u64> {
        let mut book = lock(&self.shared.book);
        book.expire(Instant::now());
        let held = book.held.as_ref()?.len() as u64;
        let free = book.window.limit.saturating_sub(held);
        if free == 0 {
            book.paused = true;
        } else if free >= book.window.resume_at {
            book.paused = false;
        }
        Some(if book.paused { 0 } else { free })
    }

    /// The member was handed these messages: their leases start now.
    pub fn add<'a>(&self, delivered: impl IntoIterator<Item = (&'a str, EntryId)>) {
        let now = Instant::now();
        let mut book = lock(&self.shared.book);
        let Some(held) = book.held.as_mut() else {
            return;
        };
        let before = held.len();
        held.extend(
            delivered
                .into_iter()
                .map(|(s, id)| ((s.to_owned(), id), now)),
        );
        if held.len() > before {
            book.oldest.get_or_insert(now);
        }
    }

    /// Forget what the book says: the next [`room`](Self::room) asks for a rebuild.
    pub fn invalidate(&self) {
        let mut book = lock(&self.shared.book);
        *book = Book::new(book.window);
    }

    /// The book as Redis has it: each held message with how long ago its lease started.
    pub fn replace(&self, held: impl IntoIterator<Item = (String, EntryId, Duration)>) {
        let now = Instant::now();
        let held: HashMap<_, _> = held
            .into_iter()
            .map(|(stream, id, age)| ((stream, id), now.checked_sub(age).unwrap_or(now)))
            .collect();
        let oldest = held.values().min().copied();
        let mut book = lock(&self.shared.book);
        *book = Book {
            held: Some(held),
            oldest,
            ..Book::new(book.window)
        };
    }

    /// Waits until releases through this broker freed [`resume_at`](Self::resume_at) of room,
    /// or `patience` passed (then `false`). A release that came before the wait still counts.
    pub async fn freed(&self, patience: Duration) -> bool {
        tokio::time::timeout(patience, self.shared.freed.notified())
            .await
            .is_ok()
    }

    fn forget(&self, stream: &str, ids: &[EntryId]) {
        let mut book = lock(&self.shared.book);
        let Some(held) = book.held.as_mut() else {
            return;
        };
        let before = held.len() as u64;
        for id in ids {
            held.remove(&(stream.to_owned(), *id));
        }
        let after = held.len() as u64;
        let threshold = book.window.limit.saturating_sub(book.window.resume_at);
        // A paused member whose window this release opened far enough is woken (one stored
        // permit if it is not waiting yet, so the wake-up is not lost).
        if book.paused && after <= threshold && before > threshold {
            self.shared.freed.notify_one();
        }
    }

    /// `consumer` got fresh leases on `ids`. In its own book they count again from now, even
    /// those the book had already let expire (Redis took the extension: the member holds them
    /// again, and a book that forgot them would let it read past its limit); any other book
    /// that still lists them is stale (the extension succeeds only for their holder).
    fn renew(&self, stream: &str, consumer: &str, ids: &[EntryId]) {
        let now = Instant::now();
        let mine = self.shared.consumer == consumer;
        let mut book = lock(&self.shared.book);
        let Some(held) = book.held.as_mut() else {
            return;
        };
        for id in ids {
            let key = (stream.to_owned(), *id);
            if mine {
                held.insert(key, now);
            } else {
                held.remove(&key);
            }
        }
        if mine && !ids.is_empty() {
            book.oldest.get_or_insert(now);
        }
    }
}

/// The books of the members reading one (stream, group), held weakly: a book leaves with its
/// member.
type Readers = Vec<Weak<Shared>>;

/// Every live book of this broker, by the (stream, group) pairs its member reads.
#[derive(Clone, Default)]
pub struct LeaseBooks {
    books: Arc<Mutex<HashMap<GroupKey, Readers>>>,
}

impl LeaseBooks {
    /// A new, not yet counted book for `consumer`, a member of `group` on `streams` that may
    /// hold `limit` messages for `deadline` each; it leaves the registry when the last clone of
    /// it is dropped.
    pub fn open(
        &self,
        streams: &[String],
        group: &str,
        consumer: &str,
        limit: u64,
        deadline: Duration,
    ) -> Leases {
        let shared = Arc::new(Shared {
            book: Mutex::new(Book::new(Window::new(limit, deadline))),
            consumer: consumer.to_owned(),
            freed: Notify::new(),
        });
        let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in streams {
            let members = books.entry((stream.clone(), group.to_owned())).or_default();
            members.retain(|b| b.strong_count() > 0);
            members.push(Arc::downgrade(&shared));
        }
        Leases { shared }
    }

    /// Applies `change` to every live book of `group` on `stream`.
    fn each(&self, stream: &str, group: &str, change: impl Fn(&Leases)) {
        let live: Vec<_> = {
            let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (stream.to_owned(), group.to_owned());
            let Some(members) = books.get_mut(&key) else {
                return;
            };
            members.retain(|b| b.strong_count() > 0);
            if members.is_empty() {
                books.remove(&key);
                return;
            }
            members.iter().filter_map(Weak::upgrade).collect()
        };
        for shared in live {
            change(&Leases { shared });
        }
    }

    /// These messages are no longer held by anyone (acked, nacked): they free their holder's room.
    pub fn released(&self, stream: &str, group: &str, ids: &[EntryId]) {
        self.each(stream, group, |leases| leases.forget(stream, ids));
    }

    /// These messages of `consumer` got a fresh lease (ExtendDeadline, or renewed while
    /// buffered).
    pub fn renewed(&self, stream: &str, group: &str, consumer: &str, ids: &[EntryId]) {
        self.each(stream, group, |leases| leases.renew(stream, consumer, ids));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> EntryId {
        EntryId { ms, seq: 0 }
    }

    #[tokio::test(start_paused = true)]
    async fn a_book_counts_live_leases_and_hears_of_acks_through_the_registry() {
        let books = LeaseBooks::default();
        let streams = vec!["s".to_owned()];
        let leases = books.open(&streams, "g", "c", 3, Duration::from_secs(10));
        assert_eq!(leases.room(), None, "a new book must be counted first");
        leases.replace([("s".to_owned(), id(1), Duration::from_secs(9))]);
        assert_eq!(leases.room(), Some(2));
        leases.add([("s", id(2)), ("s", id(3))]);
        assert_eq!(leases.room(), Some(0));
        // An ack of another group, or of another stream, changes nothing.
        books.released("s", "other", &[id(2)]);
        books.released("t", "g", &[id(2)]);
        assert_eq!(leases.room(), Some(0));
        books.released("s", "g", &[id(2)]);
        assert!(
            leases.freed(Duration::from_millis(1)).await,
            "the release that freed room woke the member, though it was not waiting yet"
        );
        assert_eq!(leases.room(), Some(1));
        // The oldest lease runs out after one more second; a renewed one does not.
        books.renewed("s", "g", "c", &[id(1)]);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(leases.room(), Some(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(leases.room(), Some(3), "every lease expired");
        // An extension of a message whose lease the book let expire counts it again (the member
        // holds it again in Redis); another consumer's extension of it drops it from this book.
        books.renewed("s", "g", "c", &[id(1)]);
        assert_eq!(leases.room(), Some(2), "the extended lease counts again");
        books.renewed("s", "g", "other", &[id(1)]);
        assert_eq!(leases.room(), Some(3), "another consumer holds it now");
        leases.invalidate();
        assert_eq!(leases.room(), None);
        drop(leases);
        books.released("s", "g", &[id(1)]);
        assert!(books.books.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_book_follows_an_updated_deadline_and_limit() {
        let books = LeaseBooks::default();
        let leases = books.open(&["s".to_owned()], "g", "c", 2, Duration::from_secs(1));
        leases.replace([("s".to_owned(), id(1), Duration::ZERO)]);
        // The subscription now gives each message 3 s and the member room for 3.
        leases.follow(3, Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            leases.room(),
            Some(2),
            "the lease still counts under the new deadline"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(leases.room(), Some(3));
        assert_eq!((leases.limit(), leases.resume_at()), (3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_is_woken_once_a_quarter_of_its_window_is_free_not_at_every_ack() {
        let books = LeaseBooks::default();
        let leases = books.open(&["s".to_owned()], "g", "c", 8, Duration::from_secs(10));
        leases.replace((0..8).map(|n| ("s".to_owned(), id(n), Duration::ZERO)));
        assert_eq!(leases.room(), Some(0), "full: the member pauses");
        books.released("s", "g", &[id(0)]);
        assert_eq!(leases.room(), Some(0), "one free of eight: still paused");
        assert!(
            !leases.freed(Duration::from_millis(10)).await,
            "one of eight"
        );
        books.released("s", "g", &[id(1)]);
        assert!(
            leases.freed(Duration::from_millis(10)).await,
            "two of eight"
        );
        assert_eq!(leases.room(), Some(2));
    }
}
