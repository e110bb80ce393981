//! A `wasi:http/proxy` component for the tests, written with the `wasi` crate.
//! What it does depends on the last path segment it is given:
//!
//! | path ends with | answer |
//! |---|---|
//! | `/spin` | never answers: a CPU loop (timeouts) |
//! | `/hog` | allocates 1 MiB blocks until the memory cap stops it |
//! | `/panic` | panics (a crash) |
//! | `/silent` | returns without sending a response |
//! | `/fetch?url=http://host[:port]/path` | GETs the URL with `wasi:http/outgoing-handler`; 200 `status N`, or 502 with the error code |
//! | `/stream?n=N` | 200 with N lines of 1 KiB, written one by one after the headers |
//! | `/headers` | 200 `text/plain`: every request header as `name: value`, one a line |
//! | anything else | 200 `text/plain`: method, path with query, the `authorization` and `x-test` headers, then the request body |

use std::hint::black_box;
use std::io::{Read as _, Write as _};

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasi::http::proxy::export!(Echo);

struct Echo;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_with_query.clone(), String::new()),
        };
        match path.rsplit('/').next().unwrap_or("") {
            "spin" => spin(),
            "hog" => hog(),
            "panic" => panic!("the http-echo guest panicked on purpose"),
            "silent" => {}
            "headers" => {
                let mut text = Vec::new();
                for (name, value) in request.headers().entries() {
                    text.extend_from_slice(name.as_bytes());
                    text.extend_from_slice(b": ");
                    text.extend_from_slice(&value);
                    text.push(b'\n');
                }
                respond(response_out, 200, &[text]);
            }
            "fetch" => {
                let url = query.strip_prefix("url=").unwrap_or("");
                match fetch(url) {
                    Ok(status) => respond(
                        response_out,
                        200,
                        &[format!("status {status}\n").into_bytes()],
                    ),
                    Err(e) => respond(response_out, 502, &[format!("error {e:?}\n").into_bytes()]),
                }
            }
            "stream" => {
                let n: usize = query
                    .strip_prefix("n=")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let chunks: Vec<Vec<u8>> = (0..n)
                    .map(|i| {
                        let mut line = format!("{i:08} ").into_bytes();
                        line.resize(1023, b'x');
                        line.push(b'\n');
                        line
                    })
                    .collect();
                respond(response_out, 200, &chunks);
            }
            _ => echo(request, path_with_query, response_out),
        }
    }
}

fn echo(request: IncomingRequest, path_with_query: String, response_out: ResponseOutparam) {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Options => "OPTIONS".to_string(),
        other => format!("{other:?}"),
    };
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "-".to_string())
    };
    let mut text = format!(
        "method {method}\npath {path_with_query}\nauthorization {}\nx-test {}\nbody ",
        header("authorization"),
        header("x-test")
    )
    .into_bytes();
    drop(headers);
    if let Ok(body) = request.consume()
        && let Ok(mut stream) = body.stream()
    {
        let _ = stream.read_to_end(&mut text);
    }
    respond(response_out, 200, &[text]);
}

/// Sends a `text/plain` response, writing each chunk separately after the
/// headers are out.
fn respond(out: ResponseOutparam, status: u16, chunks: &[Vec<u8>]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
        .expect("valid static headers");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let body = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = body.write().expect("the stream is taken once");
    for chunk in chunks {
        if stream
            .write_all(chunk)
            .and_then(|()| std::io::Write::flush(&mut stream))
            .is_err()
        {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![0xA5_u8; 1 << 20]));
    }
}

/// GETs `url` (`http://` or `https://`); the response status.
fn fetch(url: &str) -> Result<u16, ErrorCode> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(ErrorCode::HttpRequestUriInvalid);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let invalid = |()| ErrorCode::HttpRequestUriInvalid;
    request.set_scheme(Some(&scheme)).map_err(invalid)?;
    request.set_authority(Some(authority)).map_err(invalid)?;
    request.set_path_with_query(Some(path)).map_err(invalid)?;
    let pending = outgoing_handler::handle(request, None)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| ErrorCode::InternalError(Some("response not ready".into())))?
        .map_err(|()| ErrorCode::InternalError(Some("response taken twice".into())))??;
    Ok(response.status())
}
