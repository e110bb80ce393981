//! The embedded backend's low-level interface: named tables of ordered
//! string keys, multi-table transactions, write batches and blob writers.
//! Private to this crate (the contracts are built on it); public only with
//! the `raw` feature, for tests and benches (see the crate docs).

// Parts of it (raw batch writes, component blobs by digest, JSON helpers) only
// tests use, to write rows in old formats or crashed states.
#![cfg_attr(not(any(test, feature = "raw")), allow(dead_code))]

use crate::StoreError;
use serde::{Serialize, de::DeserializeOwned};

/// A named key space. Keys within a table are UTF-8 strings compared bytewise, so
/// `/`-separated keys list in path order and prefix scans select a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Table(pub(crate) &'static str);

impl Table {
    /// Store-wide settings (`schema_version`, ...).
    pub const META: Table = Table("meta");
    /// `owner/name/version` → `wasmgrid_core::registry::VersionRecord`.
    pub const VERSIONS: Table = Table("versions");
    /// `owner/name/version` → `{}`: every version number ever published, deleted or
    /// not, so that a number is never reused.
    pub const TAKEN_VERSIONS: Table = Table("taken_versions");
    /// key id → `wasmgrid_core::auth::KeyRecord` (hashed secret, owner, scopes).
    pub const KEYS: Table = Table("keys");
    /// `owner/collection` → `wasmgrid_core::data::CollectionRecord`.
    pub const COLLECTIONS: Table = Table("collections");
    /// `owner/collection/path` → [`files::FileRecord`] (folder markers end
    /// in `/`), binary since schema version 2 (JSON before).
    pub const FILES: Table = Table("files");
    /// `owner/collection/path` → raw bytes of a small file (large files live in
    /// blobs).
    pub const FILE_DATA: Table = Table("file_data");
    /// 20-digit sequence → CloudEvent JSON: change events recorded in the same
    /// transaction as the change (the outbox of `system.data`).
    pub const OUTBOX: Table = Table("outbox");
    /// `owner/name/secret` → nonce ‖ ciphertext of a per-algorithm secret.
    pub const SECRETS: Table = Table("secrets");
    /// topic name → `wasmgrid_events::TopicRecord` (custom topics).
    pub const TOPICS: Table = Table("topics");
    /// `topic/subscription` → `wasmgrid_events::SubscriptionRecord`.
    pub const SUBSCRIPTIONS: Table = Table("subscriptions");
    /// `{subscription id:016x}/{sequence:020}` → a queued delivery (the event
    /// plus its attempt state): one durable queue per subscription.
    pub const EVENT_QUEUE: Table = Table("event_queue");
    /// `{subscription id:016x}/{sequence:020}` → a dead-lettered event with
    /// its reason, attempts and last outcome.
    pub const DEAD_LETTERS: Table = Table("dead_letters");
    /// `k/{topic}\n{source}\n{id}` → first-seen time, and
    /// `t/{ms:020}/{topic}\n{source}\n{id}` for expiry in time order: the
    /// ingest deduplication window.
    pub const EVENT_DEDUP: Table = Table("event_dedup");
    /// job id → `wasmgrid_jobs::JobRecord` (ids sort newest first).
    pub const JOBS: Table = Table("jobs");
    /// `job id/relative input path` → `wasmgrid_jobs::FileProgress`: a job's
    /// finished input files, written in the same transaction as their output.
    pub const JOB_FILES: Table = Table("job_files");

    /// Every table the store knows, created when the store is opened.
    pub const ALL: &'static [Table] = &[
        Table::META,
        Table::VERSIONS,
        Table::TAKEN_VERSIONS,
        Table::KEYS,
        Table::COLLECTIONS,
        Table::FILES,
        Table::FILE_DATA,
        Table::OUTBOX,
        Table::SECRETS,
        Table::TOPICS,
        Table::SUBSCRIPTIONS,
        Table::EVENT_QUEUE,
        Table::DEAD_LETTERS,
        Table::EVENT_DEDUP,
        Table::JOBS,
        Table::JOB_FILES,
    ];

    /// The table's name as stored.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// One write in a [`WriteBatch`].
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// Target table.
        table: Table,
        /// Key.
        key: String,
        /// Encoded value.
        value: Vec<u8>,
    },
    /// Remove `key` (no error if absent).
    Delete {
        /// Target table.
        table: Table,
        /// Key.
        key: String,
    },
    /// Fail the whole batch with [`StoreError::Conflict`] if `key` exists.
    RequireAbsent {
        /// Table to check.
        table: Table,
        /// Key that must not exist.
        key: String,
    },
}

/// Writes applied atomically and durably by [`Store::commit`]: all or none, and
/// on disk when `commit` returns.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of a JSON-encoded record.
    pub fn put_json<T: Serialize>(
        &mut self,
        table: Table,
        key: impl Into<String>,
        value: &T,
    ) -> &mut Self {
        // Serializing our own record types cannot fail (no maps with non-string keys).
        let value = serde_json::to_vec(value).unwrap_or_default();
        self.ops.push(WriteOp::Put {
            table,
            key: key.into(),
            value,
        });
        self
    }

    /// Adds a put of raw bytes.
    pub fn put_raw(&mut self, table: Table, key: impl Into<String>, value: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::Put {
            table,
            key: key.into(),
            value,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: impl Into<String>) -> &mut Self {
        self.ops.push(WriteOp::Delete {
            table,
            key: key.into(),
        });
        self
    }

    /// Makes the batch fail with a conflict if `key` already exists.
    pub fn require_absent(&mut self, table: Table, key: impl Into<String>) -> &mut Self {
        self.ops.push(WriteOp::RequireAbsent {
            table,
            key: key.into(),
        });
        self
    }

    /// The operations in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }
}

/// Where a scan starts.
#[derive(Debug, Clone, Copy)]
pub enum Cursor<'a> {
    /// At the first key strictly after this one.
    After(&'a str),
    /// At this key or the first one after it.
    From(&'a str),
}

/// Reads and writes inside one transaction (see [`Store::transact`]).
pub trait Txn {
    /// Reads one value as of this transaction (including its own writes).
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries with keys from `first` to `last` (both included),
    /// in key order, as of this transaction: one tree walk where several
    /// neighbouring keys are wanted.
    fn range(
        &self,
        table: Table,
        first: &str,
        last: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Sets a value.
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Sets a value unless the key has one; whether it did. One lookup
    /// where `get` then `put` takes two (a job's per-file create-once).
    fn put_if_absent(&mut self, table: Table, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        if self.get(table, key)?.is_some() {
            return Ok(false);
        }
        self.put(table, key, value)?;
        Ok(true)
    }
    /// Removes a value (no error if absent).
    fn delete(&mut self, table: Table, key: &str) -> Result<(), StoreError>;
    /// Appends `value` under the table's next sequence number (20 digits,
    /// zero-padded, so keys sort in order) and returns the number. Numbers are
    /// never reused, even after entries are deleted.
    fn append(&mut self, table: Table, value: &[u8]) -> Result<u64, StoreError> {
        self.append_many(table, value, 1)
    }
    /// Takes the table's next `count` (at least 1) sequence numbers for one
    /// value standing for that many entries (a batch of change events), stores
    /// it under the last of them, and returns the first. Keyed by the last, a
    /// scan for entries after number `n` finds every value holding one.
    fn append_many(&mut self, table: Table, value: &[u8], count: u64) -> Result<u64, StoreError>;
}

/// A large value being written outside any transaction (a data file), made
/// durable and named by [`BlobWriter::finish`]. The writer then records it in a
/// transaction and calls [`Store::blob_recorded`], or deletes it.
pub trait BlobWriter: std::io::Write + Send {
    /// Flushes to stable storage and returns the blob's id. Dropping the writer
    /// without finishing discards it.
    fn finish(self: Box<Self>) -> Result<String, StoreError>;
}

/// The storage interface: a transactional key/value store plus blobs.
///
/// Methods are blocking (the embedded backend fsyncs on commit); async callers run
/// writes on a blocking thread.
pub trait Store: Send + Sync + 'static {
    /// Reads one value.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads several values from one consistent snapshot.
    fn get_many(&self, reads: &[(Table, &str)]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    /// Lists up to `limit` entries whose key starts with `prefix`, in key order,
    /// starting at `from` when given.
    fn scan(
        &self,
        table: Table,
        prefix: &str,
        from: Option<Cursor<'_>>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Counts the entries whose key starts with `prefix` and that
    /// `keep(key, value)` accepts, from one snapshot, without copying them.
    fn count(
        &self,
        table: Table,
        prefix: &str,
        keep: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<u64, StoreError>;

    /// [`scan`](Self::scan) of `table`, and, from the same snapshot, for each
    /// listed entry that `want(key, value)` accepts, the value of the same key
    /// in `joined` (`None` where it has none or was not wanted). Reads a
    /// listing and the rows it points at in one pass, without a lookup per
    /// key (the embedded backend walks both tables in key order).
    #[allow(clippy::type_complexity)]
    fn scan_joined(
        &self,
        table: Table,
        prefix: &str,
        from: Option<Cursor<'_>>,
        limit: usize,
        joined: Table,
        want: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<Vec<(String, Vec<u8>, Option<Vec<u8>>)>, StoreError>;

    /// Runs `f` in one atomic, durable transaction: everything it wrote is on
    /// disk when `transact` returns `Ok`, and nothing is written if `f` (or the
    /// commit) fails.
    fn transact(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs `f` in one atomic transaction that becomes durable with the next
    /// durable one (a later [`Store::transact`] by anybody) instead of waiting
    /// for the disk itself. After a crash it is either wholly there or wholly
    /// absent. For writes whose loss only repeats work, such as delivery
    /// acknowledgements (at-least-once delivery allows a second delivery).
    /// The default is a durable [`Store::transact`].
    fn transact_lazy(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.transact(f)
    }

    /// Applies a batch atomically and durably.
    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.transact(&mut |txn| {
            for op in batch.ops() {
                match op {
                    WriteOp::Put { table, key, value } => txn.put(*table, key, value)?,
                    WriteOp::Delete { table, key } => txn.delete(*table, key)?,
                    WriteOp::RequireAbsent { table, key } => {
                        if txn.get(*table, key)?.is_some() {
                            return Err(StoreError::Conflict {
                                table: table.name(),
                                key: key.clone(),
                            });
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Stores a blob under its content digest (idempotent).
    fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError>;

    /// Reads a blob by digest.
    fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Starts writing a new data blob.
    fn create_blob(&self) -> Result<Box<dyn BlobWriter>, StoreError>;

    /// Opens a data blob for reading; `None` if it does not exist.
    fn open_blob(&self, id: &str) -> Result<Option<std::fs::File>, StoreError>;

    /// Deletes a data blob (no error if absent).
    fn delete_blob(&self, id: &str) -> Result<(), StoreError>;

    /// Tells the store that the record pointing at a finished data blob is
    /// committed. From [`BlobWriter::finish`] until this call (or
    /// [`Store::delete_blob`]) the blob is being uploaded, and
    /// [`Store::settled_data_blobs`] leaves it out.
    fn blob_recorded(&self, _id: &str) {}

    /// Ids of the data blobs that exist and are not being uploaded: what the
    /// orphan sweep may consider. Any blob listed whose upload finished had its
    /// record committed before this call returned. A backend that cannot list
    /// blobs returns none.
    fn settled_data_blobs(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

/// Typed helpers over any [`Store`].
pub trait StoreExt: Store {
    /// Reads and decodes a JSON record.
    fn get_json<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get(table, key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        table: table.name(),
                        key: key.to_string(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Reads and decodes every record under `prefix` (all pages).
    fn scan_json<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        const PAGE: usize = 1000;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.scan(table, prefix, after.as_deref().map(Cursor::After), PAGE)?;
            let full = page.len() == PAGE;
            for (key, bytes) in page {
                let value = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    table: table.name(),
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                after = Some(key.clone());
                out.push((key, value));
            }
            if !full {
                return Ok(out);
            }
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
