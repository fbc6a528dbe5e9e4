//! Ordered delivery's steps (see [`ordering`](super::ordering)) as a group's redelivery runs
//! them: what a read, an ack or a dead-lettering releases makes the group's sweep due at once,
//! and a step that fails makes the next sweep heal.

use std::time::Duration;

use super::membership::GroupMembership;
use super::ordering::{heal, read_new, release, state};
use super::redelivery::Redelivery;
use crate::error::BrokerResult;
use crate::model::{AckOutcome, Delivery, EntryId, OrderStep};
use crate::store::Store;

impl<S: Store> Redelivery<S> {
    /// Ordered delivery's read of new entries for `membership` on `streams` (see
    /// the module docs): what may be delivered now, and how many were held back.
    /// Messages released on the way make their group's sweep due at once.
    pub async fn read_ordered(
        &self,
        membership: &GroupMembership,
        streams: &[String],
        count: usize,
    ) -> BrokerResult<(Vec<Delivery>, usize)> {
        let group = &membership.group;
        let admitted = read_new(
            &self.store,
            self.settings.slot_safe_dead_letters,
            group,
            &membership.consumer,
            streams,
            count,
        )
        .await?;
        for stream in &admitted.promoted {
            self.nacked(stream, group, Some(Duration::ZERO));
        }
        if admitted.held > 0 {
            tracing::debug!(
                group = %group,
                held = admitted.held,
                "messages wait behind an earlier one of their ordering key"
            );
        }
        Ok((admitted.kept, admitted.held))
    }

    /// Step 2 of the module docs for an ack: `ids` are acknowledged (with a `holder`, only
    /// those it holds) and the next message of each acknowledged one's key is released, in
    /// one atomic step. What happened to each id, in order.
    ///
    /// When the step fails, it may still have been applied (the reply was lost: a timeout, a
    /// connection cut): the group's next sweep heals, so that a key whose head was acknowledged
    /// without anyone hearing of it does not wait for the heal pass.
    pub async fn ack_ordered(
        &self,
        stream: &str,
        group: &str,
        holder: Option<&str>,
        ids: &[EntryId],
    ) -> BrokerResult<Vec<AckOutcome>> {
        let slot_safe = self.settings.slot_safe_dead_letters;
        let state = state(stream, group, slot_safe);
        let step = OrderStep::Ack {
            holder: holder.map(str::to_owned),
            ids: ids.to_vec(),
        };
        let done = match self.store.order(stream, group, &state, &step).await {
            Ok(done) => done,
            Err(err) => {
                tracing::warn!(stream, group, error = %err, "an acknowledgement of ordered messages failed; if it took, the group's next sweep releases the next message of their keys");
                self.heal_soon(stream, group);
                return Err(err.into());
            }
        };
        let mut promoted = done.promoted;
        if done.heal_from.is_some() {
            // The acks took: a failed heal must not make them look failed.
            match heal(&self.store, &state, stream, group).await {
                Ok(healed) => promoted += healed,
                Err(err) => {
                    tracing::warn!(stream, group, error = %err, "could not heal the ordering state after an acknowledgement; the group's next sweep does");
                    self.heal_soon(stream, group);
                }
            }
        }
        if promoted > 0 {
            self.nacked(stream, group, Some(Duration::ZERO));
        }
        Ok(done.acked)
    }

    /// Messages of an ordered group left its pending list without an ack (dead-lettered,
    /// lost): the next message of each one's ordering key becomes due at once.
    /// The release is a step of its own after the sweep's: when it fails (Redis restarted or
    /// timed out between the two), the keys it was for would wait for the next heal pass, up
    /// to [`HEAL_INTERVAL`](super::ordering::HEAL_INTERVAL); the group's next sweep heals instead.
    pub async fn settled(&self, stream: &str, group: &str, ids: &[EntryId]) -> BrokerResult<()> {
        let slot_safe = self.settings.slot_safe_dead_letters;
        match release(&self.store, slot_safe, stream, group, ids).await {
            Ok(promoted) => {
                if promoted > 0 {
                    self.nacked(stream, group, Some(Duration::ZERO));
                }
                Ok(())
            }
            Err(err) => {
                tracing::warn!(stream, group, error = %err, "could not release the next messages of dead-lettered ordering keys; the group's next sweep repairs them");
                self.heal_soon(stream, group);
                Err(err.into())
            }
        }
    }
}
