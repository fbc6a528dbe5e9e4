//! `streamgate subscription create|get|update|list|delete|seek|pause|resume`: stored
//! subscriptions with typed flags, answered as `streamgate admin` would print them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use prost::Message;

use super::Transport;
use super::admin::call_named;
use super::render::Output;
use crate::grpc::pb;

/// The subscription commands.
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Store a subscription; the group is created (from `--from`) where missing.
    Create {
        #[command(flatten)]
        name: NameArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Where a newly created group starts: `$` (new messages only), `0`, or an id.
        #[arg(long, default_value = "$")]
        from: String,
    },
    /// Show a stored subscription.
    Get(NameArgs),
    /// Change the given policy fields; members apply them within a second.
    Update {
        #[command(flatten)]
        name: NameArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List stored subscriptions.
    List {
        /// Only this stream's or topic's.
        #[arg(long, default_value = "")]
        stream: String,
    },
    /// Delete a stored subscription (the group stays).
    Delete(NameArgs),
    /// Move the group to an id or a point in time.
    Seek {
        #[command(flatten)]
        name: NameArgs,
        /// Deliver what comes after this id (`0`: the whole stream).
        #[arg(long, conflicts_with = "since")]
        after: Option<String>,
        /// Deliver what was added since this time: RFC 3339 (`2026-12-01T10:42:00Z`) or a
        /// duration ago (`15m`).
        #[arg(long)]
        since: Option<String>,
        /// Also acknowledge what is pending at or before that point.
        #[arg(long)]
        clear_pending: bool,
    },
    /// Stop all deliveries; pending messages keep their state.
    Pause(NameArgs),
    /// Deliver again.
    Resume(NameArgs),
}

/// Which subscription.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Stream or topic.
    pub stream: String,
    /// Consumer group.
    pub group: String,
}

/// Policy fields; those not given keep their value (update) or take the server's default
/// (create).
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// How long a delivered message may go unacknowledged (`30s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ack_deadline: Option<Duration>,
    /// Backoff before the second delivery.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub backoff_min: Option<Duration>,
    /// Longest backoff.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub backoff_max: Option<Duration>,
    /// Deliveries before a message is dead-lettered (0: no limit).
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// Where dead letters go (`""`: beside the stream).
    #[arg(long)]
    pub dead_letter_stream: Option<String>,
    /// Most messages one member holds unacknowledged (0: no limit).
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Deliver only matching messages (`""`: no filter); see README's "Filters".
    #[arg(long)]
    pub filter: Option<String>,
    /// Deliver messages with the same ordering key in order, one at a time per key.
    #[arg(long)]
    pub ordered: Option<bool>,
    /// Send expired messages to the dead-letter stream (else they are only acknowledged).
    #[arg(long)]
    pub dead_letter_expired: Option<bool>,
}

fn ms(duration: Option<Duration>, flag: &str) -> anyhow::Result<Option<u32>> {
    duration
        .map(|d| u32::try_from(d.as_millis()).with_context(|| format!("{flag} is too long")))
        .transpose()
}

impl PolicyArgs {
    fn policy(&self) -> anyhow::Result<pb::SubscriptionPolicy> {
        Ok(pb::SubscriptionPolicy {
            ack_deadline_ms: ms(self.ack_deadline, "--ack-deadline")?,
            backoff_min_ms: ms(self.backoff_min, "--backoff-min")?,
            backoff_max_ms: ms(self.backoff_max, "--backoff-max")?,
            max_deliveries: self.max_deliveries,
            dead_letter_stream: self.dead_letter_stream.clone(),
            max_in_flight: self.max_in_flight,
            paused: None,
            filter: self.filter.clone(),
            ordered: self.ordered,
            dead_letter_expired: self.dead_letter_expired,
        })
    }
}

/// `--since` as milliseconds since the Unix epoch.
fn since_ms(text: &str) -> anyhow::Result<u64> {
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => {
            let ago = humantime::parse_duration(text).with_context(|| {
                format!(
                    "--since `{text}` is neither a time (2026-12-01T10:42:00Z) nor a duration (15m)"
                )
            })?;
            SystemTime::now() - ago
        }
    };
    Ok(u64::try_from(at.duration_since(UNIX_EPOCH)?.as_millis())?)
}

fn name(args: &NameArgs) -> pb::SubscriptionName {
    pb::SubscriptionName {
        stream: args.stream.clone(),
        group: args.group.clone(),
    }
}

fn update(args: &NameArgs, policy: pb::SubscriptionPolicy) -> (&'static str, Vec<u8>) {
    let request = pb::UpdateSubscriptionRequest {
        stream: args.stream.clone(),
        group: args.group.clone(),
        policy: Some(policy),
    };
    ("UpdateSubscription", request.encode_to_vec())
}

fn paused(args: &NameArgs, paused: bool) -> (&'static str, Vec<u8>) {
    update(
        args,
        pb::SubscriptionPolicy {
            paused: Some(paused),
            ..Default::default()
        },
    )
}

/// Runs one subscription command.
pub(super) async fn run(
    channel: Transport,
    command: SubscriptionCommand,
    out: &mut Output,
) -> anyhow::Result<()> {
    use SubscriptionCommand as C;
    let (rpc, request) = match &command {
        C::Create { name, policy, from } => (
            "CreateSubscription",
            pb::CreateSubscriptionRequest {
                stream: name.stream.clone(),
                group: name.group.clone(),
                policy: Some(policy.policy()?),
                start_id: from.clone(),
            }
            .encode_to_vec(),
        ),
        C::Get(args) => ("GetSubscription", self::name(args).encode_to_vec()),
        C::Update { name, policy } => update(name, policy.policy()?),
        C::List { stream } => (
            "ListSubscriptions",
            pb::ListSubscriptionsRequest {
                stream: stream.clone(),
            }
            .encode_to_vec(),
        ),
        C::Delete(args) => ("DeleteSubscription", self::name(args).encode_to_vec()),
        C::Seek {
            name,
            after,
            since,
            clear_pending,
        } => {
            use pb::seek_subscription_request::Target;
            let target = match (after, since) {
                (Some(id), _) => Target::AfterId(id.clone()),
                (None, Some(since)) => Target::SinceMs(since_ms(since)?),
                (None, None) => bail!("say where to: --after <id> or --since <time>"),
            };
            (
                "SeekSubscription",
                pb::SeekSubscriptionRequest {
                    stream: name.stream.clone(),
                    group: name.group.clone(),
                    target: Some(target),
                    clear_pending: *clear_pending,
                }
                .encode_to_vec(),
            )
        }
        C::Pause(args) => paused(args, true),
        C::Resume(args) => paused(args, false),
    };
    out.response(call_named(channel, rpc, request).await?);
    Ok(())
}
