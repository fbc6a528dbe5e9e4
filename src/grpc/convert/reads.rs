//! The reading options Subscribe, Consume and Fetch share, and the two requests built on them.

use std::collections::HashSet;
use std::time::Duration;

use super::{check_len, count, delay, member_name, name, parse};
use crate::calls::SubscribeSpec;
use crate::calls::fetch::{FetchSpec, wait_within};
use crate::config::Limits;
use crate::delivery::{
    GroupMembership, MemberSpec, ReadMode, Replay, Requested, generate_consumer_name,
    replay_everything,
};
use crate::error::{BrokerError, BrokerResult};
use crate::grpc::pb;
use crate::model::{Backoff, DeliveryPolicy, StartId};
use crate::store::GroupCursor;

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
            ordered: false,
            dead_letter_expired: false,
        })
    }
}

/// A Subscribe request, with the consumer name generated when left empty; group members
/// redeliver with `backoff` (the server's).
pub fn subscription(
    request: pb::SubscribeRequest,
    limits: &Limits,
    backoff: Backoff,
) -> BrokerResult<SubscribeSpec> {
    let options = read_options!(request);
    let streams = options.stream_names(limits)?;
    let batch_size = count(
        "batch_size",
        request.batch_size,
        limits.default_batch_size,
        limits,
    )?;
    let reading = if !options.is_group_mode() {
        ReadMode::Tail(options.tail_starts()?)
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
        ReadMode::Group {
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
    Ok(SubscribeSpec {
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
        ReadMode::Tail(options.tail_starts()?)
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
        ReadMode::Group {
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
        wait: wait_within(
            Duration::from_millis(u64::from(request.wait_ms)),
            limits.max_fetch_wait,
            deadline,
        ),
    })
}
