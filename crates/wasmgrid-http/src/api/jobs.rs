//! Batch jobs: `POST /v1/algo/{owner}/{name}[/{version}]/jobs`, `GET /v1/jobs`,
//! `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/files`, `POST /v1/jobs/{id}/cancel`.

use super::Path;
use super::{ApiError, AppState, JSON_BODY_LIMIT, QueryParams, parse_json, read_body};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_jobs::{FileStatus, JobError, JobOptions, JobRecord, JobSpec, JobStatus};

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Invalid(m) => ApiError::input(m),
            JobError::NotFound(m) => ApiError::not_found(m),
            JobError::Auth(e) => e.into(),
            JobError::Registry(e) => e.into(),
            JobError::Data(e) => e.into(),
            JobError::Store(e) => e.into(),
            JobError::ShuttingDown(m) => ApiError::overloaded(m),
            JobError::Unavailable(m) => ApiError::internal(m),
        }
    }
}

/// A job as the API shows it (and as `system.jobs` events carry it): the
/// service's view plus the links to this job's endpoints.
pub(crate) fn job_view(job: &JobRecord) -> serde_json::Value {
    let mut v = job.view();
    let id = &job.id;
    if let Some(links) = v["links"].as_object_mut() {
        links.insert("self".into(), format!("/v1/jobs/{id}").into());
        links.insert("cancel".into(), format!("/v1/jobs/{id}/cancel").into());
        links.insert("files".into(), format!("/v1/jobs/{id}/files").into());
    }
    v
}

/// The body of a submission.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubmitRequest {
    input: String,
    output: String,
    #[serde(default, alias = "max_concurrency")]
    max_concurrency: Option<u32>,
    #[serde(default, alias = "error_threshold")]
    error_threshold: Option<i64>,
    #[serde(default, alias = "mini_batch_size")]
    mini_batch_size: Option<u32>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    timeout: Option<f64>,
}

pub async fn submit_latest(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    submit(app, caller, owner, name, None, headers, body).await
}

pub async fn submit_version(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    submit(app, caller, owner, name, Some(version), headers, body).await
}

async fn submit(
    app: AppState,
    caller: Caller,
    owner: String,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Before the body: a refusal must not depend on what the body says.
    caller.require_visible(Scope::Invoke, &owner, || {
        super::algorithms::hidden(&owner, &name)
    })?;
    let body = read_body(&headers, body, JSON_BODY_LIMIT, "the job request").await?;
    let req: SubmitRequest = parse_json(
        &body,
        "job request (expected {\"input\": \"data://owner/collection/folder/\", \"output\": \"data://owner/collection/out/\", \
         \"maxConcurrency\"?, \"errorThreshold\"?, \"miniBatchSize\"?, \"retries\"?, \"timeout\"?})",
    )?;
    let spec = JobSpec {
        owner,
        name,
        version,
        input: req.input,
        output: req.output,
        options: JobOptions {
            max_concurrency: req.max_concurrency,
            error_threshold: req.error_threshold,
            mini_batch_size: req.mini_batch_size,
            retries: req.retries,
            timeout: req.timeout,
        },
    };
    let job = app.jobs.submit(&caller, spec).await?;
    let location = format!("/v1/jobs/{}", job.id);
    let mut resp = (StatusCode::ACCEPTED, axum::Json(job_view(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("job store worker failed: {e}")))?
        .map_err(ApiError::from)
}

fn limit(q: &QueryParams) -> Result<usize, ApiError> {
    Ok(
        q.number::<usize>("limit", "a number of entries, 1 to 1000")?
            .unwrap_or(100),
    )
}

/// `GET /v1/jobs?status=&limit=&marker=`: the caller's jobs (an admin key sees
/// every job), newest first.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(query.as_deref());
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::input(format!(
                "status={s:?} is not a job status: use Queued, Running, Completed, Failed or Canceled"
            ))
        })?),
    };
    let limit = limit(&q)?;
    let marker = q
        .get("marker")
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let jobs = app.jobs.clone();
    let (page, next) =
        blocking(move || jobs.list(&caller, status, marker.as_deref(), limit)).await?;
    let mut body = serde_json::json!({
        "jobs": page.iter().map(job_view).collect::<Vec<_>>(),
    });
    if let Some(m) = next {
        body["marker"] = m.into();
    }
    Ok(axum::Json(body).into_response())
}

/// `GET /v1/jobs/{id}`.
pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let jobs = app.jobs.clone();
    let job = blocking(move || jobs.get(&caller, &id)).await?;
    Ok(axum::Json(job_view(&job)).into_response())
}

/// `GET /v1/jobs/{id}/files?status=succeeded|failed&limit=&marker=`: finished
/// input files with their outcome, in path order.
pub async fn files(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(query.as_deref());
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) if s.eq_ignore_ascii_case("succeeded") => Some(FileStatus::Succeeded),
        Some(s) if s.eq_ignore_ascii_case("failed") => Some(FileStatus::Failed),
        Some(s) => {
            return Err(ApiError::input(format!(
                "status={s:?} is not a file status: use succeeded or failed"
            )));
        }
    };
    let limit = limit(&q)?;
    let marker = q
        .get("marker")
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let jobs = app.jobs.clone();
    let job_id = id.clone();
    let (job, (page, next)) = blocking(move || {
        let job = jobs.get(&caller, &job_id)?;
        let page = jobs.files(&caller, &job_id, status, marker.as_deref(), limit)?;
        Ok((job, page))
    })
    .await?;
    let input_base = match job.input_kind {
        wasmgrid_jobs::InputKind::Folder => job.input.clone(),
        wasmgrid_jobs::InputKind::File => job
            .input
            .rsplit_once('/')
            .map(|(parent, _)| format!("{parent}/"))
            .unwrap_or_default(),
    };
    let files: Vec<serde_json::Value> = page
        .into_iter()
        .map(|(rel, p)| {
            let mut v = serde_json::json!({
                "file": format!("{input_base}{rel}"),
                "status": p.status,
                "attempts": p.attempts,
                "run": p.run,
            });
            if let Some(o) = &p.output {
                v["output"] = format!("{}{o}", job.output).into();
            }
            if let Some(t) = &p.error_type {
                v["error_type"] = t.clone().into();
            }
            if let Some(m) = &p.message {
                v["message"] = m.clone().into();
            }
            v
        })
        .collect();
    let mut body = serde_json::json!({"files": files});
    if let Some(m) = next {
        body["marker"] = m.into();
    }
    Ok(axum::Json(body).into_response())
}

/// `POST /v1/jobs/{id}/cancel`: answers once the job has stopped, with the job.
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = app.jobs.cancel(&caller, &id).await?;
    Ok(axum::Json(job_view(&job)).into_response())
}
