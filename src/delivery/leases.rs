//! Flow control without a Redis round trip per read: each flow-controlled member keeps a book of
//! the messages it holds and when their lease started. Deliveries add to it, acks, nacks and
//! extensions through this broker update it (the core tells every book of the group), and a
//! lease past its ack deadline stops counting, as it does in Redis: an expired message is due
//! for redelivery to anyone. The book is rebuilt from Redis only when it cannot be trusted — at
//! the start, after the member's own pending entries were replayed, and when the member has
//! waited at its limit without an ack through this broker (acks through another instance).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::EntryId;

/// One group on one stream: (stream, group).
type GroupKey = (String, String);

/// What one member holds: (stream, id) → when its current lease started. `None` until it has
/// been counted from Redis.
#[derive(Debug, Default)]
struct Book {
    held: Option<HashMap<(String, EntryId), Instant>>,
}

/// A member's book of leases, shared with the [`LeaseBooks`] registry so that acks through any
/// call of this broker reach it.
#[derive(Debug, Clone)]
pub struct Leases {
    book: Arc<Mutex<Book>>,
    deadline: Duration,
    limit: u64,
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    // No await happens while it is held, and every update is a whole insert or removal.
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Leases {
    /// The most messages the member may hold unacknowledged.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How many more messages the member may take now, or `None` when the book must first be
    /// rebuilt from Redis ([`Leases::replace`]). Expired leases are dropped on the way.
    pub fn room(&self) -> Option<u64> {
        let now = Instant::now();
        let mut book = lock(&self.book);
        let held = book.held.as_mut()?;
        held.retain(|_, started| now.duration_since(*started) < self.deadline);
        Some(self.limit.saturating_sub(held.len() as u64))
    }

    /// The member was handed these messages: their leases start now.
    pub fn add<'a>(&self, delivered: impl IntoIterator<Item = (&'a str, EntryId)>) {
        let now = Instant::now();
        if let Some(held) = lock(&self.book).held.as_mut() {
            held.extend(
                delivered
                    .into_iter()
                    .map(|(s, id)| ((s.to_owned(), id), now)),
            );
        }
    }

    /// Forget what the book says: the next [`room`](Self::room) asks for a rebuild.
    pub fn invalidate(&self) {
        lock(&self.book).held = None;
    }

    /// The book as Redis has it: each held message with how long ago its lease started.
    pub fn replace(&self, held: impl IntoIterator<Item = (String, EntryId, Duration)>) {
        let now = Instant::now();
        let held = held
            .into_iter()
            .map(|(stream, id, age)| ((stream, id), now.checked_sub(age).unwrap_or(now)))
            .collect();
        lock(&self.book).held = Some(held);
    }

    fn forget(&self, stream: &str, ids: &[EntryId]) {
        if let Some(held) = lock(&self.book).held.as_mut() {
            for id in ids {
                held.remove(&(stream.to_owned(), *id));
            }
        }
    }

    fn renew(&self, stream: &str, ids: &[EntryId]) {
        let now = Instant::now();
        if let Some(held) = lock(&self.book).held.as_mut() {
            for id in ids {
                if let Some(started) = held.get_mut(&(stream.to_owned(), *id)) {
                    *started = now;
                }
            }
        }
    }
}

/// The books of the members reading one (stream, group), held weakly: a book leaves with its
/// member.
type Readers = Vec<Weak<Mutex<Book>>>;

/// Every live book of this broker, by the (stream, group) pairs its member reads.
#[derive(Clone, Default)]
pub struct LeaseBooks {
    books: Arc<Mutex<HashMap<GroupKey, Readers>>>,
}

impl LeaseBooks {
    /// A new, not yet counted book for a member of `group` on `streams`; it leaves the registry
    /// when the last clone of it is dropped.
    pub fn open(&self, streams: &[String], group: &str, limit: u64, deadline: Duration) -> Leases {
        let book = Arc::new(Mutex::new(Book::default()));
        let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in streams {
            let members = books.entry((stream.clone(), group.to_owned())).or_default();
            members.retain(|b| b.strong_count() > 0);
            members.push(Arc::downgrade(&book));
        }
        Leases {
            book,
            deadline,
            limit,
        }
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
        for book in live {
            // The deadline and limit do not matter for these updates.
            change(&Leases {
                book,
                deadline: Duration::ZERO,
                limit: 0,
            });
        }
    }

    /// These messages are no longer held by anyone (acked, nacked): they free their holder's room.
    pub fn released(&self, stream: &str, group: &str, ids: &[EntryId]) {
        self.each(stream, group, |leases| leases.forget(stream, ids));
    }

    /// These messages got a fresh lease (ExtendDeadline, or renewed while buffered).
    pub fn renewed(&self, stream: &str, group: &str, ids: &[EntryId]) {
        self.each(stream, group, |leases| leases.renew(stream, ids));
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
        let leases = books.open(&streams, "g", 3, Duration::from_secs(10));
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
        assert_eq!(leases.room(), Some(1));
        // The oldest lease runs out after one more second; a renewed one does not.
        books.renewed("s", "g", &[id(1)]);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(leases.room(), Some(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(leases.room(), Some(3), "every lease expired");
        leases.invalidate();
        assert_eq!(leases.room(), None);
        drop(leases);
        books.released("s", "g", &[id(1)]);
        assert!(books.books.lock().unwrap().is_empty());
    }
}
