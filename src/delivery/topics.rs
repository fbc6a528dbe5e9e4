//! Partitioned topics: one logical stream spread over N streams, so that a hot topic can use
//! every shard of a Redis Cluster (one Redis stream lives on one shard).
//!
//! A topic is a name recorded with its partition count ([`Registry::create_topic`](crate::store::Registry::create_topic)). Partition `i`
//! is the stream `<topic>:<i>{<salt>}`: the hash tag `{<salt>}` is chosen so that the partitions
//! fall into equal shares of the cluster's slot space (rotated per topic), which is how
//! `redis-cli --cluster create` divides slots between masters, so they spread over the shards.
//! The names are deterministic: every broker instance computes the same ones.
//!
//! Produce to a topic picks a partition by a stable hash of the partition key (same key, same
//! partition, so per-key order holds), or round-robin without a key. Subscribe and Fetch on a
//! topic read all of its partitions; deliveries carry the partition's stream name, which is
//! what Ack takes. Ordering is per partition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{BrokerError, BrokerResult};
use crate::model::Append;
use crate::store::{Store, key_slot};

/// Most partitions of one topic.
pub const MAX_PARTITIONS: u32 = 1024;

/// The hash that records every topic's partition count. Under `--key-prefix` like every key
/// (the prefix is added by the store), so one Redis ACL pattern covers all a tenant touches.
pub const TOPICS_REGISTRY: &str = "streamgate:topics";

/// How long "this name is not a topic" is believed before asking the store again (a topic
/// created by another broker instance is seen within this time).
const NOT_A_TOPIC_TTL: Duration = Duration::from_secs(1);

/// A stable 64-bit hash (the same in every instance and every version).
fn stable_hash(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// The stream of partition `index` of a topic with `count` partitions.
pub fn partition_stream(topic: &str, index: u32, count: u32) -> String {
    let count = count.max(1);
    let share = (index + (stable_hash(topic) % u64::from(count)) as u32) % count;
    let (low, high) = (
        u64::from(share) * 16384 / u64::from(count),
        u64::from(share + 1) * 16384 / u64::from(count),
    );
    let salt = (0u64..)
        .find(|salt| {
            let slot = u64::from(key_slot(&format!("{{{salt}}}")));
            (low..high).contains(&slot)
        })
        .unwrap_or_default();
    format!("{topic}:{index}{{{salt}}}")
}

/// The topic a stream is a partition of, read off its name (`<topic>:<index>{<salt>}`, see
/// [`partition_stream`]); `None` for a name of another shape.
pub fn topic_of_partition(stream: &str) -> Option<&str> {
    let rest = stream.strip_suffix('}')?;
    let (rest, salt) = rest.rsplit_once('{')?;
    let (topic, index) = rest.rsplit_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(salt) && digits(index) && !topic.is_empty()).then_some(topic)
}

/// The partition a key goes to.
pub fn partition_for_key(key: &str, count: u32) -> u32 {
    (stable_hash(key) % u64::from(count.max(1))) as u32
}

/// A name's partition count (`None`: not a topic) and when it was looked up.
type Known = (Option<u32>, Instant);

/// Topic routing for one broker: partition counts cached (they never change once created).
#[derive(Clone)]
pub struct Topics<S> {
    store: S,
    known: Arc<Mutex<HashMap<String, Known>>>,
    round_robin: Arc<AtomicU64>,
}

impl<S: Store> Topics<S> {
    /// Topic routing over `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            known: Arc::default(),
            round_robin: Arc::default(),
        }
    }

    /// The partition count of `name` if it is a topic.
    pub async fn partitions(&self, name: &str) -> BrokerResult<Option<u32>> {
        if let Some((count, at)) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
            && (count.is_some() || at.elapsed() < NOT_A_TOPIC_TTL)
        {
            return Ok(count);
        }
        let count = self.store.topic_partitions(TOPICS_REGISTRY, name).await?;
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), (count, Instant::now()));
        Ok(count)
    }

    /// Creates a topic; returns whether it was new, and its partitions' streams.
    pub async fn create(&self, topic: &str, partitions: u32) -> BrokerResult<(bool, Vec<String>)> {
        if topic.contains(['{', '}']) {
            return Err(BrokerError::invalid(
                "topic",
                "must not contain `{` or `}` (its partitions carry their own hash tags)",
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(BrokerError::invalid(
                "partitions",
                format!("must be between 1 and {MAX_PARTITIONS}"),
            ));
        }
        let created = self
            .store
            .create_topic(TOPICS_REGISTRY, topic, partitions)
            .await?;
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), (Some(partitions), Instant::now()));
        Ok((created, self.streams_of(topic, partitions)))
    }

    /// The partitions' streams of a topic, in order.
    pub fn streams_of(&self, topic: &str, partitions: u32) -> Vec<String> {
        (0..partitions)
            .map(|i| partition_stream(topic, i, partitions))
            .collect()
    }

    /// Points a Produce at its partition when its stream is a topic. A partition key on a
    /// plain stream is a mistake worth naming.
    pub async fn route(&self, append: &mut Append, partition_key: &str) -> BrokerResult<()> {
        let Some(count) = self.partitions(&append.stream).await? else {
            if partition_key.is_empty() {
                return Ok(());
            }
            return Err(BrokerError::FailedPrecondition(format!(
                "`{}` is not a partitioned topic; partition_key only applies to topics",
                append.stream
            )));
        };
        let index = if partition_key.is_empty() {
            (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(count)) as u32
        } else {
            partition_for_key(partition_key, count)
        };
        append.stream = partition_stream(&append.stream, index, count);
        Ok(())
    }

    /// Replaces each topic among `streams` by its partitions; each name out comes with the
    /// index of the name it came from (for per-stream options such as start positions).
    pub async fn expand(&self, streams: &[String]) -> BrokerResult<Vec<(String, usize)>> {
        let mut out = Vec::with_capacity(streams.len());
        for (i, name) in streams.iter().enumerate() {
            match self.partitions(name).await? {
                Some(count) => {
                    out.extend(self.streams_of(name, count).into_iter().map(|s| (s, i)));
                }
                None => out.push((name.clone(), i)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_names_its_topic_and_other_streams_do_not() {
        for count in [1, 4] {
            for index in 0..count {
                let stream = partition_stream("orders.eu", index, count);
                assert_eq!(topic_of_partition(&stream), Some("orders.eu"), "{stream}");
            }
        }
        for plain in ["orders", "a:1", "{t}.orders", "a:x{1}", ":1{2}", "a:1{}"] {
            assert_eq!(topic_of_partition(plain), None, "{plain}");
        }
    }

    #[test]
    fn partitions_spread_over_equal_shares_of_the_slot_space() {
        for count in [1, 3, 6, 16] {
            let mut shares: Vec<u64> = (0..count)
                .map(|i| {
                    u64::from(key_slot(&partition_stream("orders", i, count))) * u64::from(count)
                        / 16384
                })
                .collect();
            shares.sort_unstable();
            assert_eq!(shares, (0..u64::from(count)).collect::<Vec<_>>(), "{count}");
        }
        // Deterministic.
        assert_eq!(
            partition_stream("orders", 2, 6),
            partition_stream("orders", 2, 6)
        );
    }

    #[test]
    fn a_key_always_lands_on_the_same_partition() {
        let first = partition_for_key("customer-42", 6);
        assert!((0..100).all(|_| partition_for_key("customer-42", 6) == first));
        assert!(first < 6);
    }
}
