//! The reads under every member's batches: preparing a group, resolving start positions, and
//! turning XREAD / XREADGROUP replies into deliveries (real delivery counts, deleted entries
//! skipped and logged).

use std::collections::HashMap;

use super::membership::GroupMembership;
use crate::error::BrokerResult;
use crate::model::{Delivery, Entry, EntryId, IdRange, PendingQuery, RangeBound, StartId};
use crate::store::{GroupCursor, Store, StoreError};

/// Creates the group on each stream where asked (an existing group is fine), or checks that it
/// exists, so that a missing group fails a call before anything is delivered.
pub async fn prepare_group<S: Store>(
    store: &S,
    streams: &[String],
    membership: &GroupMembership,
) -> BrokerResult<()> {
    let group = &membership.group;
    for stream in streams {
        match membership.create_from {
            Some(start) => match store.create_group(stream, group, start, true, None).await {
                Ok(()) | Err(StoreError::GroupExists { .. }) => {}
                Err(err) => return Err(err.into()),
            },
            None => {
                store.pending_summary(stream, group).await?;
            }
        }
    }
    Ok(())
}

/// Concrete cursors for tail reads. `$` is pinned to the stream's current top now, so that
/// nothing written between two reads is skipped (XREAD with `$` would skip it). The top is asked
/// even for an explicit start: a key that is not a stream then fails the call up front.
pub async fn resolve_starts<S: Store>(
    store: &S,
    streams: &[String],
    starts: &[StartId],
) -> BrokerResult<Vec<(String, EntryId)>> {
    let mut cursors = Vec::with_capacity(streams.len());
    for (stream, start) in streams.iter().zip(starts) {
        let top = store.last_entry_id(stream).await?;
        let after = match start {
            StartId::After(id) => *id,
            StartId::Latest => top.unwrap_or_default(),
        };
        cursors.push((stream.clone(), after));
    }
    Ok(cursors)
}

/// What a read returned, and whether it came back short.
#[derive(Debug, Default)]
pub struct Read {
    /// Messages to hand over.
    pub deliveries: Vec<Delivery>,
    /// No stream gave as many entries as asked: there was nothing more behind them when it ran.
    pub short: bool,
}

/// One XREAD after each cursor; advances the cursors past what it returns.
pub async fn read_tail<S: Store>(
    store: &S,
    cursors: &mut [(String, EntryId)],
    count: usize,
) -> BrokerResult<Read> {
    let batches = store.read(cursors, count).await?;
    let short = batches.iter().all(|(_, entries)| entries.len() < count);
    let mut deliveries = Vec::new();
    for (stream, entries) in batches {
        if let (Some(last), Some(cursor)) = (
            entries.last(),
            cursors.iter_mut().find(|(s, _)| *s == stream),
        ) {
            cursor.1 = last.id;
        }
        deliveries.extend(entries.into_iter().map(|entry| Delivery {
            stream: stream.clone(),
            entry,
            delivery_count: 0,
            read_at: std::time::Instant::now(),
        }));
    }
    Ok(Read { deliveries, short })
}

/// What one group read returned.
#[derive(Debug, Default)]
pub struct GroupBatch {
    /// Messages to hand over, deleted entries left out.
    pub deliveries: Vec<Delivery>,
    /// For each stream that returned anything (deleted entries included), the last id: where a
    /// pending replay continues.
    pub last_ids: HashMap<String, EntryId>,
    /// No stream gave as many entries as asked (deleted ones included).
    pub short: bool,
}

/// One XREADGROUP with a cursor per stream: `New` reads entries never delivered to the group,
/// `PendingAfter` re-reads this consumer's own pending entries.
///
/// Re-read entries carry their real delivery count (Redis bumps it on a history read; XPENDING
/// says by how much). Pending entries deleted or trimmed since delivery come back from Redis as
/// `[id, nil]`: they are skipped and logged, never delivered as empty messages.
pub async fn read_group<S: Store>(
    store: &S,
    membership: &GroupMembership,
    cursors: &[(String, GroupCursor)],
    count: usize,
) -> BrokerResult<GroupBatch> {
    let replies = store
        .read_group(
            &membership.group,
            &membership.consumer,
            cursors,
            count,
            membership.no_ack,
        )
        .await?;
    let mut batch = GroupBatch {
        short: replies.iter().all(|(_, entries)| entries.len() < count),
        ..GroupBatch::default()
    };
    for (stream, entries) in replies {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            continue;
        };
        batch.last_ids.insert(stream.clone(), last.id);
        let is_replay = cursors
            .iter()
            .any(|(s, c)| *s == stream && matches!(c, GroupCursor::PendingAfter(_)));
        let counts = if is_replay {
            delivery_counts(store, &stream, membership, first.id, last.id, entries.len()).await?
        } else {
            HashMap::new()
        };
        let first_delivery = if membership.no_ack { 0 } else { 1 };
        let mut deleted = 0usize;
        for entry in entries {
            match entry.fields {
                Some(fields) => batch.deliveries.push(Delivery {
                    stream: stream.clone(),
                    delivery_count: counts.get(&entry.id).copied().unwrap_or(first_delivery),
                    read_at: std::time::Instant::now(),
                    entry: Entry {
                        id: entry.id,
                        fields,
                    },
                }),
                None => deleted += 1,
            }
        }
        if deleted > 0 {
            tracing::warn!(
                stream = %stream,
                group = %membership.group,
                consumer = %membership.consumer,
                deleted,
                "pending entries were deleted or trimmed before being acknowledged; they cannot be delivered"
            );
        }
    }
    Ok(batch)
}

/// How many times each of this consumer's pending entries between `first` and `last` has been
/// delivered, from XPENDING: reads that are not first deliveries bump the count.
async fn delivery_counts<S: Store>(
    store: &S,
    stream: &str,
    membership: &GroupMembership,
    first: EntryId,
    last: EntryId,
    count: usize,
) -> BrokerResult<HashMap<EntryId, u64>> {
    let query = PendingQuery {
        range: IdRange {
            min: RangeBound::Inclusive(first),
            max: RangeBound::Inclusive(last),
        },
        count: count as u64,
        consumer: Some(membership.consumer.clone()),
        min_idle_ms: 0,
    };
    Ok(store
        .pending(stream, &membership.group, &query)
        .await?
        .into_iter()
        .map(|p| (p.id, p.delivery_count))
        .collect())
}
