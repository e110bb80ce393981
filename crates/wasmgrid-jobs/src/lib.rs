//! Batch jobs: an algorithm run over every file of a `data://` folder (or over
//! one file), asynchronously, with a job id to poll: Azure ML batch endpoints on
//! one machine.
//!
//! # What a job does
//!
//! [`JobService::submit`] checks the request (the caller's `invoke` scope for the
//! algorithm's owner, read access to the input, `data:write` on the output),
//! resolves the version once (the job runs that exact version to the end),
//! stores the job as `Queued` and returns it. A runner then:
//!
//! 1. waits for a running-job slot ([`JobsConfig::max_running_jobs`]), then marks
//!    the job `Running` and counts the input files;
//! 2. pages through the input folder (recursively, in path order, 256 files a
//!    page: memory stays bounded whatever the folder holds) and hands files to
//!    at most `maxConcurrency` concurrent invocations, one per file, or one per
//!    `miniBatchSize` files;
//! 3. writes each output to the output folder under the input's relative path
//!    (see [`payload::output_name`]) and records the file as finished **in the
//!    same transaction** as its output; many files share one transaction (and
//!    one fsync);
//! 4. ends `Completed`, `Failed` (more than `errorThreshold` files failed) or
//!    `Canceled`, and writes `_summary.json` into the output folder in the same
//!    transaction as the final status; then calls the [`JobObserver`].
//!
//! # Inputs and outputs
//!
//! With `miniBatchSize` 1 (the default) the algorithm gets the file's bytes as
//! its input, with the file's content type. With `miniBatchSize` > 1 it gets a
//! JSON array, one object per file: `{"uri", "content_type", "content"}` when
//! the file is text (a `text/*`, JSON or XML type, valid UTF-8), else
//! `{"uri", "content_type", "content_base64"}`; it must return a JSON array with
//! one element per file, in order (a string is written as `text/plain`, any
//! other value as `application/json`). A failed mini-batch fails all its files.
//!
//! # Failures and retries
//!
//! A file fails when its invocation fails after retries, its input cannot be
//! read, or its output cannot be written. `transient` errors, timeouts,
//! `Overloaded` and host failures are retried up to `retries` times with
//! exponential backoff (100 ms doubling, at most 5 s); `invalid-input`,
//! `permanent`, crashes, out-of-memory and stack overflows are not (they would
//! fail again). `errorThreshold` follows Azure ML's `error_threshold`: the job
//! fails as soon as more than that many files have failed; -1 (the default)
//! never fails the job for file failures. The first [`FIRST_ERRORS`] failures are
//! in the job; all of them are listed by [`JobService::files`].
//!
//! # Durability
//!
//! The job lives in the records bucket [`Bucket::Jobs`], each finished file's
//! progress in the [`JobQueue`]. A file's success is recorded in the same
//! [`JobQueue::finish`] step as its output (one transaction on the embedded
//! store; outputs before progress elsewhere), so after a crash a restarted server resumes every `Queued` or
//! `Running` job ([`JobService::start`]) and skips every recorded file: only the
//! files that were in flight at the crash run again. Processing is therefore
//! **at least once per file**, and exactly once for files that finished.

mod payload;
mod run;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmgrid_core::auth::{AuthError, Caller, Scope};
use wasmgrid_core::clock::now_rfc3339;
use wasmgrid_core::data::{DataError, DataPath, DataService, Principal};
use wasmgrid_core::invoker::Invoker;
use wasmgrid_core::metrics::Metrics;
use wasmgrid_core::registry::{RegistryError, VersionSpec};
use wasmgrid_engine::ComponentKind;
use wasmgrid_store::StoreError;
use wasmgrid_store::jobqueue::JobQueue;
use wasmgrid_store::leases::{Leases, hold};
use wasmgrid_store::records::{Bucket, Records};

/// Default `maxConcurrency`.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 4;
/// Largest `maxConcurrency`.
pub const MAX_CONCURRENCY: u32 = 1000;
/// Default `retries` per file (Azure ML's `max_retries`).
pub const DEFAULT_RETRIES: u32 = 3;
/// Largest `retries`.
pub const MAX_RETRIES: u32 = 10;
/// Largest `miniBatchSize`.
pub const MAX_MINI_BATCH: u32 = 1000;
/// Failures kept in the job record (the rest: [`JobService::files`]).
pub const FIRST_ERRORS: usize = 10;
/// Largest input of one invocation (a file, or a whole mini-batch).
pub const MAX_INPUT_BYTES: u64 = 64 << 20;
/// The summary written into the output folder when a job ends.
pub const SUMMARY_FILE: &str = "_summary.json";

/// A job's state. `Completed` may include failed files (up to the error
/// threshold); `Failed` means the threshold was exceeded or the job could not
/// run at all (see the job's `message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting for a running-job slot.
    Queued,
    /// Processing files.
    Running,
    /// Every file was processed.
    Completed,
    /// Stopped: too many files failed, or the job could not run.
    Failed,
    /// Stopped by `POST /v1/jobs/{id}/cancel`.
    Canceled,
}

impl JobStatus {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled
        )
    }

    /// Parses a status name (any case).
    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Canceled,
        ]
        .into_iter()
        .find(|st| format!("{st:?}").eq_ignore_ascii_case(s))
    }
}

/// Whether the input was one file or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// One file.
    File,
    /// Every file under a folder, recursively.
    Folder,
}

/// The optional settings of a job request, as the API and subscriptions take
/// them (camelCase; snake_case accepted too). See [`JobSettings`] for defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    /// Invocations running at once.
    #[serde(default, alias = "max_concurrency")]
    pub max_concurrency: Option<u32>,
    /// Failed files tolerated; -1 tolerates any number.
    #[serde(default, alias = "error_threshold")]
    pub error_threshold: Option<i64>,
    /// Files per invocation.
    #[serde(default, alias = "mini_batch_size")]
    pub mini_batch_size: Option<u32>,
    /// Retries per file for retryable failures.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Timeout per invocation in seconds (at most the version's timeout).
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// A job's settings with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSettings {
    /// Invocations running at once (default 4; lowered to the version's
    /// concurrency limit when it is smaller).
    pub max_concurrency: u32,
    /// Failed files tolerated before the job fails; -1 (default) never fails.
    pub error_threshold: i64,
    /// Files per invocation (default 1).
    pub mini_batch_size: u32,
    /// Retries per file (default 3).
    pub retries: u32,
    /// Timeout per invocation in seconds; absent: the version's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

impl JobOptions {
    /// Applies defaults and checks ranges.
    pub fn resolve(&self) -> Result<JobSettings, JobError> {
        let s = JobSettings {
            max_concurrency: self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
            error_threshold: self.error_threshold.unwrap_or(-1),
            mini_batch_size: self.mini_batch_size.unwrap_or(1),
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
            timeout: self.timeout,
        };
        if s.max_concurrency == 0 || s.max_concurrency > MAX_CONCURRENCY {
            return Err(JobError::Invalid(format!(
                "maxConcurrency={} is out of range: use 1 to {MAX_CONCURRENCY}",
                s.max_concurrency
            )));
        }
        if s.error_threshold < -1 {
            return Err(JobError::Invalid(format!(
                "errorThreshold={} is out of range: use -1 (ignore failures) or a number of files >= 0",
                s.error_threshold
            )));
        }
        if s.mini_batch_size == 0 || s.mini_batch_size > MAX_MINI_BATCH {
            return Err(JobError::Invalid(format!(
                "miniBatchSize={} is out of range: use 1 to {MAX_MINI_BATCH}",
                s.mini_batch_size
            )));
        }
        if s.retries > MAX_RETRIES {
            return Err(JobError::Invalid(format!(
                "retries={} is out of range: use 0 to {MAX_RETRIES}",
                s.retries
            )));
        }
        // Checked here, at the edge: the worker turns it into a Duration, which
        // cannot hold NaN, negatives or values past ~1.8e19 s.
        let max = wasmgrid_core::registry::MAX_TIMEOUT_SECS as f64;
        if let Some(t) = s.timeout
            && !(t.is_finite() && t > 0.0 && t <= max)
        {
            return Err(JobError::Invalid(format!(
                "timeout={t} is out of range: use a number of seconds above 0 and at most {max}"
            )));
        }
        Ok(s)
    }
}

/// What to run: an algorithm over a `data://` file or folder.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// Algorithm owner.
    pub owner: String,
    /// Algorithm name.
    pub name: String,
    /// Version spec (`1.2.3`, `1.2`, `1`); `None` for the latest.
    pub version: Option<String>,
    /// `data://owner/collection/folder/` or `data://owner/collection/file`.
    pub input: String,
    /// `data://owner/collection/folder/` for the outputs.
    pub output: String,
    /// Settings.
    pub options: JobOptions,
}

impl JobSpec {
    /// A spec for `owner/name[/version]` (as subscriptions name algorithms).
    pub fn for_endpoint(
        endpoint: &str,
        input: impl Into<String>,
        output: impl Into<String>,
        options: JobOptions,
    ) -> Result<JobSpec, JobError> {
        let mut parts = endpoint.splitn(3, '/');
        let (owner, name) = match (parts.next(), parts.next()) {
            (Some(o), Some(n)) if !o.is_empty() && !n.is_empty() => (o, n),
            _ => {
                return Err(JobError::Invalid(format!(
                    "algorithm {endpoint:?} is not owner/name or owner/name/version"
                )));
            }
        };
        Ok(JobSpec {
            owner: owner.into(),
            name: name.into(),
            version: parts.next().map(str::to_string),
            input: input.into(),
            output: output.into(),
            options,
        })
    }
}

/// File counts of a job. `pending` = `total` − `succeeded` − `failed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Input files (counted when the job starts running; for a finished job,
    /// the files processed).
    pub total: u64,
    /// Files whose output was written.
    pub succeeded: u64,
    /// Files that failed.
    pub failed: u64,
    /// Files not processed yet.
    pub pending: u64,
}

impl Counts {
    fn recompute_pending(&mut self) {
        self.pending = self.total.saturating_sub(self.succeeded + self.failed);
    }
}

/// One failed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    /// The input file's `data://` URI.
    pub file: String,
    /// The error class (`AlgorithmError`, `TimeoutError`, ... as in the API).
    pub error_type: String,
    /// What went wrong.
    pub message: String,
}

/// Who submitted a job: the key whose rights the job uses for the whole run
/// (as they were at submission).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitter {
    /// Key id.
    pub key_id: String,
    /// Owner the key acts for.
    pub owner: String,
    /// The key's scopes at submission.
    pub scopes: Vec<Scope>,
    /// The hop count of the events the job causes (its outputs' change
    /// events): nonzero for a job a subscription started, see [`Caller::hops`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Submitter {
    fn caller(&self) -> Caller {
        Caller {
            key_id: self.key_id.clone(),
            owner: self.owner.clone(),
            scopes: self.scopes.clone(),
            compat: Default::default(),
            hops: self.hops,
        }
    }
}

/// A job, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id (`job-…`; ids sort newest first).
    pub id: String,
    /// `owner/name` of the algorithm.
    pub algorithm: String,
    /// The exact version the job runs.
    pub version: String,
    /// The input `data://` URI as given.
    pub input: String,
    /// File or folder.
    pub input_kind: InputKind,
    /// The output folder's `data://` URI (ends with `/`).
    pub output: String,
    /// Settings.
    pub settings: JobSettings,
    /// State.
    pub status: JobStatus,
    /// File counts.
    pub counts: Counts,
    /// The first failures.
    pub errors: Vec<FileError>,
    /// Why the job failed or was canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Submission time (RFC 3339).
    pub created: String,
    /// When the job first started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// How many times a runner started it (1, plus one per resume after a
    /// restart; in a cluster, the most starts of any one of its shards).
    #[serde(default)]
    pub runs: u32,
    /// The submitting key.
    pub submitter: Submitter,
    /// A cancel was requested (honoured even across a restart).
    #[serde(default)]
    pub cancel_requested: bool,
    /// The observer has been told that the job ended.
    #[serde(default)]
    pub notified: bool,
    /// In a cluster, the shards of the input (see [`Shard`]) whose files
    /// are all finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards_done: Vec<u32>,
    /// In a cluster, how many times each shard's runner started (`runs` is
    /// the most of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_runs: Vec<u32>,
}

impl JobRecord {
    /// The job without internals, plus `duration` (seconds running so far, or
    /// in total) and the output's `summary` file; the API adds its `links`.
    pub fn view(&self) -> serde_json::Value {
        let duration = self.started.as_deref().and_then(|s| {
            let start = humantime::parse_rfc3339(s).ok()?;
            let end = match self.ended.as_deref() {
                Some(e) => humantime::parse_rfc3339(e).ok()?,
                None => SystemTime::now(),
            };
            Some(end.duration_since(start).unwrap_or_default().as_secs_f64())
        });
        let mut v = serde_json::json!({
            "id": self.id,
            "status": self.status,
            "algorithm": self.algorithm,
            "version": self.version,
            "input": self.input,
            "input_kind": self.input_kind,
            "output": self.output,
            "settings": self.settings,
            "counts": self.counts,
            "errors": self.errors,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "duration": duration,
            "runs": self.runs,
            "owner": self.submitter.owner,
            "links": {
                "output": self.output,
                "summary": format!("{}{SUMMARY_FILE}", self.output),
            },
        });
        if let Some(m) = &self.message {
            v["message"] = m.clone().into();
        }
        v
    }

    fn visible_to(&self, caller: &Caller) -> bool {
        caller.is_admin() || caller.owner == self.submitter.owner
    }
}

/// A finished input file of a job, as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProgress {
    /// `succeeded` or `failed`.
    pub status: FileStatus,
    /// Invocations made for it in the run that finished it.
    pub attempts: u32,
    /// The run (see [`JobRecord::runs`]) that finished it.
    pub run: u32,
    /// The output file, relative to the output folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Error class of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Message of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Output written.
    Succeeded,
    /// Failed (see the error).
    Failed,
}

/// Told when a job ends, after its final state is durable. Called on a
/// blocking thread, at least once per job: if the process stops between the
/// final commit and the call, [`JobService::start`] calls it again.
pub trait JobObserver: Send + Sync {
    /// `job` reached `Completed`, `Failed` or `Canceled`.
    fn job_ended(&self, job: &JobRecord);
}

/// Job failures, each naming the thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    /// No such job.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The algorithm or version is missing or unusable.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The input or output is missing or not accessible.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server is shutting down: submit again after it restarts.
    #[error("{0}")]
    ShuttingDown(String),
    /// A host-side failure (a worker thread died).
    #[error("{0}")]
    Unavailable(String),
}

/// Tunables of the job service.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Jobs running at once; more wait as `Queued`.
    pub max_running_jobs: usize,
    /// First retry delay (doubles per attempt, at most [`JobsConfig::max_backoff`]).
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_running_jobs: 4,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// A job (or one shard of it) running in this process.
struct Active {
    cancel: CancellationToken,
    finished: CancellationToken,
    /// Its runner holds the shard's lease (in a cluster).
    leased: bool,
}

/// Shared state of the service and its runners.
pub(crate) struct Inner {
    /// Per-file progress, and the steps that move the job record with it.
    queue: Arc<dyn JobQueue>,
    /// Job records ([`Bucket::Jobs`]).
    records: Arc<dyn Records>,
    data: Arc<DataService>,
    invoker: Arc<Invoker>,
    metrics: Arc<Metrics>,
    config: JobsConfig,
    observer: Option<Arc<dyn JobObserver>>,
    active: Mutex<HashMap<String, Active>>,
    slots: Arc<Semaphore>,
    /// The slot each job running here holds, shared by its shards' runners
    /// (`max_running_jobs` counts jobs, not shards).
    job_slots: Mutex<HashMap<String, Weak<OwnedSemaphorePermit>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// In a cluster: one node runs a job, under the lease `job/<id>`
    /// ([`JobService::shared`]). `None`: this process runs every job.
    leases: Option<Arc<dyn Leases>>,
    /// How long a node holds a job's lease unless it renews it (every
    /// third). A node that dies hands its jobs over after this (plus the
    /// leases' clock-skew margin); the others look for such jobs as often.
    lease_ttl: Duration,
    /// In a cluster: how many nodes are live now, which sets how many of a
    /// job's shards one node takes.
    live_nodes: Option<LiveNodes>,
    /// Serialises this node's writes of one job's record (striped by job
    /// id): its shards' committers would otherwise update it concurrently,
    /// and on a clustered NATS stream before 2.9.21 two updates from one
    /// revision may both succeed (STORAGE.md rule 3).
    record_locks: [Mutex<()>; 16],
    /// Serialises this node's shards ending one job (striped by job id).
    end_locks: [Arc<tokio::sync::Mutex<()>>; 16],
}

impl Inner {
    /// Job `id`'s running slot on this node: the one its other shards'
    /// runners hold, or a new one once `max_running_jobs` allows.
    pub(crate) async fn job_slot(
        &self,
        id: &str,
    ) -> Result<Arc<OwnedSemaphorePermit>, tokio::sync::AcquireError> {
        let held = |slots: &HashMap<String, Weak<OwnedSemaphorePermit>>| {
            slots.get(id).and_then(Weak::upgrade)
        };
        let lock = || {
            self.job_slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(slot) = held(&lock()) {
            return Ok(slot);
        }
        let slot = Arc::new(self.slots.clone().acquire_owned().await?);
        let mut slots = lock();
        if let Some(theirs) = held(&slots) {
            // Another shard of the job got one meanwhile: share it (ours
            // goes back).
            return Ok(theirs);
        }
        slots.retain(|_, s| s.strong_count() > 0);
        slots.insert(id.to_string(), Arc::downgrade(&slot));
        Ok(slot)
    }

    /// The lock a shard's runner holds while it ends job `id` on this node.
    pub(crate) async fn end_lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.end_locks[stripe(id) % self.end_locks.len()]
            .clone()
            .lock_owned()
            .await
    }

    /// The lock of job `id`'s record writes on this node, in a cluster (one
    /// process on the embedded store has one runner per job, and its store
    /// serialises transactions).
    pub(crate) fn record_lock(&self, id: &str) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.leases.as_ref()?;
        Some(
            self.record_locks[stripe(id) % self.record_locks.len()]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A job id's lock stripe.
fn stripe(id: &str) -> usize {
    id.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    })
}

/// How many nodes of the cluster are live now.
pub type LiveNodes = Arc<dyn Fn() -> usize + Send + Sync>;

/// Most shards a job's input is split into in a cluster.
pub const MAX_SHARDS: u32 = 8;

/// One part of a job's input, run by one runner under its own lease: in a
/// cluster a folder job is split into `count` shards (its `maxConcurrency`,
/// at most [`MAX_SHARDS`]) by a hash of each file's relative path, so the
/// live nodes share its files; elsewhere a job is one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The lease a shard runs under: `job/<id>` for the first (the whole
    /// job when it has one shard), `job/<id>/<index>` for the others.
    fn lease(&self, id: &str) -> String {
        match self.index {
            0 => format!("job/{id}"),
            i => format!("job/{id}/{i}"),
        }
    }

    /// The key of its runner among this node's active runners.
    fn key(&self, id: &str) -> String {
        match self.index {
            0 => id.to_string(),
            i => format!("{id}#{i}"),
        }
    }

    /// Whether the file at `rel` (relative to the input) is in this shard:
    /// FNV-1a of the path, stable across nodes and builds.
    pub(crate) fn has(&self, rel: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in rel.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash % u64::from(self.count) == u64::from(self.index)
    }
}

/// Runs job `id` while this node holds its lease: renews it every third of
/// its time to live, halts the run if it is lost, and passes on a cancel
/// requested through another node (seen in the job record at each renewal).
async fn run_leased(
    inner: Arc<Inner>,
    leases: Arc<dyn Leases>,
    id: String,
    shard: Shard,
    cancel: CancellationToken,
    finished: CancellationToken,
    halt: CancellationToken,
) {
    let name = shard.lease(&id);
    let ttl = inner.lease_ttl;
    let leave = |inner: &Inner| {
        if let Ok(mut active) = inner.active.lock() {
            active.remove(&shard.key(&id));
        }
        finished.cancel();
    };
    let held = match hold(leases, &name, ttl).await {
        Ok(Some(held)) => held,
        outcome => {
            if let Err(e) = outcome {
                tracing::warn!(job = %id, error = %e, "taking the job's lease failed; the next scan tries again");
            }
            // Another node runs it.
            leave(&inner);
            return;
        }
    };
    // A node keeps no more than its share of a job's shards, so the live
    // nodes share its files; the shards over it go back for the others
    // (and come here again at a later scan if nobody takes them).
    let share = match &inner.live_nodes {
        Some(live) => shard.count.div_ceil(live().max(1) as u32),
        None => shard.count,
    };
    let within_share = inner.active.lock().is_ok_and(|mut active| {
        let prefix = format!("{id}#");
        let mine = active
            .iter()
            .filter(|(k, a)| a.leased && (k.as_str() == id || k.starts_with(&prefix)))
            .count() as u32;
        match active.get_mut(&shard.key(&id)) {
            Some(me) if mine < share => {
                me.leased = true;
                true
            }
            _ => false,
        }
    });
    if !within_share {
        held.release().await;
        leave(&inner);
        return;
    }
    // Halt the run the moment the lease is lost, and pass on a cancel
    // requested through another node (seen in the job record as often as
    // the lease is renewed).
    let done = CancellationToken::new();
    let watcher = {
        let (inner, id, lost) = (inner.clone(), id.clone(), held.lost());
        let (cancel, halt, done) = (cancel.clone(), halt.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(ttl / 3) => {}
                    _ = lost.cancelled() => {
                        tracing::warn!(job = %id, "lost the job's lease; stopping here, another node takes it over");
                        halt.cancel();
                        return;
                    }
                    _ = done.cancelled() => return,
                }
                let rec = inner
                    .records
                    .get(Bucket::Jobs, &id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|e| serde_json::from_slice::<JobRecord>(&e.value).ok());
                if rec.as_ref().is_some_and(|r| r.cancel_requested) {
                    cancel.cancel();
                }
                // Another shard's runner ended the job (its threshold, or a
                // cancel): stop here without ending it again.
                if rec.as_ref().is_some_and(|r| r.status.is_terminal()) {
                    halt.cancel();
                }
            }
        })
    };
    run::run(inner, id, shard, cancel, finished, halt).await;
    done.cancel();
    let _ = watcher.await;
    held.release().await;
}

/// The job service: submit, inspect and cancel jobs; runs them in the
/// background on the current tokio runtime.
#[derive(Clone)]
pub struct JobService {
    inner: Arc<Inner>,
}

/// A new job id: `job-` + 11 hex digits of inverted milliseconds (so ids sort
/// newest first) + 6 random hex digits.
fn new_job_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let inverted = ((1u64 << 44) - 1).saturating_sub(ms);
    let r: [u8; 3] = rand::random();
    format!("job-{inverted:011x}-{}", hex::encode(r))
}

fn valid_job_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with("job-")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn not_found(id: &str) -> JobError {
    JobError::NotFound(format!(
        "job {id} not found: list your jobs with `wasmgrid job ls` (GET /v1/jobs)"
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::Unavailable(format!("job store worker failed: {e}")))?
}

/// One page of a listing and where the next starts.
pub type JobPage<T> = (Vec<T>, Option<String>);

impl JobService {
    /// A job service over the node's job queue (progress, and the runner's
    /// steps that record finished files and end jobs), job records, data, invoker and metrics, telling
    /// `observer` (if any) when jobs end. Jobs only run after
    /// [`JobService::start`], which also announces ends the observer missed.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: Arc<dyn JobQueue>,
        records: Arc<dyn Records>,
        data: Arc<DataService>,
        invoker: Arc<Invoker>,
        metrics: Arc<Metrics>,
        config: JobsConfig,
        observer: Option<Arc<dyn JobObserver>>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_running_jobs.max(1)));
        Self {
            inner: Arc::new(Inner {
                queue,
                records,
                data,
                invoker,
                metrics,
                config,
                observer,
                active: Mutex::new(HashMap::new()),
                slots,
                job_slots: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                leases: None,
                lease_ttl: Duration::from_secs(30),
                live_nodes: None,
                record_locks: std::array::from_fn(|_| Mutex::new(())),
                end_locks: std::array::from_fn(|_| Arc::new(tokio::sync::Mutex::new(()))),
            }),
        }
    }

    /// Runs jobs as one node of several sharing the store: each job runs on
    /// the node holding its lease `job/<id>`, which renews it while the job
    /// runs and stops (leaving the job to the next holder) if it loses it;
    /// [`JobService::start`] then also looks for jobs whose node died, every
    /// few seconds. `lease_ttl`: how long a dead node's jobs wait before
    /// another takes them over. A folder job is split into shards (its
    /// `maxConcurrency`, at most [`MAX_SHARDS`]), each under its own lease;
    /// a node takes its share of a job's shards (the count over
    /// `live_nodes()`, rounded up) and the others take the rest at their next
    /// look, so the live nodes share the job's files. Call before the
    /// service is shared.
    pub fn shared(
        mut self,
        leases: Arc<dyn Leases>,
        lease_ttl: Duration,
        live_nodes: LiveNodes,
    ) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.leases = Some(leases);
            inner.lease_ttl = lease_ttl.max(Duration::from_secs(1));
            inner.live_nodes = Some(live_nodes);
        }
        self
    }

    /// The shards job `rec` is split into on this service.
    fn shard_count(&self, rec: &JobRecord) -> u32 {
        if self.inner.leases.is_none() || rec.input_kind != InputKind::Folder {
            return 1;
        }
        // The concurrency the job runs at (as the runner computes it), from
        // the version record every node has alike.
        let (owner, name) = rec
            .algorithm
            .split_once('/')
            .unwrap_or((&rec.algorithm, ""));
        let version_limit = semver::Version::parse(&rec.version)
            .ok()
            .and_then(|v| {
                self.inner
                    .invoker
                    .resolve(owner, name, &VersionSpec::Exact(v))
                    .ok()
            })
            .map_or(1, |d| d.record.settings.concurrency);
        rec.settings
            .max_concurrency
            .min(version_limit)
            .clamp(1, MAX_SHARDS)
    }

    /// Resumes every `Queued` or `Running` job and announces ended jobs the
    /// observer has not been told about. Call once, inside the tokio runtime,
    /// when the node starts serving.
    pub async fn start(&self) -> Result<usize, JobError> {
        let resumed = self.resume().await?;
        if self.inner.leases.is_some() {
            // A node that dies leaves its jobs Running with a lease nobody
            // renews: look for them, and take them over once it lapses.
            let service = self.clone();
            let shutdown = self.inner.shutdown.clone();
            let every = self.inner.lease_ttl / 3;
            self.inner.tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    if let Err(e) = service.resume().await {
                        tracing::warn!(error = %e, "looking for jobs to take over failed; retrying");
                    }
                }
            });
        }
        Ok(resumed)
    }

    /// Starts a runner for every unfinished job not running here (in a
    /// cluster, the runner takes the job's lease or leaves the job to its
    /// holder) and announces ended jobs not announced yet. How many runners
    /// started.
    async fn resume(&self) -> Result<usize, JobError> {
        let records = self.inner.records.clone();
        let jobs = blocking(move || {
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            loop {
                // A scan of every job: on a blocking thread, as before.
                let page =
                    wasmgrid_store::wait(records.list(Bucket::Jobs, "", after.as_deref(), 500))?;
                let full = page.next.is_some();
                for entry in page.items {
                    let (key, bytes) = (entry.key, entry.value);
                    after = Some(key.clone());
                    match serde_json::from_slice::<JobRecord>(&bytes) {
                        Ok(rec) if !rec.status.is_terminal() || !rec.notified => out.push(rec),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(job = %key, error = %e, "unreadable job record skipped")
                        }
                    }
                }
                if !full {
                    return Ok(out);
                }
            }
        })
        .await?;
        let mut resumed = 0;
        for rec in jobs {
            if rec.status.is_terminal() {
                let here = self
                    .inner
                    .active
                    .lock()
                    .is_ok_and(|a| a.contains_key(&rec.id));
                if !here {
                    self.announce(rec);
                }
            } else if self.spawn_runner(&rec) > 0 {
                tracing::info!(job = %rec.id, status = ?rec.status, done = rec.counts.succeeded + rec.counts.failed, "resuming job");
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Announces an ended job the observer was not told about (in a cluster,
    /// by the holder of its lease; a second announcement is dropped by the
    /// log's deduplication).
    fn announce(&self, rec: JobRecord) {
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let grant = match &inner.leases {
                Some(leases) => match leases
                    .acquire(&format!("job/{}", rec.id), inner.lease_ttl)
                    .await
                {
                    Ok(Some(g)) => Some(g),
                    _ => return,
                },
                None => None,
            };
            let inner2 = inner.clone();
            let _ = tokio::task::spawn_blocking(move || run::notify(&inner2, rec)).await;
            if let (Some(leases), Some(g)) = (&inner.leases, grant) {
                let _ = leases.release(g).await;
            }
        });
    }

    /// Stops every runner without ending its job (the jobs stay `Running` or
    /// `Queued` and resume at the next start), waiting up to `timeout`.
    /// In-flight invocations are abandoned; finished files are committed first.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(timeout, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("job runners still stopping at exit");
        }
    }

    /// Starts the runners of job `rec` not running here already (a job
    /// submitted before `start` is both new and found by the resume scan).
    /// In a cluster each runner first takes its shard's lease, and leaves
    /// the shard alone if another node holds it or this node holds its
    /// share of the job's shards already (see [`run_leased`]). How many
    /// runners started.
    fn spawn_runner(&self, rec: &JobRecord) -> usize {
        let count = self.shard_count(rec);
        let mut started = 0;
        let Ok(mut active) = self.inner.active.lock() else {
            tracing::error!(job = %rec.id, "job registry lock poisoned; the job resumes at the next start");
            return 0;
        };
        // Every shard done but the job not ended (its ender died, or its
        // end was lost): the first shard's runner ends it.
        let all_done = (0..count).all(|i| rec.shards_done.contains(&i));
        for shard in (0..count).map(|index| Shard { index, count }) {
            let key = shard.key(&rec.id);
            let finished = rec.shards_done.contains(&shard.index);
            if active.contains_key(&key) || (finished && !(all_done && shard.index == 0)) {
                continue;
            }
            let cancel = CancellationToken::new();
            let finished = CancellationToken::new();
            active.insert(
                key,
                Active {
                    cancel: cancel.clone(),
                    finished: finished.clone(),
                    leased: false,
                },
            );
            started += 1;
            let inner = self.inner.clone();
            let halt = self.inner.shutdown.child_token();
            let id = rec.id.clone();
            match self.inner.leases.clone() {
                None => {
                    self.inner.tasks.spawn(run::run(
                        inner,
                        id,
                        Shard::WHOLE,
                        cancel,
                        finished,
                        halt,
                    ));
                }
                Some(leases) => {
                    self.inner
                        .tasks
                        .spawn(run_leased(inner, leases, id, shard, cancel, finished, halt));
                }
            }
        }
        started
    }

    /// Submits a job for `caller` (checked as the API checks it) and starts it
    /// in the background. Returns the `Queued` job. Called by the HTTP API and
    /// by event subscriptions with a job destination.
    pub async fn submit(&self, caller: &Caller, spec: JobSpec) -> Result<JobRecord, JobError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(JobError::ShuttingDown(
                "the server is shutting down; submit the job again after it restarts".into(),
            ));
        }
        caller.require(Scope::Invoke, &spec.owner)?;
        let settings = spec.options.resolve()?;
        let vspec = VersionSpec::parse(spec.version.as_deref())?;
        let deployed = self
            .inner
            .invoker
            .resolve(&spec.owner, &spec.name, &vspec)?;
        if deployed.record.kind != ComponentKind::Algorithm {
            return Err(JobError::Invalid(format!(
                "{} is a wasi:http component; jobs run algorithms (components exporting wasmgrid:algorithm/handler)",
                deployed.endpoint()
            )));
        }
        let data = self.inner.data.clone();
        let caller2 = caller.clone();
        let (input, input_kind, output) = blocking(move || {
            let who = Principal::Key(&caller2);
            check_locations(&data, who, &spec.input, &spec.output)
        })
        .await?;
        let record = JobRecord {
            id: new_job_id(),
            algorithm: format!("{}/{}", deployed.record.owner, deployed.record.name),
            version: deployed.record.version.clone(),
            input,
            input_kind,
            output,
            settings,
            status: JobStatus::Queued,
            counts: Counts::default(),
            errors: Vec::new(),
            message: None,
            created: now_rfc3339(),
            started: None,
            ended: None,
            runs: 0,
            submitter: Submitter {
                key_id: caller.key_id.clone(),
                owner: caller.owner.clone(),
                scopes: caller.scopes.clone(),
                hops: caller.hops,
            },
            cancel_requested: false,
            notified: false,
            shards_done: Vec::new(),
            shard_runs: Vec::new(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt {
            table: Bucket::Jobs.name(),
            key: record.id.clone(),
            reason: e.to_string(),
        })?;
        self.inner
            .records
            .create(Bucket::Jobs, &record.id, value.into())
            .await?;
        tracing::info!(job = %record.id, algorithm = %record.algorithm, version = %record.version, input = %record.input, output = %record.output, "job submitted");
        self.spawn_runner(&record);
        Ok(record)
    }

    /// Checks that `caller` may write job outputs under `output_uri` (a
    /// subscription's job destination, checked when it is created).
    pub fn check_output(&self, caller: &Caller, output_uri: &str) -> Result<(), JobError> {
        let who = Principal::Key(caller);
        let output = who.parse(output_uri)?;
        self.inner.data.check_writable(who, &output)?;
        Ok(())
    }

    fn load(&self, id: &str) -> Result<JobRecord, JobError> {
        if !valid_job_id(id) {
            return Err(not_found(id));
        }
        // A short read the embedded backend answers inline.
        let entry = wasmgrid_store::wait(self.inner.records.get(Bucket::Jobs, id))?
            .ok_or_else(|| not_found(id))?;
        serde_json::from_slice(&entry.value).map_err(|e| {
            StoreError::Corrupt {
                table: Bucket::Jobs.name(),
                key: id.to_string(),
                reason: e.to_string(),
            }
            .into()
        })
    }

    /// A job the caller may see (its owner's keys, or an admin key).
    pub fn get(&self, caller: &Caller, id: &str) -> Result<JobRecord, JobError> {
        let rec = self.load(id)?;
        if rec.visible_to(caller) {
            Ok(rec)
        } else {
            Err(not_found(id))
        }
    }

    /// Jobs the caller may see, newest first, optionally of one status: up to
    /// `limit` after the job id `marker`, and the marker of the next page.
    pub fn list(
        &self,
        caller: &Caller,
        status: Option<JobStatus>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<JobPage<JobRecord>, JobError> {
        let limit = limit.clamp(1, 1000);
        let mut out = Vec::new();
        let mut after = marker.map(str::to_string);
        loop {
            let page = wasmgrid_store::wait(self.inner.records.list(
                Bucket::Jobs,
                "",
                after.as_deref(),
                256,
            ))?;
            let full = page.next.is_some();
            for entry in page.items {
                let (key, bytes) = (entry.key, entry.value);
                after = Some(key.clone());
                let Ok(rec) = serde_json::from_slice::<JobRecord>(&bytes) else {
                    continue;
                };
                if rec.visible_to(caller) && status.is_none_or(|s| s == rec.status) {
                    out.push(rec);
                    if out.len() == limit {
                        return Ok((out, after));
                    }
                }
            }
            if !full {
                return Ok((out, None));
            }
        }
    }

    /// A job's finished files (relative input path and progress), in path
    /// order, optionally of one status: up to `limit` after the path `marker`.
    pub fn files(
        &self,
        caller: &Caller,
        id: &str,
        status: Option<FileStatus>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<JobPage<(String, FileProgress)>, JobError> {
        self.get(caller, id)?;
        let limit = limit.clamp(1, 1000);
        let mut after = marker.map(str::to_string);
        let mut out = Vec::new();
        loop {
            // A short read the embedded backend answers inline.
            let page =
                wasmgrid_store::wait(self.inner.queue.list_progress(id, after.as_deref(), 256))?;
            let full = page.next.is_some();
            for (rel, bytes) in page.items {
                after = Some(rel.clone());
                let Ok(p) = serde_json::from_slice::<FileProgress>(&bytes) else {
                    continue;
                };
                if status.is_none_or(|s| s == p.status) {
                    out.push((rel.clone(), p));
                    if out.len() == limit {
                        return Ok((out, Some(rel)));
                    }
                }
            }
            if !full {
                return Ok((out, None));
            }
        }
    }

    /// Cancels a job (its owner's keys with the `invoke` scope, or an admin
    /// key): stops dispatching, abandons in-flight invocations, and ends the job
    /// `Canceled`. Files already finished keep their outputs. Canceling an
    /// ended job changes nothing. Returns the job as it is afterwards.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<JobRecord, JobError> {
        let rec = self.get(caller, id)?;
        caller.require(Scope::Invoke, &rec.submitter.owner)?;
        if rec.status.is_terminal() {
            return Ok(rec);
        }
        // Read, then update at the read revision; a runner's write in between
        // (counts, status) makes it `Changed` and the loop reads again.
        loop {
            let Some(entry) = self.inner.records.get(Bucket::Jobs, id).await? else {
                break;
            };
            let mut rec: JobRecord =
                serde_json::from_slice(&entry.value).map_err(|e| StoreError::Corrupt {
                    table: Bucket::Jobs.name(),
                    key: id.to_string(),
                    reason: e.to_string(),
                })?;
            if rec.status.is_terminal() {
                break;
            }
            rec.cancel_requested = true;
            let value = serde_json::to_vec(&rec).unwrap_or_default();
            match self
                .inner
                .records
                .update(Bucket::Jobs, id, value.into(), entry.rev)
                .await
            {
                Ok(_) => break,
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let shard_prefix = format!("{id}#");
        let tokens: Vec<_> = self
            .inner
            .active
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| k.as_str() == id || k.starts_with(&shard_prefix))
                    .map(|(_, a)| (a.cancel.clone(), a.finished.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (cancel, _) in &tokens {
            cancel.cancel();
        }
        // A runner abandons in-flight calls at once; committing what
        // finished and the summary takes one or two transactions.
        let all_finished =
            futures::future::join_all(tokens.iter().map(|(_, finished)| finished.cancelled()));
        let _ = tokio::time::timeout(Duration::from_secs(30), all_finished).await;
        self.load(id)
    }
}

/// Checks the input and output of a job for `who`: returns the input URI,
/// whether it is a file or a folder, and the output folder URI.
fn check_locations(
    data: &DataService,
    who: Principal<'_>,
    input_uri: &str,
    output_uri: &str,
) -> Result<(String, InputKind, String), JobError> {
    let input = who.parse(input_uri)?;
    let output = who.parse(output_uri)?;
    data.check_readable(who, &input)?;
    data.check_writable(who, &output)?;
    let kind = if input_uri.ends_with('/') || input.path.is_empty() {
        InputKind::Folder
    } else {
        match data.stat(who, &input) {
            Ok(rec) if !rec.folder => InputKind::File,
            Ok(_) | Err(DataError::NotFound(_)) => InputKind::Folder,
            Err(e) => return Err(e.into()),
        }
    };
    if kind == InputKind::Folder {
        // A folder must hold at least one file (pages may hold only folder markers).
        let mut after: Option<String> = None;
        loop {
            let (files, next) = data.list_tree(who, &input, after.as_deref(), 16)?;
            if !files.is_empty() {
                break;
            }
            match next {
                Some(n) => after = Some(n),
                None => {
                    return Err(JobError::Data(DataError::NotFound(format!(
                        "{} is neither a file nor a folder with files in it: upload the inputs first (wasmgrid data put)",
                        input.uri()
                    ))));
                }
            }
        }
    }
    let in_prefix = match kind {
        InputKind::Folder => input.folder_prefix(),
        InputKind::File => parent_prefix(&input),
    };
    let out_prefix = output.folder_prefix();
    let overlaps = match kind {
        InputKind::Folder => {
            out_prefix.starts_with(&in_prefix) || in_prefix.starts_with(&out_prefix)
        }
        InputKind::File => out_prefix == in_prefix,
    };
    let input_uri = match kind {
        InputKind::Folder => folder_uri(&input),
        InputKind::File => input.uri(),
    };
    if overlaps {
        return Err(JobError::Invalid(format!(
            "the output folder {} overlaps the input {input_uri}: outputs would overwrite inputs or become inputs; write them to a separate folder (e.g. data://{}/{}-out/)",
            folder_uri(&output),
            input.owner,
            input.collection,
        )));
    }
    Ok((input_uri, kind, folder_uri(&output)))
}

/// `data://o/c/folder/` (with the trailing slash).
fn folder_uri(p: &DataPath) -> String {
    format!("{}/", p.uri())
}

/// The store prefix of a file's folder.
fn parent_prefix(p: &DataPath) -> String {
    match p.path.rsplit_once('/') {
        Some((parent, _)) => format!("{}/{}/{parent}/", p.owner, p.collection),
        None => format!("{}/{}/", p.owner, p.collection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_resolve_with_defaults_and_ranges() {
        let s = JobOptions::default().resolve().unwrap();
        assert_eq!(
            s,
            JobSettings {
                max_concurrency: 4,
                error_threshold: -1,
                mini_batch_size: 1,
                retries: 3,
                timeout: None
            }
        );
        let bad = |o: JobOptions| o.resolve().unwrap_err().to_string();
        assert!(
            bad(JobOptions {
                max_concurrency: Some(0),
                ..Default::default()
            })
            .contains("maxConcurrency")
        );
        assert!(
            bad(JobOptions {
                error_threshold: Some(-2),
                ..Default::default()
            })
            .contains("errorThreshold")
        );
        assert!(
            bad(JobOptions {
                mini_batch_size: Some(0),
                ..Default::default()
            })
            .contains("miniBatchSize")
        );
        assert!(
            bad(JobOptions {
                retries: Some(11),
                ..Default::default()
            })
            .contains("retries")
        );
        for t in [-1.0, 0.0, 1e30, f64::NAN, f64::INFINITY, 3000.5] {
            assert!(
                bad(JobOptions {
                    timeout: Some(t),
                    ..Default::default()
                })
                .contains("timeout"),
                "{t}"
            );
        }
        assert!(
            JobOptions {
                timeout: Some(3000.0),
                ..Default::default()
            }
            .resolve()
            .is_ok()
        );
        let o: JobOptions =
            serde_json::from_str(r#"{"maxConcurrency": 2, "error_threshold": 5}"#).unwrap();
        assert_eq!((o.max_concurrency, o.error_threshold), (Some(2), Some(5)));
    }

    #[test]
    fn job_ids_sort_newest_first() {
        let a = new_job_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_job_id();
        assert!(b < a, "{b} should sort before {a}");
        assert!(valid_job_id(&a));
        assert!(!valid_job_id("job-../x"));
    }

    #[test]
    fn endpoints_split_into_owner_name_version() {
        let s = JobSpec::for_endpoint(
            "demo/score/1.2",
            "data://demo/in/",
            "data://demo/out/",
            JobOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (s.owner.as_str(), s.name.as_str(), s.version.as_deref()),
            ("demo", "score", Some("1.2"))
        );
        assert!(JobSpec::for_endpoint("score", "", "", JobOptions::default()).is_err());
    }

    #[test]
    fn shards_split_the_files_and_name_their_leases() {
        let rels: Vec<String> = (0..3000).map(|i| format!("in/part-{i:05}.csv")).collect();
        let count = 3;
        let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
        let mut sizes = [0usize; 3];
        for rel in &rels {
            let owners: Vec<&Shard> = shards.iter().filter(|s| s.has(rel)).collect();
            assert_eq!(owners.len(), 1, "{rel} is in exactly one shard");
            sizes[owners[0].index as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 800), "roughly even: {sizes:?}");
        assert!(rels.iter().all(|r| Shard::WHOLE.has(r)));
        assert_eq!(shards[0].lease("job-1"), "job/job-1");
        assert_eq!(shards[2].lease("job-1"), "job/job-1/2");
        assert_eq!(shards[0].key("job-1"), "job-1");
        assert_eq!(shards[2].key("job-1"), "job-1#2");
    }

    #[test]
    fn statuses_parse_in_any_case() {
        assert_eq!(JobStatus::parse("completed"), Some(JobStatus::Completed));
        assert_eq!(JobStatus::parse("Canceled"), Some(JobStatus::Canceled));
        assert_eq!(JobStatus::parse("done"), None);
    }
}
