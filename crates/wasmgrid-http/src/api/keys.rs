//! `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}` (admin only).

use super::Path;
use super::{ApiError, AppState, JSON_BODY_LIMIT, parse_json, read_body};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wasmgrid_core::auth::{Caller, Compat, Scope};
use wasmgrid_core::names::validate_name;

/// Longest key label (it is repeated in every key listing).
const MAX_KEY_NAME_BYTES: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    owner: String,
    scopes: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    /// `"algorithmia"`, `"none"`, or absent (decided by the header form).
    #[serde(default)]
    compat: Option<String>,
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let body = read_body(&headers, body, JSON_BODY_LIMIT, "the key request").await?;
    let req: CreateKey = parse_json(
        &body,
        "key request (expected {\"owner\": \"...\", \"scopes\": [\"invoke\", ...]})",
    )?;
    validate_name("owner", &req.owner)?;
    if let Some(name) = &req.name
        && name.len() > MAX_KEY_NAME_BYTES
    {
        return Err(ApiError::input(format!(
            "name is {} bytes long: key names are limited to {MAX_KEY_NAME_BYTES} bytes",
            name.len()
        )));
    }
    if req.scopes.is_empty() {
        return Err(ApiError::input(
            "scopes is empty: give at least one of admin, invoke, deploy, publish, data:read, data:write",
        ));
    }
    let mut scopes = Vec::new();
    for s in &req.scopes {
        let scope = Scope::parse(s).ok_or_else(|| {
            ApiError::input(format!(
                "unknown scope {s:?}: use admin, invoke, deploy, publish, data:read or data:write"
            ))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let compat = match req.compat.as_deref() {
        None => None,
        Some(c) => Some(Compat::parse(c).ok_or_else(|| {
            ApiError::input(format!(
                "unknown compat {c:?}: use \"algorithmia\" (errors of the algorithm as HTTP 200, for \
                 Algorithmia's clients), \"none\" (HTTP statuses), or leave it out (decided by the \
                 Authorization form)"
            ))
        })?),
    };
    let keys = app.keys.clone();
    // A task of its own: once started, the create finishes (cache included)
    // even if the client goes away.
    let (record, key) =
        tokio::spawn(async move { keys.create(&req.owner, scopes, req.name, compat).await })
            .await
            .map_err(|e| ApiError::internal(format!("key worker failed: {e}")))??;
    let body = serde_json::json!({
        "id": record.id,
        "key": key,
        "owner": record.owner,
        "scopes": record.scopes,
        "name": record.name,
        "compat": record.compat,
        "created": record.created,
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

pub async fn list(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let keys: Vec<serde_json::Value> = app
        .keys
        .list()
        .into_iter()
        .map(|r| serde_json::json!({"id": r.id, "owner": r.owner, "scopes": r.scopes, "name": r.name, "compat": r.compat, "created": r.created}))
        .collect();
    Ok(axum::Json(serde_json::json!({"keys": keys})).into_response())
}

pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let keys = app.keys.clone();
    let id2 = id.clone();
    let found = tokio::spawn(async move { keys.revoke(&id2).await })
        .await
        .map_err(|e| ApiError::internal(format!("key worker failed: {e}")))??;
    if found {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!(
            "key {id} not found (list keys with GET /v1/keys)"
        )))
    }
}
