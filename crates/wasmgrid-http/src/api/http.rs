//! wasi:http components on HTTP routes:
//!
//! - `ANY /http/{owner}/{name}[@{version}]/{rest…}`: the guest sees `/{rest…}`
//!   and the query (version specs as for algorithms; latest without `@`);
//! - route prefixes (`route=/hello` at deploy, `route = "/hello"` in
//!   wasmgrid.toml): requests to `/hello` and `/hello/…` reach the latest
//!   version with the path as it came.
//!
//! Unless the version was deployed `public`, a request needs a key with the
//! `invoke` scope for the owner; the `Authorization` header is then removed
//! before the guest sees the request (the key is the caller's secret, not the
//! guest's). Whatever the version, wasmgrid API and topic keys are removed
//! from `Authorization` and `aeg-sas-key` (other values, such as Basic
//! credentials, pass through). Errors before the guest has answered (auth, unknown algorithm,
//! trap, timeout, memory cap) are the usual JSON error bodies.

use super::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header, uri::PathAndQuery};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::sync::Arc;
use wasmgrid_core::auth::{Caller, Scope, is_wasmgrid_credential};
use wasmgrid_core::registry::{Deployed, VersionSpec};
use wasmgrid_engine::{ComponentKind, HttpBodyError};

/// `ANY /http/{owner}/{name}[@{version}]/{rest…}`.
pub async fn serve(State(app): State<AppState>, req: Request) -> Response {
    let parsed = match parse_http_path(req.uri().path()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let target = (|| {
        let spec = VersionSpec::parse(parsed.version)?;
        let deployed = app.invoker.resolve(parsed.owner, parsed.name, &spec)?;
        Ok::<_, ApiError>(deployed)
    })();
    let guest_path = parsed.rest.to_string();
    let (owner, name) = (parsed.owner.to_string(), parsed.name.to_string());
    run(&app, &owner, &name, target, req, Some(guest_path)).await
}

/// A request under a route prefix of `owner/name`: served with the path as it came.
pub async fn serve_route(app: AppState, owner: &str, name: &str, req: Request) -> Response {
    let target = app
        .invoker
        .resolve(owner, name, &VersionSpec::Latest)
        .map_err(ApiError::from);
    run(&app, owner, name, target, req, None).await
}

/// `/http/{owner}/{name}[@{version}]{rest}`, split.
#[derive(Debug, PartialEq, Eq)]
struct HttpPath<'a> {
    owner: &'a str,
    name: &'a str,
    version: Option<&'a str>,
    /// The path the guest sees: `/` when nothing follows the name.
    rest: &'a str,
}

fn parse_http_path(path: &str) -> Result<HttpPath<'_>, ApiError> {
    let bad = || {
        ApiError::not_found(format!(
            "no endpoint {path}: wasi:http components are served at /http/OWNER/NAME[@VERSION]/PATH"
        ))
    };
    let tail = path.strip_prefix("/http/").ok_or_else(bad)?;
    let (owner, tail) = tail.split_once('/').ok_or_else(bad)?;
    let (name_at, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, "/"),
    };
    let (name, version) = match name_at.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => match name_at.split_once("%40") {
            Some((n, v)) => (n, Some(v)),
            None => (name_at, None),
        },
    };
    if owner.is_empty() || name.is_empty() || version.is_some_and(str::is_empty) {
        return Err(bad());
    }
    Ok(HttpPath {
        owner,
        name,
        version,
        rest,
    })
}

/// Checks the key, then the kind, rewrites the path for the guest (when
/// `guest_path` is given) and runs the request.
///
/// Only a public version is served without a key; otherwise a missing or
/// unknown key answers 401 whether or not `owner/name` exists, and a key of
/// another owner gets the same 404 as for a missing algorithm.
async fn run(
    app: &AppState,
    owner: &str,
    name: &str,
    target: Result<Arc<Deployed>, ApiError>,
    req: Request,
    guest_path: Option<String>,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let public = target
        .as_ref()
        .is_ok_and(|d| d.record.settings.public && d.record.kind == ComponentKind::Http);
    if !public {
        let caller = match Caller::from_request_parts(&mut parts, app).await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        if let Err(e) = caller.require_visible(Scope::Invoke, owner, || {
            super::algorithms::hidden(owner, name)
        }) {
            return e.into_response();
        }
        parts.headers.remove(header::AUTHORIZATION);
    }
    let deployed = match target {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    if deployed.record.kind != ComponentKind::Http {
        let r = &deployed.record;
        return ApiError::input(format!(
            "{}/{}/{} is an algorithm, not a wasi:http component: call it with POST /v1/algo/{}/{}/{}",
            r.owner, r.name, r.version, r.owner, r.name, r.version
        ))
        .into_response();
    }
    strip_credentials(&mut parts.headers);
    if let Some(path) = guest_path {
        match guest_uri(&path, parts.uri.query()) {
            Ok(uri) => parts.uri = uri,
            Err(e) => return e.into_response(),
        }
    }
    if !parts.headers.contains_key(header::HOST) {
        // HTTP/1.0 without Host: wasi:http needs an authority.
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let body = body
        .map_err(|e| HttpBodyError::InternalError(Some(format!("reading the request body: {e}"))));
    let request = axum::http::Request::from_parts(parts, body);

    let endpoint = deployed.endpoint();
    let result = app.invoker.handle_http(&deployed, request).await;
    let mut resp = match result {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            if !matches!(e, wasmgrid_engine::InvokeError::Overloaded(_)) {
                tracing::warn!(%endpoint, error = %e, "wasi:http request failed");
            }
            ApiError::from(e).into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&endpoint) {
        resp.headers_mut().insert("x-wasmgrid-endpoint", v);
    }
    resp
}

/// Removes wasmgrid's own credentials (API keys, topic keys) from the headers
/// a guest sees, so that a component, public ones above all, cannot collect
/// its callers' keys. Other `Authorization` values (Basic, a JWT) stay for
/// components that do their own auth.
fn strip_credentials(headers: &mut HeaderMap) {
    for name in [
        header::AUTHORIZATION,
        HeaderName::from_static("aeg-sas-key"),
    ] {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if !values.iter().any(|v| is_wasmgrid_credential(v.as_bytes())) {
            continue;
        }
        headers.remove(&name);
        for v in values {
            if !is_wasmgrid_credential(v.as_bytes()) {
                headers.append(&name, v);
            }
        }
    }
}

/// `path` plus the original query, as the guest's request URI.
fn guest_uri(path: &str, query: Option<&str>) -> Result<Uri, ApiError> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let pq = PathAndQuery::try_from(pq)
        .map_err(|e| ApiError::input(format!("the request path is not valid: {e}")))?;
    Ok(Uri::from(pq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = parse_http_path("/http/demo/hello").unwrap();
        assert_eq!(
            p,
            HttpPath {
                owner: "demo",
                name: "hello",
                version: None,
                rest: "/"
            }
        );
        let p = parse_http_path("/http/demo/hello@1.2/a/b").unwrap();
        assert_eq!((p.name, p.version, p.rest), ("hello", Some("1.2"), "/a/b"));
        let p = parse_http_path("/http/demo/hello%401.0.0/").unwrap();
        assert_eq!((p.name, p.version, p.rest), ("hello", Some("1.0.0"), "/"));
        for bad in [
            "/http/",
            "/http/demo",
            "/http/demo/",
            "/http//x",
            "/http/demo/x@/y",
        ] {
            assert!(parse_http_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wasmgrid_credentials_are_stripped_others_kept() {
        let mut h = HeaderMap::new();
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wg_abc_def"),
        );
        h.append("aeg-sas-key", HeaderValue::from_static("wgt_secret"));
        h.append("x-other", HeaderValue::from_static("wg_abc_def"));
        strip_credentials(&mut h);
        let auth: Vec<_> = h.get_all(header::AUTHORIZATION).iter().collect();
        assert_eq!(auth, vec!["Basic dXNlcjpwYXNz"]);
        assert!(h.get("aeg-sas-key").is_none());
        assert_eq!(h["x-other"], "wg_abc_def");
    }

    #[test]
    fn guest_uris_keep_the_query() {
        assert_eq!(guest_uri("/a", Some("x=1&y")).unwrap(), "/a?x=1&y");
        assert_eq!(guest_uri("/", None).unwrap(), "/");
    }
}
