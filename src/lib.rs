//! streamgate: a gRPC message broker that puts Redis Streams behind a typed API.
//!
//! # Layout
//! Layers point one way (checked by `tests/layers.rs`): transport → calls → core → store → base.
//!
//! Transport:
//! - [`grpc`]: the Broker and Admin services (a folder each) and Google's Pub/Sub API
//!   ([`grpc::pubsub`]: Publisher and Subscriber over the same core, for Google's own client
//!   libraries); each handler authorizes, converts the request ([`grpc::convert`]), calls the
//!   core, and converts the answer.
//! - [`cli`]: the binary's command line: `serve`, and the client commands (produce, subscribe,
//!   consume, ack, nack, subscription, admin, health).
//! - [`server`]: binds the services, health and reflection together and drains on shutdown.
//! - [`config`]: the server's flags and environment (`streamgate serve --help`) and limits.
//! - [`auth`]: principals (tokens, client certificates), permissions on stream patterns.
//! - [`ops::gauges`]: gauges sampled on a timer (pool, group pending and lag).
//! - [`console`]: the operators' web page (`--console-addr`), served with gRPC-Web, and the
//!   last hour of lengths, lags and rates it charts ([`console::history`]).
//!
//! Calls, thin loops around the core that every transport shares ([`calls`]):
//! - [`calls::subscribe`]: the pump of Subscribe, Consume and StreamingPull, a `select!` over
//!   shutdown, the client going away and the next batch; heartbeats, credit, lease renewal of
//!   buffered messages, hand-back on exit.
//! - [`calls::frames`]: ready messages grouped into frames.
//! - [`calls::fetch`]: Fetch and Pull, one batch per call, with an optional wait for new entries.
//!
//! Core:
//! - [`delivery`]: a member's next batch (own pending entries, in-flight limit, redeliveries,
//!   new entries), Ack/Nack/Extend, flow control, redelivery and its sweep lease, stored
//!   subscriptions (policy, pause, filter), seek, topics, listing and replaying dead letters
//!   ([`delivery::dead_letters`]); knows nothing of tonic.
//! - [`error`]: the broker's error type and its single mapping to gRPC status codes.
//!
//! Store and base:
//! - [`store`]: the only code that talks to Redis, behind the [`store::Store`] trait.
//! - [`model`]: domain types (ids, entries, delivery policy) shared by all of the above.
//! - [`ops::metrics`]: Prometheus counters and histograms (`--metrics-addr`).
//! - [`ops::telemetry`]: OpenTelemetry traces (`OTEL_EXPORTER_OTLP_ENDPOINT`), context carried
//!   in message fields from Produce to delivery.
//!
//! A Produce call travels `grpc::broker` → `grpc::convert` (validation) → `DeliveryCore::route`
//! (topics) → `DeliveryCore::append_one`, which shares one pipelined round trip to Redis with
//! the other calls waiting at that moment (the appender's group commit; a ProduceStream's
//! requests go through `DeliveryCore::append`) → ids back. A group
//! Subscribe call resolves its topics through the core and starts a pump in `calls::subscribe`,
//! which joins the group (`DeliveryCore::join`) and sends each `Member::next_batch` down a
//! bounded channel that tonic drains into the response stream; an Ack goes through
//! `DeliveryCore::ack`, which frees the holder's room and wakes it. A Consume call runs the same
//! pump within the client's credit, beside a loop that turns acks, nacks and extensions sent on
//! the stream into core calls and confirmations.

#![warn(clippy::disallowed_methods)]

pub mod auth;
pub mod calls;
pub mod cli;
pub mod config;
pub mod console;
pub mod delivery;
pub mod error;
pub mod grpc;
pub mod model;
pub mod ops;
pub mod server;
pub mod store;
