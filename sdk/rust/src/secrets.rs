//! Per-algorithm secrets (the WIT interface `wasmgrid:algorithm/secrets`).
//!
//! The algorithm's owner sets them through the API
//! (`PUT /v1/algorithms/{owner}/{name}/secrets/{key}`); they are encrypted at
//! rest and readable only by that algorithm. Keep them out of outputs and logs.
//!
//! # Example
//!
//! ```no_run
//! use wasmgrid_sdk::{Error, Input, secrets};
//!
//! fn apply(input: Input) -> Result<String, Error> {
//!     let Some(token) = secrets::get("API_TOKEN") else {
//!         return Err(Error::permanent(
//!             "the secret API_TOKEN is not set: set it with \
//!              PUT /v1/algorithms/{owner}/{name}/secrets/API_TOKEN",
//!         ));
//!     };
//!     // A secret with a default:
//!     let region = secrets::get("REGION").unwrap_or_else(|| "eu".to_owned());
//!     Ok(format!("{} bytes for {region} ({} byte token)", input.bytes().len(), token.len()))
//! }
//!
//! wasmgrid_sdk::algorithm!(apply);
//! ```

use crate::__private::bindings::wasmgrid::algorithm::secrets as wit;

/// The value of this algorithm's secret `name`, or `None` if it is not set.
///
/// ```no_run
/// let collection = wasmgrid_sdk::secrets::get("COLLECTION")
///     .unwrap_or_else(|| "data://.my/messages".to_owned());
/// ```
pub fn get(name: &str) -> Option<String> {
    wit::get(name)
}
