//! Per-algorithm secrets: `PUT/DELETE /v1/algorithms/{owner}/{name}/secrets/{key}`,
//! `GET /v1/algorithms/{owner}/{name}/secrets` (names only).

use super::Path;
use super::{ApiError, AppState, read_body};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_core::names::validate_name;
use wasmgrid_core::secrets::{MAX_SECRET_BYTES, SecretError};

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Invalid(m) => ApiError::input(m),
            SecretError::NotFound(m) => ApiError::not_found(m),
            SecretError::Store(s) => s.into(),
        }
    }
}

/// Sets a secret. The body is the value (text), or `{"value": "..."}` with
/// `Content-Type: application/json`.
pub async fn set(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_visible(Scope::Deploy, &owner, || {
        super::algorithms::hidden(&owner, &name)
    })?;
    validate_name("owner", &owner)?;
    validate_name("algorithm name", &name)?;
    // One answer for every oversized secret, whether the body or the value
    // inside a JSON body is what passes the limit.
    let too_large = || {
        ApiError::too_large(format!(
            "the secret value is larger than the limit of {}; store large material in a data collection and keep its key here",
            super::human_size(MAX_SECRET_BYTES)
        ))
    };
    // Room for a JSON envelope around a value of the full size.
    let body = read_body(&headers, body, MAX_SECRET_BYTES + 1024, "the secret")
        .await
        .map_err(|e| {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                e
            }
        })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let value = if is_json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SecretBody {
            value: String,
        }
        let v: SecretBody =
            super::parse_json(&body, "secret (expected {\"value\": \"...\"}, a string)")?;
        v.value
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::input("the secret value must be UTF-8 text"))?
    };
    if value.len() > MAX_SECRET_BYTES {
        return Err(too_large());
    }
    let secrets = app.secrets.clone();
    let key2 = key.clone();
    secrets.set(&owner, &name, &key2, &value).await?;
    Ok(axum::Json(serde_json::json!({"name": key})).into_response())
}

/// Deletes a secret.
pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, key)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    caller.require_visible(Scope::Deploy, &owner, || {
        super::algorithms::hidden(&owner, &name)
    })?;
    let secrets = app.secrets.clone();
    secrets.delete(&owner, &name, &key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Lists secret names (never values).
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_visible(Scope::Deploy, &owner, || {
        super::algorithms::hidden(&owner, &name)
    })?;
    let secrets = app.secrets.clone();
    let names = secrets.names(&owner, &name).await?;
    let list: Vec<serde_json::Value> = names
        .into_iter()
        .map(|n| serde_json::json!({"name": n}))
        .collect();
    Ok(axum::Json(serde_json::json!({"secrets": list})).into_response())
}
