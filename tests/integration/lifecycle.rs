//! Restarts, `wasmgrid up`, and graceful shutdown.

use crate::support::*;
use reqwest::Method;
use std::process::{Command, Stdio};
use std::time::Duration;

fn metric(s: &Server, name: &str) -> f64 {
    crate::support::metric(s, name, &[]).unwrap_or_else(|| panic!("metric {name} missing"))
}

#[test]
fn restart_keeps_versions_without_recompiling() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    s.deploy_ok("hello", "demo/hello@1.0.0", "timeout=7");
    s.deploy_ok("json-stats", "demo/json-stats@1.0.0", "");
    assert_eq!(metric(&s, "wasmgrid_component_compilations"), 2.0);
    assert!(s.terminate().success());

    let s = Server::start_in(tmp.path(), &[]);
    assert_eq!(
        json(s.call("demo/hello/1", "text/plain", "again"), 200)["result"],
        "Hello, again!"
    );
    assert_eq!(
        json(s.call("demo/json-stats", "application/json", "[2]"), 200)["result"]["count"],
        1
    );
    assert_eq!(
        metric(&s, "wasmgrid_component_compilations"),
        0.0,
        "loaded precompiled artifacts"
    );
    let r = json(
        s.req(Method::GET, "/v1/algorithms/demo/hello/versions/1.0.0")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(r["timeout"], 7, "settings survive a restart");
    assert_error(
        s.deploy("hello", "demo/hello@1.0.0", ""),
        409,
        "VersionExists",
        "already published",
    );
}

#[test]
fn changed_engine_recompiles_from_the_original() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    assert!(s.terminate().success());
    // Simulate an artifact from another engine build: the file under this
    // engine's hash is gone (as after a wasmtime upgrade).
    for e in std::fs::read_dir(tmp.path().join("compiled")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let s = Server::start_in(tmp.path(), &[]);
    assert_eq!(
        json(s.call("demo/hello", "text/plain", "x"), 200)["result"],
        "Hello, x!"
    );
    assert_eq!(metric(&s, "wasmgrid_component_compilations"), 1.0);
}

#[test]
fn sigterm_drains_in_flight_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    s.deploy_ok("sleep", "demo/sleep@1.0.0", "");
    let url = format!("{}/v1/algo/demo/sleep", s.url);
    let key = s.key.clone();
    let call = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(url)
            .header("Authorization", key)
            .header("Content-Type", "text/plain")
            .body("1500")
            .send()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(400));
    let status = s.terminate();
    assert!(status.success(), "clean exit: {status:?}");
    let v = json(call.join().unwrap(), 200);
    assert_eq!(v["result"], "slept 1500 ms");
    assert!(
        !tmp.path().join("server.json").exists(),
        "server.json removed on exit"
    );
    let log = s.log();
    assert!(
        log.contains("draining in-flight calls") && log.contains("stopped"),
        "{log}"
    );
}

fn write_manifest(dir: &std::path::Path, hello_source: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("wasmgrid.toml");
    let text = format!(
        r#"
[server]
addr = "127.0.0.1:0"

[[algorithm]]
name = "demo/hello"
version = "1.0.0"
source = "{}"
timeout = 10
[algorithm.build]
command = "true"

[[algorithm]]
name = "demo/json-stats"
version = "1.0.0"
source = "{}"
"#,
        hello_source.display(),
        guests_dir().join("json_stats.wasm").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn up(manifest: &std::path::Path, data_dir: &std::path::Path) -> (std::process::Child, Server) {
    let _ = std::fs::remove_file(data_dir.join("server.json"));
    std::fs::create_dir_all(data_dir).unwrap();
    let child = Command::new(bin())
        .arg("up")
        .arg(manifest)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("up.log")).unwrap())
        .spawn()
        .unwrap();
    let s = Server::attach(data_dir, None);
    (child, s)
}

#[test]
fn up_serves_the_manifest_and_redeploys_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = tmp.path().join("hello.wasm");
    std::fs::copy(guests_dir().join("hello.wasm"), &hello).unwrap();
    let manifest = write_manifest(tmp.path(), &hello);
    let data = tmp.path().join("data");

    let (mut child, s) = up(&manifest, &data);
    assert_eq!(
        json(s.call("demo/hello", "text/plain", "up"), 200)["result"],
        "Hello, up!"
    );
    assert_eq!(
        json(
            s.call("demo/json-stats/1.0.0", "application/json", "[5]"),
            200
        )["result"]["max"],
        5.0
    );
    let log = std::fs::read_to_string(data.join("up.log")).unwrap_or_default();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        wait_timeout(&mut child, Duration::from_secs(30))
            .unwrap()
            .success(),
        "{log}"
    );

    // A second `up` with nothing changed deploys nothing; after a "rebuild" (a
    // different component at the same path) it publishes the next patch.
    let (mut child, s) = up(&manifest, &data);
    let v = json(
        s.req(Method::GET, "/v1/algorithms/demo/hello")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["taken"], serde_json::json!(["1.0.0"]));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        wait_timeout(&mut child, Duration::from_secs(30))
            .unwrap()
            .success()
    );

    std::fs::copy(guests_dir().join("noop.wasm"), &hello).unwrap();
    let (mut child, s) = up(&manifest, &data);
    let v = json(
        s.req(Method::GET, "/v1/algorithms/demo/hello")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["latest"], "1.0.1", "{v}");
    let resp = s.call("demo/hello/1", "text/plain", "echo");
    assert_eq!(resp.headers()["x-wasmgrid-endpoint"], "demo/hello/1.0.1");
    assert_eq!(
        json(resp, 200)["result"],
        "echo",
        "the rebuilt component serves"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        wait_timeout(&mut child, Duration::from_secs(30))
            .unwrap()
            .success()
    );
}

/// A manifest the server refuses once it listens (a subscription on a topic
/// that does not exist) stops `up` through the same drain as SIGTERM: it exits
/// non-zero with the server's reason and leaves no `server.json` behind.
#[test]
fn up_stops_when_applying_the_manifest_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("wasmgrid.toml");
    let text = format!(
        r#"
[server]
addr = "127.0.0.1:0"

[[algorithm]]
name = "demo/hello"
version = "1.0.0"
source = "{}"

[[subscription]]
topic = "no-such-topic"
name = "x"
destination = {{ algorithm = "demo/hello" }}
"#,
        guests_dir().join("hello.wasm").display()
    );
    std::fs::write(&manifest, text).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let log = tmp.path().join("up.log");
    let mut child = Command::new(bin())
        .arg("up")
        .arg(&manifest)
        .arg("--no-build")
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(60)).expect("up exits");
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("applying the manifest's collections, topics and subscriptions")
            && err.contains("applying subscription no-such-topic/x")
            && err.contains("topic no-such-topic not found"),
        "{err}"
    );
    assert!(
        err.contains("wasmgrid listening")
            && err.contains("draining in-flight calls")
            && err.contains("stopped"),
        "the failure came after the server listened, and it drained: {err}"
    );
    assert!(!err.contains("Press Ctrl-C to stop."), "{err}");
    assert!(
        !data.join("server.json").exists(),
        "server.json removed on exit"
    );
}

#[test]
fn cli_deploys_and_calls() {
    let s = Server::start();
    let file = guests_dir().join("hello.wasm");
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&[
        "deploy",
        file.to_str().unwrap(),
        "demo/hello@1.0.0",
        "--timeout",
        "9",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("deployed demo/hello/1.0.0"), "{out}");
    let (ok, out, err) = run(&["call", "demo/hello@1", "World"]);
    assert!(ok, "{err}");
    assert_eq!(out, "Hello, World!\n");
    let (ok, _, err) = run(&["call", "demo/nope", "x"]);
    assert!(!ok);
    assert!(
        err.contains("NotFound (404)") && err.contains("demo/nope not found"),
        "{err}"
    );
    let (ok, out, _) = run(&["algos"]);
    assert!(ok && out.contains("demo/hello  latest 1.0.0"), "{out}");
    let (ok, out, err) = run(&["key", "create", "--owner", "demo", "--scope", "invoke"]);
    assert!(ok, "{err}");
    let key = out.trim().to_string();
    assert!(key.starts_with("wg_"));
    let out = Command::new(bin())
        .args(["--url", &s.url, "--key", &key, "call", "demo/hello", "key"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, key!\n");
    let (ok, _, err) = run(&["deploy", "/nonexistent.wasm", "demo/x@1.0.0"]);
    assert!(
        !ok && err.contains("cannot read /nonexistent.wasm"),
        "{err}"
    );
    let (ok, _, err) = run(&["deploy", file.to_str().unwrap(), "hello"]);
    assert!(!ok && err.contains("expected owner/name"), "{err}");
}
