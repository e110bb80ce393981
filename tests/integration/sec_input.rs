//! Input validation at the edge, event loops and error messages: numbers and
//! durations from requests, version numbers, event attributes, reserved topic
//! names, webhook addresses and passwords, secret sizes.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

fn put_subscription(
    s: &Server,
    topic: &str,
    name: &str,
    spec: Value,
) -> reqwest::blocking::Response {
    s.req(
        Method::PUT,
        &format!("/v1/topics/{topic}/subscriptions/{name}"),
    )
    .json(&spec)
    .send()
    .unwrap()
}

fn file_count(s: &Server, folder: &str) -> usize {
    let v = json(
        s.req(Method::GET, &format!("/v1/data/{folder}"))
            .send()
            .unwrap(),
        200,
    );
    v["files"].as_array().map_or(0, Vec::len)
}

fn healthy(s: &Server) {
    let resp = s.http.get(format!("{}/healthz", s.url)).send().unwrap();
    assert_eq!(resp.status(), 200, "the server must still be up");
}

/// Two job destinations feeding each other's folders (demo/a → demo/b → demo/a …)
/// ran forever: a job's outputs carried no hop count. They now carry the
/// triggering event's count plus one, so the loop ends in a dead letter.
#[test]
fn a_loop_through_job_destinations_ends_at_the_hop_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--event-time-scale", "0.001"]);
    s.deploy_ok("noop", "demo/noop@1.0.0", "");
    for c in ["a", "b"] {
        json(
            s.req(Method::POST, "/v1/data/demo")
                .json(&json!({"name": c}))
                .send()
                .unwrap(),
            200,
        );
    }
    for (from, to) in [("a", "b"), ("b", "a")] {
        let resp = put_subscription(
            &s,
            "system.data",
            &format!("{from}-to-{to}"),
            json!({
                "destination": {"job": {"algorithm": "demo/noop", "output": format!("data://demo/{to}/")}},
                "filter": {
                    "includedEventTypes": ["wasmgrid.data.FileCreated"],
                    "subjectBeginsWith": format!("/collections/demo/{from}/files/"),
                    // Not the jobs' `_summary.json`: one file per round keeps
                    // the loop a chain (each summary would double it).
                    "subjectEndsWith": ".txt"
                }
            }),
        );
        json(resp, 201);
    }
    let resp = s
        .req(Method::PUT, "/v1/data/demo/a/seed.txt")
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    let dl = eventually(
        "a HopLimitExceeded dead letter",
        Duration::from_secs(90),
        || {
            let mut all = dead_letters(&s, "system.data", "a-to-b");
            all.extend(dead_letters(&s, "system.data", "b-to-a"));
            (!all.is_empty()).then_some(all)
        },
    );
    assert_eq!(dl[0]["deadLetterReason"], "HopLimitExceeded", "{}", dl[0]);
    let jobs = |s: &Server| {
        json(s.req(Method::GET, "/v1/jobs").send().unwrap(), 200)["jobs"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // The seed's event (0 hops) and 16 more started one job each.
    let started = eventually("the last job to finish", Duration::from_secs(30), || {
        let listed = json(s.req(Method::GET, "/v1/jobs").send().unwrap(), 200);
        let all = listed["jobs"].as_array().cloned().unwrap_or_default();
        all.iter()
            .all(|j| j["status"] == "Completed")
            .then_some(all.len())
    });
    assert_eq!(started, 17);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(jobs(&s), 17, "no job may start after the dead letter");
}

/// A job timeout past what a `Duration` holds used to be accepted (202) and
/// then panic the job worker; a subscription's job destination carried it
/// to every matching event.
#[test]
fn job_timeouts_out_of_range_are_refused() {
    let s = Server::start();
    s.deploy_ok("noop", "alice/anoop@1.0.0", "");
    // A real input, so that only the timeout can be what is wrong.
    let resp = s
        .req(Method::PUT, "/v1/data/alice/in/a.txt")
        .body("a")
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    for timeout in [json!(1e30), json!(-1), json!(0), json!(3001)] {
        let resp = s
            .req(Method::POST, "/v1/algo/alice/anoop/jobs")
            .json(&json!({"input": "data://alice/in/", "output": "data://alice/out/", "timeout": timeout}))
            .send()
            .unwrap();
        let msg = assert_error(resp, 400, "InputError", "timeout=");
        assert!(msg.contains("at most 3000"), "{msg}");
    }
    let resp = put_subscription(
        &s,
        "system.data",
        "jobs",
        json!({"destination": {"job": {"algorithm": "alice/anoop", "output": "data://alice/out/",
                                       "timeout": 1e30}}}),
    );
    assert_error(resp, 400, "InputError", "timeout=");
    healthy(&s);
}

/// `1.2.3+other` and `1.2.3` were two versions; a deleted `1.0.0` came back as
/// `1.0.0+rebuild`. Build metadata is refused, and other characters are named.
#[test]
fn version_numbers_cannot_be_reused_through_build_metadata() {
    let s = Server::start();
    let resp = s.deploy("noop", "demo/v@1.2.3%2Bother", "");
    let msg = assert_error(resp, 400, "InputError", "\"+other\"");
    assert!(msg.contains("build metadata"), "{msg}");
    s.deploy_ok("noop", "demo/v@1.0.0", "");
    s.deploy_ok("noop", "demo/v@1.2.3", "");
    let resp = s
        .req(Method::DELETE, "/v1/algorithms/demo/v/versions/1.0.0")
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = s.deploy("noop", "demo/v@1.0.0%2Brebuild", "");
    assert_error(resp, 400, "InputError", "\"+rebuild\"");
    let msg = assert_error(
        s.deploy("noop", "demo/v@1.2.4-%C3%A9", ""),
        400,
        "InputError",
        "'é' is not allowed",
    );
    assert!(msg.contains("ASCII letters, digits, '.' and '-'"), "{msg}");
    let v = json(
        s.req(Method::GET, "/v1/algorithms/demo/v").send().unwrap(),
        200,
    );
    assert_eq!(v["taken"], json!(["1.0.0", "1.2.3"]), "{v}");

    // All versions deleted: the call names that and a number that is free.
    let resp = s
        .req(Method::DELETE, "/v1/algorithms/demo/v/versions/1.2.3")
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let msg = assert_error(
        s.call("demo/v", "text/plain", "x"),
        404,
        "NotFound",
        "all of its versions were deleted",
    );
    assert!(msg.contains("demo/v@1.2.4"), "{msg}");
    s.deploy_ok("noop", "demo/v@1.2.4", "");
}

/// An algorithm writing into the folder its `system.data` subscription
/// watches used to run forever; the hop count stops it with a dead letter.
#[test]
fn an_event_loop_ends_in_a_hop_limit_dead_letter() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--event-time-scale", "0.001"]);
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    let resp = put_subscription(
        &s,
        "system.data",
        "loop",
        json!({
            "destination": {"algorithm": "demo/recorder"},
            "filter": {
                "includedEventTypes": ["wasmgrid.data.FileCreated"],
                "subjectBeginsWith": "/collections/demo/received/files/"
            }
        }),
    );
    json(resp, 201);
    let resp = s
        .req(Method::PUT, "/v1/data/demo/received/seed.json")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    let dl = eventually(
        "a HopLimitExceeded dead letter",
        Duration::from_secs(60),
        || {
            let list = dead_letters(&s, "system.data", "loop");
            (!list.is_empty()).then_some(list)
        },
    );
    assert_eq!(dl[0]["deadLetterReason"], "HopLimitExceeded", "{}", dl[0]);
    assert_eq!(dl[0]["event"]["wasmgridhops"], "17", "{}", dl[0]);
    assert_eq!(dl[0]["deliveryAttempts"], 0, "{}", dl[0]);

    // The seed (0 hops) and 16 more events were delivered, each run writing
    // one file; the 17th write's event was not. Nothing moves after that.
    assert_eq!(file_count(&s, "demo/received"), 18);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(file_count(&s, "demo/received"), 18, "deliveries must stop");
    assert_eq!(dead_letters(&s, "system.data", "loop").len(), 1);

    // Each run saw the hop count of the event that triggered it.
    let listing = json(
        s.req(Method::GET, "/v1/data/demo/received").send().unwrap(),
        200,
    );
    let mut hops: Vec<u64> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["filename"] != "seed.json")
        .map(|f| {
            let doc = json(
                s.req(
                    Method::GET,
                    &format!("/v1/data/demo/received/{}", f["filename"].as_str().unwrap()),
                )
                .send()
                .unwrap(),
                200,
            );
            doc["trigger"]["extensions"]["wasmgridhops"]
                .as_str()
                .map_or(0, |h| h.parse().unwrap())
        })
        .collect();
    hops.sort();
    assert_eq!(hops, (0..=16).collect::<Vec<u64>>());
}

/// A hop count sent over HTTP is kept when valid (so loops through outside
/// systems are caught) and refused when it is not a count.
#[test]
fn published_hop_counts_are_kept_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        tmp.path(),
        &["--event-time-scale", "0.001", "--max-event-hops", "3"],
    );
    json(s.req(Method::PUT, "/v1/topics/loops").send().unwrap(), 201);
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    json(
        put_subscription(
            &s,
            "loops",
            "rec",
            json!({"destination": {"algorithm": "demo/recorder"}}),
        ),
        201,
    );
    let publish = |event: Value| {
        s.req(Method::POST, "/v1/topics/loops/events")
            .header("Content-Type", "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .unwrap()
    };
    let event = |id: &str, hops: Value| json!({"specversion": "1.0", "id": id, "source": "/t", "type": "t", "wasmgridhops": hops, "data": {}});
    assert_error(
        publish(event("bad", json!("lots"))),
        400,
        "InputError",
        "`wasmgridhops`",
    );
    json(publish(event("far", json!("4"))), 200);
    json(publish(event("near", json!(3))), 200);
    let dl = eventually("the dead letter of `far`", Duration::from_secs(30), || {
        let list = dead_letters(&s, "loops", "rec");
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(dl[0]["deadLetterReason"], "HopLimitExceeded");
    assert_eq!(dl[0]["event"]["id"], "far");
    eventually("`near` delivered", Duration::from_secs(30), || {
        let resp = s
            .req(Method::GET, "/v1/data/demo/received/near.json")
            .send()
            .ok()?;
        (resp.status() == 200).then_some(())
    });
}

/// Impossible times and repeated binary-mode headers used to be accepted.
#[test]
fn event_times_must_exist_and_headers_come_once() {
    let s = Server::start();
    json(s.req(Method::PUT, "/v1/topics/t").send().unwrap(), 201);
    for time in ["2026-02-30T00:00:00Z", "2026-01-01T00:00:00+99:00"] {
        let resp = s
            .req(Method::POST, "/v1/topics/t/events")
            .header("Content-Type", "application/cloudevents+json")
            .body(
                json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "x", "time": time})
                    .to_string(),
            )
            .send()
            .unwrap();
        assert_error(resp, 400, "InputError", "`time`");
    }
    let resp = s
        .req(Method::POST, "/v1/topics/t/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "first")
        .header("ce-id", "second")
        .header("ce-source", "/s")
        .header("ce-type", "x")
        .header("Content-Type", "text/plain")
        .body("hi")
        .send()
        .unwrap();
    assert_error(resp, 400, "InputError", "ce-id");
}

/// `System.data` passed for a custom topic; system topics have no keys.
#[test]
fn the_system_prefix_is_reserved_in_any_case() {
    let s = Server::start();
    for name in ["System.data", "SYSTEM.data", "sYsTeM.x"] {
        let resp = s
            .req(Method::PUT, &format!("/v1/topics/{name}"))
            .send()
            .unwrap();
        assert_error(resp, 400, "InputError", "reserved");
    }
    assert_error(
        s.deploy("noop", "demo/p@1.0.0", "grant=topic:System.data"),
        400,
        "InputError",
        "system.* topics",
    );
    let resp = s
        .req(Method::POST, "/v1/topics/system.data/regenerateKey")
        .json(&json!({"keyName": "key1"}))
        .send()
        .unwrap();
    let msg = assert_error(resp, 400, "InputError", "has no publish keys");
    assert!(!msg.contains("create it first"), "{msg}");
}

/// Special-purpose addresses (NAT64, 6to4, benchmarking, reserved, ...) were
/// accepted as webhook targets; `user:pass@` came back in listings.
#[test]
fn webhook_guard_and_password_redaction() {
    let s = Server::start();
    for host in [
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::1]",
        "198.18.0.1",
        "192.0.0.1",
        "240.0.0.1",
        "[::127.0.0.1]",
        "[2001::1]",
    ] {
        let resp = put_subscription(
            &s,
            "system.data",
            "hook",
            json!({"destination": {"webhook": format!("http://user:pa55word@{host}/hook")}}),
        );
        let msg = assert_error(resp, 400, "InputError", "--allow-private-webhooks");
        assert!(!msg.contains("pa55word"), "{host}: {msg}");
    }
    // A public address literal: accepted (no event is published, so nothing
    // is sent), and its password is never shown.
    let url = "https://hook:pa55word@93.184.215.14/in?x=1";
    let created = json(
        put_subscription(
            &s,
            "system.data",
            "hook",
            json!({"destination": {"webhook": url}}),
        ),
        201,
    );
    let shown = "https://hook:***@93.184.215.14/in?x=1";
    assert_eq!(created["destination"]["webhook"], shown, "{created}");
    let one = json(
        s.req(Method::GET, "/v1/topics/system.data/subscriptions/hook")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(one["destination"]["webhook"], shown, "{one}");
    let list = s
        .req(Method::GET, "/v1/topics/system.data/subscriptions")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!list.contains("pa55word") && list.contains(shown), "{list}");
}

/// 400 at 65,537 bytes and 413 "0 MiB" at 100 kB: one status and message now.
#[test]
fn oversized_secrets_are_413_in_kib() {
    let s = Server::start();
    let put = |body: Vec<u8>, ct: &str| {
        s.req(Method::PUT, "/v1/algorithms/demo/a/secrets/BIG")
            .header("Content-Type", ct)
            .body(body)
            .send()
            .unwrap()
    };
    for size in [65_537, 66_000, 100_000, 1 << 20] {
        let msg = assert_error(
            put(vec![b'x'; size], "text/plain"),
            413,
            "PayloadTooLarge",
            "larger than the limit of 64 KiB",
        );
        assert!(!msg.contains("MiB"), "{msg}");
    }
    let big_json = json!({"value": "x".repeat(65_537)})
        .to_string()
        .into_bytes();
    assert_error(
        put(big_json, "application/json"),
        413,
        "PayloadTooLarge",
        "64 KiB",
    );
    assert_eq!(put(vec![b'x'; 65_536], "text/plain").status(), 200);
}

/// Messages that pointed the wrong way.
#[test]
fn messages_name_the_real_problem() {
    let s = Server::start();
    assert_error(
        s.deploy("not-an-algorithm", "demo/cli@1.0.0", ""),
        400,
        "InputError",
        "or wasi:http/incoming-handler",
    );
    let resp = s
        .req(Method::PUT, "/v1/data/demo/c/f.txt")
        .body("hello")
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let msg = assert_error(
        s.req(Method::GET, "/v1/data/demo/c/f.txt/").send().unwrap(),
        404,
        "NotFound",
        "is a file, not a folder",
    );
    assert!(msg.contains("trailing slash"), "{msg}");
    // A missing name with a trailing slash is still plainly not found.
    let resp = s.req(Method::GET, "/v1/data/demo/c/nope/").send().unwrap();
    let msg = assert_error(resp, 404, "NotFound", "not found");
    assert!(!msg.contains("is a file"), "{msg}");
}
