//! `streamgate retention set|get|apply`: a stream's retention policy with typed flags,
//! answered as `streamgate admin` would print it.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use prost::Message;

use super::Transport;
use super::admin::call_named;
use super::render::Output;
use crate::grpc::pb;

/// The retention commands.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Store a stream's (or topic's) retention policy; no limits at all removes it.
    Set {
        /// Stream or topic.
        stream: String,
        /// Delete what every consumer group has acknowledged.
        #[arg(long)]
        acked: bool,
        /// Delete entries older than this (`1h`, `7d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_age: Option<Duration>,
        /// With `--max-age`: keep entries still pending in some group.
        #[arg(long)]
        keep_pending: bool,
        /// Keep at most this many entries.
        #[arg(long)]
        max_len: Option<u64>,
        /// How long a dedupe key is remembered (default 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        dedupe_window: Option<Duration>,
    },
    /// Show a stream's retention policy.
    Get(StreamArg),
    /// Apply a stream's retention policy now and print what it deleted.
    Apply(StreamArg),
}

/// Which stream.
#[derive(Debug, Args)]
pub struct StreamArg {
    /// Stream or topic.
    pub stream: String,
}

/// A duration flag in milliseconds; 0 when not given.
fn ms(duration: Option<Duration>, flag: &str) -> anyhow::Result<u64> {
    Ok(duration
        .map(|d| u64::try_from(d.as_millis()).with_context(|| format!("{flag} is too long")))
        .transpose()?
        .unwrap_or(0))
}

/// Runs one retention command.
pub(super) async fn run(
    channel: Transport,
    command: RetentionCommand,
    out: &mut Output,
) -> anyhow::Result<()> {
    use RetentionCommand as C;
    let named = |stream: &str| pb::GetRetentionRequest {
        stream: stream.to_owned(),
    };
    let (rpc, request) = match &command {
        C::Set {
            stream,
            acked,
            max_age,
            keep_pending,
            max_len,
            dedupe_window,
        } => (
            "SetRetention",
            pb::SetRetentionRequest {
                stream: stream.clone(),
                policy: Some(pb::RetentionPolicy {
                    acked: *acked,
                    max_age_ms: ms(*max_age, "--max-age")?,
                    keep_pending: *keep_pending,
                    max_len: max_len.unwrap_or(0),
                    dedupe_window_ms: ms(*dedupe_window, "--dedupe-window")?,
                }),
            }
            .encode_to_vec(),
        ),
        C::Get(arg) => ("GetRetention", named(&arg.stream).encode_to_vec()),
        C::Apply(arg) => ("ApplyRetention", named(&arg.stream).encode_to_vec()),
    };
    out.response(call_named(channel, rpc, request).await?);
    Ok(())
}
