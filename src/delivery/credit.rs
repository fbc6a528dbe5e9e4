//! Flow-control credit a client grants (Consume): how many more messages, and bytes of message
//! fields, it can take. The reading side takes credit for what it read and waits when none is
//! left; the client's side adds credit as it frees room. Both sides share one [`Credit`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Credit shared between a session's reader and the requests that grant it.
#[derive(Clone, Debug)]
pub struct Credit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    left: Mutex<Left>,
    granted: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Left {
    messages: u64,
    /// May go below zero: the read that used the last byte is sent whole.
    bytes: i64,
    /// Bytes are not counted at all.
    bytes_unlimited: bool,
}

impl Credit {
    /// A client's opening credit; `bytes` 0 counts no bytes.
    pub fn new(messages: u64, bytes: u64) -> Self {
        Self {
            shared: Arc::new(Shared {
                left: Mutex::new(Left {
                    messages,
                    bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                    bytes_unlimited: bytes == 0,
                }),
                granted: Notify::new(),
            }),
        }
    }

    fn left(&self) -> MutexGuard<'_, Left> {
        // Every change is arithmetic on plain numbers: a poisoned lock is still consistent.
        self.shared
            .left
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many messages may be read now: 0 while either credit is used up.
    pub fn room(&self) -> u64 {
        let left = *self.left();
        if !left.bytes_unlimited && left.bytes <= 0 {
            return 0;
        }
        left.messages
    }

    /// Uses credit for messages read: `messages` of them, `bytes` in all.
    pub fn take(&self, messages: u64, bytes: u64) {
        let mut left = self.left();
        left.messages = left.messages.saturating_sub(messages);
        if !left.bytes_unlimited {
            left.bytes = left
                .bytes
                .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Adds credit the client granted, and wakes a reader waiting for it.
    pub fn grant(&self, messages: u64, bytes: u64) {
        {
            let mut left = self.left();
            left.messages = left.messages.saturating_add(messages);
            if !left.bytes_unlimited {
                left.bytes = left
                    .bytes
                    .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
        self.shared.granted.notify_one();
    }

    /// Resolves once there is room again (at once if there is).
    pub async fn granted(&self) {
        loop {
            let notified = self.shared.granted.notified();
            if self.room() > 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with its runtime"
)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credit_runs_out_by_messages_or_bytes_and_a_grant_wakes_the_reader() {
        let credit = Credit::new(3, 100);
        assert_eq!(credit.room(), 3);
        credit.take(2, 150);
        // Bytes are used up (the read that crossed the line was whole): no room.
        assert_eq!(credit.room(), 0);
        let waiting = tokio::spawn({
            let credit = credit.clone();
            async move { credit.granted().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        credit.grant(0, 100);
        waiting.await.unwrap();
        assert_eq!(credit.room(), 1);
        credit.take(1, 10);
        assert_eq!(credit.room(), 0);
        // Without a byte limit only messages count.
        let messages_only = Credit::new(2, 0);
        messages_only.take(1, u64::MAX);
        assert_eq!(messages_only.room(), 1);
    }
}
