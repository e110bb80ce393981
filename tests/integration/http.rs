//! wasi:http components (`wasi:http/proxy`, as for `wasmtime serve`): served at
//! /http/{owner}/{name}[@version]/… and at route prefixes, with the sandbox
//! limits, outbound allow-lists and per-version auth.
//!
//! Guests: `http-hello` and `http-echo` (Rust, the `wasi` crate) and
//! `js-http-hello` (JavaScript, componentize-js fetch-event; built by
//! tests/sdk/build_sdk_examples.sh).

use crate::support::*;
use reqwest::Method;
use std::time::{Duration, Instant};

/// A request without the admin key.
fn anon(s: &Server, method: Method, path: &str) -> reqwest::blocking::RequestBuilder {
    s.http.request(method, format!("{}{path}", s.url))
}

fn endpoint(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get("x-wasmgrid-endpoint")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn text(resp: reqwest::blocking::Response, status: u16) -> String {
    let got = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    assert_eq!(got, status, "body: {body}");
    body
}

#[test]
fn hello_is_served_at_its_http_path_and_route_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    let v = s.deploy_ok("http-hello", "demo/hello@1.0.0", "public=true&route=/hello");
    assert_eq!(v["kind"], "http");
    assert_eq!(v["public"], true);
    assert_eq!(v["route"], "/hello");

    let check = |s: &Server| {
        for path in [
            "/http/demo/hello",
            "/http/demo/hello/",
            "/http/demo/hello@1.0.0/any/path?x=1",
            "/hello",
            "/hello/",
            "/hello/world?q=2",
        ] {
            let resp = anon(s, Method::GET, path).send().unwrap();
            assert_eq!(endpoint(&resp), "demo/hello/1.0.0", "{path}");
            assert_eq!(
                resp.headers()["content-type"].to_str().unwrap(),
                "text/plain"
            );
            assert_eq!(text(resp, 200), "Hello, world!", "{path}");
        }
        // A route prefix ends at a segment boundary (asked with a key: without
        // one, paths nothing serves answer 401 like private routes).
        assert_error(
            s.req(Method::GET, "/hellox").send().unwrap(),
            404,
            "NotFound",
            "no endpoint",
        );
    };
    check(&s);
    assert_eq!(s.terminate().code(), Some(0));
    let s2 = Server::start_in(tmp.path(), &[]);
    check(&s2);

    // It is not an algorithm, and /http does not serve algorithms.
    assert_error(
        s2.call("demo/hello", "text/plain", "x"),
        400,
        "InputError",
        "/http/demo/hello@1.0.0/",
    );
    s2.deploy_ok("hello", "demo/algo@1.0.0", "");
    assert_error(
        s2.req(Method::GET, "/http/demo/algo/").send().unwrap(),
        400,
        "InputError",
        "POST /v1/algo/demo/algo/1.0.0",
    );
    assert_error(
        s2.req(Method::GET, "/http/demo/missing/").send().unwrap(),
        404,
        "NotFound",
        "demo/missing",
    );
}

#[test]
fn http_settings_are_checked_at_deploy() {
    let s = Server::start();
    s.deploy_ok("http-hello", "demo/a@1.0.0", "route=/shared");
    // A route belongs to one algorithm at a time; another version of the
    // same algorithm may keep or move it.
    assert_error(
        s.deploy("http-hello", "demo/b@1.0.0", "route=/shared"),
        400,
        "InputError",
        "already served by demo/a",
    );
    s.deploy_ok("http-hello", "demo/a@1.1.0", "route=/shared");
    for (query, fragment) in [
        ("route=/v1/x", "wasmgrid's own paths"),
        ("route=/http", "wasmgrid's own paths"),
        ("route=/ui", "wasmgrid's own paths"),
        ("route=/topics/x", "wasmgrid's own paths"),
        ("route=/openapi.json", "wasmgrid's own paths"),
        ("route=hello", "must start with /"),
        ("route=/a/", "trailing /"),
        ("route=/a/../b", "segments"),
        ("allow_outbound=http://example.com", "allow_outbound"),
        ("allow_outbound=example.com:http", "allow_outbound"),
    ] {
        assert_error(
            s.deploy("http-hello", "demo/c@1.0.0", query),
            400,
            "InputError",
            fragment,
        );
    }
    // HTTP settings on an algorithm are refused, not ignored.
    assert_error(
        s.deploy("hello", "demo/algo@1.0.0", "public=true"),
        400,
        "InputError",
        "wasi:http components only",
    );
    // The rejected deploys took no version numbers.
    s.deploy_ok("http-hello", "demo/c@1.0.0", "");
    s.deploy_ok("hello", "demo/algo@1.0.0", "");
}

#[test]
fn keys_guard_non_public_versions_and_never_reach_the_guest() {
    let s = Server::start();
    s.deploy_ok("http-echo", "demo/echo@1.0.0", "");
    let path = "/http/demo/echo/a/b?c=d&e=%2F";
    let send = |auth: Option<&str>| {
        let mut r = anon(&s, Method::POST, path)
            .header("x-test", "passed through")
            .body("request body");
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send().unwrap()
    };
    assert_error(send(None), 401, "AuthError", "missing API key");
    assert_error(
        send(Some("Simple wg_nope_nope")),
        401,
        "AuthError",
        "unknown or revoked",
    );
    let other_owner = create_key(&s, "someone-else", &["invoke"]);
    // Another owner's non-public component reads as a missing one.
    assert_eq!(send(Some(&other_owner)).status(), 404);
    let no_invoke = create_key(&s, "demo", &["data:read"]);
    assert_eq!(send(Some(&no_invoke)).status(), 403);

    let invoker = create_key(&s, "demo", &["invoke"]);
    let resp = send(Some(&format!("Bearer {invoker}")));
    assert_eq!(endpoint(&resp), "demo/echo/1.0.0");
    assert_eq!(
        text(resp, 200),
        "method POST\npath /a/b?c=d&e=%2F\nauthorization -\nx-test passed through\nbody request body"
    );

    // A public version needs no key and gets the Authorization header as sent
    // (the guest may do its own auth).
    s.deploy_ok("http-echo", "demo/echo@1.1.0", "public=true");
    let body = text(
        anon(&s, Method::PUT, "/http/demo/echo/x")
            .header("Authorization", "Basic dXNlcjpwdw==")
            .send()
            .unwrap(),
        200,
    );
    assert!(
        body.starts_with("method PUT\npath /x\nauthorization Basic dXNlcjpwdw==\n"),
        "{body}"
    );
    // 1.0.0 still needs the key.
    assert_error(
        anon(&s, Method::GET, "/http/demo/echo@1.0.0/")
            .send()
            .unwrap(),
        401,
        "AuthError",
        "missing API key",
    );
}

#[test]
fn version_specs_select_the_version() {
    let s = Server::start();
    for v in ["1.0.0", "1.1.0", "2.0.0", "2.1.0-beta.1"] {
        s.deploy_ok("http-hello", &format!("demo/v@{v}"), "public=true");
    }
    for (spec, want) in [
        ("", "2.0.0"),
        ("@latest", "2.0.0"),
        ("@1", "1.1.0"),
        ("@1.0", "1.0.0"),
        ("@1.1.0", "1.1.0"),
        ("@2", "2.0.0"),
        ("@2.1.0-beta.1", "2.1.0-beta.1"),
    ] {
        let resp = anon(&s, Method::GET, &format!("/http/demo/v{spec}/"))
            .send()
            .unwrap();
        assert_eq!(endpoint(&resp), format!("demo/v/{want}"), "spec {spec:?}");
        assert_eq!(text(resp, 200), "Hello, world!");
    }
    // Without a key only a public version is served: a spec that selects
    // none answers 401 like a private or missing component; with a key, the
    // spec's own error.
    for spec in ["@3", "@1.x"] {
        assert_error(
            anon(&s, Method::GET, &format!("/http/demo/v{spec}/"))
                .send()
                .unwrap(),
            401,
            "AuthError",
            "missing API key",
        );
    }
    assert_error(
        s.req(Method::GET, "/http/demo/v@3/").send().unwrap(),
        404,
        "NotFound",
        "no released version 3.x.y",
    );
    assert_error(
        s.req(Method::GET, "/http/demo/v@1.x/").send().unwrap(),
        400,
        "InputError",
        "bad version spec",
    );
    // Deleting the latest moves unversioned requests to the next one.
    assert_eq!(
        s.req(Method::DELETE, "/v1/algorithms/demo/v/versions/2.0.0")
            .send()
            .unwrap()
            .status(),
        204
    );
    let resp = anon(&s, Method::GET, "/http/demo/v/").send().unwrap();
    assert_eq!(endpoint(&resp), "demo/v/1.1.0");
}

#[test]
fn timeouts_memory_caps_and_crashes_are_errors_for_that_request_only() {
    let s = Server::start();
    s.deploy_ok(
        "http-echo",
        "demo/echo@1.0.0",
        "public=true&timeout=1&memory=32",
    );
    let get = |p: &str| {
        anon(&s, Method::GET, &format!("/http/demo/echo{p}"))
            .send()
            .unwrap()
    };
    let started = Instant::now();
    assert_error(get("/spin"), 504, "TimeoutError", "timeout of 1s");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_error(get("/hog"), 500, "OutOfMemoryError", "memory cap of 32 MiB");
    assert_error(
        get("/panic"),
        500,
        "CrashError",
        "the http-echo guest panicked on purpose",
    );
    assert_error(
        get("/silent"),
        500,
        "CrashError",
        "without sending a response",
    );
    // The next request gets a fresh instance and works.
    assert!(text(get("/fine"), 200).starts_with("method GET\npath /fine\n"));
    // A body written in many chunks after the head arrives whole.
    let body = text(get("/stream?n=200"), 200);
    assert_eq!(body.len(), 200 * 1024);
    assert!(body.starts_with("00000000 x"));
    assert!(body.ends_with("x\n"));
    assert!(body.contains("\n00000199 "));
}

#[test]
fn outgoing_http_is_denied_unless_the_host_is_allowed() {
    let s = Server::start();
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let fetch = |spec: &str| {
        let url = format!("http://127.0.0.1:{port}/healthz");
        anon(
            &s,
            Method::GET,
            &format!("/http/demo/fetch{spec}/fetch?url={url}"),
        )
        .send()
        .unwrap()
    };
    s.deploy_ok("http-echo", "demo/fetch@1.0.0", "public=true");
    assert_eq!(
        text(fetch("@1.0.0"), 502),
        "error ErrorCode::HttpRequestDenied\n"
    );
    // Another port of the same host is not allowed either.
    let other_port = if port == "1" { "2" } else { "1" };
    s.deploy_ok(
        "http-echo",
        "demo/fetch@1.1.0",
        &format!("public=true&allow_outbound=127.0.0.1:{other_port}"),
    );
    assert_eq!(
        text(fetch("@1.1.0"), 502),
        "error ErrorCode::HttpRequestDenied\n"
    );
    let v = s.deploy_ok(
        "http-echo",
        "demo/fetch@1.2.0",
        &format!("public=true&allow_outbound=example.invalid,127.0.0.1:{port}"),
    );
    assert_eq!(
        v["allow_outbound"],
        serde_json::json!(["example.invalid", format!("127.0.0.1:{port}")])
    );
    assert_eq!(text(fetch("@1.2.0"), 200), "status 200\n");
}

#[test]
fn javascript_fetch_event_component_is_served() {
    let path = repo_root().join("guest-examples/js-http-hello/out/js_http_hello.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run tests/sdk/build_sdk_examples.sh (scripts/test.sh does)",
            path.display()
        )
    });
    let s = Server::start();
    let v = json(
        s.req(
            Method::PUT,
            "/v1/algorithms/demo/js-hello/versions/1.0.0?public=true&memory=128",
        )
        .body(bytes)
        .send()
        .unwrap(),
        201,
    );
    assert_eq!(v["kind"], "http");
    let resp = anon(&s, Method::GET, "/http/demo/js-hello/")
        .send()
        .unwrap();
    assert_eq!(text(resp, 200), "Hello, world!");
    let v = json(
        anon(&s, Method::POST, "/http/demo/js-hello/items/7?sort=asc")
            .body("from the test")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(
        v,
        serde_json::json!({"method": "POST", "path": "/items/7", "query": "?sort=asc", "body": "from the test"})
    );
}

#[test]
fn manifest_and_cli_deploy_http_components() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("wasmgrid.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[server]
addr = "127.0.0.1:0"

[[algorithm]]
name = "demo/web"
version = "1.0.0"
source = "{}"
public = true
route = "/site"
"#,
            guests_dir().join("http_hello.wasm").display()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("up")
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data.join("up.log")).unwrap())
        .spawn()
        .unwrap();
    let s = Server::attach(&data, None);
    let resp = anon(&s, Method::GET, "/site/index.html").send().unwrap();
    assert_eq!(endpoint(&resp), "demo/web/1.0.0");
    assert_eq!(text(resp, 200), "Hello, world!");

    // The CLI's flags reach the deploy settings.
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let out = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(&data)
        .args([
            "deploy",
            guests_dir().join("http_echo.wasm").to_str().unwrap(),
            "demo/echo@1.0.0",
            "--public",
            "--allow-outbound",
            &format!("example.invalid,127.0.0.1:{port}"),
            "--route",
            "/echo",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deployed demo/echo/1.0.0 (http,"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}/http/demo/echo@1.0.0/ and {}/echo (public)",
            s.url, s.url
        )),
        "{stdout}"
    );
    let body = text(
        anon(
            &s,
            Method::GET,
            &format!("/echo/fetch?url=http://127.0.0.1:{port}/healthz"),
        )
        .send()
        .unwrap(),
        200,
    );
    assert_eq!(body, "status 200\n");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        wait_timeout(&mut child, Duration::from_secs(30))
            .unwrap()
            .success()
    );
}
