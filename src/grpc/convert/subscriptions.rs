//! Stored subscriptions between their protobuf form and the model: the fields a request sets
//! are checked and laid over a base (the server's defaults for a new subscription, the stored
//! policy for an update).

use super::{delay, name};
use crate::config::Limits;
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::pb;
use crate::model::{Filter, Subscription, SubscriptionPolicy, millis};

/// `base` with the fields `requested` sets, checked; `None` leaves `base` as it is.
pub fn policy(
    requested: Option<&pb::SubscriptionPolicy>,
    mut base: SubscriptionPolicy,
    limits: &Limits,
) -> BrokerResult<SubscriptionPolicy> {
    let Some(requested) = requested else {
        return Ok(base);
    };
    let ms = |field: &str, value: u32| delay(field, value).map(millis);
    if let Some(value) = requested.ack_deadline_ms {
        if value == 0 {
            return Err(BrokerError::invalid(
                "policy.ack_deadline_ms",
                "must be at least 1 ms",
            ));
        }
        base.ack_deadline_ms = ms("policy.ack_deadline_ms", value)?;
    }
    if let Some(value) = requested.backoff_min_ms {
        base.backoff_min_ms = ms("policy.backoff_min_ms", value)?;
    }
    if let Some(value) = requested.backoff_max_ms {
        base.backoff_max_ms = ms("policy.backoff_max_ms", value)?;
    }
    if base.backoff_min_ms > base.backoff_max_ms {
        return Err(BrokerError::invalid(
            "policy.backoff_min_ms",
            format!(
                "must not exceed backoff_max_ms ({} ms > {} ms)",
                base.backoff_min_ms, base.backoff_max_ms
            ),
        ));
    }
    if let Some(value) = requested.max_deliveries {
        base.max_deliveries = u64::from(value);
    }
    if let Some(stream) = &requested.dead_letter_stream {
        base.dead_letter_stream = match stream.as_str() {
            "" => None,
            stream => Some(name("policy.dead_letter_stream", stream, limits)?),
        };
    }
    if let Some(value) = requested.max_in_flight {
        base.max_in_flight = u64::from(value);
    }
    if let Some(paused) = requested.paused {
        base.paused = paused;
    }
    if let Some(ordered) = requested.ordered {
        base.ordered = ordered;
    }
    if let Some(dead_letter_expired) = requested.dead_letter_expired {
        base.dead_letter_expired = dead_letter_expired;
    }
    if let Some(filter) = &requested.filter {
        base.filter = match filter.trim() {
            "" => None,
            _ => {
                Filter::parse(filter).map_err(|err| BrokerError::invalid("policy.filter", err))?;
                Some(filter.clone())
            }
        };
    }
    Ok(base)
}

fn clamp(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl From<SubscriptionPolicy> for pb::SubscriptionPolicy {
    fn from(policy: SubscriptionPolicy) -> Self {
        Self {
            ack_deadline_ms: Some(clamp(policy.ack_deadline_ms)),
            backoff_min_ms: Some(clamp(policy.backoff_min_ms)),
            backoff_max_ms: Some(clamp(policy.backoff_max_ms)),
            max_deliveries: Some(clamp(policy.max_deliveries)),
            dead_letter_stream: Some(policy.dead_letter_stream.unwrap_or_default()),
            max_in_flight: Some(clamp(policy.max_in_flight)),
            paused: Some(policy.paused),
            filter: Some(policy.filter.unwrap_or_default()),
            ordered: Some(policy.ordered),
            dead_letter_expired: Some(policy.dead_letter_expired),
        }
    }
}

impl From<Subscription> for pb::Subscription {
    fn from(subscription: Subscription) -> Self {
        Self {
            stream: subscription.stream,
            group: subscription.group,
            policy: Some(subscription.policy.into()),
        }
    }
}
