//! Blobs: component bytes by digest and large file contents as streams
//! (docs/STORAGE.md, section 2.6).
//!
//! A blob is written first and referenced after: a file write streams its
//! content into a [`BlobSink`], then records the [`BlobId`] it got back (through
//! the data files); a crash between the two leaves an unreferenced blob, which
//! the orphan sweep deletes once it is [`settled`](Blobs::settled).

use crate::StoreError;
use bytes::Bytes;
use std::time::Duration;

/// A component's content digest: `sha256:<64 lowercase hex>` of its original
/// bytes. Components are stored once per digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(pub String);

/// A data blob's id: `data-<32 hex>`, random, chosen by the backend when the
/// blob is finished.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(pub String);

impl BlobId {
    /// The id as stored in file records.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A data blob being written, chunk by chunk, so that a large file is never
/// held in memory whole.
#[async_trait::async_trait]
pub trait BlobSink: Send {
    /// Appends a chunk. Waits while the backend is behind (bounded buffering:
    /// the network never runs ahead of the disk by more than a few chunks).
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;

    /// Makes the blob durable and names it: when this returns `Ok`, the blob
    /// survives a crash under the returned id, with the returned size. Until
    /// [`Blobs::recorded`] (or [`Blobs::delete`]) is called for it, it is an
    /// upload in progress that [`Blobs::settled`] never lists. Dropping the sink
    /// without calling `finish` discards what was written.
    async fn finish(self: Box<Self>) -> Result<(BlobId, u64), StoreError>;
}

/// A blob's content from some offset on.
pub type BlobReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// Component bytes by digest, and data blobs (large file contents) by id.
#[async_trait::async_trait]
pub trait Blobs: Send + Sync {
    /// Stores a component under its digest. Idempotent: an existing digest is
    /// left as it is. Durable on return; a crash leaves the whole component or
    /// nothing under its name (never a partial one).
    async fn put_component(&self, digest: &Digest, bytes: Bytes) -> Result<(), StoreError>;

    /// A component's bytes, `None` if no component has that digest.
    async fn get_component(&self, digest: &Digest) -> Result<Option<Bytes>, StoreError>;

    /// Deletes a component (no error if absent).
    async fn delete_component(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Starts a new data blob.
    async fn create(&self) -> Result<Box<dyn BlobSink>, StoreError>;

    /// Opens a data blob at `offset` (HTTP `Range`): its total size and a reader
    /// of its bytes from `offset` to the end; `None` if it does not exist. The
    /// reader keeps reading the content it opened even if the blob is deleted
    /// meanwhile (a file replaced during a download).
    async fn open(&self, id: &BlobId, offset: u64)
    -> Result<Option<(u64, BlobReader)>, StoreError>;

    /// Deletes a data blob (no error if absent). Durable on return only in the
    /// sense that a deleted blob never comes back; a crash just before may
    /// leave it for the orphan sweep.
    async fn delete(&self, id: &BlobId) -> Result<(), StoreError>;

    /// Tells the store that the record naming a finished blob is committed: from
    /// now on it is no longer an upload in progress, and [`Blobs::settled`] may
    /// list it. Backends that rely on the grace period alone ignore it.
    async fn recorded(&self, _id: &BlobId) {}

    /// Data blobs finished more than `grace` ago that are not uploads in
    /// progress: what the orphan sweep may consider. Every listed blob whose
    /// upload finished had its record committed before this call returned
    /// (the sweep lists first, then scans the records).
    async fn settled(&self, grace: Duration) -> Result<Vec<BlobId>, StoreError>;
}
