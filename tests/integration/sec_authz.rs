//! Authorization order and existence oracles: a key learns nothing about
//! resources it may not see (another owner's answer exactly as missing ones),
//! keys are checked before any lookup or body validation, subscriptions are
//! checked against the rights their deliveries will have, and request bodies
//! reject unknown fields and oversized strings.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ALL_SCOPES: &[&str] = &["invoke", "deploy", "publish", "data:read", "data:write"];

/// A request with `key` (or none), a JSON or text body.
fn send(
    s: &Server,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = s.http.request(method, format!("{}{path}", s.url));
    if let Some(k) = key {
        r = r.header("Authorization", format!("Simple {k}"));
    }
    if let Some(b) = body {
        let ct = if b.starts_with('{') {
            "application/json"
        } else {
            "text/plain"
        };
        r = r.header("Content-Type", ct).body(b.to_string());
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

fn ok(s: &Server, key: &str, method: &str, path: &str, body: Option<&str>) {
    let (status, text) = send(s, Some(key), method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
}

/// Every route that names a resource of `demo`, as alice sends it: bodies the
/// handlers would refuse anyway, so that only the order of checks decides.
const PROBES: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/v1/algorithms/demo/x", None),
    ("GET", "/v1/algorithms/demo/x/versions/1.0.0", None),
    ("DELETE", "/v1/algorithms/demo/x/versions/1.0.0", None),
    ("POST", "/v1/algo/demo/x", Some("hi")),
    ("POST", "/v1/algo/demo/x/1.0.0", Some("hi")),
    ("POST", "/v1/algo/demo/x/jobs", Some("{}")),
    ("GET", "/v1/algorithms/demo/x/secrets", None),
    ("PUT", "/v1/algorithms/demo/x/secrets/token", Some("v")),
    ("DELETE", "/v1/algorithms/demo/x/secrets/token", None),
    ("GET", "/http/demo/web/x", None),
    ("GET", "/v1/data/demo/priv/f.txt", None),
    ("GET", "/v1/data/demo/priv", None),
    ("PUT", "/v1/data/demo/priv/g.txt", Some("x")),
    ("DELETE", "/v1/data/demo/priv/f.txt", None),
    (
        "PATCH",
        "/v1/data/demo/priv",
        Some(r#"{"acl": {"read": [], "write": []}}"#),
    ),
    ("POST", "/v1/data/demo/priv", Some(r#"{"bogus": 1}"#)),
    (
        "POST",
        "/v1/algo/alice/noop/jobs",
        Some(r#"{"input": "data://demo/priv/", "output": "data://alice/out/"}"#),
    ),
    (
        "POST",
        "/v1/algo/alice/noop/jobs",
        Some(r#"{"input": "data://alice/in/", "output": "data://demo/priv/out/"}"#),
    ),
    ("GET", "/v1/topics/demotopic", None),
    ("DELETE", "/v1/topics/demotopic", None),
    ("GET", "/v1/topics/demotopic/subscriptions", None),
    ("PUT", "/v1/topics/demotopic/subscriptions/s9", Some("{}")),
    (
        "POST",
        "/v1/topics/demotopic/regenerateKey",
        Some(r#"{"keyName": "key9", "bogus": 1}"#),
    ),
    (
        "POST",
        "/v1/topics/demotopic/events",
        Some(r#"{"specversion": "1.0", "id": "1", "source": "/t", "type": "t"}"#),
    ),
    ("GET", "/v1/topics/demotopic/subscriptions/s1", None),
    (
        "GET",
        "/v1/topics/demotopic/subscriptions/s1/deadletters?limit=0",
        None,
    ),
    (
        "POST",
        "/v1/topics/demotopic/subscriptions/s1/redrive",
        Some(r#"{"bogus": 1}"#),
    ),
    ("DELETE", "/v1/topics/demotopic/subscriptions/s1", None),
    ("GET", "/v1/topics/system.data/subscriptions", None),
    ("GET", "/v1/topics/system.data/subscriptions/ds1", None),
    (
        "GET",
        "/v1/topics/system.data/subscriptions/ds1/deadletters?limit=0",
        None,
    ),
    (
        "POST",
        "/v1/topics/system.data/subscriptions/ds1/redrive",
        Some(r#"{"bogus": 1}"#),
    ),
    ("DELETE", "/v1/topics/system.data/subscriptions/ds1", None),
];

/// For every resource kind, alice's answers before demo creates the resource
/// (missing) and after (another owner's) are the same 404, byte for byte,
/// whatever the request body; and no message names demo as an owner.
#[test]
fn another_owners_resources_answer_exactly_as_missing_ones() {
    let s = Server::start();
    let alice = create_key(&s, "alice", ALL_SCOPES);
    let demo = create_key(&s, "demo", ALL_SCOPES);
    // Alice's own job algorithm and input, so that job requests reach the
    // checks of the other side.
    s.deploy_ok("noop", "alice/noop@1.0.0", "");
    ok(&s, &alice, "PUT", "/v1/data/alice/in/a.txt", Some("a"));

    let probe = || -> Vec<(u16, String)> {
        PROBES
            .iter()
            .map(|(m, p, b)| send(&s, Some(&alice), m, p, *b))
            .collect()
    };
    let before = probe();

    s.deploy_ok("hello", "demo/x@1.0.0", "");
    s.deploy_ok("http-echo", "demo/web@1.0.0", "");
    ok(
        &s,
        &demo,
        "PUT",
        "/v1/algorithms/demo/x/secrets/token",
        Some("v"),
    );
    ok(
        &s,
        &demo,
        "POST",
        "/v1/data/demo",
        Some(r#"{"name": "priv", "acl": {"read": []}}"#),
    );
    ok(&s, &demo, "PUT", "/v1/data/demo/priv/f.txt", Some("secret"));
    ok(&s, &demo, "PUT", "/v1/topics/demotopic", None);
    let sub = r#"{"destination": {"algorithm": "demo/x"}}"#;
    ok(
        &s,
        &demo,
        "PUT",
        "/v1/topics/demotopic/subscriptions/s1",
        Some(sub),
    );
    ok(
        &s,
        &demo,
        "PUT",
        "/v1/topics/system.data/subscriptions/ds1",
        Some(sub),
    );

    let after = probe();
    for (((m, p, _), b), a) in PROBES.iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{m} {p}: missing vs another owner's");
        let (status, body) = a;
        // A system topic is visible to all; its listing shows only the
        // caller's own subscriptions.
        if *p == "/v1/topics/system.data/subscriptions" {
            assert_eq!(*status, 200, "{body}");
        } else {
            assert_eq!(*status, 404, "{m} {p}: {body}");
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["error_type"], "NotFound", "{m} {p}: {body}");
        }
        assert!(!body.contains("owner `demo`"), "{m} {p}: {body}");
    }
    // The resources are there for their owner.
    ok(&s, &demo, "GET", "/v1/data/demo/priv/f.txt", None);
    ok(
        &s,
        &demo,
        "GET",
        "/v1/topics/demotopic/subscriptions/s1",
        None,
    );
    ok(
        &s,
        &demo,
        "GET",
        "/v1/topics/system.data/subscriptions/ds1",
        None,
    );
}

/// Creating in another owner's namespace is refused before the body is read,
/// the same whatever the body; the owner's key lacking a scope gets 403.
#[test]
fn keys_and_scopes_are_checked_before_bodies_and_lookups() {
    let s = Server::start();
    let alice = create_key(&s, "alice", ALL_SCOPES);
    let invoke_only = create_key(&s, "alice", &["invoke"]);
    let demo = create_key(&s, "demo", ALL_SCOPES);
    ok(&s, &demo, "PUT", "/v1/topics/demotopic", None);

    // Another owner's namespace: 403 for a good and a bad body alike.
    let good = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/data/demo",
        Some(r#"{"name": "c"}"#),
    );
    let bad = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/data/demo",
        Some(r#"{"name": "c", "acl": {"write": []}}"#),
    );
    assert_eq!(good.0, 403, "{}", good.1);
    assert_eq!(good, bad);
    assert!(!good.1.contains("`demo`"), "{}", good.1);
    // A topic name another owner holds cannot be created, and the answer
    // does not name the owner.
    let (status, body) = send(&s, Some(&alice), "PUT", "/v1/topics/demotopic", None);
    assert_eq!(status, 409, "{body}");
    assert!(!body.contains("demo`"), "{body}");

    // The owner's own resources: a key lacking the scope gets 403.
    ok(&s, &alice, "PUT", "/v1/data/alice/own/f.txt", Some("mine"));
    s.deploy_ok("noop", "alice/noop@1.0.0", "");
    for (m, p, b, scope) in [
        ("GET", "/v1/data/alice/own/f.txt", None, "data:read"),
        ("PUT", "/v1/data/alice/own/g.txt", Some("x"), "data:write"),
        ("GET", "/v1/algorithms/alice/noop/secrets", None, "deploy"),
        (
            "PUT",
            "/v1/topics/mine/subscriptions/s",
            Some("{}"),
            "deploy",
        ),
    ] {
        let (status, body) = send(&s, Some(&invoke_only), m, p, b);
        assert_eq!(status, 403, "{m} {p}: {body}");
        assert!(body.contains(scope), "{m} {p}: {body}");
    }

    // Without a key: 401 before any lookup, for existing and missing alike.
    for p in [
        "/v1/algorithms/alice/noop",
        "/v1/algorithms/alice/nothing",
        "/v1/topics/demotopic",
        "/v1/topics/nothing",
    ] {
        assert_eq!(send(&s, None, "GET", p, None).0, 401, "{p}");
    }
}

/// `/http/...` without a key: a public component is served; a private one
/// and a missing one both answer 401. With another owner's key, private and
/// missing are the same 404; public stays public.
#[test]
fn http_components_answer_401_without_a_key_unless_public() {
    let s = Server::start();
    let alice = create_key(&s, "alice", ALL_SCOPES);
    s.deploy_ok("http-echo", "demo/echo@1.0.0", "");
    s.deploy_ok("http-hello", "demo/open@1.0.0", "public=true");

    let private = send(&s, None, "GET", "/http/demo/echo/x", None);
    let missing = send(&s, None, "GET", "/http/demo/nonexist/x", None);
    assert_eq!(private.0, 401, "{}", private.1);
    assert_eq!(missing.0, 401, "{}", missing.1);
    assert_eq!(private, missing);
    // A bad version spec is not looked at before the key either.
    assert_eq!(send(&s, None, "GET", "/http/demo/echo@x.y/x", None).0, 401);
    assert_eq!(send(&s, None, "GET", "/http/demo/open/", None).0, 200);

    let private = send(&s, Some(&alice), "GET", "/http/demo/echo/x", None);
    assert_eq!(private.0, 404, "{}", private.1);
    s.http
        .delete(format!("{}/v1/algorithms/demo/echo/versions/1.0.0", s.url))
        .header("Authorization", format!("Simple {}", s.key))
        .send()
        .unwrap();
    let missing = send(&s, Some(&alice), "GET", "/http/demo/echo/x", None);
    assert_eq!(private, missing);
    assert_eq!(
        send(&s, Some(&alice), "GET", "/http/demo/open/", None).0,
        200
    );
}

/// A public collection stays readable by every key; writing it is refused
/// with 403 (it is visible), without naming its owner.
#[test]
fn public_collections_stay_visible_and_refuse_writes_with_403() {
    let s = Server::start();
    let alice = create_key(&s, "alice", ALL_SCOPES);
    let demo = create_key(&s, "demo", ALL_SCOPES);
    ok(
        &s,
        &demo,
        "POST",
        "/v1/data/demo",
        Some(r#"{"name": "pub", "acl": {"read": ["user://*"]}}"#),
    );
    ok(&s, &demo, "PUT", "/v1/data/demo/pub/f.txt", Some("hello"));
    let (status, body) = send(&s, Some(&alice), "GET", "/v1/data/demo/pub/f.txt", None);
    assert_eq!((status, body.as_str()), (200, "hello"));
    for (m, p, b) in [
        ("PUT", "/v1/data/demo/pub/g.txt", Some("x")),
        ("DELETE", "/v1/data/demo/pub/f.txt", None),
        (
            "PATCH",
            "/v1/data/demo/pub",
            Some(r#"{"acl": {"read": []}}"#),
        ),
    ] {
        let (status, body) = send(&s, Some(&alice), m, p, b);
        assert_eq!(status, 403, "{m} {p}: {body}");
        assert!(!body.contains("owner `demo`"), "{m} {p}: {body}");
    }
}

fn sub_put(s: &Server, key: &str, topic: &str, name: &str, spec: Value) -> (u16, String) {
    send(
        s,
        Some(key),
        "PUT",
        &format!("/v1/topics/{topic}/subscriptions/{name}"),
        Some(&spec.to_string()),
    )
}

/// Item 7: destinations are checked at creation with the rights deliveries
/// will have: another owner's private collection or algorithm is "not found"
/// (404), a public collection is visible but not writable (403).
#[test]
fn subscription_destinations_are_checked_at_creation() {
    let s = Server::start();
    let alice = create_key(&s, "alice", ALL_SCOPES);
    let demo = create_key(&s, "demo", ALL_SCOPES);
    s.deploy_ok("noop", "alice/noop@1.0.0", "");
    s.deploy_ok("noop", "demo/noop@1.0.0", "");
    ok(
        &s,
        &demo,
        "POST",
        "/v1/data/demo",
        Some(r#"{"name": "c", "acl": {"read": []}}"#),
    );
    ok(
        &s,
        &demo,
        "POST",
        "/v1/data/demo",
        Some(r#"{"name": "pub", "acl": {"read": ["user://*"]}}"#),
    );

    let job = |algorithm: &str, output: &str| json!({"destination": {"job": {"algorithm": algorithm, "output": output}}});
    let cases = [
        (job("alice/noop", "data://demo/c/"), 404, "data://demo/c"),
        (
            job("alice/noop", "data://demo/missing/"),
            404,
            "data://demo/missing",
        ),
        (
            job("alice/noop", "data://demo/pub/"),
            403,
            "data://demo/pub",
        ),
        (job("demo/noop", "data://alice/out/"), 404, "demo/noop"),
        (
            json!({"destination": {"algorithm": "demo/noop"}}),
            404,
            "demo/noop",
        ),
        (
            json!({"destination": {"algorithm": "alice/noop"}, "deadLetter": {"collection": "data://demo/c/dl/"}}),
            404,
            "data://demo/c",
        ),
    ];
    for (spec, status, fragment) in cases {
        let (got, body) = sub_put(&s, &alice, "system.data", "a1", spec.clone());
        assert_eq!(got, status, "{spec}: {body}");
        assert!(body.contains(fragment), "{spec}: {body}");
        assert!(!body.contains("owner `demo`"), "{spec}: {body}");
    }
    // The "not found" answers for another owner's collection are the
    // missing collection's.
    let hidden = sub_put(
        &s,
        &alice,
        "system.data",
        "a1",
        job("alice/noop", "data://demo/c/"),
    )
    .1;
    let missing = sub_put(
        &s,
        &alice,
        "system.data",
        "a1",
        job("alice/noop", "data://demo/c2/"),
    )
    .1;
    assert_eq!(
        hidden.replace("demo/c2", "demo/c"),
        missing.replace("demo/c2", "demo/c")
    );
    // Alice's own destinations are accepted.
    let (got, body) = sub_put(
        &s,
        &alice,
        "system.data",
        "a1",
        job("alice/noop", "data://alice/out/"),
    );
    assert_eq!(got, 201, "{body}");
}

/// Item 7: a job delivery refused for lack of rights (here an event naming
/// another owner's private file) is dead-lettered at once as
/// `NonRetryableError`, not retried.
#[test]
fn refused_job_deliveries_dead_letter_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--event-time-scale", "0.001"]);
    let alice = create_key(&s, "alice", ALL_SCOPES);
    let demo = create_key(&s, "demo", ALL_SCOPES);
    s.deploy_ok("noop", "alice/noop@1.0.0", "");
    ok(
        &s,
        &demo,
        "POST",
        "/v1/data/demo",
        Some(r#"{"name": "c", "acl": {"read": []}}"#),
    );
    ok(&s, &demo, "PUT", "/v1/data/demo/c/f.txt", Some("secret"));
    ok(&s, &alice, "PUT", "/v1/topics/alicet", None);
    let (got, body) = sub_put(
        &s,
        &alice,
        "alicet",
        "jobs",
        json!({"destination": {"job": {"algorithm": "alice/noop", "output": "data://alice/out/"}}}),
    );
    assert_eq!(got, 201, "{body}");
    let event = json!({"specversion": "1.0", "id": "e1", "source": "/t", "type": "t",
                       "data": {"uri": "data://demo/c/f.txt"}});
    let (got, body) = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/topics/alicet/events",
        Some(&event.to_string()),
    );
    assert_eq!(got, 200, "{body}");

    let started = Instant::now();
    let dl = loop {
        let (_, body) = send(
            &s,
            Some(&alice),
            "GET",
            "/v1/topics/alicet/subscriptions/jobs/deadletters",
            None,
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        if let Some(first) = v["deadLetters"].as_array().and_then(|a| a.first()) {
            break first.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no dead letter within 30 s: the refused delivery is being retried"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(dl["deadLetterReason"], "NonRetryableError", "{dl}");
    assert_eq!(dl["deliveryAttempts"], 1, "{dl}");
    assert!(!dl.to_string().contains("secret"), "{dl}");
}

/// Item 20: unknown fields are rejected with a 400 naming them, and long
/// strings with a 400 naming the field and the limit.
#[test]
fn unknown_fields_and_oversized_strings_are_rejected() {
    let s = Server::start();
    let alice = create_key(&s, "alice", ALL_SCOPES);
    ok(&s, &alice, "PUT", "/v1/topics/t1", None);
    let long = |n: usize| "a".repeat(n);

    let (status, body) = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/data/alice",
        Some(r#"{"name": "c", "acl": {"read": [], "write": ["user://*"]}}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field `write`"), "{body}");
    ok(
        &s,
        &alice,
        "POST",
        "/v1/data/alice",
        Some(r#"{"name": "c", "acl": {"read": []}}"#),
    );
    let (status, body) = send(
        &s,
        Some(&alice),
        "PATCH",
        "/v1/data/alice/c",
        Some(r#"{"acl": {"read": [], "write": []}}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field `write`"), "{body}");
    let (status, body) = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/topics/t1/regenerateKey",
        Some(r#"{"keyName": "key1", "extra": true}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field `extra`"), "{body}");

    s.deploy_ok("noop", "alice/noop@1.0.0", "");
    let (status, body) = send(
        &s,
        Some(&alice),
        "PUT",
        "/v1/algorithms/alice/noop/secrets/token",
        Some(r#"{"value": "v", "ttl": 60}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field `ttl`"), "{body}");
    let (status, body) = sub_put(
        &s,
        &alice,
        "t1",
        "s",
        json!({"destination": {"job": {"algorithm": "alice/x", "output": "data://alice/o/", "bogus": 1}}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bogus"), "{body}");

    let cases = [
        (
            json!({"destination": {"algorithm": "alice/x"}, "filter": {"subjectBeginsWith": long(1025)}}),
            "subjectBeginsWith",
            "1024",
        ),
        (
            json!({"destination": {"algorithm": "alice/x"}, "filter": {"subjectEndsWith": long(1025)}}),
            "subjectEndsWith",
            "1024",
        ),
        (
            json!({"destination": {"algorithm": "alice/x"}, "filter": {"includedEventTypes": [long(257)]}}),
            "includedEventTypes[0]",
            "256",
        ),
        (
            json!({"destination": {"algorithm": "alice/x"}, "filter": {"includedEventTypes": vec!["t"; 65]}}),
            "includedEventTypes",
            "64",
        ),
        (
            json!({"destination": {"algorithm": "alice/x"}, "filter": {"advancedFilters": [
            {"operatorType": "IsNotNull", "key": format!("data.{}", long(300))}]}}),
            "advancedFilters[0].key",
            "256",
        ),
        (
            json!({"destination": {"webhook": format!("https://example.com/{}", long(2100))}}),
            "destination.webhook",
            "2048",
        ),
        (
            json!({"destination": {"webhook": "https://example.com/"}, "webhookSecret": long(300)}),
            "webhookSecret",
            "256",
        ),
    ];
    for (spec, field, limit) in cases {
        let (status, body) = sub_put(&s, &alice, "t1", "s", spec);
        assert_eq!(status, 400, "{field}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["error_type"], "InputError", "{body}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field) && msg.contains(limit), "{field}: {msg}");
        assert!(msg.len() < 600, "the message repeats the value: {msg}");
    }

    let resp = s
        .http
        .put(format!("{}/v1/data/alice/c/f.txt", s.url))
        .header("Authorization", format!("Simple {alice}"))
        .header("Content-Type", format!("text/{}", long(300)))
        .body("x")
        .send()
        .unwrap();
    let msg = assert_error(resp, 400, "InputError", "Content-Type");
    assert!(msg.contains("256"), "{msg}");
    let resp = s
        .req(Method::POST, "/v1/keys")
        .json(&json!({"owner": "alice", "scopes": ["invoke"], "name": long(300)}))
        .send()
        .unwrap();
    let msg = assert_error(resp, 400, "InputError", "name");
    assert!(msg.contains("256"), "{msg}");
    let (status, body) = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/data/alice",
        Some(&json!({"name": long(300)}).to_string()),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("256"), "{body}");
}

/// A `topic:NAME` grant reaches only a topic of the algorithm's own owner:
/// alice's algorithm granted `topic:demo-feed` cannot write into demo's topic
/// of that name, and learns no more than for a missing topic.
#[test]
fn guests_publish_only_to_topics_of_their_own_owner() {
    let s = Server::start();
    let alice = create_key(&s, "alice", ALL_SCOPES);
    let demo = create_key(&s, "demo", ALL_SCOPES);
    ok(&s, &demo, "PUT", "/v1/topics/demo-feed", None);
    for (owner, key) in [("alice", alice.as_str()), ("demo", demo.as_str())] {
        for example in ["json-stats", "infer"] {
            let resp = s
                .http
                .put(format!(
                    "{}/v1/algorithms/{owner}/{example}/versions/1.0.0?grant=topic:demo-feed&grant=topic:nosuch-feed",
                    s.url
                ))
                .header("Authorization", format!("Simple {key}"))
                .body(guest(example))
                .send()
                .unwrap();
            assert_eq!(resp.status(), 201, "deploy {owner}/{example}");
        }
    }
    let input = r#"{"scores": [0.5], "topic": "demo-feed", "stats": "STATS"}"#;
    // Alice's algorithm: refused, with the same words as a missing topic.
    let (status, text) = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/algo/alice/infer/1.0.0",
        Some(&input.replace("STATS", "alice/json-stats/1")),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("topic demo-feed not found"), "{text}");
    assert!(!text.contains("demo/"), "names no other owner: {text}");
    let (_, missing) = send(
        &s,
        Some(&alice),
        "POST",
        "/v1/algo/alice/infer/1.0.0",
        Some(
            &input
                .replace("STATS", "alice/json-stats/1")
                .replace("demo-feed", "nosuch-feed"),
        ),
    );
    assert_eq!(
        text.replace("demo-feed", "T"),
        missing.replace("nosuch-feed", "T"),
        "another owner's topic answers as a missing one"
    );
    // The owner's own algorithm publishes.
    let (status, text) = send(
        &s,
        Some(&demo),
        "POST",
        "/v1/algo/demo/infer/1.0.0",
        Some(&input.replace("STATS", "demo/json-stats/1")),
    );
    assert_eq!(status, 200, "{text}");
}

/// `Authorization: SharedAccessKey <key>` (Azure's namespace clients)
/// authenticates like `Simple`, in any case of the scheme.
#[test]
fn shared_access_key_scheme_authenticates() {
    let s = Server::start();
    for scheme in ["SharedAccessKey", "sharedaccesskey", "BEARER", "simple"] {
        let resp = s
            .http
            .get(format!("{}/v1/topics", s.url))
            .header("Authorization", format!("{scheme} {}", s.key))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    let resp = s
        .http
        .get(format!("{}/v1/topics", s.url))
        .header("Authorization", "SharedAccessKey wg_not_a_key")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Without a key, a private route prefix and a path nothing serves answer the
/// same 401, so route prefixes cannot be probed; with a key, the unknown path
/// is a 404 and public routes stay open to everyone.
#[test]
fn route_prefixes_cannot_be_probed_without_a_key() {
    let s = Server::start();
    s.deploy_ok("http-hello", "demo/priv@1.0.0", "route=/priv");
    s.deploy_ok("http-hello", "demo/open@1.0.0", "route=/open&public=true");
    let (private, private_body) = send(&s, None, "GET", "/priv/x", None);
    let (unknown, unknown_body) = send(&s, None, "GET", "/nothing-here/x", None);
    assert_eq!(
        (private, unknown),
        (401, 401),
        "{private_body} / {unknown_body}"
    );
    assert_eq!(private_body, unknown_body);
    let (status, _) = send(&s, None, "GET", "/open/x", None);
    assert_eq!(status, 200, "a public route needs no key");
    let (status, body) = send(&s, Some(&s.key), "GET", "/nothing-here/x", None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no endpoint GET /nothing-here/x"), "{body}");
    let (status, _) = send(&s, Some(&s.key), "GET", "/priv/x", None);
    assert_eq!(status, 200);
}
