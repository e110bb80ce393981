//! Topics, event ingress, subscriptions, dead letters and redrive.

use super::Path;
use super::{AppState, QueryParams, parse_json, read_body};
use crate::api::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wasmgrid_core::auth::{Caller, key_from_header};
use wasmgrid_events::cloudevent::{self, Encoding, MAX_REQUEST_BYTES};
use wasmgrid_events::{EventError, SubscriptionSpec};

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Invalid(m) => ApiError::input(m),
            EventError::NotFound(m) => ApiError::not_found(m),
            EventError::Forbidden(m) => ApiError::forbidden(m),
            EventError::Conflict(m) => {
                ApiError::of(wasmgrid_engine::error_kind::ErrorKind::AlreadyExists, m)
            }
            EventError::Store(e) => e.into(),
            EventError::Internal(m) => ApiError::internal(m),
        }
    }
}

fn created_or_ok(created: bool, body: serde_json::Value) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

/// A topic as the API shows it: the service's view plus, for a custom
/// topic, the URL to publish to (system topics take no publishes).
fn topic_view(mut topic: serde_json::Value) -> serde_json::Value {
    if topic["system"] != true
        && let Some(name) = topic["name"].as_str()
    {
        topic["endpoint"] = format!("/v1/topics/{name}/events").into();
    }
    topic
}

/// `GET /v1/topics`
pub async fn list_topics(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let topics: Vec<_> = app
        .events
        .topics(&caller)?
        .into_iter()
        .map(topic_view)
        .collect();
    Ok(axum::Json(json!({ "topics": topics })).into_response())
}

/// `PUT /v1/topics/{topic}`: creates a topic (201 with its keys, shown once) or
/// returns the existing one (200, no keys).
pub async fn put_topic(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    let (created, body) = app.events.create_topic(&caller, &topic).await?;
    Ok(created_or_ok(created, topic_view(body)))
}

/// `GET /v1/topics/{topic}`
pub async fn get_topic(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(topic_view(app.events.topic(&caller, &topic)?)).into_response())
}

/// `DELETE /v1/topics/{topic}`: with its subscriptions and their queues.
pub async fn delete_topic(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    app.events.delete_topic(&caller, &topic).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/topics/{topic}/regenerateKey` `{"keyName": "key1"|"key2"}`
pub async fn regenerate_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.events.check_topic_managed(&caller, &topic)?;
    let bytes = read_body(&headers, body, super::JSON_BODY_LIMIT, "the request").await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Req {
        key_name: String,
    }
    let req: Req = parse_json(
        &bytes,
        "regenerateKey request (send {\"keyName\": \"key1\"})",
    )?;
    Ok(axum::Json(topic_view(
        app.events
            .regenerate_key(&caller, &topic, &req.key_name)
            .await?,
    ))
    .into_response())
}

/// `POST /v1/topics/{topic}/events`: CloudEvents (structured, batch, binary)
/// or Event Grid events; authenticated by a topic key (`aeg-sas-key`) or an API
/// key with the `publish` scope. 200 once every event is durable.
pub async fn publish(
    State(app): State<AppState>,
    Path(topic): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize_publish(&app, &topic, &headers)?;
    let _ = uri; // `api-version` and other query parameters of the Azure SDKs are accepted and ignored.
    let bytes = read_body(
        &headers,
        body,
        MAX_REQUEST_BYTES,
        "the event request (Event Grid's limit is 1 MiB per request)",
    )
    .await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let has_ce = headers.contains_key("ce-specversion");
    let events = match cloudevent::encoding(content_type, has_ce) {
        Encoding::Binary => vec![
            cloudevent::from_binary(
                headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
                content_type,
                &bytes,
            )
            .map_err(|e| ApiError::input(e.0))?,
        ],
        enc => cloudevent::parse_body(enc, &bytes, &topic).map_err(|e| ApiError::input(e.0))?,
    };
    let report = app.events.publish(&topic, events).await?;
    Ok(axum::Json(report).into_response())
}

fn authorize_publish(app: &AppState, topic: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(sas) = headers.get("aeg-sas-key").and_then(|v| v.to_str().ok()) {
        if app.events.verify_topic_key(topic, sas.trim()) {
            return Ok(());
        }
        // Do not reveal whether the topic exists to a wrong key.
        return Err(ApiError::unauthenticated(format!(
            "the aeg-sas-key is not a key of topic {topic}: use key1 or key2 from `wasmgrid topic create {topic}`, or an API key with the publish scope"
        )));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(key_from_header)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "missing credentials: send the topic key in `aeg-sas-key`, or an API key with the publish scope in `Authorization`",
            )
        })?;
    let caller = app.keys.verify(presented).ok_or_else(|| {
        ApiError::unauthenticated("unknown or revoked API key: check the key, or create one with `wasmgrid key create --scope publish`")
    })?;
    app.events.check_publisher(&caller, topic)?;
    Ok(())
}

/// `GET /v1/topics/{topic}/subscriptions`
pub async fn list_subscriptions(
    State(app): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    let subs = app.events.subscriptions(&caller, &topic)?;
    Ok(axum::Json(json!({ "subscriptions": subs })).into_response())
}

/// `PUT /v1/topics/{topic}/subscriptions/{name}`: create (201) or replace (200).
pub async fn put_subscription(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.events.check_subscription_put(&caller, &topic)?;
    let bytes = read_body(&headers, body, super::JSON_BODY_LIMIT, "the subscription").await?;
    let spec: SubscriptionSpec = parse_json(&bytes, "subscription")?;
    let (created, body) = app
        .events
        .put_subscription(&caller, &topic, &name, spec)
        .await?;
    Ok(created_or_ok(created, body))
}

/// `GET /v1/topics/{topic}/subscriptions/{name}`
pub async fn get_subscription(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(app.events.subscription(&caller, &topic, &name)?).into_response())
}

/// `DELETE /v1/topics/{topic}/subscriptions/{name}`
pub async fn delete_subscription(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    app.events
        .delete_subscription(&caller, &topic, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET …/subscriptions/{name}/deadletters?marker=&limit=`
pub async fn dead_letters(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, ApiError> {
    app.events
        .check_subscription_visible(&caller, &topic, &name)?;
    let q = QueryParams::parse(uri.query());
    let limit = q
        .number::<usize>("limit", "a number from 1 to 1000")?
        .unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::input(format!(
            "query parameter limit={limit} is out of range: use 1 to 1000"
        )));
    }
    let marker = q.number::<u64>("marker", "the marker of the previous page")?;
    let (items, next) = app
        .events
        .dead_letters(&caller, &topic, &name, marker, limit)
        .await?;
    let mut body = json!({ "deadLetters": items });
    if let Some(next) = next {
        body["marker"] = next.to_string().into();
    }
    Ok(axum::Json(body).into_response())
}

/// `POST …/subscriptions/{name}/redrive` with optional `{"ids": [event ids]}`.
pub async fn redrive(
    State(app): State<AppState>,
    caller: Caller,
    Path((topic, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.events
        .check_subscription_visible(&caller, &topic, &name)?;
    let bytes = read_body(
        &headers,
        body,
        super::JSON_BODY_LIMIT,
        "the redrive request",
    )
    .await?;
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Req {
        ids: Option<Vec<String>>,
    }
    let req: Req = if bytes.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        parse_json(
            &bytes,
            "redrive request (send {} or {\"ids\": [\"event id\", …]})",
        )?
    };
    let redriven = app.events.redrive(&caller, &topic, &name, req.ids).await?;
    Ok(axum::Json(json!({ "redriven": redriven })).into_response())
}
