//! `wasmgrid topic ...`.

use super::{json_body, topic_path};
use crate::cli::Client;
use crate::cli::output::{cell, print_json, table};
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::json;

/// `wasmgrid topic ...`.
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a custom topic; prints its publish endpoint and its two keys (shown once).
    Create {
        /// Topic name: 1-128 letters, digits, '.', '_' or '-' (`system.` is reserved).
        name: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the topics this key can see: the built-in system topics and its own.
    Ls {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one topic.
    Show {
        /// Topic name.
        name: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a custom topic with its subscriptions, their queues and dead letters.
    Rm {
        /// Topic name.
        name: String,
    },
    /// Replace one of a topic's publish keys; prints the new key (shown once).
    RegenerateKey {
        /// Topic name.
        name: String,
        /// Which key to replace.
        #[arg(value_enum)]
        key_name: KeyName,
    },
}

/// A topic's two publish keys.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KeyName {
    /// The first key.
    Key1,
    /// The second key.
    Key2,
}

impl KeyName {
    fn as_str(self) -> &'static str {
        match self {
            KeyName::Key1 => "key1",
            KeyName::Key2 => "key2",
        }
    }
}

/// Runs a `topic` command.
pub fn run_topic(client: &Client, cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create { name, json } => {
            let reply = client.send(Method::PUT, &topic_path(&name), &[], None)?;
            let v = reply.json()?;
            if json {
                return print_json(&v);
            }
            let endpoint = format!("{}{}", client.base(), cell(&v["endpoint"]));
            if reply.status == 201 {
                println!("created topic {name}");
                println!("endpoint  {endpoint}");
                println!("key1      {}", cell(&v["keys"]["key1"]));
                println!("key2      {}", cell(&v["keys"]["key2"]));
                eprintln!(
                    "The keys are shown once: store them now. Publishers send one in the `aeg-sas-key` header \
                     (`wasmgrid publish {name} --key-topic KEY ...`); replace one with `wasmgrid topic regenerate-key {name} key1`."
                );
            } else {
                println!("topic {name} already exists (owner {})", cell(&v["owner"]));
                println!("endpoint  {endpoint}");
                eprintln!(
                    "Its keys were shown when it was created; get a new one with `wasmgrid topic regenerate-key {name} key1`."
                );
            }
        }
        TopicCommand::Ls { json } => {
            let v = client.send(Method::GET, "/v1/topics", &[], None)?.json()?;
            if json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = v["topics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    if t["system"].as_bool() == Some(true) {
                        vec![cell(&t["name"]), "(built in)".into(), "-".into()]
                    } else {
                        vec![cell(&t["name"]), cell(&t["owner"]), cell(&t["createdAt"])]
                    }
                })
                .collect();
            println!("{}", table(&["TOPIC", "OWNER", "CREATED"], &rows));
        }
        TopicCommand::Show { name, json } => {
            let v = client
                .send(Method::GET, &topic_path(&name), &[], None)?
                .json()?;
            if json {
                return print_json(&v);
            }
            println!("topic {name}");
            if v["system"].as_bool() == Some(true) {
                println!(
                    "  built in      written by wasmgrid itself (subscribe to it; publishing is refused)"
                );
            } else {
                println!("  owner         {}", cell(&v["owner"]));
                println!("  created       {}", cell(&v["createdAt"]));
                println!("  endpoint      {}{}", client.base(), cell(&v["endpoint"]));
            }
            println!("  subscriptions {}", cell(&v["subscriptions"]));
        }
        TopicCommand::Rm { name } => {
            client.send(Method::DELETE, &topic_path(&name), &[], None)?;
            println!("deleted topic {name} with its subscriptions");
        }
        TopicCommand::RegenerateKey { name, key_name } => {
            let body = json!({"keyName": key_name.as_str()});
            let v = client
                .send(
                    Method::POST,
                    &format!("{}/regenerateKey", topic_path(&name)),
                    &[],
                    json_body(&body)?,
                )?
                .json()?;
            eprintln!(
                "replaced {} of topic {name}; the old {} no longer works. The new key (shown once):",
                key_name.as_str(),
                key_name.as_str()
            );
            println!("{}", cell(&v["key"]));
        }
    }
    Ok(())
}
