//! In-process invocation cost: a fresh instance per call (instantiate + call +
//! drop), as the server does it, without HTTP.
//!
//! Run: `cargo bench -p wasmgrid --bench invoke` (builds guest-examples first).
//! Besides criterion's estimates it prints p50/p99 over individually timed calls,
//! which is what docs/PERFORMANCE.md records.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use wasmgrid::engine::{
    CallContext, CallLimits, Engine, EngineConfig, GuestIdentity, Payload, Prepared,
};

#[path = "support/guests.rs"]
mod guests;
use guests::build_guest;

fn prepare(engine: &Engine, name: &str) -> Prepared {
    let component = engine.compile(&build_guest(name)).expect("compile");
    engine
        .prepare(&component)
        .expect("prepare")
        .1
        .expect("algorithm")
}

/// A call context with no host services: noop and json-stats make no host calls.
fn ctx() -> CallContext {
    CallContext::standalone(GuestIdentity {
        owner: "bench".into(),
        name: "bench".into(),
        ..Default::default()
    })
}

fn limits() -> CallLimits {
    CallLimits {
        timeout: Duration::from_secs(10),
        memory_bytes: 64 << 20,
        init_timeout: Duration::from_secs(10),
    }
}

fn percentiles(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    pre: &Prepared,
    input: &Payload,
    label: &str,
) {
    const N: usize = 20_000;
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        let out = rt.block_on(engine.invoke(pre, ctx(), input.clone(), None, limits()));
        samples.push(start.elapsed());
        assert!(out.is_ok());
    }
    samples.sort();
    let p = |q: f64| samples[((N as f64 * q) as usize).min(N - 1)];
    println!(
        "{label}: p50 {:?}  p90 {:?}  p99 {:?}  (n={N})",
        p(0.50),
        p(0.90),
        p(0.99)
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let noop = prepare(&engine, "noop");
    let stats = prepare(&engine, "json_stats");
    let empty = Payload {
        content_type: "application/octet-stream".into(),
        body: bytes::Bytes::new(),
    };
    // ~1 KiB JSON array of numbers.
    let numbers: Vec<String> = (0..180).map(|i| format!("{}.5", i * 7 % 1000)).collect();
    let json = format!("[{}]", numbers.join(","));
    assert!(
        json.len() >= 1000 && json.len() <= 1100,
        "input is {} bytes",
        json.len()
    );
    let stats_input = Payload {
        content_type: "application/json".into(),
        body: json.into_bytes().into(),
    };

    c.bench_function("invoke noop (instantiate + call + drop)", |b| {
        b.iter(|| {
            rt.block_on(engine.invoke(&noop, ctx(), empty.clone(), None, limits()))
                .unwrap()
        })
    });
    c.bench_function("invoke json-stats 1 KiB", |b| {
        b.iter(|| {
            rt.block_on(engine.invoke(&stats, ctx(), stats_input.clone(), None, limits()))
                .unwrap()
        })
    });
    percentiles(&rt, &engine, &noop, &empty, "noop");
    percentiles(&rt, &engine, &stats, &stats_input, "json-stats 1 KiB");
}

criterion_group!(benches, bench);
criterion_main!(benches);
