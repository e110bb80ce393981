//! Deploy validation: versions, conflicts and component checks.

use crate::support::*;
use reqwest::Method;

#[test]
fn deploy_reports_digest_kind_and_settings() {
    let s = Server::start();
    let v = s.deploy_ok(
        "hello",
        "demo/hello@1.0.0",
        "timeout=5&memory=64&concurrency=3",
    );
    assert_eq!(v["endpoint"], "demo/hello/1.0.0");
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["kind"], "algorithm");
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(v["compile_ms"].is_u64());
    assert_eq!(v["timeout"], 5);
    assert_eq!(v["memory"], 64);
    assert_eq!(v["concurrency"], 3);
    let r = json(
        s.req(Method::GET, "/v1/algorithms/demo/hello/versions/1.0.0")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(r["timeout"], 5);
    assert_eq!(r["digest"], v["digest"]);
}

#[test]
fn versions_are_never_reused() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    assert_error(
        s.deploy("hello", "demo/hello@1.0.0", ""),
        409,
        "VersionExists",
        "already published",
    );
    assert_eq!(
        s.req(Method::DELETE, "/v1/algorithms/demo/hello/versions/1.0.0")
            .send()
            .unwrap()
            .status(),
        204
    );
    assert_error(
        s.deploy("noop", "demo/hello@1.0.0", ""),
        409,
        "VersionExists",
        "never reused",
    );
    assert_error(
        s.call("demo/hello", "text/plain", "x"),
        404,
        "NotFound",
        "not found",
    );
}

#[test]
fn bad_deploys_name_the_problem() {
    let s = Server::start();
    let put = |path: &str, body: Vec<u8>| s.req(Method::PUT, path).body(body).send().unwrap();
    assert_error(
        put("/v1/algorithms/demo/x/versions/1.0.0", b"hello".to_vec()),
        400,
        "InputError",
        "not WebAssembly",
    );
    assert_error(
        put("/v1/algorithms/demo/x/versions/1.0.0", Vec::new()),
        400,
        "InputError",
        "empty",
    );
    // The smallest valid core module: a module, not a component.
    assert_error(
        put(
            "/v1/algorithms/demo/x/versions/1.0.0",
            b"\0asm\x01\0\0\0".to_vec(),
        ),
        400,
        "InputError",
        "core WebAssembly module",
    );
    // A wasi:cli command component: the wrong world.
    let msg = assert_error(
        put(
            "/v1/algorithms/demo/x/versions/1.0.0",
            guest("not-an-algorithm"),
        ),
        400,
        "InputError",
        "wasmgrid:algorithm/handler@0.1.x",
    );
    assert!(msg.contains("wasi:cli/run"), "names what it found: {msg}");
    // A component truncated mid-way fails validation with a message.
    let mut cut = guest("hello");
    cut.truncate(cut.len() / 2);
    assert_error(
        put("/v1/algorithms/demo/x/versions/1.0.0", cut),
        400,
        "InputError",
        "failed to validate",
    );
    assert_error(
        put("/v1/algorithms/demo/x/versions/1.0", guest("hello")),
        400,
        "InputError",
        "invalid version",
    );
    assert_error(
        put("/v1/algorithms/demo/x%20y/versions/1.0.0", guest("hello")),
        400,
        "InputError",
        "invalid algorithm name",
    );
    assert_error(
        put(
            "/v1/algorithms/demo/x/versions/1.0.0?timeout=0",
            guest("hello"),
        ),
        400,
        "InputError",
        "timeout=0 is out of range",
    );
    assert_error(
        put(
            "/v1/algorithms/demo/x/versions/1.0.0?memory=lots",
            guest("hello"),
        ),
        400,
        "InputError",
        "memory=\"lots\"",
    );
    assert_error(
        put(
            "/v1/algorithms/demo/x/versions/1.0.0?grant=file:///etc",
            guest("hello"),
        ),
        400,
        "InputError",
        "invalid grant",
    );
    // None of the failures took the version number.
    s.deploy_ok("hello", "demo/x@1.0.0", "");
}
