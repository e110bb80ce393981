//! CloudEvents for wasmgrid: the formats events are published in, a cheap view
//! of a stored event, the trigger record a guest receives, and Azure Event
//! Grid's subscription filters with their index.
//!
//! Pure functions over bytes and `serde_json` values: no I/O, no async runtime,
//! no dependency on the rest of wasmgrid, so the event formats and filters can
//! be tested and fuzzed alone and every other crate can depend on this one.

pub mod event;
pub mod filter;
mod trigger;

pub use trigger::{HOPS_ATTRIBUTE, TriggerEvent, parse_hops};
