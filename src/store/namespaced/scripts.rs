//! [`Scripts`] under the prefix: every key a script touches (the stream, its dead-letter
//! stream, its ordering state, its delayed messages) is prefixed.

use super::Namespaced;
use crate::model::{
    DelayStep, Delayed, DelayedKeys, EntryId, OrderStep, Ordered, OrderingState, PendingMove,
    RetentionCut, ScheduleStep, SweepRequest, Swept, Trimmed,
};
use crate::store::Scripts;
use crate::store::{Released, Store, StoreResult};

impl<S: Store> Scripts for Namespaced<S> {
    async fn sweep(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        request: &SweepRequest,
    ) -> StoreResult<Swept> {
        let request = SweepRequest {
            dead_letter_stream: self.key(&request.dead_letter_stream),
            ..request.clone()
        };
        self.unkeyed(
            self.inner
                .sweep(&self.key(stream), group, consumer, &request),
        )
        .await
    }

    async fn delay(
        &self,
        stream: &str,
        keys: &DelayedKeys,
        step: &DelayStep,
    ) -> StoreResult<Delayed> {
        let keys = DelayedKeys {
            due: self.key(&keys.due),
            messages: self.key(&keys.messages),
        };
        self.unkeyed(self.inner.delay(&self.key(stream), &keys, step))
            .await
    }

    /// The registry holds stream names as callers give them (unprefixed); only its own key is
    /// under the prefix.
    async fn schedule(
        &self,
        registry: &str,
        step: &ScheduleStep,
    ) -> StoreResult<Vec<(String, u64)>> {
        self.unkeyed(self.inner.schedule(&self.key(registry), step))
            .await
    }

    async fn retain(&self, stream: &str, cut: &RetentionCut) -> StoreResult<Trimmed> {
        self.unkeyed(self.inner.retain(&self.key(stream), cut))
            .await
    }

    async fn order(
        &self,
        stream: &str,
        group: &str,
        state: &OrderingState,
        step: &OrderStep,
    ) -> StoreResult<Ordered> {
        let state = OrderingState {
            heads: self.key(&state.heads),
            held: self.key(&state.held),
        };
        self.unkeyed(self.inner.order(&self.key(stream), group, &state, step))
            .await
    }

    async fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> StoreResult<Vec<EntryId>> {
        self.unkeyed(
            self.inner
                .move_pending(&self.key(stream), group, ids, movement),
        )
        .await
    }

    async fn release_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        only_if_idle_ms: Option<u64>,
        delete: bool,
    ) -> StoreResult<Released> {
        self.unkeyed(self.inner.release_consumer(
            &self.key(stream),
            group,
            consumer,
            only_if_idle_ms,
            delete,
        ))
        .await
    }

    async fn leases(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        lease_ms: u64,
        limit: u64,
    ) -> StoreResult<Vec<(EntryId, u64)>> {
        self.unkeyed(
            self.inner
                .leases(&self.key(stream), group, consumer, lease_ms, limit),
        )
        .await
    }

    async fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> StoreResult<Option<EntryId>> {
        self.unkeyed(self.inner.replay_dead_letter(
            &self.key(dead_letter_stream),
            id,
            &self.key(origin),
            origin_label,
        ))
        .await
    }
}
