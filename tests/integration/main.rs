//! Integration tests: the real `wasmgrid` binary, real HTTP on 127.0.0.1, real
//! components built from guest-examples/.

mod support;

mod algorithmia;
mod auth;
mod data;
mod deploy;
mod faults;
mod http;
mod invoke;
mod lifecycle;
mod sdks;
