//! wasmgrid: a self-hosted serverless runtime for sandboxed WebAssembly
//! algorithms.
//!
//! Modules, with dependencies pointing one way:
//! [`store`] (durable storage trait) ← [`engine`] (wasmtime, sandbox limits,
//! one invocation, the guest-facing host interfaces) ← [`registry`] (deploy,
//! versions, compiled artifacts) ← [`data`] (collections), [`secrets`],
//! [`jobs`] (batch jobs over collections) ←
//! [`services`] (what guests reach, checked) ← [`api`] (HTTP) and [`cli`].
//! [`auth`] holds API keys; [`app`] assembles a node. The engine knows nothing
//! of HTTP or storage: host calls go through [`engine::HostApi`].

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod clock;
pub mod data;
pub mod engine;
pub mod error_kind;
pub mod events;
pub mod fsutil;
pub mod identity;
pub mod jobs;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod secrets;
pub mod server;
pub mod server_paths;
pub mod services;
pub mod store;
