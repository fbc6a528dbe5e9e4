//! Health as load balancers and orchestrators read it (gRPC's health service): readiness
//! follows the store (SERVING while Redis answers a ping), liveness stays SERVING for as long
//! as the process serves.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::grpc::pb;
use crate::grpc::pubsub;
use crate::store::Store;

/// The health service name for liveness probes: SERVING for as long as the process serves,
/// whatever Redis does, so that an orchestrator does not restart the broker because Redis
/// blinked. Readiness probes use `""` (or a service name), which follow Redis.
pub const LIVENESS_SERVICE_NAME: &str = "liveness";

/// The health service names streamgate reports on: the whole server (`""`) and each service.
pub const HEALTH_SERVICE_NAMES: [&str; 5] = [
    "",
    pb::broker_server::SERVICE_NAME,
    pb::admin_server::SERVICE_NAME,
    pubsub::pb::publisher_server::SERVICE_NAME,
    pubsub::pb::subscriber_server::SERVICE_NAME,
];

/// Sets every reported service name (not liveness) to `status`.
pub(super) async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Pings the store every `interval` and reports SERVING while it answers.
pub(super) async fn report_health<S: Store>(
    store: S,
    reporter: HealthReporter,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut serving = None;
    loop {
        let ping = tokio::select! {
            _ = stop.cancelled() => return,
            ping = tokio::time::timeout(interval.max(Duration::from_secs(1)), store.ping()) => ping,
        };
        let error = match ping {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some("ping timed out".to_owned()),
        };
        let now_serving = error.is_none();
        if serving != Some(now_serving) {
            match &error {
                None => tracing::info!("the store answers; health is SERVING"),
                Some(error) => {
                    tracing::warn!(%error, "the store (redis) does not answer; health is NOT_SERVING")
                }
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&reporter, status).await;
            serving = Some(now_serving);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
