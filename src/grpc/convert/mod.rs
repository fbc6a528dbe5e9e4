//! Proto ↔ domain conversions, with all request validation.
//!
//! Requests are checked here before anything reaches the store, so that bad input never becomes
//! a Redis command: every failure is INVALID_ARGUMENT naming the field (`messages[2].fields`,
//! `streams[0].after_id`) and what is wrong with it.

pub mod consume;
mod reads;
mod responses;
pub mod subscriptions;
#[cfg(test)]
mod tests;

pub use reads::{fetch, subscription};
pub use responses::{id_strings, pending_entry};

use std::str::FromStr;
use std::time::Duration;

use crate::config::Limits;
use crate::delivery::MAX_DELAY;
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::pb;
use crate::model::{
    Append, ClaimOptions, EXPIRES_AT_FIELD, EntryId, Field, IdRange, NewMessage,
    ORDERING_KEY_FIELD, ParseIdError, RangeBound, TrimPolicy, TrimThreshold, millis, now_ms,
    ordering_key_problem,
};
use crate::ops::telemetry::TRACEPARENT;

/// A stream, group or consumer name: not empty, not over the length limit, no control or
/// whitespace characters, and none of the glob characters `* ? [ ] \` (names are matched by
/// permission patterns and listing patterns; a name that is itself a pattern would confuse both).
pub fn name(field: &str, value: &str, limits: &Limits) -> BrokerResult<String> {
    if value.is_empty() {
        return Err(BrokerError::invalid(field, "must not be empty"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '*' | '?' | '[' | ']' | '\\'))
    {
        return Err(BrokerError::invalid(
            field,
            format!("must not contain {c:?} (no whitespace, control or glob characters)"),
        ));
    }
    if value.len() > limits.max_name_bytes {
        return Err(BrokerError::invalid(
            field,
            format!(
                "is {} bytes, over the limit of {}",
                value.len(),
                limits.max_name_bytes
            ),
        ));
    }
    Ok(value.to_owned())
}

/// A consumer name a client reads as: a [`name`], and not one of the broker's own
/// (`streamgate:...`, such as the consumer holding nacked messages).
pub fn member_name(value: &str, limits: &Limits) -> BrokerResult<String> {
    let consumer = name("consumer", value, limits)?;
    if consumer.starts_with("streamgate:") {
        return Err(BrokerError::invalid(
            "consumer",
            "names starting with `streamgate:` are reserved for the broker",
        ));
    }
    Ok(consumer)
}

/// Parses an id-like value, naming `field` on failure.
pub fn parse<T: FromStr<Err = ParseIdError>>(field: &str, text: &str) -> BrokerResult<T> {
    text.parse().map_err(|err| BrokerError::invalid(field, err))
}

/// A list field holds at least one item and at most `max`. The messages use the field's own
/// words: `empty` says what is missing, `(verb, noun)` make "holds 3 messages, over the limit of 2".
pub(super) fn check_len(
    field: &str,
    len: usize,
    max: usize,
    empty: &str,
    (verb, noun, limit): (&str, &str, &str),
) -> BrokerResult<()> {
    if len == 0 {
        return Err(BrokerError::invalid(field, empty));
    }
    if len > max {
        return Err(BrokerError::invalid(
            field,
            format!("{verb} {len} {noun}, over the {limit} of {max}"),
        ));
    }
    Ok(())
}

/// A non-empty list of entry ids.
pub fn ids(field: &str, texts: &[String], limits: &Limits) -> BrokerResult<Vec<EntryId>> {
    check_len(
        field,
        texts.len(),
        limits.max_read_count,
        "must list at least one id",
        ("lists", "ids", "limit"),
    )?;
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| parse(&format!("{field}[{i}]"), text))
        .collect()
}

/// A requested count: 0 means `default`, above `limits.max_read_count` is refused.
pub fn count(field: &str, requested: u32, default: usize, limits: &Limits) -> BrokerResult<usize> {
    match requested as usize {
        0 => Ok(default),
        n if n > limits.max_read_count => Err(BrokerError::invalid(
            field,
            format!("{n} is over the limit of {}", limits.max_read_count),
        )),
        n => Ok(n),
    }
}

/// An id range from two optional bounds.
pub fn range(field_min: &str, min: &str, field_max: &str, max: &str) -> BrokerResult<IdRange> {
    Ok(IdRange {
        min: RangeBound::parse(min, "-").map_err(|err| BrokerError::invalid(field_min, err))?,
        max: RangeBound::parse(max, "+").map_err(|err| BrokerError::invalid(field_max, err))?,
    })
}

/// A trim policy; `field` is where it sits in the request.
pub fn trim_policy(field: &str, policy: &pb::TrimPolicy) -> BrokerResult<TrimPolicy> {
    let threshold = match &policy.threshold {
        Some(pb::trim_policy::Threshold::MaxLen(len)) => TrimThreshold::MaxLen(*len),
        Some(pb::trim_policy::Threshold::MinId(id)) => {
            TrimThreshold::MinId(parse(&format!("{field}.min_id"), id)?)
        }
        None => {
            return Err(BrokerError::invalid(field, "set either max_len or min_id"));
        }
    };
    if policy.limit > 0 && !policy.approximate {
        return Err(BrokerError::invalid(
            format!("{field}.limit"),
            "needs approximate trimming (`approximate: true`); Redis refuses LIMIT with exact trimming",
        ));
    }
    Ok(TrimPolicy {
        threshold,
        approximate: policy.approximate,
        limit: (policy.limit > 0).then_some(policy.limit),
    })
}

/// A Produce request, its messages taken (not copied).
pub fn produce(request: pb::ProduceRequest, limits: &Limits) -> BrokerResult<Append> {
    let stream = name("stream", &request.stream, limits)?;
    check_len(
        "messages",
        request.messages.len(),
        limits.max_batch,
        "must hold at least one message",
        ("holds", "messages", "batch limit"),
    )?;
    let deliver_at_ms = delivery_time(&request, limits)?;
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| outgoing_message(i, message, limits))
        .collect::<BrokerResult<Vec<_>>>()?;
    let trim = request
        .trim
        .as_ref()
        .map(|policy| trim_policy("trim", policy))
        .transpose()?;
    Ok(Append {
        stream,
        messages,
        trim,
        require_existing_stream: request.require_existing_stream,
        atomic: request.atomic,
        dedupe: None,
        deliver_at_ms,
    })
}

fn outgoing_message(
    index: usize,
    message: pb::OutgoingMessage,
    limits: &Limits,
) -> BrokerResult<NewMessage> {
    let field = |suffix: &str| format!("messages[{index}]{suffix}");
    let id = parse(&field(".id"), &message.id)?;
    check_len(
        &field(".fields"),
        message.fields.len(),
        limits.max_fields,
        "must hold at least one field (Redis stores no empty entries)",
        ("holds", "fields", "limit"),
    )?;
    let size: usize = message
        .fields
        .iter()
        .map(|f| f.name.len() + f.value.len())
        .sum();
    if size > limits.max_message_bytes {
        return Err(BrokerError::invalid(
            field(""),
            format!(
                "is {size} bytes, over the limit of {}",
                limits.max_message_bytes
            ),
        ));
    }
    let fields = message
        .fields
        .into_iter()
        .enumerate()
        .map(|(j, f)| {
            if f.name.is_empty() {
                return Err(BrokerError::invalid(
                    field(&format!(".fields[{j}].name")),
                    "must not be empty",
                ));
            }
            Ok(Field {
                name: f.name,
                value: f.value,
            })
        })
        .collect::<BrokerResult<Vec<Field>>>()?;
    let mut fields = with_ordering_key(fields, message.ordering_key, &field(".ordering_key"))?;
    let expires_at = match (message.expire_at_ms, message.ttl_ms) {
        (0, 0) => None,
        (at, 0) => Some(at),
        (0, ttl) => Some(now_ms().saturating_add(ttl)),
        _ => {
            return Err(BrokerError::invalid(
                field(".ttl_ms"),
                "set expire_at_ms or ttl_ms, not both",
            ));
        }
    };
    if let Some(at) = expires_at {
        if fields.iter().any(|f| f.name == EXPIRES_AT_FIELD) {
            return Err(BrokerError::invalid(
                field(".expire_at_ms"),
                format!("the message has a field `{EXPIRES_AT_FIELD}` already"),
            ));
        }
        fields.push(Field {
            name: EXPIRES_AT_FIELD.to_owned(),
            value: at.to_string().into(),
        });
    }
    let dedupe_key = match message.dedupe_key.len() {
        0 => None,
        1..=MAX_DEDUPE_KEY_BYTES => Some(message.dedupe_key),
        n => {
            return Err(BrokerError::invalid(
                field(".dedupe_key"),
                format!("is {n} bytes, over the limit of {MAX_DEDUPE_KEY_BYTES}"),
            ));
        }
    };
    Ok(NewMessage {
        id,
        fields,
        dedupe_key,
    })
}

/// When a delayed Produce is due, `None` for one that is not delayed; refuses what a held
/// message cannot keep (explicit ids, trimming, all-or-nothing, dedupe keys).
fn delivery_time(request: &pb::ProduceRequest, limits: &Limits) -> BrokerResult<Option<u64>> {
    let due = match (request.deliver_at_ms, request.delay_ms) {
        (0, 0) => return Ok(None),
        (at, 0) => at,
        (0, delay) => {
            let most = millis(limits.max_delivery_delay);
            if delay > most {
                return Err(BrokerError::invalid(
                    "delay_ms",
                    format!("is over the server's --max-delivery-delay of {most} ms"),
                ));
            }
            now_ms().saturating_add(delay)
        }
        _ => {
            return Err(BrokerError::invalid(
                "delay_ms",
                "set deliver_at_ms or delay_ms, not both",
            ));
        }
    };
    if due > now_ms().saturating_add(millis(limits.max_delivery_delay)) {
        return Err(BrokerError::invalid(
            "deliver_at_ms",
            "is further away than the server's --max-delivery-delay",
        ));
    }
    let conflict = if request.trim.is_some() {
        Some("trim")
    } else if request.require_existing_stream {
        Some("require_existing_stream")
    } else if request.atomic {
        Some("atomic")
    } else if request.messages.iter().any(|m| !m.id.is_empty()) {
        Some("messages[].id")
    } else if request.messages.iter().any(|m| !m.dedupe_key.is_empty()) {
        Some("messages[].dedupe_key")
    } else {
        None
    };
    if let Some(field) = conflict {
        return Err(BrokerError::invalid(
            field,
            "does not apply to a delayed Produce (the messages are appended, and get their ids, when due)",
        ));
    }
    Ok(Some(due))
}

/// The longest dedupe key, in bytes.
const MAX_DEDUPE_KEY_BYTES: usize = 512;

/// Adds a message's ordering key as the field [`ORDERING_KEY_FIELD`] (Produce here, Pub/Sub's
/// Publish too), refusing a bad key or a second, different one among the fields.
pub fn with_ordering_key(
    mut fields: Vec<Field>,
    key: String,
    field_name: &str,
) -> BrokerResult<Vec<Field>> {
    if key.is_empty() {
        return Ok(fields);
    }
    if let Some(problem) = ordering_key_problem(&key) {
        return Err(BrokerError::invalid(field_name, problem));
    }
    if let Some(given) = fields.iter().find(|f| f.name == ORDERING_KEY_FIELD) {
        if given.value != key.as_bytes() {
            return Err(BrokerError::invalid(
                field_name,
                format!(
                    "differs from the field `{ORDERING_KEY_FIELD}` of the same message; set one of them"
                ),
            ));
        }
        return Ok(fields);
    }
    fields.push(Field {
        name: ORDERING_KEY_FIELD.to_owned(),
        value: key.into(),
    });
    Ok(fields)
}

/// The messages an Ack, Nack or ExtendDeadline is about.
pub struct PendingTarget {
    /// Their stream.
    pub stream: String,
    /// The group they were delivered to.
    pub group: String,
    /// Their ids; at least one.
    pub ids: Vec<EntryId>,
}

/// Checks the stream, group and ids that Ack, Nack and ExtendDeadline share.
pub fn pending_target(
    stream: &str,
    group: &str,
    ids: &[String],
    limits: &Limits,
) -> BrokerResult<PendingTarget> {
    Ok(PendingTarget {
        stream: name("stream", stream, limits)?,
        group: name("group", group, limits)?,
        ids: self::ids("ids", ids, limits)?,
    })
}

/// A delay in milliseconds (ack deadline, nack delay), within what redelivery can express.
pub fn delay(field: &str, ms: u32) -> BrokerResult<Duration> {
    let delay = Duration::from_millis(u64::from(ms));
    if delay > MAX_DELAY {
        return Err(BrokerError::invalid(
            field,
            format!("must be at most {} ms", MAX_DELAY.as_millis()),
        ));
    }
    Ok(delay)
}

/// The `grpc-timeout` a client sent (`<digits><unit>`, units H M S m u n), if any.
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` header value as a duration.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Claim options from a Claim request.
pub fn claim_options(request: &pb::ClaimRequest, limits: &Limits) -> BrokerResult<ClaimOptions> {
    Ok(ClaimOptions {
        min_idle_ms: request.min_idle_ms,
        ids: ids("ids", &request.ids, limits)?,
        idle_ms: request.idle_ms,
        time_ms: request.time_ms,
        retry_count: request.retry_count,
        force: request.force,
        just_id: request.just_id,
    })
}

/// A valid W3C `traceparent` from the call's metadata (`00-<32 hex>-<16 hex>-<2 hex>`), if any;
/// a malformed one is ignored, as the W3C spec asks.
pub fn traceparent(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let value = metadata.get(TRACEPARENT)?.to_str().ok()?.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    valid.then(|| value.to_ascii_lowercase())
}
