//! The invoke path: credentials never reach guests, abandoned calls stop and
//! are counted `Canceled`, background calls are admitted before they are
//! accepted, and Algorithmia's clients read errors with ordinary keys.

use crate::support::*;
use reqwest::Method;
use std::time::{Duration, Instant};

fn create_key(s: &Server, body: serde_json::Value) -> String {
    json(
        s.req(Method::POST, "/v1/keys").json(&body).send().unwrap(),
        201,
    )["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits up to `limit` for `cond`, which gets the time left; false if it never held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

#[test]
fn public_http_guests_never_see_wasmgrid_keys() {
    let s = Server::start();
    s.deploy_ok("http-echo", "demo/echo@1.0.0", "public=true");
    let topic = json(s.req(Method::PUT, "/v1/topics/orders").send().unwrap(), 201);
    let topic_key = topic["keys"]["key1"]
        .as_str()
        .expect("topic key1")
        .to_string();
    let headers = |name: &str, value: &str| {
        let resp = s
            .http
            .get(format!("{}/http/demo/echo/headers", s.url))
            .header(name, value)
            .header("x-test", "kept")
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().unwrap()
    };
    let admin = s.key.clone();
    for (name, value) in [
        ("Authorization", format!("Simple {admin}")),
        ("Authorization", format!("Bearer {admin}")),
        ("Authorization", format!("SharedAccessKey {admin}")),
        ("Authorization", admin.clone()),
        ("aeg-sas-key", admin.clone()),
        ("aeg-sas-key", topic_key.clone()),
        ("Authorization", format!("SharedAccessKey {topic_key}")),
    ] {
        let seen = headers(name, &value);
        assert!(seen.contains("x-test: kept"), "{seen}");
        assert!(
            !seen.contains("wg_") && !seen.contains("wgt_"),
            "{name}: {value} reached the guest:\n{seen}"
        );
        assert!(!seen.contains(&name.to_ascii_lowercase()), "{seen}");
    }
    // Credentials of the component's own scheme pass through.
    let seen = headers("Authorization", "Basic dXNlcjpwYXNz");
    assert!(seen.contains("authorization: Basic dXNlcjpwYXNz"), "{seen}");
}

#[test]
fn abandoned_http_call_stops_the_guest_and_is_counted_canceled() {
    let s = Server::start();
    // One permit and a long timeout: while the abandoned guest runs, every
    // other request is Overloaded.
    s.deploy_ok(
        "http-echo",
        "demo/echo@1.0.0",
        "public=true&timeout=60&concurrency=1",
    );
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let abandoned = impatient
        .get(format!("{}/http/demo/echo/spin", s.url))
        .send();
    assert!(abandoned.is_err(), "the spin route never answers");
    let mut last = String::new();
    let admitted = eventually(Duration::from_secs(10), || {
        let r = s
            .http
            .get(format!("{}/http/demo/echo/ping", s.url))
            .send()
            .unwrap();
        let ok = r.status() == 200;
        last = format!("{} {}", r.status(), r.text().unwrap_or_default());
        ok
    });
    assert!(
        admitted,
        "the abandoned guest still holds its permit: {last}"
    );
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &s,
            "wasmgrid_invocations_in_flight",
            &[]
        ) == Some(0.0)),
        "in-flight gauge did not return to 0"
    );
    assert_eq!(
        metric(
            &s,
            "wasmgrid_invocations_total",
            &["demo/echo/1.0.0", "outcome=\"Canceled\""]
        ),
        Some(1.0)
    );
}

#[test]
fn abandoned_algorithm_calls_leave_the_gauge_and_are_counted_canceled() {
    let s = Server::start();
    s.deploy_ok("sleep", "demo/sleep@1.0.0", "timeout=60");
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    for _ in 0..4 {
        let r = impatient
            .post(format!("{}/v1/algo/demo/sleep", s.url))
            .header("Authorization", format!("Simple {}", s.key))
            .header("Content-Type", "text/plain")
            .body("30000")
            .send();
        assert!(r.is_err(), "the call outlives the client's timeout");
    }
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &s,
            "wasmgrid_invocations_in_flight",
            &[]
        ) == Some(0.0)),
        "in-flight gauge did not return to 0: {:?}",
        metric(&s, "wasmgrid_invocations_in_flight", &[])
    );
    assert_eq!(
        metric(
            &s,
            "wasmgrid_invocations_total",
            &["demo/sleep/1.0.0", "outcome=\"Canceled\""]
        ),
        Some(4.0)
    );
    // A call that finishes is still counted as it ended.
    let v = json(s.call("demo/sleep", "text/plain", "1"), 200);
    assert_eq!(v["result"], "slept 1 ms");
    assert_eq!(
        metric(
            &s,
            "wasmgrid_invocations_total",
            &["demo/sleep/1.0.0", "outcome=\"ok\""]
        ),
        Some(1.0)
    );
}

#[test]
fn background_calls_past_the_concurrency_limit_are_overloaded() {
    let s = Server::start();
    s.deploy_ok("sleep", "demo/sleep@1.0.0", "concurrency=2");
    // The bare key form (Algorithmia's clients): Overloaded keeps its status.
    let void = || {
        s.http
            .post(format!("{}/v1/algo/demo/sleep?output=void", s.url))
            .header("Authorization", &s.key)
            .header("Content-Type", "text/plain")
            .body("3000")
            .send()
            .unwrap()
    };
    for _ in 0..2 {
        let v = json(void(), 200);
        assert_eq!(v["async"], "void");
    }
    let resp = void();
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_error(resp, 503, "Overloaded", "concurrency limit of 2");
    // Once the admitted calls finish, background calls are accepted again.
    assert!(
        eventually(Duration::from_secs(20), || void().status() == 200),
        "background calls stayed Overloaded"
    );
}

#[test]
fn bare_keys_get_algorithmia_errors_unless_the_key_says_otherwise() {
    let s = Server::start();
    s.deploy_ok("json-stats", "demo/json-stats@1.0.0", "");
    let call = |path: &str, auth: &str| {
        s.http
            .post(format!("{}/v1/algo/{path}", s.url))
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .body("[]")
            .send()
            .unwrap()
    };
    let stats = "demo/json-stats";
    let ordinary = create_key(
        &s,
        serde_json::json!({"owner": "demo", "scopes": ["invoke"]}),
    );
    let none = create_key(
        &s,
        serde_json::json!({"owner": "demo", "scopes": ["invoke"], "compat": "none"}),
    );
    let algorithmia = create_key(
        &s,
        serde_json::json!({"owner": "demo", "scopes": ["invoke"], "compat": "algorithmia"}),
    );

    // The bare form: the algorithm's failure as 200, the real status in a header.
    for key in [&s.key, &ordinary, &algorithmia] {
        let resp = call(stats, key);
        assert_eq!(resp.headers()["x-wasmgrid-status"], "400");
        assert_error(resp, 200, "AlgorithmError", "need at least one number");
    }
    // Simple and Bearer keep the status table, unless the key asks for Algorithmia's.
    for auth in [format!("Simple {ordinary}"), format!("Bearer {}", s.key)] {
        let resp = call(stats, &auth);
        assert!(resp.headers().get("x-wasmgrid-status").is_none());
        assert_error(resp, 400, "AlgorithmError", "need at least one number");
    }
    let resp = call(stats, &format!("Simple {algorithmia}"));
    assert_error(resp, 200, "AlgorithmError", "need at least one number");
    // An explicit "none" wins over the bare form.
    assert_error(
        call(stats, &none),
        400,
        "AlgorithmError",
        "need at least one number",
    );
    // Requests that fail before the algorithm runs keep their statuses.
    assert_error(call("demo/missing", &ordinary), 404, "NotFound", "");
    assert_error(call(stats, "wg_nope_nope"), 401, "AuthError", "unknown");
    let stranger = create_key(
        &s,
        serde_json::json!({"owner": "bob", "scopes": ["invoke"]}),
    );
    // Another owner's algorithm answers exactly as a missing one.
    assert_error(call(stats, &stranger), 404, "NotFound", "not found");
    assert_error(call("demo/missing", &algorithmia), 404, "NotFound", "");

    // The setting is tri-state and validated.
    let keys = json(s.req(Method::GET, "/v1/keys").send().unwrap(), 200);
    let compat_of = |key: &str| {
        let id = key.split('_').nth(1).unwrap();
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()["compat"]
            .clone()
    };
    assert_eq!(compat_of(&ordinary), serde_json::Value::Null);
    assert_eq!(compat_of(&none), "none");
    assert_eq!(compat_of(&algorithmia), "algorithmia");
    assert_error(
        s.req(Method::POST, "/v1/keys")
            .json(&serde_json::json!({"owner": "demo", "scopes": ["invoke"], "compat": "bogus"}))
            .send()
            .unwrap(),
        400,
        "InputError",
        "unknown compat \"bogus\"",
    );
}
