//! Seek: move a consumer group to an id or a point in time on every stream it reads (every
//! partition of a topic), optionally acknowledging what is pending before that point, as
//! Pub/Sub's seek does. Redis ids carry milliseconds, so "everything since 10:42" is an id.

use super::DeliveryCore;
use crate::error::BrokerResult;
use crate::model::{EntryId, IdRange, PendingQuery, RangeBound, StartId};
use crate::store::Store;

/// Where a seek moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTarget {
    /// Deliver what comes after this id.
    After(EntryId),
    /// Deliver what was added at or after this time (milliseconds since the Unix epoch).
    Since(u64),
}

impl SeekTarget {
    /// The group's last-delivered id after the seek.
    pub fn position(self) -> EntryId {
        match self {
            Self::After(id) => id,
            Self::Since(0) => EntryId::ZERO,
            Self::Since(ms) => EntryId::new(ms - 1, u64::MAX),
        }
    }
}

/// What a seek did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeked {
    /// The group's new last-delivered id on every stream.
    pub position: EntryId,
    /// The streams moved (a topic's partitions).
    pub streams: Vec<String>,
    /// Pending messages at or before the position that were acknowledged.
    pub cleared: u64,
}

/// Pending entries acknowledged per round trip while clearing.
const CLEAR_PAGE: u64 = 1000;

impl<S: Store> DeliveryCore<S> {
    /// Moves `group` on `stream` (or every partition of the topic `stream`) to `target`; with
    /// `clear_pending`, acknowledges every pending message at or before it (whoever holds it).
    /// Messages after it that were pending stay pending and are redelivered as usual.
    pub async fn seek(
        &self,
        stream: &str,
        group: &str,
        target: SeekTarget,
        clear_pending: bool,
    ) -> BrokerResult<Seeked> {
        let position = target.position();
        let streams: Vec<String> = self
            .topics()
            .expand(&[stream.to_owned()])
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let mut cleared = 0;
        for stream in &streams {
            let store = self.store();
            store
                .set_group_id(stream, group, StartId::After(position), None)
                .await?;
            if clear_pending {
                cleared += self.clear_before(stream, group, position).await?;
            }
            // A member idle on this instance reads from the new position at once.
            store
                .watch(std::slice::from_ref(stream), Some(group))
                .pass_on();
        }
        tracing::info!(stream, group, %position, cleared, "group moved by a seek");
        Ok(Seeked {
            position,
            streams,
            cleared,
        })
    }
}

impl<S: Store> DeliveryCore<S> {
    /// Acknowledges every pending message of `group` on `stream` at or before `position`,
    /// page by page; returns how many.
    async fn clear_before(
        &self,
        stream: &str,
        group: &str,
        position: EntryId,
    ) -> BrokerResult<u64> {
        let query = PendingQuery {
            range: IdRange {
                min: RangeBound::Unbounded,
                max: RangeBound::Inclusive(position),
            },
            count: CLEAR_PAGE,
            consumer: None,
            min_idle_ms: 0,
        };
        let mut cleared = 0;
        loop {
            let page = self.store().pending(stream, group, &query).await?;
            let ids: Vec<EntryId> = page.iter().map(|p| p.id).collect();
            if ids.is_empty() {
                return Ok(cleared);
            }
            cleared += self.ack(stream, group, &ids).await?;
            if (ids.len() as u64) < CLEAR_PAGE {
                return Ok(cleared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_in_time_is_the_id_just_before_its_first_possible_entry() {
        assert_eq!(SeekTarget::Since(0).position(), EntryId::ZERO);
        let position = SeekTarget::Since(1_700_000_000_000).position();
        assert!(position < EntryId::new(1_700_000_000_000, 0));
        assert!(position > EntryId::new(1_699_999_999_999, u64::MAX - 1));
        assert_eq!(
            SeekTarget::After(EntryId::new(5, 1)).position(),
            EntryId::new(5, 1)
        );
    }
}
