//! Records every event it is given, so tests (and users trying out
//! subscriptions) can see exactly what was delivered.
//!
//! Single delivery (a `trigger` is present): writes
//! `{"trigger": {id, source, type, subject, time, datacontenttype,
//! extensions}, "data": <input as JSON, or as text>, "batch": false}` to
//! `data://.my/received/<event id>.json`. Batch delivery (no `trigger`, input a
//! JSON array of CloudEvents): writes `{"event": <the CloudEvent>, "batch":
//! true, "batchSize": n}` per event to the same place. Needs a `:write` grant
//! on `data://.my/received`.
//!
//! Failing on purpose: event data with `"fail": "permanent"` or `"invalid"`
//! returns that error (never retried); `"fail": "transient"` returns a
//! transient error (retried). A write that fails (no grant, for instance) is
//! reported as `transient`, so a redeploy with the grant plus a redrive
//! recovers the events.
//!
//! Output (JSON): `{"recorded": n}`.

use wasmgrid_sdk::serde_json::{self, Value, json};
use wasmgrid_sdk::{Error, Input, data};

const RECEIVED: &str = "data://.my/received";

fn check_fail(data: &Value) -> Result<(), Error> {
    match data.get("fail").and_then(Value::as_str) {
        Some("permanent") => Err(Error::permanent("asked to fail permanently")),
        Some("invalid") => Err(Error::invalid_input("asked to reject the input")),
        Some("transient") => Err(Error::transient("asked to fail transiently")),
        _ => Ok(()),
    }
}

fn record(id: &str, doc: &Value) -> Result<(), Error> {
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    let body = serde_json::to_vec(doc).unwrap_or_default();
    data::put_with_content_type(&format!("{RECEIVED}/{safe}.json"), "application/json", &body)
        .map_err(|e| Error::transient(format!("could not record event {id}: {}", e.message())))
}

fn apply(input: Input) -> Result<Value, Error> {
    let data: Value = if input.is_json() {
        input.json()?
    } else {
        Value::String(String::from_utf8_lossy(input.bytes()).into_owned())
    };
    match input.trigger() {
        Some(t) => {
            check_fail(&data)?;
            let extensions: serde_json::Map<String, Value> = t
                .extensions
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let doc = json!({
                "trigger": {
                    "id": t.id, "source": t.source, "type": t.ty, "subject": t.subject,
                    "time": t.time, "datacontenttype": t.data_content_type,
                    "extensions": extensions,
                },
                "data": data,
                "batch": false,
            });
            record(&t.id, &doc)?;
            Ok(json!({"recorded": 1}))
        }
        None => {
            let Value::Array(events) = data else {
                return Err(Error::invalid_input(
                    "without a trigger the input must be a JSON array of CloudEvents (a batch delivery)",
                ));
            };
            for ev in &events {
                if let Some(d) = ev.get("data") {
                    check_fail(d)?;
                }
            }
            let n = events.len();
            for ev in &events {
                let id = ev.get("id").and_then(Value::as_str).unwrap_or("unknown");
                record(id, &json!({"event": ev, "batch": true, "batchSize": n}))?;
            }
            Ok(json!({"recorded": n}))
        }
    }
}

wasmgrid_sdk::algorithm!(apply);
