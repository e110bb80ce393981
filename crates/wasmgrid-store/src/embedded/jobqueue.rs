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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::FileRecord;
    use crate::files::record;
    use crate::records::Records;
    use futures::executor::block_on;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn output(key: &str, body: &str) -> FileWrite {
        let rec = FileRecord {
            size: body.len() as u64,
            content_type: "text/plain".into(),
            etag: "\"e\"".into(),
            last_modified: "2024-01-01T00:00:00.000Z".into(),
            blob: None,
            folder: false,
            expires: None,
        };
        FileWrite {
            key: key.into(),
            record: record::encode(&rec),
            blob: None,
            inline: bytes::Bytes::copy_from_slice(body.as_bytes()),
            event: Some(b"{\"type\":\"FileCreated\"}".to_vec()),
            new_collection: bytes::Bytes::from_static(b"{}"),
        }
    }

    /// Whether a file record is stored under `key`.
    fn has_file(s: &EmbeddedStore, key: &str) -> bool {
        Store::get(s, Table::FILES, key).unwrap().is_some()
    }

    /// The update the tests use: the record counts the files recorded.
    fn count(current: &[u8], files: &[Recorded]) -> Result<Vec<u8>, String> {
        let n: usize = std::str::from_utf8(current)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        let new = files
            .iter()
            .filter(|f| **f != Recorded::AlreadyDone)
            .count();
        Ok((n + new).to_string().into_bytes())
    }

    #[test]
    fn finish_writes_outputs_progress_and_record_once_per_file() {
        let (_d, s) = store();
        block_on(s.create(Bucket::Jobs, "job-1", bytes::Bytes::from_static(b"0"))).unwrap();
        let files = vec![
            FinishedFile {
                rel: "a.txt",
                output: Some(output("o/c/out/a.txt", "A")),
                progress: b"{\"ok\":1}",
            },
            FinishedFile {
                rel: "b.txt",
                output: None,
                progress: b"{\"ok\":0}",
            },
        ];
        let folder = |_: usize| b"{\"folder\":1}".to_vec();
        let done = block_on(s.finish("job-1", &files, &folder, &count)).unwrap();
        assert_eq!(done.files, vec![Recorded::Done, Recorded::Done]);
        assert_eq!(done.record, b"2");
        assert!(has_file(&s, "o/c/out/a.txt"));
        assert_eq!(
            block_on(s.finished("job-1", &["a.txt", "b.txt", "c.txt"])).unwrap(),
            vec![true, true, false]
        );
        // Again: both are done already, nothing is counted twice.
        let again = block_on(s.finish("job-1", &files, &folder, &count)).unwrap();
        assert_eq!(
            again.files,
            vec![Recorded::AlreadyDone, Recorded::AlreadyDone]
        );
        assert_eq!(again.record, b"2");
        let rec = block_on(Records::get(&s, Bucket::Jobs, "job-1"))
            .unwrap()
            .unwrap();
        assert_eq!(&rec.value[..], b"2");
    }

    #[test]
    fn an_output_onto_a_folder_records_the_folder_progress() {
        let (_d, s) = store();
        block_on(s.create(Bucket::Jobs, "job-1", bytes::Bytes::from_static(b"0"))).unwrap();
        block_on(crate::files::DataFiles::create_folder(
            &s,
            "o/c/out/a.txt/",
            record::encode(&FileRecord {
                size: 0,
                content_type: String::new(),
                etag: String::new(),
                last_modified: String::new(),
                blob: None,
                folder: true,
                expires: None,
            }),
        ))
        .unwrap();
        let files = vec![FinishedFile {
            rel: "a.txt",
            output: Some(output("o/c/out/a.txt", "A")),
            progress: b"ok",
        }];
        let folder = |i: usize| format!("folder {i}").into_bytes();
        let done = block_on(s.finish("job-1", &files, &folder, &count)).unwrap();
        assert_eq!(done.files, vec![Recorded::OutputIsFolder]);
        let page = block_on(s.list_progress("job-1", None, 10)).unwrap();
        assert_eq!(
            page.items,
            vec![("a.txt".to_string(), b"folder 0".to_vec())]
        );
    }

    #[test]
    fn finish_and_close_need_the_job_record_and_write_nothing_without_it() {
        let (_d, s) = store();
        let files = vec![FinishedFile {
            rel: "a.txt",
            output: Some(output("o/c/out/a.txt", "A")),
            progress: b"ok",
        }];
        let folder = |_: usize| Vec::new();
        let err = block_on(s.finish("job-9", &files, &folder, &count)).unwrap_err();
        assert!(err.to_string().contains("job-9 has no record"), "{err}");
        assert!(!has_file(&s, "o/c/out/a.txt"));
        assert_eq!(
            block_on(s.finished("job-9", &["a.txt"])).unwrap(),
            vec![false]
        );
        let err = block_on(s.close("job-9", &[output("o/c/out/_summary.json", "{}")], &count))
            .unwrap_err();
        assert!(err.to_string().contains("job-9 has no record"), "{err}");
        assert!(!has_file(&s, "o/c/out/_summary.json"));
    }

    #[test]
    fn close_writes_the_summary_with_the_final_record() {
        let (_d, s) = store();
        block_on(s.create(Bucket::Jobs, "job-1", bytes::Bytes::from_static(b"5"))).unwrap();
        let (written, rec) =
            block_on(s.close("job-1", &[output("o/c/out/_summary.json", "{}")], &count)).unwrap();
        assert_eq!(
            written,
            vec![Written::Done {
                replaced_blob: None
            }]
        );
        assert_eq!(rec, b"5");
        assert!(has_file(&s, "o/c/out/_summary.json"));
    }

    #[test]
    fn list_progress_pages_in_rel_order_within_one_job() {
        let (_d, s) = store();
        for job in ["job-1", "job-10"] {
            block_on(s.create(Bucket::Jobs, job, bytes::Bytes::from_static(b"0"))).unwrap();
            let progress: Vec<String> = ["c", "a", "b"]
                .iter()
                .map(|r| format!("{job}:{r}"))
                .collect();
            let files: Vec<FinishedFile> = ["c", "a", "b"]
                .iter()
                .zip(&progress)
                .map(|(r, p)| FinishedFile {
                    rel: r,
                    output: None,
                    progress: p.as_bytes(),
                })
                .collect();
            block_on(s.finish(job, &files, &|_| Vec::new(), &count)).unwrap();
        }
        let first = block_on(s.list_progress("job-1", None, 2)).unwrap();
        let rels: Vec<&str> = first.items.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rels, ["a", "b"]);
        assert_eq!(first.next.as_deref(), Some("b"));
        let second = block_on(s.list_progress("job-1", first.next.as_deref(), 2)).unwrap();
        assert_eq!(second.items, vec![("c".to_string(), b"job-1:c".to_vec())]);
        assert_eq!(second.next, None);
    }
}
