//! wasmgrid: a self-hosted serverless runtime for sandboxed WebAssembly
//! algorithms.
//!
//! Modules, with dependencies pointing one way:
//! [`store`] (durable storage trait) ← [`engine`] (wasmtime, sandbox limits,
//! one invocation) ← [`registry`] (deploy, versions, compiled artifacts) ←
//! [`api`] (HTTP) and [`cli`]. [`auth`] holds API keys; [`app`] assembles a node.
//! The engine knows nothing of HTTP; storage sits behind [`store::Store`].

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod engine;
pub mod manifest;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
