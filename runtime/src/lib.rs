//! wasmgrid: a self-hosted serverless runtime for sandboxed WebAssembly
//! algorithms.
//!
//! Modules, with dependencies pointing one way: a module uses only modules on
//! its own level or below (check with `grep -rn 'crate::' runtime/src`; doc
//! links are the only exceptions).
//!
//! 1. Neutral, importing no other module: [`names`] (the naming rule),
//!    [`identity`] (who a guest is, the hop-count attribute), [`clock`],
//!    [`fsutil`], [`error_kind`] (the `error_type` classes), [`server_paths`]
//!    (the paths the server keeps for itself), [`store`] (durable storage).
//! 2. [`engine`] (wasmtime, sandbox limits, one invocation, the guest-facing
//!    host interfaces; it knows nothing of HTTP or storage: host calls go
//!    through [`engine::HostApi`]) ← [`metrics`].
//! 3. [`registry`] (deploy, versions, compiled artifacts), [`auth`] (API keys),
//!    [`secrets`]; [`invoker`] (every algorithm call: resolve, admit, observe,
//!    call, with the host services guests reach).
//! 4. [`data`] (collections) ← [`events`], [`jobs`] (batch jobs over
//!    collections). Data uses neither; events and jobs do not use each other.
//! 5. [`bridge`] (jobs ↔ events), [`services`] (what guests reach, checked),
//!    [`manifest`].
//! 6. [`app`] (assembles a node) ← [`api`] (HTTP; the one place errors get a
//!    status) ← [`server`]; [`cli`].

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
pub mod invoker;
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
