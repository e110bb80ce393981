//! The shared contract suite (`wasmgrid_store::conformance`) against
//! [`NatsStore`] on a real 3-node JetStream cluster at replicas 3: one
//! cluster per test binary, one prefix (so separate buckets) per test.

use std::sync::OnceLock;
use std::time::Duration;
use wasmgrid_store::conformance::{self as c, Backend};
use wasmgrid_store_nats::testing::Cluster;
use wasmgrid_store_nats::{ConnectError, NatsStore};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start().expect("start the NATS test cluster"))
}

async fn store(prefix: &str) -> NatsStore {
    let urls = cluster().urls.clone();
    NatsStore::connect(&urls, prefix, 3, None)
        .await
        .expect("connect to the test cluster")
}

/// What NATS promises, by server version: before 2.9.21 two concurrent
/// updates from one revision may both succeed on a clustered stream
/// (STORAGE.md rule 3, nats-server #4320).
fn backend(s: &NatsStore) -> Backend {
    let v: Vec<u64> = s
        .server_version()
        .split(['.', '-'])
        .take(3)
        .filter_map(|p| p.parse().ok())
        .collect();
    Backend {
        name: "nats",
        single_process_leases: false,
        lease_margin: wasmgrid_store_nats::SKEW_MARGIN,
        tracks_recorded: false,
        exact_concurrent_update: v.as_slice() >= [2, 9, 21].as_slice(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records() {
    let s = store("trec").await;
    c::records_all(&s, backend(&s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases() {
    let s = store("tlease").await;
    c::leases(&s, backend(&s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs() {
    let s = store("tblob").await;
    c::blobs_all(&s, backend(&s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_binds_the_same_buckets() {
    let a = store("tbind").await;
    let b = store("tbind").await;
    use wasmgrid_store::records::{Bucket, Records};
    let rev = a
        .create(Bucket::Meta, "cluster/admin_key", "sealed".into())
        .await
        .unwrap();
    let seen = b
        .get(Bucket::Meta, "cluster/admin_key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.rev, rev);
    assert!(
        b.create(Bucket::Meta, "cluster/admin_key", "other".into())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unreachable_servers_and_bad_prefixes_are_clear_errors() {
    match NatsStore::connect("nats://127.0.0.1:1", "t", 1, None).await {
        Err(e @ ConnectError::Unreachable { .. }) => {
            assert!(e.to_string().contains("nats://127.0.0.1:1"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        NatsStore::connect("nats://127.0.0.1:1", "a.b", 1, None).await,
        Err(ConnectError::Prefix(_))
    ));
    let _ = Duration::ZERO;
}
