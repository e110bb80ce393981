//! wasmgrid's domain core: what every node has, above the engine and the
//! store and below events, jobs and HTTP.
//!
//! - Neutral modules: [`names`] (the naming rule), [`clock`], [`fsutil`],
//!   [`server_paths`] (the paths the server keeps for itself).
//! - [`metrics`] (Prometheus), [`registry`] (deploy, versions, compiled
//!   artifacts), [`auth`] (API keys), [`secrets`], [`invoker`] (every algorithm
//!   call: resolve, admit, observe, call, with the host services guests reach).
//! - [`data`] (hosted collections, `data://owner/collection/path`).
//!
//! A module uses only modules listed before it (and the crates below:
//! `wasmgrid-engine`, `wasmgrid-store`).

#![warn(missing_docs)]

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod data;
pub mod fsutil;
pub mod invoker;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod secrets;
pub mod server_paths;
