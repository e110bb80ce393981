//! A counter kept through `wasi:keyvalue` only (no `wasmgrid:algorithm/data`).
//!
//! Input (JSON): `{"bucket": "owner/collection", "key": "...", "delta": N}`
//! (`delta` optional, default 1; `.my/collection` is a collection of the
//! algorithm's own owner). Opens the bucket, atomically adds `delta` to `key`,
//! sets the key `last` to the name of `key`, reads `last` back and lists the
//! first page of keys.
//!
//! Output (JSON): `{"value": <new counter>, "last": "<value of last read back>",
//! "keys": [<first page of keys>]}`.
//!
//! Errors: `invalid-input` for a bad input (empty `bucket` or `key`, or `key` =
//! `last`, which the algorithm itself writes); every keyvalue failure is a
//! `permanent` error naming the operation and the bucket, e.g.
//! `keyvalue: cannot open bucket ".my/counters": access denied: ...`.

use serde::Deserialize;
use wasmgrid_sdk::keyvalue::{atomics, store};
use wasmgrid_sdk::serde_json::{Value, json};
use wasmgrid_sdk::{Error, Input};

/// The key that records which counter was incremented last.
const LAST: &str = "last";

#[derive(Deserialize)]
struct Request {
    bucket: String,
    key: String,
    #[serde(default = "one")]
    delta: u64,
}

fn one() -> u64 {
    1
}

fn apply(input: Input) -> Result<Value, Error> {
    let Request {
        bucket: name,
        key,
        delta,
    } = input.json()?;
    if name.is_empty() {
        return Err(Error::invalid_input(
            "`bucket` must name a collection, e.g. \".my/counters\"",
        ));
    }
    if key.is_empty() {
        return Err(Error::invalid_input("`key` must not be empty"));
    }
    if key == LAST {
        return Err(Error::invalid_input(format!(
            "`key` must not be {LAST:?}: kv-counter writes that key itself"
        )));
    }
    let bucket = store::open(&name).map_err(|e| kv_error("open", &name, e))?;
    let value = atomics::increment(&bucket, &key, delta)
        .map_err(|e| kv_error("increment a key in", &name, e))?;
    bucket
        .set(LAST, key.as_bytes())
        .map_err(|e| kv_error("set a key in", &name, e))?;
    let last = bucket
        .get(LAST)
        .map_err(|e| kv_error("get a key from", &name, e))?;
    let keys = bucket
        .list_keys(None)
        .map_err(|e| kv_error("list the keys of", &name, e))?
        .keys;

    Ok(json!({
        "value": value,
        "last": last.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        "keys": keys,
    }))
}

/// A permanent error that says what failed, on which bucket, and why.
fn kv_error(action: &str, bucket: &str, e: store::Error) -> Error {
    let why = match e {
        store::Error::NoSuchStore => "no such store: use \"owner/collection\", e.g. \
                                      \".my/counters\", for a collection that exists"
            .to_owned(),
        store::Error::AccessDenied => "access denied: the algorithm has no grant or ACL \
                                       permission for this collection (deploy it with a \
                                       data://owner/collection:read or :write grant)"
            .to_owned(),
        store::Error::Other(message) => message,
    };
    Error::permanent(format!(
        "keyvalue: cannot {action} bucket {bucket:?}: {why}"
    ))
}

wasmgrid_sdk::algorithm!(apply);
