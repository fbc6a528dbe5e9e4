//! The three stores a behavioural suite runs against: a real `redis-server`, a real Redis
//! Cluster of three masters, and the embedded store; and `conformance!`, which makes one test
//! per store of each listed `async fn name(backend: Backend)`.

use std::time::Duration;

use clap::Parser;
use streamgate::config::ServeConfig;

use super::*;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Redis,
    Memory,
    Cluster,
}

/// A broker on the chosen store; keeps the Redis (if any) alive as long as itself.
pub struct Env {
    pub broker: TestBroker,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

pub async fn start(backend: Backend) -> Env {
    let mut cluster = None;
    let (config, redis) = match backend {
        Backend::Redis => {
            let redis = RedisServer::start();
            (ServeConfig::for_redis(&redis.url()), Some(redis))
        }
        Backend::Memory => (ServeConfig::in_memory(), None),
        Backend::Cluster => {
            let started = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
                .await
                .unwrap();
            let config = ServeConfig::parse_from(["serve", "--redis-cluster-url", &started.urls()]);
            cluster = Some(started);
            (config, None)
        }
    };
    let mut config = config;
    config.redelivery_backoff_min = Duration::from_millis(100);
    config.redelivery_backoff_max = Duration::from_millis(400);
    Env {
        broker: TestBroker::start_config(config).await,
        _redis: redis,
        _cluster: cluster,
    }
}

/// The dead-letter stream the broker picks when a request does not name one: on a cluster it
/// must share its stream's slot, hence the hash tag.
pub fn default_dlq(backend: Backend, stream: &str) -> String {
    match backend {
        Backend::Cluster => format!("{{{stream}}}:dlq"),
        _ => format!("{stream}:dlq"),
    }
}

/// `conformance!(a, b)` makes `on_redis::a`, `on_memory::a`, `on_cluster::a`... of each
/// `async fn a(backend: Backend)`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Redis).await })*
        }
        mod on_memory {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod on_cluster {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Cluster).await })*
        }
    };
}
