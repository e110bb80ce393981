//! Warm instances (`reuse=N`): an instance serves up to N calls of its own
//! version, one at a time, runs `init` once, and keeps nothing of one call
//! for the next but the guest's own memory. Each isolation point of
//! docs/ARCHITECTURE.md's "Warm instances" has a test here.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// Calls `path` with a JSON body and returns the result (200 expected).
fn call_ok(s: &Server, path: &str, body: Value) -> Value {
    let resp = s.call(path, "application/json", body.to_string());
    let v = json(resp, 200);
    v["result"].clone()
}

fn probe(s: &Server, path: &str, body: Value) -> Value {
    call_ok(s, path, body)
}

fn instance_calls(v: &Value) -> u64 {
    v["instance_calls"].as_u64().expect("instance_calls")
}

#[test]
fn an_instance_serves_its_own_version_reuse_times_then_retires() {
    let s = Server::start();
    s.deploy_ok("warm-lookup", "demo/look@1.0.0", "reuse=3");
    s.deploy_ok("warm-lookup", "demo/look@1.0.1", "reuse=3");
    s.deploy_ok("warm-lookup", "other/look@1.0.0", "reuse=3");
    s.deploy_ok("warm-lookup", "demo/fresh@1.0.0", "");

    let first = call_ok(&s, "demo/look/1.0.0", json!("key-42"));
    assert_eq!(first["value"], 42 * 42);
    assert_eq!(first["table_size"], 100_000);
    let seq: Vec<u64> = (0..5)
        .map(|_| instance_calls(&call_ok(&s, "demo/look/1.0.0", json!("key-7"))))
        .collect();
    // 1 was the first call; the instance retires after its third call.
    assert_eq!(seq, [2, 3, 1, 2, 3], "calls per instance");
    assert_eq!(
        call_ok(&s, "demo/look/1.0.0", json!("nope"))["value"],
        Value::Null
    );
    // Another version and another owner never share the instance.
    assert_eq!(
        instance_calls(&call_ok(&s, "demo/look/1.0.1", json!("key-1"))),
        1
    );
    assert_eq!(
        instance_calls(&call_ok(&s, "other/look/1.0.0", json!("key-1"))),
        1
    );
    // Without reuse every call is a fresh instance (and runs init).
    for _ in 0..3 {
        assert_eq!(
            instance_calls(&call_ok(&s, "demo/fresh/1.0.0", json!("key-1"))),
            1
        );
    }
    // The listing shows the setting; the metrics count warm and cold starts.
    let versions = json(
        s.req(Method::GET, "/v1/algorithms/demo/look")
            .send()
            .unwrap(),
        200,
    );
    assert!(
        versions.to_string().contains("\"reuse\":3"),
        "reuse in the listing: {versions}"
    );
    let warm = metric(
        &s,
        "wasmgrid_instance_starts_total",
        &["algorithm=\"demo/look/1.0.0\"", "start=\"warm\""],
    );
    let cold = metric(
        &s,
        "wasmgrid_instance_starts_total",
        &["algorithm=\"demo/look/1.0.0\"", "start=\"cold\""],
    );
    assert_eq!((warm, cold), (Some(4.0), Some(3.0)), "warm and cold starts");
}

#[test]
fn reuse_is_checked_at_deploy() {
    let s = Server::start();
    assert_error(
        s.deploy("warm-lookup", "demo/look@1.0.0", "reuse=2000000"),
        400,
        "InputError",
        "reuse=2000000 is out of range",
    );
    assert_error(
        s.deploy("warm-lookup", "demo/look@1.0.0", "reuse=many"),
        400,
        "InputError",
        "reuse",
    );
    assert_error(
        s.deploy("http-hello", "demo/web@1.0.0", "reuse=10"),
        400,
        "InputError",
        "reuse applies to algorithms only",
    );
}

#[test]
fn a_trap_or_a_timeout_discards_the_instance_and_a_guest_error_keeps_it() {
    let s = Server::start();
    s.deploy_ok("warm-probe", "demo/probe@1.0.0", "reuse=100&timeout=2");
    let p = "demo/probe/1.0.0";
    assert_eq!(instance_calls(&probe(&s, p, json!({"op": "count"}))), 1);
    assert_eq!(instance_calls(&probe(&s, p, json!({"op": "count"}))), 2);
    // A guest error is an ordinary result: the instance stays.
    assert_error(
        s.call(p, "application/json", json!({"op": "bogus"}).to_string()),
        400,
        "AlgorithmError",
        "unknown op",
    );
    assert_eq!(instance_calls(&probe(&s, p, json!({"op": "count"}))), 4);
    // A panic traps: the next call gets a new instance (and init runs again).
    assert_error(
        s.call(p, "application/json", json!({"op": "panic"}).to_string()),
        500,
        "CrashError",
        "asked to panic",
    );
    let after = probe(&s, p, json!({"op": "count"}));
    assert_eq!(
        (instance_calls(&after), after["init_runs"].as_u64()),
        (1, Some(1))
    );
    // A timeout stops the guest mid-call: discarded too.
    assert_error(
        s.call(
            p,
            "application/json",
            json!({"op": "sleep", "ms": 5000}).to_string(),
        ),
        504,
        "TimeoutError",
        "2s",
    );
    assert_eq!(instance_calls(&probe(&s, p, json!({"op": "count"}))), 1);
}

#[test]
fn each_call_has_its_own_deadline_output_and_secrets() {
    let s = Server::start();
    s.deploy_ok("warm-probe", "demo/probe@1.0.0", "reuse=100&timeout=1");
    let p = "demo/probe/1.0.0";
    // Three calls of 600 ms each on one instance with a 1 s timeout: each
    // call's deadline starts with the call.
    for n in 1..=3 {
        let v = probe(&s, p, json!({"op": "spin", "ms": 600}));
        assert_eq!(instance_calls(&v), n, "spin {n}");
    }
    // stdout is captured per call.
    for n in 4..=5 {
        let resp = s
            .req(Method::POST, &format!("/v1/algo/{p}?stdout=true"))
            .header("Content-Type", "application/json")
            .body(json!({"op": "print"}).to_string())
            .send()
            .unwrap();
        let v = json(resp, 200);
        assert_eq!(v["metadata"]["stdout"], format!("call {n}\n"), "{v}");
    }
    // Secrets are read per call from the host: a changed secret is seen by
    // the same warm instance.
    for (value, n) in [("one", 6), ("two", 7)] {
        let r = s
            .req(Method::PUT, "/v1/algorithms/demo/probe/secrets/TOKEN")
            .body(value)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "set secret: {}", r.status());
        let v = probe(&s, p, json!({"op": "secret", "name": "TOKEN"}));
        assert_eq!((v["secret"].as_str(), instance_calls(&v)), (Some(value), n));
    }
}

#[test]
fn buckets_opened_by_a_call_are_closed_when_it_ends() {
    let s = Server::start();
    let r = s
        .req(Method::PUT, "/v1/data/demo/warm/k")
        .body("v")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    s.deploy_ok(
        "warm-probe",
        "demo/probe@1.0.0",
        "reuse=100&grant=data://.my/warm:read",
    );
    let p = "demo/probe/1.0.0";
    let opened = probe(&s, p, json!({"op": "open-bucket", "bucket": ".my/warm"}));
    assert_eq!(instance_calls(&opened), 1);
    // The handle the guest kept is gone: using it traps, and the instance
    // is discarded.
    assert_error(
        s.call(
            p,
            "application/json",
            json!({"op": "use-bucket"}).to_string(),
        ),
        500,
        "CrashError",
        "",
    );
    assert_eq!(instance_calls(&probe(&s, p, json!({"op": "count"}))), 1);
}

#[test]
fn init_failure_fails_the_call_and_discards_the_instance() {
    let s = Server::start();
    s.deploy_ok("warm-probe", "demo/probe@1.0.0", "reuse=100");
    let p = "demo/probe/1.0.0";
    let set = |v: &str| {
        let r = s
            .req(Method::PUT, "/v1/algorithms/demo/probe/secrets/FAIL_INIT")
            .body(v.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success());
    };
    set("not today");
    assert_error(
        s.call(p, "application/json", json!({"op": "count"}).to_string()),
        503,
        "TransientAlgorithmError",
        "init failed: init refused: not today",
    );
    let r = s
        .req(
            Method::DELETE,
            "/v1/algorithms/demo/probe/secrets/FAIL_INIT",
        )
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let v = probe(&s, p, json!({"op": "count"}));
    assert_eq!((instance_calls(&v), v["init_runs"].as_u64()), (1, Some(1)));
    let v = probe(&s, p, json!({"op": "count"}));
    assert_eq!(
        (instance_calls(&v), v["init_runs"].as_u64()),
        (2, Some(1)),
        "init runs once"
    );
}

#[test]
fn a_cancelled_call_discards_its_instance() {
    let s = Server::start();
    s.deploy_ok("warm-probe", "demo/probe@1.0.0", "reuse=100&timeout=30");
    let p = "demo/probe/1.0.0";
    assert_eq!(instance_calls(&probe(&s, p, json!({"op": "count"}))), 1);
    // The client gives up mid-call: the server drops the call, and with it
    // the instance (it holds the state of an unfinished call).
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let r = impatient
        .post(format!("{}/v1/algo/{p}", s.url))
        .header("Authorization", format!("Simple {}", s.key))
        .header("Content-Type", "application/json")
        .body(json!({"op": "sleep", "ms": 3000}).to_string())
        .send();
    assert!(r.is_err(), "the client timed out");
    eventually("the call to be dropped", Duration::from_secs(20), || {
        (metric(&s, "wasmgrid_invocations_in_flight", &[]) == Some(0.0)).then_some(())
    });
    // Had the instance gone back to the pool it would answer 3 here.
    assert_eq!(instance_calls(&probe(&s, p, json!({"op": "count"}))), 1);
}

#[test]
fn idle_warm_instances_are_evicted_before_a_call_is_overloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--instance-slots", "2"]);
    s.deploy_ok("warm-probe", "demo/probe@1.0.0", "reuse=100&concurrency=2");
    s.deploy_ok("noop", "demo/noop@1.0.0", "");
    // Two overlapping calls leave two idle warm instances: every slot.
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| probe(&s, "demo/probe/1.0.0", json!({"op": "sleep", "ms": 500})));
        }
    });
    // Another version needs a slot: the idle instances give theirs up.
    for _ in 0..3 {
        let r = s.call("demo/noop/1.0.0", "text/plain", "hi");
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    }
}

#[test]
fn jobs_use_warm_instances() {
    let s = Server::start();
    s.deploy_ok("warm-lookup", "demo/look@1.0.0", "reuse=1000");
    for i in 0..20 {
        let r = s
            .req(Method::PUT, &format!("/v1/data/demo/keys/in/k{i:02}.json"))
            .header("Content-Type", "application/json")
            .body(json!(format!("key-{i}")).to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let job = json(
        s.req(Method::POST, "/v1/algo/demo/look/1.0.0/jobs")
            .json(&json!({
                "input": "data://demo/keys/in/",
                "output": "data://demo/keys/out/",
                "maxConcurrency": 1
            }))
            .send()
            .unwrap(),
        202,
    );
    let id = job["id"].as_str().unwrap().to_string();
    eventually("the job to end", Duration::from_secs(60), || {
        let j = json(
            s.req(Method::GET, &format!("/v1/jobs/{id}"))
                .send()
                .unwrap(),
            200,
        );
        (j["status"] == "Completed").then_some(())
    });
    let warm = metric(
        &s,
        "wasmgrid_instance_starts_total",
        &["algorithm=\"demo/look/1.0.0\"", "start=\"warm\""],
    )
    .unwrap_or(0.0);
    assert!(
        warm >= 19.0,
        "19 of 20 files on the warm instance, got {warm}"
    );
}

#[test]
fn a_trigger_is_seen_by_its_own_call_only() {
    use wasmgrid::engine::{Payload, TriggerEvent};
    use wasmgrid::invoker::Call;
    use wasmgrid::registry::{DeployRequest, VersionSettings, VersionSpec};
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = wasmgrid::app::App::open(dir.path(), Default::default(), Default::default()).unwrap();
    rt.block_on(async {
        app.registry
            .deploy(
                DeployRequest {
                    owner: "demo".into(),
                    name: "probe".into(),
                    version: "1.0.0".into(),
                    settings: VersionSettings {
                        reuse: 10,
                        ..VersionSettings::default()
                    },
                    source_hash: None,
                },
                guest("warm-probe").into(),
            )
            .await
            .unwrap();
        let deployed = app
            .invoker
            .resolve("demo", "probe", &VersionSpec::parse(None).unwrap())
            .unwrap();
        let input = || Payload {
            content_type: "application/json".into(),
            body: br#"{"op":"count"}"#.to_vec().into(),
        };
        let run = |trigger: Option<TriggerEvent>| {
            let deployed = deployed.clone();
            let app = app.clone();
            async move {
                let mut call = Call::new(&deployed, input(), None);
                call.trigger = trigger;
                let out = app.invoker.call(call).await.unwrap();
                serde_json::from_slice::<Value>(&out.output.body).unwrap()
            }
        };
        let with = run(Some(TriggerEvent {
            id: "evt-1".into(),
            source: "/test".into(),
            ty: "test.Event".into(),
            subject: None,
            time: None,
            data_content_type: Some("application/json".into()),
            extensions: Vec::new(),
        }))
        .await;
        assert_eq!(
            (with["trigger"].as_str(), instance_calls(&with)),
            (Some("evt-1"), 1)
        );
        let without = run(None).await;
        assert_eq!(
            (without["trigger"].clone(), instance_calls(&without)),
            (Value::Null, 2)
        );
    });
}
