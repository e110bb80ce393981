//! Invocation: input kinds, output shapes, options and version resolution.

use crate::support::*;
use reqwest::Method;

#[test]
fn text_json_and_binary_round_trips() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    s.deploy_ok("json-stats", "demo/json-stats@1.0.0", "");
    s.deploy_ok("noop", "demo/noop@1.0.0", "");

    let v = json(s.call("demo/hello/1.0.0", "text/plain", "World"), 200);
    assert_eq!(v["result"], "Hello, World!");
    assert_eq!(v["metadata"]["content_type"], "text");
    assert!(v["metadata"]["duration"].as_f64().unwrap() > 0.0);
    assert!(
        v["metadata"].get("stdout").is_none(),
        "stdout only on request"
    );

    let v = json(s.call("demo/hello", "application/json", "\"Ada\""), 200);
    assert_eq!(v["result"], "Hello, Ada!");

    let v = json(
        s.call("demo/json-stats/1.0.0", "application/json", "[1, 2, 3, 6]"),
        200,
    );
    assert_eq!(v["metadata"]["content_type"], "json");
    assert_eq!(v["result"]["count"], 4);
    assert_eq!(v["result"]["mean"], 3.0);
    assert_eq!(v["result"]["min"], 1.0);
    assert_eq!(v["result"]["max"], 6.0);

    // Binary in, binary out (base64 in the JSON envelope; raw with output=raw).
    let bytes: Vec<u8> = (0..=255u8).collect();
    let v = json(
        s.call("demo/noop", "application/octet-stream", bytes.clone()),
        200,
    );
    assert_eq!(v["metadata"]["content_type"], "binary");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v["result"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, bytes);
    let raw = s
        .req(Method::POST, "/v1/algo/demo/noop?output=raw")
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], "application/octet-stream");
    assert_eq!(raw.bytes().unwrap().to_vec(), bytes);
}

#[test]
fn guest_errors_and_bad_input_are_typed() {
    let s = Server::start();
    s.deploy_ok("json-stats", "demo/json-stats@1.0.0", "");
    assert_error(
        s.call("demo/json-stats", "application/json", "[]"),
        400,
        "AlgorithmError",
        "need at least one number",
    );
    assert_error(
        s.call("demo/json-stats", "application/json", "[1,"),
        400,
        "InputError",
        "not valid JSON",
    );
    assert_error(
        s.call("demo/missing", "text/plain", "x"),
        404,
        "NotFound",
        "demo/missing not found",
    );
    assert_error(
        s.call("demo/json-stats/9", "application/json", "[1]"),
        404,
        "NotFound",
        "no released version 9.x.y",
    );
    assert_error(
        s.call("demo/json-stats/x.y", "application/json", "[1]"),
        400,
        "InputError",
        "bad version spec",
    );
    let resp = s
        .req(Method::POST, "/v1/algo/demo/json-stats?output=bogus")
        .body("[1]")
        .send()
        .unwrap();
    assert_error(resp, 400, "InputError", "output=");
    let resp = s.req(Method::GET, "/v1/nothing-here").send().unwrap();
    assert_error(resp, 404, "NotFound", "no endpoint GET /v1/nothing-here");
}

#[test]
fn stdout_is_captured_on_request_and_truncated_when_huge() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    s.deploy_ok("chatty", "demo/chatty@1.0.0", "");
    let v = json(
        s.req(Method::POST, "/v1/algo/demo/hello?stdout=true")
            .header("Content-Type", "text/plain")
            .body("Bob")
            .send()
            .unwrap(),
        200,
    );
    assert!(
        v["metadata"]["stdout"]
            .as_str()
            .unwrap()
            .contains("hello: greeting Bob"),
        "{v}"
    );

    // 50,000 lines of ~100 bytes (~5 MB) on stdout and stderr: more than the
    // 1 MiB capture limit. The call still succeeds; the capture says it was cut.
    let v = json(
        s.req(Method::POST, "/v1/algo/demo/chatty?stdout=true")
            .header("Content-Type", "text/plain")
            .body("50000")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["result"], "wrote 50000 lines");
    let out = v["metadata"]["stdout"].as_str().unwrap();
    assert!(
        out.contains("[wasmgrid: output truncated at 1048576 bytes"),
        "tail: {}",
        &out[out.len() - 200..]
    );
    assert!(out.len() < 1_100_000);
}

#[test]
fn version_resolution_follows_semver_prefixes() {
    let s = Server::start();
    for v in ["1.0.0", "1.2.0", "1.2.7", "1.10.0", "2.0.0-rc.1"] {
        s.deploy_ok("hello", &format!("demo/hello@{v}"), "");
    }
    let endpoint = |spec: &str| {
        let path = if spec.is_empty() {
            "demo/hello".to_string()
        } else {
            format!("demo/hello/{spec}")
        };
        let resp = s.call(&path, "text/plain", "x");
        assert_eq!(resp.status(), 200, "{spec}");
        resp.headers()["x-wasmgrid-endpoint"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        endpoint(""),
        "demo/hello/1.10.0",
        "latest skips pre-releases"
    );
    assert_eq!(endpoint("1"), "demo/hello/1.10.0");
    assert_eq!(endpoint("1.2"), "demo/hello/1.2.7");
    assert_eq!(endpoint("1.0.0"), "demo/hello/1.0.0");
    assert_eq!(
        endpoint("2.0.0-rc.1"),
        "demo/hello/2.0.0-rc.1",
        "pre-release when named exactly"
    );
    assert_error(
        s.call("demo/hello/2", "text/plain", "x"),
        404,
        "NotFound",
        "no released version 2.x.y",
    );

    // Deleting the newest makes `1` fall back; the number stays taken.
    let resp = s
        .req(Method::DELETE, "/v1/algorithms/demo/hello/versions/1.10.0")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(endpoint("1"), "demo/hello/1.2.7");
    assert_error(
        s.deploy("hello", "demo/hello@1.10.0", ""),
        409,
        "VersionExists",
        "never reused",
    );

    let v = json(
        s.req(Method::GET, "/v1/algorithms/demo/hello")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["latest"], "1.2.7");
    assert_eq!(v["versions"].as_array().unwrap().len(), 4);
    let v = json(s.req(Method::GET, "/v1/algorithms").send().unwrap(), 200);
    assert_eq!(v["algorithms"][0]["name"], "hello");
}

#[test]
fn void_output_runs_in_the_background() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    let v = json(
        s.req(Method::POST, "/v1/algo/demo/hello?output=void")
            .header("Content-Type", "text/plain")
            .body("x")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["async"], "void");
    assert!(v["request_id"].as_str().unwrap().starts_with("req-"));
}

#[test]
fn oversized_input_is_413() {
    let s = Server::start();
    s.deploy_ok("noop", "demo/noop@1.0.0", "");
    let big = vec![b'a'; 10 * 1024 * 1024 + 1];
    assert_error(
        s.call("demo/noop", "application/octet-stream", big),
        413,
        "PayloadTooLarge",
        "10 MiB",
    );
    let ok = vec![b'a'; 1024 * 1024];
    assert_eq!(
        s.call("demo/noop", "application/octet-stream", ok).status(),
        200
    );
}
