//! A subscription: a consumer group plus the delivery policy every member of it applies, stored
//! beside the streams so that every client and every broker instance applies the same one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backoff, DeliveryPolicy};

/// What a stored subscription holds, as kept in Redis (JSON; fields added later default, so
/// records written by older versions still read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionPolicy {
    /// How long a delivered message may go unacknowledged before it is redelivered.
    pub ack_deadline_ms: u64,
    /// Backoff before the second delivery.
    pub backoff_min_ms: u64,
    /// Backoff never exceeds this.
    pub backoff_max_ms: u64,
    /// Deliveries after which a message is dead-lettered; 0: no limit.
    pub max_deliveries: u64,
    /// Where dead letters go; `None` for the stream beside their own.
    pub dead_letter_stream: Option<String>,
    /// Most messages one member holds unacknowledged unless it asks for fewer; 0: no limit.
    pub max_in_flight: u64,
    /// While paused, no member gets deliveries; pending entries keep their state.
    pub paused: bool,
    /// Only matching messages are delivered (see [`Filter`](super::Filter)); the text as given.
    pub filter: Option<String>,
    /// Messages with the same ordering key are delivered in order, one outstanding at a time
    /// per key (the delivery core's `ordering` module).
    pub ordered: bool,
    /// Messages past their expiry go to the dead-letter stream (else they are acknowledged
    /// without delivery and counted).
    pub dead_letter_expired: bool,
}

impl Default for SubscriptionPolicy {
    fn default() -> Self {
        Self {
            ack_deadline_ms: 30_000,
            backoff_min_ms: 1_000,
            backoff_max_ms: 60_000,
            max_deliveries: 0,
            dead_letter_stream: None,
            max_in_flight: 1_000,
            paused: false,
            filter: None,
            ordered: false,
            dead_letter_expired: false,
        }
    }
}

impl SubscriptionPolicy {
    /// The redelivery part, as members and sweeps apply it.
    pub fn delivery(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            ack_deadline: Duration::from_millis(self.ack_deadline_ms),
            backoff: Backoff {
                min: Duration::from_millis(self.backoff_min_ms),
                max: Duration::from_millis(self.backoff_max_ms),
            },
            max_deliveries: self.max_deliveries,
            dead_letter_stream: self.dead_letter_stream.clone(),
        }
    }
}

/// A stored subscription with its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The stream or topic it reads.
    pub stream: String,
    /// Its consumer group.
    pub group: String,
    /// What its members apply.
    pub policy: SubscriptionPolicy,
}
