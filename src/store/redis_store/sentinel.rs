//! Redis Sentinel: where the current primary is. Every new connection (pooled or the watcher's)
//! asks the sentinels for the primary of the monitored master, so after a failover the pool's
//! replacement connections reach the new primary without a restart; connections to the old one
//! are retired when they fail at the I/O level or answer READONLY (the old primary back as a
//! replica).

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, RedisError, RedisResult, TlsCertificates, TlsMode};

/// How to reach a Redis watched by Sentinel: `--redis-sentinel-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The sentinels, `host:port` each.
    pub sentinels: Vec<(String, u16)>,
    /// The master name the sentinels monitor.
    pub master: String,
    /// The Redis user and password (for the primary, not the sentinels).
    pub username: Option<String>,
    /// The Redis password.
    pub password: Option<String>,
    /// The sentinels' own password, when they require one.
    pub sentinel_password: Option<String>,
    /// `rediss+sentinel://`: TLS to the sentinels and to the primary, verified against the
    /// system's roots or `--redis-ca-file`, as for a single `rediss://` Redis.
    pub tls: bool,
}

impl SentinelConfig {
    /// Parses `redis+sentinel://[user:password@]host:port[,host:port...]/master[?sentinel_password=...]`
    /// (`rediss+sentinel://` for TLS).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = match url.strip_prefix("rediss+sentinel://") {
            Some(rest) => (true, rest),
            None => (
                false,
                url.strip_prefix("redis+sentinel://").ok_or(
                    "a sentinel url starts with redis+sentinel:// (rediss+sentinel:// for TLS)",
                )?,
            ),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, master) = rest
            .split_once('/')
            .ok_or("a sentinel url names the master: redis+sentinel://host:26379/mymaster")?;
        if master.is_empty() {
            return Err("the master name after the / is empty".into());
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or(("", u))) {
            Some((user, password)) => (
                (!user.is_empty()).then(|| user.to_owned()),
                (!password.is_empty()).then(|| password.to_owned()),
            ),
            None => (None, None),
        };
        let sentinels = hosts
            .split(',')
            .map(|host| {
                let (name, port) = host
                    .rsplit_once(':')
                    .ok_or_else(|| format!("sentinel `{host}` lacks a port"))?;
                let port = port
                    .parse()
                    .map_err(|_| format!("sentinel `{host}` has a bad port"))?;
                Ok((name.to_owned(), port))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let sentinel_password = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("sentinel_password="))
            .map(str::to_owned);
        Ok(Self {
            sentinels,
            master: master.to_owned(),
            username,
            password,
            sentinel_password,
            tls,
        })
    }
}

/// Finds the current primary through the sentinels.
pub(super) struct Locator {
    client: tokio::sync::Mutex<SentinelClient>,
}

impl Locator {
    /// Sentinels from `config`; `ca_pem` (`--redis-ca-file`) is trusted for TLS to them and to
    /// the primary besides the system's roots.
    pub(super) fn new(config: &SentinelConfig, ca_pem: Option<&[u8]>) -> RedisResult<Self> {
        let addresses = config
            .sentinels
            .iter()
            .map(|(host, port)| match config.tls {
                true => ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                },
                false => ConnectionAddr::Tcp(host.clone(), *port),
            });
        let mut builder =
            SentinelClientBuilder::new(addresses, &config.master, SentinelServerType::Master)?;
        if config.tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(ca) = ca_pem {
                let certificates = || TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.to_vec()),
                };
                builder = builder
                    .set_client_to_sentinel_certificates(certificates())
                    .set_client_to_redis_certificates(certificates());
            }
        }
        if let Some(user) = &config.username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &config.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(password) = &config.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        Ok(Self {
            client: tokio::sync::Mutex::new(builder.build()?),
        })
    }

    /// A client for the current primary (the sentinels are asked each time).
    pub(super) async fn primary(&self) -> Result<Client, RedisError> {
        self.client.lock().await.async_get_client().await
    }
}

#[cfg(test)]
mod tests {
    use super::SentinelConfig;

    #[test]
    fn sentinel_urls_name_hosts_master_and_credentials() {
        let config = SentinelConfig::parse(
            "redis+sentinel://app:secret@10.0.0.1:26379,10.0.0.2:26380/orders?sentinel_password=s",
        )
        .unwrap();
        assert_eq!(
            config.sentinels,
            [
                ("10.0.0.1".to_owned(), 26379),
                ("10.0.0.2".to_owned(), 26380)
            ]
        );
        assert_eq!(config.master, "orders");
        assert_eq!(config.username.as_deref(), Some("app"));
        assert_eq!(config.password.as_deref(), Some("secret"));
        assert_eq!(config.sentinel_password.as_deref(), Some("s"));
        assert!(!config.tls);
        assert!(
            SentinelConfig::parse("rediss+sentinel://x:1/m")
                .unwrap()
                .tls
        );
        assert!(SentinelConfig::parse("redis://x:1/m").is_err());
        assert!(SentinelConfig::parse("redis+sentinel://x:1/").is_err());
        assert!(SentinelConfig::parse("redis+sentinel://x/m").is_err());
    }
}
