//! wasmgrid: a self-hosted serverless runtime for sandboxed WebAssembly
//! algorithms. This crate is the `wasmgrid` command ([`cli`], the
//! [`manifest`] that `wasmgrid up` applies); the runtime itself lives in the
//! workspace's crates, which point one way (each uses only those below it;
//! `cargo tree` shows the graph, docs/ARCHITECTURE.md draws it):
//!
//! 1. `wasmgrid-cloudevents` (formats, filters; no I/O), `wasmgrid-store`
//!    (storage contracts, embedded redb backend; no engine),
//!    `wasmgrid-engine` (wasmtime, limits, one invocation; no storage, no
//!    HTTP server).
//! 2. `wasmgrid-core`: registry, keys, secrets, data collections, metrics, the
//!    Invoker.
//! 3. `wasmgrid-events`, `wasmgrid-jobs` (neither uses the other).
//! 4. `wasmgrid-http`: the node (services, the jobs/events bridge) and its API.
//!
//! The crates are re-exported here under the module names they had when they
//! were one crate, so tests, benches and scripts use one path:
//! `wasmgrid::engine`, `wasmgrid::data`, `wasmgrid::events`, ...

#![warn(missing_docs)]

pub mod cli;
pub mod manifest;

pub use wasmgrid_core::{
    auth, clock, data, fsutil, invoker, metrics, names, registry, secrets, server_paths,
};
pub use wasmgrid_engine as engine;
pub use wasmgrid_engine::{error_kind, identity};
pub use wasmgrid_events as events;
pub use wasmgrid_http::{api, app, bridge, cluster, server, services};
pub use wasmgrid_jobs as jobs;
pub use wasmgrid_store as store;
