//! Deploy, list, show and delete algorithm versions.

use super::Path;
use super::{ApiError, AppState, DEPLOY_BODY_LIMIT, QueryParams, read_body};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_core::names::validate_name;
use wasmgrid_core::registry::{DeployRequest, VersionSettings};

/// Parses deploy settings from the query: `timeout`, `memory`, `concurrency`,
/// repeated `grant`, `reuse` (algorithms: calls per warm instance), and for
/// wasi:http components `public`, `route` and `allow_outbound`
/// (comma-separated and/or repeated).
fn settings_from_query(q: &QueryParams, owner: &str) -> Result<VersionSettings, ApiError> {
    let mut s = VersionSettings::default();
    if let Some(t) = q.number::<u64>("timeout", "whole seconds, e.g. timeout=60")? {
        s.timeout = t;
    }
    if let Some(m) = q.number::<u64>("memory", "MiB, e.g. memory=256")? {
        s.memory = m;
    }
    if let Some(c) = q.number::<u32>("concurrency", "a whole number, e.g. concurrency=8")? {
        s.concurrency = c;
    }
    if let Some(r) = q.number::<u32>(
        "reuse",
        "a whole number of calls per warm instance, e.g. reuse=1000 (0: a fresh instance per call)",
    )? {
        s.reuse = r;
    }
    s.grants = q.all("grant");
    for g in &s.grants {
        validate_grant(g, owner)?;
    }
    s.public = q.flag("public")?;
    s.allow_outbound = q
        .all("allow_outbound")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    s.route = q.get("route").filter(|r| !r.is_empty()).map(str::to_string);
    Ok(s)
}

/// Grants are `data://owner/collection:read|write` (data collections) or
/// `topic:NAME` (event publishing); they are checked on every guest access.
fn validate_grant(g: &str, algorithm_owner: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::input(format!(
            "invalid grant {g:?}: use data://OWNER/COLLECTION:read, data://OWNER/COLLECTION:write or topic:NAME"
        ))
    };
    if let Some(rest) = g.strip_prefix("data://") {
        let (target, mode) = rest.rsplit_once(':').ok_or_else(bad)?;
        if !matches!(mode, "read" | "write") {
            return Err(bad());
        }
        let mut parts = target.splitn(2, '/');
        let (owner, coll) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let owner_ok = owner == ".my" || validate_name("owner", owner).is_ok();
        let coll_ok = coll == "*" || validate_name("collection", coll).is_ok();
        if !owner_ok || !coll_ok {
            return Err(bad());
        }
        if owner != ".my" && owner != algorithm_owner {
            return Err(ApiError::input(format!(
                "grant {g:?} names another owner's collection: grants cover the algorithm owner's collections \
                 (data://{algorithm_owner}/... or data://.my/...); other owners share data by making a collection public"
            )));
        }
        Ok(())
    } else if let Some(topic) = g.strip_prefix("topic:") {
        if topic.is_empty() || wasmgrid_events::is_reserved_topic(topic) {
            return Err(ApiError::input(format!(
                "invalid grant {g:?}: algorithms may not publish to system.* topics"
            )));
        }
        Ok(())
    } else {
        Err(bad())
    }
}

pub async fn deploy(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Deploy, &owner)?;
    let q = QueryParams::parse(query.as_deref());
    let settings = settings_from_query(&q, &owner)?;
    let bytes = read_body(&headers, body, DEPLOY_BODY_LIMIT, "the component").await?;
    let deployed = app
        .registry
        .deploy(
            DeployRequest {
                owner,
                name,
                version,
                settings,
                source_hash: None,
            },
            bytes,
        )
        .await?;
    let r = &deployed.record;
    tracing::info!(endpoint = %deployed.endpoint(), digest = %r.digest, compile_ms = r.compile_ms, "deployed");
    let body = serde_json::json!({
        "endpoint": deployed.endpoint(),
        "version": r.version,
        "digest": r.digest,
        "kind": r.kind,
        "compile_ms": r.compile_ms,
        "size": r.size,
        "timeout": r.settings.timeout,
        "memory": r.settings.memory,
        "concurrency": r.settings.concurrency,
        "reuse": r.settings.reuse,
        "grants": r.settings.grants,
        "public": r.settings.public,
        "allow_outbound": r.settings.allow_outbound,
        "route": r.settings.route,
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

pub async fn list(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let owner = if caller.is_admin() {
        None
    } else {
        Some(caller.owner.as_str())
    };
    let algorithms = app.registry.list(owner)?;
    Ok(axum::Json(serde_json::json!({"algorithms": algorithms})).into_response())
}

fn require_read(caller: &Caller, owner: &str, name: &str) -> Result<(), ApiError> {
    caller
        .require_visible(Scope::Invoke, owner, || hidden(owner, name))
        .or_else(|_| caller.require_visible(Scope::Deploy, owner, || hidden(owner, name)))
}

/// Another owner's algorithm answers as a missing one (DESIGN.md, Auth).
pub(super) fn hidden(owner: &str, name: &str) -> ApiError {
    wasmgrid_core::registry::not_found(owner, name).into()
}

pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    require_read(&caller, &owner, &name)?;
    match app.registry.algorithm(&owner, &name)? {
        Some(info) if !info.versions.is_empty() => Ok(axum::Json(info).into_response()),
        _ => Err(hidden(&owner, &name)),
    }
}

pub async fn show_version(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    require_read(&caller, &owner, &name)?;
    let spec = wasmgrid_core::registry::VersionSpec::parse(Some(&version))?;
    let deployed = app.registry.resolve(&owner, &name, &spec)?;
    Ok(axum::Json(&deployed.record).into_response())
}

pub async fn delete_version(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    caller.require_visible(Scope::Deploy, &owner, || hidden(&owner, &name))?;
    app.registry.delete(&owner, &name, &version).await?;
    tracing::info!(%owner, %name, %version, "deleted version");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        for ok in [
            "data://demo/uploads:read",
            "data://.my/out:write",
            "data://demo/*:read",
            "topic:orders",
        ] {
            assert!(validate_grant(ok, "demo").is_ok(), "{ok}");
        }
        for bad in [
            "data://demo:read",
            "data://demo/x:exec",
            "topic:system.data",
            "file:///etc",
            "data://../x:read",
            "data://bob/c:read",
        ] {
            assert!(validate_grant(bad, "demo").is_err(), "{bad}");
        }
    }
}
