//! Calls: the loops every transport runs around the delivery core, written once and spoken by
//! none of the wire formats. A transport (`grpc::broker`, `grpc::pubsub`) validates and
//! converts its requests, then uses these:
//! - [`subscribe`]: the pump of a subscription or session, a `select!` over shutdown, the client
//!   going away and the next batch; heartbeats, credit, lease renewal of buffered messages,
//!   hand-back on exit;
//! - [`frames`]: what a pump has ready, grouped into frames within the client's limits;
//! - [`session`]: a pump and a settle loop on one call (Consume, StreamingPull), the transport
//!   saying only how its wire spells requests and answers;
//! - [`settle`]: acks, nacks and extensions in domain terms, applied for one member;
//! - [`fetch`]: one batch per call (Fetch, Pull), with its one rule for waiting within the
//!   client's deadline.

mod guards;

pub mod fetch;
pub mod frames;
pub mod session;
pub mod settle;
pub mod subscribe;

pub use subscribe::{Event, EventReceiver, PumpLimits, Pumps, Session, SubscribeSpec};
