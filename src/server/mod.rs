//! Wires the services, health and reflection into one tonic server, and shuts it down in order.
//!
//! The caller binds the listener and owns the shutdown token, so tests bind `127.0.0.1:0`, start
//! [`Broker::serve`] in a task, and stop it by cancelling their token.
//!
//! Shutdown order, once the token is cancelled:
//! 1. health turns NOT_SERVING for every service name, so load balancers stop sending;
//! 2. open Subscribe streams end with UNAVAILABLE (clients reconnect elsewhere);
//! 3. tonic stops accepting and lets in-flight unary calls (Produce, Ack...) finish;
//! 4. after `--drain-timeout`, whatever is still open (say a client watching Health/Watch,
//!    which never lets go by itself) is closed anyway and `serve` returns.

mod console;
mod health;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::AuthLayer;
use crate::calls::{PumpLimits, Pumps};
use crate::config::ServeConfig;
use crate::console::history::{History, HistoryConfig};
use crate::delivery::{DeliveryCore, RedeliveryCounters};
use crate::grpc::Serving;
use crate::grpc::admin::AdminService;
use crate::grpc::broker::BrokerService;
use crate::grpc::pb;
use crate::grpc::pubsub::PubsubService;
use crate::store::{MemoryStore, Namespaced, RedisStore, Store, StoreError, Wakeups};
use console::{CONSOLE_MAX_STREAMS, serve_console};
pub use health::{HEALTH_SERVICE_NAMES, LIVENESS_SERVICE_NAME};
use health::{report_health, set_health};
use setup::ChosenStore;

/// Both message-size limits on a generated service (each is a type of its own, with no trait
/// to share the two builder methods through).
macro_rules! size_limited {
    ($service:expr, $bytes:expr) => {
        $service
            .max_decoding_message_size($bytes)
            .max_encoding_message_size($bytes)
    };
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be set up (a malformed Redis URL, say).
    #[error("cannot set up the store: {0}")]
    Store(#[from] StoreError),
    /// Flags that contradict each other.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reflection could not load our descriptors (a build problem).
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A broker ready to serve on the store chosen at start-up: the one place the server names the
/// concrete stores; everything it runs is generic over [`Store`].
pub enum Broker {
    /// On Redis (`--redis-url` or `--redis-cluster-url`).
    Redis(Box<BrokerOn<Namespaced<RedisStore>>>),
    /// On the embedded store.
    Memory(Box<BrokerOn<Namespaced<MemoryStore>>>),
}

/// A broker over one store (under `--key-prefix`): the core, the subscriptions, and what the
/// server needs to serve them.
pub struct BrokerOn<S> {
    config: ServeConfig,
    store: S,
    subscriptions_shutdown: CancellationToken,
    tracker: TaskTracker,
    pumps: Pumps<S>,
    core: DeliveryCore<S>,
    auth: AuthLayer,
    tls: Option<ServerTlsConfig>,
}

impl Broker {
    /// Sets up the store, TLS and authentication from `config`.
    pub fn new(config: ServeConfig) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        let auth = setup::auth_layer(&config)?;
        let tls = setup::tls_config(&config)?;
        Ok(match setup::store(&config)? {
            ChosenStore::Redis(store) => {
                Self::Redis(Box::new(BrokerOn::new(config, *store, auth, tls)))
            }
            ChosenStore::Memory(store) => {
                Self::Memory(Box::new(BrokerOn::new(config, store, auth, tls)))
            }
        })
    }

    /// Subscriptions whose pump is running.
    pub fn open_subscriptions(&self) -> usize {
        self.stats().open_subscriptions()
    }

    /// A cheap handle for reading [`open_subscriptions`](Self::open_subscriptions) and the
    /// wake-up registry from outside while the broker serves.
    pub fn stats(&self) -> BrokerStats {
        match self {
            Self::Redis(broker) => broker.stats(),
            Self::Memory(broker) => broker.stats(),
        }
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains (see the module docs).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        match self {
            Self::Redis(broker) => (*broker).serve(listener, shutdown).await,
            Self::Memory(broker) => (*broker).serve(listener, shutdown).await,
        }
    }
}

impl<S: Store> BrokerOn<S> {
    fn new(config: ServeConfig, store: S, auth: AuthLayer, tls: Option<ServerTlsConfig>) -> Self {
        let subscriptions_shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let core = DeliveryCore::new(store.clone(), config.redelivery());
        let pumps = Pumps::new(
            core.clone(),
            subscriptions_shutdown.clone(),
            tracker.clone(),
            config.idle_recheck,
            PumpLimits {
                total: config.limits.max_subscriptions,
                per_principal: config.limits.max_subscriptions_per_principal,
                heartbeat: config.heartbeat_interval,
            },
        );
        Self {
            config,
            store,
            core,
            auth,
            tls,
            subscriptions_shutdown,
            tracker,
            pumps,
        }
    }

    fn stats(&self) -> BrokerStats {
        let pumps = self.pumps.clone();
        BrokerStats {
            open: Arc::new(move || pumps.open_count()),
            wakeups: self.store.wakeups().clone(),
            counters: self.core.redelivery().shared_counters(),
        }
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains (see the module docs).
    async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let limits = Arc::new(self.config.limits.clone());
        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::NotServing).await;
        reporter
            .set_service_status(LIVENESS_SERVICE_NAME, ServingStatus::Serving)
            .await;

        let background = CancellationToken::new();
        #[allow(clippy::disallowed_methods, reason = "awaited by the drain")]
        let health_task = tokio::spawn(report_health(
            self.store.clone(),
            reporter.clone(),
            self.config.health_interval,
            background.clone(),
        ));
        // The watcher and the periodic work, stopped by `background` and awaited at the end of
        // the drain.
        let periodic = TaskTracker::new();
        periodic.spawn(self.store.clone().run_watcher(background.clone()));
        periodic.spawn(self.core.delayed().clone().run(background.clone()));
        periodic.spawn(
            self.core
                .retention()
                .clone()
                .run(self.config.retention_interval, background.clone()),
        );
        if self.config.metrics_addr.is_some() {
            periodic.spawn(crate::ops::gauges::sample(
                self.store.clone(),
                self.core.redelivery().clone(),
                self.config.metrics_interval,
                background.clone(),
            ));
        }

        let serving = Serving {
            core: self.core.clone(),
            pumps: self.pumps.clone(),
            limits: limits.clone(),
            stopping: self.subscriptions_shutdown.clone(),
        };
        let broker = size_limited!(
            pb::broker_server::BrokerServer::new(BrokerService::new(serving.clone())),
            limits.max_request_bytes
        );
        let history = self.config.console_addr.map(|_| {
            let history = History::new(HistoryConfig {
                interval: self.config.console_sample_interval,
                window: Duration::from_secs(3600),
                max_streams: CONSOLE_MAX_STREAMS,
            });
            periodic.spawn(history.clone().run(self.store.clone(), background.clone()));
            history
        });
        let mut admin_service = AdminService::new(&self.core, limits.clone());
        if let Some(history) = history {
            admin_service = admin_service.with_history(history);
        }
        let admin = size_limited!(
            pb::admin_server::AdminServer::new(admin_service),
            limits.max_request_bytes
        );
        // The console stops with the gRPC port, whatever ended that.
        let console_stop = shutdown.child_token();
        let console = match self.config.console_addr {
            Some(addr) => Some(
                serve_console(
                    addr,
                    Routes::new(broker.clone()).add_service(admin.clone()),
                    self.auth.clone(),
                    console_stop.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let pubsub = PubsubService::new(serving);
        let publisher = size_limited!(pubsub.publisher(), limits.max_request_bytes);
        let subscriber = size_limited!(pubsub.subscriber(), limits.max_request_bytes);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both versions: some clients (Python's grpcio-reflection among them) still ask v1alpha.
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let drain = {
            let shutdown = shutdown.clone();
            let reporter = reporter.clone();
            let background = background.clone();
            let subscriptions = self.subscriptions_shutdown.clone();
            async move {
                shutdown.cancelled().await;
                background.cancel();
                let _ = health_task.await;
                set_health(&reporter, ServingStatus::NotServing).await;
                tracing::info!("health is NOT_SERVING; ending subscriptions and draining calls");
                subscriptions.cancel();
            }
        };
        let keepalive = |d: Duration| (!d.is_zero()).then_some(d);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = Server::builder();
        if let Some(tls) = self.tls.clone() {
            builder = builder.tls_config(tls)?;
        }
        let server = builder
            .http2_keepalive_interval(keepalive(self.config.http2_keepalive_interval))
            .http2_keepalive_timeout(keepalive(self.config.http2_keepalive_timeout))
            .max_concurrent_streams(self.config.http2_max_concurrent_streams)
            .trace_fn(rpc_span)
            .layer(crate::ops::metrics::RpcMetricsLayer)
            .layer(crate::grpc::deadline::DeadlineLayer)
            .layer(self.auth.clone())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(broker)
            .add_service(admin)
            .add_service(publisher)
            .add_service(subscriber)
            .serve_with_incoming_shutdown(incoming, drain);

        let drain_timeout = self.config.drain_timeout;
        let result = tokio::select! {
            result = server => result.map_err(ServeError::from),
            () = async { shutdown.cancelled().await; tokio::time::sleep(drain_timeout).await } => {
                tracing::warn!(?drain_timeout, "drain timeout reached; closing the connections still open");
                Ok(())
            }
        };
        // Whatever ended the server, nothing of ours outlives it.
        console_stop.cancel();
        if let Some(console) = console {
            let _ = tokio::time::timeout(drain_timeout, console).await;
        }
        background.cancel();
        self.subscriptions_shutdown.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        periodic.close();
        if tokio::time::timeout(Duration::from_secs(5), periodic.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "background tasks (the watcher, delayed delivery, retention, gauges, history) did not stop within 5 s"
            );
        }
        result
    }
}

/// Read-only view of a serving broker, whatever its store.
#[derive(Clone)]
pub struct BrokerStats {
    open: Arc<dyn Fn() -> usize + Send + Sync>,
    wakeups: Wakeups,
    counters: Arc<RedeliveryCounters>,
}

impl BrokerStats {
    /// Subscriptions whose pump is running.
    pub fn open_subscriptions(&self) -> usize {
        (self.open)()
    }

    /// Subscriptions registered for wake-ups (each one counted once per stream it reads).
    pub fn waiting_registrations(&self) -> usize {
        self.wakeups.watcher_count()
    }

    /// What redelivery did since start: redelivered, dead-lettered, lost before ack, consumers
    /// deleted.
    pub fn redelivery(&self) -> &RedeliveryCounters {
        &self.counters
    }
}

/// Sets up a [`Broker`] from `config` and serves it; what `streamgate serve` runs.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    Broker::new(config)?.serve(listener, shutdown).await
}

/// The span of one call; handlers fill in what it is about (`record` on the current span),
/// and a client's W3C trace context makes it part of the client's trace.
pub(super) fn rpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "rpc",
        method = %request.uri().path(),
        stream = tracing::field::Empty,
        group = tracing::field::Empty,
        consumer = tracing::field::Empty,
    );
    if let Some(traceparent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        crate::ops::telemetry::adopt(&span, traceparent);
    }
    span
}
