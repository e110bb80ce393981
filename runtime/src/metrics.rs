//! Prometheus metrics, served as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of per-algorithm series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `owner/name/version`.
    pub algorithm: String,
    /// `ok` or the error_type of the failure.
    pub outcome: String,
}

/// Labels of latency series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlgorithmLabel {
    /// `owner/name/version`.
    pub algorithm: String,
}

/// Every metric wasmgrid exports.
pub struct Metrics {
    registry: Registry,
    /// Invocations by algorithm and outcome.
    pub invocations: Family<CallLabels, Counter>,
    /// Invocation latency by algorithm.
    pub invocation_seconds: Family<AlgorithmLabel, Histogram>,
    /// Components compiled by this process (deploys and recompiles).
    pub compilations: Gauge<u64, AtomicU64>,
    /// Calls running now.
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wasmgrid");
        let invocations = Family::<CallLabels, Counter>::default();
        registry.register(
            "invocations",
            "Algorithm invocations by outcome",
            invocations.clone(),
        );
        let invocation_seconds = Family::<AlgorithmLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0,
            ])
        });
        registry.register(
            "invocation_duration_seconds",
            "Algorithm invocation latency",
            invocation_seconds.clone(),
        );
        let compilations = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "component_compilations",
            "Components compiled by this process (deploys and recompiles after an engine change)",
            compilations.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "invocations_in_flight",
            "Algorithm calls running now",
            in_flight.clone(),
        );
        Self {
            registry,
            invocations,
            invocation_seconds,
            compilations,
            in_flight,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
