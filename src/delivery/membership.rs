//! Who reads a group, and under which delivery policy: what every consuming call of a group
//! member carries into the core, and how a stored subscription's policy overrides it.

use std::sync::Arc;

use rand::Rng;

use crate::error::{BrokerError, BrokerResult};
use crate::model::{DeliveryPolicy, Filter, StartId, SubscriptionPolicy};

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
    /// Which of the above the request named itself (the rest are the server's defaults).
    pub requested: Requested,
    /// The group's stored subscription is paused: nothing is delivered.
    pub paused: bool,
    /// The stored subscription's filter: messages that do not match are acknowledged without
    /// delivery.
    pub filter: Option<Arc<Filter>>,
    /// The stored subscription is ordered: per ordering key, one message outstanding at a time.
    pub ordered: bool,
    /// Expired messages go to the dead-letter stream rather than only being acknowledged.
    pub dead_letter_expired: bool,
}

/// The delivery settings a request named explicitly: those a stored subscription's policy may
/// not be contradicted on (the request is refused), as opposed to defaults it simply replaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    /// `ack_deadline_ms`.
    pub ack_deadline: bool,
    /// `max_deliveries`.
    pub max_deliveries: bool,
    /// `dead_letter_stream`.
    pub dead_letter_stream: bool,
    /// `max_in_flight`.
    pub max_in_flight: bool,
    /// The call is flow-controlled at all (Subscribe, Consume); a Fetch takes what it asks for,
    /// so a stored in-flight limit does not apply to it.
    pub flow_controlled: bool,
}

/// What a member would apply without a stored subscription: its request, with the server's
/// defaults where the request left a setting out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnSettings {
    /// The request's delivery policy.
    pub delivery: DeliveryPolicy,
    /// The request's in-flight limit.
    pub max_in_flight: u64,
}

impl GroupMembership {
    /// A member of a stored subscription's group that names no setting itself (Pub/Sub's
    /// readers): the stored policy decides deadlines, limits and dead letters, `defaults` apply
    /// where there is none. `consumer` `None`: a name is generated. `max_in_flight`: the
    /// member's own limit (a StreamingPull's `max_outstanding_messages`), which narrows the
    /// policy's.
    pub fn of_stored(
        group: String,
        consumer: Option<String>,
        defaults: OwnSettings,
        max_in_flight: Option<u64>,
    ) -> Self {
        let generated_name = consumer.is_none();
        Self {
            group,
            consumer: consumer.unwrap_or_else(generate_consumer_name),
            create_from: None,
            no_ack: false,
            generated_name,
            delivery: defaults.delivery,
            max_in_flight: max_in_flight.unwrap_or(defaults.max_in_flight),
            requested: Requested {
                max_in_flight: max_in_flight.is_some(),
                flow_controlled: true,
                ..Requested::default()
            },
            paused: false,
            filter: None,
            ordered: false,
            dead_letter_expired: false,
        }
    }

    /// What this member applies without a stored subscription.
    pub fn own_settings(&self) -> OwnSettings {
        OwnSettings {
            delivery: self.delivery.clone(),
            max_in_flight: self.max_in_flight,
        }
    }

    /// Applies the group's stored policy (`None`: the member's `own` settings). The request
    /// may narrow the in-flight limit; a setting it named that differs from the policy is
    /// refused when `strict` (when the member joins), and overridden otherwise (the policy was
    /// updated while the member was reading: the update wins).
    pub fn apply(
        &mut self,
        stored: Option<&SubscriptionPolicy>,
        own: &OwnSettings,
        strict: bool,
    ) -> BrokerResult<()> {
        let Some(stored) = stored else {
            self.delivery = own.delivery.clone();
            self.max_in_flight = own.max_in_flight;
            self.paused = false;
            self.filter = None;
            self.ordered = false;
            self.dead_letter_expired = false;
            return Ok(());
        };
        let policy = stored.delivery();
        let requested = self.requested;
        let narrows = own.max_in_flight != 0
            && (stored.max_in_flight == 0 || own.max_in_flight <= stored.max_in_flight);
        if strict {
            let contradictions = [
                (
                    "ack_deadline_ms",
                    requested.ack_deadline && own.delivery.ack_deadline != policy.ack_deadline,
                    format!("an ack deadline of {} ms", stored.ack_deadline_ms),
                ),
                (
                    "max_deliveries",
                    requested.max_deliveries
                        && own.delivery.max_deliveries != policy.max_deliveries,
                    format!("max_deliveries {}", stored.max_deliveries),
                ),
                (
                    "dead_letter_stream",
                    requested.dead_letter_stream
                        && own.delivery.dead_letter_stream != policy.dead_letter_stream,
                    match &stored.dead_letter_stream {
                        Some(stream) => format!("dead letters go to `{stream}`"),
                        None => "dead letters go to the stream beside their own".into(),
                    },
                ),
                (
                    "max_in_flight",
                    requested.flow_controlled && requested.max_in_flight && !narrows,
                    format!(
                        "at most {} in flight (a request may only ask for fewer)",
                        stored.max_in_flight
                    ),
                ),
            ];
            if let Some((field, _, says)) =
                contradictions.into_iter().find(|(_, differs, _)| *differs)
            {
                return Err(BrokerError::invalid(
                    field,
                    format!(
                        "contradicts the stored subscription of group `{}`, which says {says}; \
                         leave it unset to apply the subscription's",
                        self.group
                    ),
                ));
            }
        }
        self.delivery = policy;
        let keeps_own = !requested.flow_controlled || (requested.max_in_flight && narrows);
        self.max_in_flight = if keeps_own {
            own.max_in_flight
        } else {
            stored.max_in_flight
        };
        self.paused = stored.paused;
        self.ordered = stored.ordered;
        self.dead_letter_expired = stored.dead_letter_expired;
        self.filter = match &stored.filter {
            None => None,
            Some(text) => Some(Arc::new(Filter::parse(text).map_err(|err| {
                BrokerError::Internal(format!(
                    "the stored filter of group `{}` does not parse ({err}); update it",
                    self.group
                ))
            })?)),
        };
        Ok(())
    }
}

/// A consumer name unlikely to collide: `sg-` and 16 hex digits.
pub fn generate_consumer_name() -> String {
    format!("sg-{:016x}", rand::rng().random::<u64>())
}
