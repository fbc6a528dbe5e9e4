//! The `streamgate` binary: parse the command line, set up logging, bind, and run until a
//! signal asks it to stop.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use streamgate::cli::{Cli, Command};
use streamgate::config::{LogFormat, ServeConfig, redact_url};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(*config).await.map(|()| ExitCode::SUCCESS),
        Command::Client(command) => match streamgate::cli::run(&cli.client, command).await {
            Ok(code) => Ok(code),
            Err(err) => {
                // A client's error is for a person: the gRPC status or the cause, no backtrace.
                match err.downcast_ref::<tonic::Status>() {
                    Some(status) => eprintln!("error: {:?}: {}", status.code(), status.message()),
                    None => eprintln!("error: {err:#}"),
                }
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let _telemetry = init_tracing(config.log_format, &config.log)?;
    if let Some(addr) = config.metrics_addr {
        streamgate::ops::metrics::install(addr).map_err(anyhow::Error::msg)?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    match config
        .redis_url
        .as_ref()
        .or(config.redis_cluster_url.as_ref())
        .or(config.redis_sentinel_url.as_ref())
    {
        Some(url) => tracing::info!(
            listen = %listener.local_addr()?,
            redis = %redact_url(url),
            version = env!("CARGO_PKG_VERSION"),
            "streamgate listening"
        ),
        None => {
            tracing::info!(
                listen = %listener.local_addr()?,
                store = "memory",
                version = env!("CARGO_PKG_VERSION"),
                "streamgate listening"
            );
            tracing::warn!(
                "no --redis-url: running on the EMBEDDED IN-MEMORY store. Nothing is durable: \
                 every message, group and pending entry is lost when this process stops. \
                 Set --redis-url (STREAMGATE_REDIS_URL) for real use."
            );
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    streamgate::server::run(listener, config, shutdown).await?;
    tracing::info!("streamgate stopped");
    Ok(())
}

/// Logs to stderr in `format`, and spans to an OTLP endpoint when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// says where (see [`streamgate::ops::telemetry`]); the guard flushes the last spans.
fn init_tracing(
    format: LogFormat,
    filter: &str,
) -> anyhow::Result<Option<streamgate::ops::telemetry::Telemetry>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid --log filter `{filter}`"))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let (otel, guard) = match streamgate::ops::telemetry::layer().map_err(anyhow::Error::msg)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    if guard.is_some() {
        tracing::info!("exporting spans over OTLP");
    }
    Ok(guard)
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, saying which.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let signal = wait_for_signal().await;
    tracing::info!(signal, "shutdown requested");
    shutdown.cancel();
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
