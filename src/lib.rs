//! streamgate: a gRPC message broker that puts Redis Streams behind a typed API.
//!
//! # Layout
//! - [`auth`]: principals (tokens, client certificates), permissions on stream patterns.
//! - [`cli`]: the client commands of the binary (produce, subscribe, ack, nack, admin, health).
//! - [`config`]: the command line and environment (`streamgate serve --help`).
//! - [`server`]: binds the services, health and reflection together and drains on shutdown.
//! - [`grpc`]: one file per service; each handler validates and converts the request
//!   ([`grpc::convert`]), calls the store or the subscription pump, and converts the answer.
//! - [`subscription`]: the Subscribe pump, which turns reads into a response stream and stops
//!   when the client leaves or the server shuts down.
//! - [`fetch`]: Fetch, one batch per call, with an optional wait for new entries.
//! - [`reading`]: the reads Subscribe and Fetch share (group preparation, XREAD/XREADGROUP into
//!   deliveries), so both keep the same promises.
//! - [`redelivery`]: at-least-once delivery for groups: ack deadlines, backoff, nack, dead
//!   letters, hand-back, consumer clean-up and flow control, all kept in Redis's pending lists.
//! - [`dead_letters`]: listing and replaying dead-letter streams (Admin).
//! - [`topics`]: partitioned topics (N streams spread over a cluster's shards).
//! - [`store`]: the only code that talks to Redis, behind the [`store::Store`] trait.
//! - [`metrics`]: Prometheus counters, histograms and sampled gauges (`--metrics-addr`).
//! - [`model`]: domain types (ids, entries, trim policies) shared by all of the above.
//! - [`error`]: the broker's error type and its single mapping to gRPC status codes.
//!
//! A Produce call travels `grpc::broker` → `grpc::convert` (validation) → `Store::append` →
//! one pipelined round trip to Redis → ids back; a Subscribe call starts a task in
//! `subscription` that reads through the same `Store` and feeds a bounded channel that tonic
//! drains into the response stream.

pub mod auth;
pub mod cli;
pub mod config;
pub mod dead_letters;
pub mod error;
pub mod fetch;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod reading;
pub mod redelivery;
pub mod server;
pub mod store;
pub mod subscription;
pub mod topics;
