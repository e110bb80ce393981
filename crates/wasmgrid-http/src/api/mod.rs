//! The HTTP API (axum on hyper). Routes, authentication and request helpers; the
//! handlers live in one module per resource.

mod algorithms;
mod data;
pub mod error;
mod events;
mod http;
mod invoke;
pub(crate) mod jobs;
mod keys;
mod secrets;

pub use error::ApiError;

use crate::app::App;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, Method, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmgrid_core::auth::{Caller, is_bare_key, key_from_header};

/// Largest invoke body.
pub const INVOKE_BODY_LIMIT: usize = 10 << 20;
/// Largest component upload.
pub const DEPLOY_BODY_LIMIT: usize = 256 << 20;
/// Largest body of small JSON requests (keys, settings).
pub const JSON_BODY_LIMIT: usize = 1 << 20;

/// Shared handler state: the node. A type of this crate's own (not
/// `Arc<App>` itself) so that extractors such as [`Caller`]'s can be
/// implemented here for types of the crates below.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = Arc<App>;

    fn deref(&self) -> &Arc<App> {
        &self.0
    }
}

/// Builds the router for every endpoint.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/algorithms", get(algorithms::list))
        .route("/v1/algorithms/{owner}/{name}", get(algorithms::show))
        .route(
            "/v1/algorithms/{owner}/{name}/versions/{version}",
            put(algorithms::deploy)
                .delete(algorithms::delete_version)
                .get(algorithms::show_version),
        )
        .route("/v1/algo/{owner}/{name}", post(invoke::invoke_latest))
        .route(
            "/v1/algo/{owner}/{name}/{version}",
            post(invoke::invoke_version),
        )
        .route("/v1/algo/{owner}/{name}/jobs", post(jobs::submit_latest))
        .route(
            "/v1/algo/{owner}/{name}/{version}/jobs",
            post(jobs::submit_version),
        )
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::show))
        .route("/v1/jobs/{id}/files", get(jobs::files))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/algorithms/{owner}/{name}/secrets", get(secrets::list))
        .route(
            "/v1/algorithms/{owner}/{name}/secrets/{key}",
            put(secrets::set).delete(secrets::remove),
        )
        .route(
            "/v1/data/{owner}",
            post(data::create_collection).get(data::list_collections),
        )
        .route(
            "/v1/data/{owner}/{*rest}",
            get(data::get)
                .put(data::put)
                .delete(data::delete)
                .patch(data::patch)
                .post(data::create_folder),
        )
        .route("/v1/events/outbox", get(data::outbox))
        .route("/v1/topics", get(events::list_topics))
        .route(
            "/v1/topics/{topic}",
            put(events::put_topic)
                .get(events::get_topic)
                .delete(events::delete_topic),
        )
        .route(
            "/v1/topics/{topic}/regenerateKey",
            post(events::regenerate_key),
        )
        .route("/v1/topics/{topic}/events", post(events::publish))
        .route("/v1/topics/{topic}/api/events", post(events::publish))
        .route(
            "/v1/topics/{topic}/subscriptions",
            get(events::list_subscriptions),
        )
        .route(
            "/v1/topics/{topic}/subscriptions/{name}",
            put(events::put_subscription)
                .get(events::get_subscription)
                .delete(events::delete_subscription),
        )
        .route(
            "/v1/topics/{topic}/subscriptions/{name}/deadletters",
            get(events::dead_letters),
        )
        .route(
            "/v1/topics/{topic}/subscriptions/{name}/redrive",
            post(events::redrive),
        )
        .route("/v1/cluster", get(cluster))
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}", delete(keys::revoke))
        .route("/http/{*path}", any(http::serve))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CloseIfBodyUnreadLayer)
        .with_state(AppState(app))
}

/// Error answers to requests that carried a body close the connection: the
/// error may come before the body was read (a rejected key, an oversized
/// upload), and hyper cannot reuse a connection with unread input on it, so a
/// client that reused it would see its next request fail.
///
/// A plain tower layer rather than `axum::middleware::from_fn`, which boxes
/// the future and clones the inner service on every request.
#[derive(Clone, Copy)]
struct CloseIfBodyUnreadLayer;

impl<S> tower::Layer<S> for CloseIfBodyUnreadLayer {
    type Service = CloseIfBodyUnread<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CloseIfBodyUnread { inner }
    }
}

/// See [`CloseIfBodyUnreadLayer`].
#[derive(Clone)]
struct CloseIfBodyUnread<S> {
    inner: S,
}

impl<S> tower::Service<axum::extract::Request> for CloseIfBodyUnread<S>
where
    S: tower::Service<axum::extract::Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CloseIfBodyUnreadFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let h = req.headers();
        let has_body = h
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || h.contains_key(header::TRANSFER_ENCODING);
        CloseIfBodyUnreadFuture {
            inner: self.inner.call(req),
            has_body,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CloseIfBodyUnread`].
    struct CloseIfBodyUnreadFuture<F> {
        #[pin]
        inner: F,
        has_body: bool,
    }
}

impl<F, E> std::future::Future for CloseIfBodyUnreadFuture<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let has_body = *this.has_body;
        this.inner.poll(cx).map_ok(|mut resp| {
            if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
                resp.headers_mut().insert(
                    header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            resp
        })
    }
}

/// Collapses a leading `//` in the request path: Algorithmia's clients, given a
/// base URL with a trailing slash, request `//v1/algo/...`. Applied before
/// routing (see [`crate::server::serve`]).
pub fn normalize_path<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let path = req.uri().path();
    if path.starts_with("//") {
        let trimmed = format!("/{}", path.trim_start_matches('/'));
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed,
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app.draining.load(Ordering::Relaxed) {
        let body = serde_json::json!({"status": "draining"});
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(body),
        )
            .into_response()
    } else if app.cluster.as_ref().is_some_and(|c| !c.nats.connected()) {
        // A cluster node without NATS can serve compiled algorithms, but
        // not writes: take it out of rotation until it reconnects.
        let body = serde_json::json!({"status": "nats-unreachable"});
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(body),
        )
            .into_response()
    } else {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    }
}

/// `GET /v1/cluster` (admin): the cluster's live nodes, the NATS servers and
/// the streams' usage; `{"mode": "embedded"}` on a node without a cluster.
async fn cluster(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = match &app.cluster {
        Some(node) => crate::cluster::status(node).await?,
        None => serde_json::json!({"mode": "embedded"}),
    };
    Ok(axum::Json(body).into_response())
}

async fn metrics(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_admin()?;
    app.metrics.compilations.set(app.registry.compilations());
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response())
}

/// Paths no API route takes: a wasi:http component's route prefix, else 404
/// for a valid key and 401 without one, as a private route prefix answers, so
/// that which prefixes exist cannot be probed without a key.
async fn fallback(State(app): State<AppState>, req: axum::extract::Request) -> Response {
    let path = req.uri().path();
    if !wasmgrid_core::server_paths::is_reserved(path)
        && let Some((owner, name)) = app.registry.route(path)
    {
        return http::serve_route(app, &owner, &name, req).await;
    }
    let (mut parts, _body) = req.into_parts();
    if let Err(e) = Caller::from_request_parts(&mut parts, &app).await {
        return e.into_response();
    }
    let (method, path) = (&parts.method, parts.uri.path());
    ApiError::not_found(format!(
        "no endpoint {method} {path}: see the API table in the README"
    ))
    .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::with_status(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        wasmgrid_engine::error_kind::ErrorKind::InputError,
        format!(
            "{method} is not supported on {}: see the API table in the README",
            uri.path()
        ),
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let presented = value.map(key_from_header).filter(|k| !k.is_empty());
        let bare = value.is_some_and(is_bare_key);
        let Some(key) = presented else {
            return Err(ApiError::unauthenticated(
                "missing API key: send `Authorization: Simple <key>` (the first start writes an admin key to \
                 <data dir>/admin.key)",
            ));
        };
        app.keys.verify_as(key, bare).ok_or_else(|| {
            ApiError::unauthenticated("unknown or revoked API key: check the key, or create one with `wasmgrid key create`")
        })
    }
}

/// Bytes of an oversized body read and discarded before answering 413, so that a
/// client still sending its body gets the answer instead of a connection reset.
const OVERSIZE_DRAIN: u64 = 64 << 20;

/// Reads a request body of at most `limit` bytes, answering 413 above it.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "{what} is larger than the limit of {}",
            human_size(limit)
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        // A client that sent `Expect: 100-continue` waits for our answer before
        // sending its body; reading the body would make hyper send `100
        // Continue` first, inviting the upload we are about to refuse.
        if !expects_continue(headers)
            && declared.is_some_and(|len| len <= limit as u64 + OVERSIZE_DRAIN)
        {
            drain(body, limit as u64 + OVERSIZE_DRAIN).await;
        }
        return Err(too_large());
    }
    let mut body = body;
    // A body that arrives in one frame (the usual case for small bodies) is
    // returned as it is, without a copy; only a second frame starts a buffer.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::input(format!("reading the request body failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let held = first.as_ref().map_or(0, Bytes::len);
            if held + buf.len() + data.len() > limit {
                drain(body, OVERSIZE_DRAIN).await;
                return Err(too_large());
            }
            if first.is_none() && buf.is_empty() {
                first = Some(data);
                continue;
            }
            if let Some(f) = first.take() {
                buf.reserve(f.len() + data.len());
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(match first {
        Some(f) => f,
        None => buf.freeze(),
    })
}

/// Whether the request carries `Expect: 100-continue` (its body is not sent
/// until the server asks for it by reading).
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// A byte limit as people read it: whole MiB or KiB where exact, else bytes
/// (a limit below 1 MiB must not print as "0 MiB").
pub fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// Reads and discards up to `cap` bytes of a body.
async fn drain(mut body: Body, cap: u64) {
    let mut seen = 0u64;
    while seen < cap {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

/// `axum::extract::Path` with its rejections (a segment that is not UTF-8 once
/// percent-decoded, say) in the JSON error envelope rather than axum's text.
/// Handlers use this one; it is the only axum extractor here that can fail.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(path_rejection(parts.uri.path(), &e)),
        }
    }
}

fn path_rejection(path: &str, e: &axum::extract::rejection::PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    use axum::extract::rejection::PathRejection;
    let detail = match e {
        PathRejection::FailedToDeserializePathParams(d) => match d.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => format!(
                "its {key} segment is not UTF-8 once percent-decoded; percent-encode UTF-8 text (%C3%A9 for é)"
            ),
            _ => d.body_text(),
        },
        other => other.body_text(),
    };
    if e.status().is_server_error() {
        tracing::error!(path, error = %detail, "path parameters do not fit the handler");
        return ApiError::internal(format!("cannot route {path}: {detail}"));
    }
    ApiError::input(format!("the path {path} is not valid: {detail}"))
}

/// Query parameters as ordered pairs (repeated keys such as `grant=` kept).
#[derive(Debug, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Parses `key` as a number, naming the parameter on failure.
    pub fn number<T: std::str::FromStr>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::input(format!(
                    "query parameter {key}={v:?} is not valid: expected {what}"
                ))
            }),
        }
    }

    /// Parses a boolean flag (`true`/`false`/`1`/`0`).
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(false),
            // Algorithmia's Python client sends Python's `True`/`False`.
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) => Err(ApiError::input(format!(
                "query parameter {key}={v:?} is not valid: use true or false"
            ))),
        }
    }
}

/// Parses a JSON request body, naming the problem on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::input(format!("invalid {what}: {e}")))
}
