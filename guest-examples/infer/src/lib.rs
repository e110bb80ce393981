//! A pipeline step that uses both guest APIs of the events system: it calls
//! another algorithm (`algo.call`) and publishes a custom event
//! (`events.publish`), which subscriptions then route onwards.
//!
//! Input (JSON): `{"scores": [numbers in 0..1], "topic"?: "inference",
//! "stats"?: "demo/json-stats/1"}`. Calls the `stats` algorithm (default
//! `demo/json-stats/1`, the `json-stats` example; algorithms call algorithms of
//! their own owner) with the scores, takes
//! their mean as the confidence, and publishes
//! `com.example.ai.InferenceCompleted` with data `{"confidence", "stats"}` to
//! `topic` (needs `--grant topic:NAME`). Output: `{"event", "confidence"}`.
//!
//! `{"recurse": "owner/name"}` instead calls that endpoint with the same input
//! and returns its answer: pointed at itself it is the loop the call depth limit
//! stops.
//!
//! Errors: `invalid-input` for other input; the callee's and the publish's
//! errors pass through unchanged.

use serde::Deserialize;
use wasmgrid_sdk::serde_json::{Value, json};
use wasmgrid_sdk::{Error, Input, algo, events};

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    scores: Vec<f64>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    stats: Option<String>,
    #[serde(default)]
    recurse: Option<String>,
}

fn apply(input: Input) -> Result<Value, Error> {
    let request: Request = input.json()?;
    if let Some(endpoint) = &request.recurse {
        let out = algo::call(endpoint, input.content_type(), input.bytes())?;
        return Ok(wasmgrid_sdk::serde_json::from_slice(out.as_bytes()).unwrap_or(Value::Null));
    }
    if request.scores.is_empty() {
        return Err(Error::invalid_input(
            "send {\"scores\": [0.9, 0.95]} (numbers between 0 and 1)",
        ));
    }
    let stats_endpoint = request.stats.as_deref().unwrap_or("demo/json-stats/1");
    let stats: Value = algo::call_json(stats_endpoint, &request.scores)?;
    let confidence = stats["mean"].as_f64().unwrap_or(0.0);
    let topic = request.topic.as_deref().unwrap_or("inference");
    let id = events::Event::new("com.example.ai.InferenceCompleted")
        .subject("/models/mean")
        .publish_json(topic, &json!({ "confidence": confidence, "stats": stats }))?;
    Ok(json!({ "event": id, "confidence": confidence }))
}

wasmgrid_sdk::algorithm!(apply);
