//! Durable storage for wasmgrid: the storage contracts, one per concern, and the
//! embedded backend that implements them.
//!
//! The contracts (docs/STORAGE.md gives each one's guarantees and its mapping
//! onto redb and onto NATS JetStream 2.9): [`records`] (versioned metadata with
//! compare-and-set and a watch), [`changelog`] (the system feeds), [`files`]
//! (`data://` files, folders, listings and their change events), [`queues`]
//! (one delivery queue per subscription), [`jobqueue`] (a batch job's per-file
//! progress, recorded with its outputs), [`blobs`] (component bytes, large
//! contents as streams) and [`leases`] (singletons). Each promises only what
//! both backends can give: no multi-key atomicity, create-once for exclusive
//! outcomes.
//!
//! The embedded backend ([`EmbeddedStore`]) keeps metadata in one
//! [redb](https://docs.rs/redb) database file and blobs as files in the data
//! directory. Its lower-level interface, `raw::Store` (multi-table
//! transactions, ordered scans), is what the contracts are built on inside
//! this crate, and private to it (public only with the `raw` feature, for
//! tests and benches).
//!
//! Values are JSON documents (see `raw::Table` for what each table holds), so records
//! can grow fields without a migration, except file records, which every file
//! read decodes and which have a compact versioned binary form (see
//! `files::record`). Structural changes bump [`SCHEMA_VERSION`] and add a step
//! to the embedded backend's migration list.

mod embedded;

pub mod blobs;
pub mod changelog;
#[doc(hidden)]
pub mod conformance;
pub mod files;
pub mod jobqueue;
pub mod leases;
pub mod queues;
pub mod records;

pub use embedded::{EmbeddedQueues, EmbeddedStore, sync_dir, tempfile_in};

// The embedded backend's low-level interface: what the contracts are built on
// inside this crate. Public only with the `raw` feature, for tests that write
// raw rows (old formats, crashed states) and benches that measure the floor.
#[cfg(not(feature = "raw"))]
mod raw;
#[cfg(feature = "raw")]
#[doc(hidden)]
pub mod raw;
#[allow(unused_imports)]
pub(crate) use raw::{BlobWriter, Cursor, Store, StoreExt, Table, Txn, WriteBatch, WriteOp};

/// A record's revision: strictly increasing per key, never reused, never 0
/// for a stored record (docs/STORAGE.md, "Shared types").
pub type Rev = u64;

/// One page of a listing, and where the next one starts (`None`: this was the
/// last page). The marker is opaque to callers and backend-specific.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries of this page, in the listing's order.
    pub items: Vec<T>,
    /// Pass to the next call to continue after the last item.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of at most `limit` from `items` read with `limit + 1`: the
    /// extra item only says that more follow, and `next` is then
    /// `position(last item kept)`.
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: usize,
        position: impl Fn(&T) -> String,
    ) -> Page<T> {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(position)
        } else {
            None
        };
        Page { items, next }
    }
}

/// The schema version this build writes. Opening a data directory written by a
/// newer build fails with a clear error instead of misreading it.
///
/// - 1: every value JSON.
/// - 2: file records (table `files`) are written in a binary form; version-1
///   JSON records are still read and become binary when next written, so the
///   step from 1 changes no data (an older build would misread the new records,
///   hence the bump).
pub const SCHEMA_VERSION: u64 = 2;

/// Errors from a storage backend. Free of HTTP meaning: the API maps them to a
/// status and an `error_type` in one place (`api::error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A create found the key present (or once present: tombstones count).
    #[error("{bucket}/{key} already exists")]
    Exists {
        /// The bucket (or table) of the key.
        bucket: &'static str,
        /// The key.
        key: String,
    },
    /// An update or delete found the record at another revision than expected:
    /// a concurrent write came first. Re-read and decide again.
    #[error("{bucket}/{key} changed (expected revision {expected}, found {found:?})")]
    Changed {
        /// The bucket of the key.
        bucket: &'static str,
        /// The key.
        key: String,
        /// The revision the caller read.
        expected: Rev,
        /// The revision found (`None`: the record is gone).
        found: Option<Rev>,
    },
    /// The backend cannot take the request now (cluster backend unreachable, no
    /// quorum, a stream at its byte limit): retry later. Nothing was written.
    #[error("storage unavailable: {0}; retry shortly")]
    Unavailable(String),
    /// A key or value larger than the backend accepts.
    #[error("{what} is larger than the storage limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// A write batch asked for a key to be absent and it was present. Nothing in
    /// the batch was written.
    #[error("{table}/{key} already exists")]
    Conflict {
        /// The table of the conflicting key.
        table: &'static str,
        /// The conflicting key.
        key: String,
    },
    /// The data directory is already open in another wasmgrid process.
    #[error(
        "the data directory {path} is in use by another wasmgrid process; stop it, or pass a different --data-dir"
    )]
    Locked {
        /// The database file.
        path: String,
    },
    /// The data directory was written by a newer wasmgrid.
    #[error(
        "the data directory uses schema version {found}, but this wasmgrid understands up to {supported}; upgrade wasmgrid"
    )]
    NewerSchema {
        /// The schema version found on disk.
        found: u64,
        /// The newest version this build understands.
        supported: u64,
    },
    /// A stored record could not be decoded (corruption or a bug).
    #[error("stored record {table}/{key} is unreadable: {reason}")]
    Corrupt {
        /// Table of the record.
        table: &'static str,
        /// Key of the record.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The backend failed (disk full, I/O error, ...).
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// Drives a contract's future to completion from synchronous code (a
/// blocking thread, a guest's host call, a job worker).
///
/// The embedded backend answers on the first poll, which this tries first:
/// no thread hop, no overhead. A networked backend (NATS) has to wait for a
/// reply that a runtime task receives; blocking a runtime worker for it
/// could starve that very task (a worker's LIFO slot cannot be stolen), so
/// the wait hands the worker's queue to another thread first
/// (`block_in_place`) when called on a multi-threaded runtime's worker.
pub fn wait<F: std::future::Future>(future: F) -> F::Output {
    use futures::FutureExt;
    let mut future = std::pin::pin!(future);
    if let Some(out) = future.as_mut().now_or_never() {
        return out;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| futures::executor::block_on(future))
        }
        _ => futures::executor::block_on(future),
    }
}
