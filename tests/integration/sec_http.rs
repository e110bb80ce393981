//! The HTTP server's edges: connection limits and timeouts, `Expect:
//! 100-continue` on bounded bodies, JSON errors for rejected paths, byte ranges
//! and conditional GETs on data files, and JSON input that is not UTF-8.

use crate::support::*;
use reqwest::Method;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn start_with(flags: &[&str]) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Server::start_in(tmp.path(), flags);
    (s, tmp)
}

fn addr(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_string()
}

/// Opens a raw connection with a read timeout.
fn connect(s: &Server, read_timeout: Duration) -> TcpStream {
    let c = TcpStream::connect(addr(s)).expect("connect");
    c.set_read_timeout(Some(read_timeout))
        .expect("read timeout");
    c
}

/// Whether the server closes `c` within `limit` (a read returns end of file or
/// a reset), reading and discarding whatever it sends before that.
fn closed_by_server(c: &mut TcpStream, limit: Duration) -> bool {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Sends `head` (a request line and headers, no body) and returns the first
/// line of the server's first response.
fn first_status_line(s: &Server, head: &str) -> String {
    let mut c = connect(s, Duration::from_secs(30));
    c.write_all(head.as_bytes()).expect("send head");
    let mut line = String::new();
    BufReader::new(c)
        .read_line(&mut line)
        .expect("read status line");
    line.trim_end().to_string()
}

#[test]
fn partial_requests_time_out_and_the_connection_cap_keeps_healthz_answering() {
    let (s, _tmp) = start_with(&[
        "--max-connections",
        "8",
        "--header-read-timeout",
        "1",
        "--idle-timeout",
        "1",
    ]);
    // Slowloris: more connections than the cap, each stopping mid-headers.
    let mut partial: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut c = connect(&s, Duration::from_millis(200));
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("send partial head");
            c
        })
        .collect();
    // A fresh connection still gets its answer once header timeouts free slots.
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(format!("{}/healthz", s.url))
        .send()
        .expect("healthz answers despite the partial connections");
    assert_eq!(resp.status(), 200);
    // The server closed the first partial connection (header timeout).
    assert!(
        closed_by_server(&mut partial[0], Duration::from_secs(20)),
        "a connection that never finished its headers stays open"
    );
    let log = s.log();
    assert!(
        log.contains("connection limit reached"),
        "the log should say the connection cap was hit: {log}"
    );
}

#[test]
fn idle_keep_alive_connections_close_but_slow_answers_are_not_cut() {
    let (s, _tmp) = start_with(&["--header-read-timeout", "1", "--idle-timeout", "1"]);

    // An idle kept-alive connection is closed after the idle timeout.
    let mut c = connect(&s, Duration::from_millis(200));
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).expect("healthz response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut c, Duration::from_secs(20)),
        "an idle keep-alive connection stays open past --idle-timeout"
    );

    // A call that runs longer than both timeouts is answered.
    s.deploy_ok("sleep", "demo/sleep@1.0.0", "timeout=30");
    let resp = s.call("demo/sleep", "text/plain", "3000");
    let v = json(resp, 200);
    assert_eq!(v["result"], "slept 3000 ms");

    // A streamed response read slowly, over longer than both timeouts, arrives whole.
    let resp = s
        .req(Method::POST, "/v1/data/demo")
        .json(&serde_json::json!({"name": "big"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let size = 24 << 20;
    let file: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let resp = s
        .req(Method::PUT, "/v1/data/demo/big/file.bin")
        .header("Content-Type", "application/octet-stream")
        .body(file.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let mut c = connect(&s, Duration::from_secs(30));
    write!(
        c,
        "GET /v1/data/demo/big/file.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Simple {}\r\n\r\n",
        s.key
    )
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        let n = c.read(&mut chunk).expect("the response keeps coming");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
        if head_end.is_some_and(|h| got.len() >= h + 4 + size) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the slow read should outlast both timeouts"
    );
    assert_eq!(got.len() - head_end - 4, size, "the response was cut");
    assert!(got[head_end + 4..] == file[..], "the response body differs");
}

#[test]
fn oversized_bodies_with_expect_continue_get_413_before_100() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    json(s.req(Method::PUT, "/v1/topics/orders").send().unwrap(), 201);
    let auth = format!("Authorization: Simple {}\r\n", s.key);
    for (what, line, ct, len) in [
        (
            "invoke",
            "POST /v1/algo/demo/hello",
            "application/json",
            20_000_000,
        ),
        (
            "event publish",
            "POST /v1/topics/orders/events",
            "application/cloudevents-batch+json",
            2_000_000,
        ),
        (
            "deploy",
            "PUT /v1/algorithms/demo/big/versions/1.0.0",
            "application/wasm",
            270_000_000,
        ),
        (
            "key creation",
            "POST /v1/keys",
            "application/json",
            2_000_000,
        ),
    ] {
        let head = format!(
            "{line} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {ct}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
        );
        let status = first_status_line(&s, &head);
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "{what}: the first answer should be 413, got {status:?}"
        );
    }
    // A body within the limit still gets 100 Continue.
    let head = format!(
        "POST /v1/algo/demo/hello HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    );
    assert_eq!(first_status_line(&s, &head), "HTTP/1.1 100 Continue");
}

#[test]
fn rejected_paths_and_methods_answer_with_the_json_envelope() {
    let s = Server::start();
    let resp = s
        .req(Method::PUT, "/v1/data/demo/c/a%ffb")
        .body("x")
        .send()
        .unwrap();
    let msg = assert_error(resp, 400, "InputError", "UTF-8");
    assert!(msg.contains("/v1/data/demo/c/a%ffb"), "{msg}");
    let resp = s
        .req(Method::POST, "/v1/algo/de%ffmo/hello")
        .body("x")
        .send()
        .unwrap();
    assert_error(resp, 400, "InputError", "UTF-8");
    let resp = s.req(Method::DELETE, "/v1/keys/%fe%ff").send().unwrap();
    assert_error(resp, 400, "InputError", "UTF-8");
    let resp = s
        .req(Method::GET, "/v1/topics/%ff/subscriptions")
        .send()
        .unwrap();
    assert_error(resp, 400, "InputError", "UTF-8");
    let resp = s.req(Method::DELETE, "/v1/algo/demo/hello").send().unwrap();
    assert_error(resp, 405, "InputError", "DELETE is not supported");
    let resp = s.req(Method::GET, "/v1/nothing-here").send().unwrap();
    assert_error(resp, 404, "NotFound", "no endpoint");
}

#[test]
fn data_ranges_follow_rfc_9110() {
    let s = Server::start();
    let resp = s
        .req(Method::POST, "/v1/data/demo")
        .json(&serde_json::json!({"name": "r"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Vec<u8> = (0..100u8).collect();
    let resp = s
        .req(Method::PUT, "/v1/data/demo/r/f.bin")
        .header("Content-Type", "application/octet-stream")
        .body(body.clone())
        .send()
        .unwrap();
    let etag = json(resp, 200)["etag"].as_str().unwrap().to_string();
    let get = |range: &str| {
        s.req(Method::GET, "/v1/data/demo/r/f.bin")
            .header("Range", range)
            .send()
            .unwrap()
    };
    // Syntactically invalid ranges are ignored: the whole file.
    for invalid in ["bytes=a-b", "bytes=5-1", "bytes=-", "bytes=7"] {
        let resp = get(invalid);
        assert_eq!(resp.status(), 200, "Range: {invalid}");
        assert_eq!(
            resp.bytes().unwrap().as_ref(),
            &body[..],
            "Range: {invalid}"
        );
    }
    // A last byte past the end is clamped.
    let resp = get("bytes=90-500");
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 90-99/100");
    assert_eq!(resp.bytes().unwrap().as_ref(), &body[90..]);
    // Unsatisfiable: 416, Content-Range with the length, and the JSON error.
    for unsatisfiable in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
        let resp = get(unsatisfiable);
        assert_eq!(
            resp.headers().get("content-range").map(|v| v.as_bytes()),
            Some(&b"bytes */100"[..]),
            "Range: {unsatisfiable}"
        );
        assert_error(resp, 416, "InputError", "100 bytes");
    }
    // Conditional GETs compare entity tags weakly, in lists and with `*`.
    let cond = |inm: &str| {
        s.req(Method::GET, "/v1/data/demo/r/f.bin")
            .header("If-None-Match", inm)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(cond(&etag), 304);
    assert_eq!(cond(&format!("W/{etag}")), 304);
    assert_eq!(cond(&format!("\"other\", W/{etag}")), 304);
    assert_eq!(cond("*"), 304);
    assert_eq!(cond("\"other\""), 200);
}

#[test]
fn json_input_that_is_not_utf8_is_an_input_error() {
    let s = Server::start();
    s.deploy_ok("hello", "demo/hello@1.0.0", "");
    let resp = s.call("demo/hello", "application/json", b"\"ab\xff\"".to_vec());
    assert_error(resp, 400, "InputError", "byte offset 3");
}
