//! wasmgrid's node: [`app`] assembles one node from the crates below
//! (registry, data, events, jobs and the host services guests reach), and
//! [`api`] and [`server`] serve it over HTTP.
//!
//! - [`bridge`] connects jobs and events (a subscription can start a job; a
//!   job's end is an event) without either crate knowing the other.
//! - [`services`] is what guests reach through the engine's host API, with
//!   every grant checked.
//! - [`api`] is the one place where errors get an HTTP status and an
//!   `error_type`.

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod bridge;
pub mod cluster;
pub mod server;
pub mod services;
