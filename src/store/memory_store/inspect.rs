//! [`Inspect`] in memory: the twins of XINFO, XRANGE, XDEL, XTRIM, XGROUP, XPENDING, XCLAIM and
//! XAUTOCLAIM, down to the errors a missing stream or group gives.

use std::collections::BTreeMap;

use super::state::{Group, bounds, is_empty_range, no_group, no_stream, redis_glob};

use super::{MemoryStore, pending};
use crate::model::{
    AutoClaimOptions, AutoClaimed, ClaimOptions, Claimed, ConsumerInfo, Entry, EntryId, Field,
    GroupInfo, IdRange, PendingEntry, PendingQuery, PendingSummary, StartId, StreamInfo,
    TrimPolicy,
};
use crate::store::Inspect;
use crate::store::{StoreError, StoreResult, StreamPage};

impl Inspect for MemoryStore {
    async fn list_streams(
        &self,
        pattern: &str,
        _cursor: u64,
        _page_size: u32,
    ) -> StoreResult<StreamPage> {
        let matcher = match pattern {
            "" => None,
            p => Some(
                glob::Pattern::new(&redis_glob(p))
                    .map_err(|err| StoreError::Rejected(format!("invalid pattern: {err}")))?,
            ),
        };
        let mut names: Vec<String> = self
            .streams()
            .keys()
            .filter(|name| matcher.as_ref().is_none_or(|m| m.matches(name)))
            .cloned()
            .collect();
        names.sort();
        // Everything in one page: the listing is complete.
        Ok(StreamPage {
            streams: names,
            next_cursor: 0,
        })
    }

    async fn stream_info(&self, stream: &str) -> StoreResult<StreamInfo> {
        let streams = self.streams();
        let s = streams.get(stream).ok_or_else(|| no_stream(stream))?;
        let entry = |(id, fields): (&EntryId, &Vec<Field>)| Entry {
            id: *id,
            fields: fields.clone(),
        };
        Ok(StreamInfo {
            length: s.entries.len() as u64,
            radix_tree_keys: u64::from(!s.entries.is_empty()),
            radix_tree_nodes: 1 + u64::from(!s.entries.is_empty()),
            groups: s.groups.len() as u64,
            last_generated_id: s.last_id.to_string(),
            max_deleted_entry_id: s.max_deleted_id.to_string(),
            entries_added: s.entries_added,
            recorded_first_entry_id: s.first_id().to_string(),
            first_entry: s.entries.first_key_value().map(entry),
            last_entry: s.entries.last_key_value().map(entry),
        })
    }

    async fn range(
        &self,
        stream: &str,
        range: IdRange,
        count: usize,
        reverse: bool,
    ) -> StoreResult<Vec<Entry>> {
        let streams = self.streams();
        let Some(s) = streams.get(stream) else {
            return Ok(Vec::new());
        };
        let range = bounds(&range);
        if is_empty_range(&range) {
            return Ok(Vec::new());
        }
        let to_entry = |(id, fields): (&EntryId, &Vec<Field>)| Entry {
            id: *id,
            fields: fields.clone(),
        };
        let selected = s.entries.range(range);
        Ok(if reverse {
            selected.rev().take(count).map(to_entry).collect()
        } else {
            selected.take(count).map(to_entry).collect()
        })
    }

    async fn delete_entries(&self, stream: &str, ids: &[EntryId]) -> StoreResult<u64> {
        let mut streams = self.streams();
        let Some(s) = streams.get_mut(stream) else {
            return Ok(0);
        };
        let mut deleted = 0;
        for id in ids {
            if s.entries.remove(id).is_some() {
                deleted += 1;
                s.max_deleted_id = s.max_deleted_id.max(*id);
            }
        }
        Ok(deleted)
    }

    async fn trim(&self, stream: &str, policy: TrimPolicy) -> StoreResult<u64> {
        Ok(self
            .streams()
            .get_mut(stream)
            .map_or(0, |s| s.trim(&policy)))
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        self.streams()
            .remove(stream)
            .map(drop)
            .ok_or_else(|| no_stream(stream))
    }

    async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: StartId,
        create_stream: bool,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        let mut streams = self.streams();
        if !create_stream && !streams.contains_key(stream) {
            return Err(no_stream(stream));
        }
        let s = streams.entry(stream.to_owned()).or_default();
        if s.groups.contains_key(group) {
            return Err(StoreError::GroupExists {
                stream: stream.to_owned(),
                group: group.to_owned(),
            });
        }
        let (last, read) = match start {
            StartId::Latest => (
                s.last_id,
                Some(i64::try_from(s.entries_added).unwrap_or(i64::MAX)),
            ),
            StartId::After(id) => (id, None),
        };
        s.groups
            .insert(group.to_owned(), Group::new(last, entries_read.or(read)));
        Ok(())
    }

    async fn destroy_group(&self, stream: &str, group: &str) -> StoreResult<()> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        s.groups
            .remove(group)
            .map(drop)
            .ok_or_else(|| no_group(stream, group))
    }

    async fn set_group_id(
        &self,
        stream: &str,
        group: &str,
        id: StartId,
        entries_read: Option<i64>,
    ) -> StoreResult<()> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let last = match id {
            StartId::Latest => s.last_id,
            StartId::After(id) => id,
        };
        let g = s.group(stream, group)?;
        g.last_delivered = last;
        g.entries_read = entries_read;
        Ok(())
    }

    async fn groups(&self, stream: &str) -> StoreResult<Vec<GroupInfo>> {
        let streams = self.streams();
        let s = streams.get(stream).ok_or_else(|| no_stream(stream))?;
        let added = i64::try_from(s.entries_added).unwrap_or(i64::MAX);
        Ok(s.groups
            .iter()
            .map(|(name, g)| {
                // Redis's streamReplyWithCGLag.
                let lag = if s.entries_added == 0 {
                    Some(0)
                } else {
                    match g.entries_read {
                        Some(read) if !s.has_tombstones_from(g.last_delivered) => {
                            Some(added - read)
                        }
                        _ => s.entries_read_at(g.last_delivered).map(|read| added - read),
                    }
                };
                GroupInfo {
                    name: name.clone(),
                    consumers: g.consumers.len() as u64,
                    pending: g.pending.len() as u64,
                    last_delivered_id: g.last_delivered.to_string(),
                    entries_read: g.entries_read,
                    lag,
                }
            })
            .collect())
    }

    async fn create_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> StoreResult<bool> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let g = s.group(stream, group)?;
        if g.consumers.contains_key(consumer) {
            return Ok(false);
        }
        g.touch(consumer, self.clock.now_ms());
        Ok(true)
    }

    async fn delete_consumer(&self, stream: &str, group: &str, consumer: &str) -> StoreResult<u64> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let g = s.group(stream, group)?;
        if g.consumers.remove(consumer).is_none() {
            return Ok(0);
        }
        let before = g.pending.len();
        g.pending.retain(|_, l| l.consumer != consumer);
        Ok((before - g.pending.len()) as u64)
    }

    async fn consumers(&self, stream: &str, group: &str) -> StoreResult<Vec<ConsumerInfo>> {
        let mut streams = self.streams();
        let s = streams.get_mut(stream).ok_or_else(|| no_stream(stream))?;
        let g = s.group(stream, group)?;
        let now = self.clock.now_ms();
        Ok(g.consumers
            .iter()
            .map(|(name, seen)| ConsumerInfo {
                name: name.clone(),
                pending: g.pending_of(name),
                idle_ms: now.saturating_sub(*seen),
            })
            .collect())
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> StoreResult<PendingSummary> {
        self.with_group(stream, group, |s, group| {
            let g = s.group(stream, group)?;
            let mut per_consumer: BTreeMap<&str, u64> = BTreeMap::new();
            for lease in g.pending.values() {
                *per_consumer.entry(&lease.consumer).or_default() += 1;
            }
            Ok(PendingSummary {
                count: g.pending.len() as u64,
                bounds: g
                    .pending
                    .keys()
                    .next()
                    .zip(g.pending.keys().next_back())
                    .map(|(a, b)| (*a, *b)),
                consumers: per_consumer
                    .into_iter()
                    .map(|(c, n)| (c.to_owned(), n))
                    .collect(),
            })
        })
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> StoreResult<Vec<PendingEntry>> {
        self.with_group(stream, group, |s, group| {
            let g = s.group(stream, group)?;
            let range = bounds(&query.range);
            if is_empty_range(&range) {
                return Ok(Vec::new());
            }
            let now = self.clock.now_ms();
            Ok(g.pending
                .range(range)
                .filter(|(_, l)| query.consumer.as_ref().is_none_or(|c| *c == l.consumer))
                .filter(|(_, l)| now.saturating_sub(l.delivered_at) >= query.min_idle_ms)
                .take(usize::try_from(query.count).unwrap_or(usize::MAX))
                .map(|(id, l)| PendingEntry {
                    id: *id,
                    consumer: l.consumer.clone(),
                    idle_ms: now.saturating_sub(l.delivered_at),
                    delivery_count: l.count,
                })
                .collect())
        })
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &ClaimOptions,
    ) -> StoreResult<Claimed> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::claim(s, stream, group, consumer, options, now)
        })
    }

    async fn auto_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &AutoClaimOptions,
    ) -> StoreResult<AutoClaimed> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::auto_claim(s, stream, group, consumer, options, now)
        })
    }
}
