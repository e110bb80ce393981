//! Guest data access versus the same operations on the store directly.
//!
//! Run: `cargo bench -p wasmgrid --bench data` (builds guest-examples first).
//! Prints ops/s for 1 KiB `get` and `put`: from inside a guest (data-bench, one
//! instance doing N operations through `wasmgrid:algorithm/data`), through
//! `DataService` (access checks + events, no Wasm), and on the `Store` trait
//! (the same two-key snapshot read a guest `get` makes: file record + content;
//! for `put`, one durable transaction writing both), plus the guest/direct
//! ratios recorded in docs/PERFORMANCE.md.
//!
//! `get` runs [`GET_ROUNDS`] short rounds, each timing the three sides back to
//! back, and reports each side's best round, and the median over rounds of the
//! guest/Store ratio within a round: on a shared machine another process can
//! take the CPU for part of a run, and interleaving keeps such a stall from
//! landing on one side only. `put` (fsync-bound) runs once.
//!
//! `WASMGRID_DATA_BENCH=get` skips the puts (for profiling the read path).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmgrid::data::{DataPath, DataService, Principal};
use wasmgrid::engine::{CallContext, CallLimits, Engine, EngineConfig, GuestIdentity, Payload};
use wasmgrid::events::{EventService, EventsConfig};
use wasmgrid::metrics::Metrics;
use wasmgrid::registry::Registry;
use wasmgrid::secrets::SecretStore;
use wasmgrid::services::Services;
use wasmgrid::store::{EmbeddedStore, Store, Table};

fn guest(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    let ok = Command::new("cargo")
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .status()
        .expect("cargo");
    assert!(ok.success());
    std::fs::read(dir.join(format!("target/wasm32-wasip2/release/{name}.wasm")))
        .expect("guest wasm")
}

/// Rounds of the `get` comparison.
const GET_ROUNDS: usize = 20;

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n_get: u64 = 25_000;
    let n_put: u64 = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let data = Arc::new(DataService::new(store.clone()));
    let secrets = Arc::new(SecretStore::open(store.clone(), dir.path()).expect("secrets"));
    let engine = Arc::new(Engine::new(EngineConfig::default()).expect("engine"));
    let registry =
        Arc::new(Registry::open(store.clone(), engine.clone(), dir.path()).expect("registry"));
    let metrics = Arc::new(Metrics::new());
    let events = EventService::open(
        store.clone(),
        registry.clone(),
        data.clone(),
        metrics.clone(),
        EventsConfig::default(),
    )
    .expect("events");
    let services = Arc::new(Services::new(
        data.clone(),
        secrets,
        events,
        &registry,
        metrics,
    ));
    let identity = GuestIdentity {
        owner: "bench".into(),
        name: "data-bench".into(),
        version: "1.0.0".into(),
        grants: vec!["data://bench/kv:write".into()],
        memory_bytes: 256 << 20,
    };
    let component = engine.compile(&guest("data_bench")).expect("compile");
    let pre = engine
        .prepare(&component)
        .expect("prepare")
        .1
        .expect("algorithm");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let call = |op: &str, uri: &str, n: u64| {
        let input = serde_json::json!({"op": op, "uri": uri, "n": n, "size": 1024}).to_string();
        let ctx = CallContext {
            depth: 0,
            identity: Arc::new(identity.clone()),
            host: services.clone(),
        };
        let limits = CallLimits {
            timeout: Duration::from_secs(600),
            memory_bytes: 256 << 20,
        };
        let payload = Payload {
            content_type: "application/json".into(),
            body: input.into(),
        };
        let started = Instant::now();
        let out = rt.block_on(engine.invoke(&pre, ctx, payload, None, limits));
        let took = started.elapsed();
        assert!(out.is_ok(), "guest {op} failed: {:?}", out.err());
        took
    };
    let value = vec![7u8; 1024];
    let p = DataPath::new("bench", "kv", "k").expect("path");
    let who = Principal::Algorithm(&identity);
    data.put(who, &p, "application/octet-stream", &value)
        .expect("seed");

    // get: interleaved rounds, best round per side.
    let (mut guest_get, mut service_get, mut store_get) = (0f64, 0f64, 0f64);
    let mut round_ratios = Vec::with_capacity(GET_ROUNDS);
    for _ in 0..GET_ROUNDS {
        let guest_round = rate(n_get, call("get", "data://bench/kv/k", n_get));
        guest_get = guest_get.max(guest_round);
        let started = Instant::now();
        for _ in 0..n_get {
            std::hint::black_box(data.read_all(who, &p, u64::MAX).expect("read"));
        }
        service_get = service_get.max(rate(n_get, started.elapsed()));
        let started = Instant::now();
        for _ in 0..n_get {
            std::hint::black_box(
                store
                    .get_many(&[
                        (Table::FILES, "bench/kv/k"),
                        (Table::FILE_DATA, "bench/kv/k"),
                    ])
                    .expect("get"),
            );
        }
        let store_round = rate(n_get, started.elapsed());
        store_get = store_get.max(store_round);
        round_ratios.push(guest_round / store_round);
    }
    round_ratios.sort_by(f64::total_cmp);
    println!(
        "1 KiB values, single caller, one run (get: best of {GET_ROUNDS} interleaved rounds of {n_get}):"
    );
    println!(
        "  get: guest {guest_get:>10.0} ops/s | DataService {service_get:>10.0} ops/s | Store trait {store_get:>10.0} ops/s | guest/Store {:.2}x (median round {:.2}x)",
        guest_get / store_get,
        round_ratios[GET_ROUNDS / 2]
    );
    if std::env::var("WASMGRID_DATA_BENCH").as_deref() == Ok("get") {
        return;
    }

    // put (each one durable: a group-committed fsync)
    let guest_put = rate(n_put, call("put", "data://bench/kv/p", n_put));
    let started = Instant::now();
    for _ in 0..n_put {
        data.put(
            who,
            &DataPath::new("bench", "kv", "p2").expect("path"),
            "application/octet-stream",
            &value,
        )
        .expect("put");
    }
    let service_put = rate(n_put, started.elapsed());
    let started = Instant::now();
    for _ in 0..n_put {
        store
            .transact(&mut |txn| {
                txn.put(Table::FILES, "bench/kv/p3", b"{}")?;
                txn.put(Table::FILE_DATA, "bench/kv/p3", &value)
            })
            .expect("transact");
    }
    let store_put = rate(n_put, started.elapsed());

    println!(
        "  put: guest {guest_put:>10.0} ops/s | DataService {service_put:>10.0} ops/s | Store trait {store_put:>10.0} ops/s | guest/Store {:.2}x",
        guest_put / store_put
    );
}
