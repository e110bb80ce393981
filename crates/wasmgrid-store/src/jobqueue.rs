//! JobQueue: a batch job's per-file progress, and the steps that record
//! finished files and end the job (docs/STORAGE.md, section 2.5).
//!
//! The job record itself lives in [`Bucket::Jobs`](crate::records::Bucket::Jobs)
//! (created, read, listed and cancelled through [`Records`](crate::records::Records));
//! this contract writes it where it must move together with a batch's
//! outputs and progress, through a function of the jobs domain ([`JobUpdate`]),
//! so that the store never needs to know the record's format.
//!
//! Progress keys are the input files' paths relative to the job's input
//! (`rel`); values are the jobs domain's JSON, stored as given.

use crate::files::{FileWrite, Written};
use crate::{Page, StoreError};

/// One finished input file of a [`JobQueue::finish`] batch. Borrows its
/// path and progress (a batch's progress records share one buffer: no
/// allocation per file).
#[derive(Debug, Clone)]
pub struct FinishedFile<'a> {
    /// The input file's path relative to the job's input: its progress key.
    pub rel: &'a str,
    /// Its output, when it succeeded with one (prepared by the data domain).
    pub output: Option<FileWrite>,
    /// Its progress record (JSON), as written when its output is written (or
    /// when it has none).
    pub progress: &'a [u8],
}

/// What became of one [`FinishedFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Its output (if any) and its progress were written.
    Done,
    /// Its output could not be written because the output path is a folder;
    /// the progress [`OutputIsFolder`] built for it was written instead.
    OutputIsFolder,
    /// It had a progress record already (a file finished twice, as after a
    /// redelivery): nothing was written for it, and its output's blob (if
    /// any) is in [`Finished::unused_blobs`].
    AlreadyDone,
}

/// What [`JobQueue::finish`] did.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// One entry per file, in order.
    pub files: Vec<Recorded>,
    /// The job record as written by the [`JobUpdate`].
    pub record: Vec<u8>,
    /// Blobs of the contents the outputs replaced, to delete now that nothing
    /// names them.
    pub replaced_blobs: Vec<String>,
    /// Blobs of outputs that were not written ([`Recorded::AlreadyDone`]),
    /// to delete.
    pub unused_blobs: Vec<String>,
}

/// Builds the progress record (JSON) of the batch's file at an index whose
/// output path turned out to be a folder (the file failed).
pub type OutputIsFolder<'a> = &'a (dyn Fn(usize) -> Vec<u8> + Send + Sync);

/// Computes a job's new record from its current one (JSON) and what became of
/// each file of the batch (empty when the job ends); an `Err` names why the
/// current record is unusable and aborts the step.
pub type JobUpdate<'a> = &'a (dyn Fn(&[u8], &[Recorded]) -> Result<Vec<u8>, String> + Send + Sync);

/// A job's per-file progress and the steps that move its record along with it.
///
/// Every write is durable when its call returns `Ok`. The embedded backend
/// runs each of [`finish`](Self::finish) and [`close`](Self::close) as one
/// transaction (all of it or nothing) on the calling thread: call them from
/// a blocking thread, as the job runner does. A backend without multi-key
/// transactions (NATS) writes in the documented order, so that a crash leaves
/// a state the runner resumes from (docs/STORAGE.md, 2.5).
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync {
    /// Records finished files of job `job`: for each file in order, unless it
    /// has a progress record already (create-once: the first finisher wins),
    /// its output (as [`DataFiles::write`](crate::files::DataFiles::write),
    /// change event included) and then its progress; then the job record,
    /// through `update`. Order when not atomic: outputs, progress, record (a
    /// crash after an output re-runs its file, which overwrites the same
    /// output; after a progress, the file counts as done).
    /// [`StoreError::Backend`], and nothing written, if the job record does
    /// not exist.
    async fn finish(
        &self,
        job: &str,
        files: &[FinishedFile<'_>],
        output_is_folder: OutputIsFolder<'_>,
        update: JobUpdate<'_>,
    ) -> Result<Finished, StoreError>;

    /// Ends job `job`: writes `outputs` (its summary file) and the job record
    /// through `update` (called with no files). Order when not atomic:
    /// outputs, then the record. Returns what became of each output (the
    /// first replaced blob of each, to delete) and the record as written.
    async fn close(
        &self,
        job: &str,
        outputs: &[FileWrite],
        update: JobUpdate<'_>,
    ) -> Result<(Vec<Written>, Vec<u8>), StoreError>;

    /// Whether each of `rels` has a progress record (is finished), from one
    /// snapshot.
    async fn finished(&self, job: &str, rels: &[&str]) -> Result<Vec<bool>, StoreError>;

    /// Progress records of job `job` in byte order of `rel`, after `after`, at
    /// most `limit`; `next` is the last `rel` of a full page.
    async fn list_progress(
        &self,
        job: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, Vec<u8>)>, StoreError>;
}
