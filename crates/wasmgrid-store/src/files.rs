//! DataFiles: `data://` files, folders, one-level and recursive listings, and
//! their change events (docs/STORAGE.md, section 2.3).
//!
//! Keys are logical, plain strings: a file is `owner/collection/path`, a folder
//! marker `owner/collection/path/`, and a folder's prefix ends in `/`. The data
//! domain validates paths, checks access and builds the change events before
//! it calls; this contract stores. Collections are not part of it: their
//! records stay on the old `Store` interface until they move to `Records`.

pub mod record;

use crate::{Page, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Change events written to the change log as one entry, at most: one entry
/// per event costs a B-tree insert each (the largest value a small file's
/// write stores), one per batch a share of one.
pub const OUTBOX_EVENTS_PER_RECORD: u64 = 64;

/// A file (or folder marker), as stored: the record every read and listing
/// decodes (stored in the binary form of [`record`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes.
    pub size: u64,
    /// Media type given at write time.
    pub content_type: String,
    /// Quoted entity tag (a SHA-256 prefix of the content).
    pub etag: String,
    /// Last write, RFC 3339 with milliseconds, UTC (`2024-01-02T03:04:05.123Z`).
    pub last_modified: String,
    /// Blob holding the content, for large files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// An empty folder marker rather than a file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folder: bool,
    /// Unix time after which the file is gone (temp collections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

impl FileRecord {
    /// Whether the file has expired at Unix time `now` (and reads as absent).
    pub fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// A file as read: its encoded record and, for a small file, its content,
/// both from one snapshot. The record stays encoded so that a reader that
/// needs two fields (a guest read: content type and content) decodes only
/// those, without allocating the others ([`record::decode_for_read`]).
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// The record in its stored form.
    pub record: Vec<u8>,
    /// The content of a small file (none for a large file, whose content is a
    /// blob, or a folder marker).
    pub inline: Option<Vec<u8>>,
}

/// One entry of a folder's level.
#[derive(Debug, Clone)]
pub enum Listed {
    /// A sub-folder: its name (the part of its keys after the prefix, up to `/`).
    Folder(String),
    /// A file: its name and record.
    File(String, FileRecord),
}

/// A page of one folder level ([`DataFiles::list_level`]).
#[derive(Debug, Clone)]
pub struct Level {
    /// Sub-folders and files in key order, a folder sorting as `name/`.
    pub entries: Vec<Listed>,
    /// The key of the first entry of the next page; `None` on the last page.
    pub next: Option<String>,
    /// Whether any key under the prefix was seen from the start key on (a
    /// folder exists while anything is under it, its own marker included).
    pub exists: bool,
}

/// What a folder prefix holds ([`DataFiles::occupancy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// No key starts with the prefix.
    Empty,
    /// Only the folder's own marker.
    MarkerOnly,
    /// At least one other key (a file, expired or not, or a sub-folder).
    Occupied,
}

/// A file of a recursive listing ([`DataFiles::list_tree`]).
#[derive(Debug, Clone)]
pub struct TreeItem {
    /// The file's key (`owner/collection/path`).
    pub key: String,
    /// Its record, encoded (see [`StoredFile`]).
    pub record: Vec<u8>,
    /// Its content, when it was read along (see `content_budget`).
    pub inline: Option<Vec<u8>>,
}

/// One file write of a [`DataFiles::write`] batch, prepared by the data domain
/// (access checked, record encoded, large content already in a blob, change
/// event built).
#[derive(Debug, Clone)]
pub struct FileWrite {
    /// The file's key, `owner/collection/path`.
    pub key: String,
    /// The record, encoded ([`record::encode`]).
    pub record: Vec<u8>,
    /// The blob holding the content (also named in the record), for a large file.
    pub blob: Option<String>,
    /// The content of a small file (ignored with a blob).
    pub inline: Bytes,
    /// The change event (CloudEvent JSON), `None` for writes that have none
    /// (temp collections).
    pub event: Option<Vec<u8>>,
    /// The collection record to create, in the same step, if the collection
    /// (`owner/collection`) does not exist yet: writing into a missing
    /// collection creates it. Collections stay on the old `Store` interface
    /// until they move to `Records`.
    pub new_collection: Bytes,
}

impl FileWrite {
    /// The key of the file's collection, `owner/collection`.
    pub fn collection_key(&self) -> &str {
        let owner_end = self.key.find('/').unwrap_or(self.key.len());
        let end = self.key[owner_end..]
            .get(1..)
            .and_then(|rest| rest.find('/'))
            .map_or(self.key.len(), |i| owner_end + 1 + i);
        &self.key[..end]
    }
}

/// Builds the change event of a file removed by a delete from its key and its
/// last record (`FileDeleted`); `None` for files that have none (folder
/// markers, temp collections). The data domain's one change-event builder.
pub type DeleteEvents<'a> = &'a (dyn Fn(&str, &FileRecord) -> Option<Vec<u8>> + Send + Sync);

/// What [`DataFiles::delete_tree`] and [`DataFiles::delete_expired`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Files removed (folder markers not counted).
    pub files: u64,
    /// The blobs the removed files named, to delete now that nothing names them.
    pub blobs: Vec<String>,
}

/// Builds a counter file's record (encoded) and change event for its new
/// value: the data domain's part of [`DataFiles::increment`].
pub type CounterWrite<'a> = &'a (dyn Fn(u64) -> (Vec<u8>, Option<Vec<u8>>) + Send + Sync);

/// Why an increment did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCounted {
    /// The file holds something other than a decimal `u64`.
    NotACounter,
    /// The sum does not fit a `u64`.
    Overflow,
}

/// What became of one [`FileWrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written; the blob of the content it replaced, to delete now that
    /// nothing names it.
    Done {
        /// The replaced file's blob (never the new file's own).
        replaced_blob: Option<String>,
    },
    /// Not written: the path is a folder (a marker `path/` exists).
    IsFolder,
}

/// Files, folders and their listings.
///
/// Reads are served from one consistent snapshot per call (embedded: one redb
/// read transaction); a call sees every write that returned before it started.
/// The embedded backend answers reads inline, without a thread hop, so a caller
/// on a blocking thread (a guest call, a job worker) may drive them with
/// `futures::executor::block_on` at the cost of one poll.
#[async_trait::async_trait]
pub trait DataFiles: Send + Sync {
    /// A file's (or folder marker's) record, expired ones included (the caller
    /// decides what expiry means for it). Corrupt records are
    /// [`StoreError::Corrupt`].
    async fn stat(&self, key: &str) -> Result<Option<FileRecord>, StoreError>;

    /// A file's record and inline content, from one snapshot (they always
    /// agree); `None` if there is no record under `key`.
    async fn read(&self, key: &str) -> Result<Option<StoredFile>, StoreError>;

    /// [`read`](Self::read) of several files, all from one snapshot.
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<StoredFile>>, StoreError>;

    /// [`read`](Self::read) answered on the calling thread without waiting,
    /// when the backend can (the embedded one always can; a networked one
    /// returns `None`, and the caller awaits `read`). The hot path of guest
    /// reads: it skips the boxed future and the executor poll, a third of a
    /// small read's cost on the embedded store.
    fn read_now(&self, key: &str) -> Option<Result<Option<StoredFile>, StoreError>> {
        let _ = key;
        None
    }

    /// [`read_many`](Self::read_many) answered without waiting, when the
    /// backend can (see [`read_now`](Self::read_now)).
    fn read_many_now(&self, keys: &[&str]) -> Option<Result<Vec<Option<StoredFile>>, StoreError>> {
        let _ = keys;
        None
    }

    /// One level under `prefix` (a folder prefix, ending in `/`), starting at
    /// key `start` (the prefix itself, or a marker's key): sub-folders (each
    /// once: a folder's subtree is skipped in one step) and files that have
    /// not expired, at most `limit` entries. Consistent per entry, not a
    /// snapshot of the whole level.
    async fn list_level(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
    ) -> Result<Level, StoreError>;

    /// Files whose key starts with `prefix`, recursively, in byte order of
    /// their keys, after key `after`: one scan of at most `limit` keys, of
    /// which folder markers and expired files are left out (so a page may hold
    /// fewer than `limit` items and still have a successor). `next` is the last
    /// key scanned when the scan was full, else `None`. The inline contents of
    /// the first small files, while their sizes add up to at most
    /// `content_budget` bytes, are read along from the same snapshot (0: none).
    async fn list_tree(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        content_budget: u64,
    ) -> Result<Page<TreeItem>, StoreError>;

    /// How many files [`list_tree`](Self::list_tree) would list under `prefix`
    /// over all its pages, from one snapshot.
    async fn count_tree(&self, prefix: &str) -> Result<u64, StoreError>;

    /// What is stored under the folder prefix `prefix` (keys starting with
    /// it, expired files and folder markers included): nothing, only the
    /// folder's own marker (`prefix` itself), or more. A read of at most two
    /// keys; it decides whether a delete without `force` may go ahead.
    async fn occupancy(&self, prefix: &str) -> Result<Occupancy, StoreError>;

    /// The data blobs named by file records (expired files included: their
    /// blobs go with their records), by key after `after`, at most `limit`
    /// records per page. The orphan sweep lists every page: O(files).
    async fn blob_references(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, StoreError>;

    /// Writes files, each with its change event, and creates their missing
    /// collections; one result per write, in order. Per file, the record, the
    /// content and the event take effect together or not at all (the batch as
    /// a whole is not promised to be atomic; the embedded backend happens to
    /// commit it in one transaction). Writes to one path take effect, and log
    /// their events, in call order. Everything written is durable when this
    /// returns `Ok`; on `Err` nothing of the batch was written (embedded), and
    /// the caller deletes the blobs it uploaded. The embedded backend runs the
    /// transaction on the calling thread: call it from a blocking thread, as
    /// the data domain does (no second thread hop for a write).
    async fn write(&self, batch: &[FileWrite]) -> Result<Vec<Written>, StoreError>;

    /// Deletes one file (or folder marker) with its change event (`events`),
    /// together; the removed record, `None` if there was none. Durable on
    /// return. Runs on the calling thread in the embedded backend (as `write`).
    async fn delete(
        &self,
        key: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Option<FileRecord>, StoreError>;

    /// Deletes every key under `prefix` (a folder prefix: files, markers, the
    /// folder's own marker), each with its change event, in steps of a few
    /// hundred files; each step is durable when the next starts. A crash or an
    /// error leaves part of the tree: calling again finishes it.
    async fn delete_tree(
        &self,
        prefix: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Removed, StoreError>;

    /// Deletes the files under `prefix` that expired at Unix time `now`, without
    /// change events (temp files vanish silently). Each file's removal is
    /// durable on its own.
    async fn delete_expired(&self, prefix: &str, now: u64) -> Result<Removed, StoreError>;

    /// Adds `delta` to the decimal counter file `key` (created at 0), writing
    /// the record and event `write` builds for the new value and creating the
    /// collection from `new_collection` if it is missing: a read-modify-write
    /// in which concurrent increments are never lost. The new value, or why it
    /// did not count (then nothing was written). Durable on return; runs on
    /// the calling thread in the embedded backend (as `write`).
    async fn increment(
        &self,
        key: &str,
        delta: u64,
        new_collection: Bytes,
        write: CounterWrite<'_>,
    ) -> Result<Result<u64, NotCounted>, StoreError>;

    /// Creates the empty folder marker `key` (ending in `/`) with `record`
    /// (encoded). [`StoreError::Exists`] if the marker, or a file of the same
    /// name (`key` without its `/`), is there. Durable on return.
    async fn create_folder(&self, key: &str, record: Vec<u8>) -> Result<(), StoreError>;
}

/// Unix time now, in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
