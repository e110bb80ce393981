//! Summarises a CSV file when it lands in a collection: the handler of the
//! "file created → filtered by folder → processed" pipeline (seed 000).
//!
//! Input: the data of a `wasmgrid.data.FileCreated` event (JSON
//! `{"uri", "size", "contentType", "etag"}`), as a `system.data` subscription
//! delivers it. Reads the file (needs a `:read` grant on its collection),
//! counts its data rows and header columns, and writes
//! `{"source", "rows", "columns", "header", "trigger"}` as JSON to
//! `<results>/<file name>.summary.json`, where `<results>` is the secret
//! `RESULTS` or `data://.my/results` (needs a `:write` grant there).
//!
//! Output (JSON): `{"result": "<uri written>", "rows": n}`.
//!
//! Errors: `invalid-input` when the input has no `uri` or the file is not
//! UTF-8 text; data errors propagate (a missing grant is permanent, an
//! unavailable store transient, so event delivery retries only the latter).

use serde::Deserialize;
use wasmgrid_sdk::serde_json::{Value, json};
use wasmgrid_sdk::{Error, Input, data, secrets};

#[derive(Deserialize)]
struct FileEvent {
    uri: String,
}

fn apply(input: Input) -> Result<Value, Error> {
    let event: FileEvent = input.json()?;
    let text = data::get_text(&event.uri)?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .map(|h| h.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let rows = lines.count();
    let file_name = event.uri.rsplit('/').next().unwrap_or("file.csv");
    let results = secrets::get("RESULTS").unwrap_or_else(|| "data://.my/results".to_owned());
    let result_uri = format!("{}/{file_name}.summary.json", results.trim_end_matches('/'));
    let trigger = input.trigger().map(|t| {
        json!({"id": t.id, "type": t.ty, "subject": t.subject, "source": t.source})
    });
    data::put_json(
        &result_uri,
        &json!({
            "source": event.uri,
            "rows": rows,
            "columns": header.len(),
            "header": header,
            "trigger": trigger,
        }),
    )?;
    Ok(json!({ "result": result_uri, "rows": rows }))
}

wasmgrid_sdk::algorithm!(apply);
