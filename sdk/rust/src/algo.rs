//! Calling other algorithms (the WIT interface `wasmgrid:algorithm/algo`).
//!
//! `algo::call("owner/name[/version]", …)` runs another algorithm of the same
//! owner on a fresh instance and returns its output: a pipeline step. The callee
//! shares what is left of the caller's deadline and sees the caller's
//! `trigger`. Its own `invalid-input` / `permanent` / `transient` errors come
//! back as they were returned, so `?` passes them on; an unknown endpoint,
//! another owner's algorithm or a chain deeper than 8 is `permanent`; a
//! timeout, crash or busy callee is `transient`.
//!
//! # Example
//!
//! ```no_run
//! use wasmgrid_sdk::serde_json::Value;
//! use wasmgrid_sdk::{Error, Input, algo};
//!
//! fn apply(input: Input) -> Result<Value, Error> {
//!     let numbers: Vec<f64> = input.json()?;
//!     let stats: Value = algo::call_json("demo/json-stats/1", &numbers)?;
//!     Ok(stats)
//! }
//!
//! wasmgrid_sdk::algorithm!(apply);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::wasmgrid::algorithm::algo as wit;
use crate::__private::bindings::wasmgrid::algorithm::types::PayloadParam;
use crate::{Error, Output, media_type};

/// Calls `endpoint` with `body` of media type `content_type`; the callee's
/// output.
pub fn call(endpoint: &str, content_type: &str, body: &[u8]) -> Result<Output, Error> {
    let input = PayloadParam { content_type, body };
    let out = wit::call(endpoint, input).map_err(Error::from)?;
    Ok(Output::with_content_type(out.content_type, out.body))
}

/// Calls `endpoint` with `input` as JSON and parses its JSON output.
pub fn call_json<I, O>(endpoint: &str, input: &I) -> Result<O, Error>
where
    I: Serialize + ?Sized,
    O: DeserializeOwned,
{
    let body = serde_json::to_vec(input)
        .map_err(|e| Error::permanent(format!("cannot serialize the input of {endpoint}: {e}")))?;
    let out = call(endpoint, media_type::JSON, &body)?;
    serde_json::from_slice(out.as_bytes()).map_err(|e| {
        Error::permanent(format!("{endpoint} did not return the JSON expected: {e}"))
    })
}
