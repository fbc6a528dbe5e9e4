//! Group commit for Produce: concurrent calls, each carrying one request, share one pipelined
//! round trip to the store instead of paying for one each.
//!
//! A client that publishes from many tasks, one message per call (what every generated stub
//! does by default), used to cost the broker a pool checkout, a write and a read per message.
//! Here every call hands its request to one queue; a round trip takes everything waiting, and
//! while [`MOST_IN_FLIGHT`] round trips are out the next calls queue up and leave together
//! when one returns. An idle broker adds one channel hop to a call; a busy one turns fifty
//! round trips into a few. Several round trips may be out at once so that encoding big batches
//! and reading their replies still spreads over the runtime's threads.
//!
//! A call awaited before the next is sent is appended after it, as before. Calls in flight at
//! the same time (on one stream or not) were never ordered among themselves, and are not now.
//! A call whose client goes away still has its request appended (it may already be on the
//! wire, as before); only its answer is dropped.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::model::{Append, EntryId};
use crate::store::{Store, StoreError, StoreResult};

/// Most requests one round trip takes from the queue; the rest wait for the next.
const MOST_PER_ROUND_TRIP: usize = 256;

/// Round trips out at once; calls arriving while all are out wait and leave together.
pub(super) const MOST_IN_FLIGHT: usize = 4;

/// What the queue holds: a request and where its answer goes.
struct Queued {
    request: Append,
    answer: oneshot::Sender<StoreResult<Vec<EntryId>>>,
}

/// The queue in front of the store; its task starts on first use (inside the runtime) and ends
/// when the core that owns the queue is dropped.
pub(super) struct Appender<S> {
    store: S,
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
}

impl<S: Store> Appender<S> {
    pub(super) fn new(store: S) -> Self {
        Self {
            store,
            queue: OnceLock::new(),
        }
    }

    /// Appends one request in whichever round trip it joins; answers as [`Streams::append`](crate::store::Streams::append)
    /// answers that request.
    pub(super) async fn append(&self, request: Append) -> StoreResult<Vec<EntryId>> {
        let (answer, answered) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (queue, requests) = mpsc::unbounded_channel();
            #[allow(
                clippy::disallowed_methods,
                reason = "the group-commit loop ends when the last handle of the core drops its queue"
            )]
            tokio::spawn(commit_in_groups(self.store.clone(), requests));
            queue
        });
        if queue.send(Queued { request, answer }).is_err() {
            return Err(StoreError::Unexpected(
                "the append queue has stopped".into(),
            ));
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Unexpected(
                "the append queue dropped a request".into(),
            ))
        })
    }
}

/// The queue's task: whenever a round trip may start, every request waiting goes into it.
async fn commit_in_groups<S: Store>(store: S, mut requests: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(MOST_IN_FLIGHT));
    let mut waiting = Vec::with_capacity(MOST_PER_ROUND_TRIP);
    while requests.recv_many(&mut waiting, MOST_PER_ROUND_TRIP).await > 0 {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // What arrived while every slot was taken leaves with this round trip.
        while waiting.len() < MOST_PER_ROUND_TRIP {
            match requests.try_recv() {
                Ok(queued) => waiting.push(queued),
                Err(_) => break,
            }
        }
        let batch = std::mem::replace(&mut waiting, Vec::with_capacity(MOST_PER_ROUND_TRIP));
        let store = store.clone();
        #[allow(
            clippy::disallowed_methods,
            reason = "one round trip in flight: it ends when Redis answers (or the timeout)"
        )]
        tokio::spawn(async move {
            commit(&store, batch).await;
            drop(slot);
        });
    }
}

/// One round trip for `batch`, each request answered.
async fn commit<S: Store>(store: &S, batch: Vec<Queued>) {
    let (requests, answers): (Vec<Append>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.request, queued.answer))
        .unzip();
    match append_counted(store, &requests).await {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                // A caller that went away no longer wants its answer.
                let _ = answer.send(result);
            }
        }
        // The round trip itself failed: every request in it shares that fate.
        Err(err) => {
            for answer in answers {
                let _ = answer.send(Err(err.clone()));
            }
        }
    }
}

/// [`Streams::append`](crate::store::Streams::append) with the produced messages counted in the metrics.
pub(super) async fn append_counted<S: Store>(
    store: &S,
    requests: &[Append],
) -> StoreResult<Vec<StoreResult<Vec<EntryId>>>> {
    let answers = store.append(requests).await?;
    for (answer, request) in answers.iter().zip(requests) {
        if let Ok(ids) = answer {
            crate::ops::metrics::produced(&request.stream, ids.len());
        }
    }
    Ok(answers)
}
