//! [`JobQueue`] on the embedded store: progress in [`Table::JOB_FILES`] under
//! `job/rel`, the job record in the records bucket `Jobs`, and each `finish`
//! or `close` (outputs, progress, record) one transaction with one fsync.

use super::EmbeddedStore;
use super::files::{ApplyScope, apply_file_write};
use super::records::put_record_in;
use crate::files::{FileWrite, Written};
use crate::jobqueue::{Finished, FinishedFile, JobQueue, JobUpdate, OutputIsFolder, Recorded};
use crate::records::Bucket;
use crate::{Cursor, Page, Store, StoreError, Table, Txn};

/// The job record, read inside `txn`.
fn job_record(txn: &dyn Txn, job: &str) -> Result<Vec<u8>, StoreError> {
    // The Jobs bucket is the JOBS table, keys as they are (records.rs).
    txn.get(Table::JOBS, job)?
        .ok_or_else(|| StoreError::Backend(format!("job {job} has no record in the store")))
}

/// Writes the record `update` makes of the current one, inside `txn`.
fn write_record(
    txn: &mut dyn Txn,
    job: &str,
    files: &[Recorded],
    update: JobUpdate<'_>,
) -> Result<Vec<u8>, StoreError> {
    let current = job_record(txn, job)?;
    let next = update(&current, files).map_err(|reason| StoreError::Corrupt {
        table: Bucket::Jobs.name(),
        key: job.to_string(),
        reason,
    })?;
    put_record_in(txn, Bucket::Jobs, job, &next)?;
    Ok(next)
}

#[async_trait::async_trait]
impl JobQueue for EmbeddedStore {
    async fn finish(
        &self,
        job: &str,
        files: &[FinishedFile<'_>],
        output_is_folder: OutputIsFolder<'_>,
        update: JobUpdate<'_>,
    ) -> Result<Finished, StoreError> {
        // Inline (see the trait): the runner calls from a blocking thread.
        let mut done = Finished::default();
        let mut key = String::with_capacity(job.len() + 64);
        self.transact(&mut |txn| {
            done = Finished::default();
            let mut scope = ApplyScope::default();
            for (i, f) in files.iter().enumerate() {
                key.clear();
                key.push_str(job);
                key.push('/');
                key.push_str(f.rel);
                // Create-once: the first finisher of a file wins. The
                // progress goes in first (one lookup), and is replaced below
                // when the output turns out to be a folder.
                if !txn.put_if_absent(Table::JOB_FILES, &key, f.progress)? {
                    done.unused_blobs
                        .extend(f.output.as_ref().and_then(|o| o.blob.clone()));
                    done.files.push(Recorded::AlreadyDone);
                    continue;
                }
                let recorded = match &f.output {
                    Some(output) => match apply_file_write(txn, output, &mut scope)? {
                        Written::Done { replaced_blob } => {
                            done.replaced_blobs.extend(replaced_blob);
                            Recorded::Done
                        }
                        Written::IsFolder => Recorded::OutputIsFolder,
                    },
                    None => Recorded::Done,
                };
                if recorded == Recorded::OutputIsFolder {
                    done.unused_blobs
                        .extend(f.output.as_ref().and_then(|o| o.blob.clone()));
                    txn.put(Table::JOB_FILES, &key, &output_is_folder(i))?;
                }
                done.files.push(recorded);
            }
            scope.finish(txn)?;
            done.record = write_record(txn, job, &done.files, update)?;
            Ok(())
        })?;
        Ok(done)
    }

    async fn close(
        &self,
        job: &str,
        outputs: &[FileWrite],
        update: JobUpdate<'_>,
    ) -> Result<(Vec<Written>, Vec<u8>), StoreError> {
        let mut written = Vec::new();
        let mut record = Vec::new();
        self.transact(&mut |txn| {
            written.clear();
            let mut scope = ApplyScope::default();
            for w in outputs {
                written.push(apply_file_write(txn, w, &mut scope)?);
            }
            scope.finish(txn)?;
            record = write_record(txn, job, &[], update)?;
            Ok(())
        })?;
        Ok((written, record))
    }

    async fn finished(&self, job: &str, rels: &[&str]) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<String> = rels.iter().map(|r| format!("{job}/{r}")).collect();
        let reads: Vec<(Table, &str)> = keys
            .iter()
            .map(|k| (Table::JOB_FILES, k.as_str()))
            .collect();
        Ok(self
            .get_many(&reads)?
            .into_iter()
            .map(|v| v.is_some())
            .collect())
    }

    async fn list_progress(
        &self,
        job: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, Vec<u8>)>, StoreError> {
        let prefix = format!("{job}/");
        let after = after.map(|a| format!("{prefix}{a}"));
        let limit = limit.max(1);
        let rows = self.scan(
            Table::JOB_FILES,
            &prefix,
            after.as_deref().map(Cursor::After),
            limit,
        )?;
        let full = rows.len() == limit;
        let items: Vec<(String, Vec<u8>)> = rows
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_string(), v))
            .collect();
        let next = if full {
            items.last().map(|(rel, _)| rel.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }
}
