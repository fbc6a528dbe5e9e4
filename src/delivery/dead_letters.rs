//! Dead-letter streams: reading them and replaying their messages.
//!
//! A dead letter is a plain stream entry (any Redis client can read it): five `dlq.*` header
//! fields, then the original fields (see [`DeadLetter`]). Redelivery writes them
//! ([`crate::delivery::redelivery`]); this module is what Admin offers on top.

use crate::error::{BrokerError, BrokerResult};
use crate::model::{DeadLetter, EntryId, IdRange, RangeBound};
use crate::store::Store;

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids.
    Ids(Vec<EntryId>),
    /// The oldest `count` in this range.
    Range(IdRange, usize),
}

/// One dead letter put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Its id in the dead-letter stream (deleted there now).
    pub dead_letter_id: EntryId,
    /// The stream it went back to.
    pub stream: String,
    /// Its new id there.
    pub id: EntryId,
}

/// Dead letters of `dead_letter_stream` in `range`, oldest first; entries without the
/// dead-letter header are skipped (a name shared with an ordinary stream by mistake).
pub async fn list<S: Store>(
    store: &S,
    dead_letter_stream: &str,
    range: IdRange,
    count: usize,
) -> BrokerResult<Vec<DeadLetter>> {
    Ok(store
        .range(dead_letter_stream, range, count, false)
        .await?
        .into_iter()
        .filter_map(DeadLetter::from_entry)
        .collect())
}

/// Puts the selected dead letters back on their own streams, each in one atomic step. An id
/// that is not a dead letter fails the call (nothing is replayed); an id no longer in the
/// dead-letter stream (replayed meanwhile) is skipped. `authorize` sees every stream the
/// selection would append to before anything moves: a caller who may repair the dead-letter
/// stream may not thereby write to streams it could not produce to.
pub async fn replay<S: Store>(
    store: &S,
    dead_letter_stream: &str,
    selection: Selection,
    authorize: impl FnOnce(&[&str]) -> BrokerResult<()>,
) -> BrokerResult<Vec<Replayed>> {
    let letters = match selection {
        Selection::Range(range, count) => list(store, dead_letter_stream, range, count).await?,
        Selection::Ids(ids) => {
            let mut letters = Vec::with_capacity(ids.len());
            for id in ids {
                let one = IdRange {
                    min: RangeBound::Inclusive(id),
                    max: RangeBound::Inclusive(id),
                };
                let Some(entry) = store.range(dead_letter_stream, one, 1, false).await?.pop()
                else {
                    continue;
                };
                letters.push(DeadLetter::from_entry(entry).ok_or_else(|| {
                    BrokerError::FailedPrecondition(format!(
                        "entry {id} of `{dead_letter_stream}` is not a dead letter"
                    ))
                })?);
            }
            letters
        }
    };
    let mut targets: Vec<&str> = letters.iter().map(|l| l.stream.as_str()).collect();
    targets.sort_unstable();
    targets.dedup();
    authorize(&targets)?;
    let mut replayed = Vec::with_capacity(letters.len());
    for letter in letters {
        if let Some(id) = store
            .replay_dead_letter(
                dead_letter_stream,
                letter.id,
                &letter.stream,
                &letter.stream,
            )
            .await?
        {
            tracing::info!(
                dead_letter_stream,
                stream = %letter.stream,
                original_id = %letter.original_id,
                id = %id,
                "dead letter replayed"
            );
            replayed.push(Replayed {
                dead_letter_id: letter.id,
                stream: letter.stream,
                id,
            });
        }
    }
    Ok(replayed)
}
