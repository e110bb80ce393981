//! Two "nodes" on one NATS JetStream cluster (issue 15), each keeping its
//! caches current through records watches.
//!
//! - Registries: version records in a shared key/value bucket, component
//!   bytes in the shared object store, each node with its own
//!   compiled-artifact directory. A version deployed through one node is
//!   callable through the other (compiled there on its first call); a delete
//!   on one takes it down on the other, and its number stays taken everywhere.
//! - Key stores: a key created on one node works on the other; revoked on
//!   one, it stops working on the other.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmgrid_core::auth::{KeyStore, Scope};
use wasmgrid_core::invoker::{Call, Invoker};
use wasmgrid_core::metrics::Metrics;
use wasmgrid_core::registry::{
    DeployRequest, Registry, RegistryError, VersionSettings, VersionSpec,
};
use wasmgrid_engine::{Engine, EngineConfig, HostApi, NoHostServices, Payload};
use wasmgrid_store_nats::NatsStore;
use wasmgrid_store_nats::testing::Cluster;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start().expect("start the NATS test cluster"))
}

#[path = "../../../benches/support/guests.rs"]
mod guests;

/// `guest-examples/`'s `name` component (built if needed; scripts/test.sh
/// builds them before the tests).
fn guest(name: &str) -> bytes::Bytes {
    guests::build_guest(name).into()
}

struct Node {
    registry: Arc<Registry>,
    invoker: Invoker,
    _host: Arc<dyn HostApi>,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn node(prefix: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let nats = Arc::new(
        NatsStore::connect(&cluster().urls, prefix, 3, None)
            .await
            .expect("connect to the test cluster"),
    );
    let engine = Arc::new(Engine::new(EngineConfig::default()).unwrap());
    let registry = Arc::new(
        Registry::open(nats.clone(), nats, engine, dir.path(), &[])
            .await
            .unwrap(),
    );
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(registry.clone().follow(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let invoker = Invoker::new(registry.clone(), Arc::new(Metrics::new()));
    let host: Arc<dyn HostApi> = Arc::new(NoHostServices);
    invoker.bind_host(&host).unwrap();
    Node {
        registry,
        invoker,
        _host: host,
        stop,
        _dir: dir,
    }
}

async fn hello(n: &Node, who: &str) -> Result<String, RegistryError> {
    let deployed = n.registry.resolve("demo", "hello", &VersionSpec::Latest)?;
    let out = n
        .invoker
        .call(Call::new(
            &deployed,
            Payload {
                content_type: "text/plain".into(),
                body: who.to_string().into(),
            },
            None,
        ))
        .await
        .expect("the call runs");
    Ok(String::from_utf8_lossy(&out.output.body).into_owned())
}

fn request(version: &str) -> DeployRequest {
    DeployRequest {
        owner: "demo".into(),
        name: "hello".into(),
        version: version.into(),
        settings: VersionSettings::default(),
        source_hash: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_deployed_on_one_node_runs_on_the_other() {
    let bytes = guest("hello");
    let a = node("tregistry").await;
    let b = node("tregistry").await;
    let deployed = Instant::now();
    a.registry
        .deploy(request("1.0.0"), bytes.clone())
        .await
        .unwrap();
    // B resolves it as soon as the watch brings the record, and compiles the
    // component from the shared store on the first call.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match hello(&b, "B").await {
            Ok(answer) => break answer,
            Err(RegistryError::NotFound(_)) => {
                assert!(Instant::now() < deadline, "B never saw demo/hello");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    eprintln!("deploy on A to first answer on B: {:?}", deployed.elapsed());
    assert_eq!(answer, "Hello, B!");
    assert_eq!(b.registry.compilations(), 1, "B compiled it on first use");
    assert_eq!(hello(&a, "A").await.unwrap(), "Hello, A!");

    // A version number is taken on every node.
    match b.registry.deploy(request("1.0.0"), bytes.clone()).await {
        Err(RegistryError::VersionExists(_)) => {}
        other => panic!("{:?}", other.map(|d| d.endpoint())),
    }
    // A delete on B takes it down on A.
    b.registry.delete("demo", "hello", "1.0.0").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while hello(&a, "A").await.is_ok() {
        assert!(Instant::now() < deadline, "A still runs a deleted version");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match a.registry.deploy(request("1.0.0"), bytes).await {
        Err(RegistryError::VersionExists(_)) => {}
        other => panic!("{:?}", other.map(|d| d.endpoint())),
    }
    let _ = a.stop.send(true);
    let _ = b.stop.send(true);
}

async fn keys(prefix: &str) -> (Arc<KeyStore>, tokio::sync::watch::Sender<bool>) {
    let nats = Arc::new(
        NatsStore::connect(&cluster().urls, prefix, 3, None)
            .await
            .expect("connect to the test cluster"),
    );
    let keys = Arc::new(KeyStore::open(nats).await.unwrap());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(keys.clone().follow(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    (keys, stop)
}

/// Waits (at most 10 s) until `ok` holds.
async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_on_one_node_works_on_the_other_until_revoked() {
    let (a, stop_a) = keys("tkeys").await;
    let (b, stop_b) = keys("tkeys").await;
    let (record, key) = a
        .create("alice", vec![Scope::Invoke], Some("ci".into()), None)
        .await
        .unwrap();
    eventually("B accepts the key", || b.verify(&key).is_some()).await;
    let caller = b.verify(&key).unwrap();
    assert_eq!(
        (caller.owner.as_str(), caller.scopes.as_slice()),
        ("alice", &[Scope::Invoke][..])
    );
    assert!(b.list().iter().any(|k| k.id == record.id));
    assert!(b.revoke(&record.id).await.unwrap());
    eventually("A refuses the revoked key", || a.verify(&key).is_none()).await;
    assert!(a.list().iter().all(|k| k.id != record.id));
    let _ = stop_a.send(true);
    let _ = stop_b.send(true);
}
