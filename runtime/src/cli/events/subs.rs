//! `wasmgrid sub ...`: subscriptions, with filters built from flags or expressions.

use super::{json_body, read_arg_bytes, sub_path, topic_path};
use crate::cli::Client;
use crate::cli::output::{cell, clip, print_json, table};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// `wasmgrid sub ...`.
#[derive(Subcommand, Debug)]
pub enum SubCommand {
    /// Create (or replace) a subscription, from flags or from a JSON file.
    Create(Box<SubCreateArgs>),
    /// List a topic's subscriptions (this key's own; all of them for an admin key).
    Ls {
        /// Topic name.
        topic: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one subscription: destination, filter, retry policy, queue depth.
    Show {
        /// Topic name.
        topic: String,
        /// Subscription name.
        name: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a subscription with its queue and dead letters.
    Rm {
        /// Topic name.
        topic: String,
        /// Subscription name.
        name: String,
    },
}

/// `wasmgrid sub create TOPIC NAME ...`.
#[derive(Args, Debug)]
#[command(group(
    clap::ArgGroup::new("destination")
        .required(true)
        .args(["algorithm", "webhook", "file"])
))]
pub struct SubCreateArgs {
    /// Topic name (a custom topic, or system.data, system.algorithms, system.jobs).
    pub topic: String,
    /// Subscription name: 1-64 letters, digits, '_' or '-'.
    pub name: String,
    /// The whole subscription as the API's JSON (a file, or `-` for stdin)
    /// instead of the flags below.
    #[arg(long, conflicts_with_all = [
        "types", "subject_begins_with", "subject_ends_with", "case_sensitive",
        "filters", "advanced_filters", "array_filtering", "max_attempts", "ttl_minutes",
        "dead_letter", "batch_size", "batch_kb", "concurrency", "webhook_secret",
    ])]
    pub file: Option<String>,
    /// Deliver to an algorithm: owner/name[/version] (or owner/name@version),
    /// resolved at each delivery.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// Deliver to a webhook URL (structured CloudEvents POST, HMAC-signed).
    #[arg(long)]
    pub webhook: Option<String>,
    /// Event types to deliver (includedEventTypes), comma-separated or repeated.
    #[arg(long = "types", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Deliver only events whose subject starts with this.
    #[arg(long)]
    pub subject_begins_with: Option<String>,
    /// Deliver only events whose subject ends with this.
    #[arg(long)]
    pub subject_ends_with: Option<String>,
    /// Compare the subject prefix and suffix case-sensitively.
    #[arg(long)]
    pub case_sensitive: bool,
    /// An advanced filter as KEY OP VALUE, e.g. 'data.confidence>0.9',
    /// 'data.region=eu', 'data.retry!=3' (ops: > >= < <= = !=); repeatable.
    #[arg(long = "filter", value_name = "EXPR")]
    pub filters: Vec<String>,
    /// An advanced filter as Event Grid's JSON
    /// ('{"operatorType": "StringBeginsWith", "key": "subject", "values": ["/a"]}'); repeatable.
    #[arg(long = "advanced-filter", value_name = "JSON")]
    pub advanced_filters: Vec<String>,
    /// Apply advanced filters to each element of array values
    /// (enableAdvancedFilteringOnArrays).
    #[arg(long)]
    pub array_filtering: bool,
    /// retryPolicy.maxDeliveryAttempts: 1-30 (default 30).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// retryPolicy.eventTimeToLiveInMinutes: 1-1440 (default 1440).
    #[arg(long)]
    pub ttl_minutes: Option<u32>,
    /// Also write dead letters as JSON files under this folder (data://owner/collection/prefix/).
    #[arg(long, value_name = "DATA_URI")]
    pub dead_letter: Option<String>,
    /// batching.maxEventsPerBatch: deliver up to N events at once (1-5000).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
    /// batching.preferredBatchSizeInKilobytes (1-1024, default 64).
    #[arg(long, value_name = "KIB")]
    pub batch_kb: Option<u32>,
    /// maxConcurrentDeliveries: deliveries in flight at once (1-1000, default 16).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// The webhook's HMAC-SHA256 secret (generated when not given).
    #[arg(long)]
    pub webhook_secret: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `algorithm demo/x/1`, `webhook https://…`, `job {…}`.
fn describe_destination(d: &Value) -> String {
    if let Some(a) = d["algorithm"].as_str() {
        format!("algorithm {a}")
    } else if let Some(w) = d["webhook"].as_str() {
        format!("webhook {w}")
    } else if !d["job"].is_null() {
        format!("job {}", d["job"])
    } else {
        d.to_string()
    }
}

fn describe_types(filter: &Value) -> String {
    match filter["includedEventTypes"].as_array() {
        Some(types) => types.iter().map(cell).collect::<Vec<_>>().join(","),
        None => "all".into(),
    }
}

fn describe_subject(filter: &Value) -> String {
    let begins = filter["subjectBeginsWith"]
        .as_str()
        .filter(|s| !s.is_empty());
    let ends = filter["subjectEndsWith"].as_str().filter(|s| !s.is_empty());
    match (begins, ends) {
        (None, None) => "any".into(),
        (Some(b), None) => format!("{b}*"),
        (None, Some(e)) => format!("*{e}"),
        (Some(b), Some(e)) => format!("{b}*{e}"),
    }
}

fn describe_advanced(f: &Value) -> String {
    let operand = if !f["values"].is_null() {
        f["values"].to_string()
    } else if !f["value"].is_null() {
        f["value"].to_string()
    } else {
        String::new()
    };
    format!("{} {} {operand}", cell(&f["key"]), cell(&f["operatorType"]))
        .trim_end()
        .to_string()
}

/// A scalar filter operand: quoted text is a string; `true`/`false` a
/// boolean; a number a number; anything else a string.
fn operand(raw: &str) -> Value {
    let raw = raw.trim();
    for q in ['"', '\''] {
        if raw.len() >= 2 && raw.starts_with(q) && raw.ends_with(q) {
            return Value::String(raw[1..raw.len() - 1].to_string());
        }
    }
    match raw {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = raw.parse::<i64>() {
        return i.into();
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => Value::String(raw.to_string()),
    }
}

/// Turns `KEY OP VALUE` (`data.confidence>0.9`) into an Event Grid advanced filter.
pub fn parse_filter_expr(expr: &str) -> anyhow::Result<Value> {
    const OPS: [&str; 7] = [">=", "<=", "!=", "==", "=", ">", "<"];
    let found = expr.char_indices().find_map(|(i, _)| {
        OPS.iter()
            .find(|op| expr[i..].starts_with(**op))
            .map(|op| (i, *op))
    });
    let usage = "write KEY OP VALUE with OP one of > >= < <= = !=, e.g. 'data.confidence>0.9' or 'data.region=eu'";
    let Some((pos, op)) = found else {
        bail!("--filter {expr:?} has no operator: {usage}");
    };
    let key = expr[..pos].trim();
    let raw = expr[pos + op.len()..].trim();
    if key.is_empty() || raw.is_empty() {
        bail!("--filter {expr:?} needs a key and a value: {usage}");
    }
    let value = operand(raw);
    let (operator, single) = match (&value, op) {
        (Value::Number(_), ">") => ("NumberGreaterThan", true),
        (Value::Number(_), ">=") => ("NumberGreaterThanOrEquals", true),
        (Value::Number(_), "<") => ("NumberLessThan", true),
        (Value::Number(_), "<=") => ("NumberLessThanOrEquals", true),
        (Value::Number(_), "=" | "==") => ("NumberIn", false),
        (Value::Number(_), _) => ("NumberNotIn", false),
        (Value::Bool(_), "=" | "==") => ("BoolEquals", true),
        (Value::Bool(b), _) => bail!(
            "--filter {expr:?}: booleans compare with = only (BoolEquals); write '{key}={}'",
            !b
        ),
        (_, "=" | "==") => ("StringIn", false),
        (_, "!=") => ("StringNotIn", false),
        (_, _) => bail!(
            "--filter {expr:?}: {raw:?} is not a number, and strings compare with = and != only; for other string \
             operators use --advanced-filter '{{\"operatorType\": \"StringBeginsWith\", \"key\": \"{key}\", \"values\": [\"...\"]}}'"
        ),
    };
    let mut f = json!({"operatorType": operator, "key": key});
    if single {
        f["value"] = value;
    } else {
        f["values"] = json!([value]);
    }
    Ok(f)
}

/// The subscription JSON that `sub create`'s flags describe.
pub fn spec_from_flags(args: &SubCreateArgs) -> anyhow::Result<Value> {
    let destination = match (&args.algorithm, &args.webhook) {
        (Some(a), None) => json!({"algorithm": a.replacen('@', "/", 1)}),
        (None, Some(w)) => json!({"webhook": w}),
        _ => {
            bail!("give exactly one destination: --algorithm owner/name[/version] or --webhook URL")
        }
    };
    let mut spec = json!({"destination": destination});
    let mut filter = Map::new();
    if !args.types.is_empty() {
        filter.insert("includedEventTypes".into(), json!(args.types));
    }
    if let Some(b) = &args.subject_begins_with {
        filter.insert("subjectBeginsWith".into(), json!(b));
    }
    if let Some(e) = &args.subject_ends_with {
        filter.insert("subjectEndsWith".into(), json!(e));
    }
    if args.case_sensitive {
        filter.insert("isSubjectCaseSensitive".into(), json!(true));
    }
    if args.array_filtering {
        filter.insert("enableAdvancedFilteringOnArrays".into(), json!(true));
    }
    let mut advanced = Vec::new();
    for expr in &args.filters {
        advanced.push(parse_filter_expr(expr)?);
    }
    for raw in &args.advanced_filters {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Array(list)) => advanced.extend(list),
            Ok(v @ Value::Object(_)) => advanced.push(v),
            Ok(_) | Err(_) => bail!(
                "--advanced-filter {raw:?} is not a JSON object: write '{{\"operatorType\": \"NumberGreaterThan\", \"key\": \"data.x\", \"value\": 1}}'"
            ),
        }
    }
    if !advanced.is_empty() {
        filter.insert("advancedFilters".into(), Value::Array(advanced));
    }
    if !filter.is_empty() {
        spec["filter"] = Value::Object(filter);
    }
    let mut retry = Map::new();
    if let Some(n) = args.max_attempts {
        retry.insert("maxDeliveryAttempts".into(), json!(n));
    }
    if let Some(n) = args.ttl_minutes {
        retry.insert("eventTimeToLiveInMinutes".into(), json!(n));
    }
    if !retry.is_empty() {
        spec["retryPolicy"] = Value::Object(retry);
    }
    if let Some(dl) = &args.dead_letter {
        spec["deadLetter"] = json!({"collection": dl});
    }
    let mut batching = Map::new();
    if let Some(n) = args.batch_size {
        batching.insert("maxEventsPerBatch".into(), json!(n));
    }
    if let Some(n) = args.batch_kb {
        batching.insert("preferredBatchSizeInKilobytes".into(), json!(n));
    }
    if !batching.is_empty() {
        spec["batching"] = Value::Object(batching);
    }
    if let Some(n) = args.concurrency {
        spec["maxConcurrentDeliveries"] = json!(n);
    }
    if let Some(s) = &args.webhook_secret {
        if args.webhook.is_none() {
            bail!("--webhook-secret signs webhook deliveries: use it with --webhook URL");
        }
        spec["webhookSecret"] = json!(s);
    }
    Ok(spec)
}

/// Prints a subscription as `sub show` does.
fn print_subscription(v: &Value) {
    let f = &v["filter"];
    println!(
        "subscription {}/{} (owner {})",
        cell(&v["topic"]),
        cell(&v["name"]),
        cell(&v["owner"])
    );
    println!(
        "  destination   {}",
        describe_destination(&v["destination"])
    );
    println!("  event types   {}", describe_types(f));
    let case = if f["isSubjectCaseSensitive"].as_bool() == Some(true) {
        "case-sensitive"
    } else {
        "case-insensitive"
    };
    println!("  subject       {} ({case})", describe_subject(f));
    for (i, a) in f["advancedFilters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let label = if i == 0 { "advanced" } else { "" };
        println!("  {label:<13} {}", describe_advanced(a));
    }
    if f["enableAdvancedFilteringOnArrays"].as_bool() == Some(true) {
        println!("  arrays        advanced filters apply to each element");
    }
    let rp = &v["retryPolicy"];
    println!(
        "  retry         {} attempts, time-to-live {} min",
        cell(&rp["maxDeliveryAttempts"]),
        cell(&rp["eventTimeToLiveInMinutes"])
    );
    if let Some(dl) = v["deadLetter"]["collection"].as_str() {
        println!("  dead letters  listed, and written under {dl}");
    }
    if !v["batching"].is_null() {
        println!(
            "  batching      up to {} events, about {} KiB",
            cell(&v["batching"]["maxEventsPerBatch"]),
            cell(&v["batching"]["preferredBatchSizeInKilobytes"])
        );
    }
    println!("  concurrency   {}", cell(&v["maxConcurrentDeliveries"]));
    if let Some(s) = v["webhookSecret"].as_str() {
        println!("  webhook secret {s}  (X-Wasmgrid-Signature: sha256=HMAC of the body)");
    }
    println!("  queue depth   {}", cell(&v["queueDepth"]));
    println!(
        "  created       {}  (updated {})",
        cell(&v["createdAt"]),
        cell(&v["updatedAt"])
    );
}

/// Runs a `sub` command.
pub fn run_sub(client: &Client, cmd: SubCommand) -> anyhow::Result<()> {
    match cmd {
        SubCommand::Create(args) => {
            let spec = match &args.file {
                Some(file) => {
                    let bytes = if file == "-" {
                        read_arg_bytes("-", "the subscription")?
                    } else {
                        std::fs::read(file).with_context(|| format!("cannot read {file}"))?
                    };
                    serde_json::from_slice::<Value>(&bytes).with_context(|| {
                        format!("{file} is not valid JSON: write the subscription as the API takes it (docs/EVENTS.md)")
                    })?
                }
                None => spec_from_flags(&args)?,
            };
            let reply = client.send(
                Method::PUT,
                &sub_path(&args.topic, &args.name),
                &[],
                json_body(&spec)?,
            )?;
            let v = reply.json()?;
            if args.json {
                return print_json(&v);
            }
            let verb = if reply.status == 201 {
                "created"
            } else {
                "replaced (its queue is kept)"
            };
            println!("subscription {}/{} {verb}", args.topic, args.name);
            print_subscription(&v);
        }
        SubCommand::Ls { topic, json } => {
            let v = client
                .send(
                    Method::GET,
                    &format!("{}/subscriptions", topic_path(&topic)),
                    &[],
                    None,
                )?
                .json()?;
            if json {
                return print_json(&v);
            }
            let subs = v["subscriptions"].as_array().cloned().unwrap_or_default();
            if subs.is_empty() {
                println!(
                    "topic {topic} has no subscriptions (create one with `wasmgrid sub create {topic} NAME --algorithm owner/name`)"
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = subs
                .iter()
                .map(|s| {
                    let f = &s["filter"];
                    let advanced = f["advancedFilters"].as_array().map_or(0, Vec::len);
                    vec![
                        cell(&s["name"]),
                        describe_destination(&s["destination"]),
                        clip(&describe_types(f), 40),
                        clip(&describe_subject(f), 50),
                        advanced.to_string(),
                        cell(&s["queueDepth"]),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "NAME",
                        "DESTINATION",
                        "TYPES",
                        "SUBJECT",
                        "ADVANCED",
                        "QUEUE"
                    ],
                    &rows
                )
            );
        }
        SubCommand::Show { topic, name, json } => {
            let v = client
                .send(Method::GET, &sub_path(&topic, &name), &[], None)?
                .json()?;
            if json {
                return print_json(&v);
            }
            print_subscription(&v);
        }
        SubCommand::Rm { topic, name } => {
            client.send(Method::DELETE, &sub_path(&topic, &name), &[], None)?;
            println!("deleted subscription {topic}/{name} with its queue and dead letters");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SubCreateArgs,
    }

    fn flags(args: &[&str]) -> Result<SubCreateArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("sub-create").chain(args.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn filter_expressions_become_event_grid_filters() {
        assert_eq!(
            parse_filter_expr("data.confidence>0.9").unwrap(),
            json!({"operatorType": "NumberGreaterThan", "key": "data.confidence", "value": 0.9})
        );
        assert_eq!(
            parse_filter_expr("data.n >= 3").unwrap(),
            json!({"operatorType": "NumberGreaterThanOrEquals", "key": "data.n", "value": 3})
        );
        assert_eq!(
            parse_filter_expr("data.n!=3")
                .unwrap()
                .get("operatorType")
                .cloned(),
            Some(json!("NumberNotIn"))
        );
        assert_eq!(
            parse_filter_expr("data.region=eu").unwrap(),
            json!({"operatorType": "StringIn", "key": "data.region", "values": ["eu"]})
        );
        assert_eq!(
            parse_filter_expr("data.code='42'").unwrap()["values"],
            json!(["42"]),
            "quotes keep a number a string"
        );
        assert_eq!(
            parse_filter_expr("data.ok==true").unwrap(),
            json!({"operatorType": "BoolEquals", "key": "data.ok", "value": true})
        );
        assert!(
            parse_filter_expr("data.ok!=true")
                .unwrap_err()
                .to_string()
                .contains("data.ok=false")
        );
        assert!(
            parse_filter_expr("subject>abc")
                .unwrap_err()
                .to_string()
                .contains("--advanced-filter")
        );
        assert!(parse_filter_expr("data.x").is_err());
        assert!(parse_filter_expr(">3").is_err());
    }

    #[test]
    fn flags_build_the_subscription_json() {
        let args = flags(&[
            "inference",
            "confident",
            "--algorithm",
            "demo/recorder@1",
            "--types",
            "a.b,c.d",
            "--subject-begins-with",
            "/x/",
            "--case-sensitive",
            "--filter",
            "data.confidence>0.9",
            "--advanced-filter",
            r#"{"operatorType": "IsNotNull", "key": "data.id"}"#,
            "--max-attempts",
            "3",
            "--dead-letter",
            "data://.my/dl/",
            "--batch-size",
            "10",
            "--concurrency",
            "4",
        ])
        .unwrap();
        let spec = spec_from_flags(&args).unwrap();
        assert_eq!(
            spec,
            json!({
                "destination": {"algorithm": "demo/recorder/1"},
                "filter": {
                    "includedEventTypes": ["a.b", "c.d"],
                    "subjectBeginsWith": "/x/",
                    "isSubjectCaseSensitive": true,
                    "advancedFilters": [
                        {"operatorType": "NumberGreaterThan", "key": "data.confidence", "value": 0.9},
                        {"operatorType": "IsNotNull", "key": "data.id"}
                    ]
                },
                "retryPolicy": {"maxDeliveryAttempts": 3},
                "deadLetter": {"collection": "data://.my/dl/"},
                "batching": {"maxEventsPerBatch": 10},
                "maxConcurrentDeliveries": 4
            })
        );
        // The JSON is what the server takes.
        let parsed: wasmgrid_events::SubscriptionSpec = serde_json::from_value(spec).unwrap();
        parsed.filter.compile().unwrap();
    }

    #[test]
    fn a_destination_is_required_and_file_excludes_flags() {
        assert!(flags(&["t", "s"]).is_err());
        assert!(flags(&["t", "s", "--algorithm", "a/b", "--webhook", "https://x"]).is_err());
        assert!(flags(&["t", "s", "--file", "x.json", "--types", "a"]).is_err());
        assert!(flags(&["t", "s", "--file", "x.json"]).is_ok());
        assert!(
            spec_from_flags(
                &flags(&["t", "s", "--algorithm", "a/b", "--webhook-secret", "x"]).unwrap()
            )
            .is_err()
        );
        assert!(
            spec_from_flags(
                &flags(&["t", "s", "--algorithm", "a/b", "--advanced-filter", "3"]).unwrap()
            )
            .is_err()
        );
    }
}
