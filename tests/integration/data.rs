//! Hosted data collections, grants and ACLs, change events, secrets, wasi:keyvalue.

use crate::support::*;
use reqwest::Method;
use std::process::Command;

fn mk(s: &Server, owner: &str, name: &str, read: &[&str]) {
    let resp = s
        .req(Method::POST, &format!("/v1/data/{owner}"))
        .json(&serde_json::json!({"name": name, "acl": {"read": read}}))
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "Algorithmia clients need exactly 200: {}",
        resp.text().unwrap_or_default()
    );
}

fn put(
    s: &Server,
    path: &str,
    ct: Option<&str>,
    body: impl Into<reqwest::blocking::Body>,
) -> reqwest::blocking::Response {
    let mut r = s.req(Method::PUT, &format!("/v1/data/{path}")).body(body);
    if let Some(ct) = ct {
        r = r.header("Content-Type", ct);
    }
    r.send().unwrap()
}

fn key(s: &Server, owner: &str, scopes: &[&str]) -> String {
    let v = json(
        s.req(Method::POST, "/v1/keys")
            .json(&serde_json::json!({"owner": owner, "scopes": scopes}))
            .send()
            .unwrap(),
        201,
    );
    v["key"].as_str().unwrap().to_string()
}

#[test]
fn files_round_trip_through_the_api() {
    let s = Server::start();
    mk(&s, "demo", "docs", &[]);
    assert_eq!(
        put(
            &s,
            "demo/docs/notes/hello.txt",
            Some("text/plain"),
            "héllo wörld"
        )
        .status(),
        200
    );
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    assert_eq!(
        put(
            &s,
            "demo/docs/bin/blob.bin",
            Some("application/octet-stream"),
            bytes.clone()
        )
        .status(),
        200
    );

    let r = s
        .req(Method::GET, "/v1/data/demo/docs/notes/hello.txt")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(r.headers().contains_key("last-modified"));
    assert_eq!(r.text().unwrap(), "héllo wörld");
    let r = s
        .req(Method::GET, "/v1/data/demo/docs/bin/blob.bin")
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().to_vec(), bytes);

    // Conditional and ranged reads.
    let r = s
        .req(Method::GET, "/v1/data/demo/docs/notes/hello.txt")
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = s
        .req(Method::GET, "/v1/data/demo/docs/bin/blob.bin")
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/5000");
    assert_eq!(r.bytes().unwrap().to_vec(), bytes[10..20].to_vec());

    // HEAD: 200 for files; 404 with the reason in X-Error-Message otherwise.
    let r = s
        .req(Method::HEAD, "/v1/data/demo/docs/notes/hello.txt")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "13");
    let r = s
        .req(Method::HEAD, "/v1/data/demo/docs/nope.txt")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["x-error-message"]
            .to_str()
            .unwrap()
            .contains("not found")
    );

    // One-level listing with folders, Algorithmia's timestamp format, ACL on request.
    let v = json(
        s.req(Method::GET, "/v1/data/demo/docs?acl=true")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(
        v["folders"],
        serde_json::json!([{"name": "bin"}, {"name": "notes"}])
    );
    assert_eq!(v["files"], serde_json::json!([]));
    assert_eq!(v["acl"], serde_json::json!({"read": []}));
    let v = json(
        s.req(Method::GET, "/v1/data/demo/docs/notes")
            .send()
            .unwrap(),
        200,
    );
    let f = &v["files"][0];
    assert_eq!(f["filename"], "hello.txt");
    assert_eq!(f["size"], 13);
    let lm = f["last_modified"].as_str().unwrap();
    assert!(
        lm.ends_with('Z') && lm.len() == "2024-01-02T03:04:05.123Z".len(),
        "{lm}"
    );
    assert!(v.get("marker").is_none());

    // .my is the key's owner (the admin key's owner is `admin`).
    mk(&s, ".my", "mine", &["user://*"]);
    assert_eq!(
        json(
            s.req(Method::GET, "/v1/data/admin/mine").send().unwrap(),
            200
        )["files"],
        serde_json::json!([])
    );

    // Errors name the problem.
    assert_error(
        put(&s, "demo/docs", None, "x"),
        400,
        "InputError",
        "PUT needs a file path",
    );
    // (`..` cannot be sent over HTTP at all: clients resolve dot segments, even
    // percent-encoded ones; the guest path checks it in acl_and_grant_matrix.)
    assert_error(
        put(&s, "demo/docs/a//b", None, "x"),
        400,
        "InputError",
        "empty segment",
    );
    assert_error(
        s.req(Method::GET, "/v1/data/demo/nothing").send().unwrap(),
        404,
        "NotFound",
        "collection data://demo/nothing not found",
    );
    let dup = s
        .req(Method::POST, "/v1/data/demo")
        .json(&serde_json::json!({"name": "docs"}))
        .send()
        .unwrap();
    assert_error(dup, 409, "AlreadyExists", "already exists");
    let bad_acl = s
        .req(Method::POST, "/v1/data/demo")
        .json(&serde_json::json!({"name": "x", "acl": {"read": ["everyone"]}}))
        .send()
        .unwrap();
    assert_error(bad_acl, 400, "InputError", "unknown read ACL entry");

    // Deletes: files, then non-empty folders only with force.
    let v = json(
        s.req(Method::DELETE, "/v1/data/demo/docs/notes/hello.txt")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["result"]["deleted"], 1);
    assert_eq!(
        s.req(Method::GET, "/v1/data/demo/docs/notes/hello.txt")
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_error(
        s.req(Method::DELETE, "/v1/data/demo/docs").send().unwrap(),
        409,
        "AlreadyExists",
        "force=true",
    );
    let v = json(
        s.req(Method::DELETE, "/v1/data/demo/docs?force=true")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["result"]["deleted"], 1);
    assert_eq!(
        s.req(Method::GET, "/v1/data/demo/docs")
            .send()
            .unwrap()
            .status(),
        404
    );

    // A PUT into a collection that does not exist creates it, private.
    assert_eq!(put(&s, "demo/fresh/x.txt", None, "x").status(), 200);
    let v = json(
        s.req(Method::GET, "/v1/data/demo/fresh?acl=true")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v["acl"]["read"], serde_json::json!([]));
}

#[test]
fn listings_paginate_over_ten_thousand_files() {
    let s = Server::start();
    mk(&s, "demo", "many", &[]);
    // 10,000 files from 16 writers (the store group-commits their fsyncs), plus a
    // sub-folder whose contents must appear as one folder entry.
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let url = s.url.clone();
            let key = s.key.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                for i in (t..10_000).step_by(16) {
                    let r = http
                        .put(format!("{url}/v1/data/demo/many/f{i:05}.txt"))
                        .header("Authorization", &key)
                        .body(format!("{i}"))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for i in 0..5 {
        assert_eq!(
            put(&s, &format!("demo/many/sub/deep/g{i}.txt"), None, "x").status(),
            200
        );
    }
    let mut marker: Option<String> = None;
    let (mut files, mut folders, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let q = marker
            .as_ref()
            .map(|m| format!("?marker={m}"))
            .unwrap_or_default();
        let v = json(
            s.req(Method::GET, &format!("/v1/data/demo/many{q}"))
                .send()
                .unwrap(),
            200,
        );
        pages += 1;
        for f in v["files"].as_array().unwrap() {
            files.push(f["filename"].as_str().unwrap().to_string());
        }
        for f in v["folders"].as_array().unwrap() {
            folders.push(f["name"].as_str().unwrap().to_string());
        }
        marker = v["marker"].as_str().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(files.len(), 10_000);
    assert_eq!(folders, ["sub"]);
    let mut sorted = files.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10_000, "no duplicates across pages");
    assert_eq!(pages, 11, "1000 entries a page");
    assert_error(
        s.req(Method::GET, "/v1/data/demo/many?marker=bogus")
            .send()
            .unwrap(),
        400,
        "InputError",
        "invalid marker",
    );
}

/// Reads `uri` from inside an algorithm (data-bench get, n=1).
fn guest_read(s: &Server, algorithm: &str, uri: &str) -> reqwest::blocking::Response {
    s.call(
        algorithm,
        "application/json",
        serde_json::json!({"op": "get", "uri": uri, "n": 1}).to_string(),
    )
}

#[test]
fn acl_and_grant_matrix() {
    let s = Server::start();
    for (name, read) in [
        ("priv", vec![]),
        ("algos", vec!["algo://.my/*"]),
        ("pub", vec!["user://*"]),
    ] {
        mk(&s, "demo", name, &read);
        assert_eq!(
            put(&s, &format!("demo/{name}/f.txt"), None, "secret data").status(),
            200
        );
    }
    s.deploy_ok("data-bench", "demo/reader@1.0.0", "");
    s.deploy_ok(
        "data-bench",
        "demo/granted@1.0.0",
        "grant=data://.my/priv:read",
    );
    s.deploy_ok("data-bench", "bob/reader@1.0.0", "");
    let demo_reader = key(&s, "demo", &["data:read"]);
    let demo_invoker = key(&s, "demo", &["invoke"]);
    let bob_reader = key(&s, "bob", &["data:read"]);

    // (collection, principal, may read)
    let algo_cases = [
        ("priv", "demo/reader", false),
        ("priv", "demo/granted", true),
        ("priv", "bob/reader", false),
        ("algos", "demo/reader", true),
        ("algos", "bob/reader", false),
        ("pub", "demo/reader", true),
        ("pub", "bob/reader", true),
    ];
    for (coll, algo, ok) in algo_cases {
        let resp = guest_read(&s, algo, &format!("data://demo/{coll}/f.txt"));
        if ok {
            assert_eq!(json(resp, 200)["result"]["ops"], 1, "{algo} reading {coll}");
        } else {
            let msg = assert_error(resp, 400, "AlgorithmError", "access denied");
            assert!(
                msg.contains("--grant data://demo/"),
                "says how to fix it: {msg}"
            );
        }
    }
    // Another owner's private collection reads as a missing one (404); the
    // owner's key lacking the scope gets 403.
    let key_cases = [
        ("priv", &demo_reader, 200),
        ("priv", &demo_invoker, 403),
        ("priv", &bob_reader, 404),
        ("algos", &bob_reader, 404),
        ("pub", &bob_reader, 200),
        ("pub", &demo_invoker, 200),
    ];
    for (coll, k, status) in key_cases {
        let r = s
            .http
            .get(format!("{}/v1/data/demo/{coll}/f.txt", s.url))
            .header("Authorization", k.as_str())
            .send()
            .unwrap();
        match status {
            200 => assert_eq!(r.text().unwrap(), "secret data", "{coll}"),
            403 => drop(assert_error(r, 403, "AuthError", "may not read")),
            _ => drop(assert_error(r, 404, "NotFound", "not found")),
        }
    }
    // Writes need a write grant (algorithms) or data:write (keys), on the owner's
    // collections only.
    let w = s.call(
        "demo/granted",
        "application/json",
        serde_json::json!({"op": "put", "uri": "data://demo/priv/g.txt", "n": 1, "size": 4})
            .to_string(),
    );
    assert_error(w, 400, "AlgorithmError", "may not write");
    let r = s
        .http
        .put(format!("{}/v1/data/demo/pub/x.txt", s.url))
        .header("Authorization", &bob_reader)
        .body("x")
        .send()
        .unwrap();
    assert_error(r, 403, "AuthError", "may not write");
    assert_error(
        s.deploy("data-bench", "demo/sneaky@1.0.0", "grant=data://bob/c:read"),
        400,
        "InputError",
        "another owner's collection",
    );
    // A guest never sees data through a URI trick.
    let resp = guest_read(&s, "bob/reader", "data://demo/priv/../pub/f.txt");
    assert_error(resp, 400, "AlgorithmError", "'.' and '..'");
}

#[test]
fn seed_004_save_message_with_secret_and_events() {
    let s = Server::start();
    s.deploy_ok(
        "save-message",
        "demo/save-message@1.0.0",
        "grant=data://demo/messages:write&grant=data://demo/inbox:write",
    );
    // Without a secret the default collection is data://.my/messages.
    let v = json(
        s.call(
            "demo/save-message",
            "application/json",
            r#"{"filename": "m1.txt", "data": "first"}"#,
        ),
        200,
    );
    assert_eq!(v["result"]["uri"], "data://.my/messages/m1.txt");
    // The secret COLLECTION redirects it (Algorithmia event flows keep their
    // connection details in the secret store).
    let r = s
        .req(
            Method::PUT,
            "/v1/algorithms/demo/save-message/secrets/COLLECTION",
        )
        .body("data://demo/inbox")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(
        s.call(
            "demo/save-message",
            "application/json",
            r#"{"filename": "m2.json", "data": {"n": 2}}"#,
        ),
        200,
    );
    assert_eq!(v["result"]["uri"], "data://demo/inbox/m2.json");
    let r = s
        .req(Method::GET, "/v1/data/demo/inbox/m2.json")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(r.text().unwrap(), r#"{"n":2}"#);
    assert_eq!(
        s.req(Method::GET, "/v1/data/demo/messages/m1.txt")
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "first"
    );
    // Bad input is the caller's fault.
    assert_error(
        s.call(
            "demo/save-message",
            "application/json",
            r#"{"filename": "../x", "data": "y"}"#,
        ),
        400,
        "AlgorithmError",
        "..",
    );

    // Secrets list names only, and never reach logs.
    let v = json(
        s.req(Method::GET, "/v1/algorithms/demo/save-message/secrets")
            .send()
            .unwrap(),
        200,
    );
    assert_eq!(v, serde_json::json!({"secrets": [{"name": "COLLECTION"}]}));
    assert!(
        !s.log().contains("data://demo/inbox\n"),
        "secret value in the log"
    );
    assert_error(
        s.req(Method::PUT, "/v1/algorithms/demo/save-message/secrets/9bad")
            .body("x")
            .send()
            .unwrap(),
        400,
        "InputError",
        "invalid secret name",
    );
    assert_eq!(
        s.req(
            Method::DELETE,
            "/v1/algorithms/demo/save-message/secrets/COLLECTION"
        )
        .send()
        .unwrap()
        .status(),
        204
    );
    let v = json(
        s.call(
            "demo/save-message",
            "application/json",
            r#"{"filename": "m3.txt", "data": "back"}"#,
        ),
        200,
    );
    assert_eq!(v["result"]["uri"], "data://.my/messages/m3.txt");

    // Exactly one change event per change, in order, with Event Grid-style fields.
    assert_eq!(
        s.req(Method::DELETE, "/v1/data/demo/messages/m1.txt")
            .send()
            .unwrap()
            .status(),
        200
    );
    let v = json(
        s.req(Method::GET, "/v1/events/outbox?limit=100")
            .send()
            .unwrap(),
        200,
    );
    // The outbox also holds `system.algorithms` lifecycle records (the deploy above).
    let events: Vec<&serde_json::Value> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["event"]["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("wasmgrid.data."))
        })
        .collect();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["event"]["type"].as_str().unwrap().to_string(),
                e["event"]["data"]["uri"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "wasmgrid.data.FileCreated".to_string(),
                "data://demo/messages/m1.txt".to_string()
            ),
            (
                "wasmgrid.data.FileCreated".into(),
                "data://demo/inbox/m2.json".into()
            ),
            (
                "wasmgrid.data.FileCreated".into(),
                "data://demo/messages/m3.txt".into()
            ),
            (
                "wasmgrid.data.FileDeleted".into(),
                "data://demo/messages/m1.txt".into()
            ),
        ]
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers increase: {seqs:?}"
    );
    let e = &events[1]["event"];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["source"], "/collections/demo/inbox");
    assert_eq!(e["subject"], "/collections/demo/inbox/files/m2.json");
    assert_eq!(e["data"]["contentType"], "application/json");
    assert_eq!(e["data"]["size"], 7);
    assert!(e["data"]["etag"].as_str().unwrap().starts_with('"'));
}

#[test]
fn wasi_keyvalue_guests_share_the_collections() {
    let s = Server::start();
    s.deploy_ok(
        "kv-counter",
        "demo/counter@1.0.0",
        "grant=data://demo/counters:write",
    );
    s.deploy_ok("kv-counter", "demo/nogrant@1.0.0", "");
    let call = |algo: &str, delta: u64| {
        s.call(
            algo,
            "application/json",
            serde_json::json!({"bucket": "demo/counters", "key": "hits", "delta": delta})
                .to_string(),
        )
    };
    assert_eq!(json(call("demo/counter", 1), 200)["result"]["value"], 1);
    assert_eq!(json(call("demo/counter", 1), 200)["result"]["value"], 2);
    let v = json(call("demo/counter", 40), 200);
    assert_eq!(v["result"]["value"], 42);
    assert_eq!(v["result"]["keys"], serde_json::json!(["hits", "last"]));
    // The same data through the data API.
    assert_eq!(
        s.req(Method::GET, "/v1/data/demo/counters/hits")
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "42"
    );
    assert_eq!(
        s.req(Method::GET, "/v1/data/demo/counters/last")
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "hits"
    );
    // No grant, private collection: access-denied, never the data.
    assert_error(
        call("demo/nogrant", 1),
        400,
        "AlgorithmError",
        "access denied",
    );
}

#[test]
fn big_uploads_stream_and_temp_space_is_per_algorithm() {
    let s = Server::start();
    // 64 MiB of pseudo-random bytes, streamed through a blob.
    let mut data = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let r = put(
        &s,
        "demo/big/blob.bin",
        Some("application/octet-stream"),
        data.clone(),
    );
    assert_eq!(json(r, 200)["size"], 64 << 20);
    let got = s
        .req(Method::GET, "/v1/data/demo/big/blob.bin")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        got.len() == data.len() && got[..] == data[..],
        "64 MiB round trip"
    );
    let r = s
        .req(Method::GET, "/v1/data/demo/big/blob.bin")
        .header("Range", "bytes=33554432-33554447")
        .send()
        .unwrap();
    assert_eq!(
        r.bytes().unwrap().to_vec(),
        data[33_554_432..33_554_448].to_vec()
    );
    // Replacing it with a small file frees the blob.
    assert_eq!(
        put(&s, "demo/big/blob.bin", None, "small now").status(),
        200
    );
    let blobs = std::fs::read_dir(s.data_dir.join("blobs"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("data-")
        });
    assert_eq!(blobs.count(), 0);

    // An algorithm's data://.algo/temp is its own: another algorithm's is separate.
    s.deploy_ok("data-bench", "demo/scratch@1.0.0", "");
    s.deploy_ok("data-bench", "demo/other@1.0.0", "");
    let op = |algo: &str, op: &str| {
        s.call(
            algo,
            "application/json",
            serde_json::json!({"op": op, "uri": "data://.algo/temp/t.bin", "n": 1, "size": 3})
                .to_string(),
        )
    };
    assert_eq!(json(op("demo/scratch", "put"), 200)["result"]["ops"], 1);
    assert_eq!(json(op("demo/scratch", "get"), 200)["result"]["bytes"], 3);
    assert_error(op("demo/other", "get"), 400, "AlgorithmError", "not found");
}

#[test]
fn cli_data_and_secret_commands() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(&s.data_dir).args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(&["data", "mk", "data://demo/cli", "--acl", "private"], None);
    assert!(ok, "{err}");
    let local = tmp.path().join("in.bin");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &bytes).unwrap();
    let (ok, out, err) = run(
        &[
            "data",
            "put",
            local.to_str().unwrap(),
            "data://demo/cli/in.bin",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("uploaded 100000 bytes"));
    let (ok, _, err) = run(
        &["data", "put", "-", "data://demo/cli/notes/a b.txt"],
        Some(b"from stdin"),
    );
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["data", "get", "data://demo/cli/notes/a b.txt"], None);
    assert!(ok);
    assert_eq!(out, b"from stdin");
    let dest = tmp.path().join("out.bin");
    let (ok, _, err) = run(
        &[
            "data",
            "get",
            "data://demo/cli/in.bin",
            dest.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let (ok, out, _) = run(&["data", "ls", "data://demo/cli"], None);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), "notes/\nin.bin\n");
    let (ok, _, err) = run(&["data", "rm", "data://demo/cli"], None);
    assert!(!ok && err.contains("force"), "{err}");
    let (ok, out, _) = run(&["data", "rm", "data://demo/cli", "--force"], None);
    assert!(ok && String::from_utf8_lossy(&out).contains("deleted 2 file(s)"));
    let (ok, _, err) = run(&["data", "get", "data://demo/cli/in.bin"], None);
    assert!(!ok && err.contains("NotFound"), "{err}");

    let (ok, _, err) = run(
        &["secret", "set", "demo/algo", "TOKEN", "-"],
        Some(b"s3cr3t\n"),
    );
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["secret", "ls", "demo/algo"], None);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), "TOKEN\n");
    let (ok, _, _) = run(&["secret", "rm", "demo/algo", "TOKEN"], None);
    assert!(ok);
    let (ok, _, err) = run(&["secret", "rm", "demo/algo", "TOKEN"], None);
    assert!(!ok && err.contains("not found"), "{err}");
}
