//! A test guest for warm instances (see tests/integration/warm.rs): each call
//! does what its JSON input asks and reports what its instance remembers.
//!
//! Input: `{"op": ...}` with `op` one of
//! - `"count"`: nothing else;
//! - `"print"`: writes `call <n>` to stdout (with a newline);
//! - `"sleep", "ms": N`: sleeps N ms;
//! - `"spin", "ms": N`: burns CPU for N ms;
//! - `"panic"`: panics (the instance must be discarded);
//! - `"open-bucket", "bucket": "owner/collection"`: opens a `wasi:keyvalue`
//!   bucket and keeps its handle in the instance;
//! - `"use-bucket"`: reads key `k` through the handle kept by an earlier call
//!   (the host drops a call's buckets when the call ends, so this traps);
//! - `"secret", "name": S`: reads a secret.
//!
//! Output: `{"instance_calls": <calls this instance served, this one
//! included>, "init_runs": <times init ran in this instance>, "trigger":
//! <the trigger's id or null>, "secret": <value or null>}`.
//!
//! `init` fails when the algorithm's secret `FAIL_INIT` is set.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmgrid_sdk::keyvalue::store;
use wasmgrid_sdk::serde_json::{Value, json};
use wasmgrid_sdk::{Error, Input, secrets};

static CALLS: AtomicU64 = AtomicU64::new(0);
static INIT_RUNS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static BUCKET: RefCell<Option<store::Bucket>> = const { RefCell::new(None) };
}

fn init() -> Result<(), Error> {
    INIT_RUNS.fetch_add(1, Ordering::Relaxed);
    if let Some(reason) = secrets::get("FAIL_INIT") {
        return Err(Error::transient(format!("init refused: {reason}")));
    }
    Ok(())
}

fn apply(input: Input) -> Result<Value, Error> {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let req: Value = input.json()?;
    let ms = req["ms"].as_u64().unwrap_or(0);
    let mut secret = Value::Null;
    match req["op"].as_str().unwrap_or("count") {
        "count" => {}
        "print" => println!("call {calls}"),
        "sleep" => std::thread::sleep(Duration::from_millis(ms)),
        "spin" => {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        "panic" => panic!("asked to panic"),
        "open-bucket" => {
            let name = req["bucket"].as_str().unwrap_or(".my/warm");
            let bucket = store::open(name)?;
            BUCKET.with(|b| *b.borrow_mut() = Some(bucket));
        }
        "use-bucket" => {
            BUCKET.with(|b| -> Result<(), Error> {
                let b = b.borrow();
                let bucket = b
                    .as_ref()
                    .ok_or_else(|| Error::permanent("no bucket kept"))?;
                bucket.get("k")?;
                Ok(())
            })?;
        }
        "secret" => {
            let name = req["name"].as_str().unwrap_or_default();
            secret = secrets::get(name).map_or(Value::Null, Value::String);
        }
        other => return Err(Error::invalid_input(format!("unknown op {other:?}"))),
    }
    Ok(json!({
        "instance_calls": calls,
        "init_runs": INIT_RUNS.load(Ordering::Relaxed),
        "trigger": input.trigger().map(|t| t.id.clone()),
        "secret": secret,
    }))
}

wasmgrid_sdk::algorithm!(apply, init = init);
