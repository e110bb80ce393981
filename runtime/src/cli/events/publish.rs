//! `wasmgrid publish`: one CloudEvent from flags, to a topic.

use super::{read_arg_bytes, topic_path};
use crate::cli::Client;
use crate::cli::output::{cell, print_json};
use anyhow::{anyhow, bail};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;

/// `wasmgrid publish TOPIC --type T ...`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Topic name.
    pub topic: String,
    /// The event's `type`, e.g. com.example.order.created.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: String,
    /// The event's `subject`, e.g. /orders/42.
    #[arg(long)]
    pub subject: Option<String>,
    /// The event's `source`.
    #[arg(long, default_value = "/cli")]
    pub source: String,
    /// The event's `id` (default: a random UUID). Re-publishing the same
    /// source and id within the dedup window is acknowledged but not delivered again.
    #[arg(long)]
    pub id: Option<String>,
    /// The event's data: JSON, `@FILE`, or `-` for stdin. Text that is not JSON
    /// is sent as a string with datacontenttype text/plain (binary as data_base64).
    #[arg(long)]
    pub data: Option<String>,
    /// An extension attribute NAME=VALUE (e.g. traceparent=00-…); repeatable.
    #[arg(long = "ext", value_name = "NAME=VALUE")]
    pub extensions: Vec<String>,
    /// Publish with one of the topic's keys (sent as `aeg-sas-key`) instead of the API key.
    #[arg(long, env = "WASMGRID_TOPIC_KEY", hide_env_values = true)]
    pub key_topic: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

/// The CloudEvent `publish` sends.
pub fn build_event(args: &PublishArgs, data: Option<Vec<u8>>) -> anyhow::Result<Value> {
    let id = args.id.clone().unwrap_or_else(wasmgrid_core::data::uuid_v4);
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut ev = json!({
        "specversion": "1.0",
        "id": id,
        "source": args.source,
        "type": args.event_type,
        "time": now,
    });
    if let Some(s) = &args.subject {
        ev["subject"] = json!(s);
    }
    for ext in &args.extensions {
        let (name, value) = ext.split_once('=').ok_or_else(|| {
            anyhow!("--ext {ext:?}: write NAME=VALUE, e.g. --ext traceparent=00-…")
        })?;
        if matches!(
            name,
            "specversion"
                | "id"
                | "source"
                | "type"
                | "time"
                | "subject"
                | "data"
                | "data_base64"
                | "datacontenttype"
        ) {
            bail!("--ext {name}=…: {name} is a core attribute; use its own flag");
        }
        ev[name] = json!(value);
    }
    if let Some(bytes) = data {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            ev["datacontenttype"] = json!("application/json");
            ev["data"] = v;
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => {
                    ev["datacontenttype"] = json!("text/plain");
                    ev["data"] = json!(text);
                }
                Err(e) => {
                    use base64::Engine as _;
                    ev["datacontenttype"] = json!("application/octet-stream");
                    ev["data_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
                }
            }
        }
    }
    Ok(ev)
}

/// Runs `publish`. Authenticates with `--key-topic` (as `aeg-sas-key`) when
/// given, else with the API key.
pub fn run_publish(
    data_dir: &Path,
    url: Option<&str>,
    key: Option<&str>,
    args: PublishArgs,
) -> anyhow::Result<()> {
    let data = args
        .data
        .as_deref()
        .map(|d| read_arg_bytes(d, "--data"))
        .transpose()?;
    let event = build_event(&args, data)?;
    let client = match &args.key_topic {
        Some(topic_key) => Client::discover_with_topic_key(data_dir, url, topic_key)?,
        None => Client::discover(data_dir, url, key)?,
    };
    let v = client
        .send(
            Method::POST,
            &format!("{}/events", topic_path(&args.topic)),
            &[],
            Some((serde_json::to_vec(&event)?, "application/cloudevents+json")),
        )?
        .json()?;
    if args.json {
        return print_json(&v);
    }
    let id = cell(&event["id"]);
    let topic = &args.topic;
    if v["duplicates"].as_u64().unwrap_or(0) > 0 {
        println!(
            "event {id} (source {}) was already published to {topic} within the dedup window: acknowledged, not delivered again",
            args.source
        );
        return Ok(());
    }
    match v["deliveries"].as_u64().unwrap_or(0) {
        0 => println!(
            "published event {id} to {topic}; no subscription matched it (see `wasmgrid sub ls {topic}`)"
        ),
        n => println!(
            "published event {id} to {topic}: {n} deliver{} queued",
            if n == 1 { "y" } else { "ies" }
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_events_carry_json_text_or_bytes() {
        let args = PublishArgs {
            topic: "t".into(),
            event_type: "com.example.x".into(),
            subject: Some("/s".into()),
            source: "/cli".into(),
            id: None,
            data: None,
            extensions: vec!["traceparent=00-abc".into()],
            key_topic: None,
            json: false,
        };
        let ev = build_event(&args, Some(br#"{"x": 1}"#.to_vec())).unwrap();
        assert_eq!(ev["data"], json!({"x": 1}));
        assert_eq!(ev["datacontenttype"], "application/json");
        assert_eq!(ev["traceparent"], "00-abc");
        assert_eq!(ev["id"].as_str().unwrap().len(), 36, "a uuid by default");
        let ev = build_event(&args, Some(b"hello".to_vec())).unwrap();
        assert_eq!(ev["data"], "hello");
        assert_eq!(ev["datacontenttype"], "text/plain");
        let ev = build_event(&args, Some(vec![0xff, 0x00])).unwrap();
        assert_eq!(ev["data_base64"], "/wA=");
        let ev = build_event(&args, None).unwrap();
        assert!(ev.get("data").is_none() && ev.get("datacontenttype").is_none());
        let bad = PublishArgs {
            extensions: vec!["id=x".into()],
            ..args
        };
        assert!(build_event(&bad, None).is_err());
    }
}
