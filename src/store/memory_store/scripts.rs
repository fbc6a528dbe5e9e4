//! [`Scripts`] in memory: the twins of the Lua scripts, atomic because each runs under the one
//! mutex; their state lives in `pending.rs`, `ordering.rs`, `retention.rs` and `delayed.rs`.

use std::sync::PoisonError;

use super::{MemoryStore, ordering, pending, retention};
use crate::model::{
    DelayStep, Delayed, DelayedKeys, EntryId, OrderStep, Ordered, OrderingState, PendingMove,
    RetentionCut, ScheduleStep, SweepRequest, Swept, Trimmed,
};
use crate::store::Scripts;
use crate::store::{Released, StoreResult};

impl Scripts for MemoryStore {
    async fn sweep(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        request: &SweepRequest,
    ) -> StoreResult<Swept> {
        let now = self.clock.now_ms();
        pending::sweep(&mut self.streams(), stream, group, consumer, request, now)
    }

    async fn delay(
        &self,
        stream: &str,
        _keys: &DelayedKeys,
        step: &DelayStep,
    ) -> StoreResult<Delayed> {
        // Entry ids follow the store's own clock.
        let now = self.clock.now_ms();
        let delayed = {
            let mut book = self.delayed.lock().unwrap_or_else(PoisonError::into_inner);
            book.delay(&mut self.streams(), stream, step, now)?
        };
        if !delayed.moved.is_empty() {
            self.wakeups.notify(stream);
        }
        Ok(delayed)
    }

    async fn schedule(
        &self,
        registry: &str,
        step: &ScheduleStep,
    ) -> StoreResult<Vec<(String, u64)>> {
        Ok(self
            .delayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .schedule(registry, step))
    }

    async fn retain(&self, stream: &str, cut: &RetentionCut) -> StoreResult<Trimmed> {
        Ok(self
            .streams()
            .get_mut(stream)
            .map(|s| retention::retain(s, cut))
            .unwrap_or_default())
    }

    async fn order(
        &self,
        stream: &str,
        group: &str,
        _state: &OrderingState,
        step: &OrderStep,
    ) -> StoreResult<Ordered> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            Ok(ordering::order(s, group, step, now))
        })
    }

    async fn move_pending(
        &self,
        stream: &str,
        group: &str,
        ids: &[EntryId],
        movement: &PendingMove,
    ) -> StoreResult<Vec<EntryId>> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::move_pending(s, stream, group, ids, movement, now)
        })
    }

    async fn release_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        only_if_idle_ms: Option<u64>,
        delete: bool,
    ) -> StoreResult<Released> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            pending::release_consumer(s, stream, group, consumer, only_if_idle_ms, delete, now)
        })
    }

    async fn leases(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        lease_ms: u64,
        limit: u64,
    ) -> StoreResult<Vec<(EntryId, u64)>> {
        let now = self.clock.now_ms();
        self.with_group(stream, group, |s, group| {
            let mut held = s
                .group(stream, group)?
                .leased_by(consumer, now, lease_ms.max(1));
            held.truncate(usize::try_from(limit.max(1)).unwrap_or(usize::MAX));
            Ok(held)
        })
    }

    async fn replay_dead_letter(
        &self,
        dead_letter_stream: &str,
        id: EntryId,
        origin: &str,
        origin_label: &str,
    ) -> StoreResult<Option<EntryId>> {
        let now = self.clock.now_ms();
        let replayed = pending::replay_dead_letter(
            &mut self.streams(),
            dead_letter_stream,
            id,
            origin,
            origin_label,
            now,
        )?;
        let Some(new_id) = replayed else {
            return Ok(None);
        };
        self.wakeups.notify(origin);
        Ok(Some(new_id))
    }
}
