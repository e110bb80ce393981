//! The runner of one job: a dispatcher paging through the input, workers
//! invoking the algorithm (at most `maxConcurrency` at once), and one committer
//! writing outputs and progress in batched transactions.
//!
//! ```text
//! dispatcher ──(chunks of mini-batches)──► worker ×N ──(results per chunk)──► committer
//!   list a page and read its small          invoke with retries;    stage small outputs,
//!   files in one pass (next page            write large outputs'    then one transaction
//!   fetched ahead), skip files with a       blobs                   per batch (JobQueue::finish):
//!   progress record                                                 outputs + progress + job counts
//! ```
//!
//! Work moves between tasks a chunk at a time (up to [`MAX_CHUNK_FILES`]
//! files): a hand-off between threads (a wake-up, a lock) costs about as much
//! as invoking `noop`, so doing it per file made a job cost twice what its
//! invocations do. The committer stages small outputs (ETag, record, change
//! event) so that, with a core to spare, the invoking workers do nothing else.
//!
//! Memory stays bounded: the dispatcher holds two listing pages (with at most
//! [`PREFETCH_BYTES`] of small files read ahead each), at most `maxConcurrency`
//! invocations run, loaded inputs are capped by [`INPUT_BUDGET`] bytes and
//! finished results waiting for the committer by [`RESULT_BUDGET`] bytes.

use super::payload::{self, InputContent, OutputContent};
use super::{
    FIRST_ERRORS, FileError, FileStatus, Inner, InputKind, JobError, JobRecord, JobSettings,
    JobStatus, MAX_INPUT_BYTES, SUMMARY_FILE, Shard, blocking,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wasmgrid_core::auth::Caller;
use wasmgrid_core::clock::now_rfc3339;
use wasmgrid_core::data::{
    Content, DataError, DataPath, DataPathRef, INLINE_MAX, Principal, StagedWrite,
};
use wasmgrid_core::invoker::Call;
use wasmgrid_core::metrics::{AlgorithmLabel, CallLabels};
use wasmgrid_core::registry::{Deployed, VersionSpec};
use wasmgrid_engine::error_kind::ErrorKind;
use wasmgrid_engine::{GuestErrorKind, InvokeError, Outcome, Payload};
use wasmgrid_store::files::{FileWrite, Written};
use wasmgrid_store::jobqueue::{FinishedFile, Recorded};
use wasmgrid_store::records::Bucket;
use wasmgrid_store::wait;
use wasmgrid_store::{Rev, StoreError};

/// Input files listed per page.
const PAGE: usize = 256;
/// Bytes of finished results (outputs held in memory) waiting to be committed.
const RESULT_BUDGET: usize = 64 << 20;
/// Bytes of loaded inputs queued for or held by the workers.
const INPUT_BUDGET: usize = 64 << 20;
/// Results committed per transaction, at most.
const COMMIT_BATCH: usize = 4096;
/// Shortest time between two commits of a run while results keep coming: one
/// transaction (and fsync) then covers many files. Longer would save CPU (a
/// commit costs about a millisecond however small), but what is gathered when
/// the last file finishes is committed after it, so it lengthens every job.
const COMMIT_INTERVAL: Duration = Duration::from_millis(25);
/// Files a worker takes from the queue at once, at most (fewer when the input
/// is short, so that every worker gets some).
const MAX_CHUNK_FILES: usize = 64;
/// Invocation time a chunk is sized to take: long enough that a hand-off per
/// chunk costs little, short enough that results (and the job's progress)
/// keep flowing and workers finish together. Chunks of slow algorithms are one
/// mini-batch.
const CHUNK_WORK: Duration = Duration::from_micros(500);
/// How long a worker runs invocations that finish without waiting before it
/// lets other tasks of its thread run.
const YIELD_EVERY: Duration = Duration::from_micros(100);
/// Bytes of small input files read ahead per listing page.
const PREFETCH_BYTES: u64 = 8 << 20;

/// Why a run stopped early.
#[derive(Debug, Clone)]
enum StopReason {
    /// Cancel requested.
    Canceled,
    /// The server is shutting down: leave the job for the next start.
    Shutdown,
    /// Too many files failed.
    Threshold(String),
    /// The job cannot go on (storage, listing, a worker died).
    Failure(String),
}

/// The first reason to stop, and a token every part of the run watches.
#[derive(Default)]
struct Stop {
    reason: Mutex<Option<StopReason>>,
    abort: CancellationToken,
}

impl Stop {
    fn set(&self, reason: StopReason) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some(reason);
        }
        self.abort.cancel();
    }

    fn reason(&self) -> Option<StopReason> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

/// One input file of the run.
#[derive(Debug, Clone)]
struct InputFile {
    /// Where it is (owns its store key).
    path: DataPathRef<'static>,
    /// Where, in the store key, its path relative to the input folder (the
    /// key of its progress record) starts.
    rel_start: usize,
}

impl InputFile {
    /// Its path relative to the input folder.
    fn rel(&self) -> &str {
        &self.path.key()[self.rel_start..]
    }
}

/// A file's output on its way to the committer.
struct Output {
    /// Path relative to the output folder.
    output_rel: String,
    /// The write.
    write: OutputWrite,
}

/// An output's write, staged by the worker or to be staged by the committer.
enum OutputWrite {
    /// A small output: the committer stages it (checks, ETag, record and event
    /// encoding) just before its transaction, so that with spare cores this
    /// work is off the invoking worker's path.
    Small {
        content_type: String,
        body: bytes::Bytes,
    },
    /// A large output, its blob already written by the worker (on a blocking
    /// thread), or a small one the committer has staged.
    Staged(Box<StagedWrite>),
}

impl Output {
    /// Bytes it holds in memory until committed.
    fn held_bytes(&self) -> usize {
        match &self.write {
            OutputWrite::Small { body, .. } => body.len(),
            OutputWrite::Staged(w) if w.record().blob.is_none() => w.record().size as usize,
            OutputWrite::Staged(_) => 0,
        }
    }
}

/// Why a file failed: the class (recorded as the API's error_type) and a message.
#[derive(Debug, Clone)]
struct Failure {
    kind: ErrorKind,
    message: String,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    fn data(e: &DataError) -> Failure {
        Failure::new(e.kind(), e.to_string())
    }

    fn invoke(e: &InvokeError) -> Failure {
        Failure::new(e.kind(), e.to_string())
    }
}

/// An input file as the dispatcher hands it to a worker.
type Input = (InputFile, Result<Loaded, Failure>);

/// A finished file, on its way to the committer.
struct Done {
    file: InputFile,
    attempts: u32,
    outcome: Result<Output, Failure>,
}

/// Finished files: those of one chunk, or several merged for a commit.
struct DoneChunk {
    files: Vec<Done>,
    /// Holds their share of [`RESULT_BUDGET`] until committed.
    budget: Option<OwnedSemaphorePermit>,
}

impl DoneChunk {
    /// Takes in `other`'s files and budget.
    fn merge(&mut self, mut other: DoneChunk) {
        self.files.append(&mut other.files);
        match (&mut self.budget, other.budget.take()) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

/// An input's content type and bytes.
struct Body {
    content_type: String,
    body: bytes::Bytes,
}

/// An input file loaded by the dispatcher.
enum Loaded {
    /// Content in memory.
    Ready(Body),
    /// A large file: the worker reads the open blob.
    Blob {
        content_type: String,
        content: Content,
    },
}

/// What every worker of a run shares.
struct RunCtx {
    inner: Arc<Inner>,
    job_id: String,
    run: u32,
    /// The part of the input this runner works on.
    shard: Shard,
    caller: Caller,
    deployed: Arc<Deployed>,
    endpoint: String,
    settings: JobSettings,
    input: DataPath,
    input_kind: InputKind,
    output: DataPath,
    budget: Arc<Semaphore>,
    input_budget: Arc<Semaphore>,
    /// Metric handles for successful calls, looked up once per run.
    calls_ok: prometheus_client::metrics::counter::Counter,
    call_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Moving average of an invocation's time in nanoseconds (0: none yet),
    /// which sizes the chunks.
    call_nanos: std::sync::atomic::AtomicU64,
}

impl RunCtx {
    fn who(&self) -> Principal<'_> {
        Principal::Key(&self.caller)
    }

    /// Counts an invocation's time into the average.
    fn observe_call(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let took = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.call_nanos.load(Relaxed);
        let new = if old == 0 {
            took.max(1)
        } else {
            (old - old / 8 + took / 8).max(1)
        };
        self.call_nanos.store(new, Relaxed);
    }

    /// Mini-batches per chunk: about [`CHUNK_WORK`] of invocations, at most
    /// `most_files` files; one until an invocation has been timed.
    fn chunk_batches(&self, per_batch: usize, most_files: usize) -> usize {
        let nanos = self.call_nanos.load(std::sync::atomic::Ordering::Relaxed);
        if nanos == 0 {
            return 1;
        }
        let by_time = (CHUNK_WORK.as_nanos() as u64 / nanos) as usize;
        by_time.min(most_files / per_batch).max(1)
    }

    fn output_path(&self, rel: &str) -> Result<DataPath, DataError> {
        let path = if self.output.path.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.output.path)
        };
        DataPath::new(&self.output.owner, &self.output.collection, &path)
    }

    /// An input file at `path`, with its path relative to the input.
    fn input_file(&self, path: DataPathRef<'static>) -> InputFile {
        let in_collection = path.key().len() - path.path().len();
        let rel = match self.input_kind {
            InputKind::File => path.path().rfind('/').map_or(0, |i| i + 1),
            InputKind::Folder if self.input.path.is_empty() => 0,
            InputKind::Folder => path
                .path()
                .strip_prefix(self.input.path.as_str())
                .filter(|rest| rest.starts_with('/'))
                .map_or(0, |_| self.input.path.len() + 1),
        };
        InputFile {
            rel_start: in_collection + rel,
            path,
        }
    }
}

fn corrupt(key: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table: Bucket::Jobs.name(),
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// Job `id`'s record and its revision. Blocking (a short read the embedded
/// backend answers inline): call from a blocking thread.
fn read_job(inner: &Inner, id: &str) -> Result<(JobRecord, Rev), JobError> {
    let entry = wait(inner.records.get(Bucket::Jobs, id))?.ok_or_else(|| super::not_found(id))?;
    let rec = serde_json::from_slice(&entry.value).map_err(|e| corrupt(id, e))?;
    Ok((rec, entry.rev))
}

/// Applies `change` to job `id`'s record and writes it at the revision read;
/// reads and applies again after a concurrent write (a cancel request).
/// Blocking: call from a blocking thread.
fn update_job(
    inner: &Inner,
    id: &str,
    change: impl Fn(&mut JobRecord),
) -> Result<JobRecord, JobError> {
    let _serial = inner.record_lock(id);
    loop {
        let (mut rec, rev) = read_job(inner, id)?;
        change(&mut rec);
        let value = serde_json::to_vec(&rec).map_err(|e| corrupt(id, e))?;
        match wait(inner.records.update(Bucket::Jobs, id, value.into(), rev)) {
            Ok(_) => return Ok(rec),
            Err(StoreError::Changed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs job `id` to its end (or until `halt`: shutdown, or in a cluster the
/// loss of the job's lease), then tells the observer.
pub(super) async fn run(
    inner: Arc<Inner>,
    id: String,
    shard: Shard,
    cancel: CancellationToken,
    finished: CancellationToken,
    halt: CancellationToken,
) {
    let ended = match run_job(&inner, &id, shard, &cancel, &halt).await {
        Ok(ended) => ended,
        Err(e) if halt.is_cancelled() => {
            tracing::warn!(job = %id, error = %e, "job runner stopped by shutdown");
            None
        }
        Err(e) => {
            tracing::error!(job = %id, error = %e, "job runner failed");
            let message = format!("the job could not continue: {e}");
            match finish_once(&inner, &id, shard, JobStatus::Failed, Some(message)).await {
                Ok(rec) => rec,
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "cannot record the job's failure; it resumes at the next start");
                    None
                }
            }
        }
    };
    if let Some(rec) = ended {
        tracing::info!(job = %id, status = ?rec.status, succeeded = rec.counts.succeeded, failed = rec.counts.failed, "job ended");
        let inner2 = inner.clone();
        let _ = tokio::task::spawn_blocking(move || notify(&inner2, rec)).await;
    }
    if let Ok(mut active) = inner.active.lock() {
        active.remove(&shard.key(&id));
    }
    finished.cancel();
}

/// Ends the job, unless it has shards and another shard's runner ended it
/// already (`None`: nothing to announce here).
async fn finish_once(
    inner: &Arc<Inner>,
    id: &str,
    shard: Shard,
    status: JobStatus,
    message: Option<String>,
) -> Result<Option<JobRecord>, JobError> {
    if shard.count == 1 {
        return finish(inner, id, status, message, None).await;
    }
    // This node's shards end the job one at a time (the first wins; the
    // record update refuses a second end from another node).
    let serial = inner.end_lock(id).await;
    let (inner2, id2) = (inner.clone(), id.to_string());
    let ending = blocking(move || {
        let (rec, _) = read_job(&inner2, &id2)?;
        if rec.status.is_terminal() {
            return Ok::<_, JobError>(None);
        }
        Ok(Some(count_finished(&inner2, &id2)?))
    });
    let Some(counted) = ending.await? else {
        return Ok(None);
    };
    let ended = finish(inner, id, status, message, Some(counted)).await;
    drop(serial);
    ended
}

/// The job's succeeded and failed files, counted from their progress
/// records. Shards on several nodes update the job record's counts at once,
/// and on a clustered NATS stream before 2.9.21 two updates from one
/// revision may both succeed (STORAGE.md rule 3), losing an increment; the
/// progress records are create-once, so the final counts come from them.
fn count_finished(inner: &Inner, id: &str) -> Result<(u64, u64), JobError> {
    let (mut succeeded, mut failed) = (0, 0);
    let mut after: Option<String> = None;
    loop {
        // Large pages: a NATS page lists the job's keys once per page.
        let page = wait(inner.queue.list_progress(id, after.as_deref(), 10_000))?;
        for (_, bytes) in &page.items {
            match serde_json::from_slice::<super::FileProgress>(bytes).map(|p| p.status) {
                Ok(FileStatus::Succeeded) => succeeded += 1,
                Ok(FileStatus::Failed) => failed += 1,
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "unreadable file progress not counted")
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((succeeded, failed)),
        }
    }
}

/// Records that `shard` of the job finished all its files, then ends the
/// job if every shard has (`None`: other shards still run).
async fn shard_done(
    inner: &Arc<Inner>,
    id: &str,
    shard: Shard,
) -> Result<Option<JobRecord>, JobError> {
    if shard.count > 1 {
        let (inner2, id2) = (inner.clone(), id.to_string());
        let rec = blocking(move || {
            let (rec, _) = read_job(&inner2, &id2)?;
            if rec.shards_done.contains(&shard.index) {
                return Ok(rec);
            }
            update_job(&inner2, &id2, |r| {
                if !r.shards_done.contains(&shard.index) {
                    r.shards_done.push(shard.index);
                }
            })
        })
        .await?;
        if !(0..shard.count).all(|i| rec.shards_done.contains(&i)) {
            return Ok(None);
        }
    }
    finish_once(inner, id, shard, JobStatus::Completed, None).await
}

/// Tells the observer that a job ended, then records that it was told.
pub(super) fn notify(inner: &Inner, rec: JobRecord) {
    if let Some(o) = &inner.observer {
        o.job_ended(&rec);
    }
    if let Err(e) = update_job(inner, &rec.id, |r| r.notified = true) {
        tracing::warn!(job = %rec.id, error = %e, "cannot record that the job's end was announced; it is announced again at the next start");
    }
}

/// The run itself: `Ok(Some(job))` when the job ended, `Ok(None)` when the
/// runner stopped for `halt` (the job resumes at the next start, or on
/// another node).
async fn run_job(
    inner: &Arc<Inner>,
    id: &str,
    shard: Shard,
    cancel: &CancellationToken,
    halt: &CancellationToken,
) -> Result<Option<JobRecord>, JobError> {
    let _slot = tokio::select! {
        biased;
        _ = halt.cancelled() => return Ok(None),
        _ = cancel.cancelled() => {
            return finish_once(inner, id, shard, JobStatus::Canceled, Some("canceled while queued".into())).await;
        }
        slot = inner.job_slot(id) => {
            slot.map_err(|_| JobError::Unavailable("the job service is closed".into()))?
        }
    };
    let rec = {
        let (inner, id) = (inner.clone(), id.to_string());
        blocking(move || read_job(&inner, &id).map(|(rec, _)| rec)).await?
    };
    if rec.status.is_terminal() {
        return Ok(None);
    }
    if rec.shards_done.contains(&shard.index) {
        // Finished by an earlier runner that died before the job ended.
        return shard_done(inner, id, shard).await;
    }
    if rec.cancel_requested || cancel.is_cancelled() {
        return finish_once(
            inner,
            id,
            shard,
            JobStatus::Canceled,
            Some("canceled by request".into()),
        )
        .await;
    }

    // The job runs the version resolved at submission, even if newer ones appear.
    let (owner, name) = rec
        .algorithm
        .split_once('/')
        .unwrap_or((&rec.algorithm, ""));
    let deployed = semver::Version::parse(&rec.version)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            inner
                .invoker
                .resolve(owner, name, &VersionSpec::Exact(v))
                .map_err(|e| e.to_string())
        });
    let deployed = match deployed {
        Ok(d) => d,
        Err(e) => {
            let message = format!(
                "{}/{} cannot run: {e} (was the version deleted? submit the job again)",
                rec.algorithm, rec.version
            );
            return finish_once(inner, id, shard, JobStatus::Failed, Some(message)).await;
        }
    };

    let caller = rec.submitter.caller();
    let input = Principal::Key(&caller).parse(&rec.input)?;
    let output = Principal::Key(&caller).parse(&rec.output)?;
    let started = {
        let (inner, id, caller, input) =
            (inner.clone(), id.to_string(), caller.clone(), input.clone());
        let kind = rec.input_kind;
        blocking(move || start_run(&inner, &id, shard, &caller, &input, kind)).await
    };
    let run_no = match started {
        Ok(Some(n)) => n,
        // Another shard's runner ended the job meanwhile.
        Ok(None) => return Ok(None),
        Err(JobError::Data(e)) => {
            let message = format!("cannot list the input {}: {e}", rec.input);
            return finish_once(inner, id, shard, JobStatus::Failed, Some(message)).await;
        }
        Err(e) => return Err(e),
    };
    let deployed_endpoint = deployed.endpoint();
    let ctx = Arc::new(RunCtx {
        inner: inner.clone(),
        job_id: id.to_string(),
        run: run_no,
        shard,
        endpoint: deployed.endpoint(),
        deployed,
        settings: rec.settings.clone(),
        input,
        input_kind: rec.input_kind,
        output,
        calls_ok: inner.metrics.invocations.get_or_create_owned(&CallLabels {
            algorithm: deployed_endpoint.clone(),
            outcome: "ok".into(),
        }),
        call_seconds: inner
            .metrics
            .invocation_seconds
            .get_or_create_owned(&AlgorithmLabel {
                algorithm: deployed_endpoint,
            }),
        caller,
        call_nanos: Default::default(),
        budget: Arc::new(Semaphore::new(RESULT_BUDGET)),
        input_budget: Arc::new(Semaphore::new(INPUT_BUDGET)),
    });

    let stop = Arc::new(Stop::default());
    let watcher = {
        let stop = stop.clone();
        let cancel = cancel.clone();
        let shutdown = halt.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => stop.set(StopReason::Canceled),
                _ = shutdown.cancelled() => stop.set(StopReason::Shutdown),
                _ = stop.abort.cancelled() => {}
            }
        })
    };
    process_all(&ctx, &stop).await;
    watcher.abort();

    match stop.reason() {
        None => shard_done(inner, id, shard).await,
        Some(StopReason::Canceled) => {
            finish_once(
                inner,
                id,
                shard,
                JobStatus::Canceled,
                Some("canceled by request".into()),
            )
            .await
        }
        Some(StopReason::Threshold(m)) | Some(StopReason::Failure(m)) => {
            finish_once(inner, id, shard, JobStatus::Failed, Some(m)).await
        }
        Some(StopReason::Shutdown) => Ok(None),
    }
}

/// Marks the job `Running` for a new run, with the input counted; returns the
/// run number, the shard's own in a cluster (`None`: the job ended
/// meanwhile, through another shard).
fn start_run(
    inner: &Inner,
    job_id: &str,
    shard: Shard,
    caller: &Caller,
    input: &DataPath,
    kind: InputKind,
) -> Result<Option<u32>, JobError> {
    let total = match kind {
        InputKind::File => 1,
        InputKind::Folder => inner.data.count_tree(Principal::Key(caller), input)?,
    };
    let rec = update_job(inner, job_id, |rec| {
        if rec.status.is_terminal() {
            return;
        }
        rec.status = JobStatus::Running;
        if shard.count > 1 {
            let k = shard.index as usize;
            if rec.shard_runs.len() <= k {
                rec.shard_runs.resize(k + 1, 0);
            }
            rec.shard_runs[k] += 1;
            rec.runs = rec.runs.max(rec.shard_runs[k]);
        } else {
            rec.runs += 1;
        }
        if rec.started.is_none() {
            rec.started = Some(now_rfc3339());
        }
        // Files finished in earlier runs stay counted even if they are gone now.
        rec.counts.total = total.max(rec.counts.succeeded + rec.counts.failed);
        rec.counts.recompute_pending();
    })?;
    if rec.status.is_terminal() {
        return Ok(None);
    }
    let run = match rec.shard_runs.get(shard.index as usize) {
        Some(&n) if shard.count > 1 => n,
        _ => rec.runs,
    };
    Ok(Some(run))
}

/// Dispatches every pending input file and commits the results; returns when
/// all are done or the run was stopped (see `stop`).
async fn process_all(ctx: &Arc<RunCtx>, stop: &Arc<Stop>) {
    let total = ctx
        .settings
        .max_concurrency
        .min(ctx.deployed.record.settings.concurrency)
        .max(1);
    // A shard's part of the job's concurrency (the first shards take the
    // remainder), so the cluster runs at most `total` calls of the job.
    let (count, index) = (ctx.shard.count.max(1), ctx.shard.index);
    let concurrency = (total / count + u32::from(index < total % count)).max(1) as usize;
    let (tx, rx) = mpsc::unbounded_channel::<DoneChunk>();
    // Cancelled once every worker is done: the last results commit at once.
    let workers_done = CancellationToken::new();
    let committer = tokio::spawn(commit_loop(
        ctx.clone(),
        rx,
        stop.clone(),
        workers_done.clone(),
    ));
    // `concurrency` workers take chunks of loaded mini-batches from a short
    // queue: at most that many invocations run, and the dispatcher reads ahead
    // while they do.
    let (work_tx, work_rx) = mpsc::channel::<Work>(2 * concurrency + 2);
    let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (ctx, work_rx, tx) = (ctx.clone(), work_rx.clone(), tx.clone());
        workers.spawn(async move {
            loop {
                let work = work_rx.lock().await.recv().await;
                let Some(work) = work else { return };
                let chunk = process_chunk(&ctx, work).await;
                // The committer outlives every worker; a send fails only if it died.
                let _ = tx.send(chunk);
            }
        });
    }
    drop(tx);

    let per_batch = ctx.settings.mini_batch_size.max(1) as usize;
    // Enough chunks per page that every worker gets some.
    let most_files = (PAGE / (2 * concurrency)).clamp(1, MAX_CHUNK_FILES);
    let mut chunk: Vec<Vec<Pending>> = Vec::new();
    let mut batch: Vec<Pending> = Vec::with_capacity(per_batch);
    // The next page is listed (and its small files read) while this one is
    // dispatched, so the workers never wait for a listing.
    let fetch = |after: Option<String>| {
        let ctx = ctx.clone();
        tokio::spawn(blocking(move || next_page(&ctx, after)))
    };
    let mut upcoming = Some(fetch(None));
    'listing: while let Some(fetching) = upcoming.take() {
        if stop.abort.is_cancelled() {
            break;
        }
        let page = fetching
            .await
            .unwrap_or_else(|e| Err(JobError::Unavailable(format!("listing task failed: {e}"))));
        let (files, next) = match page {
            Ok(p) => p,
            Err(e) => {
                stop.set(StopReason::Failure(format!(
                    "listing the input {} failed: {e}",
                    ctx.input.uri()
                )));
                break;
            }
        };
        upcoming = next.map(|n| fetch(Some(n)));
        for f in files {
            batch.push(f);
            if batch.len() >= per_batch {
                chunk.push(std::mem::replace(&mut batch, Vec::with_capacity(per_batch)));
                if chunk.len() >= ctx.chunk_batches(per_batch, most_files)
                    && !dispatch(ctx, &work_tx, stop, std::mem::take(&mut chunk)).await
                {
                    break 'listing;
                }
            }
        }
    }
    if let Some(fetching) = upcoming {
        fetching.abort();
    }
    if !batch.is_empty() {
        chunk.push(batch);
    }
    if !chunk.is_empty() && !stop.abort.is_cancelled() {
        dispatch(ctx, &work_tx, stop, chunk).await;
    }
    // Workers end once the queue is empty and closed.
    drop(work_tx);
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Err(e)) if e.is_panic() => {
                    stop.set(StopReason::Failure("a job worker crashed (a bug): see the server log".into()));
                }
                Some(_) => {}
            },
            _ = stop.abort.cancelled() => {
                // Abandon in-flight invocations; their files run again if the
                // job is resumed.
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                break;
            }
        }
    }
    workers_done.cancel();
    if let Err(e) = committer.await {
        stop.set(StopReason::Failure(format!(
            "the job committer failed: {e}"
        )));
    }
}

/// A chunk of mini-batches with their inputs loaded, for one worker.
struct Work {
    batches: Vec<Vec<Input>>,
    /// Its share of [`INPUT_BUDGET`], released when the worker is done with it.
    _budget: OwnedSemaphorePermit,
}

/// Loads a chunk's inputs (those not prefetched) and queues it for the
/// workers once the input budget allows; `false` if the run was stopped
/// meanwhile.
async fn dispatch(
    ctx: &Arc<RunCtx>,
    work_tx: &mpsc::Sender<Work>,
    stop: &Stop,
    chunk: Vec<Vec<Pending>>,
) -> bool {
    let batches: Vec<Vec<Input>> = chunk
        .into_iter()
        .map(|files| {
            files
                .into_iter()
                .map(|(f, prefetched)| {
                    let l = prefetched.unwrap_or_else(|| load_input(ctx, &f));
                    (f, l)
                })
                .collect()
        })
        .collect();
    let bytes: usize = batches
        .iter()
        .flatten()
        .map(|(_, l)| match l {
            Ok(Loaded::Ready(c)) => c.body.len(),
            _ => 0,
        })
        .sum();
    let budget = tokio::select! {
        p = ctx.input_budget.clone().acquire_many_owned(bytes.clamp(1, INPUT_BUDGET) as u32) => match p {
            Ok(p) => p,
            Err(_) => return false,
        },
        _ = stop.abort.cancelled() => return false,
    };
    let work = Work {
        batches,
        _budget: budget,
    };
    tokio::select! {
        sent = work_tx.send(work) => sent.is_ok(),
        _ = stop.abort.cancelled() => false,
    }
}

/// An input file with its content when the dispatcher prefetched it.
type Pending = (InputFile, Option<Result<Loaded, Failure>>);

/// The next page of input files not yet finished (small ones with their
/// content, read with the listing from one snapshot up to [`PREFETCH_BYTES`]),
/// and where the page after starts.
fn next_page(
    ctx: &RunCtx,
    after: Option<String>,
) -> Result<(Vec<Pending>, Option<String>), JobError> {
    let (files, next): (Vec<Pending>, _) = match ctx.input_kind {
        InputKind::File => {
            if after.is_some() {
                return Ok((Vec::new(), None));
            }
            (vec![(ctx.input_file(ctx.input.view()), None)], None)
        }
        InputKind::Folder => {
            // A shard reads its own files' content when it dispatches them
            // (read ahead here, most would belong to other shards).
            let prefetch = if ctx.shard.count > 1 {
                0
            } else {
                PREFETCH_BYTES
            };
            let (files, next) = ctx.inner.data.list_tree_with_content(
                ctx.who(),
                &ctx.input,
                after.as_deref(),
                PAGE,
                prefetch,
                MAX_INPUT_BYTES,
            )?;
            let files = files
                .into_iter()
                .map(|f| {
                    let loaded = f.content.map(|r| {
                        r.map(|(content_type, content)| loaded(content_type, content))
                            .map_err(|e| Failure::data(&e))
                    });
                    (ctx.input_file(f.path), loaded)
                })
                .filter(|(f, _)| ctx.shard.has(f.rel()))
                .collect();
            (files, next)
        }
    };
    // Runs after the first skip the files an earlier run finished (the first
    // run starts durably before it processes anything, so it has none).
    // (A shard other than the first may start after the first's run began.)
    if ctx.run <= 1 && ctx.shard.count == 1 {
        return Ok((files, next));
    }
    let rels: Vec<&str> = files.iter().map(|(f, _)| f.rel()).collect();
    let done = wait(ctx.inner.queue.finished(&ctx.job_id, &rels))?;
    let pending = files
        .into_iter()
        .zip(done)
        .filter(|(_, done)| !done)
        .map(|(f, _)| f)
        .collect();
    Ok((pending, next))
}

/// Failures that may pass on their own: worth another attempt.
fn retryable(e: &InvokeError) -> bool {
    matches!(
        e,
        InvokeError::Guest {
            kind: GuestErrorKind::Transient,
            ..
        } | InvokeError::Timeout { .. }
            | InvokeError::Overloaded(_)
            | InvokeError::Host(_)
    )
}

/// Calls the algorithm, retrying retryable failures with exponential backoff.
/// Returns the last result and the number of attempts.
async fn invoke(ctx: &RunCtx, input: Payload) -> (Result<Outcome, InvokeError>, u32) {
    // `try_`: a job stored before timeouts were range-checked must not panic
    // the worker; an unusable value means the version's own timeout.
    let timeout = ctx
        .settings
        .timeout
        .and_then(|t| Duration::try_from_secs_f64(t).ok());
    let metrics = &ctx.inner.metrics;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        // Counted in flight, and `Canceled` if the worker is abandoned
        // mid-call; outcomes are counted below, with the run's handles.
        let started = std::time::Instant::now();
        let result = ctx
            .inner
            .invoker
            .call_counting_outcome_elsewhere(Call {
                // What the guest writes or publishes is caused by the job too.
                hops: ctx.caller.hops,
                ..Call::new(&ctx.deployed, input.clone(), timeout)
            })
            .await;
        ctx.observe_call(started.elapsed());
        match &result {
            Ok(o) => {
                ctx.calls_ok.inc();
                ctx.call_seconds.observe(o.duration.as_secs_f64());
            }
            Err(e) => {
                metrics
                    .invocations
                    .get_or_create(&CallLabels {
                        algorithm: ctx.endpoint.clone(),
                        outcome: e.kind().as_str().to_string(),
                    })
                    .inc();
            }
        }
        match result {
            Err(e) if retryable(&e) && attempts <= ctx.settings.retries => {
                let cfg = &ctx.inner.config;
                let exp = cfg
                    .backoff
                    .saturating_mul(1u32 << (attempts - 1).min(16))
                    .min(cfg.max_backoff);
                // ±50% jitter, so files that failed together do not retry together.
                let delay = exp.mul_f64(0.5 + rand::random::<f64>());
                tracing::debug!(job = %ctx.job_id, attempt = attempts, ?delay, error = %e, "retrying");
                tokio::time::sleep(delay).await;
            }
            other => return (other, attempts),
        }
    }
}

/// Reads an input file for the submitter: small files at once (one snapshot
/// read), large ones as an open blob for the worker to read.
fn load_input(ctx: &RunCtx, f: &InputFile) -> Result<Loaded, Failure> {
    let (content_type, content) = ctx
        .inner
        .data
        .read_for_guest(ctx.who(), &f.path, MAX_INPUT_BYTES)
        .map_err(|e| Failure::data(&e))?;
    Ok(loaded(content_type, content))
}

fn loaded(content_type: String, content: Content) -> Loaded {
    match content {
        Content::Inline(body) => Loaded::Ready(Body { content_type, body }),
        blob @ Content::Blob { .. } => Loaded::Blob {
            content_type,
            content: blob,
        },
    }
}

/// The content of a loaded input `f` (a large one read from its blob).
async fn content(f: &InputFile, loaded: Loaded) -> Result<Body, Failure> {
    match loaded {
        Loaded::Ready(c) => Ok(c),
        Loaded::Blob {
            content_type,
            content,
        } => {
            let body = content.into_bytes().await.map_err(|e| {
                Failure::new(
                    ErrorKind::InternalError,
                    format!("reading {}: {e}", f.path.uri()),
                )
            })?;
            Ok(Body { content_type, body })
        }
    }
}

/// The output of one file, staged: small ones here, large ones on a blocking
/// thread (their blob is written then).
async fn output(
    ctx: &RunCtx,
    f: &InputFile,
    input_type: &str,
    out: OutputContent,
) -> Result<Output, Failure> {
    let output_rel = payload::output_name(f.rel(), input_type, &out.content_type);
    if out.body.len() <= INLINE_MAX {
        return Ok(Output {
            output_rel,
            write: OutputWrite::Small {
                content_type: out.content_type,
                body: out.body,
            },
        });
    }
    let fail = |e: DataError| Failure::data(&e);
    let path = ctx.output_path(&output_rel).map_err(fail)?;
    let data = ctx.inner.data.clone();
    let caller = ctx.caller.clone();
    let write = tokio::task::spawn_blocking(move || {
        data.stage_write(Principal::Key(&caller), &path, &out.content_type, out.body)
    })
    .await
    .map_err(|e| Failure::new(ErrorKind::InternalError, format!("writer failed: {e}")))?
    .map_err(fail)?;
    Ok(Output {
        output_rel,
        write: OutputWrite::Staged(Box::new(write)),
    })
}

/// Processes a chunk of mini-batches in turn; every file comes back as a
/// [`Done`], and the chunk holds their share of the result budget.
async fn process_chunk(ctx: &RunCtx, work: Work) -> DoneChunk {
    let files = work.batches.iter().map(Vec::len).sum();
    let mut done = Vec::with_capacity(files);
    let mut ran_since = std::time::Instant::now();
    for batch in work.batches {
        // A fast invocation completes without returning `Pending`, so a chunk
        // would hold its thread throughout: let the thread's other tasks (the
        // API, the dispatcher) in now and then. Not after every file: a yield
        // costs a poll of the I/O driver.
        if ran_since.elapsed() >= YIELD_EVERY {
            tokio::task::yield_now().await;
            ran_since = std::time::Instant::now();
        }
        process(ctx, batch, &mut done).await;
    }
    drop(work._budget);
    // Small outputs are held in memory until committed.
    let cost: usize = done
        .iter()
        .map(|d| d.outcome.as_ref().map_or(0, Output::held_bytes).max(1024))
        .sum();
    let budget = ctx
        .budget
        .clone()
        .acquire_many_owned(cost.clamp(1024, RESULT_BUDGET) as u32)
        .await
        .ok();
    DoneChunk {
        files: done,
        budget,
    }
}

/// Processes one mini-batch: invoke, then stage the outputs. Every file is
/// added to `done`.
async fn process(ctx: &RunCtx, files: Vec<Input>, done: &mut Vec<Done>) {
    let finished = |file, attempts, outcome| Done {
        file,
        attempts,
        outcome,
    };
    let mut inputs = Vec::with_capacity(files.len());
    for (f, loaded) in files {
        let loaded = match loaded {
            Ok(l) => content(&f, l).await,
            Err(e) => Err(e),
        };
        match loaded {
            Ok(c) => inputs.push((f, c)),
            Err(e) => done.push(finished(f, 0, Err(e))),
        }
    }
    if !inputs.is_empty() {
        let total: u64 = inputs.iter().map(|(_, c)| c.body.len() as u64).sum();
        if total > MAX_INPUT_BYTES {
            let message = format!(
                "the input of one invocation is {total} bytes, more than the limit of {} MiB; use a smaller miniBatchSize or smaller files",
                MAX_INPUT_BYTES >> 20
            );
            for (f, _) in inputs {
                let failure = Failure::new(ErrorKind::PayloadTooLarge, message.clone());
                done.push(finished(f, 0, Err(failure)));
            }
        } else if inputs.len() == 1 {
            let (f, content) = inputs.remove(0);
            let (result, attempts) = invoke(
                ctx,
                payload::single(&content.content_type, content.body.clone()),
            )
            .await;
            let outcome = match result {
                Ok(o) => {
                    output(
                        ctx,
                        &f,
                        &content.content_type,
                        OutputContent {
                            content_type: o.output.content_type,
                            body: o.output.body,
                        },
                    )
                    .await
                }
                Err(e) => Err(Failure::invoke(&e)),
            };
            done.push(finished(f, attempts, outcome));
        } else {
            let contents: Vec<InputContent> = inputs
                .iter()
                .map(|(f, c)| InputContent {
                    uri: f.path.uri(),
                    content_type: c.content_type.clone(),
                    body: c.body.clone(),
                })
                .collect();
            let (result, attempts) = invoke(ctx, payload::mini_batch(&contents)).await;
            let split = match result {
                Ok(o) => payload::split_mini_batch(&o.output, inputs.len())
                    .map_err(|m| Failure::new(ErrorKind::AlgorithmError, m)),
                Err(e) => Err(Failure::invoke(&e)),
            };
            match split {
                Ok(outputs) => {
                    for ((f, content), out) in inputs.into_iter().zip(outputs) {
                        let o = output(ctx, &f, &content.content_type, out).await;
                        done.push(finished(f, attempts, o));
                    }
                }
                Err(e) => {
                    for (f, _) in inputs {
                        done.push(finished(f, attempts, Err(e.clone())));
                    }
                }
            }
        }
    }
}

/// Commits finished files in batches (one transaction each) until every worker
/// is gone; stops the run when the error threshold is exceeded.
async fn commit_loop(
    ctx: Arc<RunCtx>,
    mut rx: mpsc::UnboundedReceiver<DoneChunk>,
    stop: Arc<Stop>,
    workers_done: CancellationToken,
) {
    let mut failed_storage = false;
    let mut last_commit: Option<tokio::time::Instant> = None;
    loop {
        let Some(mut batch) = rx.recv().await else {
            return;
        };
        // Under a steady stream, let results gather (without waking for each)
        // so that one transaction covers many files; after a pause, a result
        // commits at once.
        if let Some(last) = last_commit
            && batch.files.len() < COMMIT_BATCH
        {
            tokio::select! {
                _ = tokio::time::sleep_until(last + COMMIT_INTERVAL) => {}
                _ = workers_done.cancelled() => {}
            }
            while batch.files.len() < COMMIT_BATCH {
                match rx.try_recv() {
                    Ok(chunk) => batch.merge(chunk),
                    Err(_) => break,
                }
            }
        }
        last_commit = Some(tokio::time::Instant::now());
        if failed_storage {
            discard(&ctx, batch);
            continue;
        }
        let committed = {
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || commit_batch(&ctx, batch)).await
        };
        match committed {
            Ok(Ok(rec)) if rec.status.is_terminal() => {
                // Another shard's runner ended the job (its threshold, or a
                // cancel): stop without ending it again.
                stop.set(StopReason::Shutdown);
            }
            Ok(Ok(JobRecord { counts, .. })) => {
                let threshold = ctx.settings.error_threshold;
                if threshold >= 0 && counts.failed > threshold as u64 {
                    stop.set(StopReason::Threshold(format!(
                        "{} files failed, more than errorThreshold={threshold}; the first errors are listed in `errors` (all: GET /v1/jobs/{}/files?status=failed)",
                        counts.failed, ctx.job_id
                    )));
                }
            }
            Ok(Err(e)) => {
                failed_storage = true;
                stop.set(StopReason::Failure(format!(
                    "recording finished files failed: {e}"
                )));
            }
            Err(e) => {
                failed_storage = true;
                stop.set(StopReason::Failure(format!(
                    "the job committer failed: {e}"
                )));
            }
        }
    }
}

fn discard(ctx: &RunCtx, batch: DoneChunk) {
    for d in batch.files {
        if let Ok(Output {
            write: OutputWrite::Staged(write),
            ..
        }) = d.outcome
        {
            ctx.inner.data.discard(*write);
        }
    }
}

/// A finished file as the job record sees it, while the store records it.
struct Settled {
    file: InputFile,
    /// Invocations it took.
    attempts: u32,
    /// Its output's path relative to the output folder, if it has one.
    output_rel: Option<String>,
    /// Why it failed, if it did.
    failure: Option<Failure>,
}

/// Records a batch of finished files in one JobQueue step: every output,
/// every file's progress record, and the job's counts and first errors.
/// Returns the job's counts after it. Blocking.
fn commit_batch(ctx: &RunCtx, mut batch: DoneChunk) -> Result<JobRecord, JobError> {
    for d in &mut batch.files {
        stage_small_output(ctx, d);
    }
    // Every file's progress record in one buffer (no allocation per file);
    // `FinishedFile` borrows its slice and its path from `settled`.
    let mut progress = Vec::with_capacity(batch.files.len() * 96);
    let mut ends = Vec::with_capacity(batch.files.len());
    let mut outputs = Vec::with_capacity(batch.files.len());
    let mut settled = Vec::with_capacity(batch.files.len());
    for d in batch.files.drain(..) {
        let (output, output_rel, failure) = match d.outcome {
            Ok(Output {
                output_rel,
                write: OutputWrite::Staged(write),
            }) => {
                progress_json(&mut progress, ctx, d.attempts, Ok(&output_rel));
                (Some(write.into_file_write()), Some(output_rel), None)
            }
            Ok(Output {
                output_rel,
                write: OutputWrite::Small { .. },
            }) => {
                // `stage_small_output` staged or failed every small output.
                let failure = Failure::new(
                    ErrorKind::InternalError,
                    format!("the output {output_rel} reached the committer unstaged (a bug)"),
                );
                progress_json(&mut progress, ctx, d.attempts, Err(&failure));
                (None, None, Some(failure))
            }
            Err(failure) => {
                progress_json(&mut progress, ctx, d.attempts, Err(&failure));
                (None, None, Some(failure))
            }
        };
        ends.push(progress.len());
        outputs.push(output);
        settled.push(Settled {
            file: d.file,
            attempts: d.attempts,
            output_rel,
            failure,
        });
    }
    let mut start = 0;
    let files: Vec<FinishedFile<'_>> = settled
        .iter()
        .zip(&ends)
        .zip(outputs)
        .map(|((s, &end), output)| {
            let file = FinishedFile {
                rel: s.file.rel(),
                output,
                progress: &progress[start..end],
            };
            start = end;
            file
        })
        .collect();
    let output_is_folder = |i: usize| {
        let mut progress = Vec::with_capacity(128);
        if let Some(s) = settled.get(i) {
            progress_json(&mut progress, ctx, s.attempts, Err(&folder_failure(ctx, s)));
        }
        progress
    };
    let update = |current: &[u8], recorded: &[Recorded]| {
        let mut rec: JobRecord = serde_json::from_slice(current).map_err(|e| e.to_string())?;
        for (s, r) in settled.iter().zip(recorded) {
            match (r, &s.failure) {
                (Recorded::AlreadyDone, _) => continue,
                (Recorded::Done, None) => {
                    rec.counts.succeeded += 1;
                    continue;
                }
                (Recorded::Done, Some(_)) | (Recorded::OutputIsFolder, _) => rec.counts.failed += 1,
            }
            if rec.errors.len() < FIRST_ERRORS {
                let failure = match (r, &s.failure) {
                    (Recorded::Done, Some(f)) => f.clone(),
                    _ => folder_failure(ctx, s),
                };
                rec.errors.push(FileError {
                    file: s.file.path.uri(),
                    error_type: failure.kind.as_str().to_string(),
                    message: failure.message,
                });
            }
        }
        rec.counts.recompute_pending();
        serde_json::to_vec(&rec).map_err(|e| e.to_string())
    };
    let _serial = ctx.inner.record_lock(&ctx.job_id);
    let result = wait(
        ctx.inner
            .queue
            .finish(&ctx.job_id, &files, &output_is_folder, &update),
    );
    drop(batch.budget.take());
    match result {
        Ok(done) => {
            let data = &ctx.inner.data;
            data.release_blobs(done.replaced_blobs.into_iter().chain(done.unused_blobs));
            let rec: JobRecord =
                serde_json::from_slice(&done.record).map_err(|e| corrupt(&ctx.job_id, e))?;
            Ok(rec)
        }
        Err(e) => {
            let outputs = files.into_iter().filter_map(|f| f.output?.blob);
            ctx.inner.data.release_blobs(outputs);
            Err(e.into())
        }
    }
}

/// Why a file failed whose output path turned out to be a folder.
fn folder_failure(ctx: &RunCtx, s: &Settled) -> Failure {
    let rel = s.output_rel.as_deref().unwrap_or_default();
    let uri = ctx
        .output_path(rel)
        .map(|p| p.uri())
        .unwrap_or_else(|_| rel.to_string());
    Failure::data(&DataError::is_a_folder(&uri))
}

/// Writes a file's progress record (the JSON [`FileProgress`] reads) into
/// `out`: succeeded with its output's relative path, or failed.
fn progress_json(out: &mut Vec<u8>, ctx: &RunCtx, attempts: u32, result: Result<&str, &Failure>) {
    let progress = match result {
        Ok(output) => ProgressRef {
            status: FileStatus::Succeeded,
            attempts,
            run: ctx.run,
            output: Some(output),
            error_type: None,
            message: None,
        },
        Err(Failure { kind, message }) => ProgressRef {
            status: FileStatus::Failed,
            attempts,
            run: ctx.run,
            output: None,
            error_type: Some(kind.as_str()),
            message: Some(message),
        },
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    serde_json::to_writer(out, &progress).unwrap_or_default();
}

/// Stages `d`'s output if it is a small one (a failure to stage fails the file).
fn stage_small_output(ctx: &RunCtx, d: &mut Done) {
    let Ok(Output { output_rel, write }) = &mut d.outcome else {
        return;
    };
    let OutputWrite::Small { content_type, body } = write else {
        return;
    };
    let staged = ctx.output_path(output_rel).and_then(|path| {
        ctx.inner
            .data
            .stage_write(ctx.who(), &path, content_type, std::mem::take(body))
    });
    match staged {
        Ok(w) => *write = OutputWrite::Staged(Box::new(w)),
        Err(e) => d.outcome = Err(Failure::data(&e)),
    }
}

/// A [`FileProgress`] as written, borrowing its strings (the same JSON).
#[derive(serde::Serialize)]
struct ProgressRef<'a> {
    status: FileStatus,
    attempts: u32,
    run: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// What a job record update refuses with when the job ended meanwhile.
const ALREADY_ENDED: &str = "the job ended meanwhile";

/// Ends a job: final status and timings, and `_summary.json` in the output
/// folder, in one transaction. Returns the final record, or `None` if the
/// job had ended already (through another shard's runner).
pub(super) async fn finish(
    inner: &Arc<Inner>,
    id: &str,
    status: JobStatus,
    message: Option<String>,
    recount: Option<(u64, u64)>,
) -> Result<Option<JobRecord>, JobError> {
    let inner = inner.clone();
    let id = id.to_string();
    blocking(move || {
        let apply = |rec: &mut JobRecord| {
            if let Some((succeeded, failed)) = recount {
                rec.counts.succeeded = succeeded;
                rec.counts.failed = failed;
            }
            rec.status = status;
            rec.ended = Some(now_rfc3339());
            if rec.started.is_none() {
                rec.started = rec.ended.clone();
            }
            rec.message = message.clone();
            if status == JobStatus::Completed {
                rec.counts.total = rec.counts.succeeded + rec.counts.failed;
            }
            rec.counts.recompute_pending();
        };
        let (mut preview, _) = read_job(&inner, &id)?;
        apply(&mut preview);
        let caller = preview.submitter.caller();
        let who = Principal::Key(&caller);
        let summary = who
            .parse(&format!("{}{SUMMARY_FILE}", preview.output))
            .and_then(|p| {
                let body = serde_json::to_vec_pretty(&preview.view()).unwrap_or_default();
                inner
                    .data
                    .stage_write(who, &p, "application/json", body.into())
            });
        let summary = match summary {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "cannot write the job summary");
                None
            }
        };
        let outputs: Vec<FileWrite> = summary.into_iter().map(|s| s.into_file_write()).collect();
        let update = |current: &[u8], _: &[Recorded]| {
            let mut rec: JobRecord = serde_json::from_slice(current).map_err(|e| e.to_string())?;
            if rec.status.is_terminal() {
                // Another shard's runner ended it first: its end stands.
                return Err(ALREADY_ENDED.to_string());
            }
            apply(&mut rec);
            serde_json::to_vec(&rec).map_err(|e| e.to_string())
        };
        let closed = wait(inner.queue.close(&id, &outputs, &update));
        match closed {
            Ok((written, record)) => {
                for w in written {
                    match w {
                        Written::Done { replaced_blob } => inner.data.release_blobs(replaced_blob),
                        Written::IsFolder => {
                            tracing::warn!(job = %id, "cannot write the job summary: {SUMMARY_FILE} is a folder in the output");
                        }
                    }
                }
                Ok(Some(serde_json::from_slice(&record).map_err(|e| corrupt(&id, e))?))
            }
            Err(StoreError::Corrupt { reason, .. }) if reason == ALREADY_ENDED => Ok(None),
            Err(e) => {
                inner
                    .data
                    .release_blobs(outputs.into_iter().filter_map(|w| w.blob));
                Err(e.into())
            }
        }
    })
    .await
}
