//! What the console draws: for every stream, its length and produce/deliver rates, and for each
//! of its groups the lag, pending count and deliver rate, sampled by the broker on a timer and
//! kept in memory for the last hour.
//!
//! Bounded by construction: a ring of `window / interval` points per series, at most
//! `max_streams` streams (the first ones a SCAN returns), and a stream or group that is gone at
//! a sampling round is forgotten in that round. Rates come from Redis's own counters
//! (`entries-added`, a group's `entries-read`), so they count what every broker instance did,
//! not just this one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{GroupInfo, now_ms};
use crate::store::Store;

/// How sampling runs.
#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// Time between two samples.
    pub interval: Duration,
    /// How far back the points go.
    pub window: Duration,
    /// Most streams sampled.
    pub max_streams: usize,
}

/// A stream at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPoint {
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// Entries in the stream.
    pub length: u64,
    /// Appended per second since the previous point.
    pub produced_per_second: f64,
    /// Delivered per second since the previous point, over all groups.
    pub delivered_per_second: f64,
}

/// A group at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPoint {
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// Not yet delivered; `None` when Redis cannot tell.
    pub lag: Option<i64>,
    /// Delivered, not acknowledged.
    pub pending: u64,
    /// Delivered per second since the previous point.
    pub delivered_per_second: f64,
}

/// A copy of one stream's points, oldest first.
#[derive(Debug, Clone, Default)]
pub struct StreamHistory {
    /// The stream's points.
    pub points: Vec<StreamPoint>,
    /// Each group's points, by group name.
    pub groups: Vec<(String, Vec<GroupPoint>)>,
}

/// Raw counters of the previous round, to turn into rates.
#[derive(Debug, Default)]
struct Series {
    points: VecDeque<StreamPoint>,
    groups: HashMap<String, VecDeque<GroupPoint>>,
    entries_added: u64,
    entries_read: HashMap<String, i64>,
    at_ms: u64,
}

/// The sampled history of every stream, shared by the sampler and the Admin service.
#[derive(Debug, Clone)]
pub struct History {
    config: HistoryConfig,
    series: Arc<Mutex<HashMap<String, Series>>>,
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, capacity: usize) {
    if ring.len() == capacity {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn per_second(now: u64, before: u64, elapsed_ms: u64) -> f64 {
    if elapsed_ms == 0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 * 1000.0 / elapsed_ms as f64
}

impl History {
    /// An empty history; [`run`](Self::run) fills it.
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            config,
            series: Arc::default(),
        }
    }

    /// The sampling interval.
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    fn capacity(&self) -> usize {
        let points = self.config.window.as_millis() / self.config.interval.as_millis().max(1);
        usize::try_from(points).unwrap_or(usize::MAX).max(2)
    }

    /// One stream's points, or `None` when it was not seen at the last sampling round.
    pub fn stream(&self, stream: &str) -> Option<StreamHistory> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let series = series.get(stream)?;
        let mut groups: Vec<_> = series
            .groups
            .iter()
            .map(|(name, points)| (name.clone(), points.iter().cloned().collect()))
            .collect();
        groups.sort_by(|a: &(String, Vec<GroupPoint>), b| a.0.cmp(&b.0));
        Some(StreamHistory {
            points: series.points.iter().cloned().collect(),
            groups,
        })
    }

    /// Streams currently sampled.
    pub fn stream_count(&self) -> usize {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Samples every `interval` until `stop`. A round that fails (Redis away) is skipped and
    /// logged once per outage; the points resume when the store answers again.
    pub async fn run<S: Store>(self, store: S, stop: CancellationToken) {
        let mut failing = false;
        loop {
            match self.sample_once(&store).await {
                Ok(()) if failing => {
                    tracing::info!("console sampling resumed");
                    failing = false;
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    tracing::warn!(error = %err, "console sampling skipped: the store does not answer");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// One sampling round over every stream (up to the limit).
    pub async fn sample_once<S: Store>(&self, store: &S) -> Result<(), crate::store::StoreError> {
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let page = store.list_streams("*", cursor, 500).await?;
            seen.extend(page.streams);
            cursor = page.next_cursor;
            if cursor == 0 || seen.len() >= self.config.max_streams {
                break;
            }
        }
        seen.sort_unstable();
        seen.dedup();
        seen.truncate(self.config.max_streams);
        let mut observed = Vec::with_capacity(seen.len());
        for stream in seen {
            // A stream deleted between SCAN and XINFO is simply not sampled this round.
            let Ok(info) = store.stream_info(&stream).await else {
                continue;
            };
            let groups = store.groups(&stream).await.unwrap_or_default();
            observed.push((stream, info.length, info.entries_added, groups));
        }
        self.record(now_ms(), observed);
        Ok(())
    }

    /// Adds one round's observations; what was not observed is forgotten.
    fn record(&self, at_ms: u64, observed: Vec<(String, u64, u64, Vec<GroupInfo>)>) {
        let capacity = self.capacity();
        let mut all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(observed.len());
        for (stream, length, entries_added, groups) in observed {
            let mut series = all.remove(&stream).unwrap_or_default();
            let first = series.at_ms == 0;
            let elapsed = at_ms.saturating_sub(series.at_ms);
            let mut delivered_total = 0.0;
            let mut group_points = HashMap::with_capacity(groups.len());
            let mut entries_read = HashMap::with_capacity(groups.len());
            for group in groups {
                let read = group.entries_read.unwrap_or(0);
                let delivered = match series.entries_read.get(&group.name) {
                    Some(&before) if !first => {
                        per_second(read.max(0) as u64, before.max(0) as u64, elapsed)
                    }
                    _ => 0.0,
                };
                delivered_total += delivered;
                let mut ring = series.groups.remove(&group.name).unwrap_or_default();
                push_bounded(
                    &mut ring,
                    GroupPoint {
                        at_ms,
                        lag: group.lag,
                        pending: group.pending,
                        delivered_per_second: delivered,
                    },
                    capacity,
                );
                entries_read.insert(group.name.clone(), read);
                group_points.insert(group.name, ring);
            }
            let produced = if first {
                0.0
            } else {
                per_second(entries_added, series.entries_added, elapsed)
            };
            push_bounded(
                &mut series.points,
                StreamPoint {
                    at_ms,
                    length,
                    produced_per_second: produced,
                    delivered_per_second: delivered_total,
                },
                capacity,
            );
            series.groups = group_points;
            series.entries_read = entries_read;
            series.entries_added = entries_added;
            series.at_ms = at_ms;
            next.insert(stream, series);
        }
        *all = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, read: i64, lag: i64, pending: u64) -> GroupInfo {
        GroupInfo {
            name: name.into(),
            consumers: 1,
            pending,
            last_delivered_id: "0-0".into(),
            entries_read: Some(read),
            lag: Some(lag),
        }
    }

    fn history() -> History {
        History::new(HistoryConfig {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(30),
            max_streams: 10,
        })
    }

    #[test]
    fn rates_come_from_the_counters_and_the_ring_is_bounded() {
        let history = history();
        history.record(10_000, vec![("s".into(), 5, 5, vec![group("g", 0, 5, 0)])]);
        history.record(
            20_000,
            vec![("s".into(), 105, 105, vec![group("g", 50, 55, 10)])],
        );
        let s = history.stream("s").expect("sampled");
        assert_eq!(s.points[0].produced_per_second, 0.0);
        assert_eq!(s.points[1].produced_per_second, 10.0);
        assert_eq!(s.points[1].delivered_per_second, 5.0);
        assert_eq!(s.groups[0].1[1].lag, Some(55));
        for at in 3..10 {
            history.record(at * 10_000, vec![("s".into(), 1, 1, vec![])]);
        }
        assert_eq!(history.stream("s").expect("sampled").points.len(), 3);
        assert!(history.stream("s").expect("sampled").groups.is_empty());
    }

    #[test]
    fn a_stream_not_seen_is_forgotten() {
        let history = history();
        history.record(
            1,
            vec![("a".into(), 1, 1, vec![]), ("b".into(), 1, 1, vec![])],
        );
        history.record(2, vec![("b".into(), 1, 1, vec![])]);
        assert!(history.stream("a").is_none());
        assert_eq!(history.stream_count(), 1);
    }
}
