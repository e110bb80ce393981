//! wasmgrid's engine: wasmtime configuration, sandbox limits, and one invocation of an
//! algorithm from start to finish.
//!
//! This crate knows nothing of HTTP serving, versions or storage. It turns component
//! bytes into a [`Component`], checks that the component is something wasmgrid
//! can run ([`Engine::prepare`]), and runs calls on fresh instances
//! ([`Engine::invoke`]) under a deadline, a memory cap and bounded output capture.
//!
//! The deadline is enforced two ways. Epoch interruption stops CPU-bound guests:
//! one ticker thread bumps the engine's epoch every [`EngineConfig::epoch_tick`],
//! and at every tick a running guest *yields* to the tokio scheduler (so two
//! runaway guests on two cores cannot starve the server) and is stopped once its
//! deadline has passed. Epochs do not fire while the guest waits in a host call,
//! so the whole call also sits under a tokio timer.

mod bindings;
pub mod error_kind;
mod host;
mod http;
pub mod identity;
mod output;
mod pipeline;
mod warm;

// Re-exported because [`HostApi`] and [`TriggerEvent`] use them; they live
// below the engine so the data layer can use them without depending on the
// wasmtime module.
pub use crate::identity::{GuestIdentity, HOPS_ATTRIBUTE, parse_hops};
pub use host::{CallContext, GuestDataError, GuestFileInfo, HostApi, KvBucket, NoHostServices};
pub use http::{HttpBodyError, HttpCall, HttpResponse, HttpState, OutboundAllowList};
pub use output::CapturedOutput;
pub use pipeline::{CallScope, GuestCallError, OutgoingEvent};
pub use warm::{WarmPool, WarmSettings};
pub use wasmgrid_cloudevents::TriggerEvent;

use crate::error_kind::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{
    Component, ComponentExportIndex, Instance, InstancePre, Linker, Resource, ResourceTable,
    types::ComponentItem,
};
use wasmtime::{
    Config, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
    UpdateDeadline, WasmBacktrace,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Export that makes a component an algorithm (any 0.1.x minor release).
pub const HANDLER_EXPORT_PREFIX: &str = "wasmgrid:algorithm/handler@0.1.";
/// Export of `algorithm-with-init` components: `lifecycle.init`, run once per
/// instance (any 0.1.x minor release).
pub const LIFECYCLE_EXPORT_PREFIX: &str = "wasmgrid:algorithm/lifecycle@0.1.";
/// Export that makes a component a `wasi:http/proxy` handler.
pub const HTTP_EXPORT_PREFIX: &str = "wasi:http/incoming-handler@0.2.";

/// Frames captured in a trap's backtrace.
const BACKTRACE_FRAMES: usize = 128;

/// Engine-wide settings. The defaults suit a 2-core, 24 GiB machine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instances that may exist at once across all algorithms (pooling slots).
    pub instance_slots: u32,
    /// Largest memory cap an algorithm may ask for, in bytes; also the pooling
    /// allocator's per-memory slot size.
    pub max_memory_bytes: u64,
    /// How often the epoch advances: the granularity of deadline checks and of
    /// CPU-bound guests yielding.
    pub epoch_tick: Duration,
    /// Bytes of stdout (and, separately, stderr) kept per call.
    pub output_limit: usize,
    /// Idle warm instances kept per version (versions deployed with `reuse`).
    pub warm_pool_size: usize,
    /// An idle warm instance unused for this long is dropped.
    pub warm_idle_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            instance_slots: 1000,
            max_memory_bytes: 4 << 30,
            epoch_tick: Duration::from_millis(5),
            output_limit: 1 << 20,
            warm_pool_size: 8,
            warm_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What a component is, judged by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// Exports `wasmgrid:algorithm/handler@0.1.x`.
    Algorithm,
    /// Exports `wasi:http/incoming-handler@0.2.x`.
    Http,
}

/// Why bytes are not a component wasmgrid can run. The message says what was found
/// and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidComponent(pub String);

/// Input or output of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Media type (`application/json`, `text/plain`, `application/octet-stream`, ...).
    pub content_type: String,
    /// The bytes.
    pub body: bytes::Bytes,
}

/// How a guest-reported error is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestErrorKind {
    /// `invalid-input`: never retried.
    InvalidInput,
    /// `permanent`: never retried.
    Permanent,
    /// `transient`: may be retried.
    Transient,
}

/// Why a call did not produce output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The guest returned an error.
    #[error("{message}")]
    Guest {
        /// Which WIT error case.
        kind: GuestErrorKind,
        /// The guest's message.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("the call did not finish within its timeout of {}", fmt_duration(*.timeout))]
    Timeout {
        /// The timeout that applied.
        timeout: Duration,
    },
    /// The guest tried to grow memory past its cap.
    #[error(
        "the algorithm tried to use more than its memory cap of {limit_mib} MiB; deploy it with a larger --memory, or reduce its memory use"
    )]
    OutOfMemory {
        /// The cap in MiB.
        limit_mib: u64,
    },
    /// The guest overflowed its stack.
    #[error("the algorithm overflowed its stack (unbounded recursion?){detail}")]
    StackOverflow {
        /// Extra detail (e.g. how it was detected).
        detail: String,
    },
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, ...).
    #[error("the algorithm crashed: {message}")]
    Crash {
        /// The trap and, when the guest wrote one, its last stderr lines (a Rust
        /// panic message, for example).
        message: String,
    },
    /// No instance slot or concurrency permit was free.
    #[error("{0}")]
    Overloaded(String),
    /// The host failed to run the call (a bug or resource exhaustion, not the
    /// guest's fault).
    #[error("internal error running the algorithm: {0}")]
    Host(String),
}

impl InvokeError {
    /// The class of this failure (its `error_type` is [`ErrorKind::as_str`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            InvokeError::Guest {
                kind: GuestErrorKind::Transient,
                ..
            } => ErrorKind::TransientAlgorithmError,
            InvokeError::Guest { .. } => ErrorKind::AlgorithmError,
            InvokeError::Timeout { .. } => ErrorKind::TimeoutError,
            InvokeError::OutOfMemory { .. } => ErrorKind::OutOfMemoryError,
            InvokeError::StackOverflow { .. } => ErrorKind::StackOverflowError,
            InvokeError::Crash { .. } => ErrorKind::CrashError,
            InvokeError::Overloaded(_) => ErrorKind::Overloaded,
            InvokeError::Host(_) => ErrorKind::InternalError,
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Wall-clock budget for the whole call.
    pub timeout: Duration,
    /// Linear memory cap, in bytes, summed over the instance's memories.
    pub memory_bytes: u64,
    /// Wall-clock budget of a new instance's `lifecycle.init` (the version's
    /// own timeout: a caller's lower `timeout` does not shorten it).
    pub init_timeout: Duration,
}

/// How a call got its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStart {
    /// A new instance: instantiated, and `init` run if the component exports it.
    Cold,
    /// An idle warm instance of the version.
    Warm,
}

/// A successful call.
pub struct Outcome {
    /// The guest's output.
    pub output: Payload,
    /// What the guest wrote to stdout.
    pub stdout: CapturedOutput,
    /// What the guest wrote to stderr.
    pub stderr: CapturedOutput,
    /// Wall-clock time from instantiation to return.
    pub duration: Duration,
}

/// A component linked and ready to instantiate: produced once per deployed
/// version and shared by all its calls.
#[derive(Clone)]
pub struct Prepared {
    pre: PreparedKind,
}

/// The pre-instance of either kind of component.
#[derive(Clone)]
enum PreparedKind {
    Algorithm(PreparedAlgorithm),
    Http(http::HttpPre),
}

/// An algorithm's pre-instance and, for `algorithm-with-init` components, where
/// its `lifecycle.init` export is.
#[derive(Clone)]
struct PreparedAlgorithm {
    instance_pre: InstancePre<HostState>,
    indices: bindings::AlgorithmIndices,
    init: Option<ComponentExportIndex>,
}

impl Prepared {
    fn algorithm(&self) -> Option<&PreparedAlgorithm> {
        match &self.pre {
            PreparedKind::Algorithm(pre) => Some(pre),
            PreparedKind::Http(_) => None,
        }
    }

    fn http(&self) -> Option<&http::HttpPre> {
        match &self.pre {
            PreparedKind::Http(pre) => Some(pre),
            PreparedKind::Algorithm(_) => None,
        }
    }

    /// Whether the component exports `lifecycle.init` (world
    /// `algorithm-with-init`).
    pub fn has_init(&self) -> bool {
        self.algorithm().is_some_and(|a| a.init.is_some())
    }
}

/// Store data of one instance: of one call, or of the calls of a warm
/// instance, one at a time.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The running call's identity and host services.
    call: CallContext,
    /// The running call's depth, deadline and trigger.
    scope: CallScope,
    /// `wasi:keyvalue` buckets the running call opened (their table reps).
    call_buckets: Vec<u32>,
}

impl HostState {
    /// Installs a call's identity, services, deadline and trigger.
    fn begin_call(&mut self, call: CallContext, scope: CallScope) {
        self.call = call;
        self.scope = scope;
    }

    /// Takes away everything of the call that just ended: the buckets it
    /// opened under its grants, its identity and host services, its trigger.
    /// What is left is the guest's own state.
    fn end_call(&mut self) {
        for rep in self.call_buckets.drain(..) {
            // Already gone if the guest dropped it (then `drop` removed the
            // rep too); a different type at that rep is not ours to delete.
            let _ = self.table.delete(Resource::<host::KvBucket>::new_own(rep));
        }
        self.call = CallContext::standalone(GuestIdentity::default());
        self.scope.trigger = None;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Raised (as the trap's error) when a guest passes its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

/// Raised (as the trap's error) when a guest grows memory past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {limit} bytes exceeded (wanted {desired})")]
struct MemoryCapExceeded {
    limit: u64,
    desired: u64,
}

/// Caps the sum of an instance's linear memories. Returning an error (rather than
/// refusing the growth) traps at once, so an out-of-memory is reported as such
/// instead of as whatever the guest's allocator does on failure.
struct MemoryLimiter {
    limit: u64,
    used: u64,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired - current.min(desired)) as u64;
        let total = self.used + grow;
        if total > self.limit {
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                limit: self.limit,
                desired: total,
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(max.is_none_or(|m| desired <= m))
    }
}

/// The shared wasmtime engine, linker and epoch ticker.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    /// WASI 0.2 and `wasi:http` for `wasi:http/proxy` components.
    http_linker: Linker<HttpState>,
    config: EngineConfig,
    compat_hash: String,
    ticker_stop: Arc<std::sync::atomic::AtomicBool>,
    /// Every version's idle warm instances.
    warm: Arc<warm::Pools>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Engine {
    /// A guest's WASI context: stdout and stderr captured (bounded), no
    /// sockets, no name lookups, no files, no environment.
    pub(crate) fn guest_wasi(&self) -> (WasiCtx, CapturedOutput, CapturedOutput) {
        let stdout = CapturedOutput::new(self.config.output_limit);
        let stderr = CapturedOutput::new(self.config.output_limit);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        (wasi, stdout, stderr)
    }

    /// Builds the engine: Cranelift, pooling allocator, epoch interruption, the
    /// WASI 0.2 and wasmgrid host interfaces in the linker, and the ticker thread.
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.wasm_component_model(true);
        // No guest uses the component-model-async proposal, and with it on every
        // store carries concurrent-call state: a parked worker fiber that is
        // disposed on drop by building a `wasmtime::Error` (a backtrace capture
        // under RUST_BACKTRACE=1), on every call. Off, calls take the plain
        // fiber path.
        wasm.concurrency_support(false);
        // Deep enough to recognise a recursion that overflowed a guest's shadow
        // stack (see `deep_recursion`); the cost is paid only when a call traps.
        wasm.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(BACKTRACE_FRAMES));
        // Precompiled artifacts must match this configuration exactly; keep it
        // deterministic (no host-CPU-dependent knobs beyond what wasmtime detects).
        let mut pool = PoolingAllocationConfig::default();
        let slots = config.instance_slots.max(1);
        pool.total_component_instances(slots)
            .total_stacks(slots)
            // Python and JavaScript components carry ~65 core instances each.
            .max_core_instances_per_component(200)
            .total_core_instances(slots.saturating_mul(10))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(10))
            .max_tables_per_module(8)
            .max_memories_per_module(1)
            .max_memory_size(config.max_memory_bytes as usize)
            // Reset recycled slots in place rather than handing pages back:
            // PAGEMAP_SCAN (Linux 6.7+; ignored where missing) finds the pages
            // the last instance touched, and up to `keep_resident` bytes of
            // them are reset with memset/memcpy instead of madvise. Then the
            // next instance of the same component takes no page faults and
            // no TLB shootdown. Only touched pages cost anything, so the
            // budget can be generous.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 * 1024);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&wasm).map_err(anyhow::Error::from)?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        bindings::Algorithm::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(anyhow::Error::from)?;

        // HTTP components get all of WASI 0.2 (as `wasmtime serve -S cli`
        // does: guest toolchains import wasi:cli even for proxies) plus wasi:http.
        let mut http_linker = Linker::<HttpState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut http_linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker)
            .map_err(anyhow::Error::from)?;

        let compat_hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };

        let ticker_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let warm = Arc::new(warm::Pools::default());
        {
            let weak = engine.weak();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            let pools = Arc::downgrade(&warm);
            // Idle warm instances past their timeout are dropped about once a
            // second, on this thread (a drop resets the instance's slot).
            let sweep_every = (Duration::from_secs(1).as_nanos() / tick.as_nanos().max(1)).max(1);
            std::thread::Builder::new()
                .name("wasmgrid-epoch".into())
                .spawn(move || {
                    let mut ticks: u128 = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        match weak.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => return,
                        }
                        ticks += 1;
                        if ticks.is_multiple_of(sweep_every)
                            && let Some(pools) = pools.upgrade()
                        {
                            pools.sweep_expired();
                        }
                    }
                })
                .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker thread: {e}"))?;
        }
        Ok(Self {
            engine,
            linker,
            http_linker,
            config,
            compat_hash,
            ticker_stop,
            warm,
        })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Identifies the compiled-code format: artifacts precompiled under a
    /// different hash (other wasmtime version, settings or CPU) must be recompiled.
    pub fn compatibility_hash(&self) -> &str {
        &self.compat_hash
    }

    /// Compiles component bytes (CPU-heavy: run it on a blocking thread).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, InvalidComponent> {
        check_header(bytes)?;
        Component::new(&self.engine, bytes).map_err(|e| {
            InvalidComponent(format!(
                "the component failed to validate or compile: {e:#}"
            ))
        })
    }

    /// Serializes a compiled component for [`Engine::load_precompiled`].
    pub fn serialize(&self, component: &Component) -> anyhow::Result<Vec<u8>> {
        component.serialize().map_err(anyhow::Error::from)
    }

    /// Loads a precompiled artifact that this process (or an earlier one with the
    /// same [`Engine::compatibility_hash`]) wrote with [`Engine::serialize`].
    ///
    /// Only files wasmgrid wrote into its own data directory are ever passed here:
    /// wasmtime trusts precompiled code, so it must never come from a user.
    pub fn load_precompiled(&self, path: &std::path::Path) -> anyhow::Result<Component> {
        // SAFETY: the file is one wasmgrid produced with `serialize` under this
        // engine's compatibility hash and stored in its own data directory;
        // wasmtime additionally checks the header's version and settings.
        unsafe { Component::deserialize_file(&self.engine, path) }.map_err(anyhow::Error::from)
    }

    /// Classifies a component by its exports and links it against the host,
    /// rejecting components that are neither algorithms nor HTTP handlers, and
    /// components that import something the host does not provide.
    pub fn prepare(
        &self,
        component: &Component,
    ) -> Result<(ComponentKind, Option<Prepared>), InvalidComponent> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let kind = if exports.iter().any(|e| e.starts_with(HANDLER_EXPORT_PREFIX)) {
            ComponentKind::Algorithm
        } else if exports.iter().any(|e| e.starts_with(HTTP_EXPORT_PREFIX)) {
            ComponentKind::Http
        } else {
            let found = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            return Err(InvalidComponent(format!(
                "the component exports {found}, but a component must export either \
                 wasmgrid:algorithm/handler@0.1.x (an algorithm: build it with the wasmgrid SDK, \
                 wasmgrid_sdk::algorithm!(apply)) or wasi:http/incoming-handler@0.2.x (an HTTP handler)"
            )));
        };
        if kind == ComponentKind::Http {
            let pre = self.prepare_http(component)?;
            return Ok((
                kind,
                Some(Prepared {
                    pre: PreparedKind::Http(pre),
                }),
            ));
        }
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            let imports: Vec<String> = ty
                .imports(&self.engine)
                .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_) | ComponentItem::ComponentFunc(_)))
                .map(|(name, _)| name.to_string())
                .filter(|name| !provided_import(name))
                .collect();
            let hint = if imports.is_empty() {
                String::new()
            } else {
                format!(" (imports wasmgrid does not provide: {})", imports.join(", "))
            };
            InvalidComponent(format!(
                "the component imports something wasmgrid does not provide{hint}: {e:#}. Algorithms may import \
                 WASI 0.2 and wasmgrid:algorithm interfaces only"
            ))
        })?;
        let indices = bindings::AlgorithmIndices::new(&instance_pre).map_err(|e| {
            InvalidComponent(format!(
                "the component's handler export has the wrong shape: {e:#}"
            ))
        })?;
        let init = lifecycle_init(&self.engine, component, &exports)?;
        Ok((
            kind,
            Some(Prepared {
                pre: PreparedKind::Algorithm(PreparedAlgorithm {
                    instance_pre,
                    indices,
                    init,
                }),
            }),
        ))
    }

    /// A pool for the warm instances of one version (deployed with `reuse`),
    /// kept until it is dropped. Its idle instances count against the
    /// instance slots and are evicted before a call is told `Overloaded`.
    pub fn warm_pool(&self, settings: WarmSettings) -> Arc<WarmPool> {
        self.warm.create(
            settings,
            self.config.warm_pool_size,
            self.config.warm_idle_timeout,
        )
    }

    /// A store for a new instance, with the call's context installed and its
    /// deadline (`started + timeout`) armed.
    fn new_store(
        &self,
        memory_bytes: u64,
        call: CallContext,
        started: Instant,
        timeout: Duration,
    ) -> (Store<HostState>, CapturedOutput, CapturedOutput) {
        let deadline = started + timeout;
        let scope = CallScope {
            depth: call.depth,
            deadline,
            trigger: None,
        };
        let (wasi, stdout, stderr) = self.guest_wasi();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_bytes,
                used: 0,
            },
            call,
            scope,
            call_buckets: Vec::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        set_deadline(&mut store, deadline);
        (store, stdout, stderr)
    }

    /// Instantiates, evicting idle warm instances and trying once more when
    /// every instance slot is taken: an idle instance never makes a call
    /// `Overloaded`.
    async fn instantiate(
        &self,
        pre: &PreparedAlgorithm,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<(Instance, bindings::Algorithm)> {
        let instance = match pre.instance_pre.instantiate_async(&mut *store).await {
            Err(e) if is_slot_exhaustion(&e) && self.warm.evict_idle() > 0 => {
                pre.instance_pre.instantiate_async(&mut *store).await?
            }
            other => other?,
        };
        let algorithm = pre.indices.load(&mut *store, &instance)?;
        Ok((instance, algorithm))
    }

    /// Instantiates and runs `init` (if exported) under the init budget.
    /// The store has the call's context installed: `init` runs with the
    /// algorithm's identity and services (it may read data and secrets).
    async fn start_instance(
        &self,
        pre: &PreparedAlgorithm,
        store: &mut Store<HostState>,
        stderr: &CapturedOutput,
        limits: CallLimits,
    ) -> Result<bindings::Algorithm, InvokeError> {
        let Some(init) = &pre.init else {
            // No init: instantiation counts against the call's own deadline,
            // which the caller has set.
            return match tokio::time::timeout(limits.timeout, self.instantiate(pre, store)).await {
                Err(_elapsed) => Err(InvokeError::Timeout {
                    timeout: limits.timeout,
                }),
                Ok(Err(trap)) => Err(classify_trap(&trap, limits, stderr)),
                Ok(Ok((_, algorithm))) => Ok(algorithm),
            };
        };
        // `init` runs under its own budget, and so does the instantiation
        // before it (start-up code runs there too).
        let init_limits = CallLimits {
            timeout: limits.init_timeout,
            ..limits
        };
        set_deadline(store, Instant::now() + limits.init_timeout);
        let run = async {
            let (instance, algorithm) = self.instantiate(pre, store).await?;
            let func = instance
                .get_typed_func::<(), (Result<(), bindings::GuestError>,)>(&mut *store, init)?;
            let (result,) = func.call_async(&mut *store, ()).await?;
            Ok::<_, wasmtime::Error>((algorithm, result))
        };
        match tokio::time::timeout(limits.init_timeout, run).await {
            Err(_elapsed) => Err(InvokeError::Timeout {
                timeout: limits.init_timeout,
            }),
            Ok(Err(trap)) => Err(classify_trap(&trap, init_limits, stderr)),
            Ok(Ok((_, Err(guest)))) => {
                let InvokeError::Guest { kind, message } = guest_error(guest) else {
                    unreachable!("guest_error always returns InvokeError::Guest")
                };
                Err(InvokeError::Guest {
                    kind,
                    message: format!("init failed: {message}"),
                })
            }
            Ok(Ok((algorithm, Ok(())))) => Ok(algorithm),
        }
    }

    /// Runs `apply` on an instance whose store has the call's context and
    /// deadline installed.
    async fn apply(
        store: &mut Store<HostState>,
        algorithm: &bindings::Algorithm,
        input: Payload,
        trigger: Option<TriggerEvent>,
        limits: CallLimits,
        stderr: &CapturedOutput,
    ) -> Result<Payload, InvokeError> {
        let input = bindings::Payload {
            content_type: input.content_type,
            body: input.body.to_vec(),
        };
        let trigger = trigger.map(|t| bindings::Event {
            id: t.id,
            source: t.source,
            type_: t.ty,
            subject: t.subject,
            time: t.time,
            data_content_type: t.data_content_type,
            extensions: t.extensions,
        });
        let run = algorithm.wasmgrid_algorithm_handler().call_apply(
            &mut *store,
            &input,
            trigger.as_ref(),
        );
        match tokio::time::timeout(limits.timeout, run).await {
            Err(_elapsed) => Err(InvokeError::Timeout {
                timeout: limits.timeout,
            }),
            Ok(Ok(Ok(out))) => Ok(Payload {
                content_type: out.content_type,
                body: out.body.into(),
            }),
            Ok(Ok(Err(guest))) => Err(guest_error(guest)),
            Ok(Err(trap)) => Err(classify_trap(&trap, limits, stderr)),
        }
    }

    /// Runs one call on a fresh instance (instantiated, `init` run if the
    /// component exports it, called once, dropped).
    pub async fn invoke(
        &self,
        prepared: &Prepared,
        call: CallContext,
        input: Payload,
        trigger: Option<TriggerEvent>,
        limits: CallLimits,
    ) -> Result<Outcome, InvokeError> {
        let pre = algorithm_of(prepared)?;
        let started = Instant::now();
        let depth = call.depth;
        let (mut store, stdout, stderr) =
            self.new_store(limits.memory_bytes, call, started, limits.timeout);
        let algorithm = self
            .start_instance(pre, &mut store, &stderr, limits)
            .await?;
        // The call's clock starts after `init` (which has its own budget);
        // without init, instantiation counts against the call, as always.
        let call_start = if pre.init.is_some() {
            Instant::now()
        } else {
            started
        };
        let deadline = call_start + limits.timeout;
        store.data_mut().scope = CallScope {
            depth,
            deadline,
            trigger: trigger.clone().map(Arc::new),
        };
        set_deadline(&mut store, deadline);
        let remaining = CallLimits {
            timeout: deadline.saturating_duration_since(Instant::now()),
            ..limits
        };
        let output = Self::apply(&mut store, &algorithm, input, trigger, remaining, &stderr)
            .await
            .map_err(|e| report_full_timeout(e, limits))?;
        Ok(Outcome {
            output,
            stdout,
            stderr,
            duration: started.elapsed(),
        })
    }

    /// Runs one call on a warm instance of `pool`'s version: an idle one if
    /// there is one, else a new one (instantiated, `init` run), which goes back
    /// to the pool after the call unless the call trapped, timed out, ran out
    /// of memory or stack, was cancelled, or the instance has served its
    /// `reuse` calls. See [`WarmPool`] for what is and is not kept.
    pub async fn invoke_warm(
        &self,
        prepared: &Prepared,
        pool: &WarmPool,
        call: CallContext,
        input: Payload,
        trigger: Option<TriggerEvent>,
        limits: CallLimits,
    ) -> (InstanceStart, Result<Outcome, InvokeError>) {
        let pre = match algorithm_of(prepared) {
            Ok(pre) => pre,
            Err(e) => return (InstanceStart::Cold, Err(e)),
        };
        let started = Instant::now();
        let depth = call.depth;
        let (start, mut instance) = match pool.checkout() {
            Some(mut instance) => {
                instance.store.data_mut().begin_call(
                    call,
                    CallScope {
                        depth,
                        deadline: started + limits.timeout,
                        trigger: None,
                    },
                );
                (InstanceStart::Warm, instance)
            }
            None => {
                let settings = pool.settings();
                let (mut store, stdout, stderr) =
                    self.new_store(settings.memory_bytes, call, started, limits.timeout);
                let limits = CallLimits {
                    init_timeout: settings.init_timeout,
                    memory_bytes: settings.memory_bytes,
                    ..limits
                };
                match self.start_instance(pre, &mut store, &stderr, limits).await {
                    Ok(algorithm) => (
                        InstanceStart::Cold,
                        warm::WarmInstance {
                            store,
                            algorithm,
                            stdout,
                            stderr,
                            calls: 0,
                        },
                    ),
                    Err(e) => return (InstanceStart::Cold, Err(e)),
                }
            }
        };
        let call_start = if start == InstanceStart::Cold && pre.init.is_some() {
            Instant::now()
        } else {
            started
        };
        let deadline = call_start + limits.timeout;
        {
            let state = instance.store.data_mut();
            state.scope.deadline = deadline;
            state.scope.trigger = trigger.clone().map(Arc::new);
        }
        set_deadline(&mut instance.store, deadline);
        let remaining = CallLimits {
            timeout: deadline.saturating_duration_since(Instant::now()),
            ..limits
        };
        let warm::WarmInstance {
            store,
            algorithm,
            stdout,
            stderr,
            ..
        } = &mut instance;
        let result = Self::apply(store, algorithm, input, trigger, remaining, stderr)
            .await
            .map_err(|e| report_full_timeout(e, limits));
        // This call's output only; the streams stay with the instance.
        let (call_stdout, call_stderr) = (stdout.take(), stderr.take());
        instance.calls += 1;
        let keep = match &result {
            Ok(_) | Err(InvokeError::Guest { .. }) => true,
            Err(_) => false,
        };
        if keep {
            instance.store.data_mut().end_call();
            pool.checkin(instance);
        }
        (
            start,
            result.map(|output| Outcome {
                output,
                stdout: call_stdout,
                stderr: call_stderr,
                duration: started.elapsed(),
            }),
        )
    }
}

/// The algorithm side of a prepared component, or the error for an HTTP one.
fn algorithm_of(prepared: &Prepared) -> Result<&PreparedAlgorithm, InvokeError> {
    prepared.algorithm().ok_or_else(|| {
        InvokeError::Host(
            "this version is a wasi:http component: send it HTTP requests at /http/OWNER/NAME/"
                .into(),
        )
    })
}

/// Arms a store's epoch deadline: at every tick the guest yields, and past
/// `deadline` it traps with [`DeadlineExceeded`]. Set again for each call of a
/// warm instance.
fn set_deadline(store: &mut Store<HostState>, deadline: Instant) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// A guest's WIT error as the caller sees it.
fn guest_error(guest: bindings::GuestError) -> InvokeError {
    let (kind, message) = match guest {
        bindings::GuestError::InvalidInput(m) => (GuestErrorKind::InvalidInput, m),
        bindings::GuestError::Permanent(m) => (GuestErrorKind::Permanent, m),
        bindings::GuestError::Transient(m) => (GuestErrorKind::Transient, m),
    };
    InvokeError::Guest { kind, message }
}

/// A timeout names the call's whole timeout, not what was left of it when
/// `apply` started.
fn report_full_timeout(e: InvokeError, limits: CallLimits) -> InvokeError {
    match e {
        InvokeError::Timeout { .. } => InvokeError::Timeout {
            timeout: limits.timeout,
        },
        other => other,
    }
}

/// Whether instantiation failed because every pooled instance slot is taken.
fn is_slot_exhaustion(err: &wasmtime::Error) -> bool {
    err.chain()
        .any(|e| e.is::<wasmtime::PoolConcurrencyLimitError>())
}

/// Where a component's `lifecycle.init` export is, if it has one; an
/// `init` of another shape is refused at deploy.
fn lifecycle_init(
    engine: &wasmtime::Engine,
    component: &Component,
    exports: &[String],
) -> Result<Option<ComponentExportIndex>, InvalidComponent> {
    let Some(name) = exports
        .iter()
        .find(|e| e.starts_with(LIFECYCLE_EXPORT_PREFIX))
    else {
        return Ok(None);
    };
    let bad = |why: &str| {
        InvalidComponent(format!(
            "the component exports {name}, but {why}: it must be `init: func() -> result<_, error>` \
             (world algorithm-with-init of wit/algorithm.wit)"
        ))
    };
    let (item, interface) = component
        .get_export(None, name)
        .ok_or_else(|| bad("it cannot be found"))?;
    let ComponentItem::ComponentInstance(instance_ty) = item else {
        return Err(bad("it is not an interface"));
    };
    let Some(ComponentItem::ComponentFunc(func)) =
        instance_ty.get_export(engine, "init").map(|e| e.ty)
    else {
        return Err(bad("it has no function `init`"));
    };
    if func.params().len() != 0 || func.results().len() != 1 {
        return Err(bad("`init` has the wrong signature"));
    }
    component
        .get_export_index(Some(&interface), "init")
        .map(Some)
        .ok_or_else(|| bad("its `init` cannot be found"))
}

/// Imports that the linker provides (for the "what is missing" hint).
fn provided_import(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("wasmgrid:algorithm/")
}

/// Checks the preamble so that common mistakes get a precise message.
fn check_header(bytes: &[u8]) -> Result<(), InvalidComponent> {
    if bytes.is_empty() {
        return Err(InvalidComponent(
            "the request body is empty: send the component's .wasm bytes as the body".into(),
        ));
    }
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(InvalidComponent(
            "the body is not WebAssembly (it does not start with \\0asm): send a .wasm component built for \
             wasm32-wasip2"
                .into(),
        ));
    }
    match bytes[4..8] {
        [0x01, 0x00, 0x00, 0x00] => Err(InvalidComponent(
            "this is a core WebAssembly module, not a component: build for the wasm32-wasip2 target \
             (cargo build --target wasm32-wasip2) or wrap it with `wasm-tools component new`"
                .into(),
        )),
        [_, _, 0x01, 0x00] => Ok(()),
        _ => Err(InvalidComponent(
            "unknown WebAssembly binary version/layer: expected a component (layer 1)".into(),
        )),
    }
}

/// Maps a trap to the error callers see; the one place where wasmtime errors turn
/// into guest-visible classifications.
fn classify_trap(
    err: &wasmtime::Error,
    limits: CallLimits,
    stderr: &CapturedOutput,
) -> InvokeError {
    if err.chain().any(|e| e.is::<DeadlineExceeded>()) {
        return InvokeError::Timeout {
            timeout: limits.timeout,
        };
    }
    if err.chain().any(|e| e.is::<MemoryCapExceeded>()) {
        return InvokeError::OutOfMemory {
            limit_mib: limits.memory_bytes >> 20,
        };
    }
    if err
        .chain()
        .any(|e| e.is::<wasmtime::PoolConcurrencyLimitError>())
    {
        return InvokeError::Overloaded(
            "no instance slot is free: every pooled instance is in use; retry shortly".into(),
        );
    }
    let trap = err.downcast_ref::<Trap>().copied();
    match trap {
        Some(Trap::StackOverflow) => {
            return InvokeError::StackOverflow {
                detail: String::new(),
            };
        }
        Some(Trap::Interrupt) => {
            return InvokeError::Timeout {
                timeout: limits.timeout,
            };
        }
        Some(Trap::MemoryOutOfBounds) => {
            // A Rust (or C) guest keeps its frames on a shadow stack in linear
            // memory; overflowing it wraps the stack pointer and faults as an
            // out-of-bounds access. A fault with one function repeated deep on
            // the call stack is recursion running out of room: say so.
            if let Some(bt) = err.downcast_ref::<WasmBacktrace>()
                && deep_recursion(bt)
            {
                return InvokeError::StackOverflow {
                    detail: " (an out-of-bounds access at the bottom of a deep recursion: the guest's shadow \
                             stack in linear memory ran out)"
                        .into(),
                };
            }
        }
        _ => {}
    }
    if trap.is_none() && err.downcast_ref::<WasmBacktrace>().is_none() {
        // Not a guest trap: an instantiation or host failure.
        return InvokeError::Host(format!("{err:#}"));
    }
    let mut message = match trap {
        Some(t) => t.to_string(),
        None => format!("{}", err.root_cause()),
    };
    let tail = stderr_tail(stderr);
    if !tail.is_empty() {
        message.push_str("; stderr: ");
        message.push_str(&tail);
    }
    InvokeError::Crash { message }
}

fn deep_recursion(bt: &WasmBacktrace) -> bool {
    const REPEATS: usize = BACKTRACE_FRAMES / 2;
    let frames = bt.frames();
    if frames.len() < REPEATS {
        return false;
    }
    let mut counts = std::collections::HashMap::<u32, usize>::new();
    frames.iter().any(|f| {
        let c = counts.entry(f.func_index()).or_default();
        *c += 1;
        *c >= REPEATS
    })
}

/// The last few lines the guest wrote to stderr (a panic message, typically).
fn stderr_tail(stderr: &CapturedOutput) -> String {
    let text = stderr.text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    let mut tail = tail.trim().to_string();
    if tail.len() > 1000 {
        let mut cut = 1000;
        while !tail.is_char_boundary(cut) {
            cut -= 1;
        }
        tail.truncate(cut);
        tail.push('…');
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_the_problem() {
        assert!(check_header(b"").unwrap_err().0.contains("empty"));
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .0
                .contains("not WebAssembly")
        );
        assert!(
            check_header(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .0
                .contains("core WebAssembly module")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn limiter_errors_past_the_cap() {
        let mut l = MemoryLimiter {
            limit: 100,
            used: 0,
        };
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.memory_growing(60, 100, None).is_ok());
        assert!(l.memory_growing(100, 160, None).is_err());
    }
}
