//! Integration tests: the real `wasmgrid` binary, real HTTP on 127.0.0.1, real
//! components built from guest-examples/.

#[path = "../../benches/support/guests.rs"]
mod guests;
mod support;

mod algorithmia;
mod auth;
mod cli_events;
mod data;
mod deploy;
mod events;
mod faults;
mod http;
mod invoke;
mod jobs;
mod lifecycle;
mod sdks;
mod sec_authz;
mod sec_http;
mod sec_input;
mod sec_invoke;
mod warm;
