//! A Pub/Sub subscription's settings as the delivery policy every member applies, and the
//! settings streamgate does not offer, refused by name.
//!
//! | Pub/Sub | streamgate policy |
//! |---|---|
//! | `ack_deadline_seconds` (10–600, default 10) | `ack_deadline_ms` |
//! | `retry_policy` min/max backoff (default 10 s / 600 s; none: redeliver at once) | backoff |
//! | `dead_letter_policy` topic, `max_delivery_attempts` (5–100, default 5) | dead-letter stream, `max_deliveries` |
//! | `filter` (attributes) | `filter`, rewritten to streamgate's grammar (attributes are fields) |
//! | `enable_exactly_once_delivery` | acks held to the consumer that holds the message |
//! | `enable_message_ordering` | `ordered` (per ordering key, one message outstanding) |

use std::time::Duration;

use super::names::{Kind, Name};
use super::pb;
use super::retention::{DEFAULT_SUBSCRIPTION_RETENTION, checked_retention};
use crate::error::{BrokerError, BrokerResult};
use crate::model::{Filter, SubscriptionPolicy};

/// Pub/Sub's bounds and defaults.
const ACK_DEADLINE_SECONDS: std::ops::RangeInclusive<i32> = 10..=600;
const DEFAULT_ACK_DEADLINE_SECONDS: i32 = 10;
const DELIVERY_ATTEMPTS: std::ops::RangeInclusive<i32> = 5..=100;
const DEFAULT_DELIVERY_ATTEMPTS: i32 = 5;
const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

fn unimplemented(field: &str, why: &str) -> BrokerError {
    BrokerError::Unimplemented(format!("{field} is not supported by streamgate: {why}"))
}

/// Refuses what a topic asks that streamgate does not offer.
pub(super) fn refuse_unsupported_topic(topic: &pb::Topic) -> BrokerResult<()> {
    let why = "streamgate keeps messages in Redis, without schemas, ingestion or transforms";
    if topic.message_storage_policy.is_some() {
        return Err(unimplemented("message_storage_policy", why));
    }
    if !topic.kms_key_name.is_empty() {
        return Err(unimplemented("kms_key_name", why));
    }
    if topic.schema_settings.is_some() {
        return Err(unimplemented("schema_settings", why));
    }
    if topic.ingestion_data_source_settings.is_some() {
        return Err(unimplemented("ingestion_data_source_settings", why));
    }
    if !topic.message_transforms.is_empty() {
        return Err(unimplemented("message_transforms", why));
    }
    Ok(())
}

/// Refuses what a subscription asks that streamgate does not offer.
pub(super) fn refuse_unsupported_subscription(subscription: &pb::Subscription) -> BrokerResult<()> {
    let export = "streamgate delivers by pull (Pull and StreamingPull) only";
    if subscription.push_config.is_some() {
        return Err(unimplemented("push_config", export));
    }
    if subscription.bigquery_config.is_some() {
        return Err(unimplemented("bigquery_config", export));
    }
    if subscription.cloud_storage_config.is_some() {
        return Err(unimplemented("cloud_storage_config", export));
    }
    if subscription.bigtable_config.is_some() {
        return Err(unimplemented("bigtable_config", export));
    }
    if !subscription.message_transforms.is_empty() {
        return Err(unimplemented(
            "message_transforms",
            "no transforms run in the broker",
        ));
    }
    if subscription
        .expiration_policy
        .as_ref()
        .and_then(|p| p.ttl)
        .is_some_and(|ttl| ttl.seconds > 0 || ttl.nanos > 0)
    {
        return Err(unimplemented(
            "expiration_policy.ttl",
            "subscriptions never expire; leave ttl unset",
        ));
    }
    if subscription.detached {
        return Err(BrokerError::invalid("detached", "is output only"));
    }
    Ok(())
}

/// The paths of an update's `update_mask`; INVALID_ARGUMENT when it names none (Pub/Sub's
/// updates change only what the mask names).
pub(super) fn mask_paths(mask: Option<prost_types::FieldMask>) -> BrokerResult<Vec<String>> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(BrokerError::invalid(
            "update_mask",
            "must name the fields to update",
        ));
    }
    Ok(paths)
}

fn duration(field: &str, value: &prost_types::Duration) -> BrokerResult<Duration> {
    if value.seconds < 0 || value.nanos < 0 {
        return Err(BrokerError::invalid(field, "must not be negative"));
    }
    Ok(Duration::new(value.seconds as u64, value.nanos as u32))
}

/// The subscription with Pub/Sub's defaults filled in, checked: what is stored and returned.
pub(super) fn normalized(mut subscription: pb::Subscription) -> BrokerResult<pb::Subscription> {
    if subscription.ack_deadline_seconds == 0 {
        subscription.ack_deadline_seconds = DEFAULT_ACK_DEADLINE_SECONDS;
    }
    if !ACK_DEADLINE_SECONDS.contains(&subscription.ack_deadline_seconds) {
        return Err(BrokerError::invalid(
            "ack_deadline_seconds",
            format!(
                "is {}; it must be between 10 and 600 seconds",
                subscription.ack_deadline_seconds
            ),
        ));
    }
    if let Some(dead_letter) = &mut subscription.dead_letter_policy {
        if dead_letter.max_delivery_attempts == 0 {
            dead_letter.max_delivery_attempts = DEFAULT_DELIVERY_ATTEMPTS;
        }
        if !DELIVERY_ATTEMPTS.contains(&dead_letter.max_delivery_attempts) {
            return Err(BrokerError::invalid(
                "dead_letter_policy.max_delivery_attempts",
                format!(
                    "is {}; it must be between 5 and 100",
                    dead_letter.max_delivery_attempts
                ),
            ));
        }
        Name::parse(
            Kind::Topic,
            "dead_letter_policy.dead_letter_topic",
            &dead_letter.dead_letter_topic,
        )?;
    }
    if let Some(retry) = &mut subscription.retry_policy {
        let min = retry
            .minimum_backoff
            .as_ref()
            .map(|d| duration("retry_policy.minimum_backoff", d))
            .transpose()?
            .unwrap_or(DEFAULT_MIN_BACKOFF);
        let max = retry
            .maximum_backoff
            .as_ref()
            .map(|d| duration("retry_policy.maximum_backoff", d))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_BACKOFF);
        if max > MAX_BACKOFF || min > max {
            return Err(BrokerError::invalid(
                "retry_policy",
                "minimum_backoff must not exceed maximum_backoff, which is at most 600 s",
            ));
        }
        retry.minimum_backoff = Some(proto_duration(min));
        retry.maximum_backoff = Some(proto_duration(max));
    }
    if !subscription.filter.is_empty() {
        streamgate_filter(&subscription.filter)?;
    }
    let retention = checked_retention(
        "message_retention_duration",
        subscription.message_retention_duration.as_ref(),
    )?;
    subscription.message_retention_duration = Some(proto_duration(
        retention.unwrap_or(DEFAULT_SUBSCRIPTION_RETENTION),
    ));
    Ok(subscription)
}

fn proto_duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: value.as_secs() as i64,
        nanos: value.subsec_nanos() as i32,
    }
}

/// The delivery policy of a (normalized) subscription, over the server's `defaults` for what
/// Pub/Sub does not set (the in-flight limit).
pub(super) fn policy(
    subscription: &pb::Subscription,
    defaults: SubscriptionPolicy,
) -> BrokerResult<SubscriptionPolicy> {
    let ms = |d: &Option<prost_types::Duration>| {
        d.as_ref()
            .map(|d| d.seconds as u64 * 1000 + d.nanos as u64 / 1_000_000)
            .unwrap_or(0)
    };
    let (backoff_min_ms, backoff_max_ms) = match &subscription.retry_policy {
        Some(retry) => (ms(&retry.minimum_backoff), ms(&retry.maximum_backoff)),
        // Pub/Sub without a retry policy redelivers a nacked message at once.
        None => (0, 0),
    };
    let (max_deliveries, dead_letter_stream) = match &subscription.dead_letter_policy {
        Some(dead_letter) => (
            dead_letter.max_delivery_attempts as u64,
            Some(
                Name::parse(
                    Kind::Topic,
                    "dead_letter_policy.dead_letter_topic",
                    &dead_letter.dead_letter_topic,
                )?
                .stream(),
            ),
        ),
        None => (0, None),
    };
    let filter = match subscription.filter.as_str() {
        "" => None,
        text => Some(streamgate_filter(text)?),
    };
    Ok(SubscriptionPolicy {
        ack_deadline_ms: subscription.ack_deadline_seconds as u64 * 1000,
        backoff_min_ms,
        backoff_max_ms,
        max_deliveries,
        dead_letter_stream,
        filter,
        ordered: subscription.enable_message_ordering,
        ..defaults
    })
}

/// Pub/Sub's filter syntax in streamgate's: `attributes.KEY` is the field `KEY`, and
/// `attributes:KEY` is `has(KEY)`; the rest (`=`, `!=`, `hasPrefix`, `NOT`, `-`, `AND`, `OR`,
/// parentheses, strings) is the same language. INVALID_ARGUMENT with the position otherwise.
pub(super) fn streamgate_filter(text: &str) -> BrokerResult<String> {
    const ATTRIBUTES: &str = "attributes";
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let is_name = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '-');
    while at < chars.len() {
        let c = chars[at];
        if c == '"' {
            // A string, copied as it is (with its escapes).
            out.push(c);
            at += 1;
            while at < chars.len() {
                out.push(chars[at]);
                if chars[at] == '\\' && at + 1 < chars.len() {
                    out.push(chars[at + 1]);
                    at += 2;
                    continue;
                }
                at += 1;
                if chars[at - 1] == '"' {
                    break;
                }
            }
            continue;
        }
        let starts_word = at == 0 || !is_name(chars[at - 1]);
        let rest: String = chars[at..].iter().take(ATTRIBUTES.len() + 1).collect();
        if starts_word && rest == format!("{ATTRIBUTES}.") {
            at += ATTRIBUTES.len() + 1;
            continue;
        }
        if starts_word && rest == format!("{ATTRIBUTES}:") {
            at += ATTRIBUTES.len() + 1;
            let key: String = chars[at..].iter().take_while(|c| is_name(**c)).collect();
            at += key.chars().count();
            out.push_str(&format!("has({key})"));
            continue;
        }
        out.push(c);
        at += 1;
    }
    Filter::parse(&out)
        .map_err(|err| BrokerError::invalid("filter", format!("{err} in `{text}`")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_filters_become_streamgate_filters() {
        assert_eq!(
            streamgate_filter(r#"attributes.kind = "order" AND NOT attributes:test"#).unwrap(),
            r#"kind = "order" AND NOT has(test)"#
        );
        assert_eq!(
            streamgate_filter(r#"hasPrefix(attributes.sku, "attributes.x")"#).unwrap(),
            r#"hasPrefix(sku, "attributes.x")"#
        );
        assert!(streamgate_filter("attributes.kind =").is_err());
    }

    #[test]
    fn settings_are_checked_against_pubsub_bounds() {
        let bad = pb::Subscription {
            ack_deadline_seconds: 5,
            ..Default::default()
        };
        let err = normalized(bad).unwrap_err().to_string();
        assert!(err.contains("ack_deadline_seconds"), "{err}");
        let defaulted = normalized(pb::Subscription {
            dead_letter_policy: Some(pb::DeadLetterPolicy {
                dead_letter_topic: "projects/p/topics/dead".into(),
                max_delivery_attempts: 0,
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(defaulted.ack_deadline_seconds, 10);
        let policy = policy(&defaulted, SubscriptionPolicy::default()).unwrap();
        assert_eq!(policy.max_deliveries, 5);
        assert_eq!(policy.dead_letter_stream.as_deref(), Some("p/dead"));
        assert_eq!(policy.ack_deadline_ms, 10_000);
    }
}
