//! The server's configuration: `streamgate serve` and its flags, and the limits it enforces.
//! Every flag can also be set through the `STREAMGATE_*` environment variable named in
//! `--help`, which is how containers configure it. The binary's whole parser is
//! [`crate::cli::Cli`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use crate::model::{Backoff, SubscriptionPolicy, millis};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Everything `streamgate serve` needs.
#[derive(Debug, Clone, Parser)]
#[command(name = "serve")]
pub struct ServeConfig {
    /// Address the gRPC server listens on. Use 0.0.0.0:50051 in containers.
    #[arg(long, env = "STREAMGATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Redis to use: redis://[user:password@]host:port[/db], or rediss:// for TLS. Without it,
    /// streamgate runs on an embedded in-memory store: for trying it out, nothing is durable.
    #[arg(long, env = "STREAMGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// A Redis Cluster instead of a single Redis: one or more seed nodes, comma-separated
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`).
    #[arg(
        long,
        env = "STREAMGATE_REDIS_CLUSTER_URL",
        hide_env_values = true,
        conflicts_with = "redis_url"
    )]
    pub redis_cluster_url: Option<String>,

    /// A Redis primary with replicas watched by Sentinel:
    /// `redis+sentinel://[user:password@]host:26379[,host:26379...]/<master>[?sentinel_password=...]`
    /// (`rediss+sentinel://` for TLS to the sentinels and the primary, trusting --redis-ca-file).
    /// Connections go to the current primary and follow a failover without a restart.
    #[arg(
        long,
        env = "STREAMGATE_REDIS_SENTINEL_URL",
        hide_env_values = true,
        conflicts_with_all = ["redis_url", "redis_cluster_url"]
    )]
    pub redis_sentinel_url: Option<String>,

    /// For `rediss://`: the CA certificate (PEM) that signed Redis's certificate, if it is not
    /// signed by a public root.
    #[arg(long, env = "STREAMGATE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// Every key streamgate touches starts with this (e.g. `team-a:`): several tenants or
    /// environments can share one Redis without seeing each other. Clients never see it.
    #[arg(long, env = "STREAMGATE_KEY_PREFIX", default_value = "")]
    pub key_prefix: String,

    /// Most Redis connections for commands. They are multiplexed, so a few serve many calls;
    /// subscriptions hold none while they wait.
    #[arg(long, env = "STREAMGATE_REDIS_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub redis_pool_size: u32,

    /// How long one Redis command may take before the call fails with UNAVAILABLE.
    #[arg(long, env = "STREAMGATE_REDIS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// How long connecting to Redis may take.
    #[arg(long, env = "STREAMGATE_REDIS_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub redis_connect_timeout: Duration,

    /// How long the watcher of outside writes blocks in one XREAD before starting over.
    #[arg(long, env = "STREAMGATE_WATCH_BLOCK", default_value = "5s", value_parser = humantime::parse_duration)]
    pub watch_block: Duration,

    /// How often an idle subscription re-reads even without a wake-up: a safety net for
    /// changes no XADD announces (a stream deleted and recreated, XGROUP SETID backwards).
    #[arg(long, env = "STREAMGATE_IDLE_RECHECK", default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle_recheck: Duration,

    /// How often stored retention policies are applied (by one broker instance at a time, the
    /// holder of a lease in Redis).
    #[arg(long, env = "STREAMGATE_RETENTION_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,

    /// A Subscribe stream with nothing to send for this long gets a heartbeat item, so proxies
    /// that cut quiet streams (nginx grpc_read_timeout 60 s, Envoy idle timeouts) keep it. 0s
    /// turns heartbeats off.
    #[arg(long, env = "STREAMGATE_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// How often Redis is pinged to drive grpc.health.v1.
    #[arg(long, env = "STREAMGATE_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// After SIGTERM/SIGINT, how long to wait for calls to finish before closing anyway.
    #[arg(long, env = "STREAMGATE_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// HTTP/2 keepalive ping interval: how a half-open client (vanished without closing) is
    /// noticed and its subscriptions ended. 0s turns it off.
    #[arg(long, env = "STREAMGATE_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long to wait for a keepalive ping's answer before closing the connection.
    #[arg(long, env = "STREAMGATE_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// Most concurrent gRPC calls (streams) on one HTTP/2 connection; each open Subscribe is
    /// one. Clients with more open at once use more connections.
    #[arg(
        long,
        env = "STREAMGATE_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 1000
    )]
    pub http2_max_concurrent_streams: u32,

    /// Wait before redelivering a message the first time it expired or was nacked; doubles
    /// with each further delivery. Every instance serving a group should use the same value.
    #[arg(long, env = "STREAMGATE_REDELIVERY_BACKOFF_MIN", default_value = "1s", value_parser = humantime::parse_duration)]
    pub redelivery_backoff_min: Duration,

    /// The longest wait before a redelivery (at most 1h).
    #[arg(long, env = "STREAMGATE_REDELIVERY_BACKOFF_MAX", default_value = "60s", value_parser = humantime::parse_duration)]
    pub redelivery_backoff_max: Duration,

    /// Group consumers idle for longer than this are deleted, their unacknowledged messages
    /// handed back to the group first, so generated names do not pile up. 0s keeps them.
    #[arg(long, env = "STREAMGATE_CONSUMER_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub consumer_idle_timeout: Duration,

    /// TLS: the server's certificate chain (PEM). With `--tls-key`, the port speaks only TLS.
    #[arg(long, env = "STREAMGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// TLS: the server's private key (PEM).
    #[arg(long, env = "STREAMGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// mTLS: clients must present a certificate signed by this CA (PEM); its Common Name can
    /// identify a principal (`cert_cn`).
    #[arg(long, env = "STREAMGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Principals, their credentials and permissions (TOML; see README "Security"). Without
    /// it, every caller may do everything.
    #[arg(long, env = "STREAMGATE_PRINCIPALS_FILE")]
    pub principals_file: Option<std::path::PathBuf>,

    /// Require credentials for grpc.health.v1 and reflection too (open by default, for meshes
    /// and load balancers).
    #[arg(long, env = "STREAMGATE_AUTH_PROBES")]
    pub auth_probes: bool,

    /// Serve Prometheus metrics at http://<addr>/metrics (e.g. 0.0.0.0:9090). Off when unset.
    #[arg(long, env = "STREAMGATE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// How often group pending counts, lag and pool gauges are sampled for metrics.
    #[arg(long, env = "STREAMGATE_METRICS_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub metrics_interval: Duration,

    /// Serve the operators' web console at http://<addr>/ (e.g. 127.0.0.1:8080), talking
    /// gRPC-Web to the Admin and Broker services on that port, with the same authentication.
    /// Off when unset; the gRPC port is unchanged either way.
    #[arg(long, env = "STREAMGATE_CONSOLE_ADDR")]
    pub console_addr: Option<SocketAddr>,

    /// How often the console's history (lengths, lags, pending, rates; the last hour, in
    /// memory) is sampled, with --console-addr.
    #[arg(long, env = "STREAMGATE_CONSOLE_SAMPLE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub console_sample_interval: Duration,

    /// Log format.
    #[arg(
        long,
        env = "STREAMGATE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `streamgate=debug,info` (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "STREAMGATE_LOG", default_value = "info")]
    pub log: String,

    /// Request limits.
    #[command(flatten)]
    pub limits: Limits,
}

/// Limits that keep one request from hurting everyone else; each breach is INVALID_ARGUMENT
/// naming the field and the limit.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// The longest delivery delay a Produce may ask for.
    #[arg(long, env = "STREAMGATE_MAX_DELIVERY_DELAY", default_value = "30d", value_parser = humantime::parse_duration)]
    pub max_delivery_delay: std::time::Duration,

    /// Most messages in one Produce call.
    #[arg(long, env = "STREAMGATE_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,

    /// Most bytes in one message (names and values of all fields).
    #[arg(long, env = "STREAMGATE_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most fields in one message.
    #[arg(long, env = "STREAMGATE_MAX_FIELDS", default_value_t = 1024)]
    pub max_fields: usize,

    /// Most bytes in one gRPC request (larger ones are refused by the transport).
    #[arg(long, env = "STREAMGATE_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Longest stream, group or consumer name, in bytes.
    #[arg(long, env = "STREAMGATE_MAX_NAME_BYTES", default_value_t = 512)]
    pub max_name_bytes: usize,

    /// Most streams one Subscribe may read.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIBE_STREAMS", default_value_t = 64)]
    pub max_subscribe_streams: usize,

    /// Messages read per round trip when a Subscribe does not say.
    #[arg(long, env = "STREAMGATE_DEFAULT_BATCH_SIZE", default_value_t = 100)]
    pub default_batch_size: usize,

    /// Most messages read per round trip for one Subscribe, and most entries one Admin call
    /// (QueryMessages, ListPending, AutoClaim) may return.
    #[arg(long, env = "STREAMGATE_MAX_READ_COUNT", default_value_t = 10_000)]
    pub max_read_count: usize,

    /// Entries an Admin listing returns when the request does not say.
    #[arg(long, env = "STREAMGATE_DEFAULT_QUERY_COUNT", default_value_t = 100)]
    pub default_query_count: usize,

    /// How long a delivered group message may stay unacknowledged before it is redelivered,
    /// when a Subscribe does not say.
    #[arg(long, env = "STREAMGATE_ACK_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub default_ack_deadline: Duration,

    /// Most unacknowledged messages one group subscription holds when it does not say; 0 means
    /// no limit.
    #[arg(long, env = "STREAMGATE_DEFAULT_MAX_IN_FLIGHT", default_value_t = 1000)]
    pub default_max_in_flight: u32,

    /// Deliveries after which an unacknowledged message is dead-lettered, when a subscription or
    /// fetch does not say; 0 means no limit.
    #[arg(long, env = "STREAMGATE_DEFAULT_MAX_DELIVERIES", default_value_t = 0)]
    pub default_max_deliveries: u32,

    /// Most Subscribe streams open at once on this broker; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "STREAMGATE_MAX_SUBSCRIPTIONS", default_value_t = 50_000)]
    pub max_subscriptions: usize,

    /// Most Subscribe streams one principal may have open at once.
    #[arg(
        long,
        env = "STREAMGATE_MAX_SUBSCRIPTIONS_PER_PRINCIPAL",
        default_value_t = 10_000
    )]
    pub max_subscriptions_per_principal: usize,

    /// Longest wait a Fetch may ask for (`wait_ms`); a longer one is cut to this.
    #[arg(long, env = "STREAMGATE_MAX_FETCH_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_fetch_wait: Duration,
}

impl Limits {
    /// What a new stored subscription gets where its request leaves a setting unset (Admin's
    /// and Pub/Sub's alike): the server's deadline, delivery limit and in-flight limit, and
    /// redelivery with `backoff` (the server's).
    pub fn default_policy(&self, backoff: Backoff) -> SubscriptionPolicy {
        SubscriptionPolicy {
            ack_deadline_ms: millis(self.default_ack_deadline),
            backoff_min_ms: backoff.min_ms(),
            backoff_max_ms: backoff.max_ms(),
            max_deliveries: u64::from(self.default_max_deliveries),
            dead_letter_stream: None,
            max_in_flight: u64::from(self.default_max_in_flight),
            paused: false,
            filter: None,
            ordered: false,
            dead_letter_expired: false,
        }
    }
}

impl ServeConfig {
    /// The defaults, pointed at `redis_url`: what tests and embedders start from.
    pub fn for_redis(redis_url: &str) -> Self {
        Self::parse_from(["serve", "--redis-url", redis_url])
    }

    /// The defaults, on the embedded in-memory store.
    pub fn in_memory() -> Self {
        Self::parse_from(["serve"])
    }

    /// Checks what one flag cannot check alone; the message names the flags.
    pub fn validate(&self) -> Result<(), String> {
        let horizon = crate::delivery::MAX_DELAY;
        if self.redelivery_backoff_min > self.redelivery_backoff_max {
            return Err("--redelivery-backoff-min must not exceed --redelivery-backoff-max".into());
        }
        if self.redelivery_backoff_max > horizon {
            return Err(format!(
                "--redelivery-backoff-max must be at most {}",
                humantime::format_duration(horizon)
            ));
        }
        if self.console_sample_interval < std::time::Duration::from_millis(100) {
            return Err("--console-sample-interval must be at least 100ms".into());
        }
        if self.limits.default_ack_deadline.is_zero() || self.limits.default_ack_deadline > horizon
        {
            return Err(format!(
                "--default-ack-deadline must be between 1ms and {}",
                humantime::format_duration(horizon)
            ));
        }
        Ok(())
    }

    /// The redelivery settings every group member of this broker shares.
    pub fn redelivery(&self) -> crate::delivery::RedeliverySettings {
        crate::delivery::RedeliverySettings {
            backoff: crate::model::Backoff {
                min: self.redelivery_backoff_min,
                max: self.redelivery_backoff_max,
            },
            consumer_idle_timeout: self.consumer_idle_timeout,
            slot_safe_dead_letters: self.redis_cluster_url.is_some(),
        }
    }
}

/// The URL with any password replaced, for logs: secrets never reach a log line.
pub fn redact_url(url: &str) -> String {
    // A cluster's seeds come as a comma-separated list: each may carry a password.
    url.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let userinfo = &url[scheme_end + 3..at];
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
            }
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("redis://:hunter2@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(redact_url("rediss://app:p@ss@h:1"), "rediss://app:***@h:1");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_url("redis://:a@h:1,redis://:b@i:2"),
            "redis://:***@h:1,redis://:***@i:2"
        );
    }

    #[test]
    fn contradicting_redelivery_flags_are_refused_naming_them() {
        let config = ServeConfig::parse_from([
            "serve",
            "--redelivery-backoff-min",
            "10s",
            "--redelivery-backoff-max",
            "1s",
        ]);
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("--redelivery-backoff-min")
        );
        let config = ServeConfig::parse_from(["serve", "--default-ack-deadline", "2h"]);
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("--default-ack-deadline")
        );
        assert!(ServeConfig::for_redis("redis://h:1").validate().is_ok());
    }

    #[test]
    fn defaults_parse() {
        let config = ServeConfig::for_redis("redis://127.0.0.1:1");
        assert_eq!(config.redis_pool_size, 8);
        assert_eq!(config.limits.max_batch, 1000);
        assert_eq!(config.listen.port(), 50051);
    }
}
