//! End-to-end event throughput: durable ingest → match → delivery to `noop`,
//! in process (no HTTP), on the embedded store.
//!
//! Run: `cargo bench -p wasmgrid --bench events` (builds guest-examples first);
//! `WASMGRID_EVENTS_BENCH=e2e` (or `ingest`) runs only those rows.
//! Prints, for the configurations below, events/s from the first publish until
//! the last delivery is acknowledged in memory, plus ingest-only throughput.
//! docs/PERFORMANCE.md records the figures.
//!
//! `WASMGRID_BENCH_BACKEND=nats` runs the same rows (a fifth of the events)
//! on cluster mode instead: a 3-server NATS cluster on loopback
//! (`wasmgrid_store_nats::testing`) and two nodes in this process sharing the
//! deliveries, with `WASMGRID_BENCH_REPLICAS` (default 1) replicas.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmgrid::app::App;
use wasmgrid::auth::{Caller, Scope};
use wasmgrid::engine::EngineConfig;
use wasmgrid::events::{EventsConfig, SubscriptionSpec};
use wasmgrid::metrics::SubscriptionLabel;
use wasmgrid::registry::{DeployRequest, VersionSettings};

/// The allocator the `wasmgrid` binary uses (runtime/src/main.rs), so the bench
/// measures what the server runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::cpu_time;

#[path = "support/guests.rs"]
mod guests;
use guests::build_guest as guest;

fn admin() -> Caller {
    Caller {
        key_id: "bench".into(),
        owner: "bench".into(),
        scopes: vec![Scope::Admin],
        compat: Default::default(),
        hops: 0,
    }
}

/// Distinguishes the event ids of successive runs: a repeated `(source, id)`
/// would be dropped by deduplication.
static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn batch(run: usize, start: usize, n: usize) -> Vec<Value> {
    (start..start + n)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("r{run}-e{i}"), "source": "/bench",
                   "type": "bench.event", "subject": format!("/items/{}", i % 100),
                   "data": {"i": i}})
        })
        .collect()
}

/// Publishes `total` events from `publishers` concurrent tasks in batches of
/// `batch_size`; returns (ingest seconds, end-to-end seconds, CPU seconds used
/// until the end).
async fn run(
    apps: &[Arc<App>],
    topic: &str,
    sub: Option<&str>,
    total: usize,
    batch_size: usize,
    publishers: usize,
) -> (f64, f64, f64) {
    // Deliveries of every node (in cluster mode each takes a share).
    let delivered: Vec<_> = sub
        .map(|s| {
            apps.iter()
                .map(|app| {
                    app.metrics
                        .events_delivered
                        .get_or_create(&SubscriptionLabel {
                            subscription: format!("{topic}/{s}"),
                        })
                        .clone()
                })
                .collect()
        })
        .unwrap_or_default();
    let count = || delivered.iter().map(|c| c.get()).sum::<u64>();
    let before = count();
    let app = &apps[0];
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let cpu_started = cpu_time();
    let per = total / publishers;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let app = app.clone();
        let topic = topic.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per {
                let n = batch_size.min(per - sent);
                app.events
                    .publish(&topic, batch(run, p * per + sent, n))
                    .await
                    .expect("publish");
                sent += n;
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let ingest = started.elapsed().as_secs_f64();
    if sub.is_some() {
        while count() - before < (per * publishers) as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    (
        ingest,
        started.elapsed().as_secs_f64(),
        (cpu_time() - cpu_started).as_secs_f64(),
    )
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = std::env::var("WASMGRID_BENCH_BACKEND").as_deref() == Ok("nats");
    let nats = cluster
        .then(|| wasmgrid_store_nats::testing::Cluster::start().expect("a 3-server NATS cluster"));
    let scale = if cluster { 5 } else { 1 };
    rt.block_on(async {
        let apps: Vec<Arc<App>> = match &nats {
            None => vec![
                App::open(dir.path(), EngineConfig::default(), EventsConfig::default())
                    .expect("app"),
            ],
            Some(nats) => {
                let replicas = std::env::var("WASMGRID_BENCH_REPLICAS")
                    .ok()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(1);
                let key = wasmgrid::cluster::ClusterKey::generate();
                let mut apps = Vec::new();
                for node in 0..2 {
                    let config = wasmgrid::cluster::ClusterConfig {
                        urls: nats.urls.clone(),
                        key: key.clone(),
                        replicas,
                        prefix: "bench".into(),
                        creds: None,
                        lease: Duration::from_secs(30),
                    };
                    apps.push(
                        App::open_cluster(
                            &dir.path().join(format!("node{node}")),
                            EngineConfig::default(),
                            EventsConfig::default(),
                            config,
                        )
                        .await
                        .expect("a cluster node"),
                    );
                }
                println!("cluster mode: 3 nats-servers, 2 nodes, replicas {replicas}");
                apps
            }
        };
        for app in &apps {
            app.events.start();
        }
        let app = &apps[0];
        let caller = admin();
        app.registry
            .deploy(
                DeployRequest {
                    owner: "bench".into(),
                    name: "noop".into(),
                    version: "1.0.0".into(),
                    settings: VersionSettings {
                        concurrency: 1000,
                        ..VersionSettings::default()
                    },
                    source_hash: None,
                },
                guest("noop").into(),
            )
            .await
            .expect("deploy noop");
        for topic in ["ingest", "e2e", "e2e-batched"] {
            app.events
                .create_topic(&caller, topic)
                .await
                .expect("topic");
        }
        let spec: SubscriptionSpec = serde_json::from_value(json!({
            "destination": {"algorithm": "bench/noop"},
            "maxConcurrentDeliveries": 64
        }))
        .expect("spec");
        app.events
            .put_subscription(&caller, "e2e", "noop", spec)
            .await
            .expect("subscription");
        // Event Grid's batched delivery: one call of `noop` per (up to) 100 events.
        let spec: SubscriptionSpec = serde_json::from_value(json!({
            "destination": {"algorithm": "bench/noop"},
            "maxConcurrentDeliveries": 64,
            "batching": {"maxEventsPerBatch": 100, "preferredBatchSizeInKilobytes": 1024}
        }))
        .expect("spec");
        app.events
            .put_subscription(&caller, "e2e-batched", "noop", spec)
            .await
            .expect("subscription");

        // Warm up (compile caches, first pages); in a cluster, let the other
        // node learn the topics and subscriptions first.
        if cluster {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        run(&apps, "e2e", Some("noop"), 2_000, 100, 4).await;

        println!(
            "| what | events | batch | publishers | ingest events/s | end-to-end events/s | CPU µs/event |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (topic, sub, total, batch_size, publishers) in [
            ("ingest", None, 100_000, 100, 4),
            ("ingest", None, 100_000, 1, 16),
            ("e2e", Some("noop"), 100_000, 100, 4),
            ("e2e", Some("noop"), 100_000, 100, 16),
            ("e2e", Some("noop"), 20_000, 1, 16),
            ("e2e-batched", Some("noop"), 100_000, 100, 4),
        ] {
            // `WASMGRID_EVENTS_BENCH=e2e` (or `ingest`) runs only those rows (for profiling).
            if let Ok(only) = std::env::var("WASMGRID_EVENTS_BENCH")
                && !topic.starts_with(only.as_str())
            {
                continue;
            }
            let total = total / scale;
            let (ingest, e2e, cpu) = run(&apps, topic, sub, total, batch_size, publishers).await;
            let what = match (topic, sub.is_some()) {
                ("e2e-batched", _) => "ingest → match → deliver to noop, batches of ≤ 100",
                (_, true) => "ingest → match → deliver to noop",
                _ => "ingest only (no subscription)",
            };
            println!(
                "| {what} | {total} | {batch_size} | {publishers} | {:.0} | {} | {:.1} |",
                total as f64 / ingest,
                if sub.is_some() {
                    format!("{:.0}", total as f64 / e2e)
                } else {
                    "-".into()
                },
                cpu * 1e6 / total as f64
            );
        }
        for app in &apps {
            app.events.shutdown().await;
        }
    });
}
