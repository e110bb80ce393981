//! A lookup service that loads its table once per instance.
//!
//! `init` builds a table of 100,000 keys (`key-0` … `key-99999`, each mapped
//! to its number squared; about 6 MB in memory), as a real algorithm would
//! load a model. Each call takes a JSON string key and answers
//! `{"key", "value", "instance_calls", "table_size"}`: `value` is `null` for
//! an unknown key, and `instance_calls` counts the calls this instance has
//! served, this one included (1 on a fresh instance), so reuse can be seen
//! from outside. Deploy with `--reuse N` to serve N calls per instance.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmgrid_sdk::serde_json::{Value, json};
use wasmgrid_sdk::{Error, Input};

const KEYS: u64 = 100_000;

static TABLE: OnceLock<HashMap<String, u64>> = OnceLock::new();
static CALLS: AtomicU64 = AtomicU64::new(0);

fn load() -> Result<(), Error> {
    TABLE.get_or_init(|| (0..KEYS).map(|i| (format!("key-{i}"), i * i)).collect());
    Ok(())
}

fn apply(input: Input) -> Result<Value, Error> {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let key: String = input
        .json()
        .map_err(|_| Error::invalid_input("send a JSON string key, e.g. \"key-42\""))?;
    let table = TABLE
        .get()
        .ok_or_else(|| Error::permanent("the table is not loaded: init did not run"))?;
    Ok(json!({
        "key": key,
        "value": table.get(&key),
        "instance_calls": calls,
        "table_size": table.len(),
    }))
}

wasmgrid_sdk::algorithm!(apply, init = load);
