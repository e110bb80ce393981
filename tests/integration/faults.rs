//! Faulty guests fail alone: each gets its own error type while other calls go on.

use crate::support::*;
use std::time::{Duration, Instant};

/// Runs `f` on a thread while `hello` is called repeatedly on this one; asserts
/// every `hello` call succeeded while `f` was running.
fn with_concurrent_hello<T: Send + 'static>(
    s: &Server,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let handle = std::thread::spawn(f);
    let mut calls = 0;
    while !handle.is_finished() || calls == 0 {
        let v = json(s.call("demo/hello", "text/plain", "still here"), 200);
        assert_eq!(v["result"], "Hello, still here!");
        calls += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.join().expect("fault call thread")
}

fn server_with_faults() -> Server {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    s.deploy_ok("spin-forever", "demo/spin@1.0.0", "timeout=2");
    s.deploy_ok("memory-hog", "demo/hog@1.0.0", "memory=64");
    s.deploy_ok("deep-recursion", "demo/recurse@1.0.0", "");
    s.deploy_ok("panics", "demo/panics@1.0.0", "");
    s
}

fn post(url: String, key: String) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .post(url)
        .header("Authorization", format!("Simple {key}"))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .unwrap()
}

#[test]
fn each_fault_has_its_own_error_type() {
    let s = server_with_faults();
    let cases = [
        ("demo/hog", 500, "OutOfMemoryError", "memory cap of 64 MiB"),
        (
            "demo/recurse",
            500,
            "StackOverflowError",
            "overflowed its stack",
        ),
        (
            "demo/panics",
            500,
            "CrashError",
            "this algorithm always panics",
        ),
        ("demo/spin?timeout=1", 504, "TimeoutError", "timeout of 1s"),
    ];
    for (path, status, ty, fragment) in cases {
        let url = format!("{}/v1/algo/{path}", s.url);
        let key = s.key.clone();
        let resp = with_concurrent_hello(&s, move || post(url, key));
        assert_error(resp, status, ty, fragment);
    }
    // With a 4 KiB buffer per frame, a Rust guest's shadow stack in linear memory
    // runs out first: an out-of-bounds fault, still reported as a stack overflow.
    let resp = s.call("demo/recurse", "text/plain", "buffer");
    let msg = assert_error(resp, 500, "StackOverflowError", "overflowed its stack");
    assert!(msg.contains("shadow stack"), "{msg}");
    // The server is still healthy.
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn timeout_stops_cpu_loops_promptly() {
    let s = server_with_faults();
    // The deploy-time timeout (2 s) applies without ?timeout=, and ?timeout= may
    // only lower it.
    let started = Instant::now();
    assert_error(
        s.call("demo/spin", "text/plain", "x"),
        504,
        "TimeoutError",
        "timeout of 2s",
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "stopped early: {took:?}");
    // Generous bound for a loaded CI machine; the precise figure is measured in
    // docs/PERFORMANCE.md.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let resp = s
        .req(reqwest::Method::POST, "/v1/algo/demo/spin?timeout=60")
        .body("x")
        .send()
        .unwrap();
    assert_error(resp, 504, "TimeoutError", "timeout of 2s");
}

#[test]
fn two_spinning_guests_do_not_starve_the_server() {
    let s = server_with_faults();
    // A longer timeout than demo/spin's 2 s, so a loaded test machine still
    // has time for several round trips while both guests spin.
    s.deploy_ok("spin-forever", "demo/spin-long@1.0.0", "timeout=4");
    let spins: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{}/v1/algo/demo/spin-long", s.url);
            let key = s.key.clone();
            std::thread::spawn(move || post(url, key))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Both cores are busy with guests; health checks and other calls still answer.
    let mut served = 0;
    while spins.iter().any(|h| !h.is_finished()) {
        assert_eq!(
            s.http
                .get(format!("{}/healthz", s.url))
                .send()
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            json(s.call("demo/hello", "text/plain", "x"), 200)["result"],
            "Hello, x!"
        );
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        served >= 3,
        "only {served} calls were served while the guests spun"
    );
    for h in spins {
        assert_error(h.join().unwrap(), 504, "TimeoutError", "timeout");
    }
}

#[test]
fn concurrency_limit_answers_overloaded() {
    let s = Server::start();
    s.deploy_ok("spin-forever", "demo/spin@1.0.0", "timeout=3&concurrency=1");
    let url = format!("{}/v1/algo/demo/spin", s.url);
    let key = s.key.clone();
    let first = std::thread::spawn(move || post(url, key));
    std::thread::sleep(Duration::from_millis(500));
    let resp = s.call("demo/spin", "text/plain", "x");
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("1".into())
    );
    assert_error(resp, 503, "Overloaded", "concurrency limit of 1");
    assert_error(first.join().unwrap(), 504, "TimeoutError", "timeout");
    // With the permit back, calls are admitted again.
    assert_error(
        s.call("demo/spin?timeout=0.2", "text/plain", "x"),
        504,
        "TimeoutError",
        "timeout",
    );
}
