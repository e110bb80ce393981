//! `POST /v1/algo/{owner}/{name}[/{version}]`: call an algorithm, Algorithmia style.

use super::Path;
use super::{ApiError, AppState, INVOKE_BODY_LIMIT, QueryParams, read_body};
use crate::app::App;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use wasmgrid_core::auth::{Caller, Compat, Scope};
use wasmgrid_core::invoker::Call;
use wasmgrid_core::registry::VersionSpec;
use wasmgrid_engine::Payload;

/// How the caller wants the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputMode {
    /// `{"result", "metadata"}`.
    Default,
    /// The result bytes alone, with the algorithm's content type.
    Raw,
    /// Run in the background; answer at once.
    Void,
}

struct CallOptions {
    timeout: Option<Duration>,
    stdout: bool,
    output: OutputMode,
}

fn options(q: &QueryParams) -> Result<CallOptions, ApiError> {
    let timeout = match q.number::<f64>("timeout", "seconds, e.g. timeout=30")? {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t.min(1e6))),
        Some(t) => {
            return Err(ApiError::input(format!(
                "query parameter timeout={t} must be a positive number of seconds"
            )));
        }
    };
    let output = match q.get("output") {
        None | Some("") => OutputMode::Default,
        Some("raw") => OutputMode::Raw,
        Some("void") => OutputMode::Void,
        Some(other) => {
            return Err(ApiError::input(format!(
                "query parameter output={other:?} is not valid: use raw or void"
            )));
        }
    };
    Ok(CallOptions {
        timeout,
        stdout: q.flag("stdout")?,
        output,
    })
}

pub async fn invoke_latest(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    // The request itself rather than a `HeaderMap` extractor, which clones
    // the headers.
    let (parts, body) = request.into_parts();
    respond(
        caller.compat,
        invoke(
            app.0,
            &caller,
            owner,
            name,
            None,
            query,
            parts.headers,
            body,
        )
        .await,
    )
}

pub async fn invoke_version(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    respond(
        caller.compat,
        invoke(
            app.0,
            &caller,
            owner,
            name,
            Some(version),
            query,
            headers,
            body,
        )
        .await,
    )
}

/// Errors in the request's convention (see [`Compat`]): under Algorithmia's,
/// the algorithm's own failures answer 200; everything else (auth, 404, 413,
/// `Overloaded`, bad requests) keeps its status.
fn respond(compat: Compat, result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) if compat == Compat::Algorithmia && e.is_algorithm_outcome() => {
            e.into_algorithmia_response()
        }
        Err(e) => e.into_response(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn invoke(
    app: Arc<App>,
    caller: &Caller,
    owner: String,
    name: String,
    version: Option<String>,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_visible(Scope::Invoke, &owner, || {
        super::algorithms::hidden(&owner, &name)
    })?;
    let opts = options(&QueryParams::parse(query.as_deref()))?;
    let spec = VersionSpec::parse(version.as_deref())?;
    let deployed = app.invoker.resolve(&owner, &name, &spec)?;
    if deployed.record.kind == wasmgrid_engine::ComponentKind::Http {
        return Err(ApiError::input(format!(
            "{} is a wasi:http component, not an algorithm: send it HTTP requests at /http/{}/{}@{}/",
            deployed.endpoint(),
            deployed.record.owner,
            deployed.record.name,
            deployed.record.version
        )));
    }
    let body = read_body(&headers, body, INVOKE_BODY_LIMIT, "the input").await?;
    let input = classify_input(headers.get(header::CONTENT_TYPE), body)?;
    let request_id = format!("req-{:016x}", rand::random::<u64>());
    let endpoint = deployed.endpoint();

    if opts.output == OutputMode::Void {
        // Admitted before answering: a call that cannot run now is `Overloaded`
        // for the caller to retry, not accepted and dropped.
        let reservation = app.invoker.reserve(&deployed)?;
        let app2 = app.clone();
        let rid = request_id.clone();
        app.background.spawn(async move {
            let result = app2
                .invoker
                .call_reserved(reservation, Call::new(&deployed, input, opts.timeout))
                .await;
            match result {
                Ok(_) => tracing::info!(request_id = %rid, endpoint = %deployed.endpoint(), "background call finished"),
                Err(e) => tracing::warn!(request_id = %rid, endpoint = %deployed.endpoint(), error = %e, "background call failed"),
            }
        });
        let mut resp = axum::Json(serde_json::json!({"async": "void", "request_id": request_id}))
            .into_response();
        set_request_id(&mut resp, &request_id, &endpoint);
        return Ok(resp);
    }

    let outcome = app
        .invoker
        .call(Call::new(&deployed, input, opts.timeout))
        .await
        .map_err(ApiError::from)?;
    let mut resp = if opts.output == OutputMode::Raw {
        // Text without a charset is UTF-8 here; say so, or HTTP clients decode it
        // as ISO-8859-1.
        let declared = &outcome.output.content_type;
        let ct = if media_type(declared).starts_with("text/")
            && !declared.to_ascii_lowercase().contains("charset")
        {
            format!("{declared}; charset=utf-8")
        } else {
            declared.clone()
        };
        let ct = HeaderValue::from_str(&ct)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        ([(header::CONTENT_TYPE, ct)], outcome.output.body).into_response()
    } else {
        let stdout = opts.stdout.then(|| outcome.stdout.text());
        let body = render_reply(&outcome.output, outcome.duration, stdout.as_deref())?;
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    set_request_id(&mut resp, &request_id, &endpoint);
    Ok(resp)
}

/// Adds `X-Request-Id` and `X-Wasmgrid-Endpoint` (the exact version that ran).
fn set_request_id(resp: &mut Response, id: &str, endpoint: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(endpoint) {
        resp.headers_mut().insert("x-wasmgrid-endpoint", v);
    }
}

fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media(m: &str) -> bool {
    m == "application/json" || m.ends_with("+json")
}

/// Turns the request body into the guest's input payload. JSON is checked here so
/// that guests can trust `application/json` input; requests without a usable
/// content type (none, or curl's default form encoding) are sniffed: JSON if it
/// parses, text if it is UTF-8, bytes otherwise.
fn classify_input(content_type: Option<&HeaderValue>, body: Bytes) -> Result<Payload, ApiError> {
    let media = content_type
        .and_then(|v| v.to_str().ok())
        .map(media_type)
        .unwrap_or_default();
    // JSON is UTF-8 (RFC 8259), and skipping over a string with `IgnoredAny`
    // does not check that: test it first, or invalid bytes reach the guest.
    let json_ok = |b: &Bytes| {
        std::str::from_utf8(b).is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
    };
    let ct = if is_json_media(&media) {
        if let Err(e) = std::str::from_utf8(&body) {
            return Err(ApiError::input(format!(
                "the input is declared as JSON but is not valid UTF-8 at byte offset {}; JSON must be UTF-8: send Content-Type: application/octet-stream for bytes",
                e.valid_up_to()
            )));
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(ApiError::input(format!(
                "the input is not valid JSON ({e}); send Content-Type: text/plain for text or application/octet-stream for bytes"
            )));
        }
        "application/json"
    } else if media.starts_with("text/") {
        if let Err(e) = std::str::from_utf8(&body) {
            return Err(ApiError::input(format!(
                "the input is declared as text but is not valid UTF-8 at byte offset {}; send Content-Type: application/octet-stream for bytes",
                e.valid_up_to()
            )));
        }
        "text/plain"
    } else if media.is_empty() || media == "application/x-www-form-urlencoded" {
        if !body.is_empty() && json_ok(&body) {
            "application/json"
        } else if std::str::from_utf8(&body).is_ok() {
            "text/plain"
        } else {
            "application/octet-stream"
        }
    } else {
        "application/octet-stream"
    };
    Ok(Payload {
        content_type: ct.to_string(),
        body,
    })
}

/// The `{"result", "metadata"}` reply, written straight into its bytes (no
/// `serde_json::Value` tree on the invoke path). JSON output goes in verbatim
/// after a validity check; text becomes a JSON string; anything else base64.
fn render_reply(
    output: &Payload,
    duration: Duration,
    stdout: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    #[derive(serde::Serialize)]
    struct Metadata<'a> {
        content_type: &'static str,
        duration: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        stdout: Option<&'a str>,
    }
    let ser = |e: serde_json::Error| ApiError::internal(format!("cannot encode the reply: {e}"));
    let mut out = Vec::with_capacity(output.body.len() + 96);
    out.extend_from_slice(b"{\"result\":");
    let media = media_type(&output.content_type);
    let content_type = if is_json_media(&media) {
        let invalid = |why: String| {
            ApiError::of(
                wasmgrid_engine::error_kind::ErrorKind::AlgorithmError,
                format!(
                    "the algorithm declared application/json output but returned invalid JSON: {why}"
                ),
            )
        };
        // As for input: `IgnoredAny` does not check UTF-8 inside strings.
        std::str::from_utf8(&output.body)
            .map_err(|e| invalid(format!("not UTF-8 at byte offset {}", e.valid_up_to())))?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&output.body)
            .map_err(|e| invalid(e.to_string()))?;
        out.extend_from_slice(output.body.trim_ascii());
        "json"
    } else if let Some(text) = media
        .starts_with("text/")
        .then(|| std::str::from_utf8(&output.body).ok())
        .flatten()
    {
        serde_json::to_writer(&mut out, text).map_err(ser)?;
        "text"
    } else {
        out.push(b'"');
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&output.body)
                .as_bytes(),
        );
        out.push(b'"');
        "binary"
    };
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(
        &mut out,
        &Metadata {
            content_type,
            duration: duration.as_secs_f64(),
            stdout,
        },
    )
    .map_err(ser)?;
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn input_classification() {
        let p = classify_input(
            Some(&ct("application/json; charset=utf-8")),
            Bytes::from_static(b"[1,2]"),
        )
        .unwrap();
        assert_eq!(p.content_type, "application/json");
        assert!(classify_input(Some(&ct("application/json")), Bytes::from_static(b"[1,")).is_err());
        let e = classify_input(
            Some(&ct("application/json")),
            Bytes::from_static(b"\"ab\xff\""),
        )
        .unwrap_err();
        assert!(e.message.contains("byte offset 3"), "{}", e.message);
        // Sniffed input that is not UTF-8 is bytes, never JSON.
        assert_eq!(
            classify_input(None, Bytes::from_static(b"\"ab\xff\""))
                .unwrap()
                .content_type,
            "application/octet-stream"
        );
        assert_eq!(
            classify_input(Some(&ct("text/plain")), Bytes::from_static(b"hi"))
                .unwrap()
                .content_type,
            "text/plain"
        );
        assert_eq!(
            classify_input(None, Bytes::from_static(b"{\"a\":1}"))
                .unwrap()
                .content_type,
            "application/json"
        );
        assert_eq!(
            classify_input(None, Bytes::from_static(b"World"))
                .unwrap()
                .content_type,
            "text/plain"
        );
        assert_eq!(
            classify_input(None, Bytes::from_static(&[0xff, 0x00]))
                .unwrap()
                .content_type,
            "application/octet-stream"
        );
        assert_eq!(
            classify_input(Some(&ct("image/png")), Bytes::from_static(b"x"))
                .unwrap()
                .content_type,
            "application/octet-stream"
        );
    }

    #[test]
    fn output_rendering() {
        let p = |ct: &str, b: &'static [u8]| Payload {
            content_type: ct.into(),
            body: Bytes::from_static(b),
        };
        let reply = |payload: Payload, stdout: Option<&str>| -> serde_json::Value {
            let bytes = render_reply(&payload, Duration::from_millis(2), stdout).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        let v = reply(p("application/json", b" {\"a\":1}\n"), None);
        assert_eq!(v["result"], serde_json::json!({"a": 1}));
        assert_eq!(v["metadata"]["content_type"], "json");
        assert_eq!(v["metadata"]["duration"], 0.002);
        assert!(v["metadata"].get("stdout").is_none());
        let v = reply(
            p("text/plain; charset=utf-8", b"hi \"there\"\n"),
            Some("out"),
        );
        assert_eq!(v["result"], "hi \"there\"\n");
        assert_eq!(v["metadata"]["content_type"], "text");
        assert_eq!(v["metadata"]["stdout"], "out");
        let v = reply(p("application/octet-stream", b"\x01\x02"), None);
        assert_eq!(v["result"], "AQI=");
        assert_eq!(v["metadata"]["content_type"], "binary");
        // Text that is not UTF-8 is sent as bytes.
        assert_eq!(reply(p("text/plain", b"\xff"), None)["result"], "/w==");
        assert!(render_reply(&p("application/json", b"nope"), Duration::ZERO, None).is_err());
        assert!(render_reply(&p("application/json", b"\"\xff\""), Duration::ZERO, None).is_err());
    }
}
