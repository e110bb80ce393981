//! [`Blobs`] for the embedded backend: files in `<data dir>/blobs/`, components
//! as `sha256-<hex>`, data blobs as `data-<32 hex>`, uploads in progress as
//! `.tmp-*` files (removed at open: nothing writes them across a restart).

use super::{EmbeddedStore, backend, sync_dir, tempfile_in};
use crate::blobs::{BlobId, BlobReader, BlobSink, Blobs, Digest};
use crate::{BlobWriter, Store, StoreError};
use bytes::Bytes;
use std::fs;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Chunks an upload may run ahead of the disk (today's bounded channel).
const SINK_DEPTH: usize = 8;

/// Where a component's bytes live; anything but `sha256:<64 hex>` is refused
/// before it reaches the filesystem.
pub(super) fn component_path(dir: &Path, digest: &str) -> Result<PathBuf, StoreError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| StoreError::Backend(format!("invalid blob digest {digest:?}")))?;
    Ok(dir.join(format!("sha256-{hex}")))
}

/// Writes a component through a temporary file renamed into place (a crash
/// never leaves a partial component under its name); idempotent.
pub(super) fn write_component(dir: &Path, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = component_path(dir, digest)?;
    if path.exists() {
        return Ok(());
    }
    let io = |e: std::io::Error| StoreError::Backend(format!("writing blob {digest}: {e}"));
    let mut tmp = tempfile_in(dir).map_err(io)?;
    tmp.1.write_all(bytes).map_err(io)?;
    tmp.1.sync_all().map_err(io)?;
    fs::rename(&tmp.0, &path).map_err(io)?;
    sync_dir(dir).map_err(io)?;
    Ok(())
}

/// A component's bytes, if present.
pub(super) fn read_component(dir: &Path, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let path = component_path(dir, digest)?;
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Backend(format!("reading blob {digest}: {e}"))),
    }
}

fn removed_component(dir: &Path, digest: &str) -> Result<(), StoreError> {
    match fs::remove_file(component_path(dir, digest)?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Backend(format!("deleting blob {digest}: {e}"))),
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("blob worker failed: {e}")))?
}

/// What an upload's writer thread ends with: the finished blob's id and size,
/// or `None` when the sink was dropped unfinished.
type WriterResult = Result<Option<(String, u64)>, StoreError>;

/// What the upload's writer thread is told.
enum Chunk {
    Data(Bytes),
    Finish,
}

/// A data blob written by one blocking thread fed through a bounded channel
/// (so the network never runs ahead of the disk by more than [`SINK_DEPTH`]
/// chunks, and no chunk write blocks an async thread).
struct EmbeddedSink {
    tx: tokio::sync::mpsc::Sender<Chunk>,
    /// The writer's result, once it stops.
    writer: Option<tokio::sync::oneshot::Receiver<WriterResult>>,
}

impl EmbeddedSink {
    /// The writer's own error, after it stopped taking chunks.
    async fn writer_error(&mut self) -> StoreError {
        match self.writer.take() {
            Some(result) => match result.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => backend("the blob writer stopped early"),
                Err(_) => backend("the blob writer failed without a result"),
            },
            None => backend("the blob writer already stopped"),
        }
    }
}

#[async_trait::async_trait]
impl BlobSink for EmbeddedSink {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.tx.send(Chunk::Data(chunk)).await.is_err() {
            return Err(self.writer_error().await);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(BlobId, u64), StoreError> {
        if self.tx.send(Chunk::Finish).await.is_err() {
            return Err(self.writer_error().await);
        }
        let result = self
            .writer
            .take()
            .ok_or_else(|| backend("the blob writer already stopped"))?;
        match result
            .await
            .map_err(|_| backend("the blob writer failed without a result"))??
        {
            Some((id, size)) => Ok((BlobId(id), size)),
            None => Err(backend("the blob writer stopped early")),
        }
    }
}

/// The writer thread of an [`EmbeddedSink`]: `Some` once finished, `None` when
/// the sink was dropped (the temporary file is removed with the writer).
fn write_blob(
    mut w: Box<dyn BlobWriter>,
    mut rx: tokio::sync::mpsc::Receiver<Chunk>,
) -> WriterResult {
    let mut size = 0u64;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Chunk::Data(chunk) => {
                w.write_all(&chunk)
                    .map_err(|e| StoreError::Backend(format!("writing the upload: {e}")))?;
                size += chunk.len() as u64;
            }
            Chunk::Finish => return w.finish().map(|id| Some((id, size))),
        }
    }
    Ok(None)
}

#[async_trait::async_trait]
impl Blobs for EmbeddedStore {
    async fn put_component(&self, digest: &Digest, bytes: Bytes) -> Result<(), StoreError> {
        let dir = self.blob_dir.clone();
        let digest = digest.0.clone();
        blocking(move || write_component(&dir, &digest, &bytes)).await
    }

    async fn get_component(&self, digest: &Digest) -> Result<Option<Bytes>, StoreError> {
        let dir = self.blob_dir.clone();
        let digest = digest.0.clone();
        let bytes = blocking(move || read_component(&dir, &digest)).await?;
        Ok(bytes.map(Bytes::from))
    }

    async fn delete_component(&self, digest: &Digest) -> Result<(), StoreError> {
        // One unlink: short enough to run inline.
        removed_component(&self.blob_dir, &digest.0)
    }

    async fn create(&self) -> Result<Box<dyn BlobSink>, StoreError> {
        // Creating the temporary file is one open(2): inline, so a full or
        // unwritable disk fails here rather than at the first chunk.
        let w = self.create_blob()?;
        let (tx, rx) = tokio::sync::mpsc::channel(SINK_DEPTH);
        let (done, result) = tokio::sync::oneshot::channel();
        let write = move || {
            let _ = done.send(write_blob(w, rx));
        };
        // On tokio's blocking pool when called inside a runtime; on a thread
        // of its own otherwise (a caller driving this with a plain executor).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => {
                std::thread::Builder::new()
                    .name("wasmgrid-blob-writer".into())
                    .spawn(write)
                    .map_err(|e| StoreError::Backend(format!("cannot start a blob writer: {e}")))?;
            }
        }
        Ok(Box::new(EmbeddedSink {
            tx,
            writer: Some(result),
        }))
    }

    async fn open(
        &self,
        id: &BlobId,
        offset: u64,
    ) -> Result<Option<(u64, BlobReader)>, StoreError> {
        // open(2), fstat(2) and lseek(2) inline: no disk wait to speak of; the
        // reads themselves go through tokio's file, off the async threads.
        let Some(mut file) = self.open_blob(&id.0)? else {
            return Ok(None);
        };
        let io = |e: std::io::Error| StoreError::Backend(format!("opening blob {}: {e}", id.0));
        let size = file.metadata().map_err(io)?.len();
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
        }
        Ok(Some((size, Box::new(tokio::fs::File::from_std(file)))))
    }

    async fn delete(&self, id: &BlobId) -> Result<(), StoreError> {
        self.delete_blob(&id.0)
    }

    async fn recorded(&self, id: &BlobId) {
        self.blob_recorded(&id.0);
    }

    async fn settled(&self, grace: Duration) -> Result<Vec<BlobId>, StoreError> {
        // A directory listing, run by the hourly sweep: inline.
        let mut ids = self.settled_data_blobs()?;
        if !grace.is_zero() {
            let cutoff = SystemTime::now().checked_sub(grace);
            ids.retain(|id| {
                let modified = fs::metadata(self.blob_dir.join(id)).and_then(|m| m.modified());
                match (modified, cutoff) {
                    (Ok(m), Some(cutoff)) => m <= cutoff,
                    // Unknown age: leave it for a later sweep.
                    _ => false,
                }
            });
        }
        Ok(ids.into_iter().map(BlobId).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn digest(b: &[u8]) -> Digest {
        // Not a real hash: any 64 hex digits are a valid digest to the store.
        Digest(format!("sha256:{}", hex::encode([b[0]; 32])))
    }

    async fn read_all(mut r: BlobReader) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn components_are_idempotent_durable_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let d = digest(b"a");
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .put_component(&d, Bytes::from_static(b"one"))
                .await
                .unwrap();
            // Same digest again: the first bytes stay.
            store
                .put_component(&d, Bytes::from_static(b"two"))
                .await
                .unwrap();
            let bad = Digest("../../etc/passwd".into());
            assert!(store.put_component(&bad, Bytes::new()).await.is_err());
            assert!(store.get_component(&bad).await.is_err());
        }
        // Durable on return: a reopened store reads it.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get_component(&d).await.unwrap().unwrap(),
            Bytes::from_static(b"one")
        );
        store.delete_component(&d).await.unwrap();
        store.delete_component(&d).await.unwrap();
        assert!(store.get_component(&d).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sinks_stream_in_and_readers_start_at_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut sink = store.create().await.unwrap();
        let mut want = Vec::new();
        for i in 0..40u8 {
            let chunk = vec![i; 1000];
            want.extend_from_slice(&chunk);
            sink.write(Bytes::from(chunk)).await.unwrap();
        }
        let (id, size) = sink.finish().await.unwrap();
        assert_eq!(size, 40_000);
        let (total, r) = store.open(&id, 0).await.unwrap().unwrap();
        assert_eq!(total, 40_000);
        assert_eq!(read_all(r).await, want);
        let (total, r) = store.open(&id, 39_990).await.unwrap().unwrap();
        assert_eq!(total, 40_000);
        assert_eq!(read_all(r).await, want[39_990..]);
        // Durable and named on return: a reopened store still has it.
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (_, r) = store.open(&id, 0).await.unwrap().unwrap();
        assert_eq!(read_all(r).await.len(), 40_000);
        store.delete(&id).await.unwrap();
        store.delete(&id).await.unwrap();
        assert!(store.open(&id, 0).await.unwrap().is_none());
        assert!(
            store
                .open(&BlobId("../store.redb".into()), 0)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn dropped_sinks_leave_nothing_and_uploads_are_not_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut dropped = store.create().await.unwrap();
        dropped.write(Bytes::from_static(b"half")).await.unwrap();
        drop(dropped);
        // An unfinished upload is never listed, finished or not.
        let mut open = store.create().await.unwrap();
        open.write(Bytes::from_static(b"x")).await.unwrap();
        assert!(store.settled(Duration::ZERO).await.unwrap().is_empty());
        let (id, _) = open.finish().await.unwrap();
        assert!(
            store.settled(Duration::ZERO).await.unwrap().is_empty(),
            "finished but not recorded: still an upload"
        );
        store.recorded(&id).await;
        assert_eq!(
            store.settled(Duration::ZERO).await.unwrap(),
            vec![id.clone()]
        );
        // Finished just now: not older than an hour's grace.
        assert!(
            store
                .settled(Duration::from_secs(3600))
                .await
                .unwrap()
                .is_empty()
        );
        // The dropped sink's temporary file is gone once its writer noticed.
        for _ in 0..100 {
            let tmp = fs::read_dir(dir.path().join("blobs"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                })
                .count();
            if tmp == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped upload's temporary file was left behind");
    }
}
