//! The events CLI (`topic`, `sub`, `publish`, `deadletters`) and the
//! manifest's `[[collection]]`, `[[topic]]` and `[[subscription]]`, through the
//! real `wasmgrid` binary against a real server.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs `wasmgrid --data-dir DIR ARGS...`: (success, stdout, stderr).
fn wg(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("WASMGRID_URL")
        .env_remove("WASMGRID_KEY")
        .env_remove("WASMGRID_TOPIC_KEY")
        .output()
        .expect("run wasmgrid");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns its stdout.
fn wg_ok(data_dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = wg(data_dir, args);
    assert!(ok, "wasmgrid {args:?} failed: {err}\n{out}");
    out
}

fn get_json(s: &Server, path: &str) -> Option<Value> {
    let resp = s.req(Method::GET, path).send().ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().ok()
}

/// Topics, subscriptions from flags and from a file, publishing with the API
/// key and with a topic key, dead letters and redrive: the seed-003 story told
/// through the CLI.
#[test]
fn cli_manages_topics_subscriptions_and_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--event-time-scale", "0.001"]);
    let dir = s.data_dir.clone();

    let out = wg_ok(&dir, &["topic", "create", "inference"]);
    assert!(out.contains("created topic inference"), "{out}");
    assert!(
        out.contains(&format!("{}/v1/topics/inference/events", s.url)),
        "{out}"
    );
    let key1 = out
        .lines()
        .find_map(|l| l.strip_prefix("key1"))
        .map(str::trim)
        .expect("key1 line")
        .to_string();
    let (ok, out, err) = wg(&dir, &["topic", "create", "inference"]);
    assert!(
        ok && out.contains("already exists") && !out.contains("key1"),
        "{out}{err}"
    );
    let out = wg_ok(&dir, &["topic", "ls"]);
    assert!(
        out.contains("inference") && out.contains("system.data"),
        "{out}"
    );

    // 1.0.0 cannot write (no grant): every delivery fails as transient.
    s.deploy_ok("event-recorder", "demo/recorder@1.0.0", "");
    let out = wg_ok(
        &dir,
        &[
            "sub",
            "create",
            "inference",
            "confident",
            "--algorithm",
            "demo/recorder@1",
            "--types",
            "com.example.ai.InferenceCompleted",
            "--filter",
            "data.confidence>0.9",
            "--max-attempts",
            "2",
            "--dead-letter",
            "data://.my/deadletters/",
            "--concurrency",
            "4",
        ],
    );
    assert!(
        out.contains("subscription inference/confident created"),
        "{out}"
    );
    let sub = get_json(&s, "/v1/topics/inference/subscriptions/confident").unwrap();
    assert_eq!(sub["destination"], json!({"algorithm": "demo/recorder/1"}));
    assert_eq!(
        sub["filter"]["advancedFilters"],
        json!([{"operatorType": "NumberGreaterThan", "key": "data.confidence", "value": 0.9}])
    );
    assert_eq!(sub["retryPolicy"]["maxDeliveryAttempts"], 2);
    assert_eq!(sub["deadLetter"]["collection"], "data://admin/deadletters/");
    assert_eq!(sub["maxConcurrentDeliveries"], 4);

    // Published with the topic key (a wrong API key shows it is not used).
    let publish = |args: &[&str]| {
        let mut all = vec!["--key", "not-a-key", "publish", "inference"];
        // `--key-topic=KEY`: a key may start with `-`.
        let key_arg = format!("--key-topic={key1}");
        all.extend_from_slice(args);
        all.push(&key_arg);
        wg_ok(&dir, &all)
    };
    let out = publish(&[
        "--type",
        "com.example.ai.InferenceCompleted",
        "--id",
        "e1",
        "--data",
        r#"{"confidence": 0.95}"#,
    ]);
    assert!(
        out.contains("published event e1 to inference: 1 delivery queued"),
        "{out}"
    );
    let out = publish(&[
        "--type",
        "com.example.ai.InferenceCompleted",
        "--data",
        r#"{"confidence": 0.5}"#,
    ]);
    assert!(out.contains("no subscription matched"), "{out}");
    let (ok, _, err) = wg(
        &dir,
        &[
            "publish",
            "inference",
            "--type",
            "x",
            "--key-topic",
            "wrong",
        ],
    );
    assert!(!ok && err.contains("AuthError (401)"), "{err}");

    eventually("the dead letter", Duration::from_secs(60), || {
        let v = get_json(
            &s,
            "/v1/topics/inference/subscriptions/confident/deadletters",
        )?;
        (!v["deadLetters"].as_array()?.is_empty()).then_some(())
    });
    let out = wg_ok(&dir, &["deadletters", "ls", "inference", "confident"]);
    let row = out
        .lines()
        .find(|l| l.contains(" e1 "))
        .unwrap_or_else(|| panic!("no row for e1: {out}"));
    assert!(
        row.contains("MaxDeliveryAttemptsExceeded")
            && row.contains(" 2 ")
            && row.contains("TransientAlgorithmError"),
        "{row}"
    );
    let json_out = wg_ok(
        &dir,
        &["deadletters", "ls", "inference", "confident", "--json"],
    );
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["deadLetters"][0]["event"]["id"], "e1");

    // Fixed in 1.0.1; a redrive reaches it.
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.1",
        "grant=data://demo/received:write",
    );
    let out = wg_ok(
        &dir,
        &[
            "deadletters",
            "redrive",
            "inference",
            "confident",
            "--id",
            "nope",
        ],
    );
    assert!(out.contains("none of the given ids"), "{out}");
    let out = wg_ok(
        &dir,
        &[
            "deadletters",
            "redrive",
            "inference",
            "confident",
            "--id",
            "e1",
        ],
    );
    assert!(out.contains("redrove 1 dead letter"), "{out}");
    let got = eventually("the redriven delivery", Duration::from_secs(60), || {
        get_json(&s, "/v1/data/demo/received/e1.json")
    });
    assert_eq!(got["data"]["confidence"], 0.95);

    // A subscription from a JSON file; text data is published as text/plain.
    let spec = tmp.path().join("notes.json");
    std::fs::write(
        &spec,
        json!({
            "destination": {"algorithm": "demo/recorder"},
            "filter": {"includedEventTypes": ["com.example.note"], "subjectBeginsWith": "/notes/"}
        })
        .to_string(),
    )
    .unwrap();
    let out = wg_ok(
        &dir,
        &[
            "sub",
            "create",
            "inference",
            "notes",
            "--file",
            spec.to_str().unwrap(),
        ],
    );
    assert!(out.contains("subject       /notes/*"), "{out}");
    let out = wg_ok(
        &dir,
        &[
            "publish",
            "inference",
            "--type",
            "com.example.note",
            "--subject",
            "/notes/1",
            "--id",
            "n1",
            "--data",
            "plain words",
        ],
    );
    assert!(out.contains("1 delivery queued"), "{out}");
    let got = eventually("the note", Duration::from_secs(60), || {
        get_json(&s, "/v1/data/demo/received/n1.json")
    });
    assert_eq!(got["data"], "plain words");
    assert_eq!(got["trigger"]["datacontenttype"], "text/plain");
    assert_eq!(got["trigger"]["source"], "/cli");

    let out = wg_ok(&dir, &["sub", "ls", "inference"]);
    assert!(out.contains("confident") && out.contains("notes"), "{out}");
    let out = wg_ok(&dir, &["sub", "show", "inference", "notes", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["filter"]["subjectBeginsWith"], "/notes/");
    let (ok, _, err) = wg(&dir, &["sub", "show", "inference", "nope"]);
    assert!(
        !ok && err.contains("NotFound (404)") && err.contains("wasmgrid sub ls inference"),
        "{err}"
    );
    let (ok, _, err) = wg(
        &dir,
        &[
            "sub",
            "create",
            "inference",
            "bad",
            "--algorithm",
            "demo/recorder",
            "--max-attempts",
            "99",
        ],
    );
    assert!(!ok && err.contains("maxDeliveryAttempts is 99"), "{err}");

    wg_ok(&dir, &["sub", "rm", "inference", "notes"]);
    wg_ok(&dir, &["topic", "rm", "inference"]);
    let out = wg_ok(&dir, &["topic", "ls"]);
    assert!(!out.contains("inference"), "{out}");
}

fn up(manifest: &Path, data_dir: &Path, log: &Path) -> Child {
    let _ = std::fs::remove_file(data_dir.join("server.json"));
    std::fs::create_dir_all(data_dir).unwrap();
    Command::new(bin())
        .arg("up")
        .arg(manifest)
        .arg("--no-build")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until `up` has applied the manifest and printed its banner.
fn wait_banner(log: &Path) -> String {
    eventually("up's banner", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(log).ok()?;
        text.contains("Press Ctrl-C to stop.").then_some(text)
    })
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("up exits");
    assert!(status.success(), "{status}");
}

fn manifest_text(acl: &str) -> String {
    let g = guests_dir();
    format!(
        r#"[server]
addr = "127.0.0.1:0"

[[collection]]
name = "demo/uploads"
acl = "{acl}"

[[algorithm]]
name = "demo/csv-summary"
version = "1.0.0"
source = "{csv}"
grants = ["data://demo/uploads:read", "data://demo/results:write"]

[[subscription]]
topic = "system.data"
name = "csv-summary"
destination = {{ algorithm = "demo/csv-summary" }}
filter = {{ includedEventTypes = ["wasmgrid.data.FileCreated"], subjectBeginsWith = "/collections/demo/uploads/files/", subjectEndsWith = ".csv" }}

[[topic]]
name = "demo-events"

[[algorithm]]
name = "demo/event-recorder"
version = "1.0.0"
source = "{rec}"
grants = ["data://demo/received:write"]

[[subscription]]
topic = "demo-events"
name = "event-recorder"
destination = {{ algorithm = "demo/event-recorder" }}
"#,
        csv = g.join("csv_summary.wasm").display(),
        rec = g.join("event_recorder.wasm").display(),
    )
}

/// `up` creates collections, topics and subscriptions after deploying, prints
/// the new topic's keys once, and applies them again without error (the
/// README's events tour: a CSV upload is summarised, a published event recorded).
#[test]
fn up_applies_collections_topics_and_subscriptions_idempotently() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("wasmgrid.toml");
    let data = tmp.path().join("data");
    let log = tmp.path().join("up.log");
    std::fs::write(&manifest, manifest_text("private")).unwrap();

    let child = up(&manifest, &data, &log);
    let banner = wait_banner(&log);
    assert!(
        banner.contains("collection data://demo/uploads  (created, acl private)"),
        "{banner}"
    );
    assert!(banner.contains("topic demo-events  (created"), "{banner}");
    assert!(
        banner.contains(
            "subscription system.data/csv-summary -> algorithm demo/csv-summary  (created)"
        ),
        "{banner}"
    );
    let key1 = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("key1 "))
        .expect("the topic's key1 is printed")
        .trim()
        .to_string();
    let s = Server::attach(&data, None);
    let coll = get_json(&s, "/v1/data/demo/uploads?acl=true").unwrap();
    assert_eq!(coll["acl"], json!({"read": []}));

    // The tour: a CSV upload is summarised; a published event is recorded.
    let csv = tmp.path().join("sales.csv");
    std::fs::write(&csv, "region,amount\neu,3\nus,4\n").unwrap();
    wg_ok(
        &data,
        &[
            "data",
            "put",
            csv.to_str().unwrap(),
            "data://demo/uploads/sales.csv",
        ],
    );
    let summary = eventually("the summary", Duration::from_secs(60), || {
        let (ok, out, _) = wg(
            &data,
            &["data", "get", "data://demo/results/sales.csv.summary.json"],
        );
        ok.then(|| serde_json::from_str::<Value>(&out).ok())
            .flatten()
    });
    assert_eq!(summary["rows"], 2, "{summary}");
    wg_ok(
        &data,
        &[
            "publish",
            "demo-events",
            "--type",
            "com.example.hello",
            "--id",
            "h1",
            "--data",
            r#"{"x":1}"#,
            &format!("--key-topic={key1}"),
        ],
    );
    eventually("the recorded event", Duration::from_secs(60), || {
        let (ok, out, _) = wg(&data, &["data", "ls", "data://demo/received"]);
        (ok && out.contains("h1.json")).then_some(())
    });
    stop(child);

    // Again, with the collection made public: nothing fails, the keys are not
    // shown again, the unchanged subscriptions are left alone, and the topic
    // still takes the key printed the first time.
    std::fs::write(&manifest, manifest_text("public")).unwrap();
    let child = up(&manifest, &data, &log);
    let banner = wait_banner(&log);
    assert!(banner.contains("topic demo-events  (exists"), "{banner}");
    assert!(!banner.contains("key1"), "{banner}");
    assert!(
        banner.contains("collection data://demo/uploads  (exists, acl changed to public)"),
        "{banner}"
    );
    assert!(
        banner.contains(
            "subscription demo-events/event-recorder -> algorithm demo/event-recorder  (unchanged)"
        ),
        "{banner}"
    );
    let s = Server::attach(&data, None);
    let coll = get_json(&s, "/v1/data/demo/uploads?acl=true").unwrap();
    assert_eq!(coll["acl"], json!({"read": ["user://*"]}));
    wg_ok(
        &data,
        &[
            "publish",
            "demo-events",
            "--type",
            "com.example.hello",
            "--id",
            "h2",
            &format!("--key-topic={key1}"),
        ],
    );
    eventually("the second recorded event", Duration::from_secs(60), || {
        get_json(&s, "/v1/data/demo/received/h2.json")
    });
    stop(child);

    // A subscription the server refuses stops `up` with the server's reason.
    let mut text = manifest_text("public");
    text.push_str(
        "\n[[subscription]]\ntopic = \"no-such-topic\"\nname = \"x\"\ndestination = { algorithm = \"demo/event-recorder\" }\n",
    );
    std::fs::write(&manifest, text).unwrap();
    let mut child = up(&manifest, &data, &log);
    let status = wait_timeout(&mut child, Duration::from_secs(60)).expect("up exits");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("applying subscription no-such-topic/x")
            && err.contains("topic no-such-topic not found"),
        "{err}"
    );
}
