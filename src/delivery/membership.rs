//! Who reads a group, and under which delivery policy: what every consuming call of a group
//! member carries into the core.

use rand::Rng;

use crate::model::{DeliveryPolicy, StartId};

/// A reader's place in a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    /// Group name.
    pub group: String,
    /// Consumer name; never empty (see [`generate_consumer_name`]).
    pub consumer: String,
    /// Create the group where missing, starting here.
    pub create_from: Option<StartId>,
    /// XREADGROUP NOACK.
    pub no_ack: bool,
    /// The broker made the consumer name up: nobody can come back under it, so the consumer is
    /// deleted when the subscription ends.
    pub generated_name: bool,
    /// Deadlines, backoff, delivery limit, dead letters.
    pub delivery: DeliveryPolicy,
    /// Most messages this member may hold unacknowledged (flow control); 0: no limit.
    pub max_in_flight: u64,
}

/// A consumer name unlikely to collide: `sg-` and 16 hex digits.
pub fn generate_consumer_name() -> String {
    format!("sg-{:016x}", rand::rng().random::<u64>())
}
