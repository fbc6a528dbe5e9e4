//! Redis replies into domain values (RESP2 arrays and RESP3 maps alike), and the arguments
//! commands share.

use bytes::Bytes;
use redis::{Cmd, Value};

use crate::model::{
    AckOutcome, Claimed, Entry, EntryId, Field, RangeBound, Swept, TrimPolicy, TrimThreshold,
};
use crate::store::{GroupEntry, StoreError, StoreResult};

pub(super) fn unexpected(what: &str, value: &Value) -> StoreError {
    StoreError::Unexpected(format!("{what}: {value:?}"))
}

pub(super) fn to_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One code of the ack scripts (`ack_held.lua`, `ack_each.lua`, `ordering.lua`'s ack): 1
/// acknowledged, 0 not pending, -1 held by another consumer.
pub(super) fn ack_outcome(code: i64) -> StoreResult<AckOutcome> {
    match code {
        1 => Ok(AckOutcome::Acked),
        0 => Ok(AckOutcome::NotPending),
        -1 => Ok(AckOutcome::HeldByOther),
        other => Err(StoreError::Unexpected(format!("ack outcome {other}"))),
    }
}

pub(super) fn to_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => to_text(other)?.parse().ok(),
    }
}

pub(super) fn to_opt_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::Nil => None,
        other => to_text(other)?.parse().ok(),
    }
}

pub(super) fn to_id(value: &Value) -> StoreResult<EntryId> {
    let parsed = match value {
        // Ids are ASCII: parse the reply's bytes in place, no copy.
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().and_then(|t| t.parse().ok()),
        other => to_text(other).and_then(|text| text.parse().ok()),
    };
    parsed.ok_or_else(|| unexpected("entry id", value))
}

pub(super) fn into_items(value: Value) -> StoreResult<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected("array", &other)),
    }
}

/// A RESP2 flat `[k, v, k, v]` array or a RESP3 map, as pairs.
pub(super) fn into_pairs(value: Value) -> StoreResult<Vec<(String, Value)>> {
    let pairs = match value {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        other => return Err(unexpected("key/value reply", &other)),
    };
    Ok(pairs
        .into_iter()
        .filter_map(|(k, v)| Some((to_text(&k)?, v)))
        .collect())
}

pub(super) fn parse_fields(value: Value) -> StoreResult<Vec<Field>> {
    let items = into_items(value)?;
    let mut fields = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        let name = to_text(&name).ok_or_else(|| unexpected("field name", &name))?;
        let value = match value {
            Value::BulkString(bytes) => Bytes::from(bytes),
            other => Bytes::from(to_text(&other).ok_or_else(|| unexpected("field value", &other))?),
        };
        fields.push(Field { name, value });
    }
    Ok(fields)
}

/// `[id, [f, v, ...] | nil]`; `None` fields mean the entry was deleted.
pub(super) fn parse_group_entry(value: Value) -> StoreResult<GroupEntry> {
    let mut parts = into_items(value)?.into_iter();
    let id = parts
        .next()
        .ok_or_else(|| StoreError::Unexpected("empty entry".into()))?;
    let id = to_id(&id)?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(fields) => Some(parse_fields(fields)?),
    };
    Ok(GroupEntry { id, fields })
}

pub(super) fn parse_entries(value: Value) -> StoreResult<Vec<Entry>> {
    into_items(value)?
        .into_iter()
        .map(parse_group_entry)
        // Ranges never return deleted entries; a nil body here is skipped like XCLAIM does.
        .filter_map(|entry| match entry {
            Ok(GroupEntry {
                id,
                fields: Some(fields),
            }) => Some(Ok(Entry { id, fields })),
            Ok(GroupEntry { fields: None, .. }) => None,
            Err(err) => Some(Err(err)),
        })
        .collect()
}

/// XREAD / XREADGROUP: `[[stream, [entry...]]...]`, RESP2 array or RESP3 map; nil when empty.
pub(super) fn parse_stream_batches(value: Value) -> StoreResult<Vec<(String, Vec<GroupEntry>)>> {
    let batches: Vec<(Value, Value)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        other => into_items(other)?
            .into_iter()
            .map(|batch| {
                let mut parts = into_items(batch)?.into_iter();
                match (parts.next(), parts.next()) {
                    (Some(stream), Some(entries)) => Ok((stream, entries)),
                    _ => Err(StoreError::Unexpected("short stream batch".into())),
                }
            })
            .collect::<StoreResult<_>>()?,
    };
    batches
        .into_iter()
        .map(|(stream, entries)| {
            let stream = to_text(&stream).ok_or_else(|| unexpected("stream name", &stream))?;
            let entries = into_items(entries)?
                .into_iter()
                .map(parse_group_entry)
                .collect::<StoreResult<_>>()?;
            Ok((stream, entries))
        })
        .collect()
}

pub(super) fn parse_ids(value: Value) -> StoreResult<Vec<EntryId>> {
    into_items(value)?.iter().map(to_id).collect()
}

pub(super) fn parse_claimed(value: Value, just_id: bool) -> StoreResult<Claimed> {
    if just_id {
        return Ok(Claimed {
            entries: Vec::new(),
            ids: parse_ids(value)?,
        });
    }
    let entries = parse_entries(value)?;
    let ids = entries.iter().map(|e| e.id).collect();
    Ok(Claimed { entries, ids })
}

pub(super) fn push_trim(command: &mut Cmd, policy: &TrimPolicy) {
    command.arg(trim_args(policy));
}

/// XADD's and XTRIM's trim arguments: `MAXLEN|MINID =|~ threshold [LIMIT l]`.
pub(super) fn trim_args(policy: &TrimPolicy) -> Vec<String> {
    let (kind, threshold) = match policy.threshold {
        TrimThreshold::MaxLen(len) => ("MAXLEN", len.to_string()),
        TrimThreshold::MinId(id) => ("MINID", id.to_string()),
    };
    let mut args = vec![
        kind.to_owned(),
        if policy.approximate { "~" } else { "=" }.to_owned(),
        threshold,
    ];
    if let Some(limit) = policy.limit {
        args.extend(["LIMIT".to_owned(), limit.to_string()]);
    }
    args
}

pub(super) fn push_entries_read(command: &mut Cmd, entries_read: Option<i64>) {
    if let Some(n) = entries_read {
        command.arg("ENTRIESREAD").arg(n);
    }
}

pub(super) fn id_args(ids: &[EntryId]) -> Vec<String> {
    ids.iter().map(EntryId::to_string).collect()
}

/// The sweep script's reply: `[cursor, [[id, fields, count]...], [dead ids], [lost ids]]`.
pub(super) fn parse_swept(value: Value) -> StoreResult<Swept> {
    let mut parts = into_items(value)?.into_iter();
    let cursor = parts.next().unwrap_or(Value::Nil);
    let cursor = to_text(&cursor).ok_or_else(|| unexpected("sweep cursor", &cursor))?;
    let next_cursor = RangeBound::parse(&cursor, "-")
        .map_err(|_| StoreError::Unexpected(format!("sweep cursor `{cursor}`")))?;
    let claimed = into_items(parts.next().unwrap_or(Value::Nil))?
        .into_iter()
        .map(|row| {
            let mut row = into_items(row)?.into_iter();
            match (row.next(), row.next(), row.next()) {
                (Some(id), Some(fields), Some(count)) => Ok((
                    Entry {
                        id: to_id(&id)?,
                        fields: parse_fields(fields)?,
                    },
                    to_u64(&count).ok_or_else(|| unexpected("delivery count", &count))?,
                )),
                _ => Err(StoreError::Unexpected("short sweep row".into())),
            }
        })
        .collect::<StoreResult<_>>()?;
    Ok(Swept {
        claimed,
        dead_lettered: parse_ids(parts.next().unwrap_or(Value::Nil))?,
        lost: parse_ids(parts.next().unwrap_or(Value::Nil))?,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn group_reads_keep_deleted_entries_as_none() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("f"), bulk("v")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let batches = parse_stream_batches(reply).unwrap();
        assert_eq!(batches.len(), 1);
        let (stream, entries) = &batches[0];
        assert_eq!(stream, "s");
        assert_eq!(
            entries[0].fields.as_ref().unwrap()[0].value,
            Bytes::from_static(b"v")
        );
        assert_eq!(entries[1].id, EntryId::new(2, 0));
        assert!(entries[1].fields.is_none());
    }
}
