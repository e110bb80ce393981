//! Repeated data reads or writes in one call, for benchmarking guest data access
//! (the cost of `wasmgrid:algorithm/data` calls from inside a guest).
//!
//! Input (JSON): `{"op": "get" | "put", "uri": "data://...", "n": N, "size": S}`
//! (`n` optional, default 1; `size` used by `put` only, default 0).
//!
//! - `put` writes the same `uri` N times, each time the same S bytes (`x`
//!   repeated, `application/octet-stream`), so a later `get` benchmark can read
//!   that file. The value is allocated once, before the loop, and passed to the
//!   host in place.
//! - `get` reads `uri` N times (each read returns a fresh buffer: the only
//!   allocation per iteration, which the API needs).
//!
//! Output (JSON): `{"ops": N, "bytes": <total bytes written or read>}`.
//!
//! Errors: `invalid-input` for a bad input (unknown `op`, missing `uri`, ...);
//! the first failing data operation ends the call with its error (permanent, or
//! transient for an unavailable store).

use serde::Deserialize;
use wasmgrid_sdk::serde_json::{Value, json};
use wasmgrid_sdk::{Error, Input, data};

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Get,
    Put,
}

#[derive(Deserialize)]
struct Request {
    op: Op,
    uri: String,
    #[serde(default = "one")]
    n: u32,
    #[serde(default)]
    size: usize,
}

fn one() -> u32 {
    1
}

fn apply(input: Input) -> Result<Value, Error> {
    let Request { op, uri, n, size } = input.json()?;
    let mut bytes: u64 = 0;
    match op {
        Op::Put => {
            let value = vec![b'x'; size];
            for _ in 0..n {
                data::put(&uri, &value)?;
            }
            bytes = u64::from(n) * size as u64;
        }
        Op::Get => {
            for _ in 0..n {
                bytes += data::get(&uri)?.len() as u64;
            }
        }
    }
    Ok(json!({ "ops": n, "bytes": bytes }))
}

wasmgrid_sdk::algorithm!(apply);
