//! Python and JavaScript algorithms (sdk/python, sdk/js), built from source by
//! tests/sdk/build_sdk_examples.sh (scripts/test.sh runs it first).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json as js};

fn component(path: &str) -> Vec<u8> {
    let p = repo_root().join(path);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run tests/sdk/build_sdk_examples.sh (scripts/test.sh does)",
            p.display()
        )
    })
}

fn deploy_bytes(s: &Server, bytes: Vec<u8>, target: &str) -> serde_json::Value {
    deploy_with(s, bytes, target, "memory=128")
}

fn deploy_with(s: &Server, bytes: Vec<u8>, target: &str, query: &str) -> serde_json::Value {
    let (path, version) = target.split_once('@').unwrap();
    json(
        s.req(
            Method::PUT,
            &format!("/v1/algorithms/{path}/versions/{version}?{query}"),
        )
        // Compiling a 12-19 MB component takes seconds, minutes on a loaded
        // debug run with several deploys at once.
        .timeout(std::time::Duration::from_secs(600))
        .body(bytes)
        .send()
        .unwrap(),
        201,
    )
}

#[test]
fn python_and_javascript_algorithms_run_and_stay_precompiled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    // Both deploys compile (seconds each: ~19 MB and ~12 MB components).
    let py = std::thread::scope(|scope| {
        let js = scope.spawn(|| {
            deploy_bytes(
                &s,
                component("guest-examples/js-transform/out/js_transform.wasm"),
                "demo/transform@1.0.0",
            )
        });
        let py = deploy_bytes(
            &s,
            component("guest-examples/python-wordcount/out/python_wordcount.wasm"),
            "demo/wordcount@1.0.0",
        );
        assert_eq!(js.join().unwrap()["kind"], "algorithm");
        py
    });
    assert_eq!(py["kind"], "algorithm");

    let check = |s: &Server| {
        let v = json(
            s.call(
                "demo/wordcount",
                "text/plain",
                "The cat saw the other cat. The end",
            ),
            200,
        );
        assert_eq!(v["metadata"]["content_type"], "json");
        assert_eq!(v["result"]["words"], 8);
        assert_eq!(v["result"]["unique"], 5);
        // Most frequent first, as the algorithm wrote it.
        let order: Vec<&str> = v["result"]["counts"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(order, ["the", "cat", "end", "other", "saw"]);
        assert_error(
            s.call(
                "demo/wordcount",
                "application/octet-stream",
                vec![0xffu8, 0x00],
            ),
            400,
            "AlgorithmError",
            "",
        );

        let v = json(
            s.call(
                "demo/transform",
                "application/json",
                r#"{"name": "ada", "tags": ["x", "y"], "n": 1}"#,
            ),
            200,
        );
        assert_eq!(v["result"]["name"], "ADA");
        assert_eq!(v["result"]["tags"], serde_json::json!(["X", "Y"]));
        assert_eq!(v["result"]["n"], 1);
        assert_eq!(v["result"]["_transform"]["strings"], 3);
        assert_error(
            s.call("demo/transform", "text/plain", "not json"),
            400,
            "AlgorithmError",
            "",
        );
    };
    check(&s);
    assert!(s.terminate().success());

    // After a restart they load precompiled: no compilation at all.
    let s = Server::start_in(tmp.path(), &[]);
    check(&s);
    let metrics = s
        .req(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "wasmgrid_component_compilations 0"),
        "{metrics}"
    );
}

fn put_data(s: &Server, path: &str, content_type: &str, body: &str) {
    let r = s
        .req(Method::PUT, &format!("/v1/data/{path}"))
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "put {path}: {}", r.status());
}

fn get_data(s: &Server, path: &str) -> String {
    let r = s
        .req(Method::GET, &format!("/v1/data/{path}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "get {path}");
    r.text().unwrap()
}

fn create_topic(s: &Server, topic: &str) {
    json(
        s.req(Method::PUT, &format!("/v1/topics/{topic}"))
            .send()
            .unwrap(),
        201,
    );
}

/// Deploys the Rust `event-recorder` as `demo/recorder` and subscribes it to
/// `topic`: every event published there lands in `demo/received/<id>.json`.
fn record_topic(s: &Server, topic: &str) {
    create_topic(s, topic);
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    json(
        s.req(
            Method::PUT,
            &format!("/v1/topics/{topic}/subscriptions/record"),
        )
        .json(&js!({"destination": {"algorithm": "demo/recorder"}}))
        .send()
        .unwrap(),
        201,
    );
}

/// The event `id` as the recorder received it (trigger attributes and data).
fn delivered_event(s: &Server, id: &str) -> Value {
    eventually(
        &format!("the delivery of event {id}"),
        std::time::Duration::from_secs(60),
        || {
            let r = s
                .req(Method::GET, &format!("/v1/data/demo/received/{id}.json"))
                .send()
                .ok()?;
            if r.status() != 200 {
                return None;
            }
            r.json::<Value>().ok()
        },
    )
}

fn call_json(s: &Server, algo: &str, input: Value) -> Value {
    json(s.call(algo, "application/json", input.to_string()), 200)["result"].clone()
}

/// python-data (wasmgrid.data): reads a file of one collection, writes the
/// word counts to another; data errors keep their meaning.
#[test]
fn python_data_reads_and_writes_collections() {
    let s = Server::start();
    put_data(&s, "demo/pydocs/in.txt", "text/plain", "b a b c b");
    deploy_with(
        &s,
        component("guest-examples/python-data/out/python_data.wasm"),
        "demo/pydata@1.0.0",
        "memory=128&grant=data://demo/pydocs:read&grant=data://demo/pyout:write",
    );
    let v = call_json(
        &s,
        "demo/pydata",
        js!({"input": "data://demo/pydocs/in.txt", "output": "data://demo/pyout/counts.json"}),
    );
    assert_eq!(
        v,
        js!({"output": "data://demo/pyout/counts.json", "words": 5})
    );
    let written: Value = serde_json::from_str(&get_data(&s, "demo/pyout/counts.json")).unwrap();
    assert_eq!(
        written,
        js!({"words": 5, "counts": {"b": 3, "a": 1, "c": 1}})
    );
    // A missing file: the data error `not-found` as a permanent error.
    assert_error(
        s.call(
            "demo/pydata",
            "application/json",
            js!({"input": "data://demo/pydocs/nope.txt", "output": "data://demo/pyout/x.json"})
                .to_string(),
        ),
        400,
        "AlgorithmError",
        "not found",
    );
    // No write grant on another collection: access denied, nothing written.
    assert_error(
        s.call(
            "demo/pydata",
            "application/json",
            js!({"input": "data://demo/pydocs/in.txt", "output": "data://demo/elsewhere/x.json"})
                .to_string(),
        ),
        400,
        "AlgorithmError",
        "access denied",
    );
    assert_error(
        s.call("demo/pydata", "application/json", "[]"),
        400,
        "AlgorithmError",
        "send JSON",
    );
}

/// js-services: data, secrets, algo.call, events.publish and wasi:keyvalue
/// from JavaScript, each checked by its effect.
#[test]
fn javascript_sdk_uses_every_host_interface() {
    let s = Server::start();
    record_topic(&s, "js-feed");
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    put_data(
        &s,
        "demo/jsdocs/in.txt",
        "text/plain",
        "Grace wrote the compiler",
    );
    deploy_with(
        &s,
        component("guest-examples/js-services/out/js_services.wasm"),
        "demo/services@1.0.0",
        "memory=128&grant=data://demo/jsdocs:read&grant=data://demo/jsout:write\
         &grant=data://demo/jscounters:write&grant=topic:js-feed",
    );
    let r = s
        .req(Method::PUT, "/v1/algorithms/demo/services/secrets/greeting")
        .body("bonjour")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let input = js!({"input": "data://demo/jsdocs/in.txt", "output": "data://demo/jsout/summary.json",
        "hello": "demo/hello", "topic": "js-feed", "bucket": "demo/jscounters"});
    let v = call_json(&s, "demo/services", input.clone());
    assert_eq!(v["words"], 4);
    assert_eq!(v["greeting"], "bonjour");
    assert_eq!(v["hello"], "Hello, Grace!");
    assert_eq!(v["runs"], 1);
    assert_eq!(v["exists"], true);
    assert_eq!(v["keys"], js!(["last", "runs"]));
    // data.put wrote the file.
    let written: Value = serde_json::from_str(&get_data(&s, "demo/jsout/summary.json")).unwrap();
    assert_eq!(
        written,
        js!({"words": 4, "greeting": "bonjour", "hello": "Hello, Grace!"})
    );
    // events.publish: the event is delivered to the topic's subscription.
    let e = delivered_event(&s, v["event"].as_str().unwrap());
    assert_eq!(e["trigger"]["type"], "com.example.js.Summarized");
    assert_eq!(e["trigger"]["source"], "/algorithms/demo/services");
    assert_eq!(e["trigger"]["subject"], "data://demo/jsout/summary.json");
    assert_eq!(e["data"]["hello"], "Hello, Grace!");
    // keyvalue: the counter counts, visible through the data API.
    let v = call_json(&s, "demo/services", input.clone());
    assert_eq!(v["runs"], 2);
    assert_eq!(get_data(&s, "demo/jscounters/runs"), "2");
    assert_eq!(
        get_data(&s, "demo/jscounters/last"),
        "data://demo/jsout/summary.json"
    );
    // A host error fails the call with its meaning: an unknown callee is
    // permanent, a missing file `not found`, a topic without a grant permanent.
    let mut bad = input.clone();
    bad["hello"] = "demo/nosuch".into();
    assert_error(
        s.call("demo/services", "application/json", bad.to_string()),
        400,
        "AlgorithmError",
        "",
    );
    let mut bad = input.clone();
    bad["input"] = "data://demo/jsdocs/nope.txt".into();
    assert_error(
        s.call("demo/services", "application/json", bad.to_string()),
        400,
        "AlgorithmError",
        "not found",
    );
    let mut bad = input.clone();
    bad["topic"] = "other-feed".into();
    assert_error(
        s.call("demo/services", "application/json", bad.to_string()),
        400,
        "AlgorithmError",
        "",
    );
    let mut bad = input;
    bad["bucket"] = "demo/private".into();
    assert_error(
        s.call("demo/services", "application/json", bad.to_string()),
        400,
        "AlgorithmError",
        "keyvalue: access denied",
    );
}

/// python-pipeline: algo.call, events.publish and keyvalue from Python.
#[test]
fn python_sdk_calls_algorithms_and_publishes_events() {
    let s = Server::start();
    record_topic(&s, "py-feed");
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    deploy_with(
        &s,
        component("guest-examples/python-pipeline/out/python_pipeline.wasm"),
        "demo/pipeline@1.0.0",
        "memory=128&grant=topic:py-feed&grant=data://demo/pycounters:write",
    );
    let input = js!({"name": "Ada", "hello": "demo/hello", "topic": "py-feed",
        "bucket": "demo/pycounters"});
    let v = call_json(&s, "demo/pipeline", input.clone());
    assert_eq!(v["greeting"], "Hello, Ada!");
    assert_eq!(v["count"], 1);
    let e = delivered_event(&s, v["event"].as_str().unwrap());
    assert_eq!(e["trigger"]["type"], "com.example.py.Greeted");
    assert_eq!(e["trigger"]["source"], "/algorithms/demo/pipeline");
    assert_eq!(e["trigger"]["subject"], "/names/Ada");
    assert_eq!(e["trigger"]["extensions"]["pipeline"], "python");
    assert_eq!(e["data"], js!({"greeting": "Hello, Ada!"}));
    assert_eq!(call_json(&s, "demo/pipeline", input.clone())["count"], 2);
    assert_eq!(get_data(&s, "demo/pycounters/greeted"), "2");
    // An unknown callee: a permanent error.
    let mut bad = input.clone();
    bad["hello"] = "demo/nosuch".into();
    assert_error(
        s.call("demo/pipeline", "application/json", bad.to_string()),
        400,
        "AlgorithmError",
        "",
    );
    // No grant for the topic: permanent, nothing published.
    let mut bad = input;
    bad["topic"] = "elsewhere".into();
    assert_error(
        s.call("demo/pipeline", "application/json", bad.to_string()),
        400,
        "AlgorithmError",
        "",
    );
}

/// `init` in Python and JavaScript (world `algorithm-with-init`): the table is
/// built once per instance; with `reuse` the instance serves many calls.
#[test]
fn python_and_javascript_init_build_state_once_per_instance() {
    let s = Server::start();
    let py = component("guest-examples/python-warm/out/python_warm.wasm");
    let jsw = component("guest-examples/js-warm/out/js_warm.wasm");
    deploy_with(&s, py.clone(), "demo/pywarm@1.0.0", "memory=256&reuse=1000");
    deploy_with(&s, py, "demo/pyfresh@1.0.0", "memory=256");
    deploy_with(
        &s,
        jsw.clone(),
        "demo/jswarm@1.0.0",
        "memory=128&reuse=1000",
    );
    deploy_with(&s, jsw, "demo/jsfresh@1.0.0", "memory=128");
    let look = |algo: &str, key: &str| call_json(&s, algo, js!(key));

    let first = look("demo/pywarm", "key-42");
    assert_eq!(first["value"], "value-42-6e4");
    assert_eq!(first["entries"], 100_000);
    let counts: Vec<u64> = (0..3)
        .map(|_| {
            look("demo/pywarm", "key-7")["instance_calls"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        first["instance_calls"].as_u64().unwrap() < counts[0]
            && counts[0] < counts[1]
            && counts[1] < counts[2],
        "a warm instance counts its calls: {first} then {counts:?}"
    );
    assert_eq!(look("demo/pywarm", "nope")["value"], Value::Null);
    // Without reuse every call is a fresh instance that runs init.
    for _ in 0..2 {
        let v = look("demo/pyfresh", "key-99999");
        assert_eq!(v["instance_calls"], 1);
        assert_eq!(v["value"], "value-99999-25408d6c1");
    }

    let first = look("demo/jswarm", "key-12");
    assert_eq!(first["value"], 144);
    assert_eq!(first["entries"], 10_000);
    let next = look("demo/jswarm", "key-13");
    assert!(
        next["instance_calls"].as_u64() > first["instance_calls"].as_u64(),
        "{first} then {next}"
    );
    for _ in 0..2 {
        assert_eq!(look("demo/jsfresh", "key-1")["instance_calls"], 1);
    }
    assert_eq!(look("demo/jsfresh", "zzz")["value"], Value::Null);
}

/// An `init` that fails in Python and JavaScript (examples python-init-error,
/// js-init-error): each call fails with the init's error, mapped by the SDK
/// to `permanent` (400 AlgorithmError), and the instance is discarded even
/// with `reuse`: the next call starts a new instance and runs `init` again.
#[test]
fn python_and_javascript_init_errors_fail_the_call_and_discard_the_instance() {
    let s = Server::start();
    let cases = [
        (
            "guest-examples/python-init-error/out/python_init_error.wasm",
            "demo/pyiniterr",
            "memory=256&reuse=1000",
            "init failed: FileNotFoundError: model file missing",
        ),
        (
            "guest-examples/js-init-error/out/js_init_error.wasm",
            "demo/jsiniterr",
            "memory=128&reuse=1000",
            "init failed: Error: model file missing",
        ),
    ];
    for (path, algo, query, message) in cases {
        deploy_with(&s, component(path), &format!("{algo}@1.0.0"), query);
        for _ in 0..2 {
            let msg = assert_error(
                s.call(algo, "application/json", r#""key-1""#),
                400,
                "AlgorithmError",
                message,
            );
            assert_eq!(msg, message, "{algo}: the init error reaches the caller");
        }
        // Both calls started a new instance (and ran init); none was kept.
        let starts = |start: &str| {
            metric(
                &s,
                "wasmgrid_instance_starts_total",
                &[
                    &format!("algorithm=\"{algo}/1.0.0\""),
                    &format!("start=\"{start}\""),
                ],
            )
        };
        assert_eq!(
            (starts("cold"), starts("warm")),
            (Some(2.0), None),
            "{algo}: cold and warm starts"
        );
    }
}
