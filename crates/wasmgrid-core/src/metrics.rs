//! Prometheus metrics, served as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use wasmgrid_engine::{InstanceStart, InvokeError, Outcome};

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

/// Labels of instance-start series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceStartLabels {
    /// `owner/name/version`.
    pub algorithm: String,
    /// `warm` (an idle warm instance served the call) or `cold` (a new
    /// instance was started, and `init` run).
    pub start: &'static str,
}

/// Labels of per-topic event series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic name.
    pub topic: String,
}

/// Labels of per-subscription event series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabel {
    /// `topic/subscription`.
    pub subscription: String,
}

/// Labels of dead-letter series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// `topic/subscription`.
    pub subscription: String,
    /// `MaxDeliveryAttemptsExceeded`, `TimeToLiveExceeded` or `NonRetryableError`.
    pub reason: String,
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
    /// Calls of versions deployed with `reuse`, by how their instance started.
    pub instance_starts: Family<InstanceStartLabels, Counter>,
    /// Events accepted by ingress (after deduplication), by topic.
    pub events_published: Family<TopicLabel, Counter>,
    /// Re-published duplicates acknowledged but not enqueued, by topic.
    pub events_duplicates: Family<TopicLabel, Counter>,
    /// Events that matched no subscription, by topic.
    pub events_dropped: Family<TopicLabel, Counter>,
    /// Deliveries enqueued (one per matching subscription), by subscription.
    pub events_matched: Family<SubscriptionLabel, Counter>,
    /// Events delivered successfully, by subscription.
    pub events_delivered: Family<SubscriptionLabel, Counter>,
    /// Failed delivery attempts (each retry counts), by subscription.
    pub delivery_failures: Family<SubscriptionLabel, Counter>,
    /// Events dead-lettered, by subscription and reason.
    pub events_dead_lettered: Family<DeadLetterLabels, Counter>,
    /// Events waiting in each subscription's queue (including retries).
    pub queue_depth: Family<SubscriptionLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        Self::with_registry(Registry::with_prefix("wasmgrid"))
    }

    /// [`Metrics::new`] for a cluster node: every series carries the label
    /// `node="<id>"`, so the series of all nodes can be summed or told apart
    /// wherever they are collected.
    pub fn for_node(node: &str) -> Self {
        Self::with_registry(Registry::with_prefix_and_labels(
            "wasmgrid",
            [("node".into(), node.to_string().into())].into_iter(),
        ))
    }

    fn with_registry(mut registry: Registry) -> Self {
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
        let instance_starts = Family::<InstanceStartLabels, Counter>::default();
        registry.register(
            "instance_starts",
            "Calls of versions deployed with reuse, by instance start: warm (an idle instance) or cold (a new one)",
            instance_starts.clone(),
        );
        let events_published = Family::<TopicLabel, Counter>::default();
        registry.register(
            "events_published",
            "Events accepted by topic ingress (duplicates excluded)",
            events_published.clone(),
        );
        let events_duplicates = Family::<TopicLabel, Counter>::default();
        registry.register(
            "events_duplicates",
            "Re-published events acknowledged but not enqueued again (same source and id within the dedup window)",
            events_duplicates.clone(),
        );
        let events_dropped = Family::<TopicLabel, Counter>::default();
        registry.register(
            "events_dropped",
            "Events that matched no subscription",
            events_dropped.clone(),
        );
        let events_matched = Family::<SubscriptionLabel, Counter>::default();
        registry.register(
            "events_matched",
            "Deliveries enqueued for a subscription",
            events_matched.clone(),
        );
        let events_delivered = Family::<SubscriptionLabel, Counter>::default();
        registry.register(
            "events_delivered",
            "Events delivered successfully",
            events_delivered.clone(),
        );
        let delivery_failures = Family::<SubscriptionLabel, Counter>::default();
        registry.register(
            "event_delivery_failures",
            "Failed delivery attempts (every retry counts)",
            delivery_failures.clone(),
        );
        let events_dead_lettered = Family::<DeadLetterLabels, Counter>::default();
        registry.register(
            "events_dead_lettered",
            "Events moved to the dead-letter store",
            events_dead_lettered.clone(),
        );
        let queue_depth = Family::<SubscriptionLabel, Gauge>::default();
        registry.register(
            "event_queue_depth",
            "Events waiting in a subscription's queue, retries included",
            queue_depth.clone(),
        );
        Self {
            registry,
            invocations,
            invocation_seconds,
            compilations,
            in_flight,
            instance_starts,
            events_published,
            events_duplicates,
            events_dropped,
            events_matched,
            events_delivered,
            delivery_failures,
            events_dead_lettered,
            queue_depth,
        }
    }

    /// The per-call series of `endpoint` (`owner/name/version`), each
    /// looked up on first use and then kept: a label lookup allocates the
    /// label and takes the family's lock, which a call on the hot path should
    /// not pay. Keep the handles with the deployed version
    /// ([`crate::registry::Deployed`] does).
    pub fn endpoint(&self, endpoint: &str) -> EndpointMetrics {
        EndpointMetrics {
            algorithm: endpoint.to_string(),
            ..EndpointMetrics::default()
        }
    }

    /// Runs one algorithm call, counting it as in flight, and records its
    /// outcome and latency in `handles`, its version's series. Every caller (the invoke API, event deliveries,
    /// jobs) goes through here, so the per-algorithm series cover all of
    /// them. A call dropped before it finishes (the client went away) is
    /// counted `Canceled`.
    pub async fn observe_call(
        &self,
        handles: &EndpointMetrics,
        call: impl std::future::Future<Output = Result<Outcome, InvokeError>>,
    ) -> Result<Outcome, InvokeError> {
        let endpoint = handles.algorithm.as_str();
        let guard = self.start_call(endpoint);
        let result = call.await;
        match &result {
            Ok(o) => {
                handles
                    .seconds
                    .get_or_init(|| {
                        self.invocation_seconds
                            .get_or_create(&AlgorithmLabel {
                                algorithm: handles.algorithm.clone(),
                            })
                            .clone()
                    })
                    .observe(o.duration.as_secs_f64());
                if !o.stdout.is_empty() || !o.stderr.is_empty() {
                    tracing::debug!(target: "wasmgrid::guest", algorithm = %endpoint, stdout = %o.stdout.text(), stderr = %o.stderr.text(), "guest output");
                }
                handles
                    .ok
                    .get_or_init(|| {
                        self.invocations
                            .get_or_create(&CallLabels {
                                algorithm: handles.algorithm.clone(),
                                outcome: "ok".into(),
                            })
                            .clone()
                    })
                    .inc();
                guard.finish_uncounted();
            }
            Err(e) => {
                if let InvokeError::Host(msg) = e {
                    tracing::error!(algorithm = %endpoint, error = %msg, "host failure during invocation");
                }
                guard.finish(e.kind().as_str());
            }
        }
        result
    }

    /// Counts one call of a version deployed with `reuse` by how its
    /// instance started.
    pub fn instance_started(&self, handles: &EndpointMetrics, start: InstanceStart) {
        let (cell, start) = match start {
            InstanceStart::Warm => (&handles.warm, "warm"),
            InstanceStart::Cold => (&handles.cold, "cold"),
        };
        cell.get_or_init(|| {
            self.instance_starts
                .get_or_create(&InstanceStartLabels {
                    algorithm: handles.algorithm.clone(),
                    start,
                })
                .clone()
        })
        .inc();
    }

    /// Counts a call of `endpoint` as in flight until the guard is dropped; a
    /// guard dropped without [`CallGuard::finish`] records `Canceled`. A
    /// guard rather than an increment and a decrement around an `.await`,
    /// because a dropped future never reaches the decrement.
    pub fn start_call<'a>(&'a self, endpoint: &'a str) -> CallGuard<'a> {
        self.in_flight.inc();
        CallGuard {
            metrics: self,
            endpoint,
            done: false,
        }
    }

    fn count_outcome(&self, endpoint: &str, outcome: &str) {
        self.invocations
            .get_or_create(&CallLabels {
                algorithm: endpoint.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One endpoint's per-call series (see [`Metrics::endpoint`]); handles share
/// the registry's counters.
/// Each is made on first use, so a series appears in `/metrics` only once
/// it has something to count.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    algorithm: String,
    ok: OnceLock<Counter>,
    seconds: OnceLock<Histogram>,
    warm: OnceLock<Counter>,
    cold: OnceLock<Counter>,
}

/// The outcome recorded for a call whose caller went away before it finished.
pub const CANCELED: &str = "Canceled";

/// One call in flight (see [`Metrics::start_call`]).
#[must_use = "dropping the guard at once counts the call as canceled"]
pub struct CallGuard<'a> {
    metrics: &'a Metrics,
    endpoint: &'a str,
    done: bool,
}

impl CallGuard<'_> {
    /// The call finished with `outcome` (`ok` or an error type).
    pub fn finish(mut self, outcome: &str) {
        self.metrics.count_outcome(self.endpoint, outcome);
        self.done = true;
    }

    /// The call finished and the caller counts its outcome itself.
    pub fn finish_uncounted(mut self) {
        self.done = true;
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        if !self.done {
            self.metrics.count_outcome(self.endpoint, CANCELED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canceled(m: &Metrics, endpoint: &str) -> u64 {
        m.invocations
            .get_or_create(&CallLabels {
                algorithm: endpoint.to_string(),
                outcome: CANCELED.to_string(),
            })
            .get()
    }

    #[test]
    fn a_dropped_call_is_canceled_and_leaves_the_gauge() {
        let m = Metrics::new();
        let handles = m.endpoint("o/n/1.0.0");
        let pending = m.observe_call(&handles, std::future::pending());
        let mut pending = Box::pin(pending);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        assert_eq!(m.in_flight.get(), 1);
        drop(pending);
        assert_eq!(m.in_flight.get(), 0);
        assert_eq!(canceled(&m, "o/n/1.0.0"), 1);

        let g = m.start_call("o/n/1.0.0");
        g.finish("ok");
        assert_eq!(m.in_flight.get(), 0);
        assert_eq!(canceled(&m, "o/n/1.0.0"), 1);
    }

    #[test]
    fn a_cluster_node_labels_every_series_with_its_id() {
        let m = Metrics::for_node("node-7f3a");
        m.start_call("o/n/1.0.0").finish("ok");
        let text = m.encode();
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(!series.is_empty(), "{text}");
        for line in series {
            assert!(line.contains("node=\"node-7f3a\""), "unlabelled: {line}");
        }
        assert!(!Metrics::new().encode().contains("node="));
    }
}
