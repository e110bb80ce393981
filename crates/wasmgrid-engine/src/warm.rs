//! Warm instances: one instance serving several calls of one version, one at a
//! time (a version deployed with `reuse=N`).
//!
//! What persists between the calls of a warm instance is the guest's own
//! state (its linear memory: a loaded model, a table) and the WASI resources
//! it holds (its stdio streams). What never does: the call's identity and host
//! services, its trigger, its deadline, its captured stdout/stderr and the
//! `wasi:keyvalue` buckets it opened under its grants. [`HostState::begin_call`]
//! installs them and [`HostState::end_call`] takes them away again, so an idle
//! instance holds nothing of the last call but the guest's memory.
//!
//! An instance leaves the pool for exactly one call; it goes back only when
//! that call returned (a result or a guest error), and not after a trap, a
//! timeout, an out-of-memory, a stack overflow or a cancelled call (the future
//! owning it was dropped), nor once it has served `reuse` calls. The memory
//! cap applies to the instance over its whole life.
//!
//! Idle instances hold pooling-allocator slots. They are dropped after
//! [`crate::EngineConfig::warm_idle_timeout`], beyond
//! [`crate::EngineConfig::warm_pool_size`] per version, when their version's
//! pool is dropped, and all of them before a call is told `Overloaded` for want
//! of a slot ([`Pools::evict_idle`]).

use crate::{CapturedOutput, HostState, bindings};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::Store;

/// How a version's instances are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmSettings {
    /// Calls one instance serves before it is discarded (at least 1).
    pub reuse: u32,
    /// The version's memory cap: the instance's whole life counts against it.
    pub memory_bytes: u64,
    /// Time budget of the instance's `init` (the version's own timeout, not a
    /// caller's lower one).
    pub init_timeout: Duration,
}

/// An instance ready for its next call.
pub(crate) struct WarmInstance {
    pub(crate) store: Store<HostState>,
    pub(crate) algorithm: bindings::Algorithm,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    /// Calls served so far.
    pub(crate) calls: u32,
}

struct Idle {
    instance: WarmInstance,
    since: Instant,
}

/// The idle warm instances of one version. Created by
/// [`crate::Engine::warm_pool`]; dropping it drops its idle instances.
pub struct WarmPool {
    settings: WarmSettings,
    /// Most recently used last: a call takes the warmest instance.
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl WarmPool {
    /// The version's reuse settings.
    pub fn settings(&self) -> WarmSettings {
        self.settings
    }

    /// How many instances wait for a call now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // list itself is always consistent (push/pop).
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The warmest idle instance that has not idled past the timeout.
    pub(crate) fn checkout(&self) -> Option<WarmInstance> {
        let expired;
        let found = {
            let mut idle = self.lock();
            let now = Instant::now();
            // Oldest first: everything before the first fresh one is expired.
            let keep_from = idle
                .iter()
                .position(|i| now.duration_since(i.since) < self.idle_timeout)
                .unwrap_or(idle.len());
            expired = idle.drain(..keep_from).collect::<Vec<_>>();
            idle.pop().map(|i| i.instance)
        };
        // Dropped outside the lock: dropping a store resets its slot.
        drop(expired);
        found
    }

    /// Returns an instance after a call that completed, unless it has served
    /// its calls or the pool is full.
    pub(crate) fn checkin(&self, instance: WarmInstance) {
        if instance.calls >= self.settings.reuse || self.max_idle == 0 {
            return;
        }
        let evicted = {
            let mut idle = self.lock();
            idle.push(Idle {
                instance,
                since: Instant::now(),
            });
            if idle.len() > self.max_idle {
                Some(idle.remove(0))
            } else {
                None
            }
        };
        drop(evicted);
    }

    /// Drops idle instances idle for longer than the timeout (all of them
    /// when `all`); returns how many.
    fn sweep(&self, now: Instant, all: bool) -> usize {
        let dropped: Vec<Idle> = {
            let mut idle = self.lock();
            if all {
                std::mem::take(&mut *idle)
            } else {
                let keep_from = idle
                    .iter()
                    .position(|i| now.duration_since(i.since) < self.idle_timeout)
                    .unwrap_or(idle.len());
                idle.drain(..keep_from).collect()
            }
        };
        dropped.len()
    }
}

/// Every live [`WarmPool`] of an engine, for sweeps and eviction.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Mutex<Vec<Weak<WarmPool>>>,
}

impl Pools {
    pub(crate) fn create(
        &self,
        settings: WarmSettings,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Arc<WarmPool> {
        let pool = Arc::new(WarmPool {
            settings: WarmSettings {
                reuse: settings.reuse.max(1),
                ..settings
            },
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        });
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    fn live(&self) -> Vec<Arc<WarmPool>> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.iter().filter_map(Weak::upgrade).collect()
    }

    /// Drops every idle instance of every version: called before a call is
    /// told `Overloaded` for want of an instance slot. Returns how many.
    pub(crate) fn evict_idle(&self) -> usize {
        self.live()
            .iter()
            .map(|p| p.sweep(Instant::now(), true))
            .sum()
    }

    /// Drops the instances that idled past their timeout. Returns how many.
    pub(crate) fn sweep_expired(&self) -> usize {
        let now = Instant::now();
        self.live().iter().map(|p| p.sweep(now, false)).sum()
    }
}
