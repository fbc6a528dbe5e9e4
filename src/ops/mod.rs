//! What an operator sees of the broker: Prometheus metrics, gauges sampled on a timer, and
//! OpenTelemetry traces. Two layers live here, kept apart by `tests/layers.rs`:
//! - [`metrics`] and [`telemetry`] record, and sit at the base: every layer records metrics
//!   and opens spans, so these import nothing of the crate above [`crate::model`];
//! - [`gauges`] samples the store and the redelivery state, so it sits above the core, and
//!   only the server starts it.

pub mod gauges;
pub mod metrics;
pub mod telemetry;
