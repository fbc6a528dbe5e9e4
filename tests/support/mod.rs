//! Guards for the real processes integration tests run against: a `redis-server` of their own on
//! an ephemeral loopback port (or a cluster of them), the broker in-process or as the real binary,
//! a proxy that injects network faults, and the requests and readers (Subscribe, Consume) a
//! test client uses.
//!
//! No mocks, no shared state: each test starts its own Redis, so tests can run in parallel and
//! may kill and restart it at will. The machine's shared Redis on 6379 is never touched.
// Each test binary uses a part of this: what one leaves unused is not dead.
#![allow(dead_code, unreachable_pub, unused_imports)]

mod backends;
mod broker;
mod client;
mod cluster;
mod consume;
mod metrics;
mod pki;
mod proxy;
mod redis_server;

pub use backends::*;
pub use broker::*;
pub use client::*;
pub use cluster::*;
pub use consume::*;
pub use metrics::*;
pub use pki::*;
pub use proxy::*;
pub use redis_server::*;
