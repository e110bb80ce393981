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
//! Each operation runs in short rounds, each timing the three sides back to
//! back; the bench reports each side's best round and the guest/Store ratio
//! within each round (median and range; the median is the figure recorded). On
//! a shared machine another process can take the CPU or the disk for part of a
//! run: pairing the sides within a round keeps such a stall from landing on one
//! side only.
//!
//! `WASMGRID_DATA_BENCH=get` skips the puts (for profiling the read path).

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmgrid::data::{Content, DataPath, DataService, Principal};
use wasmgrid::engine::{CallContext, CallLimits, Engine, EngineConfig, GuestIdentity, Payload};
use wasmgrid::events::{EventService, EventsConfig};
use wasmgrid::invoker::Invoker;
use wasmgrid::metrics::Metrics;
use wasmgrid::registry::Registry;
use wasmgrid::secrets::SecretStore;
use wasmgrid::services::Services;
use wasmgrid::store::raw::{Store, Table};
use wasmgrid::store::{EmbeddedQueues, EmbeddedStore};

#[path = "support/guests.rs"]
mod guests;
use guests::build_guest as guest;

/// Rounds and operations per round of the `get` comparison.
const GET_ROUNDS: usize = 20;
const N_GET: u64 = 25_000;
/// Rounds and operations per round of the `put` comparison.
const PUT_ROUNDS: usize = 5;
const N_PUT: u64 = 400;

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let embedded = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let store: Arc<dyn Store> = embedded.clone();
    let records: Arc<dyn wasmgrid::store::records::Records> = embedded.clone();
    let data = Arc::new(DataService::new(
        records.clone(),
        embedded.clone(),
        embedded.clone(),
    ));
    let secrets = Arc::new(SecretStore::open(records.clone(), dir.path()).expect("secrets"));
    let engine = Arc::new(Engine::new(EngineConfig::default()).expect("engine"));
    let registry = Arc::new(
        setup
            .block_on(Registry::open(
                records.clone(),
                embedded.clone(),
                engine.clone(),
                dir.path(),
                wasmgrid::server_paths::RESERVED_PATHS,
            ))
            .expect("registry"),
    );
    let metrics = Arc::new(Metrics::new());
    let invoker = Arc::new(Invoker::new(registry, metrics.clone()));
    let queues = Arc::new(EmbeddedQueues::new(embedded.clone()));
    let events = setup
        .block_on(EventService::open(
            records,
            queues.clone(),
            queues,
            embedded.clone(),
            invoker.clone(),
            data.clone(),
            metrics,
            EventsConfig::default(),
            None,
        ))
        .expect("events");
    // The guest calls here go to the engine directly, with these services as
    // host: the invoker needs no binding.
    let services = Arc::new(Services::new(data.clone(), secrets, events, invoker));
    let identity = GuestIdentity {
        owner: "bench".into(),
        name: "data-bench".into(),
        version: "1.0.0".into(),
        grants: vec!["data://bench/kv:write".into()],
        memory_bytes: 256 << 20,
        hops: 0,
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
            init_timeout: Duration::from_secs(600),
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

    let get = compare(
        GET_ROUNDS,
        N_GET,
        || call("get", "data://bench/kv/k", N_GET),
        || {
            // 1 KiB: an inline file, its bytes in hand.
            let (rec, content) = data.read(who, &p, u64::MAX).expect("read");
            let Content::Inline(bytes) = content else {
                panic!("a 1 KiB file is inline")
            };
            std::hint::black_box((rec, bytes));
        },
        || {
            std::hint::black_box(
                store
                    .get_many(&[
                        (Table::FILES, "bench/kv/k"),
                        (Table::FILE_DATA, "bench/kv/k"),
                    ])
                    .expect("get"),
            );
        },
    );
    println!("1 KiB values, single caller, one run; interleaved rounds, best round per side:");
    get.print(&format!("get ({GET_ROUNDS} x {N_GET})"));
    if std::env::var("WASMGRID_DATA_BENCH").as_deref() == Ok("get") {
        return;
    }

    // put: each one durable (a group-committed fsync).
    let p2 = DataPath::new("bench", "kv", "p2").expect("path");
    let put = compare(
        PUT_ROUNDS,
        N_PUT,
        || call("put", "data://bench/kv/p", N_PUT),
        || {
            data.put(who, &p2, "application/octet-stream", &value)
                .expect("put");
        },
        || {
            store
                .transact(&mut |txn| {
                    txn.put(Table::FILES, "bench/kv/p3", b"{}")?;
                    txn.put(Table::FILE_DATA, "bench/kv/p3", &value)
                })
                .expect("transact");
        },
    );
    put.print(&format!("put ({PUT_ROUNDS} x {N_PUT}, durable)"));
}

/// Best ops/s of each side over interleaved rounds, and the guest/Store ratio
/// of each round.
struct Comparison {
    guest: f64,
    service: f64,
    store: f64,
    ratios: Vec<f64>,
}

/// Runs `rounds` rounds of: one guest call doing `n` operations, then `n`
/// operations through `DataService`, then `n` on the `Store` trait.
fn compare(
    rounds: usize,
    n: u64,
    mut guest: impl FnMut() -> Duration,
    mut service: impl FnMut(),
    mut store: impl FnMut(),
) -> Comparison {
    let mut c = Comparison {
        guest: 0.0,
        service: 0.0,
        store: 0.0,
        ratios: Vec::with_capacity(rounds),
    };
    let timed = |op: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..n {
            op();
        }
        rate(n, started.elapsed())
    };
    for _ in 0..rounds {
        let g = rate(n, guest());
        let sv = timed(&mut service);
        let st = timed(&mut store);
        c.guest = c.guest.max(g);
        c.service = c.service.max(sv);
        c.store = c.store.max(st);
        c.ratios.push(g / st);
    }
    c.ratios.sort_by(f64::total_cmp);
    c
}

impl Comparison {
    fn print(&self, what: &str) {
        let (first, last) = (self.ratios[0], self.ratios[self.ratios.len() - 1]);
        println!(
            "  {what}: guest {:>8.0} ops/s | DataService {:>8.0} ops/s | Store trait {:>8.0} ops/s",
            self.guest, self.service, self.store
        );
        println!(
            "    guest/Store: median round {:.2}x (rounds {first:.2}x-{last:.2}x), best/best {:.2}x",
            self.ratios[self.ratios.len() / 2],
            self.guest / self.store
        );
    }
}
