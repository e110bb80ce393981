//! Records: versioned metadata records with revisions, compare-and-set and a
//! watch (docs/STORAGE.md, section 2.1).
//!
//! Values are bytes; the domain encodes its own typed records (JSON) and reads
//! them back with the helpers of [`RecordsExt`]. Keys are logical:
//! `/`-separated, already validated parts (`owner/name/version`, a key id, a
//! topic name); each backend maps them onto its own keys.

use crate::{Page, Rev, StoreError};
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Serialize, de::DeserializeOwned};

/// A named set of records (a table in the embedded backend, a key/value bucket
/// in NATS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// API keys: key id → `KeyRecord` (hashed secret). Created and deleted,
    /// never updated.
    Keys,
    /// Algorithm versions: `owner/name/version` → `VersionRecord`, or a
    /// tombstone (a JSON object with a `deleted` field) once deleted. Create
    /// once, so a number is never reused; deleted by writing a tombstone.
    Versions,
    /// Data collections: `owner/collection` → `CollectionRecord`.
    Collections,
    /// Per-algorithm secrets: `owner/name/secret` → nonce ‖ ciphertext.
    Secrets,
    /// Custom event topics: topic name → `TopicRecord`.
    Topics,
    /// Event subscriptions: `topic/name` → `SubscriptionRecord`.
    Subscriptions,
    /// Batch jobs: job id → `JobRecord`.
    Jobs,
    /// Unique ids: `scope/id` → empty (see [`Records::next_id`]).
    Ids,
    /// Installation-wide settings created once (`cluster/admin_key`, ...).
    Meta,
}

impl Bucket {
    /// The bucket's name, as used in errors and by the backends.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Keys => "keys",
            Bucket::Versions => "versions",
            Bucket::Collections => "collections",
            Bucket::Secrets => "secrets",
            Bucket::Topics => "topics",
            Bucket::Subscriptions => "subscriptions",
            Bucket::Jobs => "jobs",
            Bucket::Ids => "ids",
            Bucket::Meta => "meta",
        }
    }
}

/// One stored record at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The record's logical key.
    pub key: String,
    /// The value as written (for an embedded `Versions` tombstone, see
    /// [`Bucket::Versions`] and docs/STORAGE.md 2.1: the taken mark).
    pub value: Bytes,
    /// The revision of this value.
    pub rev: Rev,
}

/// What a [`Records::watch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The record now has this value (a snapshot entry, or a later write).
    Put(Entry),
    /// The record was deleted at revision `rev`.
    Deleted {
        /// The deleted record's key.
        key: String,
        /// The revision of the deletion.
        rev: Rev,
    },
    /// Every current record under the prefix has been reported (the initial
    /// snapshot, or the one after a [`Change::Reset`]); what follows is live.
    Synced,
    /// The watcher fell behind and lost changes: forget everything this watch
    /// reported; a fresh snapshot follows, then [`Change::Synced`].
    Reset,
}

/// Versioned metadata records with create-once, compare-and-set and a watch
/// (docs/STORAGE.md 2.1). Every write is atomic for its one record and durable
/// when it returns; a crash keeps either the new or the old value. Revisions
/// increase per key and are never reused; a record written by an older build,
/// which has no revision of its own, reads as revision 1.
#[async_trait::async_trait]
pub trait Records: Send + Sync {
    /// The current record, or `None`. Sees every write that returned before
    /// the call started.
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Create-if-absent: [`StoreError::Exists`] when the key exists or existed
    /// as a tombstone. Atomic, durable on return; after a crash the record is
    /// there or not at all.
    async fn create(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<Rev, StoreError>;

    /// [`create`](Self::create) of a record of a fed bucket (`Versions`) with
    /// the change event the domain built for it (`system.algorithms`). The
    /// embedded backend appends `event` to the outbox in the record's own
    /// transaction, so a crash keeps both or neither. The NATS backend does not
    /// publish it here: its versions feed derives the event from the record's
    /// revision (docs/STORAGE.md 4.2, dedup id `ver.<key>.<rev>`).
    async fn create_announced(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        event: Bytes,
    ) -> Result<Rev, StoreError>;

    /// Update-if-revision: [`StoreError::Changed`] unless the record is at
    /// `expected` (a missing record is `Changed` with `found: None`). Atomic,
    /// durable on return. Not relied on to exclude a concurrent writer on NATS
    /// before 2.9.21 (STORAGE.md rule 3).
    async fn update(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        expected: Rev,
    ) -> Result<Rev, StoreError>;

    /// [`update`](Self::update) with the change event of a fed bucket, as
    /// [`create_announced`](Self::create_announced): how a `Versions` record
    /// becomes a tombstone together with its `VersionDeleted` event.
    async fn update_announced(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        expected: Rev,
        event: Bytes,
    ) -> Result<Rev, StoreError>;

    /// Unconditional write (last writer wins). Atomic, durable on return.
    async fn put(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<Rev, StoreError>;

    /// Delete-if-revision (`None`: unconditional; deleting a missing record
    /// then does nothing). Not for name records that must stay unique: those
    /// are tombstoned through [`update`](Self::update) (STORAGE.md rule 4).
    /// Atomic, durable on return.
    async fn delete(
        &self,
        bucket: Bucket,
        key: &str,
        expected: Option<Rev>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` records whose key starts with `prefix` (`""`, or whole
    /// parts ending in `/`), in key order, after the key `after`. Embedded: one
    /// snapshot per page; NATS: none across keys.
    async fn list(
        &self,
        bucket: Bucket,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Entry>, StoreError>;

    /// Every current record under `prefix` ([`Change::Put`]), then
    /// [`Change::Synced`], then every later change: per key in revision order,
    /// across keys in commit order. The snapshot reflects every write
    /// acknowledged before the call. Changes of one key that follow each
    /// other quickly may coalesce: a watcher is promised the latest revision
    /// of every key, not each one in between (NATS keeps one revision per key
    /// in most buckets, so a consumer that reads after two puts sees only the
    /// second). A watcher that falls behind gets [`Change::Reset`] and a
    /// fresh snapshot. For the per-node caches, which want the current value.
    async fn watch(
        &self,
        bucket: Bucket,
        prefix: &str,
    ) -> Result<BoxStream<'static, Result<Change, StoreError>>, StoreError>;

    /// A new id in `scope` (`"subscription"`): never handed out again, even
    /// after a crash; unique, not promised to be ordered. Durable on return.
    async fn next_id(&self, scope: &str) -> Result<u64, StoreError>;
}

/// A decoded record and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed<T> {
    /// The decoded value.
    pub value: T,
    /// Its revision.
    pub rev: Rev,
}

/// JSON helpers over any [`Records`] (generic, so outside the object-safe
/// trait).
#[async_trait::async_trait]
pub trait RecordsExt: Records {
    /// Reads and decodes a JSON record.
    async fn get_json<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<Typed<T>>, StoreError> {
        match self.get(bucket, key).await? {
            None => Ok(None),
            Some(entry) => Ok(Some(Typed {
                value: decode(bucket, &entry)?,
                rev: entry.rev,
            })),
        }
    }

    /// Creates a JSON record ([`Records::create`]).
    async fn create_json<T: Serialize + Sync>(
        &self,
        bucket: Bucket,
        key: &str,
        value: &T,
    ) -> Result<Rev, StoreError> {
        self.create(bucket, key, encode(value)?).await
    }

    /// Updates a JSON record at `expected` ([`Records::update`]).
    async fn update_json<T: Serialize + Sync>(
        &self,
        bucket: Bucket,
        key: &str,
        value: &T,
        expected: Rev,
    ) -> Result<Rev, StoreError> {
        self.update(bucket, key, encode(value)?, expected).await
    }

    /// Writes a JSON record unconditionally ([`Records::put`]).
    async fn put_json<T: Serialize + Sync>(
        &self,
        bucket: Bucket,
        key: &str,
        value: &T,
    ) -> Result<Rev, StoreError> {
        self.put(bucket, key, encode(value)?).await
    }

    /// Every record under `prefix`, all pages (for loading a cache at start).
    async fn list_all(&self, bucket: Bucket, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        const PAGE: usize = 1000;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(bucket, prefix, after.as_deref(), PAGE).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }
}

impl<R: Records + ?Sized> RecordsExt for R {}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| StoreError::Backend(format!("encoding a record: {e}")))
}

/// Decodes an entry's JSON value; an undecodable value is
/// [`StoreError::Corrupt`].
pub fn decode<T: DeserializeOwned>(bucket: Bucket, entry: &Entry) -> Result<T, StoreError> {
    serde_json::from_slice(&entry.value).map_err(|e| StoreError::Corrupt {
        table: bucket.name(),
        key: entry.key.clone(),
        reason: e.to_string(),
    })
}

/// What [`follow`] hands its applier.
#[derive(Debug)]
pub enum Followed<'a> {
    /// The record now has this value.
    Put(&'a Entry),
    /// The record is gone.
    Deleted(&'a str),
    /// The watch fell behind and read a fresh snapshot: these are every key
    /// it holds; drop what the cache has beyond them.
    Resynced(&'a std::collections::HashSet<String>),
}

/// Keeps a node's cache of `bucket` (under `prefix`) current with what every
/// node writes (cluster mode): watches it until `shutdown` resolves and hands
/// each change to `apply`, starting the watch again after an error. The
/// first snapshot comes as plain `Put`s (the cache was loaded from it
/// already, so applying them again must change nothing).
pub async fn follow(
    records: &dyn Records,
    bucket: Bucket,
    prefix: &str,
    shutdown: impl std::future::Future<Output = ()>,
    mut apply: impl FnMut(Followed<'_>),
) {
    use futures::StreamExt;
    use std::time::Duration;
    tokio::pin!(shutdown);
    // After a failed watch, the next one's snapshot replaces the cache: keys
    // deleted while no watch ran would otherwise stay in it.
    let mut restarted = false;
    loop {
        let mut watch = tokio::select! {
            w = records.watch(bucket, prefix) => match w {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(bucket = bucket.name(), error = %e, "watching records failed; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = &mut shutdown => return,
                    }
                }
            },
            _ = &mut shutdown => return,
        };
        // Between a Reset (or a restart) and the Synced after it: the keys
        // of the snapshot.
        let mut resync: Option<std::collections::HashSet<String>> =
            restarted.then(Default::default);
        restarted = true;
        loop {
            let change = tokio::select! {
                c = watch.next() => c,
                _ = &mut shutdown => return,
            };
            match change {
                Some(Ok(Change::Put(entry))) => {
                    if let Some(seen) = resync.as_mut() {
                        seen.insert(entry.key.clone());
                    }
                    apply(Followed::Put(&entry));
                }
                Some(Ok(Change::Deleted { key, .. })) => apply(Followed::Deleted(&key)),
                Some(Ok(Change::Reset)) => resync = Some(Default::default()),
                Some(Ok(Change::Synced)) => {
                    if let Some(seen) = resync.take() {
                        apply(Followed::Resynced(&seen));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(bucket = bucket.name(), error = %e, "a records watch failed; starting it again");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut shutdown => return,
        }
    }
}
