//! `/v1/data/...`: hosted data collections, wire-compatible with Algorithmia's
//! data API (see docs/algorithmia-compat.md, D1–D9).

use super::Path;
use super::{ApiError, AppState, JSON_BODY_LIMIT, QueryParams, parse_json, read_body};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use sha2::Digest;
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_core::data::{Acl, DataError, DataPath, FileRecord, INLINE_MAX, Principal, etag_of};
use wasmgrid_engine::error_kind::ErrorKind;
use wasmgrid_store::StoreError;
use wasmgrid_store::blobs::BlobId;

/// Longest name in a create request (collection and folder names are checked
/// further by [`DataPath::new`]).
const MAX_NAME_BYTES: usize = 256;
/// Longest `Content-Type` stored with a file (it is repeated in every listing).
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;

/// Largest file accepted through the API.
pub const FILE_BODY_LIMIT: u64 = wasmgrid_core::data::DEFAULT_MAX_FILE;

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        let kind = e.kind();
        // The API has always sent the store's own words for `Unavailable`,
        // without the "data store unavailable" prefix guests see.
        let message = match e {
            DataError::Unavailable(m) => m,
            other => other.to_string(),
        };
        ApiError::of(kind, message)
    }
}

/// Resolves `{owner}` (`.my` = the key's owner) and the rest of the path.
fn data_path(caller: &Caller, owner: &str, rest: &str) -> Result<(DataPath, bool), ApiError> {
    let owner = if owner == ".my" {
        caller.owner.as_str()
    } else {
        owner
    };
    let folder = rest.ends_with('/');
    let rest = rest.trim_end_matches('/');
    let (collection, path) = rest.split_once('/').unwrap_or((rest, ""));
    if collection.starts_with('.') {
        return Err(ApiError::input(format!(
            "collection names cannot start with '.': {collection:?}"
        )));
    }
    Ok((DataPath::new(owner, collection, path)?, folder))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("store worker failed: {e}")))?
        .map_err(ApiError::from)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    acl: Option<Acl>,
}

async fn create(
    app: AppState,
    caller: Caller,
    owner: String,
    parent: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Authorization before the body, so that the answer never depends on it.
    let parent = parent.trim_end_matches('/').to_string();
    if parent.is_empty() {
        let owner = if owner == ".my" {
            &caller.owner
        } else {
            &owner
        };
        caller.require(Scope::DataWrite, owner)?;
    } else {
        let (p, _) = data_path(&caller, &owner, &parent)?;
        app.data.check_writable(Principal::Key(&caller), &p)?;
    }
    let body = read_body(&headers, body, JSON_BODY_LIMIT, "the create request").await?;
    let req: CreateRequest = parse_json(
        &body,
        "create request (expected {\"name\": \"...\", \"acl\": {\"read\": [...]}})",
    )?;
    if req.name.is_empty() || req.name.contains('/') {
        return Err(ApiError::input(format!(
            "invalid name {:?}: give one path segment",
            req.name
        )));
    }
    if req.name.len() > MAX_NAME_BYTES {
        return Err(ApiError::input(format!(
            "name is {} bytes long: names are limited to {MAX_NAME_BYTES} bytes",
            req.name.len()
        )));
    }
    let rest = if parent.is_empty() {
        req.name.clone()
    } else {
        format!("{parent}/{}", req.name)
    };
    let (p, _) = data_path(&caller, &owner, &rest)?;
    let data = app.data.clone();
    let uri = p.uri();
    blocking(move || data.create(Principal::Key(&caller), &p, req.acl)).await?;
    // Exactly 200: Algorithmia's clients treat anything else as failure.
    Ok(axum::Json(serde_json::json!({"result": uri})).into_response())
}

/// `POST /v1/data/{owner}` `{"name", "acl"?}`: creates a collection (default ACL:
/// the owner's algorithms may read, as on Algorithmia).
pub async fn create_collection(
    State(app): State<AppState>,
    caller: Caller,
    Path(owner): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create(app, caller, owner, String::new(), headers, body).await
}

/// `POST /v1/data/{owner}/{collection}[/{folder}]` `{"name"}`: creates a folder.
pub async fn create_folder(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create(app, caller, owner, rest, headers, body).await
}

/// `GET /v1/data/{owner}`: the owner's collections, as folders.
pub async fn list_collections(
    State(app): State<AppState>,
    caller: Caller,
    Path(owner): Path<String>,
) -> Result<Response, ApiError> {
    let owner = if owner == ".my" {
        caller.owner.clone()
    } else {
        owner
    };
    wasmgrid_core::names::validate_name("owner", &owner)?;
    let data = app.data.clone();
    let colls = blocking(move || data.collections(Principal::Key(&caller), &owner)).await?;
    let folders: Vec<serde_json::Value> = colls
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "acl": c.acl, "created": c.created}))
        .collect();
    Ok(axum::Json(serde_json::json!({"folders": folders, "files": []})).into_response())
}

/// `GET` and `HEAD` on `/v1/data/{owner}/{collection}[/{path}]`: a file's bytes,
/// else the folder's listing.
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    method: Method,
    Path((owner, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let head = method == Method::HEAD;
    let (p, folder_syntax) = match data_path(&caller, &owner, &rest) {
        Ok(v) => v,
        Err(e) if head => return Ok(head_error(e)),
        Err(e) => return Err(e),
    };
    let q = QueryParams::parse(query.as_deref());
    if !p.path.is_empty() && !folder_syntax {
        let data = app.data.clone();
        let caller2 = caller.clone();
        let p2 = p.clone();
        let file =
            blocking(move || data.read_record(Principal::Key(&caller2), &p2, u64::MAX)).await;
        match file {
            Ok((rec, inline)) => {
                return Ok(file_response(&app, &p, rec, inline, &headers, head).await);
            }
            Err(e) if head => return Ok(head_error(e)),
            Err(e) if e.status != StatusCode::NOT_FOUND => return Err(e),
            Err(_) => {} // not a file: try it as a folder
        }
    }
    if head {
        return Ok(head_error(ApiError::not_found(format!(
            "{} is not a file",
            p.uri()
        ))));
    }
    let marker = q
        .get("marker")
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let limit = q
        .number::<usize>("limit", "a page size from 1 to 1000")?
        .unwrap_or(wasmgrid_core::data::MAX_PAGE);
    let want_acl = q.flag("acl")?;
    let data = app.data.clone();
    let p2 = p.clone();
    let as_folder = folder_syntax && !p.path.is_empty();
    let (listing, coll) = blocking(move || {
        let who = Principal::Key(&caller);
        let coll = data.check_readable(who, &p2)?;
        let listing = match data.list_level(who, &p2, marker.as_deref(), limit) {
            // `f.txt/`: say that the name is a file rather than "not found".
            Err(DataError::NotFound(m)) if as_folder => match data.stat(who, &p2) {
                Ok(rec) if !rec.folder => {
                    return Err(DataError::NotFound(format!(
                        "{} is a file, not a folder: drop the trailing slash to read it",
                        p2.uri()
                    )));
                }
                _ => return Err(DataError::NotFound(m)),
            },
            other => other?,
        };
        Ok((listing, coll))
    })
    .await?;
    let mut body = serde_json::to_value(&listing).unwrap_or_default();
    if want_acl {
        body["acl"] = serde_json::to_value(&coll.acl).unwrap_or_default();
    }
    Ok(axum::Json(body).into_response())
}

/// HEAD answers carry no body: the reason goes in `X-Error-Message`.
fn head_error(e: ApiError) -> Response {
    let mut resp = e.status.into_response();
    if let Ok(v) = HeaderValue::from_str(&e.message.replace(['\r', '\n'], " ")) {
        resp.headers_mut().insert("x-error-message", v);
    }
    resp
}

/// Text and JSON without a charset are UTF-8 here: say so, or HTTP clients decode
/// them as ISO-8859-1.
fn served_content_type(ct: &str) -> String {
    let lower = ct.to_ascii_lowercase();
    let texty = lower.starts_with("text/")
        || lower.starts_with("application/json")
        || lower.contains("+json");
    if texty && !lower.contains("charset") {
        format!("{ct}; charset=utf-8")
    } else {
        ct.to_string()
    }
}

/// What a `Range` header asks of a file (RFC 9110 §14.2).
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// Serve the whole file: no Range, another unit, a syntactically invalid
    /// range set (ignored, as RFC 9110 allows), or several ranges (no multipart).
    Whole,
    /// One satisfiable range, first and last byte, clamped to the file.
    Part(u64, u64),
    /// A valid range set none of whose ranges overlaps the file.
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b, c-, -n ...` against a file of `size` bytes.
fn parse_range(h: &HeaderMap, size: u64) -> RangeAsk {
    enum Spec {
        Span(u64, Option<u64>),
        Suffix(u64),
    }
    let Some(v) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAsk::Whole;
    };
    let Some((unit, set)) = v.split_once('=') else {
        return RangeAsk::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAsk::Whole;
    }
    // Digits only; a number too large for u64 is still a valid (huge) position.
    let pos = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let mut specs = Vec::new();
    // Empty list elements (`bytes=0-1,,5-6`) are allowed and skipped (RFC 9110 §5.6.1).
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((a, b)) = spec.split_once('-') else {
            return RangeAsk::Whole;
        };
        let spec = match (a, b) {
            ("", n) => match pos(n) {
                Some(n) => Spec::Suffix(n),
                None => return RangeAsk::Whole,
            },
            (a, "") => match pos(a) {
                Some(a) => Spec::Span(a, None),
                None => return RangeAsk::Whole,
            },
            (a, b) => match (pos(a), pos(b)) {
                (Some(a), Some(b)) if a <= b => Spec::Span(a, Some(b)),
                _ => return RangeAsk::Whole,
            },
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return RangeAsk::Whole;
    }
    let satisfiable: Vec<(u64, u64)> = specs
        .iter()
        .filter_map(|s| match *s {
            Spec::Span(a, b) if a < size => Some((a, b.map_or(size - 1, |b| b.min(size - 1)))),
            Spec::Suffix(n) if n > 0 && size > 0 => Some((size - n.min(size), size - 1)),
            _ => None,
        })
        .collect();
    match satisfiable.as_slice() {
        // An empty file satisfies a non-zero suffix with no bytes: send it whole.
        [] if size == 0 && specs.iter().any(|s| matches!(s, Spec::Suffix(n) if *n > 0)) => {
            RangeAsk::Whole
        }
        [] => RangeAsk::Unsatisfiable,
        [(a, b)] if specs.len() == 1 => RangeAsk::Part(*a, *b),
        _ => RangeAsk::Whole,
    }
}

/// Whether `If-None-Match` names `etag` under the weak comparison (RFC 9110
/// §13.1.2: `W/"x"` matches `"x"`), in any of its comma-separated entity tags,
/// or is `*`.
fn none_match(h: &HeaderMap, etag: &str) -> bool {
    let ours = etag.strip_prefix("W/").unwrap_or(etag);
    for v in h.get_all(header::IF_NONE_MATCH) {
        let Ok(mut rest) = v.to_str() else {
            continue;
        };
        loop {
            rest = rest.trim_start_matches([',', ' ', '\t']);
            if rest.is_empty() {
                break;
            }
            if rest.starts_with('*') {
                return true;
            }
            let tag = rest.strip_prefix("W/").unwrap_or(rest);
            // An entity tag is a quoted string without escapes; a comma may sit
            // inside the quotes, so split on quotes rather than commas.
            let Some(end) = tag
                .strip_prefix('"')
                .and_then(|t| t.find('"'))
                .map(|i| i + 2)
            else {
                break; // malformed: nothing after it can be trusted
            };
            if &tag[..end] == ours {
                return true;
            }
            rest = &tag[end..];
        }
    }
    false
}

async fn file_response(
    app: &AppState,
    p: &DataPath,
    rec: FileRecord,
    inline: Option<Bytes>,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, served_content_type(&rec.content_type))
        .header(header::ETAG, &rec.etag)
        .header(header::LAST_MODIFIED, http_date(&rec.last_modified))
        .header(header::ACCEPT_RANGES, "bytes");
    if none_match(headers, &rec.etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_default();
    }
    let (status, start, len) = match parse_range(headers, rec.size) {
        RangeAsk::Whole => (StatusCode::OK, 0, rec.size),
        RangeAsk::Part(a, b) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", rec.size));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        RangeAsk::Unsatisfiable => {
            let e = ApiError::with_status(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorKind::InputError,
                format!(
                    "the requested range is outside the file, which has {} bytes: ask for a range that starts below {}, or send no Range header",
                    rec.size, rec.size
                ),
            );
            let mut resp = if head {
                head_error(e)
            } else {
                e.into_response()
            };
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", rec.size)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return resp;
        }
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    if head {
        return builder.body(Body::empty()).unwrap_or_default();
    }
    let body = match (inline, &rec.blob) {
        (Some(b), _) => Body::from(b.slice(start as usize..(start + len) as usize)),
        (None, Some(id)) => {
            use tokio::io::AsyncReadExt;
            match app.data.blobs().open(&BlobId(id.clone()), start).await {
                Ok(Some((_, reader))) => Body::from_stream(
                    tokio_util::io::ReaderStream::with_capacity(reader.take(len), 256 * 1024),
                ),
                Ok(None) => {
                    return ApiError::from(DataError::Unavailable(format!(
                        "the content of {} is missing from the blob store",
                        p.uri()
                    )))
                    .into_response();
                }
                Err(e) => return ApiError::from(DataError::from(e)).into_response(),
            }
        }
        (None, None) => Body::empty(),
    };
    builder.body(body).unwrap_or_default()
}

fn http_date(rfc3339: &str) -> String {
    humantime::parse_rfc3339(rfc3339)
        .map(httpdate::fmt_http_date)
        .unwrap_or_default()
}

/// `PUT /v1/data/{owner}/{collection}/{path}`: writes a file, streaming bodies
/// larger than [`INLINE_MAX`] into a blob so the store's writer is held only for
/// the final record swap.
pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (p, folder) = data_path(&caller, &owner, &rest)?;
    if p.path.is_empty() || folder {
        return Err(ApiError::input(format!(
            "PUT needs a file path: PUT /v1/data/{}/{}/<file> (create collections with POST /v1/data/{})",
            p.owner, p.collection, p.owner
        )));
    }
    app.data.check_writable(Principal::Key(&caller), &p)?;
    let declared_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty());
    if let Some(ct) = &declared_ct
        && ct.len() > MAX_CONTENT_TYPE_BYTES
    {
        return Err(ApiError::input(format!(
            "the Content-Type header is {} bytes long: content types are limited to {MAX_CONTENT_TYPE_BYTES} bytes",
            ct.len()
        )));
    }
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > FILE_BODY_LIMIT)
    {
        return Err(ApiError::too_large(
            "the file is larger than the limit of 1024 MiB",
        ));
    }

    // Read up to INLINE_MAX into memory; beyond that, switch to a blob.
    let mut body = body;
    let mut head = bytes::BytesMut::new();
    let mut spill = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::input(format!("reading the upload failed: {e}")))?;
        if let Ok(chunk) = frame.into_data() {
            head.extend_from_slice(&chunk);
            if head.len() > INLINE_MAX {
                spill = Some(head.split().freeze());
                break;
            }
        }
    }
    let data = app.data.clone();
    let uri = p.uri();
    let rec = match spill {
        None => {
            let bytes = head.freeze();
            let ct = declared_ct.unwrap_or_else(|| sniff(&bytes).to_string());
            blocking(move || data.put(Principal::Key(&caller), &p, &ct, &bytes)).await?
        }
        Some(first) => {
            let ct = declared_ct.unwrap_or_else(|| "application/octet-stream".to_string());
            let (size, etag, blob_id) = stream_to_blob(&app, first, body).await?;
            blocking(move || {
                data.commit_blob(Principal::Key(&caller), &p, &ct, size, etag, blob_id)
            })
            .await?
        }
    };
    Ok(
        axum::Json(serde_json::json!({"result": uri, "size": rec.size, "etag": rec.etag}))
            .into_response(),
    )
}

/// Content type for an upload that declared none: UTF-8 text or bytes.
fn sniff(bytes: &[u8]) -> &'static str {
    if std::str::from_utf8(bytes).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// Streams the rest of an upload into a new blob on a blocking thread (bounded
/// channel: the network never runs ahead of the disk by more than a few chunks).
async fn stream_to_blob(
    app: &AppState,
    first: Bytes,
    mut body: Body,
) -> Result<(u64, String, String), ApiError> {
    let internal = |e: StoreError| ApiError::internal(e.to_string());
    let mut sink = app.data.blobs().create().await.map_err(internal)?;
    let mut hasher = sha2::Sha256::new();
    let mut total = first.len() as u64;
    hasher.update(&first);
    let mut failure = sink.write(first).await.err().map(internal);
    while failure.is_none() {
        let Some(frame) = body.frame().await else {
            break;
        };
        match frame {
            Ok(frame) => {
                if let Ok(chunk) = frame.into_data() {
                    total += chunk.len() as u64;
                    if total > FILE_BODY_LIMIT {
                        failure = Some(ApiError::too_large(
                            "the file is larger than the limit of 1024 MiB",
                        ));
                        break;
                    }
                    hasher.update(&chunk);
                    failure = sink.write(chunk).await.err().map(internal);
                }
            }
            Err(e) => {
                failure = Some(ApiError::input(format!("reading the upload failed: {e}")));
            }
        }
    }
    if let Some(e) = failure {
        // Dropping the sink unfinished discards what was written.
        drop(sink);
        return Err(e);
    }
    let (id, size) = sink.finish().await.map_err(internal)?;
    Ok((size, etag_of(&hasher.finalize()), id.0))
}

/// `DELETE /v1/data/{owner}/{collection}[/{path}][?force=true]`.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (p, folder) = data_path(&caller, &owner, &rest)?;
    let force = QueryParams::parse(query.as_deref()).flag("force")?;
    let data = app.data.clone();
    let deleted = blocking(move || {
        if !p.path.is_empty() && !folder && data.delete(Principal::Key(&caller), &p)? {
            return Ok(1);
        }
        data.delete_tree(Principal::Key(&caller), &p, force)
    })
    .await?;
    Ok(axum::Json(serde_json::json!({"result": {"deleted": deleted}})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRequest {
    acl: Acl,
}

/// `PATCH /v1/data/{owner}/{collection}` `{"acl": {"read": [...]}}`.
pub async fn patch(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (p, _) = data_path(&caller, &owner, &rest)?;
    // Authorization before the body, so that the answer never depends on it.
    app.data.check_writable(Principal::Key(&caller), &p)?;
    if !p.path.is_empty() {
        return Err(ApiError::input(
            "ACLs belong to collections: PATCH /v1/data/{owner}/{collection}",
        ));
    }
    let body = read_body(&headers, body, JSON_BODY_LIMIT, "the ACL update").await?;
    let req: PatchRequest =
        parse_json(&body, "ACL update (expected {\"acl\": {\"read\": [...]}})")?;
    let data = app.data.clone();
    blocking(move || data.set_acl(Principal::Key(&caller), &p, req.acl)).await?;
    Ok(axum::Json(serde_json::json!({})).into_response())
}

/// `GET /v1/events/outbox?after=N&limit=M` (admin): change events recorded with
/// each data change, in order.
pub async fn outbox(
    State(app): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let q = QueryParams::parse(query.as_deref());
    let after = q.number::<u64>("after", "a sequence number")?.unwrap_or(0);
    let limit = q
        .number::<usize>("limit", "a number from 1 to 1000")?
        .unwrap_or(100)
        .clamp(1, 1000);
    let events = app.events.outbox(after, limit).await?;
    let events: Vec<serde_json::Value> = events
        .into_iter()
        .map(|(seq, ev)| serde_json::json!({"sequence": seq, "event": ev}))
        .collect();
    Ok(axum::Json(serde_json::json!({"events": events})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        let mut r = |v: &str| {
            h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            parse_range(&h, 100)
        };
        use RangeAsk::*;
        assert_eq!(r("bytes=0-9"), Part(0, 9));
        assert_eq!(r("bytes=90-"), Part(90, 99));
        assert_eq!(r("bytes=-10"), Part(90, 99));
        assert_eq!(r("bytes=-500"), Part(0, 99));
        assert_eq!(r("bytes=50-500"), Part(50, 99));
        assert_eq!(r("Bytes=0-0"), Part(0, 0));
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=100-200"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=200-300, 400-"), Unsatisfiable);
        assert_eq!(r("bytes=99999999999999999999999-"), Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Whole);
        assert_eq!(r("bytes=0-1,,"), Part(0, 1));
        // Syntactically invalid: ignored.
        assert_eq!(r("bytes=a-b"), Whole);
        assert_eq!(r("bytes=5-1"), Whole);
        assert_eq!(r("bytes=-"), Whole);
        assert_eq!(r("bytes=1"), Whole);
        assert_eq!(r("bytes="), Whole);
        assert_eq!(r("items=0-1"), Whole);
        assert_eq!(r("bytes=0-1,x"), Whole);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=-5"));
        assert_eq!(parse_range(&h, 0), Whole);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-"));
        assert_eq!(parse_range(&h, 0), Unsatisfiable);
    }

    #[test]
    fn if_none_match() {
        let m = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            none_match(&h, "\"abc\"")
        };
        assert!(m("\"abc\""));
        assert!(m("W/\"abc\""));
        assert!(m("*"));
        assert!(m("\"x\", W/\"abc\""));
        assert!(m("\"a,b\",\"abc\""));
        assert!(!m("\"abcd\""));
        assert!(!m("abc"));
        assert!(!m("\"x\", \"y\""));
        assert!(!m(""));
        let mut h = HeaderMap::new();
        h.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        h.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"abc\""));
        assert!(none_match(&h, "\"abc\""));
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            http_date("2024-01-02T03:04:05.123Z"),
            "Tue, 02 Jan 2024 03:04:05 GMT"
        );
    }
}
