//! What a pending entry is waiting for, read off the group's pending list the way the sweep
//! reads it: the parking trick (see [`PARKED_CONSUMER`]) and ordered delivery's held consumer
//! show through raw idle times, so operators get the state and when it becomes due instead.

use super::{DeliveryPolicy, HELD_CONSUMER, PARKED_CONSUMER, PARKED_HORIZON_MS, PendingEntry};

/// A pending entry's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    /// Delivered to a consumer, awaiting its ack.
    Delivered,
    /// Nacked or handed back: redelivered to any member when due.
    Parked,
    /// Ordered delivery: waiting behind an earlier message of its ordering key.
    WaitingForKey,
}

impl PendingEntry {
    /// Its state, and in how many ms it becomes due for (re)delivery under `policy` (`None`
    /// when that depends on another message: [`PendingState::WaitingForKey`]). 0: due now.
    pub fn state(&self, policy: &DeliveryPolicy) -> (PendingState, Option<u64>) {
        match self.consumer.as_str() {
            PARKED_CONSUMER => (
                PendingState::Parked,
                Some(PARKED_HORIZON_MS.saturating_sub(self.idle_ms)),
            ),
            HELD_CONSUMER => (PendingState::WaitingForKey, None),
            _ => {
                let deadline = super::millis(policy.ack_deadline)
                    .saturating_add(policy.backoff.after_ms(self.delivery_count));
                (
                    PendingState::Delivered,
                    Some(deadline.saturating_sub(self.idle_ms)),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Backoff, EntryId};

    #[test]
    fn parked_entries_say_when_they_are_due() {
        let policy = DeliveryPolicy {
            ack_deadline: Duration::from_secs(30),
            backoff: Backoff {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            max_deliveries: 0,
            dead_letter_stream: None,
        };
        let entry = |consumer: &str, idle_ms| PendingEntry {
            id: EntryId::ZERO,
            consumer: consumer.into(),
            idle_ms,
            delivery_count: 1,
        };
        // Nacked with a 30 s delay a second ago: idle reads as horizon − 30 s + 1 s.
        let parked = entry(PARKED_CONSUMER, PARKED_HORIZON_MS - 29_000);
        assert_eq!(parked.state(&policy), (PendingState::Parked, Some(29_000)));
        let delivered = entry("worker-1", 10_000);
        assert_eq!(
            delivered.state(&policy),
            (PendingState::Delivered, Some(21_000))
        );
        let waiting = entry(HELD_CONSUMER, 5);
        assert_eq!(waiting.state(&policy), (PendingState::WaitingForKey, None));
    }
}
