//! Warm instances (`reuse=N`, issue 19): per-call latency of a fresh instance
//! per call (`reuse` 0) against a warm instance (`reuse` 100000), through the
//! in-process invoker (admission, warm pool, metrics; no HTTP).
//!
//! Two algorithms: the Python `python-warm` example, whose `init` builds a
//! ~10 MB table of 100,000 entries (a fresh call runs `init` every time, a
//! warm call only looks one key up), and the Rust `noop` guest (instantiation
//! alone). Calls are sequential and timed one by one; each side first makes
//! one untimed call (a warm instance's first call is its cold start). Prints
//! p50 and p99 of each side and the fresh/warm p50 ratio.
//!
//! Run: `cargo bench -p wasmgrid --bench warm`. It builds guest-examples
//! (`noop`) with cargo; `python_warm.wasm` comes from
//! `bash tests/sdk/build_sdk_examples.sh`.
//!
//! Environment: `WARM_BENCH_PY_FRESH` (Python fresh calls, default 100),
//! `WARM_BENCH_PY_WARM` (Python warm calls, default 2000), `WARM_BENCH_NOOP`
//! (noop calls on each side, default 5000).

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmgrid::app::App;
use wasmgrid::engine::{EngineConfig, Payload};
use wasmgrid::invoker::Call;
use wasmgrid::registry::{DeployRequest, Deployed, VersionSettings};

#[path = "support/guests.rs"]
mod guests;
use guests::build_guest;

/// `reuse` of the warm side: more than any run's calls, so one instance
/// serves them all.
const WARM_REUSE: u32 = 100_000;

fn python_warm() -> Vec<u8> {
    let path = guests::examples_dir().join("python-warm/out/python_warm.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!(
            "{} is missing ({e}).\nBuild the Python and JavaScript SDK examples first:\n\n    bash tests/sdk/build_sdk_examples.sh\n",
            path.display()
        );
        std::process::exit(1)
    })
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var}: a number of calls"))
        })
        .max(1)
}

async fn deploy(app: &App, name: &str, bytes: &[u8], memory: u64, reuse: u32) -> Arc<Deployed> {
    app.registry
        .deploy(
            DeployRequest {
                owner: "bench".into(),
                name: name.into(),
                version: "1.0.0".into(),
                settings: VersionSettings {
                    memory,
                    reuse,
                    ..VersionSettings::default()
                },
                source_hash: None,
            },
            bytes.to_vec().into(),
        )
        .await
        .unwrap_or_else(|e| panic!("deploy {name}: {e}"))
}

/// The JSON body of one call's output.
async fn call(app: &App, deployed: &Deployed, input: &Payload) -> serde_json::Value {
    let out = app
        .invoker
        .call(Call::new(deployed, input.clone(), None))
        .await
        .unwrap_or_else(|e| panic!("call {}: {e}", deployed.endpoint_label()));
    serde_json::from_slice(&out.output.body).unwrap_or(serde_json::Value::Null)
}

/// Latencies of `n` sequential calls, after one untimed call; returns them
/// sorted and the last call's output.
async fn latencies(
    app: &App,
    deployed: &Deployed,
    input: &Payload,
    n: usize,
) -> (Vec<Duration>, serde_json::Value) {
    call(app, deployed, input).await;
    let mut samples = Vec::with_capacity(n);
    let mut last = serde_json::Value::Null;
    for _ in 0..n {
        let start = Instant::now();
        last = call(app, deployed, input).await;
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples, last)
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn report(label: &str, sorted: &[Duration]) {
    println!(
        "{label:<32} p50 {:>10.3?}  p99 {:>10.3?}  (n={})",
        pct(sorted, 0.50),
        pct(sorted, 0.99),
        sorted.len()
    );
}

/// The calls of `deployed` that a `start` (`warm` or `cold`) instance served,
/// from the metrics (`wasmgrid_instance_starts_total`).
fn starts(app: &App, deployed: &Deployed, start: &str) -> u64 {
    let algorithm = format!("algorithm=\"{}\"", deployed.endpoint_label());
    let start = format!("start=\"{start}\"");
    app.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("wasmgrid_instance_starts_total"))
        .filter(|l| l.contains(&algorithm) && l.contains(&start))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Times `fresh_n` calls of `fresh` and `warm_n` calls of `warm`, prints both
/// and the fresh/warm p50 ratio; `check` sees the last output of each side.
/// Fails unless one warm instance served every call of `warm`.
async fn compare(
    app: &App,
    what: &str,
    (fresh, fresh_n): (&Deployed, usize),
    (warm, warm_n): (&Deployed, usize),
    input: &Payload,
    check: impl Fn(&serde_json::Value, &serde_json::Value),
) {
    let (f, f_last) = latencies(app, fresh, input, fresh_n).await;
    let (w, w_last) = latencies(app, warm, input, warm_n).await;
    check(&f_last, &w_last);
    assert_eq!(
        (starts(app, warm, "cold"), starts(app, warm, "warm")),
        (1, warm_n as u64),
        "{what}: one warm instance serves every call"
    );
    report(&format!("{what} fresh (reuse 0)"), &f);
    report(&format!("{what} warm (reuse {WARM_REUSE})"), &w);
    println!(
        "{what}: fresh/warm p50 = {:.1}x",
        pct(&f, 0.5).as_secs_f64() / pct(&w, 0.5).as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported here.
    let py_fresh = count("WARM_BENCH_PY_FRESH", 100);
    let py_warm = count("WARM_BENCH_PY_WARM", 2000);
    let noop_n = count("WARM_BENCH_NOOP", 5000);
    let python = python_warm();
    let noop = build_guest("noop");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = App::open(dir.path(), EngineConfig::default(), Default::default()).unwrap();
    rt.block_on(async {
        let py_f = deploy(&app, "py-fresh", &python, 256, 0).await;
        let py_w = deploy(&app, "py-warm", &python, 256, WARM_REUSE).await;
        let noop_f = deploy(&app, "noop-fresh", &noop, 64, 0).await;
        let noop_w = deploy(&app, "noop-warm", &noop, 64, WARM_REUSE).await;
        println!(
            "sequential calls through the in-process invoker, {} worker threads",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );

        let key = Payload {
            content_type: "application/json".into(),
            body: br#""key-42""#.to_vec().into(),
        };
        compare(
            &app,
            "python-warm",
            (&py_f, py_fresh),
            (&py_w, py_warm),
            &key,
            |fresh, warm| {
                // Fresh: init ran for this call; warm: one instance served
                // the untimed call and every timed one.
                assert_eq!(fresh["instance_calls"], 1, "fresh: {fresh}");
                assert_eq!(fresh["value"], "value-42-6e4", "fresh: {fresh}");
                assert_eq!(warm["value"], "value-42-6e4", "warm: {warm}");
                assert_eq!(
                    warm["instance_calls"],
                    py_warm as u64 + 1,
                    "warm: one instance: {warm}"
                );
            },
        )
        .await;

        let empty = Payload {
            content_type: "application/octet-stream".into(),
            body: bytes::Bytes::new(),
        };
        compare(
            &app,
            "noop",
            (&noop_f, noop_n),
            (&noop_w, noop_n),
            &empty,
            |_, _| {},
        )
        .await;
    });
}
