//! Fetch: one batch per call, for consumers that cannot hold a stream open.
//!
//! It reads through the same functions as Subscribe ([`crate::reading`]), so a fetched message is
//! exactly a subscribed one: pending until acked, same delivery counts, deleted entries skipped.
//! Waiting for new entries uses the same wake-ups as an idle subscription: a waiting Fetch holds
//! no Redis connection, and everything it holds lives in the call's own future, so a client that
//! cancels mid-wait leaves nothing behind (its wake-up registration is dropped with the future).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::BrokerResult;
use crate::model::{Delivery, EntryId, StartId};
use crate::reading::{self, GroupMembership};
use crate::redelivery::Redelivery;
use crate::store::{GroupCursor, Store};

/// How a fetch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchMode {
    /// XREAD after a position per stream (same order as the streams).
    Plain(Vec<StartId>),
    /// XREADGROUP as a group member, with a cursor per stream.
    Group {
        /// Who reads.
        membership: GroupMembership,
        /// `New` (`>`) or this consumer's pending entries after an id, per stream.
        cursors: Vec<GroupCursor>,
    },
}

/// A validated Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    /// Streams to read, no duplicates.
    pub streams: Vec<String>,
    /// Plain or group.
    pub mode: FetchMode,
    /// Most messages per stream.
    pub count: usize,
    /// How long an empty read may wait for new entries (already capped).
    pub wait: Duration,
}

/// Where a stream's reading continues after a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After this id (plain mode, or a pending replay in progress).
    After(EntryId),
    /// `>`: new messages (group mode).
    New,
}

/// What a fetch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The batch; may be empty.
    pub deliveries: Vec<Delivery>,
    /// Per stream, in request order: where the next fetch continues.
    pub next: Vec<(String, Resume)>,
}

/// Runs one fetch. `stopping` ends a wait early (the server is shutting down): the call then
/// returns what it has, an empty batch, rather than holding the drain up.
pub async fn fetch<S: Store>(
    store: &S,
    redelivery: &Redelivery<S>,
    spec: FetchSpec,
    stopping: &CancellationToken,
) -> BrokerResult<Fetched> {
    let deadline = Instant::now() + spec.wait;
    let mut reader = FetchReader::start(store, &spec).await?;
    let mut watch = (!spec.wait.is_zero() && reader.can_wait())
        .then(|| store.watch(&spec.streams, reader.group()));
    loop {
        // Before the read, so that an entry landing during it still wakes the wait below.
        if let Some(watch) = watch.as_mut() {
            watch.mark_seen();
        }
        let deliveries = reader.read(store, redelivery, spec.count).await?;
        if !deliveries.is_empty() {
            // There may be more: let another waiting member of the group read too.
            if let Some(watch) = &watch {
                watch.pass_on();
            }
            return Ok(reader.finish(deliveries));
        }
        let Some(watch) = watch.as_mut() else {
            return Ok(reader.finish(deliveries));
        };
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(reader.finish(deliveries)),
            _ = stopping.cancelled() => return Ok(reader.finish(deliveries)),
        }
    }
}

/// Cursors of one fetch, advanced by its reads.
enum FetchReader {
    Plain(Vec<(String, EntryId)>),
    Group {
        membership: GroupMembership,
        cursors: Vec<(String, GroupCursor)>,
    },
}

impl FetchReader {
    async fn start<S: Store>(store: &S, spec: &FetchSpec) -> BrokerResult<Self> {
        Ok(match &spec.mode {
            FetchMode::Plain(starts) => {
                Self::Plain(reading::resolve_starts(store, &spec.streams, starts).await?)
            }
            FetchMode::Group {
                membership,
                cursors,
            } => {
                reading::prepare_group(store, &spec.streams, membership).await?;
                Self::Group {
                    membership: membership.clone(),
                    cursors: spec
                        .streams
                        .iter()
                        .cloned()
                        .zip(cursors.iter().copied())
                        .collect(),
                }
            }
        })
    }

    /// The group this fetch reads as, if any: group members are woken one at a time.
    fn group(&self) -> Option<&str> {
        match self {
            Self::Plain(_) => None,
            Self::Group { membership, .. } => Some(&membership.group),
        }
    }

    /// Waiting only makes sense where new entries can show up: not in pending replays.
    fn can_wait(&self) -> bool {
        match self {
            Self::Plain(_) => true,
            Self::Group { cursors, .. } => cursors.iter().any(|(_, c)| *c == GroupCursor::New),
        }
    }

    /// The next batch. In group mode, reading new messages (`>`) first takes the group's
    /// messages due for redelivery, exactly as a subscription does.
    async fn read<S: Store>(
        &mut self,
        store: &S,
        redelivery: &Redelivery<S>,
        count: usize,
    ) -> BrokerResult<Vec<Delivery>> {
        match self {
            Self::Plain(cursors) => reading::read_tail(store, cursors, count).await,
            Self::Group {
                membership,
                cursors,
            } => {
                if !membership.no_ack {
                    let reading_new: Vec<String> = cursors
                        .iter()
                        .filter(|(_, c)| *c == GroupCursor::New)
                        .map(|(s, _)| s.clone())
                        .collect();
                    let due = redelivery
                        .sweep_due(membership, &reading_new, count)
                        .await?;
                    if !due.is_empty() {
                        return Ok(due);
                    }
                }
                let batch = reading::read_group(store, membership, cursors, count).await?;
                // A pending replay continues after its last id, and is over once a read returns
                // nothing for that stream.
                for (stream, cursor) in cursors.iter_mut() {
                    if let GroupCursor::PendingAfter(_) = cursor {
                        *cursor = match batch.last_ids.get(stream) {
                            Some(last) => GroupCursor::PendingAfter(*last),
                            None => GroupCursor::New,
                        };
                    }
                }
                Ok(batch.deliveries)
            }
        }
    }

    fn finish(self, deliveries: Vec<Delivery>) -> Fetched {
        let next = match self {
            Self::Plain(cursors) => cursors
                .into_iter()
                .map(|(stream, after)| (stream, Resume::After(after)))
                .collect(),
            Self::Group { cursors, .. } => cursors
                .into_iter()
                .map(|(stream, cursor)| {
                    let resume = match cursor {
                        GroupCursor::New => Resume::New,
                        GroupCursor::PendingAfter(id) => Resume::After(id),
                    };
                    (stream, resume)
                })
                .collect(),
        };
        Fetched { deliveries, next }
    }
}
