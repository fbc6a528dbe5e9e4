//! Pub/Sub's topics and subscriptions as records in Redis: one registry hash each (under
//! `--key-prefix`, one key, so slot-safe on a cluster), field `{project}/{id}`, value the
//! resource as Pub/Sub gave and returns it (protobuf, base64). The delivery policy of a
//! subscription lives where every streamgate subscription's does (the stored subscription of
//! group `{id}` on its topic's stream); this record keeps what only Pub/Sub asks for (labels,
//! the settings as set, which topic).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;

use super::names::{Kind, Name};
use crate::error::{BrokerError, BrokerResult};
use crate::store::Store;

/// The hash of Pub/Sub topic records (not streamgate's own topics: `delivery::topics`).
pub const PUBSUB_TOPIC_RECORDS: &str = "streamgate:pubsub:topics";

/// The hash of Pub/Sub subscription records (their stored policies are streamgate's own,
/// `delivery::policies`).
pub const PUBSUB_SUBSCRIPTION_RECORDS: &str = "streamgate:pubsub:subscriptions";

/// Records of one kind.
#[derive(Clone)]
pub(super) struct Records<S> {
    store: S,
}

fn registry(kind: Kind) -> &'static str {
    match kind {
        Kind::Topic => PUBSUB_TOPIC_RECORDS,
        Kind::Subscription => PUBSUB_SUBSCRIPTION_RECORDS,
    }
}

fn decode<M: Message + Default>(field: &str, text: &str) -> BrokerResult<M> {
    BASE64
        .decode(text)
        .ok()
        .and_then(|bytes| M::decode(bytes.as_slice()).ok())
        .ok_or_else(|| {
            BrokerError::Internal(format!(
                "the Pub/Sub record `{field}` cannot be read; delete it and create it again"
            ))
        })
}

impl<S: Store> Records<S> {
    pub(super) fn new(store: S) -> Self {
        Self { store }
    }

    /// The record of `name`, if any.
    pub(super) async fn get<M: Message + Default>(&self, name: &Name) -> BrokerResult<Option<M>> {
        let field = name.stream();
        self.store
            .record(registry(name.kind), &field)
            .await?
            .map(|text| decode(&field, &text))
            .transpose()
    }

    /// The record of `name`, or NOT_FOUND as Pub/Sub words it.
    pub(super) async fn existing<M: Message + Default>(&self, name: &Name) -> BrokerResult<M> {
        self.get(name).await?.ok_or_else(|| {
            BrokerError::NotFound(format!("Resource not found (resource={}).", name.id))
        })
    }

    /// Writes the record of `name`; with `only_if_new`, ALREADY_EXISTS when there is one.
    pub(super) async fn put<M: Message>(
        &self,
        name: &Name,
        value: &M,
        only_if_new: bool,
    ) -> BrokerResult<()> {
        let written = self
            .store
            .put_record(
                registry(name.kind),
                &name.stream(),
                &BASE64.encode(value.encode_to_vec()),
                only_if_new,
            )
            .await?;
        if !written {
            return Err(BrokerError::AlreadyExists(format!(
                "Resource already exists in the project (resource={}).",
                name.id
            )));
        }
        Ok(())
    }

    /// Deletes the record of `name`; NOT_FOUND when there is none.
    pub(super) async fn remove(&self, name: &Name) -> BrokerResult<()> {
        if !self
            .store
            .remove_record(registry(name.kind), &name.stream())
            .await?
        {
            return Err(BrokerError::NotFound(format!(
                "Resource not found (resource={}).",
                name.id
            )));
        }
        Ok(())
    }

    /// Every record of `kind` in `project`, sorted by name (pages follow that order).
    pub(super) async fn list<M: Message + Default>(
        &self,
        kind: Kind,
        project: &str,
    ) -> BrokerResult<Vec<(Name, M)>> {
        let mut found = Vec::new();
        for (field, text) in self.store.records(registry(kind)).await? {
            let Some(name) = Name::of_stream(kind, &field) else {
                continue;
            };
            if name.project == project {
                found.push((name, decode(&field, &text)?));
            }
        }
        found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(found)
    }
}

/// One page of `items` (sorted by id) after `page_token` (the last id of the previous page);
/// the next token is empty on the last page. `page_size` 0 means Pub/Sub's default of 100.
pub(super) fn page<T>(
    items: Vec<(Name, T)>,
    page_size: i32,
    page_token: &str,
) -> BrokerResult<(Vec<(Name, T)>, String)> {
    let size = match page_size {
        0 => 100,
        n if n < 0 => return Err(BrokerError::invalid("page_size", "must not be negative")),
        n => n as usize,
    };
    let mut rest: Vec<(Name, T)> = items
        .into_iter()
        .filter(|(name, _)| page_token.is_empty() || name.id.as_str() > page_token)
        .collect();
    let next = if rest.len() > size {
        rest.truncate(size);
        rest.last()
            .map(|(name, _)| name.id.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((rest, next))
}
