//! Cluster mode (issue 15) end to end: real `wasmgrid serve --cluster`
//! processes on one real 3-server JetStream cluster (replicas 3), started
//! once for this test binary; each test uses its own stream prefix, so its
//! own cluster of nodes.

#[path = "../../benches/support/guests.rs"]
mod guests;
// The integration tests' helpers; not all of them are used here.
#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;

use reqwest::Method;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::*;
use wasmgrid_store_nats::testing::Cluster;

static NATS: OnceLock<Cluster> = OnceLock::new();

fn nats() -> &'static Cluster {
    NATS.get_or_init(|| Cluster::start().expect("start the NATS test cluster"))
}

/// A cluster's shared parts: its key file and prefix, and the nodes' data
/// directories.
struct TestCluster {
    dir: tempfile::TempDir,
    prefix: String,
    nodes: usize,
    urls: String,
}

impl TestCluster {
    fn new(prefix: &str) -> TestCluster {
        Self::on(prefix, &nats().urls)
    }

    /// A cluster of nodes on the NATS servers at `urls`.
    fn on(prefix: &str, urls: &str) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(bin())
            .args(["cluster", "new-key"])
            .arg(dir.path().join("cluster.key"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCluster {
            dir,
            prefix: prefix.to_string(),
            nodes: 0,
            urls: urls.to_string(),
        }
    }

    /// Starts one more node.
    fn node(&mut self) -> Server {
        self.node_with(&[])
    }

    /// Starts one more node with extra `serve` flags.
    fn node_with(&mut self, extra: &[&str]) -> Server {
        self.nodes += 1;
        let data_dir = self.dir.path().join(format!("node{}", self.nodes));
        std::fs::create_dir_all(&data_dir).unwrap();
        let key = self.dir.path().join("cluster.key");
        Server::start_in(
            &data_dir,
            &[
                "--cluster",
                &self.urls,
                "--cluster-key",
                key.to_str().unwrap(),
                "--cluster-replicas",
                "3",
                "--cluster-prefix",
                &self.prefix,
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        )
    }
}

/// `f`'s value once it has one (60 s at most); on a timeout, the nodes' logs
/// go with the failure.
fn within<T>(nodes: &[&Server], what: &str, f: impl FnMut() -> Option<T>) -> T {
    within_for(nodes, what, Duration::from_secs(60), f)
}

/// [`within`] with its own time limit.
fn within_for<T>(
    nodes: &[&Server],
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            for (i, node) in nodes.iter().enumerate() {
                eprintln!("--- node {} log ---\n{}", i + 1, node.log());
            }
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deploy on A, invoke on B; a key made on A works on B; a file put through
/// A reads and lists through B; a topic made on A takes events on B.
#[test]
fn any_node_answers_any_call() {
    let mut cluster = TestCluster::new("tanynode");
    let a = cluster.node();
    let b = cluster.node();
    assert_eq!(a.key, b.key, "every node writes the cluster's admin key");

    a.deploy_ok("hello", "demo/hello@1.0.0", "");
    let deployed = Instant::now();
    let v = eventually(
        "node B invokes what A deployed",
        Duration::from_secs(10),
        || {
            let resp = b.call("demo/hello/1.0.0", "text/plain", "World");
            (resp.status() == 200).then(|| resp.json::<serde_json::Value>().unwrap())
        },
    );
    eprintln!("deploy on A to invocable on B: {:?}", deployed.elapsed());
    assert_eq!(v["result"], "Hello, World!", "{v}");

    let key = create_key(&a, "demo", &["invoke"]);
    eventually(
        "node B accepts A's new key",
        Duration::from_secs(10),
        || {
            let resp = b
                .http
                .post(format!("{}/v1/algo/demo/hello/1.0.0", b.url))
                .header("Authorization", format!("Simple {key}"))
                .header("Content-Type", "text/plain")
                .body("Key")
                .send()
                .unwrap();
            (resp.status() == 200).then_some(())
        },
    );

    let made = a
        .req(Method::POST, "/v1/data/demo")
        .json(&serde_json::json!({"name": "docs"}))
        .send()
        .unwrap();
    assert_eq!(made.status(), 200, "{}", made.text().unwrap_or_default());
    let put = a
        .req(Method::PUT, "/v1/data/demo/docs/notes/hello.txt")
        .header("Content-Type", "text/plain")
        .body("written through A")
        .send()
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().unwrap_or_default());
    let got = b
        .req(Method::GET, "/v1/data/demo/docs/notes/hello.txt")
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().unwrap(), "written through A");
    let listed = json(
        b.req(Method::GET, "/v1/data/demo/docs").send().unwrap(),
        200,
    );
    assert_eq!(listed["folders"][0]["name"], "notes", "{listed}");
    let listed = json(
        b.req(Method::GET, "/v1/data/demo/docs/notes")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(listed["files"][0]["filename"], "hello.txt", "{listed}");

    // An ACL changed through A takes effect on B, whose collection cache
    // follows the bucket: public, read by another owner through B (so B
    // caches it), then private.
    let bob = create_key(&a, "bob", &["data:read"]);
    let bob_reads_on_b = || {
        b.http
            .get(format!("{}/v1/data/demo/docs/notes/hello.txt", b.url))
            .header("Authorization", format!("Simple {bob}"))
            .send()
            .unwrap()
            .status()
    };
    let acl = |read: serde_json::Value| {
        let resp = a
            .req(Method::PATCH, "/v1/data/demo/docs")
            .json(&serde_json::json!({"acl": {"read": read}}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    };
    acl(serde_json::json!(["user://*"]));
    eventually(
        "B serves the collection made public on A",
        Duration::from_secs(10),
        || (bob_reads_on_b() == 200).then_some(()),
    );
    acl(serde_json::json!([]));
    eventually(
        "B refuses the collection made private on A",
        Duration::from_secs(10),
        || (bob_reads_on_b() == 404).then_some(()),
    );

    // Both nodes see the cluster: each other's heartbeats, the servers and
    // the streams; the CLI prints it.
    let status = eventually("both nodes' heartbeats", Duration::from_secs(15), || {
        let v = json(a.req(Method::GET, "/v1/cluster").send().unwrap(), 200);
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        (nodes.len() == 2 && nodes.iter().all(|n| n["address"].is_string())).then_some(v)
    });
    assert_eq!(status["mode"], "cluster", "{status}");
    assert_eq!(status["replicas"], 3, "{status}");
    assert_eq!(status["nats"]["version"], "2.9.10", "{status}");
    let addresses: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["address"].as_str())
        .collect();
    assert!(
        addresses.iter().any(|x| a.url.ends_with(x))
            && addresses.iter().any(|x| b.url.ends_with(x)),
        "{status}"
    );
    assert!(
        status["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "KV_tanynode_files"),
        "{status}"
    );
    let out = Command::new(bin())
        .args(["cluster", "status", "--data-dir"])
        .arg(&b.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("(this node)") && text.contains("KV_tanynode_files"),
        "{text}"
    );
    let ready = b.http.get(format!("{}/readyz", b.url)).send().unwrap();
    assert_eq!(ready.status(), 200);

    let topic = json(a.req(Method::PUT, "/v1/topics/orders").send().unwrap(), 201);
    let topic_key = topic["keys"]["key1"].as_str().unwrap().to_string();
    eventually(
        "node B takes events for A's topic",
        Duration::from_secs(10),
        || {
            let resp = b
            .http
            .post(format!("{}/v1/topics/orders/events", b.url))
            .header("aeg-sas-key", &topic_key)
            .header("Content-Type", "application/cloudevents+json")
            .body(
                serde_json::json!({"specversion": "1.0", "id": "e1", "source": "/t", "type": "t"})
                    .to_string(),
            )
            .send()
            .unwrap();
            (resp.status() == 200).then_some(())
        },
    );
}

/// A node without its key file, or without a reachable NATS, refuses to
/// start and says what to fix; a node on the embedded store says so.
#[test]
fn a_node_refuses_to_start_without_its_key_or_its_servers() {
    let embedded = Server::start();
    let v = json(
        embedded.req(Method::GET, "/v1/cluster").send().unwrap(),
        200,
    );
    assert_eq!(v, serde_json::json!({"mode": "embedded"}));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--cluster", "nats://127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cluster-key") && err.contains("new-key"),
        "{err}"
    );

    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "0".repeat(64)).unwrap();
    let out = Command::new(bin())
        .args(["serve", "--cluster", "nats://127.0.0.1:1", "--cluster-key"])
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach NATS at nats://127.0.0.1:1")
            && err.contains("nats-server running"),
        "{err}"
    );
}

/// Seed 000 across nodes: a subscription made on B, an algorithm deployed on
/// A, a file put through A; the pipeline's output reads through B.
#[test]
fn seed_000_pipeline_runs_across_nodes() {
    let mut cluster = TestCluster::new("tseed0");
    let a = cluster.node();
    let b = cluster.node();
    a.deploy_ok(
        "csv-summary",
        "demo/csv-summary@1.0.0",
        "grant=data://demo/uploads:read&grant=data://demo/results:write",
    );
    // Made on B; A knows it before the file is written.
    subscribe_across(
        &b,
        &a,
        "system.data",
        "csv-batch-a",
        serde_json::json!({
            "destination": {"algorithm": "demo/csv-summary"},
            "filter": {
                "includedEventTypes": ["wasmgrid.data.FileCreated"],
                "subjectBeginsWith": "/collections/demo/uploads/files/batch-a/",
                "subjectEndsWith": ".csv"
            }
        }),
    );
    for (path, body) in [
        ("demo/uploads/batch-a/one.csv", "a,b,c\n1,2,3\n4,5,6\n"),
        ("demo/uploads/batch-a/notes.txt", "not a csv\n"),
    ] {
        let resp = a
            .req(Method::PUT, &format!("/v1/data/{path}"))
            .header("Content-Type", "text/csv")
            .body(body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "put {path}: {}", resp.status());
    }
    let summary = within(&[&a, &b], "one.csv's summary, read on B", || {
        let resp = b
            .req(Method::GET, "/v1/data/demo/results/one.csv.summary.json")
            .send()
            .ok()?;
        (resp.status() == 200).then(|| resp.json::<serde_json::Value>().unwrap())
    });
    assert_eq!(summary["rows"], 2, "{summary}");
    assert_eq!(
        summary["trigger"]["subject"],
        "/collections/demo/uploads/files/batch-a/one.csv"
    );
    let missing = b
        .req(Method::GET, "/v1/data/demo/results/notes.txt.summary.json")
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// kill -9 a node working on a job of 2,000 files (with the other node: the
/// job's shards are shared): the job completes on the survivor once the
/// dead node's leases lapse, every input gets its output, nothing is
/// counted twice, and no file finished before the kill runs again (its
/// output keeps its time).
#[test]
fn a_job_completes_when_its_node_dies() {
    let mut cluster = TestCluster::new("tjobkill");
    let fast_takeover = ["--cluster-lease", "5"];
    let mut a = cluster.node_with(&fast_takeover);
    let b = cluster.node_with(&fast_takeover);
    a.deploy_ok("sleep", "demo/sleep@1.0.0", "");
    const FILES: usize = 2000;
    std::thread::scope(|scope| {
        for t in 0..8 {
            let a = &a;
            scope.spawn(move || {
                for i in (t..FILES).step_by(8) {
                    let resp = a
                        .req(Method::PUT, &format!("/v1/data/demo/naps/in/n{i:04}.txt"))
                        .header("Content-Type", "text/plain")
                        .body("20")
                        .send()
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            });
        }
    });
    let job = json(
        a.req(Method::POST, "/v1/algo/demo/sleep/jobs")
            .json(&serde_json::json!({
                "input": "data://demo/naps/in/",
                "output": "data://demo/naps-out/",
                "maxConcurrency": 4
            }))
            .send()
            .unwrap(),
        202,
    );
    let id = job["id"].as_str().unwrap().to_string();
    let get = |s: &Server| {
        json(
            s.req(Method::GET, &format!("/v1/jobs/{id}"))
                .send()
                .unwrap(),
            200,
        )
    };
    // Every output in the folder: name -> last_modified.
    let outputs = |s: &Server| {
        let mut out = std::collections::HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let mut path = "/v1/data/demo/naps-out?limit=1000".to_string();
            if let Some(m) = &marker {
                path.push_str(&format!("&marker={m}"));
            }
            let page = json(s.req(Method::GET, &path).send().unwrap(), 200);
            for f in page["files"].as_array().into_iter().flatten() {
                out.insert(
                    f["filename"].as_str().unwrap_or_default().to_string(),
                    f["last_modified"].as_str().unwrap_or_default().to_string(),
                );
            }
            match page["marker"].as_str() {
                Some(m) => marker = Some(m.to_string()),
                None => return out,
            }
        }
    };
    // The files finished so far (their progress is written after their output).
    let finished = |s: &Server| {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut path = format!("/v1/jobs/{id}/files?limit=1000");
            if let Some(m) = &marker {
                path.push_str(&format!("&marker={m}"));
            }
            let page = json(s.req(Method::GET, &path).send().unwrap(), 200);
            for f in page["files"].as_array().into_iter().flatten() {
                let file = f["file"].as_str().unwrap_or_default();
                out.push(file.trim_start_matches("data://demo/naps/in/").to_string());
            }
            match page["marker"].as_str() {
                Some(m) => marker = Some(m.to_string()),
                None => return out,
            }
        }
    };
    let before = within(&[&a, &b], "200 files done", || {
        let j = get(&a);
        (j["counts"]["succeeded"].as_u64().unwrap_or(0) >= 200).then_some(j)
    });
    assert_eq!(before["status"], "Running", "{before}");
    let done_before = finished(&a);
    let outputs_before = outputs(&a);
    a.kill9();
    let killed = Instant::now();
    let done = within_for(
        &[&b],
        "the job completed on B",
        Duration::from_secs(180),
        || {
            let j = get(&b);
            (j["status"] == "Completed").then_some(j)
        },
    );
    eprintln!(
        "job taken over and completed {:?} after the kill ({} files finished before it): {done}",
        killed.elapsed(),
        done_before.len()
    );
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    assert_eq!(done["counts"]["succeeded"], FILES, "{done}");
    let outputs_after = outputs(&b);
    assert_eq!(
        outputs_after.len(),
        FILES + 1,
        "every input's output and the summary"
    );
    assert!(done_before.len() >= 200, "{}", done_before.len());
    for name in &done_before {
        assert_eq!(
            outputs_after.get(name),
            outputs_before.get(name),
            "{name} was finished before the kill and must not run again"
        );
    }
}

/// A folder job's files are shared by the live nodes: its shards (its
/// `maxConcurrency`) run under their own leases, a node takes its share,
/// and every file is processed once in all (the invocation counters of the
/// two nodes add up to the files, and each has some).
#[test]
fn both_nodes_work_on_one_job() {
    let mut cluster = TestCluster::new("tjobshare");
    let fast_scan = ["--cluster-lease", "5"];
    let (a, b) = two_nodes_counting_each_other(&mut cluster, &fast_scan);
    a.deploy_ok("sleep", "demo/sleep@1.0.0", "");
    const FILES: usize = 60;
    for i in 0..FILES {
        let resp = a
            .req(Method::PUT, &format!("/v1/data/demo/shared/in/n{i:03}.txt"))
            .header("Content-Type", "text/plain")
            .body("150")
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let job = json(
        a.req(Method::POST, "/v1/algo/demo/sleep/jobs")
            .json(&serde_json::json!({
                "input": "data://demo/shared/in/",
                "output": "data://demo/shared-out/",
                "maxConcurrency": 2
            }))
            .send()
            .unwrap(),
        202,
    );
    let id = job["id"].as_str().unwrap().to_string();
    let done = within(&[&a, &b], "the job completed", || {
        let j = json(
            b.req(Method::GET, &format!("/v1/jobs/{id}"))
                .send()
                .unwrap(),
            200,
        );
        (j["status"] == "Completed").then_some(j)
    });
    assert_eq!(done["counts"]["succeeded"], FILES, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    let calls = |s: &Server| {
        metric(
            s,
            "wasmgrid_invocations_total",
            &["algorithm=\"demo/sleep/1.0.0\"", "outcome=\"ok\""],
        )
        .unwrap_or(0.0) as usize
    };
    let (on_a, on_b) = (calls(&a), calls(&b));
    eprintln!("files run on A: {on_a}, on B: {on_b}");
    assert_eq!(on_a + on_b, FILES, "each file once in all");
    assert!(
        on_a > 0 && on_b > 0,
        "both nodes worked: A {on_a}, B {on_b}"
    );
    let summary = json(
        b.req(Method::GET, "/v1/data/demo/shared-out/_summary.json")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(summary["status"], "Completed", "{summary}");
}

/// Two nodes started with `flags`, once each has counted both as live (the
/// heartbeats list both, and each node's next count, every 5 s, has run).
fn two_nodes_counting_each_other(cluster: &mut TestCluster, flags: &[&str]) -> (Server, Server) {
    let a = cluster.node_with(flags);
    let b = cluster.node_with(flags);
    for node in [&a, &b] {
        eventually("both nodes' heartbeats", Duration::from_secs(20), || {
            let v = json(node.req(Method::GET, "/v1/cluster").send().unwrap(), 200);
            (v["nodes"].as_array().map_or(0, Vec::len) == 2).then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(6));
    (a, b)
}

/// A webhook receiver for many connections at once: counts the deliveries
/// of each event id (answering 200).
fn counting_receiver() -> (String, Seen) {
    let (url, seen, _) = slow_receiver(Duration::ZERO);
    (url, seen)
}

/// [`counting_receiver`] that holds each request for `hold` before it
/// answers, and counts the most requests it held at once.
fn slow_receiver(hold: Duration) -> (String, Seen, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let busiest = std::sync::Arc::new(AtomicUsize::new(0));
    let busy = std::sync::Arc::new(AtomicUsize::new(0));
    let (seen2, busiest2) = (seen.clone(), busiest.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (seen, busiest, busy) = (seen2.clone(), busiest2.clone(), busy.clone());
            std::thread::spawn(move || {
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
                    if !hold.is_zero() {
                        let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                        busiest.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(hold);
                        busy.fetch_sub(1, Ordering::SeqCst);
                    }
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                        && let Some(id) = v["id"].as_str()
                    {
                        *seen.lock().unwrap().entry(id.to_string()).or_insert(0) += 1;
                    }
                    let mut w = stream.try_clone().unwrap();
                    let _ = write!(w, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (url, seen, busiest)
}

/// Two live nodes share a subscription's `maxConcurrentDeliveries`: each
/// runs at most its half (rounded up), so a slow destination never sees
/// more than the limit at once although both nodes deliver.
#[test]
fn live_nodes_share_max_concurrent_deliveries() {
    let mut cluster = TestCluster::new("tshare");
    let flags = ["--allow-private-webhooks"];
    let (a, b) = two_nodes_counting_each_other(&mut cluster, &flags);
    let topic = json(a.req(Method::PUT, "/v1/topics/slow").send().unwrap(), 201);
    let topic_key = topic["keys"]["key1"].as_str().unwrap().to_string();
    let (url, seen, busiest) = slow_receiver(Duration::from_millis(400));
    subscribe_across(
        &a,
        &b,
        "slow",
        "hook",
        serde_json::json!({"destination": {"webhook": url}, "maxConcurrentDeliveries": 2}),
    );
    let ids: Vec<String> = (0..16).map(|i| format!("slow-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        let resp = node
            .http
            .post(format!("{}/v1/topics/slow/events", node.url))
            .header("aeg-sas-key", &topic_key)
            .header("Content-Type", "application/cloudevents+json")
            .body(
                serde_json::json!({"specversion": "1.0", "id": id, "source": "/slow", "type": "t"})
                    .to_string(),
            )
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    }
    within_for(
        &[&a, &b],
        "every slow event delivered",
        Duration::from_secs(60),
        || {
            let seen = seen.lock().unwrap();
            ids.iter().all(|id| seen.contains_key(id)).then_some(())
        },
    );
    let most = busiest.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} deliveries at once for maxConcurrentDeliveries 2 on two nodes"
    );
}

/// Seed 003 across nodes: a filtered subscription made on A, events published
/// to B, retries and the dead letter (listed on A), the fix deployed on B and
/// the redrive asked of A.
#[test]
fn seed_003_retry_dead_letter_and_redrive_across_nodes() {
    let mut cluster = TestCluster::new("tseed3");
    let flags = ["--event-time-scale", "0.001"];
    let a = cluster.node_with(&flags);
    let b = cluster.node_with(&flags);
    let topic = json(
        a.req(Method::PUT, "/v1/topics/inference").send().unwrap(),
        201,
    );
    let key = topic["keys"]["key1"].as_str().unwrap().to_string();
    // 1.0.0 has no write grant: every recording fails, reported as transient.
    a.deploy_ok("event-recorder", "demo/recorder@1.0.0", "");
    let sub = a
        .req(Method::PUT, "/v1/topics/inference/subscriptions/confident")
        .json(&serde_json::json!({
            "destination": {"algorithm": "demo/recorder/1"},
            "filter": {
                "advancedFilters": [
                    {"operatorType": "NumberGreaterThan", "key": "data.confidence", "value": 0.9}
                ]
            },
            "retryPolicy": {"maxDeliveryAttempts": 3},
            "deadLetter": {"collection": "data://.my/deadletters/"}
        }))
        .send()
        .unwrap();
    assert_eq!(sub.status(), 201, "{}", sub.text().unwrap_or_default());
    let event = |id: &str, confidence: f64| serde_json::json!({"specversion": "1.0", "id": id, "source": "/t", "type": "t", "data": {"confidence": confidence}});
    let report = within(&[&a, &b], "node B routing to A's subscription", || {
        let resp = b
            .http
            .post(format!("{}/v1/topics/inference/events", b.url))
            .header("aeg-sas-key", &key)
            .header("Content-Type", "application/cloudevents-batch+json")
            .body(serde_json::json!([event("e1", 0.95), event("e2", 0.5)]).to_string())
            .send()
            .unwrap();
        if resp.status() != 200 {
            return None;
        }
        let v: serde_json::Value = resp.json().unwrap();
        (v["deliveries"] == 1).then_some(v)
    });
    assert_eq!(report["accepted"], 2, "{report}");
    let dead = within(&[&a, &b], "the dead letter, listed on A", || {
        let v = json(
            a.req(
                Method::GET,
                "/v1/topics/inference/subscriptions/confident/deadletters",
            )
            .send()
            .unwrap(),
            200,
        );
        let list = v["deadLetters"].as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["deadLetterReason"], "MaxDeliveryAttemptsExceeded");
    assert_eq!(dead[0]["deliveryAttempts"], 3);
    assert_eq!(dead[0]["event"]["id"], "e1");

    b.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.1",
        "grant=data://demo/received:write",
    );
    // Redrive through A once A resolves `demo/recorder/1` to 1.0.1.
    within(&[&a, &b], "A knows the fixed version", || {
        let resp = a
            .req(Method::GET, "/v1/algorithms/demo/recorder/versions/1.0.1")
            .send()
            .unwrap();
        (resp.status() == 200).then_some(())
    });
    let redriven = json(
        a.req(
            Method::POST,
            "/v1/topics/inference/subscriptions/confident/redrive",
        )
        .json(&serde_json::json!({}))
        .send()
        .unwrap(),
        200,
    );
    assert_eq!(redriven["redriven"], 1, "{redriven}");
    let got = within(&[&a, &b], "the redriven delivery's file, read on B", || {
        let resp = b
            .req(Method::GET, "/v1/data/demo/received/e1.json")
            .send()
            .ok()?;
        (resp.status() == 200).then(|| resp.json::<serde_json::Value>().unwrap())
    });
    assert_eq!(got["data"]["confidence"], 0.95);
    let e2 = b
        .req(Method::GET, "/v1/data/demo/received/e2.json")
        .send()
        .unwrap();
    assert_eq!(e2.status(), 404);
}

/// Creates subscription `topic/name` through `on` and waits until `other`
/// knows it (it follows the subscriptions bucket).
fn subscribe_across(on: &Server, other: &Server, topic: &str, name: &str, spec: serde_json::Value) {
    let path = format!("/v1/topics/{topic}/subscriptions/{name}");
    let sub = on.req(Method::PUT, &path).json(&spec).send().unwrap();
    assert_eq!(sub.status(), 201, "{}", sub.text().unwrap_or_default());
    eventually(
        "the other node knows the subscription",
        Duration::from_secs(10),
        || (other.req(Method::GET, &path).send().unwrap().status() == 200).then_some(()),
    );
}

/// Deliveries counted per event id, by [`counting_receiver`].
type Seen = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

/// Topic `load` made on `first`, with a webhook subscription to a counting
/// receiver, known to `second` too; the topic's key and the counts.
fn load_topic(first: &Server, second: &Server) -> (String, Seen) {
    let topic = json(
        first.req(Method::PUT, "/v1/topics/load").send().unwrap(),
        201,
    );
    let topic_key = topic["keys"]["key1"].as_str().unwrap().to_string();
    let (url, seen) = counting_receiver();
    subscribe_across(
        first,
        second,
        "load",
        "hook",
        serde_json::json!({"destination": {"webhook": url}, "maxConcurrentDeliveries": 32}),
    );
    (topic_key, seen)
}

/// What publishers share: the ids acknowledged so far, and the publishes
/// that failed (retried or given up).
#[derive(Clone, Default)]
struct Acked {
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Acked {
    fn len(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

/// Publishes `batches` batches of 100 events (ids `<name>-<batch>-<i>`) to
/// topic `load` on `node`, pausing `pace` after each, on a thread. A failed
/// batch is retried for up to `retry_for` (zero: the publisher stops there,
/// as when its node is gone); only acknowledged batches are recorded.
fn publish_load(
    node: &Server,
    topic_key: &str,
    name: &'static str,
    batches: usize,
    pace: Duration,
    retry_for: Duration,
    acked: &Acked,
) -> std::thread::JoinHandle<()> {
    let (url, key, acked) = (node.url.clone(), topic_key.to_string(), acked.clone());
    let http = node.http.clone();
    std::thread::spawn(move || {
        for batch in 0..batches {
            let ids: Vec<String> = (0..100).map(|i| format!("{name}-{batch}-{i}")).collect();
            let body = serde_json::Value::Array(
                ids.iter()
                    .map(|id| serde_json::json!({"specversion": "1.0", "id": id, "source": "/load", "type": "t"}))
                    .collect(),
            )
            .to_string();
            let deadline = Instant::now() + retry_for;
            loop {
                let sent = http
                    .post(format!("{url}/v1/topics/load/events"))
                    .header("aeg-sas-key", &key)
                    .header("Content-Type", "application/cloudevents-batch+json")
                    .body(body.clone())
                    .send();
                if sent.is_ok_and(|r| r.status() == 200) {
                    acked.ids.lock().unwrap().extend(ids);
                    std::thread::sleep(pace);
                    break;
                }
                acked
                    .failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    })
}

/// Waits until every acknowledged id was delivered; prints the deliveries
/// and duplicates (at-least-once delivery allows them).
fn all_delivered(nodes: &[&Server], acked: &Acked, seen: &Seen, since: Instant, what: &str) {
    let ids: Vec<String> = acked.ids.lock().unwrap().clone();
    // Deliveries whose acknowledgement was lost with a server come back
    // after the lease; on two loaded cores give them time.
    within_for(
        nodes,
        "every acknowledged event delivered",
        Duration::from_secs(120),
        || {
            let seen = seen.lock().unwrap();
            ids.iter().all(|id| seen.contains_key(id)).then_some(())
        },
    );
    let seen = seen.lock().unwrap();
    let deliveries: u32 = seen.values().sum();
    eprintln!(
        "{what}: {} events acknowledged ({} through a, {} through b; {} failed publishes), all delivered {:?} after the kill; {} deliveries, {} duplicates, {} delivered but not acknowledged to the publisher",
        ids.len(),
        ids.iter().filter(|i| i.starts_with('a')).count(),
        ids.iter().filter(|i| i.starts_with('b')).count(),
        acked.failures.load(std::sync::atomic::Ordering::Relaxed),
        since.elapsed(),
        deliveries,
        deliveries as usize - seen.len(),
        seen.len().saturating_sub(ids.len())
    );
}

/// kill -9 one of two nodes while 10,000 events are published to both:
/// every event a node acknowledged is delivered (the dead node's leased
/// deliveries go to the other once their lease lapses); duplicates are
/// reported, not forbidden (delivery is at least once).
#[test]
fn acknowledged_events_survive_a_node_killed_under_load() {
    let mut cluster = TestCluster::new("tkillev");
    let flags = ["--cluster-lease", "5", "--allow-private-webhooks"];
    let mut a = cluster.node_with(&flags);
    let b = cluster.node_with(&flags);
    let (topic_key, seen) = load_topic(&b, &a);
    let acked = Acked::default();
    let (pace, no_retry) = (Duration::ZERO, Duration::ZERO);
    let on_a = publish_load(&a, &topic_key, "a", 50, pace, no_retry, &acked);
    let on_b = publish_load(&b, &topic_key, "b", 50, pace, no_retry, &acked);
    eventually(
        "a fifth of the 10,000 events acknowledged",
        Duration::from_secs(120),
        || (acked.len() >= 2_000).then_some(()),
    );
    a.kill9();
    let killed = Instant::now();
    on_a.join().unwrap();
    on_b.join().unwrap();
    all_delivered(&[&b], &acked, &seen, killed, "node a killed");
}

/// Stop one of the three nats-servers (kill -9) while events are published
/// to two nodes (replicas 3): every acknowledged event is delivered. A
/// publish that fails while the streams elect new leaders is retried, as a
/// client would; only acknowledged batches count. This test runs its own
/// NATS cluster (the shared one must stay whole for the other tests).
///
/// What it caught: a no-wait pull request sent to a consumer leader that
/// died is never answered, and async-nats sets no timer on it, so a
/// subscription's worker waited forever (now `next_or_stall`); and leases
/// read through ephemeral consumers, which nats-server up to 2.11 may place
/// on the dead peer (now message gets).
#[test]
fn acknowledged_events_survive_a_nats_server_killed_under_load() {
    let own = Cluster::start().expect("a second NATS test cluster");
    let mut cluster = TestCluster::on("tkillnats", &own.urls);
    let flags = ["--cluster-lease", "5", "--allow-private-webhooks"];
    let a = cluster.node_with(&flags);
    let b = cluster.node_with(&flags);
    let (topic_key, seen) = load_topic(&a, &b);
    let acked = Acked::default();
    // Spread over a few seconds, so the kill lands in the middle of it.
    let (pace, retry) = (Duration::from_millis(100), Duration::from_secs(60));
    let on_a = publish_load(&a, &topic_key, "a", 30, pace, retry, &acked);
    let on_b = publish_load(&b, &topic_key, "b", 30, pace, retry, &acked);
    eventually(
        "a sixth of the events acknowledged",
        Duration::from_secs(120),
        || (acked.len() >= 1_000).then_some(()),
    );
    own.kill_server(0).expect("kill nats-server n0");
    let killed = Instant::now();
    on_a.join().unwrap();
    on_b.join().unwrap();
    assert_eq!(
        acked.len(),
        6_000,
        "a batch was never acknowledged within 60 s of retries"
    );
    all_delivered(&[&a, &b], &acked, &seen, killed, "nats-server n0 killed");
}
