//! The shared contract suite (`wasmgrid_store::conformance`) against the
//! embedded backend; `wasmgrid-store-nats` runs the same functions against a
//! 3-node JetStream cluster.

use std::time::Duration;
use wasmgrid_store::EmbeddedStore;
use wasmgrid_store::conformance::{self as c, Backend};

const EMBEDDED: Backend = Backend {
    name: "embedded",
    single_process_leases: true,
    lease_margin: Duration::ZERO,
    tracks_recorded: true,
    exact_concurrent_update: true,
    reads_survive_delete: true,
    dedups_appends: false,
};

fn open() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn records() {
    let (_dir, s) = open();
    c::records_all(&s, EMBEDDED).await;
}

#[tokio::test]
async fn leases() {
    let (_dir, s) = open();
    c::leases(&s, EMBEDDED).await;
}

#[tokio::test]
async fn blobs() {
    let (_dir, s) = open();
    c::blobs_all(&s, EMBEDDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_queues() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let queues = wasmgrid_store::EmbeddedQueues::new(store);
    c::queues_all(&queues).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let queues = wasmgrid_store::EmbeddedQueues::new(store);
    c::changelog(&queues, &queues, EMBEDDED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let queues = wasmgrid_store::EmbeddedQueues::new(store.clone());
    c::files_all(store.as_ref(), &queues).await;
}

#[tokio::test]
async fn job_queue() {
    let (_dir, s) = open();
    c::jobqueue_all(&s, &s, &s).await;
}
