//! The `streamgate` binary's command line ([`Cli`]): `serve` (the broker, configured by
//! [`ServeConfig`]) and the client commands `produce`, `subscribe`, `consume`, `ack`, `nack`,
//! `subscription ...`, `admin <rpc>` and `health`, for people at a terminal and for scripts.
//!
//! Every command is a plain gRPC client of a running broker (`--server`), so what it shows is
//! exactly what any other client would see. Output is aligned text by default and one JSON
//! object per line with `--json`. `admin` is generic: it finds the RPC and its request type in
//! the broker's own descriptors, so every Admin RPC is reachable without code per RPC.

mod admin;
mod consume;
mod render;
mod retention;
mod subscription;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

use crate::config::ServeConfig;
use crate::grpc::pb;
use crate::grpc::pb::broker_client::BrokerClient;
use render::Output;

/// streamgate: Redis Streams behind a typed gRPC API.
#[derive(Debug, Parser)]
#[command(name = "streamgate", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,

    /// How client commands reach the broker and print (ignored by `serve`).
    #[command(flatten)]
    pub client: ClientOptions,
}

/// The binary's subcommands: the broker itself, and a client of it for people and scripts.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve(Box<ServeConfig>),
    /// Client commands (produce, subscribe, ack, nack, admin, health) against a running broker.
    #[command(flatten)]
    Client(ClientCommand),
}

/// Where the broker is and how to print; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// The broker: host:port or http://host:port.
    #[arg(
        long,
        env = "STREAMGATE_SERVER",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub server: String,

    /// One JSON object per line instead of aligned text.
    #[arg(long, global = true)]
    pub json: bool,

    /// How long connecting (and each unary call) may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,

    /// Bearer token sent with every call (when the broker has a principals file).
    #[arg(long, env = "STREAMGATE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Debug, Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The channel every client command talks through.
type Transport = tonic::service::interceptor::InterceptedService<Channel, Token>;

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Append one message: `streamgate produce orders item=book qty=2` (`name=@file` reads the
    /// value from a file).
    Produce(ProduceArgs),
    /// Print messages as they arrive; in group mode, ack each after printing it.
    Subscribe(SubscribeArgs),
    /// Acknowledge messages of a group.
    Ack(SettleArgs),
    /// Give messages back to their group for redelivery.
    Nack(NackArgs),
    /// Call any Admin RPC: `streamgate admin list-pending stream=orders group=billing`;
    /// `streamgate admin` alone lists them with their fields.
    Admin(AdminArgs),
    /// Exit 0 if the broker reports SERVING, 1 otherwise (for container health checks).
    Health(HealthArgs),
    /// Retention that respects consumers: delete what every group acknowledged, by age, by
    /// length.
    Retention {
        /// What to do.
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
    /// Stored subscriptions: a group with the delivery policy every member applies.
    Subscription {
        /// What to do.
        #[command(subcommand)]
        command: subscription::SubscriptionCommand,
    },
    /// Print messages of a group as they arrive, over the bidirectional Consume call, acking
    /// each batch on the same stream and reporting acks that did not take.
    Consume(consume::ConsumeArgs),
}

/// `streamgate produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Stream to append to.
    pub stream: String,
    /// Fields, `name=value` or `name=@path` (value read from the file), in order.
    #[arg(required = true)]
    pub fields: Vec<String>,
    /// An explicit id (`<ms>-<seq>` or `<ms>-*`); default: generated.
    #[arg(long, default_value = "")]
    pub id: String,
    /// Trim the stream to about this many entries while appending.
    #[arg(long)]
    pub max_len: Option<u64>,
    /// Partition key, when the stream is a partitioned topic.
    #[arg(long)]
    pub key: Option<String>,
    /// Ordering key: ordered subscriptions deliver messages with the same key in order.
    #[arg(long, default_value = "")]
    pub ordering_key: String,
    /// Dedupe key: producing again with the same key within the stream's dedupe window stores
    /// nothing and prints the first message's id.
    #[arg(long, default_value = "")]
    pub dedupe_key: String,
    /// Not delivered after this long (`30s`, `10m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// Appended to the stream (and delivered) only after this long (`10m`); prints the token.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<std::time::Duration>,
}

/// `streamgate subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Streams to read.
    #[arg(required = true)]
    pub streams: Vec<String>,
    /// Read as a member of this consumer group (else: tail every message).
    #[arg(long)]
    pub group: Option<String>,
    /// Consumer name in the group (default: generated by the broker).
    #[arg(long, default_value = "")]
    pub consumer: String,
    /// Tail mode: start after this id (`$`: only new messages, `0`: from the start). Group
    /// mode: where a group created now starts.
    #[arg(long, default_value = "$")]
    pub from: String,
    /// Group mode: fail if the group does not exist, instead of creating it.
    #[arg(long)]
    pub no_create_group: bool,
    /// Group mode: do not ack after printing (messages stay pending and come back).
    #[arg(long)]
    pub no_ack: bool,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<usize>,
}

/// `streamgate ack`.
#[derive(Debug, Args)]
pub struct SettleArgs {
    /// Stream the messages came from.
    pub stream: String,
    /// Ids to settle.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Consumer group.
    #[arg(long)]
    pub group: String,
}

/// `streamgate nack`.
#[derive(Debug, Args)]
pub struct NackArgs {
    /// What to give back.
    #[command(flatten)]
    pub settle: SettleArgs,
    /// Only messages this consumer holds.
    #[arg(long, default_value = "")]
    pub consumer: String,
    /// Redeliver after this long (default: the backoff for each message's delivery count).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
}

/// `streamgate admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The RPC, in kebab-case (`list-pending`) or as in the proto (`ListPending`).
    pub rpc: Option<String>,
    /// Request fields, `name=value` (camelCase or snake_case names; JSON values such as
    /// `{"maxLen":5}` for messages; a repeated field may be given several times or as `a,b`).
    pub fields: Vec<String>,
}

/// `streamgate health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Service to ask about ("" = the whole server).
    #[arg(long, default_value = "")]
    pub service: String,
}

/// Runs one client command; the exit code is the command's answer (health), errors are
/// printed by the caller.
pub async fn run(options: &ClientOptions, command: ClientCommand) -> anyhow::Result<ExitCode> {
    let token = options
        .token
        .as_ref()
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("the token holds characters that cannot go in a header")?;
    let channel = Transport::new(connect(options).await?, Token(token));
    let mut out = Output::new(options.json);
    match command {
        ClientCommand::Produce(args) => produce(channel, args, &mut out).await?,
        ClientCommand::Subscribe(args) => subscribe(channel, args, &mut out).await?,
        ClientCommand::Ack(args) => ack(channel, args, &mut out).await?,
        ClientCommand::Nack(args) => nack(channel, args, &mut out).await?,
        ClientCommand::Admin(args) => admin::run(channel, args, &mut out).await?,
        ClientCommand::Health(args) => return health(channel, args, &mut out).await,
        ClientCommand::Retention { command } => {
            retention::run(channel, command, &mut out).await?;
        }
        ClientCommand::Subscription { command } => {
            subscription::run(channel, command, &mut out).await?;
        }
        ClientCommand::Consume(args) => consume::run(channel, args, &mut out).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect(options: &ClientOptions) -> anyhow::Result<Channel> {
    let uri = if options.server.contains("://") {
        options.server.clone()
    } else {
        format!("http://{}", options.server)
    };
    Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid --server `{}`", options.server))?
        .connect_timeout(options.timeout)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the broker at {uri}"))
}

/// `name=value` / `name=@path` into a field.
fn field(text: &str) -> anyhow::Result<pb::Field> {
    let (name, value) = text
        .split_once('=')
        .with_context(|| format!("`{text}` is not name=value"))?;
    let value = match value.strip_prefix('@') {
        Some(path) => std::fs::read(PathBuf::from(path))
            .with_context(|| format!("cannot read the value of `{name}` from {path}"))?,
        None => value.as_bytes().to_vec(),
    };
    Ok(pb::Field {
        name: name.to_owned(),
        value: value.into(),
    })
}

async fn produce(channel: Transport, args: ProduceArgs, out: &mut Output) -> anyhow::Result<()> {
    let fields = args
        .fields
        .iter()
        .map(|f| field(f))
        .collect::<anyhow::Result<_>>()?;
    let request = pb::ProduceRequest {
        stream: args.stream.clone(),
        messages: vec![pb::OutgoingMessage {
            id: args.id,
            fields,
            ordering_key: args.ordering_key,
            dedupe_key: args.dedupe_key,
            ttl_ms: args
                .ttl
                .map(|ttl| u64::try_from(ttl.as_millis()).context("--ttl is too long"))
                .transpose()?
                .unwrap_or(0),
            expire_at_ms: 0,
        }],
        trim: args.max_len.map(|n| pb::TrimPolicy {
            threshold: Some(pb::trim_policy::Threshold::MaxLen(n)),
            approximate: true,
            limit: 0,
        }),
        require_existing_stream: false,
        partition_key: args.key.unwrap_or_default(),
        atomic: false,
        deliver_at_ms: 0,
        delay_ms: args
            .delay
            .map(|delay| u64::try_from(delay.as_millis()).context("--delay is too long"))
            .transpose()?
            .unwrap_or(0),
    };
    let ids = BrokerClient::new(channel)
        .produce(request)
        .await?
        .into_inner()
        .ids;
    out.produced(&args.stream, &ids);
    Ok(())
}

async fn subscribe(
    channel: Transport,
    args: SubscribeArgs,
    out: &mut Output,
) -> anyhow::Result<()> {
    let group = args.group.clone().unwrap_or_default();
    let group_mode = !group.is_empty();
    let request = pb::SubscribeRequest {
        streams: args
            .streams
            .iter()
            .map(|stream| pb::StreamStart {
                stream: stream.clone(),
                after_id: if group_mode {
                    String::new()
                } else {
                    args.from.clone()
                },
            })
            .collect(),
        group: group.clone(),
        consumer: if group_mode {
            args.consumer.clone()
        } else {
            String::new()
        },
        create_group: group_mode && !args.no_create_group,
        group_start_id: if group_mode && !args.no_create_group {
            args.from.clone()
        } else {
            String::new()
        },
        ..Default::default()
    };
    let mut client = BrokerClient::new(channel);
    let mut stream = client.subscribe(request).await?.into_inner();
    let mut printed = 0;
    while let Some(item) = stream.message().await? {
        let messages = match item.event {
            Some(pb::subscribe_response::Event::Started(started)) => {
                out.started(&started);
                continue;
            }
            Some(pb::subscribe_response::Event::Message(message)) => vec![message],
            Some(pb::subscribe_response::Event::Messages(batch)) => batch.messages,
            // Heartbeats only keep proxies from cutting a quiet stream.
            Some(pb::subscribe_response::Event::Heartbeat(_)) | None => continue,
        };
        for message in messages {
            out.message(&message);
            if group_mode && !args.no_ack {
                client
                    .ack(pb::AckRequest {
                        stream: message.stream.clone(),
                        group: group.clone(),
                        ids: vec![message.id.clone()],
                    })
                    .await?;
            }
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn ack(channel: Transport, args: SettleArgs, out: &mut Output) -> anyhow::Result<()> {
    let acknowledged = BrokerClient::new(channel)
        .ack(pb::AckRequest {
            stream: args.stream,
            group: args.group,
            ids: args.ids,
        })
        .await?
        .into_inner()
        .acknowledged;
    out.count("acknowledged", acknowledged);
    Ok(())
}

async fn nack(channel: Transport, args: NackArgs, out: &mut Output) -> anyhow::Result<()> {
    let delay_ms = args
        .delay
        .map(|d| u32::try_from(d.as_millis()).context("--delay is too long"))
        .transpose()?;
    let ids = BrokerClient::new(channel)
        .nack(pb::NackRequest {
            stream: args.settle.stream,
            group: args.settle.group,
            ids: args.settle.ids,
            consumer: args.consumer,
            delay_ms,
        })
        .await?
        .into_inner()
        .ids;
    out.count("nacked", ids.len() as u64);
    Ok(())
}

async fn health(
    channel: Transport,
    args: HealthArgs,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: args.service,
        })
        .await?
        .into_inner()
        .status();
    out.health(status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
