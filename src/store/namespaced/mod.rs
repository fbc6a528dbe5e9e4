//! `--key-prefix`: every key streamgate touches lives under one prefix, and clients never see it.
//!
//! [`Namespaced`] wraps any [`Store`]: stream names are prefixed on the way in (streams, dead-letter
//! streams, listing patterns) and stripped on the way out (read results, listings, errors). A
//! name cannot escape: the prefix is prepended as is, so every key starts with it, and listing
//! matches `<escaped prefix><pattern>` and drops anything else. Names themselves are validated in
//! the gRPC layer (no glob characters, no control characters; see `grpc::convert::name`).
//!
//! On a Redis Cluster the prefix also goes inside a name's hash tag: `{orders}:dlq` is kept as
//! `team:{team:orders}:dlq`. The keys the broker derives from an untagged stream (its default
//! dead-letter stream, its ordering state, its dedupe keys) carry the stream's whole name as
//! their tag, and the stream `team:orders` hashes whole: with the prefix outside the braces
//! (`team:{orders}:dlq`, the slot of `orders`) they would not share its slot, and the scripts
//! that touch both fail with CROSSSLOT. Every key still starts with the prefix (a Redis ACL
//! `~team:*` confines a tenant).

use super::{Store, StoreError, StoreResult};

mod inspect;
mod keys;
mod registry;
mod scripts;
mod streams;

use keys::Keys;

/// A store whose keys all start with `prefix` (empty: no change at all).
#[derive(Clone)]
pub struct Namespaced<S> {
    inner: S,
    keys: Keys,
}

impl<S: Store> Namespaced<S> {
    /// Wraps `inner`; `prefix` may be empty. `cluster`: the store is a Redis Cluster, so the
    /// prefix goes inside hash tags as well.
    pub fn new(inner: S, prefix: String, cluster: bool) -> Self {
        Self {
            inner,
            keys: Keys::new(prefix, cluster),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn key(&self, name: &str) -> String {
        self.keys.key(name)
    }

    fn keys(&self, names: &[String]) -> Vec<String> {
        names.iter().map(|n| self.key(n)).collect()
    }

    fn name(&self, key: String) -> String {
        self.keys.name(key)
    }

    /// The inner store's answer, its error naming the client's streams rather than keys.
    async fn unkeyed<T>(
        &self,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        call.await.map_err(|e| self.unkey(e))
    }

    /// Errors name streams; a client must see its own names, not keys.
    fn unkey(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::NoSuchGroup { stream, group } => StoreError::NoSuchGroup {
                stream: self.name(stream),
                group,
            },
            StoreError::NoSuchStream { stream } => StoreError::NoSuchStream {
                stream: self.name(stream),
            },
            StoreError::WrongType { key } => StoreError::WrongType {
                key: self.name(key),
            },
            StoreError::IdNotIncreasing { stream } => StoreError::IdNotIncreasing {
                stream: self.name(stream),
            },
            StoreError::TopicExists { topic, partitions } => StoreError::TopicExists {
                topic: self.name(topic),
                partitions,
            },
            StoreError::Rejected(text) if !self.keys.prefix().is_empty() => {
                StoreError::Rejected(text.replace(self.keys.prefix(), ""))
            }
            other => other,
        }
    }

    /// Earlier versions kept a prefixed broker's topics in the unprefixed registry key, with
    /// prefixed topic names as fields. A topic found there is copied into this namespace's registry, so that it
    /// is not lost on upgrade. A Redis user confined to the prefix may not read the old key: that
    /// means it never had topics there.
    async fn adopt_legacy_topic(&self, registry: &str, topic: &str) -> StoreResult<Option<u32>> {
        let legacy = match self
            .inner
            .topic_partitions(registry, &self.key(topic))
            .await
        {
            Ok(Some(partitions)) => partitions,
            Ok(None) | Err(StoreError::PermissionDenied { .. }) => return Ok(None),
            Err(other) => return Err(self.unkey(other)),
        };
        tracing::info!(
            topic,
            partitions = legacy,
            "moved a topic from the registry outside the key prefix into the prefix's own"
        );
        // The topic is a field of the (prefixed) registry: its name needs no prefix.
        let created = self
            .unkeyed(self.inner.create_topic(&self.key(registry), topic, legacy))
            .await;
        match created {
            Ok(_) => Ok(Some(legacy)),
            // Created meanwhile with another count: that one stands.
            Err(StoreError::TopicExists { partitions, .. }) => Ok(Some(partitions)),
            Err(other) => Err(other),
        }
    }

    fn batches<T>(&self, batches: Vec<(String, T)>) -> Vec<(String, T)> {
        batches
            .into_iter()
            .map(|(stream, items)| (self.name(stream), items))
            .collect()
    }
}
