//! What a Pub/Sub topic's stream keeps, as the real service decides it, written as the stream's
//! stored retention policy (which the core's retention applies, one atomic trim at a time).
//!
//! Pub/Sub keeps a message for a topic with `message_retention_duration` that long whatever its
//! acks; for each subscription it keeps an unacknowledged message `message_retention_duration`
//! (7 days by default) and an acknowledged one only with `retain_acked_messages`. One stream
//! serves every subscription of the topic, so an entry may go when no subscription and not the
//! topic still wants it:
//! - `acked` (delete what every group has acknowledged) unless the topic retains messages or a
//!   subscription retains acknowledged ones;
//! - `max_age` the longest of the topic's and the subscriptions' retention, without
//!   `keep_pending` (Pub/Sub drops an unacknowledged message past its retention).
//!
//! The policy is worked out again from the records whenever a topic or one of its subscriptions
//! is created, updated or deleted. Its `max_len` and dedupe window are the operator's (Admin's
//! SetRetention) and are kept.

use std::time::Duration;

use super::names::Name;
use super::{PubsubService, pb};
use crate::error::{BrokerError, BrokerResult};
use crate::model::RetentionPolicy;
use crate::store::Store;

/// How long a subscription keeps unacknowledged messages when it does not say (Pub/Sub's).
pub(super) const DEFAULT_SUBSCRIPTION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The retention Pub/Sub accepts for a topic or a subscription: 10 minutes to 31 days.
const RETENTION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(600)..=Duration::from_secs(31 * 24 * 3600);

/// `value` (the `field` of a topic or subscription) as a duration, INVALID_ARGUMENT outside
/// what Pub/Sub accepts.
pub(super) fn checked_retention(
    field: &str,
    value: Option<&prost_types::Duration>,
) -> BrokerResult<Option<Duration>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let retention = u64::try_from(value.seconds)
        .ok()
        .zip(u32::try_from(value.nanos).ok())
        .map(|(seconds, nanos)| Duration::new(seconds, nanos));
    match retention {
        Some(retention) if RETENTION_RANGE.contains(&retention) => Ok(Some(retention)),
        _ => Err(BrokerError::invalid(
            field,
            format!(
                "is {}s; it must be between 10 minutes and 31 days",
                value.seconds
            ),
        )),
    }
}

/// The limits Pub/Sub's settings put on the topic's stream, laid over `current` (whose
/// `max_len` and dedupe window stay): see the module docs.
pub(super) fn derived(
    topic: Option<&pb::Topic>,
    subscriptions: &[pb::Subscription],
    current: RetentionPolicy,
) -> RetentionPolicy {
    let as_ms = |d: &prost_types::Duration| {
        u64::try_from(d.seconds).unwrap_or(0) * 1000
            + u64::try_from(d.nanos).unwrap_or(0) / 1_000_000
    };
    let topic_ms = topic
        .and_then(|t| t.message_retention_duration.as_ref())
        .map(as_ms);
    let subscription_ms = subscriptions.iter().map(|s| {
        s.message_retention_duration
            .as_ref()
            .map_or(DEFAULT_SUBSCRIPTION_RETENTION.as_millis() as u64, as_ms)
    });
    let max_age_ms = topic_ms.into_iter().chain(subscription_ms).max();
    RetentionPolicy {
        acked: topic_ms.is_none() && !subscriptions.iter().any(|s| s.retain_acked_messages),
        max_age_ms,
        keep_pending: false,
        ..current
    }
}

impl<S: Store> PubsubService<S> {
    /// Works out again what `topic`'s stream keeps from its record and its subscriptions' and
    /// stores it (see the module docs).
    pub(super) async fn sync_retention(&self, topic: &Name) -> BrokerResult<()> {
        let record: Option<pb::Topic> = self.shared.records.get(topic).await?;
        let subscriptions: Vec<pb::Subscription> = self
            .subscriptions_of(topic)
            .await?
            .into_iter()
            .map(|(_, subscription)| subscription)
            .collect();
        let retention = self.shared.serving.core.retention();
        let stream = topic.stream();
        let current = retention.get(&stream).await?.unwrap_or_default();
        let policy = derived(record.as_ref(), &subscriptions, current.clone());
        if policy != current {
            retention.set(&stream, &policy).await?;
            tracing::info!(
                %topic,
                %stream,
                acked = policy.acked,
                max_age_ms = ?policy.max_age_ms,
                "Pub/Sub settings changed what the topic's stream keeps"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: n * 24 * 3600,
            nanos: 0,
        })
    }

    fn subscription(retain_acked_messages: bool, retention_days: i64) -> pb::Subscription {
        pb::Subscription {
            retain_acked_messages,
            message_retention_duration: days(retention_days),
            ..Default::default()
        }
    }

    const DAY_MS: u64 = 24 * 3600 * 1000;

    #[test]
    fn acknowledged_messages_go_unless_someone_retains_them() {
        let topic = pb::Topic::default();
        let work = derived(Some(&topic), &[subscription(false, 7)], Default::default());
        assert!(work.acked);
        assert_eq!(work.max_age_ms, Some(7 * DAY_MS));
        assert!(!work.keep_pending);

        let subs = [subscription(false, 1), subscription(true, 3)];
        let retained = derived(Some(&topic), &subs, Default::default());
        assert!(!retained.acked);
        assert_eq!(retained.max_age_ms, Some(3 * DAY_MS));

        let kept = pb::Topic {
            message_retention_duration: days(10),
            ..Default::default()
        };
        let by_topic = derived(Some(&kept), &[subscription(false, 1)], Default::default());
        assert!(!by_topic.acked);
        assert_eq!(by_topic.max_age_ms, Some(10 * DAY_MS));
    }

    #[test]
    fn a_subscription_without_retention_keeps_seven_days_and_the_operators_limits_stay() {
        let current = RetentionPolicy {
            max_len: Some(1_000),
            dedupe_window_ms: Some(60_000),
            max_age_ms: Some(DAY_MS),
            ..Default::default()
        };
        let policy = derived(None, &[pb::Subscription::default()], current);
        assert_eq!(policy.max_age_ms, Some(7 * DAY_MS));
        assert_eq!(policy.max_len, Some(1_000));
        assert_eq!(policy.dedupe_window_ms, Some(60_000));
        // No subscriptions and no topic retention: nothing but acknowledged entries go (and a
        // stream without groups keeps everything).
        let lone = derived(None, &[], Default::default());
        assert!(lone.acked);
        assert_eq!(lone.max_age_ms, None);
    }

    #[test]
    fn retention_outside_pubsubs_range_is_refused_by_name() {
        let minutes = |m: i64| prost_types::Duration {
            seconds: m * 60,
            nanos: 0,
        };
        assert!(checked_retention("x", Some(&minutes(10))).is_ok());
        for bad in [minutes(5), minutes(32 * 24 * 60), minutes(-1)] {
            let err = checked_retention("message_retention_duration", Some(&bad)).unwrap_err();
            assert!(
                err.to_string().contains("message_retention_duration"),
                "{err}"
            );
        }
        assert_eq!(checked_retention("x", None).unwrap(), None);
    }
}
