//! The one way an algorithm runs: resolve the version, admit the call (a
//! concurrency permit, `Overloaded` when none is free, and the compiled
//! component), count it in the metrics (in flight, outcome, latency; a call
//! dropped midway is `Canceled`) and call the engine with the node's host
//! services. The invoke API (and its background `output=void` calls), event
//! deliveries, guests' `algo.call` and batch jobs all call through here; so
//! does the wasi:http gateway, which has no host services.

use crate::metrics::Metrics;
use crate::registry::{Deployed, Registry, RegistryError, Reservation, VersionSpec};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use wasmgrid_engine::{
    CallContext, HostApi, HttpBodyError, HttpCall, HttpResponse, InvokeError, Outcome, Payload,
    TriggerEvent,
};

/// The host services were bound twice: a node binds them once, as it is
/// assembled (`wasmgrid_http::app::App::open`).
#[derive(Debug, thiserror::Error)]
#[error(
    "the invoker's host services are already bound: a node binds them once, when it is assembled"
)]
pub struct HostAlreadyBound;

/// One call of a deployed version.
pub struct Call<'a> {
    /// The version to run.
    pub deployed: &'a Deployed,
    /// Its input.
    pub input: Payload,
    /// The event that caused the call, if one did (the guest sees it).
    pub trigger: Option<TriggerEvent>,
    /// A timeout lower than the version's own.
    pub timeout: Option<Duration>,
    /// `algo.call` nesting depth: 0 for calls from outside.
    pub depth: u32,
    /// The hop count of the events the call causes (see
    /// [`wasmgrid_engine::GuestIdentity::hops`]).
    pub hops: u32,
}

impl<'a> Call<'a> {
    /// A call from outside (the API, a job): no trigger, depth 0, hop 0.
    pub fn new(deployed: &'a Deployed, input: Payload, timeout: Option<Duration>) -> Self {
        Self {
            deployed,
            input,
            trigger: None,
            timeout,
            depth: 0,
            hops: 0,
        }
    }
}

/// Runs calls of deployed versions (see the module docs).
pub struct Invoker {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// The services guests reach. Bound once, after construction, because
    /// they form a cycle with their callers: the services publish to events
    /// and run `algo.call`, and event deliveries and jobs call through this
    /// invoker. Weak because the node (`wasmgrid_http::app::App`) owns the
    /// services; a strong reference here would keep them, the events service
    /// and the store open after the node is dropped.
    host: OnceLock<Weak<dyn HostApi>>,
}

impl Invoker {
    /// An invoker over the node's registry and metrics; guests reach no host
    /// services until [`Invoker::bind_host`].
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        Self {
            registry,
            metrics,
            host: OnceLock::new(),
        }
    }

    /// Binds the services guests reach through host calls. Errs on a second
    /// bind rather than ignoring it: two sets of services would mean two nodes
    /// sharing one invoker.
    pub fn bind_host(&self, host: &Arc<dyn HostApi>) -> Result<(), HostAlreadyBound> {
        self.host
            .set(Arc::downgrade(host))
            .map_err(|_| HostAlreadyBound)
    }

    /// The registry calls resolve in.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The version of `owner/name` that `spec` means.
    pub fn resolve(
        &self,
        owner: &str,
        name: &str,
        spec: &VersionSpec,
    ) -> Result<Arc<Deployed>, RegistryError> {
        self.registry.resolve(owner, name, spec)
    }

    /// Takes a concurrency permit of `deployed` now (`Overloaded` when none is
    /// free), for a call that runs later with [`Invoker::call_reserved`]: a
    /// background call must know it is admitted before answering that it was
    /// accepted.
    pub fn reserve(&self, deployed: &Deployed) -> Result<Reservation, InvokeError> {
        self.registry.reserve(deployed)
    }

    /// Runs one call, counted in the metrics.
    pub async fn call(&self, call: Call<'_>) -> Result<Outcome, InvokeError> {
        let deployed = call.deployed;
        self.metrics
            .observe_call(deployed.metrics(&self.metrics), self.run(call, None))
            .await
    }

    /// [`Invoker::call`] with a permit taken by [`Invoker::reserve`].
    pub async fn call_reserved(
        &self,
        reservation: Reservation,
        call: Call<'_>,
    ) -> Result<Outcome, InvokeError> {
        let deployed = call.deployed;
        self.metrics
            .observe_call(
                deployed.metrics(&self.metrics),
                self.run(call, Some(reservation)),
            )
            .await
    }

    /// [`Invoker::call`] for a caller that counts outcomes and latency itself
    /// (jobs, with metric handles looked up once per run): the call is
    /// counted in flight here, and `Canceled` if it is dropped midway.
    pub async fn call_counting_outcome_elsewhere(
        &self,
        call: Call<'_>,
    ) -> Result<Outcome, InvokeError> {
        let deployed = call.deployed;
        let guard = self.metrics.start_call(deployed.endpoint_label());
        let result = self.run(call, None).await;
        guard.finish_uncounted();
        result
    }

    /// Serves one HTTP request with a wasi:http version: the permit is held
    /// until the guest finishes, which may be after the response head.
    /// Counted in the metrics like [`Invoker::call`] (no latency: the
    /// response streams on).
    pub async fn handle_http<B>(
        &self,
        deployed: &Deployed,
        request: hyper::Request<B>,
    ) -> Result<HttpResponse, InvokeError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<HttpBodyError>,
    {
        // A guard: when the client goes away this future is dropped mid-call.
        let guard = self.metrics.start_call(deployed.endpoint_label());
        let result = self.serve_http(deployed, request).await;
        guard.finish(match &result {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        });
        result
    }

    async fn serve_http<B>(
        &self,
        deployed: &Deployed,
        request: hyper::Request<B>,
    ) -> Result<HttpResponse, InvokeError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<HttpBodyError>,
    {
        let (permit, prepared) = self.registry.admit(deployed, None).await?;
        self.registry
            .engine()
            .handle_http(
                prepared,
                request,
                HttpCall {
                    limits: deployed.limits(None),
                    outbound: deployed.outbound().clone(),
                    guard: Box::new(permit),
                },
            )
            .await
    }

    /// Admits and runs one call, unobserved.
    async fn run(
        &self,
        call: Call<'_>,
        reservation: Option<Reservation>,
    ) -> Result<Outcome, InvokeError> {
        let Call {
            deployed,
            input,
            trigger,
            timeout,
            depth,
            hops,
        } = call;
        let (_permit, prepared) = self.registry.admit(deployed, reservation).await?;
        let context = CallContext {
            identity: deployed.identity_with_hops(hops),
            host: self.host()?,
            depth,
        };
        let engine = self.registry.engine();
        let limits = deployed.limits(timeout);
        match self.registry.warm_pool(deployed) {
            None => {
                engine
                    .invoke(prepared, context, input, trigger, limits)
                    .await
            }
            Some(pool) => {
                let (start, result) = engine
                    .invoke_warm(prepared, pool, context, input, trigger, limits)
                    .await;
                self.metrics
                    .instance_started(deployed.metrics(&self.metrics), start);
                result
            }
        }
    }

    fn host(&self) -> Result<Arc<dyn HostApi>, InvokeError> {
        let host = self.host.get().ok_or_else(|| {
            InvokeError::Host("the node's host services are not bound (Invoker::bind_host)".into())
        })?;
        host.upgrade()
            .ok_or_else(|| InvokeError::Host("the server is shutting down".into()))
    }
}
