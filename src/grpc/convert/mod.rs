//! Proto ↔ domain conversions, with all request validation.
//!
//! Requests are checked here before anything reaches the store, so that bad input never becomes
//! a Redis command: every failure is INVALID_ARGUMENT naming the field (`messages[2].fields`,
//! `streams[0].after_id`) and what is wrong with it.

pub mod consume;
mod responses;
pub mod subscriptions;
#[cfg(test)]
mod tests;

pub use responses::id_strings;

/// The W3C trace-context header, and the message field it is stored in.
pub const TRACEPARENT: &str = "traceparent";

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use crate::config::Limits;
use crate::delivery::{
    GroupMembership, MAX_DELAY, MemberSpec, Reading, Replay, Requested, generate_consumer_name,
    replay_everything,
};
use crate::error::{BrokerError, BrokerResult};
use crate::fetch::FetchSpec;
use crate::grpc::pb;
use crate::model::{
    Append, Backoff, ClaimOptions, DeliveryPolicy, EntryId, Field, IdRange, NewMessage,
    ParseIdError, RangeBound, StartId, TrimPolicy, TrimThreshold,
};
use crate::store::GroupCursor;
use crate::subscription::SubscriptionSpec;

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
fn check_len(
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
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| outgoing_message(i, message, limits))
        .collect::<BrokerResult<_>>()?;
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
        .collect::<BrokerResult<_>>()?;
    Ok(NewMessage { id, fields })
}

/// The reading options Subscribe and Fetch share, borrowed from either request.
struct ReadOptions<'a> {
    streams: &'a [pb::StreamStart],
    group: &'a str,
    consumer: &'a str,
    create_group: bool,
    group_start_id: &'a str,
    no_ack: bool,
    ack_deadline_ms: u32,
    max_deliveries: Option<u32>,
    dead_letter_stream: &'a str,
}

/// Borrows the reading options of a Subscribe or Fetch request: both name them alike.
macro_rules! read_options {
    ($request:expr) => {
        ReadOptions {
            streams: &$request.streams,
            group: &$request.group,
            consumer: &$request.consumer,
            create_group: $request.create_group,
            group_start_id: &$request.group_start_id,
            no_ack: $request.no_ack,
            ack_deadline_ms: $request.ack_deadline_ms,
            max_deliveries: $request.max_deliveries,
            dead_letter_stream: &$request.dead_letter_stream,
        }
    };
}

impl ReadOptions<'_> {
    /// The stream names: at least one, within the limit, valid, no duplicates.
    fn stream_names(&self, limits: &Limits) -> BrokerResult<Vec<String>> {
        check_len(
            "streams",
            self.streams.len(),
            limits.max_subscribe_streams,
            "must name at least one stream",
            ("names", "streams", "limit"),
        )?;
        let mut seen = HashSet::new();
        let mut streams = Vec::with_capacity(self.streams.len());
        for (i, start) in self.streams.iter().enumerate() {
            let stream = name(&format!("streams[{i}].stream"), &start.stream, limits)?;
            if !seen.insert(stream.clone()) {
                return Err(BrokerError::invalid(
                    format!("streams[{i}].stream"),
                    format!("`{stream}` is listed twice"),
                ));
            }
            streams.push(stream);
        }
        Ok(streams)
    }

    fn is_group_mode(&self) -> bool {
        !self.group.is_empty()
    }

    /// Tail / plain mode: group-only options are a mistake worth naming, not ignoring; each
    /// stream's `after_id` is a start position.
    fn tail_starts(&self) -> BrokerResult<Vec<StartId>> {
        let group_only = [
            ("consumer", !self.consumer.is_empty()),
            ("create_group", self.create_group),
            ("group_start_id", !self.group_start_id.is_empty()),
            ("no_ack", self.no_ack),
            ("ack_deadline_ms", self.ack_deadline_ms != 0),
            ("max_deliveries", self.max_deliveries.is_some()),
            ("dead_letter_stream", !self.dead_letter_stream.is_empty()),
        ];
        if let Some((field, _)) = group_only.iter().find(|(_, set)| *set) {
            return Err(BrokerError::invalid(
                *field,
                "only applies in group mode; set `group` too",
            ));
        }
        self.streams
            .iter()
            .enumerate()
            .map(|(i, s)| parse::<StartId>(&format!("streams[{i}].after_id"), &s.after_id))
            .collect()
    }

    /// Group mode: who reads, whether to create the group, and how redelivery works for it.
    /// `consumer` is the name to use (already generated or checked by the caller, whose rules
    /// differ); `max_in_flight` is Subscribe's alone; `backoff` is the server's.
    fn membership(
        &self,
        consumer: String,
        generated_name: bool,
        max_in_flight: u64,
        backoff: Backoff,
        limits: &Limits,
    ) -> BrokerResult<GroupMembership> {
        let group = name("group", self.group, limits)?;
        if !self.create_group && !self.group_start_id.is_empty() {
            return Err(BrokerError::invalid(
                "group_start_id",
                "only applies with `create_group`",
            ));
        }
        let create_from = self
            .create_group
            .then(|| parse::<StartId>("group_start_id", self.group_start_id))
            .transpose()?;
        let ack_deadline = match self.ack_deadline_ms {
            0 => limits.default_ack_deadline,
            ms => delay("ack_deadline_ms", ms)?,
        };
        let dead_letter_stream = match self.dead_letter_stream {
            "" => None,
            stream => Some(name("dead_letter_stream", stream, limits)?),
        };
        Ok(GroupMembership {
            group,
            consumer,
            create_from,
            no_ack: self.no_ack,
            generated_name,
            delivery: DeliveryPolicy {
                ack_deadline,
                backoff,
                max_deliveries: u64::from(
                    self.max_deliveries.unwrap_or(limits.default_max_deliveries),
                ),
                dead_letter_stream,
            },
            max_in_flight,
            requested: Requested {
                ack_deadline: self.ack_deadline_ms != 0,
                max_deliveries: self.max_deliveries.is_some(),
                dead_letter_stream: !self.dead_letter_stream.is_empty(),
                // The caller says, for the calls that have the setting.
                max_in_flight: false,
                flow_controlled: false,
            },
            paused: false,
            filter: None,
        })
    }
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

/// A Subscribe request, with the consumer name generated when left empty.
/// A Subscribe request; group members redeliver with `backoff` (the server's).
pub fn subscription(
    request: pb::SubscribeRequest,
    limits: &Limits,
    backoff: Backoff,
) -> BrokerResult<SubscriptionSpec> {
    let options = read_options!(request);
    let streams = options.stream_names(limits)?;
    let batch_size = count(
        "batch_size",
        request.batch_size,
        limits.default_batch_size,
        limits,
    )?;
    let reading = if !options.is_group_mode() {
        Reading::Tail(options.tail_starts()?)
    } else {
        if let Some(i) = request.streams.iter().position(|s| !s.after_id.is_empty()) {
            return Err(BrokerError::invalid(
                format!("streams[{i}].after_id"),
                "must be empty in group mode: the group's position decides where reading starts",
            ));
        }
        let (consumer, generated) = match request.consumer.as_str() {
            "" => (generate_consumer_name(), true),
            consumer => (member_name(consumer, limits)?, false),
        };
        let max_in_flight = request
            .max_in_flight
            .unwrap_or(limits.default_max_in_flight);
        let mut membership = options.membership(
            consumer,
            generated,
            u64::from(max_in_flight),
            backoff,
            limits,
        )?;
        membership.requested.max_in_flight = request.max_in_flight.is_some();
        membership.requested.flow_controlled = true;
        Reading::Group {
            membership,
            // A subscription starts by replaying what this consumer holds.
            cursors: replay_everything(streams.len()),
        }
    };
    if request.group.is_empty() && request.max_in_flight.is_some() {
        return Err(BrokerError::invalid(
            "max_in_flight",
            "only applies in group mode; set `group` too",
        ));
    }
    Ok(SubscriptionSpec {
        member: MemberSpec {
            streams,
            reading,
            replay: Replay::Continuous,
        },
        batch_size,
    })
}

/// A Fetch request. `deadline` is the time the client gave the call (`grpc-timeout`), if any:
/// the wait ends well inside it, so that an empty batch arrives instead of DEADLINE_EXCEEDED.
pub fn fetch(
    request: pb::FetchRequest,
    deadline: Option<Duration>,
    limits: &Limits,
    backoff: Backoff,
) -> BrokerResult<FetchSpec> {
    let options = read_options!(request);
    let streams = options.stream_names(limits)?;
    let count = count("count", request.count, limits.default_batch_size, limits)?;
    let reading = if !options.is_group_mode() {
        Reading::Tail(options.tail_starts()?)
    } else {
        if request.consumer.is_empty() {
            return Err(BrokerError::invalid(
                "consumer",
                "is required in group mode: fetched messages stay pending for that consumer until acknowledged",
            ));
        }
        let membership = options.membership(
            member_name(&request.consumer, limits)?,
            false,
            0,
            backoff,
            limits,
        )?;
        let cursors = request
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| match s.after_id.as_str() {
                "" | ">" => Ok(GroupCursor::New),
                id => parse(&format!("streams[{i}].after_id"), id).map(GroupCursor::PendingAfter),
            })
            .collect::<BrokerResult<_>>()?;
        Reading::Group {
            membership,
            cursors,
        }
    };
    Ok(FetchSpec {
        member: MemberSpec {
            streams,
            reading,
            replay: Replay::OnePage,
        },
        count,
        wait: fetch_wait(request.wait_ms, limits.max_fetch_wait, deadline),
    })
}

/// The wait a fetch may use: what the client asked, at most the server limit, and ending before
/// the client's deadline with a margin for the reply to travel (a tenth, at least 50 ms).
pub fn fetch_wait(requested_ms: u32, max: Duration, deadline: Option<Duration>) -> Duration {
    let mut wait = Duration::from_millis(u64::from(requested_ms)).min(max);
    if let Some(deadline) = deadline {
        let margin = (deadline / 10).max(Duration::from_millis(50));
        wait = wait.min(deadline.saturating_sub(margin));
    }
    wait
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

/// Stores `traceparent` with every message that does not carry one already.
pub fn attach_traceparent(append: &mut Append, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    for message in &mut append.messages {
        if !message.fields.iter().any(|f| f.name == TRACEPARENT) {
            message.fields.push(Field {
                name: TRACEPARENT.to_owned(),
                value: bytes::Bytes::copy_from_slice(traceparent.as_bytes()),
            });
        }
    }
}
