//! Saves a message to a data collection: the seed algorithm of an event flow
//! (Algorithmia's "Event Flows" example).
//!
//! Input (JSON): `{"filename": "...", "data": <string or any JSON>,
//! "collection": "data://owner/coll"}`, `collection` optional. Writes `data` to
//! `<collection>/<filename>`: a string as `text/plain` (its characters, no
//! quotes), anything else as `application/json`. The collection is, in order:
//! the input's `collection`, the algorithm's secret `COLLECTION`, or
//! `data://.my/messages`.
//!
//! Output (JSON): `{"uri": "<collection>/<filename>", "bytes": <bytes written>}`.
//!
//! Errors: `invalid-input` when the input is not that JSON, `filename` is empty,
//! starts with `/` or contains `..`, or `collection` is not a `data://` URI;
//! data errors (no write grant, ...) propagate through `?` as permanent (or, for
//! an unavailable store, transient) errors.

use serde::Deserialize;
use wasmgrid_sdk::serde_json::{self, Value, json};
use wasmgrid_sdk::{Error, Input, data, media_type, secrets};

/// Where messages go when neither the input nor the secret `COLLECTION` says.
const DEFAULT_COLLECTION: &str = "data://.my/messages";

#[derive(Deserialize)]
struct Request {
    filename: String,
    data: Value,
    #[serde(default)]
    collection: Option<String>,
}

fn apply(input: Input) -> Result<Value, Error> {
    let request: Request = input.json()?;
    check_filename(&request.filename)?;
    let collection = match request.collection {
        Some(collection) => {
            if !collection.starts_with("data://") {
                return Err(Error::invalid_input(format!(
                    "`collection` must be a data:// URI such as data://.my/messages, got {collection:?}"
                )));
            }
            collection
        }
        None => secrets::get("COLLECTION").unwrap_or_else(|| DEFAULT_COLLECTION.to_owned()),
    };
    let uri = format!("{}/{}", collection.trim_end_matches('/'), request.filename);

    let bytes = match &request.data {
        Value::String(text) => {
            data::put_text(&uri, text)?;
            text.len()
        }
        other => {
            // Serializing a `Value` cannot fail.
            let body = serde_json::to_vec(other).unwrap_or_default();
            data::put_with_content_type(&uri, media_type::JSON, &body)?;
            body.len()
        }
    };
    Ok(json!({ "uri": uri, "bytes": bytes }))
}

/// A relative path inside the collection, without `..`.
fn check_filename(filename: &str) -> Result<(), Error> {
    if filename.is_empty() {
        return Err(Error::invalid_input("`filename` must not be empty"));
    }
    if filename.starts_with('/') {
        return Err(Error::invalid_input(format!(
            "`filename` must be relative to the collection (no leading `/`), got {filename:?}"
        )));
    }
    if filename.contains("..") {
        return Err(Error::invalid_input(format!(
            "`filename` must not contain `..`, got {filename:?}"
        )));
    }
    Ok(())
}

wasmgrid_sdk::algorithm!(apply);
