//! streamgate: a gRPC message broker that puts Redis Streams behind a typed API.
//!
//! # Layout
//! Layers point one way (checked by `tests/layers.rs`): transport → calls → core → store → base.
//!
//! Transport, translation only:
//! - [`grpc`]: the Broker and Admin services (a folder each) and Google's Pub/Sub API
//!   ([`grpc::pubsub`]: Publisher and Subscriber over the same core, for Google's own client
//!   libraries, speaking no streamgate proto); each handler authorizes, converts the request
//!   ([`grpc::convert`] for streamgate's), calls the calls layer or the core, and converts the
//!   answer.
//! - [`cli`]: the binary's command line: `serve`, and the client commands (produce, subscribe,
//!   consume, ack, nack, subscription, admin, health).
//! - [`server`]: binds the services, health and reflection together and drains on shutdown;
//!   sets up the store, TLS and authentication from the flags.
//! - [`config`]: the server's flags and environment (`streamgate serve --help`) and limits.
//! - [`auth`]: principals (tokens, client certificates), permissions on stream patterns, the
//!   caller of the call being served.
//! - [`console`]: the operators' web page (`--console-addr`), served with gRPC-Web, and the
//!   last hour of lengths, lags and rates it charts ([`console::history`]).
//!
//! Calls, the loops every transport shares, in domain terms ([`calls`]):
//! - [`calls::subscribe`]: the pump of Subscribe, Consume and StreamingPull, a `select!` over
//!   shutdown, the client going away and the next batch; heartbeats, credit, lease renewal of
//!   buffered messages, hand-back on exit.
//! - [`calls::session`]: a pump and one settle loop on one call (Consume, StreamingPull); a
//!   transport says only how its wire spells requests and answers ([`calls::session::SessionWire`]),
//!   settling is [`calls::settle`].
//! - [`calls::frames`]: ready messages grouped into frames.
//! - [`calls::fetch`]: Fetch and Pull, one batch per call, with an optional wait for new entries.
//!
//! Core:
//! - [`delivery`]: a member's next batch (own pending entries, in-flight limit, redeliveries,
//!   new entries), Ack/Nack/Extend, producing ([`delivery::produce`]: routing, trace context,
//!   delayed or appended), flow control, redelivery and its sweep lease, stored subscriptions
//!   (policy, pause, filter; created and deleted with their group), seek, topics, listing and
//!   replaying dead letters ([`delivery::dead_letters`]); knows nothing of tonic.
//! - [`error`]: the broker's error type and its single mapping to gRPC status codes.
//! - [`ops::gauges`]: gauges sampled on a timer (pool, group pending and lag).
//!
//! Store and base:
//! - [`store`]: the only code that talks to Redis, behind four role traits ([`store::Streams`],
//!   [`store::Inspect`], [`store::Scripts`], [`store::Registry`]; [`store::Store`] is all four).
//! - [`model`]: domain types (ids, entries, delivery policy) shared by all of the above.
//! - [`ops::metrics`]: Prometheus counters and histograms (`--metrics-addr`).
//! - [`ops::telemetry`]: OpenTelemetry traces (`OTEL_EXPORTER_OTLP_ENDPOINT`), context carried
//!   in message fields from Produce to delivery.
//!
//! A Produce call travels `grpc::broker` → `grpc::convert` (validation) → `DeliveryCore::produce`
//! (topics, the trace context; held if delayed) → `DeliveryCore::append_one`, which shares one
//! pipelined round trip to Redis with the other calls waiting at that moment (the appender's
//! group commit; a ProduceStream's requests go through `DeliveryCore::append`) → ids back.
//! Pub/Sub's Publish takes the same path from `grpc::pubsub`. A group Subscribe call resolves
//! its topics through the core and starts a pump in `calls::subscribe`, which joins the group
//! (`DeliveryCore::join`) and sends each `Member::next_batch` down a bounded channel that tonic
//! drains into the response stream; an Ack goes through `DeliveryCore::ack`, which frees the
//! holder's room and wakes it. A Consume call (or a StreamingPull) runs the same pump within the
//! client's credit, beside the session's settle loop, which applies the acks, nacks and
//! extensions sent on the stream and answers what became of each id.

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
