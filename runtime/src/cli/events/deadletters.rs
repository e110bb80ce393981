//! `wasmgrid deadletters ...`: list and redrive a subscription's dead letters.

use super::{json_body, sub_path};
use crate::cli::Client;
use crate::cli::output::{cell, clip, print_json, table};
use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

/// `wasmgrid deadletters ...`.
#[derive(Subcommand, Debug)]
pub enum DeadLetterCommand {
    /// List a subscription's dead-lettered events, oldest first.
    Ls {
        /// Topic name.
        topic: String,
        /// Subscription name.
        subscription: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the API's JSON (`{"deadLetters": [...]}`).
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back into the subscription's queue, with fresh attempts.
    Redrive {
        /// Topic name.
        topic: String,
        /// Subscription name.
        subscription: String,
        /// Redrive only the events with these ids (default: all); repeatable.
        #[arg(long = "id", value_name = "EVENT_ID")]
        ids: Vec<String>,
    },
}

/// Runs a `deadletters` command.
pub fn run_dead_letters(client: &Client, cmd: DeadLetterCommand) -> anyhow::Result<()> {
    match cmd {
        DeadLetterCommand::Ls {
            topic,
            subscription,
            limit,
            json,
        } => {
            if limit == 0 {
                bail!("--limit 0 shows nothing: give 1 or more");
            }
            let path = format!("{}/deadletters", sub_path(&topic, &subscription));
            let mut items: Vec<Value> = Vec::new();
            let mut marker: Option<String> = None;
            let more = loop {
                let mut query = vec![("limit", (limit - items.len()).min(1000).to_string())];
                if let Some(m) = &marker {
                    query.push(("marker", m.clone()));
                }
                let v = client.send(Method::GET, &path, &query, None)?.json()?;
                items.extend(v["deadLetters"].as_array().cloned().unwrap_or_default());
                marker = v["marker"].as_str().map(str::to_string);
                if marker.is_none() {
                    break false;
                }
                if items.len() >= limit {
                    break true;
                }
            };
            if json {
                let mut out = json!({"deadLetters": items});
                if let Some(m) = marker {
                    out["marker"] = json!(m);
                }
                return print_json(&out);
            }
            if items.is_empty() {
                println!("no dead letters for {topic}/{subscription}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|d| {
                    vec![
                        cell(&d["sequence"]),
                        cell(&d["event"]["id"]),
                        clip(&cell(&d["event"]["type"]), 40),
                        cell(&d["deadLetterReason"]),
                        cell(&d["deliveryAttempts"]),
                        cell(&d["lastDeliveryAttemptTime"]),
                        clip(&cell(&d["lastDeliveryOutcome"]), 70),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "SEQUENCE",
                        "EVENT ID",
                        "TYPE",
                        "REASON",
                        "ATTEMPTS",
                        "LAST ATTEMPT",
                        "LAST OUTCOME"
                    ],
                    &rows
                )
            );
            if more {
                eprintln!("(more dead letters: raise --limit to see them)");
            }
            eprintln!(
                "Replay them once the handler is fixed: wasmgrid deadletters redrive {topic} {subscription} [--id EVENT_ID]"
            );
        }
        DeadLetterCommand::Redrive {
            topic,
            subscription,
            ids,
        } => {
            let body = if ids.is_empty() {
                json!({})
            } else {
                json!({"ids": ids})
            };
            let v = client
                .send(
                    Method::POST,
                    &format!("{}/redrive", sub_path(&topic, &subscription)),
                    &[],
                    json_body(&body)?,
                )?
                .json()?;
            let n = v["redriven"].as_u64().unwrap_or(0);
            if n == 0 && !ids.is_empty() {
                println!(
                    "none of the given ids is dead-lettered on {topic}/{subscription} (list them with `wasmgrid deadletters ls {topic} {subscription}`)"
                );
            } else {
                println!(
                    "redrove {n} dead letter{} of {topic}/{subscription} back into its queue",
                    if n == 1 { "" } else { "s" }
                );
            }
        }
    }
    Ok(())
}
