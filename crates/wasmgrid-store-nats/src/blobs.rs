//! [`Blobs`] on object stores (docs/STORAGE.md 4.6): `P_components` by
//! digest, `P_blobs` by data blob id, streamed in 128 KiB chunks. An object
//! becomes visible only when its info record is written at the end of the
//! upload, so an unfinished upload is never listed or readable.

use crate::{NatsStore, store_err};
use async_nats::jetstream::object_store::{
    DeleteErrorKind, GetErrorKind, InfoErrorKind, ObjectMetadata, ObjectStore,
};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wasmgrid_store::StoreError;
use wasmgrid_store::blobs::{BlobId, BlobReader, BlobSink, Blobs, Digest};

/// The object store's chunk size.
const CHUNK: usize = 128 * 1024;
/// Chunks a sink buffers ahead of the publishes.
const SINK_DEPTH: usize = 8;

fn valid_digest(d: &Digest) -> Result<&str, StoreError> {
    let hex = d.0.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(&d.0)
    } else {
        Err(StoreError::Backend(format!(
            "invalid component digest {:?}",
            d.0
        )))
    }
}

fn valid_blob_id(id: &BlobId) -> Result<&str, StoreError> {
    let hex = id.0.strip_prefix("data-").unwrap_or("");
    if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(&id.0)
    } else {
        Err(StoreError::Backend(format!("invalid blob id {:?}", id.0)))
    }
}

/// Whether a live (not deleted) object `name` exists.
async fn exists(store: &ObjectStore, name: &str) -> Result<bool, StoreError> {
    match store.info(name).await {
        Ok(info) => Ok(!info.deleted),
        Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(false),
        Err(e) => Err(store_err("reading an object's info", e)),
    }
}

/// The bytes of object `name` from `offset` on, and its size.
async fn open_object(
    store: &ObjectStore,
    name: &str,
    offset: u64,
) -> Result<Option<(u64, BlobReader)>, StoreError> {
    let object = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(store_err("opening an object", e)),
    };
    let size = object.info().size as u64;
    let mut object = Box::pin(object);
    if offset > 0 {
        // 2.9's object store has no ranged get: skip by reading.
        let mut skip = (&mut object).take(offset);
        tokio::io::copy(&mut skip, &mut tokio::io::sink())
            .await
            .map_err(|e| store_err("skipping to an offset", e))?;
    }
    Ok(Some((size, Box::new(object))))
}

/// What a sink sends its upload task.
enum Piece {
    Data(Bytes),
    End,
}

struct NatsSink {
    tx: Option<mpsc::Sender<Piece>>,
    task: Option<JoinHandle<Result<u64, StoreError>>>,
    id: BlobId,
}

impl NatsSink {
    async fn task_error(&mut self) -> StoreError {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => StoreError::Backend("the upload ended early".into()),
                Err(e) => StoreError::Backend(format!("the upload task failed: {e}")),
            },
            None => StoreError::Backend("the upload already failed".into()),
        }
    }
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        // Closing the channel without `End` fails the upload's read, so no
        // info record is written: the blob never becomes visible.
        self.tx.take();
    }
}

#[async_trait::async_trait]
impl BlobSink for NatsSink {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let sent = match self.tx.as_ref() {
            Some(tx) => tx.send(Piece::Data(chunk)).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.task_error().await)
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<(BlobId, u64), StoreError> {
        let sent = match self.tx.take() {
            Some(tx) => tx.send(Piece::End).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.task_error().await);
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Ok(size)) => Ok((self.id.clone(), size)),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(StoreError::Backend(format!("the upload task failed: {e}"))),
            },
            None => Err(StoreError::Backend("the upload already failed".into())),
        }
    }
}

#[async_trait::async_trait]
impl Blobs for NatsStore {
    async fn put_component(&self, digest: &Digest, bytes: Bytes) -> Result<(), StoreError> {
        let name = valid_digest(digest)?;
        if exists(&self.components, name).await? {
            return Ok(());
        }
        let meta = ObjectMetadata {
            name: name.to_string(),
            chunk_size: Some(CHUNK),
            ..Default::default()
        };
        self.components
            .put(meta, &mut bytes.as_ref())
            .await
            .map_err(|e| store_err("storing a component", e))?;
        Ok(())
    }

    async fn get_component(&self, digest: &Digest) -> Result<Option<Bytes>, StoreError> {
        let name = valid_digest(digest)?;
        let Some((size, mut reader)) = open_object(&self.components, name, 0).await? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut out)
            .await
            .map_err(|e| store_err("reading a component", e))?;
        Ok(Some(Bytes::from(out)))
    }

    async fn delete_component(&self, digest: &Digest) -> Result<(), StoreError> {
        let name = valid_digest(digest)?;
        match self.components.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_err("deleting a component", e)),
        }
    }

    async fn create(&self) -> Result<Box<dyn BlobSink>, StoreError> {
        let id = BlobId(format!("data-{}", hex::encode(rand::random::<[u8; 16]>())));
        let (tx, rx) = mpsc::channel::<Piece>(SINK_DEPTH);
        let pieces = futures::stream::unfold((rx, false), |(mut rx, ended)| async move {
            if ended {
                return None;
            }
            match rx.recv().await {
                Some(Piece::Data(b)) => Some((Ok(b), (rx, false))),
                Some(Piece::End) => None,
                None => Some((
                    Err(std::io::Error::other("the upload was abandoned")),
                    (rx, true),
                )),
            }
        });
        let mut reader = tokio_util::io::StreamReader::new(pieces.boxed());
        let store = self.blobs.clone();
        let name = id.0.clone();
        let task = tokio::spawn(async move {
            let meta = ObjectMetadata {
                name,
                chunk_size: Some(CHUNK),
                ..Default::default()
            };
            store
                .put(meta, &mut reader)
                .await
                .map(|info| info.size as u64)
                .map_err(|e| store_err("storing a data blob", e))
        });
        Ok(Box::new(NatsSink {
            tx: Some(tx),
            task: Some(task),
            id,
        }))
    }

    async fn open(
        &self,
        id: &BlobId,
        offset: u64,
    ) -> Result<Option<(u64, BlobReader)>, StoreError> {
        let name = valid_blob_id(id)?;
        open_object(&self.blobs, name, offset).await
    }

    async fn delete(&self, id: &BlobId) -> Result<(), StoreError> {
        let name = valid_blob_id(id)?;
        match self.blobs.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_err("deleting a data blob", e)),
        }
    }

    async fn settled(&self, grace: Duration) -> Result<Vec<BlobId>, StoreError> {
        let now = async_nats::datetime::now();
        let mut list = self
            .blobs
            .list()
            .await
            .map_err(|e| store_err("listing data blobs", e))?;
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| store_err("listing data blobs", e))?;
            if info.deleted || !info.name.starts_with("data-") {
                continue;
            }
            let old_enough = info
                .modified
                .and_then(|m| async_nats::datetime::add_std_duration(m, grace).ok())
                .is_some_and(|deadline| deadline <= now);
            if old_enough {
                out.push(BlobId(info.name));
            }
        }
        Ok(out)
    }
}
