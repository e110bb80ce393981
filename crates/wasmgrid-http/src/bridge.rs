//! Where batch jobs and events meet (assembled by [`crate::app::App`]): job
//! lifecycle events on `system.jobs`, and subscriptions whose destination is a
//! job (`{"job": {"algorithm", "output", …}}`, seed 000's "one job per new
//! file").

use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_core::data::DataError;
use wasmgrid_events::{EventError, Failure, JobStarter};
use wasmgrid_jobs::{JobError, JobObserver, JobOptions, JobRecord, JobService, JobSpec, JobStatus};
use wasmgrid_store::changelog::{ChangeLog, Feed};

/// Records `wasmgrid.jobs.JobCompleted` / `JobFailed` / `JobCanceled` in the
/// change log when a job ends; the feed routes them to `system.jobs`.
pub struct JobEvents {
    log: Arc<dyn ChangeLog>,
}

impl JobEvents {
    /// Appends to `log`.
    pub fn new(log: Arc<dyn ChangeLog>) -> Self {
        Self { log }
    }
}

impl JobObserver for JobEvents {
    fn job_ended(&self, job: &JobRecord) {
        let kind = match job.status {
            JobStatus::Completed => "JobCompleted",
            JobStatus::Failed => "JobFailed",
            JobStatus::Canceled => "JobCanceled",
            JobStatus::Queued | JobStatus::Running => return,
        };
        let mut parts = job.algorithm.split('/');
        let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // The observer may be told twice (after a crash): a fixed id per job
        // and outcome lets consumers deduplicate.
        let event = serde_json::json!({
            "specversion": "1.0",
            "id": format!("{}/{kind}", job.id),
            "source": format!("/jobs/{owner}/{name}"),
            "type": format!("wasmgrid.jobs.{kind}"),
            "subject": format!("/jobs/{}", job.id),
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "datacontenttype": "application/json",
            "data": crate::api::jobs::job_view(job),
        });
        let dedup = format!("{}/{kind}", job.id);
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        // Called on a blocking thread (see `JobObserver`), and the job is
        // marked announced only after this returns: wait for the append.
        let appended = tokio::runtime::Handle::try_current()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(self.log.append(Feed::Jobs, &dedup, bytes.into()))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = appended {
            tracing::error!(job = %job.id, error = %e, "recording the job's system.jobs event failed");
        }
    }
}

/// A subscription's `{"job": …}` destination.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobDestination {
    /// `owner/name[/version]`.
    algorithm: String,
    /// `data://owner/collection/folder/` for the outputs.
    output: String,
    #[serde(flatten)]
    options: JobOptions,
}

/// Starts one job per delivered event, on the file its data names (`uri`, as
/// in `wasmgrid.data.FileCreated`).
pub struct JobDeliveries {
    jobs: Arc<JobService>,
}

impl JobDeliveries {
    /// Over the node's job service.
    pub fn new(jobs: Arc<JobService>) -> Self {
        Self { jobs }
    }
}

/// The identity a subscription's jobs run as: its owner, with the rights its
/// creating key had (admin) or invoke + data access, and the hop count the
/// events the job causes carry.
fn acting(owner: &str, admin: bool, hops: u32) -> Caller {
    Caller {
        key_id: format!("subscription of {owner}"),
        owner: owner.to_string(),
        scopes: if admin {
            vec![Scope::Admin]
        } else {
            vec![Scope::Invoke, Scope::DataRead, Scope::DataWrite]
        },
        compat: Default::default(),
        hops,
    }
}

fn parse(spec: &Value) -> Result<JobDestination, String> {
    let d: JobDestination = serde_json::from_value(spec.clone()).map_err(|e| {
        format!("{e}; use {{\"algorithm\": \"owner/name\", \"output\": \"data://owner/collection/folder/\", \"maxConcurrency\"?, …}}")
    })?;
    d.options.resolve().map_err(|e| e.to_string())?;
    Ok(d)
}

impl JobStarter for JobDeliveries {
    fn validate(&self, owner: &str, admin: bool, spec: &Value) -> Result<(), EventError> {
        let d = parse(spec).map_err(EventError::Invalid)?;
        let caller = acting(owner, admin, 0);
        let (algo_owner, algo_name, _) = wasmgrid_events::parse_endpoint(&d.algorithm)?;
        wasmgrid_core::names::validate_name("owner", algo_owner)
            .and_then(|_| wasmgrid_core::names::validate_name("algorithm name", algo_name))
            .map_err(|e| EventError::Invalid(format!("algorithm: {e}")))?;
        // Another owner's algorithm answers as a missing one (DESIGN.md, Auth).
        caller.require_visible(Scope::Invoke, algo_owner, || {
            EventError::NotFound(format!(
                "algorithm: {}",
                wasmgrid_core::registry::not_found(algo_owner, algo_name)
            ))
        })?;
        if !d.output.starts_with("data://") {
            return Err(EventError::Invalid(format!(
                "output {:?} must be a data:// folder",
                d.output
            )));
        }
        // Checked now rather than failing every delivery: a collection the
        // owner may not write would only ever dead-letter.
        self.jobs
            .check_output(&caller, &d.output)
            .map_err(|e| match e {
                JobError::Data(e) => EventError::from_data(e),
                JobError::Auth(e) => e.into(),
                other => EventError::Invalid(other.to_string()),
            })
            .map_err(|e| e.prefixed("output"))
    }

    fn start(
        &self,
        owner: &str,
        admin: bool,
        spec: &Value,
        event: &Value,
    ) -> futures::future::BoxFuture<'static, Result<(), Failure>> {
        let jobs = self.jobs.clone();
        // The job's outputs are events this delivery caused: one hop more
        // than the event, so a job writing where it is triggered stops at the
        // hop limit like any other event loop.
        let hops = event
            .get(wasmgrid_engine::identity::HOPS_ATTRIBUTE)
            .and_then(wasmgrid_events::cloudevent::hops_value)
            .unwrap_or(0)
            .saturating_add(1);
        let caller = acting(owner, admin, hops);
        let parsed = parse(spec);
        let input = event
            .get("data")
            .and_then(|d| d.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Box::pin(async move {
            let d = parsed.map_err(Failure::NonRetryable)?;
            let input = input.ok_or_else(|| {
                Failure::NonRetryable(
                    "the event's data has no `uri` naming the file to process (job destinations take data events such as wasmgrid.data.FileCreated)".into(),
                )
            })?;
            let spec = JobSpec::for_endpoint(&d.algorithm, input, d.output, d.options)
                .map_err(|e| Failure::NonRetryable(e.to_string()))?;
            match jobs.submit(&caller, spec).await {
                Ok(_) => Ok(()),
                // Refusals and missing inputs or outputs do not heal by
                // retrying (Event Grid does not retry 400, 401, 403, 404).
                Err(
                    e @ (JobError::Invalid(_)
                    | JobError::NotFound(_)
                    | JobError::Auth(_)
                    | JobError::Data(
                        DataError::Forbidden(_)
                        | DataError::NotFound(_)
                        | DataError::Invalid(_)
                        | DataError::InvalidUri(_),
                    )),
                ) => Err(Failure::NonRetryable(e.to_string())),
                Err(e) => Err(Failure::Retryable(e.to_string())),
            }
        })
    }
}
