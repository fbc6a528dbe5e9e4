//! OpenTelemetry trace export (OTLP over gRPC), off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set:
//! every `tracing` span of the broker (one per RPC, one per Redis round trip, one per delivery of
//! a message that carries a `traceparent`) becomes an OTel span, `OTEL_SERVICE_NAME` names the
//! service, and the W3C `traceparent` a client sends (as gRPC metadata, or stored in the
//! message) makes the broker's spans children of the client's.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::model::{Delivery, Field};

/// The message field (and gRPC metadata key) a W3C trace context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// The variable that turns export on (the OTLP exporter reads it too).
pub const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps the exporter alive; flushes what is left when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("could not flush the last spans to the OTLP endpoint: {err}");
        }
    }
}

/// The `tracing` layer that turns spans into OTel spans.
pub type ExportLayer<S> =
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

/// The export layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` asks for one (call within a Tokio
/// runtime: the exporter is a tonic client).
pub fn layer<S>() -> Result<Option<(ExportLayer<S>, Telemetry)>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if std::env::var_os(ENDPOINT_VARIABLE).is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|err| format!("cannot set up the OTLP exporter: {err}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("streamgate");
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Telemetry { provider },
    )))
}

/// A `traceparent` (gRPC metadata or a message's field) as the parent of `span`; a malformed or
/// empty one leaves `span` as it is.
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    use opentelemetry::trace::TraceContextExt;
    let context = TraceContextPropagator::new().extract(&One(traceparent));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace context stored with a message, if it carries one.
pub fn stored_traceparent(fields: &[Field]) -> Option<&str> {
    fields
        .iter()
        .find(|f| f.name == TRACEPARENT)
        .and_then(|f| std::str::from_utf8(&f.value).ok())
}

/// Records a delivery of a message that carries a trace context as a span of the producer's
/// trace (exported over OTLP when on), whichever transport it leaves by.
pub fn record_delivery(delivery: &Delivery) {
    let Some(traceparent) = stored_traceparent(&delivery.entry.fields) else {
        return;
    };
    let span = tracing::info_span!(
        "deliver",
        stream = %delivery.stream,
        id = %delivery.entry.id,
        delivery_count = delivery.delivery_count,
    );
    adopt(&span, traceparent);
}
