//! What the flags set up before anything serves: the store (Redis at one URL, a cluster from
//! its seeds, or through Sentinel, whose URL carries only the credentials; else the embedded
//! store; either under `--key-prefix`), the server's TLS, and authentication.

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::ServeError;
use crate::auth::{AuthLayer, Principals};
use crate::config::ServeConfig;
use crate::store::{MemoryStore, Namespaced, RedisStore, RedisStoreConfig, SentinelConfig};

/// The store chosen at start-up: the one place the server names the concrete stores.
pub(super) enum ChosenStore {
    /// On Redis (`--redis-url`, `--redis-cluster-url` or `--redis-sentinel-url`).
    Redis(Box<Namespaced<RedisStore>>),
    /// On the embedded store.
    Memory(Namespaced<MemoryStore>),
}

/// The store the flags choose (lazily connected: Redis may still be down).
pub(super) fn store(config: &ServeConfig) -> Result<ChosenStore, ServeError> {
    let cluster_seeds: Vec<String> = config
        .redis_cluster_url
        .iter()
        .flat_map(|urls| urls.split(','))
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    let sentinel = config
        .redis_sentinel_url
        .as_deref()
        .map(SentinelConfig::parse)
        .transpose()
        .map_err(|err| ServeError::Config(format!("--redis-sentinel-url: {err}")))?;
    // Under Sentinel the URL only carries the credentials (and names the user in errors).
    let sentinel_url = sentinel.as_ref().map(|s| {
        let (host, port) = &s.sentinels[0];
        let credentials = match (&s.username, &s.password) {
            (Some(user), Some(password)) => format!("{user}:{password}@"),
            (None, Some(password)) => format!(":{password}@"),
            (Some(user), None) => format!("{user}@"),
            (None, None) => String::new(),
        };
        let scheme = if s.tls { "rediss" } else { "redis" };
        format!("{scheme}://{credentials}{host}:{port}")
    });
    let url = config
        .redis_url
        .clone()
        .or_else(|| cluster_seeds.first().cloned())
        .or(sentinel_url);
    let prefix = config.key_prefix.clone();
    let cluster = config.redis_cluster_url.is_some();
    Ok(match &url {
        Some(url) => {
            let store = RedisStore::new(RedisStoreConfig {
                url: url.clone(),
                cluster_seeds,
                sentinel,
                pool_size: config.redis_pool_size,
                response_timeout: config.redis_timeout,
                connect_timeout: config.redis_connect_timeout,
                watch_block: config.watch_block,
                ca_pem: config
                    .redis_ca_file
                    .as_deref()
                    .map(|path| {
                        std::fs::read(path).map_err(|err| {
                            ServeError::Config(format!("cannot read {}: {err}", path.display()))
                        })
                    })
                    .transpose()?,
            })?;
            ChosenStore::Redis(Box::new(Namespaced::new(store, prefix, cluster)))
        }
        None => ChosenStore::Memory(Namespaced::new(MemoryStore::new(), prefix, false)),
    })
}

/// The server's TLS set-up from the flags: off, TLS, or mTLS with a client CA.
pub(super) fn tls_config(config: &ServeConfig) -> Result<Option<ServerTlsConfig>, ServeError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|err| ServeError::Config(format!("cannot read {}: {err}", path.display())))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Authentication from `--principals-file` (off without one, and said so).
pub(super) fn auth_layer(config: &ServeConfig) -> Result<AuthLayer, ServeError> {
    let principals = config
        .principals_file
        .as_deref()
        .map(Principals::load)
        .transpose()
        .map_err(ServeError::Config)?;
    match &principals {
        Some(p) => tracing::info!(principals = p.count(), "authentication on"),
        None => tracing::warn!(
            "no --principals-file: authentication is OFF, every caller may do everything"
        ),
    }
    Ok(AuthLayer::new(principals, config.auth_probes))
}
