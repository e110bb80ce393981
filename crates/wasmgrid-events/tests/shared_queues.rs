//! Two event-service "nodes" sharing one NATS JetStream cluster (issue 15):
//! topic and subscription records in NATS key/value buckets, delivery queues
//! and the change log in JetStream (`NatsQueues`), each node with its own
//! local store for the rest. Deliveries go to a webhook on loopback.
//!
//! - Events published through either node are delivered once each, and both
//!   nodes' workers take part.
//! - A node that dies mid-delivery (its runtime dropped: no acknowledgement,
//!   no goodbye) loses nothing: the other node delivers what it held once
//!   its leases end.

use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_core::data::DataService;
use wasmgrid_core::invoker::Invoker;
use wasmgrid_core::metrics::{Metrics, SubscriptionLabel};
use wasmgrid_core::registry::Registry;
use wasmgrid_engine::{Engine, EngineConfig};
use wasmgrid_events::{EventService, EventsConfig, SubscriptionSpec};
use wasmgrid_store::EmbeddedStore;
use wasmgrid_store::records::Records;
use wasmgrid_store_nats::NatsStore;
use wasmgrid_store_nats::testing::Cluster;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start().expect("start the NATS test cluster"))
}

/// How long a node holds an entry without an outcome before another may
/// take it over.
const LEASE: Duration = Duration::from_secs(2);

fn admin() -> Caller {
    Caller {
        key_id: "test".into(),
        owner: "test".into(),
        scopes: vec![Scope::Admin],
        compat: Default::default(),
        hops: 0,
    }
}

/// A webhook receiver: one thread per connection. While `hold` is set it
/// reads requests and never answers them. Otherwise it answers 500 to the
/// first request for an id starting `flaky` and to every request for an id
/// starting `bad` until `fixed` is set, and 200 to the rest, recording each
/// event id it answered 200.
struct Receiver {
    url: String,
    hold: Arc<AtomicBool>,
    /// Requests held unanswered.
    held: Arc<std::sync::atomic::AtomicUsize>,
    ids: Arc<Mutex<Vec<String>>>,
    fixed: Arc<AtomicBool>,
    /// Requests seen per event id.
    tries: Arc<Mutex<std::collections::HashMap<String, u32>>>,
}

fn receiver() -> Receiver {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hold = Arc::new(AtomicBool::new(false));
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let r = Receiver {
        url,
        hold,
        held,
        ids,
        fixed: Arc::new(AtomicBool::new(false)),
        tries: Arc::default(),
    };
    let shared = r.clone_handles();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let r = shared.clone_handles();
            std::thread::spawn(move || serve(stream, &r));
        }
    });
    r
}

impl Receiver {
    fn clone_handles(&self) -> Receiver {
        Receiver {
            url: self.url.clone(),
            hold: self.hold.clone(),
            held: self.held.clone(),
            ids: self.ids.clone(),
            fixed: self.fixed.clone(),
            tries: self.tries.clone(),
        }
    }

    fn status(&self, id: &str) -> u16 {
        let mut tries = self.tries.lock().unwrap();
        let n = tries.entry(id.to_string()).or_default();
        *n += 1;
        let fail = (id.starts_with("flaky") && *n == 1)
            || (id.starts_with("bad") && !self.fixed.load(Ordering::SeqCst));
        if fail { 500 } else { 200 }
    }
}

fn serve(stream: std::net::TcpStream, r: &Receiver) {
    let (hold, held, ids) = (&r.hold, &r.held, &r.ids);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if hold.load(Ordering::SeqCst) {
            // Never answered: the connection dies with its node.
            held.fetch_add(1, Ordering::SeqCst);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            return;
        }
        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = event["id"].as_str().unwrap_or_default().to_string();
        let status = r.status(&id);
        let mut w = stream.try_clone().unwrap();
        if write!(w, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").is_ok() && status == 200 {
            ids.lock().unwrap().push(id);
        }
    }
}

/// One node: the shared records and queues in NATS, the rest local.
struct Node {
    events: EventService,
    metrics: Arc<Metrics>,
    queues: Arc<wasmgrid_store_nats::NatsQueues>,
    _dir: tempfile::TempDir,
}

async fn node(prefix: &str) -> Node {
    node_with(prefix, 1.0).await
}

/// A node whose retry delays are scaled by `time_scale`.
async fn node_with(prefix: &str, time_scale: f64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let nats = Arc::new(
        NatsStore::connect(&cluster().urls, prefix, 3, None)
            .await
            .expect("connect to the test cluster"),
    );
    let queues = Arc::new(
        nats.queues(LEASE, Duration::from_secs(120))
            .await
            .expect("the queue streams"),
    );
    let local = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let records: Arc<dyn Records> = nats.clone();
    let engine = Arc::new(Engine::new(EngineConfig::default()).unwrap());
    let registry = Arc::new(
        Registry::open(records.clone(), nats.clone(), engine, dir.path(), &[])
            .await
            .unwrap(),
    );
    let metrics = Arc::new(Metrics::new());
    let invoker = Arc::new(Invoker::new(registry, metrics.clone()));
    let data = Arc::new(DataService::new(records.clone(), nats.clone(), local));
    let events = EventService::open(
        records,
        queues.clone(),
        queues.clone(),
        nats.clone(),
        invoker,
        data,
        metrics.clone(),
        EventsConfig {
            allow_private_webhooks: true,
            time_scale,
            follow_records: true,
            ..EventsConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    Node {
        events,
        metrics,
        queues,
        _dir: dir,
    }
}

impl Node {
    fn delivered(&self, sub: &str) -> u64 {
        self.metrics
            .events_delivered
            .get_or_create(&SubscriptionLabel {
                subscription: sub.to_string(),
            })
            .get()
    }
}

async fn subscribe(n: &Node, topic: &str, url: &str) {
    subscribe_with(n, topic, json!({"destination": {"webhook": url}})).await
}

async fn subscribe_with(n: &Node, topic: &str, mut spec: Value) {
    n.events.create_topic(&admin(), topic).await.unwrap();
    spec["maxConcurrentDeliveries"] = 4.into();
    let spec: SubscriptionSpec = serde_json::from_value(spec).unwrap();
    n.events
        .put_subscription(&admin(), topic, "hook", spec)
        .await
        .unwrap();
}

fn events(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("{tag}-{i}"), "source": "/shared",
                   "type": "test", "data": {"i": i}})
        })
        .collect()
}

/// Waits (at most `within`) until the receiver has every id in `want`.
async fn received_all(r: &Receiver, want: &HashSet<String>, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let got = r.ids.lock().unwrap().clone();
        let seen: HashSet<&String> = got.iter().collect();
        if want.iter().all(|id| seen.contains(id)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "delivered {} of {} within {within:?}",
            want.iter().filter(|id| seen.contains(id)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_deliver_each_event_once() {
    let r = receiver();
    let a = node("tshare").await;
    subscribe(&a, "orders", &r.url).await;
    let b = node("tshare").await;
    a.events.start();
    b.events.start();
    let mut want = HashSet::new();
    for round in 0..10 {
        for (name, n) in [("a", &a), ("b", &b)] {
            let batch = events(&format!("{name}{round}"), 10);
            want.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
            let report = n.events.publish("orders", batch).await.unwrap();
            assert_eq!(report.accepted, 10);
        }
    }
    let got = received_all(&r, &want, Duration::from_secs(30)).await;
    let duplicates = got.len() - got.iter().collect::<HashSet<_>>().len();
    assert_eq!(duplicates, 0, "no event delivered twice without a failure");
    // The receiver records an event as it answers; the node counts it once
    // it has read the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (da, db) = loop {
        let (da, db) = (a.delivered("orders/hook"), b.delivered("orders/hook"));
        if da + db >= 200 || Instant::now() > deadline {
            break (da, db);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(da + db, 200);
    assert!(da > 0 && db > 0, "both nodes delivered: a {da}, b {db}");
    a.events.shutdown().await;
    b.events.shutdown().await;
}

#[test]
fn a_node_that_dies_mid_delivery_loses_nothing() {
    let r = receiver();
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Node A runs on a runtime of its own, dropped below as a crash would end it.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let want: HashSet<String> = (0..20).map(|i| format!("c-{i}")).collect();
    r.hold.store(true, Ordering::SeqCst);
    doomed.block_on(async {
        let a = node("tcrash").await;
        subscribe(&a, "orders", &r.url).await;
        a.events.start();
        a.events.publish("orders", events("c", 20)).await.unwrap();
        // A leases what it can start (4) and sends them; the receiver holds them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.held.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "node A sent nothing within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // No shutdown, no acknowledgement: the node's tasks just stop.
        std::mem::forget(a);
    });
    doomed.shutdown_background();
    r.hold.store(false, Ordering::SeqCst);
    main.block_on(async {
        let b = node("tcrash").await;
        b.events.start();
        // Including those A held, which come back when their lease ends.
        let got = received_all(&r, &want, Duration::from_secs(30)).await;
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 20);
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.delivered("orders/hook") < 20 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(b.delivered("orders/hook"), 20);
        b.events.shutdown().await;
    });
}

/// Retries come back from the queue when due (to whichever node leases
/// first), a dead letter written on one node is listed and redriven on the
/// other, and the redriven events are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_letters_cross_nodes() {
    let r = receiver();
    // Event Grid's delays scaled by 1/100: 100 ms, then 300 ms.
    let a = node_with("tretry", 0.01).await;
    subscribe_with(
        &a,
        "orders",
        json!({"destination": {"webhook": r.url}, "retryPolicy": {"maxDeliveryAttempts": 2}}),
    )
    .await;
    let b = node_with("tretry", 0.01).await;
    a.events.start();
    b.events.start();
    let mut batch = events("flaky", 5);
    batch.extend(events("bad", 2));
    a.events.publish("orders", batch).await.unwrap();
    let flaky: HashSet<String> = (0..5).map(|i| format!("flaky-{i}")).collect();
    received_all(&r, &flaky, Duration::from_secs(30)).await;
    for id in &flaky {
        assert_eq!(
            r.tries.lock().unwrap()[id],
            2,
            "{id}: one failure, one success"
        );
    }
    // The bad ones fail twice and are dead-lettered; B lists them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (dead, _) = b
            .events
            .dead_letters(&admin(), "orders", "hook", None, 10)
            .await
            .unwrap();
        if dead.len() == 2 {
            break dead;
        }
        assert!(Instant::now() < deadline, "dead letters: {dead:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for d in &dead {
        assert_eq!(d["deadLetterReason"], "MaxDeliveryAttemptsExceeded", "{d}");
        assert_eq!(d["deliveryAttempts"], 2, "{d}");
        assert!(
            d["event"]["id"].as_str().unwrap().starts_with("bad-"),
            "{d}"
        );
    }
    // Fixed, redriven through B, delivered by either node.
    r.fixed.store(true, Ordering::SeqCst);
    assert_eq!(
        b.events
            .redrive(&admin(), "orders", "hook", None)
            .await
            .unwrap(),
        2
    );
    let bad: HashSet<String> = (0..2).map(|i| format!("bad-{i}")).collect();
    received_all(&r, &bad, Duration::from_secs(30)).await;
    let (left, _) = a
        .events
        .dead_letters(&admin(), "orders", "hook", None, 10)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    a.events.shutdown().await;
    b.events.shutdown().await;
}

/// A topic and subscription created on one node while the other runs reach
/// the other through the records watch; a deletion stops them there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_on_one_node_reach_the_other() {
    let r = receiver();
    let a = node("tfollow").await;
    let b = node("tfollow").await;
    a.events.start();
    b.events.start();
    let created = Instant::now();
    subscribe(&a, "orders", &r.url).await;
    // B accepts events for the topic and matches them once it has seen both.
    let mut want = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = 0;
    let visible = loop {
        let event = events(&format!("probe{probe}"), 1);
        probe += 1;
        if let Ok(report) = b.events.publish("orders", event.clone()).await
            && report.deliveries == 1
        {
            want.insert(event[0]["id"].as_str().unwrap().to_string());
            break created.elapsed();
        }
        assert!(Instant::now() < deadline, "B never saw the subscription");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("subscription visible on the other node after {visible:?}");
    let batch = events("followed", 50);
    want.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    assert_eq!(
        b.events.publish("orders", batch).await.unwrap().deliveries,
        50
    );
    received_all(&r, &want, Duration::from_secs(30)).await;

    a.events
        .delete_subscription(&admin(), "orders", "hook")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = b
            .events
            .publish("orders", events("after", 1))
            .await
            .unwrap();
        if report.deliveries == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still matches a deleted subscription"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.events.delete_topic(&admin(), "orders").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.events.publish("orders", events("gone", 1)).await.is_ok() {
        assert!(Instant::now() < deadline, "B still accepts a deleted topic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.events.shutdown().await;
    b.events.shutdown().await;
}

/// System-feed entries appended on one node are routed once, by the node
/// holding the router lease, to a subscription created on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_feed_entries_route_once_across_nodes() {
    use wasmgrid_store::changelog::{ChangeLog, Feed};
    let r = receiver();
    let a = node("tfeed").await;
    let b = node("tfeed").await;
    a.events.start();
    b.events.start();
    let spec: SubscriptionSpec =
        serde_json::from_value(json!({"destination": {"webhook": r.url}})).unwrap();
    b.events
        .put_subscription(&admin(), "system.jobs", "ends", spec)
        .await
        .unwrap();
    // One router for the installation: a node holds the lease `feed/router`,
    // so a third party cannot take it.
    use wasmgrid_store::leases::Leases;
    let outsider = NatsStore::connect(&cluster().urls, "tfeed", 3, None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(grant) = outsider
        .acquire("feed/router", Duration::from_secs(30))
        .await
        .unwrap()
    {
        outsider.release(grant).await.unwrap();
        assert!(Instant::now() < deadline, "no node took the router lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The router routes only once it has seen the subscription (both nodes
    // follow B's write).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut want = HashSet::new();
    for i in 0..10 {
        let id = format!("job{i}/completed");
        let event = json!({"specversion": "1.0", "id": id, "source": "/jobs",
                           "type": "wasmgrid.jobs.completed", "data": {"job": i}});
        a.queues
            .append(Feed::Jobs, &id, serde_json::to_vec(&event).unwrap().into())
            .await
            .unwrap();
        want.insert(id);
    }
    let appended = Instant::now();
    let got = received_all(&r, &want, Duration::from_secs(30)).await;
    eprintln!(
        "system feed: 10 entries delivered {:?} after the appends",
        appended.elapsed()
    );
    assert_eq!(got.len(), 10, "each routed once: {got:?}");
    a.events.shutdown().await;
    b.events.shutdown().await;
}
