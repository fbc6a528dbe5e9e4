//! [`Store`] in this process's memory: the zero-setup default, for trying streamgate and for
//! development. Nothing survives a restart.
//!
//! Each of the store's roles is implemented in a file of its own (`streams.rs`, `inspect.rs`,
//! `scripts.rs`, `registry.rs`); the state, the twins of the Lua scripts, and registry records
//! and leases live in `state.rs`, `pending.rs` and `registry.rs`.
//!
//! It follows Redis 7.0's stream semantics wherever a client can observe them (ids and their
//! ordering, consumer groups and their pending entries lists, delivery counts and idle times,
//! XCLAIM/XAUTOCLAIM rules, deleted entries dropped from pending lists, lag and entries-read
//! bookkeeping, the errors a missing stream or group gives), because the gRPC layer and every
//! test above it must not be able to tell the two stores apart. `tests/conformance.rs` runs one
//! behavioural suite against both.
//!
//! One mutex guards all streams. Every operation is short and never awaits while holding it,
//! which also makes each operation atomic, as the Lua scripts are on Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

mod delayed;
mod inspect;
mod ordering;
mod pending;
mod produce;
mod registry;
mod retention;
mod scripts;
mod state;
mod streams;

use state::{Clock, Stream, no_group};

use super::{StoreResult, Wakeups};

/// The embedded store; cheap to clone (all clones share the data).
#[derive(Clone, Default)]
pub struct MemoryStore {
    streams: Arc<Mutex<HashMap<String, Stream>>>,
    records: Arc<registry::Records>,
    leases: Arc<registry::Leases>,
    /// Delayed messages and their registries (locked before `streams` when both are).
    delayed: Arc<Mutex<delayed::DelayedBook>>,
    wakeups: Wakeups,
    clock: Clock,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Stream>> {
        // Every operation finishes its changes before unlocking and none panics half-way by
        // design; a poisoned lock is still consistent enough to serve.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on one group of one stream; NOGROUP when either is missing.
    fn with_group<T>(
        &self,
        stream: &str,
        group: &str,
        f: impl FnOnce(&mut Stream, &str) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut streams = self.streams();
        let s = streams
            .get_mut(stream)
            .filter(|s| s.groups.contains_key(group))
            .ok_or_else(|| no_group(stream, group))?;
        f(s, group)
    }
}
