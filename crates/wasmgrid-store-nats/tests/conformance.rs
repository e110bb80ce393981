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

/// A small text file's write (inline content, no event) into a collection
/// that is created if missing.
fn text_file(key: &str, content: &str) -> wasmgrid_store::files::FileWrite {
    use wasmgrid_store::files::{FileRecord, FileWrite, record};
    FileWrite {
        key: key.to_string(),
        record: record::encode(&FileRecord {
            size: content.len() as u64,
            content_type: "text/plain".into(),
            etag: "\"e\"".into(),
            last_modified: "2026-01-02T03:04:05.123Z".into(),
            blob: None,
            folder: false,
            expires: None,
        }),
        blob: None,
        inline: bytes::Bytes::from(content.to_string()),
        event: None,
        new_collection: bytes::Bytes::from_static(b"{}"),
    }
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
        reads_survive_delete: false,
        dedups_appends: true,
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
async fn delivery_queues() {
    let s = store("tqueue").await;
    let q = s
        .queues(Duration::from_secs(30), Duration::from_secs(120))
        .await
        .expect("the queue streams");
    c::queues_all(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log() {
    let s = store("tlog").await;
    let q = s
        .queues(Duration::from_secs(30), Duration::from_secs(120))
        .await
        .expect("the queue and log streams");
    c::changelog(&q, &q, backend(&s)).await;
}

/// A version record and its change event are one message; the versions feed
/// moves the events into the log's algorithms feed, in revision order, and
/// the conditional writes keep their create-once and revision checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_records_feed_their_events_into_the_log() {
    use wasmgrid_store::StoreError;
    use wasmgrid_store::changelog::{ChangeLog, Feed};
    use wasmgrid_store::records::{Bucket, Records};
    let s = store("tvfeed").await;
    let q = std::sync::Arc::new(
        s.queues(Duration::from_secs(30), Duration::from_secs(120))
            .await
            .expect("the queue and log streams"),
    );
    let key = "demo/hello/1.0.0";
    let rev = s
        .create_announced(Bucket::Versions, key, "live".into(), "deployed".into())
        .await
        .unwrap();
    assert!(matches!(
        s.create_announced(Bucket::Versions, key, "again".into(), "x".into())
            .await,
        Err(StoreError::Exists { .. })
    ));
    let rev2 = s
        .update_announced(
            Bucket::Versions,
            key,
            "tombstone".into(),
            rev,
            "deleted".into(),
        )
        .await
        .unwrap();
    assert!(matches!(
        s.update_announced(Bucket::Versions, key, "stale".into(), rev, "x".into())
            .await,
        Err(StoreError::Changed { .. })
    ));
    let got = s.get(Bucket::Versions, key).await.unwrap().unwrap();
    assert_eq!((got.value.as_ref(), got.rev), (&b"tombstone"[..], rev2));

    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let feed = q.clone();
    let task = tokio::spawn(async move {
        feed.run_versions_feed(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let read = q.read(10).await.unwrap();
        if read.entries.len() >= 2 {
            break read.entries;
        }
        assert!(std::time::Instant::now() < deadline, "feed: {read:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let events: Vec<(&[u8], Feed)> = entries.iter().map(|l| (l.event.as_ref(), l.feed)).collect();
    assert_eq!(
        events,
        [
            (&b"deployed"[..], Feed::Algorithms),
            (&b"deleted"[..], Feed::Algorithms)
        ]
    );
    let _ = stop.send(true);
    task.await.unwrap();
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
}

/// A server with the default `max_payload` (1 MiB) is refused, naming the
/// setting.
#[tokio::test]
async fn a_server_with_a_small_max_payload_is_refused() {
    let dir = std::env::temp_dir().join(format!("wasmgrid-nats-small-{}", std::process::id()));
    // A free port near the cluster's range, not one of its six.
    let port = (0..50)
        .map(|i| 32000 - 1 - (std::process::id() % 500) as u16 - i * 7)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port");
    let mut server = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server runs");
    let url = format!("nats://127.0.0.1:{port}");
    let mut outcome = None;
    for _ in 0..50 {
        match NatsStore::connect(&url, "tsmall", 1, None).await {
            Err(ConnectError::Unreachable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                outcome = Some(other);
                break;
            }
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Some(Err(e @ ConnectError::MaxPayload { found, .. })) => {
            assert_eq!(found, 1024 * 1024);
            assert!(e.to_string().contains("max_payload"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// Object stores are read from their stream leader (direct gets off), so a
/// blob finished a moment ago is found by the next read; a store an older
/// build created with direct gets on is switched over at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_stores_answer_from_the_stream_leader() {
    let urls = cluster().urls.clone();
    let first = urls.split(',').next().unwrap_or_default().to_string();
    let client = async_nats::connect(first).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // As async-nats creates one: direct gets on.
    js.create_object_store(async_nats::jetstream::object_store::Config {
        bucket: "tdirect_blobs".into(),
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let _store = store("tdirect").await;
    for name in ["OBJ_tdirect_blobs", "OBJ_tdirect_components"] {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert!(!info.config.allow_direct, "{name} still allows direct gets");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files() {
    let s = store("tfiles").await;
    let files = s.files().await.expect("the file buckets");
    let log = s
        .queues(Duration::from_secs(30), Duration::from_secs(120))
        .await
        .expect("the queue and log streams");
    c::files_all(&files, &log).await;
}

/// Two nodes (two connections) writing new files into one folder at once:
/// every name is listed on both, each write's event is routed once, and a
/// file written through one node reads through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_across_nodes() {
    use wasmgrid_store::changelog::ChangeLog;
    use wasmgrid_store::files::{DataFiles, FileWrite};
    let a = store("tfiles2").await.files().await.expect("node a");
    let b_store = store("tfiles2").await;
    let b = b_store.files().await.expect("node b");
    let write = |i: usize| FileWrite {
        event: Some(format!(r#"{{"id":"{i}"}}"#).into_bytes()),
        ..text_file(&format!("o/shared/in/f{i:03}"), &i.to_string())
    };
    let on_a = async {
        for i in (0..40).step_by(2) {
            a.write(&[write(i)]).await.unwrap();
        }
    };
    let on_b = async {
        for i in (1..40).step_by(2) {
            b.write(&[write(i)]).await.unwrap();
        }
    };
    futures::join!(on_a, on_b);
    for node in [&a, &b] {
        let level = node
            .list_level("o/shared/in/", "o/shared/in/", 100)
            .await
            .unwrap();
        assert_eq!(level.entries.len(), 40, "{:?}", level.entries);
        assert_eq!(node.count_tree("o/shared/").await.unwrap(), 40);
    }
    let got = b.read("o/shared/in/f010").await.unwrap().unwrap();
    assert_eq!(got.inline.as_deref(), Some(&b"10"[..]));
    // The router (on node b) routes each write's event once.
    let log = b_store
        .queues(Duration::from_secs(30), Duration::from_secs(120))
        .await
        .unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ids.len() < 40 && std::time::Instant::now() < deadline {
        let read = log.read(100).await.unwrap();
        for e in &read.entries {
            assert!(ids.insert(e.event.clone()), "routed twice: {:?}", e.event);
        }
        if let Some(upto) = read.upto {
            log.ack(upto).await.unwrap();
        }
    }
    assert_eq!(ids.len(), 40);
}

/// A writer that died between applying a new file and listing it leaves
/// the file unlisted until the router repairs it; the next write of that
/// path (a batch job re-running the file on another node) lists it before it
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_lists_a_file_its_first_writer_left_unlisted() {
    use wasmgrid_store::files::DataFiles;
    let files = store("tunlisted").await.files().await.expect("files");
    let write = text_file("o/c/out/n001.txt", "1");
    files.write(std::slice::from_ref(&write)).await.unwrap();
    // What the dead writer left: the value applied, the listing key missing.
    let first = cluster().urls.split(',').next().unwrap().to_string();
    let client = async_nats::connect(first).await.unwrap();
    let dirs = async_nats::jetstream::new(client)
        .get_key_value("tunlisted_dirs")
        .await
        .unwrap();
    dirs.purge("o.c.out.n001=txt").await.unwrap();
    let listed = |files: &wasmgrid_store_nats::NatsFiles| {
        let files = files.clone();
        async move {
            files
                .list_level("o/c/out/", "o/c/out/", 10)
                .await
                .unwrap()
                .entries
                .len()
        }
    };
    assert_eq!(listed(&files).await, 0, "the test removed the listing key");
    files.write(std::slice::from_ref(&write)).await.unwrap();
    assert_eq!(listed(&files).await, 1, "the overwrite lists the file");
}

/// A deleted file's tombstone stays until the sweep finds its delete old
/// enough, then goes (the path reads and lists as missing either way, and
/// can be written again); a path written again after its delete keeps its
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_of_old_deletes_are_swept() {
    use wasmgrid_store::changelog::ChangeLog;
    use wasmgrid_store::files::{DataFiles, FileRecord};
    let s = store("ttombs").await;
    let files = s.files().await.expect("files");
    let log = s
        .queues(Duration::from_secs(30), Duration::from_secs(120))
        .await
        .expect("log");
    let write = |name: &str| text_file(&format!("o/c/t/{name}"), name);
    // Routes every logged change (the router records deletes for the sweep).
    let route_all = || async {
        loop {
            let read = log.read(100).await.unwrap();
            match read.upto {
                Some(upto) => log.ack(upto).await.unwrap(),
                None => break,
            }
        }
    };
    let first = cluster().urls.split(',').next().unwrap().to_string();
    let raw = async_nats::jetstream::new(async_nats::connect(first).await.unwrap())
        .get_key_value("ttombs_files")
        .await
        .unwrap();
    let no_events = |_: &str, _: &FileRecord| None;
    // Nothing recorded yet: nothing to sweep.
    assert_eq!(files.sweep_tombstones(Duration::ZERO).await.unwrap(), 0);
    files.write(&[write("a"), write("b")]).await.unwrap();
    files.delete("o/c/t/a", &no_events).await.unwrap();
    files.delete("o/c/t/b", &no_events).await.unwrap();
    files.write(&[write("b")]).await.unwrap();
    route_all().await;
    assert!(
        raw.entry("o.c.t.a").await.unwrap().is_some(),
        "a's tombstone"
    );

    // Too young: nothing goes.
    assert_eq!(
        files
            .sweep_tombstones(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert!(raw.entry("o.c.t.a").await.unwrap().is_some());
    // Old enough: a's tombstone goes; b, written again, stays.
    assert_eq!(files.sweep_tombstones(Duration::ZERO).await.unwrap(), 1);
    assert!(
        raw.entry("o.c.t.a").await.unwrap().is_none(),
        "a's tombstone swept"
    );
    assert!(files.read("o/c/t/a").await.unwrap().is_none());
    let b = files.read("o/c/t/b").await.unwrap().expect("b stays");
    assert_eq!(b.inline.as_deref(), Some(&b"b"[..]));
    // The deletes are forgotten: a second sweep has nothing to do.
    assert_eq!(files.sweep_tombstones(Duration::ZERO).await.unwrap(), 0);
    // The path is free again.
    files.write(&[write("a")]).await.unwrap();
    let level = files.list_level("o/c/t/", "o/c/t/", 10).await.unwrap();
    assert_eq!(level.entries.len(), 2, "{:?}", level.entries);
    assert_eq!(
        files
            .read("o/c/t/a")
            .await
            .unwrap()
            .unwrap()
            .inline
            .as_deref(),
        Some(&b"a"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_queue() {
    let s = store("tjobs").await;
    let jobs = s.job_queue().await.expect("the job buckets");
    let files = s.files().await.expect("the file buckets");
    c::jobqueue_all(&jobs, &s, &files).await;
}
