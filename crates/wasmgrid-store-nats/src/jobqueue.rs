//! [`JobQueue`] on JetStream (docs/STORAGE.md 4.5, the contract as
//! implemented in step 5): per-file progress in bucket `P_jobfiles` (key
//! `<job>.<rel parts>`, create-once: the first finisher of a file wins),
//! outputs through [`NatsFiles`], and the job record in the `Jobs` bucket.
//!
//! Without multi-key transactions each step writes in the contract's order,
//! so that a crash leaves a state the runner resumes from: outputs first (a
//! crash after one re-runs its file, which overwrites the same output), then
//! the progress (after it, the file counts as done), then the job record
//! (compare-and-set from the record read, retried on a conflict).

use crate::files::NatsFiles;
use crate::keys::encode_key;
use crate::{ConnectError, NatsStore, kv_bucket, store_err};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store as Kv};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use wasmgrid_store::files::{DataFiles, FileWrite, Written};
use wasmgrid_store::jobqueue::{
    Finished, FinishedFile, JobQueue, JobUpdate, OutputIsFolder, Recorded,
};
use wasmgrid_store::records::{Bucket, Records};
use wasmgrid_store::{Page, StoreError};

/// Reads in flight at once for one call.
const IN_FLIGHT: usize = 16;

/// Conflicting writers of one job record before a step gives up.
const RECORD_TRIES: usize = 32;

/// Batch jobs' progress on the connection of a [`NatsStore`].
#[derive(Clone)]
pub struct NatsJobs {
    store: NatsStore,
    files: NatsFiles,
    progress: Kv,
}

impl std::fmt::Debug for NatsJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsJobs").finish_non_exhaustive()
    }
}

impl NatsStore {
    /// Batch jobs' progress on this connection: bucket `P_jobfiles` and the
    /// file buckets ([`NatsStore::files`]), created if missing.
    pub async fn job_queue(&self) -> Result<NatsJobs, ConnectError> {
        let progress = kv_bucket(
            &self.js,
            &format!("{}_jobfiles", self.prefix),
            1,
            self.replicas,
            Duration::ZERO,
        )
        .await?;
        Ok(NatsJobs {
            store: self.clone(),
            files: self.files().await?,
            progress,
        })
    }
}

fn progress_key(job: &str, rel: &str) -> Result<String, StoreError> {
    encode_key(&format!("{job}/{rel}")).map_err(|e| StoreError::Backend(e.to_string()))
}

impl NatsJobs {
    /// The job's record, or the contract's error when it has none.
    async fn record(&self, job: &str) -> Result<wasmgrid_store::records::Entry, StoreError> {
        self.store
            .get(Bucket::Jobs, job)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("job {job} has no record in the store")))
    }

    /// Writes the record `update` makes of the current one (compare-and-set,
    /// recomputed on a conflict).
    async fn write_record(
        &self,
        job: &str,
        files: &[Recorded],
        update: JobUpdate<'_>,
    ) -> Result<Vec<u8>, StoreError> {
        for _ in 0..RECORD_TRIES {
            let current = self.record(job).await?;
            let next = update(&current.value, files).map_err(|reason| StoreError::Corrupt {
                table: Bucket::Jobs.name(),
                key: job.to_string(),
                reason,
            })?;
            match self
                .store
                .update(Bucket::Jobs, job, Bytes::from(next.clone()), current.rev)
                .await
            {
                Ok(_) => return Ok(next),
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "job {job}'s record kept changing while it was being updated"
        )))
    }

    async fn has_progress(&self, key: &str) -> Result<bool, StoreError> {
        let entry = self
            .progress
            .entry(key)
            .await
            .map_err(|e| store_err("reading a job file's progress", e))?;
        Ok(entry.is_some_and(|e| e.operation == Operation::Put))
    }

    /// Whether each key has a progress record, read concurrently.
    async fn have_progress(&self, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let reads: Vec<_> = keys.iter().map(|k| self.has_progress(k)).collect();
        futures::stream::iter(reads)
            .buffered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Creates a progress record; false if the file had one already.
    async fn create_progress(&self, key: &str, value: Bytes) -> Result<bool, StoreError> {
        match self.progress.create(key, value).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(store_err("recording a job file's progress", e)),
        }
    }
}

#[async_trait::async_trait]
impl JobQueue for NatsJobs {
    async fn finish(
        &self,
        job: &str,
        files: &[FinishedFile<'_>],
        output_is_folder: OutputIsFolder<'_>,
        update: JobUpdate<'_>,
    ) -> Result<Finished, StoreError> {
        self.record(job).await?;
        let keys: Vec<String> = files
            .iter()
            .map(|f| progress_key(job, f.rel))
            .collect::<Result<_, _>>()?;
        let done_before = self.have_progress(&keys).await?;
        let mut finished = Finished::default();
        // Outputs of the files not finished yet, in one pipelined write.
        let pending: Vec<usize> = (0..files.len()).filter(|&i| !done_before[i]).collect();
        let outputs: Vec<FileWrite> = pending
            .iter()
            .filter_map(|&i| files[i].output.clone())
            .collect();
        let mut written = self.files.write(&outputs).await?.into_iter();
        let mut recorded = vec![Recorded::AlreadyDone; files.len()];
        for &i in &pending {
            recorded[i] = match files[i].output.as_ref().map(|_| written.next()) {
                Some(Some(Written::Done { replaced_blob })) => {
                    finished.replaced_blobs.extend(replaced_blob);
                    Recorded::Done
                }
                Some(Some(Written::IsFolder)) => Recorded::OutputIsFolder,
                Some(None) | None => Recorded::Done,
            };
        }
        // Then the progress, create-once: a file another finisher recorded
        // meanwhile counts as done already (its output was written twice,
        // to the same path, which the contract allows).
        let creates: Vec<_> = pending
            .iter()
            .map(|&i| {
                let value = if recorded[i] == Recorded::OutputIsFolder {
                    Bytes::from(output_is_folder(i))
                } else {
                    Bytes::copy_from_slice(files[i].progress)
                };
                self.create_progress(&keys[i], value)
            })
            .collect();
        let created: Vec<Result<bool, StoreError>> = futures::stream::iter(creates)
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        for (&i, created) in pending.iter().zip(created) {
            if !created? {
                recorded[i] = Recorded::AlreadyDone;
            }
        }
        for (i, r) in recorded.iter().enumerate() {
            let unused = match r {
                Recorded::AlreadyDone => done_before[i],
                Recorded::OutputIsFolder => true,
                Recorded::Done => false,
            };
            if unused {
                finished
                    .unused_blobs
                    .extend(files[i].output.as_ref().and_then(|o| o.blob.clone()));
            }
        }
        finished.record = self.write_record(job, &recorded, update).await?;
        finished.files = recorded;
        Ok(finished)
    }

    async fn close(
        &self,
        job: &str,
        outputs: &[FileWrite],
        update: JobUpdate<'_>,
    ) -> Result<(Vec<Written>, Vec<u8>), StoreError> {
        self.record(job).await?;
        let written = self.files.write(outputs).await?;
        let record = self.write_record(job, &[], update).await?;
        Ok((written, record))
    }

    async fn finished(&self, job: &str, rels: &[&str]) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<String> = rels
            .iter()
            .map(|r| progress_key(job, r))
            .collect::<Result<_, _>>()?;
        self.have_progress(&keys).await
    }

    async fn list_progress(
        &self,
        job: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, Vec<u8>)>, StoreError> {
        // O(the job's files) per page: the key listing is not ordered.
        let prefix = format!("{job}/");
        let rels: Vec<String> = crate::records::keys_under(&self.progress, &prefix)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect();
        crate::records::page_of(&rels, after, limit, |rel| async move {
            let entry = self
                .progress
                .entry(progress_key(job, &rel)?)
                .await
                .map_err(|e| store_err("reading a job file's progress", e))?;
            Ok(entry
                .filter(|e| e.operation == Operation::Put)
                .map(|e| (rel, e.value.to_vec())))
        })
        .await
    }
}
