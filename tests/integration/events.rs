//! Topics, ingress, subscriptions and durable delivery: the seeds' scenarios end
//! to end against the real binary (retry delays compressed by
//! `--event-time-scale`).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Event Grid's 10 s first retry becomes 10 ms, a 1-minute TTL 60 ms.
const SCALE: &str = "0.001";

fn start_events_server(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut flags = vec!["--event-time-scale", SCALE];
    flags.extend_from_slice(extra);
    let s = Server::start_in(tmp.path(), &flags);
    (s, tmp)
}

fn get_file(s: &Server, path: &str) -> Option<Value> {
    let resp = s
        .req(Method::GET, &format!("/v1/data/{path}"))
        .send()
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json().ok()
}

fn put_file(s: &Server, path: &str, body: &str) {
    let resp = s
        .req(Method::PUT, &format!("/v1/data/{path}"))
        .header("Content-Type", "text/csv")
        .body(body.to_string())
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "put {path}: {}", resp.status());
}

fn subscribe(s: &Server, topic: &str, name: &str, spec: Value) -> Value {
    json(
        s.req(
            Method::PUT,
            &format!("/v1/topics/{topic}/subscriptions/{name}"),
        )
        .json(&spec)
        .send()
        .unwrap(),
        201,
    )
}

fn create_topic(s: &Server, topic: &str) -> String {
    let v = json(
        s.req(Method::PUT, &format!("/v1/topics/{topic}"))
            .send()
            .unwrap(),
        201,
    );
    v["keys"]["key1"].as_str().expect("key1").to_string()
}

fn publish(
    s: &Server,
    topic: &str,
    key: &str,
    content_type: &str,
    body: Value,
) -> reqwest::blocking::Response {
    s.http
        .post(format!(
            "{}/v1/topics/{topic}/events?api-version=2018-01-01",
            s.url
        ))
        .header("aeg-sas-key", key)
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .unwrap()
}

fn subscription(s: &Server, topic: &str, name: &str) -> Value {
    json(
        s.req(
            Method::GET,
            &format!("/v1/topics/{topic}/subscriptions/{name}"),
        )
        .send()
        .unwrap(),
        200,
    )
}

fn cloud_event(id: &str, ty: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/tests/events", "type": ty, "data": data})
}

/// Seed 000: files put into `data://demo/uploads/batch-a/` raise
/// `system.data` FileCreated events; a subscription filtered on that folder and
/// on `.csv` runs `csv-summary`, which writes into `data://demo/results/`.
#[test]
fn seed_000_file_created_runs_the_pipeline() {
    let (s, _tmp) = start_events_server(&[]);
    s.deploy_ok(
        "csv-summary",
        "demo/csv-summary@1.0.0",
        "grant=data://demo/uploads:read&grant=data://demo/results:write",
    );
    let sub = subscribe(
        &s,
        "system.data",
        "csv-batch-a",
        json!({
            "destination": {"algorithm": "demo/csv-summary"},
            "filter": {
                "includedEventTypes": ["wasmgrid.data.FileCreated"],
                "subjectBeginsWith": "/collections/demo/uploads/files/batch-a/",
                "subjectEndsWith": ".csv"
            }
        }),
    );
    assert_eq!(sub["retryPolicy"]["maxDeliveryAttempts"], 30, "{sub}");
    put_file(&s, "demo/uploads/batch-a/one.csv", "a,b,c\n1,2,3\n4,5,6\n");
    put_file(&s, "demo/uploads/batch-a/two.CSV", "x\n1\n");
    put_file(&s, "demo/uploads/batch-a/notes.txt", "not a csv\n");
    put_file(&s, "demo/uploads/batch-b/three.csv", "a\n1\n");

    let one = eventually("one.csv summary", Duration::from_secs(60), || {
        get_file(&s, "demo/results/one.csv.summary.json")
    });
    assert_eq!(one["rows"], 2, "{one}");
    assert_eq!(one["columns"], 3, "{one}");
    assert_eq!(one["trigger"]["type"], "wasmgrid.data.FileCreated");
    assert_eq!(
        one["trigger"]["subject"],
        "/collections/demo/uploads/files/batch-a/one.csv"
    );
    // Subject matching is case-insensitive unless asked otherwise (Event Grid's default).
    eventually("two.CSV summary", Duration::from_secs(60), || {
        get_file(&s, "demo/results/two.CSV.summary.json")
    });
    // Everything routed has been handled: the queue is empty, and only the two
    // matching files were delivered.
    eventually("an empty queue", Duration::from_secs(30), || {
        (subscription(&s, "system.data", "csv-batch-a")["queueDepth"] == 0).then_some(())
    });
    assert!(get_file(&s, "demo/results/notes.txt.summary.json").is_none());
    assert!(get_file(&s, "demo/results/three.csv.summary.json").is_none());
    let metrics = s
        .req(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        metric(
            &s,
            "wasmgrid_events_delivered_total",
            &["subscription=\"system.data/csv-batch-a\""]
        ),
        Some(2.0),
        "{metrics}"
    );
}

/// Seed 003: a custom topic, an advanced filter on `data.confidence`, a handler
/// failing with `transient` retried and dead-lettered, then redriven to a fixed
/// version.
#[test]
fn seed_003_filter_retry_dead_letter_and_redrive() {
    let (s, _tmp) = start_events_server(&[]);
    let key = create_topic(&s, "inference");
    // 1.0.0 has no write grant: every recording fails, reported as transient.
    s.deploy_ok("event-recorder", "demo/recorder@1.0.0", "");
    subscribe(
        &s,
        "inference",
        "confident",
        json!({
            "destination": {"algorithm": "demo/recorder/1"},
            "filter": {
                "includedEventTypes": ["com.example.ai.InferenceCompleted"],
                "advancedFilters": [
                    {"operatorType": "NumberGreaterThan", "key": "data.confidence", "value": 0.9}
                ]
            },
            "retryPolicy": {"maxDeliveryAttempts": 3},
            "deadLetter": {"collection": "data://.my/deadletters/"}
        }),
    );
    let batch = json!([
        cloud_event(
            "e1",
            "com.example.ai.InferenceCompleted",
            json!({"confidence": 0.95})
        ),
        cloud_event(
            "e2",
            "com.example.ai.InferenceCompleted",
            json!({"confidence": 0.5})
        ),
        cloud_event(
            "e3",
            "com.example.ai.ModelLoaded",
            json!({"confidence": 0.99})
        ),
    ]);
    let report = json(
        publish(
            &s,
            "inference",
            &key,
            "application/cloudevents-batch+json; charset=utf-8",
            batch,
        ),
        200,
    );
    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(report["deliveries"], 1, "only e1 matches: {report}");

    let dl = eventually("the dead letter", Duration::from_secs(60), || {
        let list = dead_letters(&s, "inference", "confident");
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["deadLetterReason"], "MaxDeliveryAttemptsExceeded");
    assert_eq!(dl[0]["deliveryAttempts"], 3);
    assert_eq!(dl[0]["event"]["id"], "e1");
    let outcome = dl[0]["lastDeliveryOutcome"].as_str().unwrap();
    assert!(outcome.starts_with("TransientAlgorithmError"), "{outcome}");
    assert!(dl[0]["lastDeliveryAttemptTime"].is_string());
    // The dead letter is also a JSON file in the dead-letter collection.
    let seq = dl[0]["sequence"].as_u64().unwrap();
    let file = eventually("the dead-letter file", Duration::from_secs(30), || {
        get_file(
            &s,
            &format!("admin/deadletters/inference/confident/{seq:020}.json"),
        )
    });
    assert_eq!(file["deadLetterReason"], "MaxDeliveryAttemptsExceeded");

    // The fix: a new 1.x version with the grant. Redrive reaches it (the
    // destination `demo/recorder/1` is resolved at delivery time).
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.1",
        "grant=data://demo/received:write",
    );
    let redriven = json(
        s.req(
            Method::POST,
            "/v1/topics/inference/subscriptions/confident/redrive",
        )
        .json(&json!({}))
        .send()
        .unwrap(),
        200,
    );
    assert_eq!(redriven["redriven"], 1);
    let got = eventually("the redriven delivery", Duration::from_secs(60), || {
        get_file(&s, "demo/received/e1.json")
    });
    assert_eq!(got["data"]["confidence"], 0.95);
    assert!(dead_letters(&s, "inference", "confident").is_empty());
    assert!(get_file(&s, "demo/received/e2.json").is_none());
    assert!(get_file(&s, "demo/received/e3.json").is_none());
}

/// Every ingress format, validation messages, publish auth, and
/// deduplication by `(source, id)`.
#[test]
fn ingress_formats_auth_and_dedup() {
    let (s, _tmp) = start_events_server(&[]);
    let key = create_topic(&s, "orders");
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    subscribe(
        &s,
        "orders",
        "all",
        json!({"destination": {"algorithm": "demo/recorder"}}),
    );

    // Structured mode, with a traceparent extension carried to the handler.
    let mut ev = cloud_event("s1", "com.example.order", json!({"n": 1}));
    ev["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    json(
        publish(&s, "orders", &key, "application/cloudevents+json", ev),
        200,
    );
    // Event Grid schema (what azure-eventgrid's EventGridEvent sends).
    let eg = json!([{"id": "g1", "eventType": "Contoso.Order", "subject": "/orders/7",
        "eventTime": "2026-11-22T10:00:00Z", "dataVersion": "1.0", "data": {"n": 2}}]);
    json(publish(&s, "orders", &key, "application/json", eg), 200);
    // Binary mode.
    let resp = s
        .http
        .post(format!("{}/v1/topics/orders/events", s.url))
        .header("aeg-sas-key", &key)
        .header("ce-specversion", "1.0")
        .header("ce-id", "b1")
        .header("ce-source", "/tests/binary")
        .header("ce-type", "com.example.order")
        .header("ce-subject", "/orders/9")
        .header("Content-Type", "application/json")
        .body(r#"{"n": 3}"#)
        .send()
        .unwrap();
    json(resp, 200);

    let s1 = eventually("s1", Duration::from_secs(60), || {
        get_file(&s, "demo/received/s1.json")
    });
    assert_eq!(
        s1["trigger"]["extensions"]["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    let g1 = eventually("g1", Duration::from_secs(60), || {
        get_file(&s, "demo/received/g1.json")
    });
    assert_eq!(g1["trigger"]["type"], "Contoso.Order");
    assert_eq!(g1["trigger"]["source"], "/topics/orders");
    assert_eq!(g1["data"]["n"], 2);
    let b1 = eventually("b1", Duration::from_secs(60), || {
        get_file(&s, "demo/received/b1.json")
    });
    assert_eq!(b1["trigger"]["subject"], "/orders/9");
    assert_eq!(b1["data"]["n"], 3);

    // A re-published duplicate is acknowledged but not enqueued again.
    let dup = json(
        publish(
            &s,
            "orders",
            &key,
            "application/cloudevents+json",
            cloud_event("d1", "t", json!({})),
        ),
        200,
    );
    assert_eq!(dup["accepted"], 1);
    let again = json(
        publish(
            &s,
            "orders",
            &key,
            "application/cloudevents+json",
            cloud_event("d1", "t", json!({})),
        ),
        200,
    );
    assert_eq!(again["duplicates"], 1, "{again}");
    assert_eq!(again["deliveries"], 0, "{again}");

    // Validation names the event and the attribute.
    let missing = json!([{"specversion": "1.0", "id": "x", "type": "t"}]);
    assert_error(
        publish(
            &s,
            "orders",
            &key,
            "application/cloudevents-batch+json",
            missing,
        ),
        400,
        "InputError",
        "event [0]: the required attribute `source` is missing",
    );
    let bad_time =
        json!({"specversion": "1.0", "id": "x", "source": "/s", "type": "t", "time": "yesterday"});
    assert_error(
        publish(&s, "orders", &key, "application/cloudevents+json", bad_time),
        400,
        "InputError",
        "`time`",
    );
    // 1 MiB per request.
    let big = cloud_event("big", "t", json!("x".repeat(1 << 20)));
    assert_error(
        publish(&s, "orders", &key, "application/cloudevents+json", big),
        413,
        "PayloadTooLarge",
        "1 MiB",
    );
    // Auth: wrong topic key, no credentials, API keys with and without scope.
    assert_error(
        publish(
            &s,
            "orders",
            "not-the-key",
            "application/cloudevents+json",
            cloud_event("a", "t", json!(1)),
        ),
        401,
        "AuthError",
        "aeg-sas-key",
    );
    let anon = s
        .http
        .post(format!("{}/v1/topics/orders/events", s.url))
        .header("Content-Type", "application/cloudevents+json")
        .body(cloud_event("a", "t", json!(1)).to_string())
        .send()
        .unwrap();
    assert_error(anon, 401, "AuthError", "aeg-sas-key");
    let shown = json(s.req(Method::GET, "/v1/topics/orders").send().unwrap(), 200);
    assert_eq!(shown["endpoint"], "/v1/topics/orders/events", "{shown}");
    let system = json(
        s.req(Method::GET, "/v1/topics/system.data").send().unwrap(),
        200,
    );
    assert!(
        system.get("endpoint").is_none(),
        "system topics take no publishes: {system}"
    );
    let admin_owner = shown["owner"].as_str().unwrap().to_string();
    let publisher = json(
        s.req(Method::POST, "/v1/keys")
            .json(&json!({"owner": admin_owner, "scopes": ["publish"]}))
            .send()
            .unwrap(),
        201,
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    let with_key = s
        .http
        .post(format!("{}/v1/topics/orders/events", s.url))
        .header("Authorization", format!("Simple {publisher}"))
        .header("Content-Type", "application/cloudevents+json")
        .body(cloud_event("k1", "t", json!(1)).to_string())
        .send()
        .unwrap();
    json(with_key, 200);
    let stranger = json(
        s.req(Method::POST, "/v1/keys")
            .json(&json!({"owner": "someone-else", "scopes": ["publish"]}))
            .send()
            .unwrap(),
        201,
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    let denied = s
        .http
        .post(format!("{}/v1/topics/orders/events", s.url))
        .header("Authorization", format!("Simple {stranger}"))
        .header("Content-Type", "application/cloudevents+json")
        .body(cloud_event("k2", "t", json!(1)).to_string())
        .send()
        .unwrap();
    // Another owner's topic reads as a missing one.
    assert_error(denied, 404, "NotFound", "topic orders not found");
    // System topics take no outside events; unknown topics are 404.
    let sys = s
        .req(Method::POST, "/v1/topics/system.data/events")
        .header("Content-Type", "application/cloudevents+json")
        .body(cloud_event("z", "t", json!(1)).to_string())
        .send()
        .unwrap();
    assert_error(sys, 403, "AuthError", "written by wasmgrid itself");
    let none = s
        .req(Method::POST, "/v1/topics/nope/events")
        .header("Content-Type", "application/cloudevents+json")
        .body(cloud_event("z", "t", json!(1)).to_string())
        .send()
        .unwrap();
    assert_error(none, 404, "NotFound", "wasmgrid topic create nope");

    // Invalid subscriptions are rejected with the reason.
    let bad_filter = s
        .req(Method::PUT, "/v1/topics/orders/subscriptions/bad")
        .json(&json!({"destination": {"algorithm": "demo/recorder"},
            "filter": {"advancedFilters": [{"operatorType": "NumberSomething", "key": "data.n", "value": 1}]}}))
        .send()
        .unwrap();
    assert_error(bad_filter, 400, "InputError", "NumberSomething");
    let bad_retry = s
        .req(Method::PUT, "/v1/topics/orders/subscriptions/bad")
        .json(&json!({"destination": {"algorithm": "demo/recorder"}, "retryPolicy": {"maxDeliveryAttempts": 31}}))
        .send()
        .unwrap();
    assert_error(bad_retry, 400, "InputError", "maxDeliveryAttempts");
    let typo = s
        .req(Method::PUT, "/v1/topics/orders/subscriptions/bad")
        .json(&json!({"destination": {"algorithm": "demo/recorder"},
            "filter": {"subjectBeginWith": "/orders/"}}))
        .send()
        .unwrap();
    assert_error(typo, 400, "InputError", "subjectBeginWith");
    let private_hook = s
        .req(Method::PUT, "/v1/topics/orders/subscriptions/bad")
        .json(&json!({"destination": {"webhook": "http://127.0.0.1:9/hook"}}))
        .send()
        .unwrap();
    assert_error(private_hook, 400, "InputError", "--allow-private-webhooks");
}

/// Output batching, non-retryable errors and time-to-live expiry.
#[test]
fn batching_non_retryable_and_ttl() {
    let (s, _tmp) = start_events_server(&[]);
    let key = create_topic(&s, "readings");
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    subscribe(
        &s,
        "readings",
        "batched",
        json!({
            "destination": {"algorithm": "demo/recorder"},
            "filter": {"includedEventTypes": ["reading"]},
            "batching": {"maxEventsPerBatch": 10, "preferredBatchSizeInKilobytes": 64}
        }),
    );
    subscribe(
        &s,
        "readings",
        "fragile",
        json!({
            "destination": {"algorithm": "demo/recorder"},
            "filter": {"includedEventTypes": ["fragile"]},
            "retryPolicy": {"eventTimeToLiveInMinutes": 1}
        }),
    );
    let events: Vec<Value> = (0..25)
        .map(|i| cloud_event(&format!("r{i}"), "reading", json!({"i": i})))
        .collect();
    json(
        publish(
            &s,
            "readings",
            &key,
            "application/cloudevents-batch+json",
            Value::Array(events),
        ),
        200,
    );
    let mut sizes = Vec::new();
    for i in 0..25 {
        let got = eventually("batched delivery", Duration::from_secs(60), || {
            get_file(&s, &format!("demo/received/r{i}.json"))
        });
        assert_eq!(got["batch"], true, "{got}");
        assert_eq!(got["event"]["data"]["i"], i, "{got}");
        sizes.push(got["batchSize"].as_u64().unwrap());
    }
    assert!(sizes.iter().all(|&n| (1..=10).contains(&n)), "{sizes:?}");
    assert!(
        sizes.iter().any(|&n| n > 1),
        "events were batched: {sizes:?}"
    );

    // `permanent` is not retried.
    json(
        publish(
            &s,
            "readings",
            &key,
            "application/cloudevents+json",
            cloud_event("p1", "fragile", json!({"fail": "permanent"})),
        ),
        200,
    );
    // `transient` is retried until the (compressed) 1-minute TTL passes.
    json(
        publish(
            &s,
            "readings",
            &key,
            "application/cloudevents+json",
            cloud_event("t1", "fragile", json!({"fail": "transient"})),
        ),
        200,
    );
    let dl = eventually("both dead letters", Duration::from_secs(60), || {
        let list = dead_letters(&s, "readings", "fragile");
        (list.len() == 2).then_some(list)
    });
    let by_id = |id: &str| dl.iter().find(|d| d["event"]["id"] == id).cloned().unwrap();
    let p1 = by_id("p1");
    assert_eq!(p1["deadLetterReason"], "NonRetryableError", "{p1}");
    assert_eq!(p1["deliveryAttempts"], 1);
    assert!(
        p1["lastDeliveryOutcome"]
            .as_str()
            .unwrap()
            .starts_with("AlgorithmError"),
        "{p1}"
    );
    let t1 = by_id("t1");
    assert_eq!(t1["deadLetterReason"], "TimeToLiveExceeded", "{t1}");
    let attempts = t1["deliveryAttempts"].as_u64().unwrap();
    assert!(
        (2..30).contains(&attempts),
        "retried before the TTL ran out: {t1}"
    );

    // Redrive by id moves just that one back.
    let r = json(
        s.req(
            Method::POST,
            "/v1/topics/readings/subscriptions/fragile/redrive",
        )
        .json(&json!({"ids": ["p1"]}))
        .send()
        .unwrap(),
        200,
    );
    assert_eq!(r["redriven"], 1);
}

/// One request a webhook receiver saw: lowercase headers and the body.
type Received = (Vec<(String, String)>, Vec<u8>);

/// Minimal HTTP/1.1 server recording each request's headers and body, and
/// answering with the given statuses in turn (then 200).
fn webhook_receiver(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<Received>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let mut headers = Vec::new();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end().to_string();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                        if k == "content-length" {
                            len = v.parse().unwrap();
                        }
                        headers.push((k, v));
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let status = statuses.next().unwrap_or(200);
                let _ = tx.send((headers, body));
                let mut w = stream.try_clone().unwrap();
                let _ = write!(w, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            }
        }
    });
    (url, rx)
}

/// A subscription read back (its webhook password shown as `***`) and PUT
/// again keeps delivering with the real password.
#[test]
fn a_webhook_url_read_back_and_put_again_keeps_its_password() {
    let (s, _tmp) = start_events_server(&["--allow-private-webhooks"]);
    let key = create_topic(&s, "hooks");
    let (url, rx) = webhook_receiver(vec![]);
    let with_password = url.replacen("http://", "http://user:pa55word@", 1);
    subscribe(
        &s,
        "hooks",
        "out",
        json!({"destination": {"webhook": with_password}}),
    );
    let shown = subscription(&s, "hooks", "out")["destination"]["webhook"]
        .as_str()
        .expect("webhook URL")
        .to_string();
    assert!(shown.contains(":***@"), "{shown}");
    json(
        s.req(Method::PUT, "/v1/topics/hooks/subscriptions/out")
            .json(&json!({"destination": {"webhook": shown}}))
            .send()
            .unwrap(),
        200,
    );
    json(
        publish(
            &s,
            "hooks",
            &key,
            "application/cloudevents+json",
            json!({"specversion": "1.0", "id": "pw1", "source": "/t", "type": "t"}),
        ),
        200,
    );
    let (headers, _) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a delivery");
    let auth = headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // base64("user:pa55word")
    assert_eq!(auth, "Basic dXNlcjpwYTU1d29yZA==", "{headers:?}");
}

/// Webhooks: signed structured CloudEvents, retries on 5xx, no retry on 400.
#[test]
fn webhook_deliveries_are_signed_and_retried() {
    use hmac::Mac;
    let (s, _tmp) = start_events_server(&["--allow-private-webhooks"]);
    let key = create_topic(&s, "hooks");
    let (url, rx) = webhook_receiver(vec![503, 200, 400]);
    let sub = subscribe(
        &s,
        "hooks",
        "out",
        json!({"destination": {"webhook": url}, "maxConcurrentDeliveries": 1}),
    );
    let secret = sub["webhookSecret"]
        .as_str()
        .expect("generated secret")
        .to_string();
    json(
        publish(
            &s,
            "hooks",
            &key,
            "application/cloudevents+json",
            cloud_event("w1", "t", json!({"a": 1})),
        ),
        200,
    );
    let (_, first) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("first attempt");
    let (headers, body) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("retry after 503");
    assert_eq!(first, body, "the retry carries the same event");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/cloudevents+json; charset=utf-8")
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header("x-wasmgrid-signature"), Some(expected));
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["id"], "w1");
    assert_eq!(event["data"]["a"], 1);

    // 400 is final: dead-lettered after one attempt.
    json(
        publish(
            &s,
            "hooks",
            &key,
            "application/cloudevents+json",
            cloud_event("w2", "t", json!({})),
        ),
        200,
    );
    rx.recv_timeout(Duration::from_secs(30))
        .expect("w2 attempt");
    let dl = eventually("w2 dead letter", Duration::from_secs(30), || {
        let list = dead_letters(&s, "hooks", "out");
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(dl[0]["deadLetterReason"], "NonRetryableError");
    assert_eq!(dl[0]["lastDeliveryOutcome"], "webhook answered HTTP 400");
}

/// kill -9 while events are being published and delivered; after a restart,
/// every acknowledged event is delivered at least once.
#[test]
fn crash_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--event-time-scale", SCALE]);
    let key = create_topic(&s, "load");
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    subscribe(
        &s,
        "load",
        "all",
        json!({"destination": {"algorithm": "demo/recorder"}, "maxConcurrentDeliveries": 32}),
    );
    const TOTAL: usize = 10_000;
    const PER_REQUEST: usize = 100;
    // Publish from a thread; kill the server part-way through.
    let url = s.url.clone();
    let publisher = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        let mut acked = Vec::new();
        for chunk in 0..TOTAL / PER_REQUEST {
            let events: Vec<Value> = (0..PER_REQUEST)
                .map(|i| cloud_event(&format!("c{}", chunk * PER_REQUEST + i), "load", json!({})))
                .collect();
            let resp = http
                .post(format!("{url}/v1/topics/load/events"))
                .header("aeg-sas-key", &key)
                .header("Content-Type", "application/cloudevents-batch+json")
                .body(Value::Array(events).to_string())
                .send();
            match resp {
                Ok(r) if r.status() == 200 => {
                    acked.extend((0..PER_REQUEST).map(|i| chunk * PER_REQUEST + i))
                }
                _ => break,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(1500));
    let child_pid = std::fs::read_to_string(tmp.path().join("server.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["pid"].as_u64())
        .expect("server pid");
    unsafe {
        libc::kill(child_pid as i32, libc::SIGKILL);
    }
    let acked = publisher.join().unwrap();
    assert!(
        !acked.is_empty(),
        "some events were acknowledged before the kill"
    );
    drop(s);
    let s = Server::start_in(tmp.path(), &["--event-time-scale", SCALE]);
    // Every acknowledged event reaches the recorder (the outbox of the
    // received collection shows each write, duplicates included).
    let expected: std::collections::HashSet<String> = acked
        .iter()
        .map(|i| format!("data://demo/received/c{i}.json"))
        .collect();
    let mut writes: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut after = 0u64;
    let started = Instant::now();
    loop {
        let page = json(
            s.req(
                Method::GET,
                &format!("/v1/events/outbox?after={after}&limit=1000"),
            )
            .send()
            .unwrap(),
            200,
        );
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            after = e["sequence"].as_u64().unwrap_or(after);
            if let Some(uri) = e["event"]["data"]["uri"].as_str() {
                *writes.entry(uri.to_string()).or_default() += 1;
            }
        }
        if events.is_empty() {
            if expected.iter().all(|u| writes.contains_key(u)) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "{} of {} acknowledged events not delivered after restart",
                expected.iter().filter(|u| !writes.contains_key(*u)).count(),
                expected.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let duplicates: u32 = writes.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {} events acknowledged before kill -9, all delivered; {duplicates} duplicate deliveries",
        acked.len()
    );
}

/// Microsoft's `azure-eventgrid` client (from PyPI) publishes unchanged:
/// CloudEvents and Event Grid schema events with `AzureKeyCredential`.
#[test]
fn azure_eventgrid_python_client_publishes_unchanged() {
    let python = repo_root().join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh (it installs tests/python/requirements.txt)",
        python.display()
    );
    let (s, _tmp) = start_events_server(&[]);
    let key = create_topic(&s, "azure");
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    subscribe(
        &s,
        "azure",
        "confident-or-orders",
        json!({"destination": {"algorithm": "demo/recorder"},
            "filter": {"advancedFilters": [
                {"operatorType": "NumberNotIn", "key": "data.confidence", "values": [0.5]}]}}),
    );
    let out = std::process::Command::new(python)
        .arg(repo_root().join("tests/python/eventgrid_client_test.py"))
        .args(["--url", &s.url, "--topic", "azure", &format!("--key={key}")])
        .output()
        .expect("run the Python Event Grid client test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "azure-eventgrid client test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("wrong key refused"), "{stdout}");
    let ce = eventually("the CloudEvent", Duration::from_secs(60), || {
        get_file(&s, "demo/received/azure-ce-1.json")
    });
    assert_eq!(ce["trigger"]["type"], "com.example.ai.InferenceCompleted");
    assert_eq!(ce["trigger"]["subject"], "/models/resnet");
    assert_eq!(
        ce["trigger"]["extensions"]["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(ce["data"]["confidence"], 0.97);
    let eg = eventually("the EventGridEvent", Duration::from_secs(60), || {
        get_file(&s, "demo/received/azure-eg-1.json")
    });
    assert_eq!(eg["trigger"]["type"], "Contoso.Orders.OrderShipped");
    assert_eq!(eg["trigger"]["extensions"]["dataversion"], "1.0");
    assert_eq!(eg["data"]["order"], 42);
    // NumberNotIn [0.5] filtered out the second CloudEvent.
    eventually("an empty queue", Duration::from_secs(30), || {
        (subscription(&s, "azure", "confident-or-orders")["queueDepth"] == 0).then_some(())
    });
    assert!(get_file(&s, "demo/received/azure-ce-2.json").is_none());
}

/// The guest APIs: `infer` calls `json-stats` with `algo.call` and publishes
/// an event with `events.publish`; a filtered subscription routes it to the
/// recorder. Grants, the call depth limit and traceparent propagation.
#[test]
fn pipeline_of_algorithms_with_algo_call_and_events_publish() {
    let (s, _tmp) = start_events_server(&[]);
    create_topic(&s, "inference");
    let requests_key = create_topic(&s, "requests");
    s.deploy_ok("json-stats", "demo/json-stats@1.0.0", "");
    s.deploy_ok("infer", "demo/infer@1.0.0", "grant=topic:inference");
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    subscribe(
        &s,
        "inference",
        "confident",
        json!({"destination": {"algorithm": "demo/recorder"},
            "filter": {"advancedFilters": [
                {"operatorType": "NumberGreaterThan", "key": "data.confidence", "value": 0.9}]}}),
    );
    subscribe(
        &s,
        "requests",
        "run-infer",
        json!({"destination": {"algorithm": "demo/infer/1"}}),
    );

    // An HTTP call: infer → json-stats → publish → subscription → recorder.
    let out = json(
        s.call(
            "demo/infer",
            "application/json",
            r#"{"scores": [0.95, 0.97]}"#,
        ),
        200,
    );
    let id = out["result"]["event"].as_str().unwrap().to_string();
    assert!((out["result"]["confidence"].as_f64().unwrap() - 0.96).abs() < 1e-9);
    let got = eventually("the published event", Duration::from_secs(60), || {
        get_file(&s, &format!("demo/received/{id}.json"))
    });
    assert_eq!(got["trigger"]["type"], "com.example.ai.InferenceCompleted");
    assert_eq!(got["trigger"]["source"], "/algorithms/demo/infer");
    assert_eq!(got["data"]["stats"]["count"], 2);
    // Low confidence is published but filtered out.
    let low = json(
        s.call("demo/infer", "application/json", r#"{"scores": [0.1]}"#),
        200,
    );
    let low_id = low["result"]["event"].as_str().unwrap().to_string();

    // Triggered by an event with a traceparent: the published event carries it.
    let mut req = cloud_event("req-1", "com.example.request", json!({"scores": [0.99]}));
    req["traceparent"] = "00-11111111111111111111111111111111-2222222222222222-01".into();
    json(
        publish(
            &s,
            "requests",
            &requests_key,
            "application/cloudevents+json",
            req,
        ),
        200,
    );
    let traced = eventually("the traced event", Duration::from_secs(60), || {
        let list = json(
            s.req(Method::GET, "/v1/data/demo/received").send().unwrap(),
            200,
        );
        list["files"].as_array().unwrap().iter().find_map(|f| {
            let name = f["filename"].as_str()?;
            let doc = get_file(&s, &format!("demo/received/{name}"))?;
            (doc["trigger"]["extensions"]["traceparent"]
                == "00-11111111111111111111111111111111-2222222222222222-01")
                .then_some(doc)
        })
    });
    assert_eq!(traced["data"]["confidence"], 0.99);
    assert!(get_file(&s, &format!("demo/received/{low_id}.json")).is_none());

    // Without the topic grant, publishing is refused with the fix.
    s.deploy_ok("infer", "demo/infer-nogrant@1.0.0", "");
    assert_error(
        s.call(
            "demo/infer-nogrant",
            "application/json",
            r#"{"scores": [0.5]}"#,
        ),
        400,
        "AlgorithmError",
        "--grant topic:inference",
    );
    // A loop is stopped by the depth limit, not by exhausting slots.
    assert_error(
        s.call(
            "demo/infer",
            "application/json",
            r#"{"recurse": "demo/infer/1"}"#,
        ),
        400,
        "AlgorithmError",
        "deep (the limit is 8)",
    );
    // Another owner's algorithms are out of reach.
    s.deploy_ok("json-stats", "other/json-stats@1.0.0", "");
    assert_error(
        s.call(
            "demo/infer",
            "application/json",
            r#"{"scores": [0.5], "stats": "other/json-stats"}"#,
        ),
        400,
        "AlgorithmError",
        "algorithms call algorithms of their own owner",
    );
}

/// Seed 000 with jobs: each CSV landing in a folder starts a batch job on that
/// file (a `{"job": …}` destination), and the job's end is a `system.jobs`
/// event delivered to a subscriber.
#[test]
fn file_events_start_jobs_and_jobs_announce_their_end() {
    let (s, _tmp) = start_events_server(&[]);
    s.deploy_ok("score-csv", "demo/score-csv@1.0.0", "");
    s.deploy_ok(
        "event-recorder",
        "demo/recorder@1.0.0",
        "grant=data://demo/received:write",
    );
    subscribe(
        &s,
        "system.data",
        "score-new-csv",
        json!({
            "destination": {"job": {"algorithm": "demo/score-csv", "output": "data://demo/scored/",
                                     "maxConcurrency": 1}},
            "filter": {"includedEventTypes": ["wasmgrid.data.FileCreated"],
                       "subjectBeginsWith": "/collections/demo/incoming/files/",
                       "subjectEndsWith": ".csv"}
        }),
    );
    subscribe(
        &s,
        "system.jobs",
        "job-ends",
        json!({"destination": {"algorithm": "demo/recorder"}}),
    );
    // A job destination is validated like a job request.
    let bad = s
        .req(Method::PUT, "/v1/topics/system.data/subscriptions/bad-job")
        .json(&json!({"destination": {"job": {"algorithm": "demo/score-csv"}}}))
        .send()
        .unwrap();
    assert_error(bad, 400, "InputError", "output");

    put_file(&s, "demo/incoming/north.csv", "region,q1,q2\nnorth,1,3\n");
    let scored = eventually("the job's output", Duration::from_secs(90), || {
        let resp = s
            .req(Method::GET, "/v1/data/demo/scored/north.csv")
            .send()
            .ok()?;
        (resp.status() == 200).then(|| resp.text().unwrap_or_default())
    });
    assert!(scored.starts_with("region,q1,q2,score"), "{scored}");
    assert!(scored.contains("north,1,3,2"), "{scored}");
    let ended = eventually("the JobCompleted event", Duration::from_secs(90), || {
        let resp = s.req(Method::GET, "/v1/data/demo/received").send().ok()?;
        if resp.status() != 200 {
            return None;
        }
        let list: Value = resp.json().ok()?;
        list["files"].as_array()?.iter().find_map(|f| {
            let doc = get_file(&s, &format!("demo/received/{}", f["filename"].as_str()?))?;
            (doc["trigger"]["type"] == "wasmgrid.jobs.JobCompleted").then_some(doc)
        })
    });
    assert!(
        ended["trigger"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("/jobs/")
    );
    assert_eq!(ended["data"]["status"], "Completed", "{ended}");
}

/// A job's outputs, committed many to a transaction (their change events
/// sharing outbox records), each raise one `FileCreated` event, numbered in
/// the outbox and delivered once.
#[test]
fn every_output_of_a_job_raises_one_file_created_event() {
    let (s, _tmp) = start_events_server(&[]);
    s.deploy_ok("noop", "demo/noop@1.0.0", "");
    subscribe(
        &s,
        "system.data",
        "job-outputs",
        json!({
            "destination": {"algorithm": "demo/noop"},
            "filter": {"includedEventTypes": ["wasmgrid.data.FileCreated"],
                       "subjectBeginsWith": "/collections/demo/outs/files/",
                       "subjectEndsWith": ".txt"}
        }),
    );
    const FILES: usize = 150;
    for i in 0..FILES {
        put_file(&s, &format!("demo/ins/f{i:03}.txt"), &format!("line {i}\n"));
    }
    let submitted = json(
        s.req(Method::POST, "/v1/algo/demo/noop/jobs")
            .json(
                &json!({"input": "data://demo/ins/", "output": "data://demo/outs/",
                          "maxConcurrency": 2}),
            )
            .send()
            .unwrap(),
        202,
    );
    let id = submitted["id"].as_str().unwrap().to_string();
    let done = eventually("the job's end", Duration::from_secs(90), || {
        let j: Value = s
            .req(Method::GET, &format!("/v1/jobs/{id}"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (j["status"] != "Queued" && j["status"] != "Running").then_some(j)
    });
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["counts"]["succeeded"], FILES, "{done}");

    // The outbox lists one event per output, each with its own number.
    let mut outputs = Vec::new();
    let mut after = 0u64;
    loop {
        let page = json(
            s.req(
                Method::GET,
                &format!("/v1/events/outbox?after={after}&limit=100"),
            )
            .send()
            .unwrap(),
            200,
        );
        let events = page["events"].as_array().unwrap().clone();
        let Some(last) = events.last() else { break };
        let next = last["sequence"].as_u64().unwrap();
        assert!(next > after, "sequence numbers increase: {page}");
        after = next;
        outputs.extend(events.into_iter().filter(|e| {
            e["event"]["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("/collections/demo/outs/files/f"))
        }));
    }
    assert_eq!(outputs.len(), FILES);
    let mut numbers: Vec<u64> = outputs
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    numbers.dedup();
    assert_eq!(numbers.len(), FILES, "one number per event");

    // Each reached the subscription once.
    eventually("every output delivered", Duration::from_secs(60), || {
        let delivered = metric(
            &s,
            "wasmgrid_events_delivered_total",
            &["subscription=\"system.data/job-outputs\""],
        );
        (delivered == Some(FILES as f64)).then_some(())
    });
    assert_eq!(
        subscription(&s, "system.data", "job-outputs")["queueDepth"],
        0
    );
}
