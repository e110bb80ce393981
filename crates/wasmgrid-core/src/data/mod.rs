//! Hosted data collections: `data://owner/collection/path` files shared by the
//! HTTP API, the CLI and algorithms, with read ACLs, per-algorithm grants, and a
//! change event for every write recorded in the same transaction (the outbox that
//! feeds the `system.data` topic).
//!
//! Small files (≤ [`INLINE_MAX`]) live in the store next to their record; larger
//! files are streamed into blobs outside any transaction, so a big upload never
//! holds the store's writer, and only the final record swap is transactional.
//! Folders are path prefixes (plus optional empty folder markers, so that
//! Algorithmia's `dir.create()` works).

mod path;

pub use path::{DataPath, DataPathRef, TEMP_PREFIX, validate_path};

use crate::auth::{Caller, Scope};
use crate::clock::now_rfc3339;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmgrid_engine::error_kind::ErrorKind;
use wasmgrid_engine::identity::GuestIdentity;
use wasmgrid_store::StoreError;
use wasmgrid_store::blobs::{BlobId, BlobReader, Blobs};
pub use wasmgrid_store::files::FileRecord;
use wasmgrid_store::files::{DataFiles, FileWrite, Listed, NotCounted, Occupancy, Written, record};
use wasmgrid_store::records::{Bucket, Records};

/// What file records are called in corrupt-record errors.
const FILES: &str = "files";

/// Largest file kept inline in the store; larger files become blobs.
pub const INLINE_MAX: usize = 256 * 1024;
/// Default largest file accepted through the API.
pub const DEFAULT_MAX_FILE: u64 = 1 << 30;
/// Default lifetime of files in an algorithm's temp collection.
pub const DEFAULT_TEMP_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most entries one listing page returns.
pub const MAX_PAGE: usize = 1000;

/// ACL values Algorithmia defines.
pub const ACL_PUBLIC: &str = "user://*";
/// Readable by the owner's algorithms.
pub const ACL_MY_ALGOS: &str = "algo://.my/*";

/// A collection's read ACL: `[]` (the owner's keys only), `["algo://.my/*"]` (also
/// the owner's algorithms) or `["user://*"]` (any key and any algorithm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// Who may read.
    pub read: Vec<String>,
}

impl Acl {
    /// `[]`.
    pub fn private() -> Self {
        Self { read: vec![] }
    }
    /// `["algo://.my/*"]`: Algorithmia's default for new collections.
    pub fn my_algorithms() -> Self {
        Self {
            read: vec![ACL_MY_ALGOS.into()],
        }
    }
    /// Checks that every entry is one wasmgrid understands.
    pub fn validate(&self) -> Result<(), DataError> {
        for r in &self.read {
            if r != ACL_PUBLIC && r != ACL_MY_ALGOS {
                return Err(DataError::Invalid(format!(
                    "unknown read ACL entry {r:?}: use [] (private), [\"algo://.my/*\"] (the owner's algorithms) or [\"user://*\"] (public)"
                )));
            }
        }
        Ok(())
    }
    fn is_public(&self) -> bool {
        self.read.iter().any(|r| r == ACL_PUBLIC)
    }
    fn owner_algorithms(&self) -> bool {
        self.is_public() || self.read.iter().any(|r| r == ACL_MY_ALGOS)
    }
}

/// A collection, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Read ACL.
    pub acl: Acl,
    /// Creation time (RFC 3339).
    pub created: String,
}

/// Why a data operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DataError {
    /// No such file, folder or collection.
    #[error("{0}")]
    NotFound(String),
    /// Not permitted (keys: 403; algorithms: `access-denied`).
    #[error("{0}")]
    Forbidden(String),
    /// A malformed URI or path.
    #[error("{0}")]
    InvalidUri(String),
    /// A malformed request (ACL, marker, ...).
    #[error("{0}")]
    Invalid(String),
    /// Above a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The collection exists already, or is not empty.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("data store unavailable: {0}")]
    Unavailable(String),
}

impl DataError {
    /// The class of this failure (its `error_type` is [`ErrorKind::as_str`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DataError::NotFound(_) => ErrorKind::NotFound,
            DataError::Forbidden(_) => ErrorKind::AuthError,
            DataError::InvalidUri(_) | DataError::Invalid(_) => ErrorKind::InputError,
            DataError::TooLarge(_) => ErrorKind::PayloadTooLarge,
            DataError::Conflict(_) => ErrorKind::AlreadyExists,
            DataError::Unavailable(_) => ErrorKind::InternalError,
        }
    }

    /// A write onto `uri` that found a folder there.
    pub fn is_a_folder(uri: &str) -> DataError {
        DataError::Conflict(format!("{uri} is a folder"))
    }
}

impl From<StoreError> for DataError {
    fn from(e: StoreError) -> Self {
        DataError::Unavailable(e.to_string())
    }
}

/// The collection an access check is about.
#[derive(Clone, Copy)]
struct Target<'a> {
    owner: &'a str,
    collection: &'a str,
}

impl<'a> Target<'a> {
    fn of(p: &'a DataPath) -> Self {
        Self {
            owner: &p.owner,
            collection: &p.collection,
        }
    }
    fn of_ref(p: &'a DataPathRef<'_>) -> Self {
        Self {
            owner: p.owner(),
            collection: p.collection(),
        }
    }
}

/// Who is asking.
#[derive(Clone, Copy)]
pub enum Principal<'a> {
    /// An API key.
    Key(&'a Caller),
    /// A running algorithm.
    Algorithm(&'a GuestIdentity),
}

impl Principal<'_> {
    /// The hop count the change events of this principal's writes carry (an
    /// algorithm run an event triggered; see [`wasmgrid_engine::identity::HOPS_ATTRIBUTE`]).
    fn hops(&self) -> u32 {
        match self {
            Principal::Key(c) => c.hops,
            Principal::Algorithm(a) => a.hops,
        }
    }

    /// The owner `.my` stands for.
    pub fn owner(&self) -> &str {
        match self {
            Principal::Key(c) => &c.owner,
            Principal::Algorithm(a) => &a.owner,
        }
    }

    /// Parses a `data://` URI for this principal (`.my`, `.algo/temp`).
    pub fn parse(&self, uri: &str) -> Result<DataPath, DataError> {
        match self {
            Principal::Key(c) => DataPath::parse(uri, &c.owner, None),
            Principal::Algorithm(a) => DataPath::parse(uri, &a.owner, Some(&a.name)),
        }
    }

    /// Parses a `data://` URI for this principal without allocating when it can
    /// (see [`DataPathRef`]).
    pub fn parse_ref<'u>(&self, uri: &'u str) -> Result<DataPathRef<'u>, DataError> {
        match self {
            Principal::Key(c) => DataPathRef::parse(uri, &c.owner, None),
            Principal::Algorithm(a) => DataPathRef::parse(uri, &a.owner, Some(&a.name)),
        }
    }

    fn grant(&self, p: Target<'_>, write: bool) -> bool {
        let Principal::Algorithm(a) = self else {
            return false;
        };
        if a.owner != p.owner {
            return false;
        }
        // A grant is `data://{owner or .my}/{collection or *}:{read or write}`;
        // matched by comparing prefixes and suffixes (this runs on every guest
        // data call).
        a.grants.iter().any(|g| {
            let Some(rest) = g.strip_prefix("data://") else {
                return false;
            };
            let target = match rest.strip_suffix(":write") {
                Some(t) => t,
                None if write => return false,
                None => match rest.strip_suffix(":read") {
                    Some(t) => t,
                    None => return false,
                },
            };
            let coll = [".my", a.owner.as_str()]
                .into_iter()
                .find_map(|o| target.strip_prefix(o)?.strip_prefix('/'));
            coll.is_some_and(|c| c == "*" || c == p.collection)
        })
    }

    fn is_own_temp(&self, p: Target<'_>) -> bool {
        matches!(self, Principal::Algorithm(a) if p.owner == a.owner
            && p.collection.strip_prefix(TEMP_PREFIX) == Some(a.name.as_str()))
    }

    /// Checks read access to a collection.
    fn check_read(&self, p: Target<'_>, coll: &CollectionRecord) -> Result<(), DataError> {
        let ok = match self {
            Principal::Key(c) => {
                if !c.acts_for(&coll.owner) && !coll.acl.is_public() {
                    // Another owner's private collection reads as a missing one.
                    return Err(not_found_target(p));
                }
                c.is_admin()
                    || coll.acl.is_public()
                    || (c.scopes.contains(&Scope::DataRead) || c.scopes.contains(&Scope::DataWrite))
            }
            Principal::Algorithm(a) => {
                coll.acl.is_public()
                    || self.is_own_temp(p)
                    || (a.owner == coll.owner
                        && (coll.acl.owner_algorithms() || self.grant(p, false)))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(self.denied(p, "read"))
        }
    }

    /// Checks write access to a collection (existing or about to be created).
    fn check_write(&self, p: &DataPath) -> Result<(), DataError> {
        let p = Target::of(p);
        let ok = match self {
            Principal::Key(c) => c.require(Scope::DataWrite, p.owner).is_ok(),
            Principal::Algorithm(_) => self.is_own_temp(p) || self.grant(p, true),
        };
        if ok {
            Ok(())
        } else {
            Err(self.denied(p, "write"))
        }
    }

    fn denied(&self, p: Target<'_>, what: &str) -> DataError {
        let coll = format!("data://{}/{}", p.owner, p.collection);
        DataError::Forbidden(match self {
            // Names the path asked for, never another owner.
            Principal::Key(c) if c.acts_for(p.owner) => format!(
                "this key may not {what} {coll}: it needs the data:{what} scope{}",
                if what == "read" {
                    ", or the collection must be public"
                } else {
                    ""
                }
            ),
            Principal::Key(_) => format!(
                "this key may not {what} {coll}: only keys of the collection's owner with the data:{what} scope, or admin keys, may"
            ),
            Principal::Algorithm(a) => format!(
                "algorithm {}/{} may not {what} {coll}: deploy it with --grant {coll}:{what}{}",
                a.owner,
                a.name,
                if what == "read" {
                    " (or make the collection readable by the owner's algorithms or public)"
                } else {
                    ""
                }
            ),
        })
    }
}

/// A file's content, for reading.
pub enum Content {
    /// Small files.
    Inline(bytes::Bytes),
    /// Large files: an open blob, read asynchronously.
    Blob {
        /// The content's size in bytes.
        size: u64,
        /// Its bytes, from the start.
        reader: BlobReader,
    },
}

impl Content {
    /// The whole content in memory (a large one read from its blob).
    pub async fn into_bytes(self) -> std::io::Result<bytes::Bytes> {
        match self {
            Content::Inline(b) => Ok(b),
            Content::Blob { size, mut reader } => {
                use tokio::io::AsyncReadExt;
                let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                reader.read_to_end(&mut buf).await?;
                Ok(buf.into())
            }
        }
    }
}

/// One level of a folder, Algorithmia style.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Sub-folders.
    pub folders: Vec<FolderEntry>,
    /// Files.
    pub files: Vec<FileEntry>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// A folder in a [`Listing`].
#[derive(Debug, Clone, Serialize)]
pub struct FolderEntry {
    /// Folder name.
    pub name: String,
}

/// A file in a [`Listing`].
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// File name (last path segment).
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
    /// RFC 3339 with milliseconds.
    pub last_modified: String,
    /// Media type.
    pub content_type: String,
    /// Entity tag.
    pub etag: String,
}

/// A page of [`DataService::list_tree`]: `(path, size)` pairs and where the
/// next page starts.
pub type TreePage = (Vec<(DataPath, u64)>, Option<String>);

/// One file read for a guest: its content type and content, or why not.
pub type GuestRead = Result<(String, Content), DataError>;

/// A file of a recursive listing read with [`DataService::list_tree_with_content`].
pub struct ListedFile {
    /// Where it is.
    pub path: DataPathRef<'static>,
    /// Size in bytes.
    pub size: u64,
    /// Content type and content (or why it cannot be read), for the small
    /// files read along with the listing; `None` for the others.
    pub content: Option<GuestRead>,
}

/// A page of a recursive listing: `(path, record)` pairs and the marker of the
/// next page.
pub type FilePage = (Vec<(DataPath, FileRecord)>, Option<String>);

/// A file write prepared by [`DataService::stage_write`]: access checked, the
/// record and change event encoded, large content already in a blob. Applying it
/// (inside a transaction, for batch jobs) is all that remains.
pub struct StagedWrite {
    /// Where the file goes (owns its store key).
    path: DataPathRef<'static>,
    record: FileRecord,
    /// What the store is handed.
    write: FileWrite,
}

pub use wasmgrid_store::files::OUTBOX_EVENTS_PER_RECORD;

impl StagedWrite {
    /// Where the file goes.
    pub fn path(&self) -> DataPath {
        self.path.to_owned()
    }

    /// The record the file will have.
    pub fn record(&self) -> &FileRecord {
        &self.record
    }

    /// What the store is handed: the file's key, record, content (or blob)
    /// and change event, for a batch write of the caller's (a job's outputs,
    /// through the JobQueue contract). If the write never happens, delete its
    /// blob ([`DataService::release_blobs`]).
    pub fn into_file_write(self) -> FileWrite {
        self.write
    }

    /// What a write's result means to the data domain.
    fn outcome(&self, written: Written) -> Result<Option<String>, DataError> {
        match written {
            Written::Done { replaced_blob } => Ok(replaced_blob),
            Written::IsFolder => Err(DataError::is_a_folder(&self.path.uri())),
        }
    }
}

/// The data service.
pub struct DataService {
    /// Collection records ([`Bucket::Collections`]).
    records: Arc<dyn Records>,
    /// Large contents (the orphan sweep and streamed downloads go through it).
    blobs: Arc<dyn Blobs>,
    /// File records and small contents: reads and listings go through it.
    files: Arc<dyn DataFiles>,
    temp_ttl: Duration,
    /// Collection records by `owner/collection`: every file read checks its
    /// collection's ACL, and collections change rarely. Entries are dropped after
    /// every change; `generation` keeps a reader that loaded a record before a
    /// change from caching it after (see [`DataService::collection`]).
    collections: std::sync::RwLock<std::collections::HashMap<String, Arc<CollectionRecord>>>,
    /// Bumped, under the `collections` write lock, by every collection change.
    generation: std::sync::atomic::AtomicU64,
    /// Tells this service's entries in [`LAST_COLLECTION`] from another's.
    id: u64,
}

/// The collection a thread last checked a guest read against, so that a run of
/// reads from one collection (the usual pattern) skips the shared cache's lock
/// and hashing. Valid while its service's `generation` is unchanged: a change
/// bumps it, and a record read before the bump is tagged with the older value.
struct LastCollection {
    service: u64,
    generation: u64,
    key: String,
    record: Arc<CollectionRecord>,
}

thread_local! {
    static LAST_COLLECTION: std::cell::RefCell<Option<LastCollection>> =
        const { std::cell::RefCell::new(None) };
    /// The last implicit collection record this thread encoded for a write:
    /// `(collection key, created, encoded)`. A batch of writes into one
    /// collection within one millisecond (a job's outputs) encodes it once.
    static LAST_IMPLICIT: std::cell::RefCell<Option<(String, String, bytes::Bytes)>> =
        const { std::cell::RefCell::new(None) };
}

/// Source of [`DataService`] ids.
static NEXT_SERVICE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Drives a [`DataFiles`] read from this thread. The service's reads run on
/// blocking threads and guest threads, and the embedded backend answers them
/// inline: one poll, no thread hop, nothing an async thread waits for.
fn wait<T>(read: impl std::future::Future<Output = T>) -> T {
    wasmgrid_store::wait(read)
}

/// Decodes a stored record (owned, or a view borrowing from `bytes`).
fn decode<'a, T: Deserialize<'a>>(
    table: &'static str,
    key: &str,
    bytes: &'a [u8],
) -> Result<T, DataError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DataError::Unavailable(
            StoreError::Corrupt {
                table,
                key: key.into(),
                reason: e.to_string(),
            }
            .to_string(),
        )
    })
}

/// The error for an undecodable stored record.
fn corrupt(table: &'static str, key: &str, reason: String) -> DataError {
    DataError::Unavailable(
        StoreError::Corrupt {
            table,
            key: key.into(),
            reason,
        }
        .to_string(),
    )
}

/// Decodes a stored file record (binary or, from older stores, JSON).
fn decode_file(key: &str, bytes: &[u8]) -> Result<FileRecord, DataError> {
    record::decode(bytes)
        .map(record::FileView::into_owned)
        .map_err(|e| corrupt(FILES, key, e))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Quoted entity tag from a SHA-256 digest.
pub fn etag_of(digest: &[u8]) -> String {
    let mut hex = [0u8; 32];
    // 16 bytes always fit 32 hex digits.
    let _ = hex::encode_to_slice(&digest[..16], &mut hex);
    let mut etag = String::with_capacity(34);
    etag.push('"');
    etag.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    etag.push('"');
    etag
}

/// Appends `s` to `out` as the inside of a JSON string, escaped exactly as
/// `serde_json` escapes it (`"`, `\`, the short escapes, `\u00XX` for other
/// control characters; nothing else).
fn push_json_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The CloudEvent JSON recorded for a change of `owner/collection/path`:
/// `{"specversion", "id", "source", "type", "subject", "time",
/// "datacontenttype", "data": {"uri", "size", "contentType", "etag"}}`.
/// Written straight into one buffer (it is on the path of every write): the
/// bytes are those `serde_json` gives for the same fields in this order.
fn change_event_json(
    kind: &str,
    (owner, collection, path): (&str, &str, &str),
    (size, content_type, etag): (u64, &str, &str),
    time: &str,
    hops: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        300 + 3 * (owner.len() + collection.len()) + 2 * path.len() + content_type.len(),
    );
    let owner_collection = |out: &mut Vec<u8>| {
        push_json_escaped(out, owner);
        out.push(b'/');
        push_json_escaped(out, collection);
    };
    out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":\"");
    push_uuid_v4(&mut out);
    out.extend_from_slice(b"\",\"source\":\"/collections/");
    owner_collection(&mut out);
    out.extend_from_slice(b"\",\"type\":\"wasmgrid.data.");
    push_json_escaped(&mut out, kind);
    out.extend_from_slice(b"\",\"subject\":\"/collections/");
    owner_collection(&mut out);
    out.extend_from_slice(b"/files/");
    push_json_escaped(&mut out, path);
    out.extend_from_slice(b"\",\"time\":\"");
    push_json_escaped(&mut out, time);
    if hops > 0 {
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(wasmgrid_engine::identity::HOPS_ATTRIBUTE.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(hops.to_string().as_bytes());
    }
    out.extend_from_slice(b"\",\"datacontenttype\":\"application/json\",\"data\":{\"uri\":\"");
    if collection.starts_with(TEMP_PREFIX) {
        out.extend_from_slice(b"data://.algo/temp");
    } else {
        out.extend_from_slice(b"data://");
        owner_collection(&mut out);
    }
    if !path.is_empty() {
        out.push(b'/');
        push_json_escaped(&mut out, path);
    }
    out.extend_from_slice(b"\",\"size\":");
    out.extend_from_slice(size.to_string().as_bytes());
    out.extend_from_slice(b",\"contentType\":\"");
    push_json_escaped(&mut out, content_type);
    out.extend_from_slice(b"\",\"etag\":\"");
    push_json_escaped(&mut out, etag);
    out.extend_from_slice(b"\"}}");
    out
}

/// The change event of `p` (see [`change_event_json`]), timed now.
fn change_event(kind: &str, p: &DataPath, rec: &FileRecord, hops: u32) -> Vec<u8> {
    change_event_json(
        kind,
        (&p.owner, &p.collection, &p.path),
        (rec.size, &rec.content_type, &rec.etag),
        &now_rfc3339(),
        hops,
    )
}

/// Appends a random (version 4) UUID in its hyphenated lower-case form.
fn push_uuid_v4(out: &mut Vec<u8>) {
    let mut b = rand::random::<[u8; 16]>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut h = [0u8; 32];
    // 16 bytes always fit 32 hex digits.
    let _ = hex::encode_to_slice(b, &mut h);
    for (i, range) in [0..8, 8..12, 12..16, 16..20, 20..32]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b'-');
        }
        out.extend_from_slice(&h[range]);
    }
}

/// A random (version 4) UUID.
pub fn uuid_v4() -> String {
    let mut out = Vec::with_capacity(36);
    push_uuid_v4(&mut out);
    String::from_utf8(out).unwrap_or_default()
}

impl DataService {
    /// A data service with collection records in `records`,
    /// large contents in `blobs` and files read through `files`.
    pub fn new(
        records: Arc<dyn Records>,
        blobs: Arc<dyn Blobs>,
        files: Arc<dyn DataFiles>,
    ) -> Self {
        Self {
            records,
            blobs,
            files,
            temp_ttl: DEFAULT_TEMP_TTL,
            collections: Default::default(),
            generation: Default::default(),
            id: NEXT_SERVICE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Sets the lifetime of temp-collection files.
    pub fn with_temp_ttl(mut self, ttl: Duration) -> Self {
        self.temp_ttl = ttl;
        self
    }

    /// Where large contents live: uploads stream into it, downloads stream out.
    pub fn blobs(&self) -> &Arc<dyn Blobs> {
        &self.blobs
    }

    /// A collection's record.
    pub fn collection(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<Arc<CollectionRecord>>, DataError> {
        self.collection_by_key(&format!("{owner}/{name}"))
    }

    /// A collection's record by its store key `owner/collection`, from the cache
    /// when it is there.
    fn collection_by_key(&self, key: &str) -> Result<Option<Arc<CollectionRecord>>, DataError> {
        use std::sync::atomic::Ordering;
        if let Some(c) = self
            .collections
            .read()
            .ok()
            .and_then(|m| m.get(key).cloned())
        {
            return Ok(Some(c));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let Some(entry) = wait(self.records.get(Bucket::Collections, key))? else {
            return Ok(None);
        };
        let rec = Arc::new(decode::<CollectionRecord>(
            Bucket::Collections.name(),
            key,
            &entry.value,
        )?);
        if let Ok(mut m) = self.collections.write()
            && self.generation.load(Ordering::Acquire) == generation
        {
            m.insert(key.to_string(), rec.clone());
        }
        Ok(Some(rec))
    }

    /// Forgets a cached collection record; call after the change is committed.
    /// The generation moves under the write lock, so a reader that sees the new
    /// generation finds the entry gone.
    fn invalidate(&self, p: &DataPath) {
        self.forget_cached(Some(&p.collection_key()));
    }

    /// Drops collection `key` (`None`: every collection) from the cache.
    fn forget_cached(&self, key: Option<&str>) {
        let bump = || {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
        };
        match self.collections.write() {
            Ok(mut m) => {
                bump();
                match key {
                    Some(key) => {
                        m.remove(key);
                    }
                    None => m.clear(),
                }
            }
            Err(_) => {
                bump();
            }
        }
    }

    /// Keeps the collection cache true to collection changes made on other
    /// nodes (cluster mode), until `shutdown` resolves: an ACL changed or a
    /// collection deleted through another node takes effect here once the
    /// watch brings the change (milliseconds on a healthy cluster).
    pub async fn follow(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let records = self.records.clone();
        wasmgrid_store::records::follow(&*records, Bucket::Collections, "", shutdown, |change| {
            match change {
                wasmgrid_store::records::Followed::Put(entry) => {
                    self.forget_cached(Some(&entry.key))
                }
                wasmgrid_store::records::Followed::Deleted(key) => self.forget_cached(Some(key)),
                wasmgrid_store::records::Followed::Resynced(_) => self.forget_cached(None),
            }
        })
        .await
    }

    /// The encoded record of `p`'s collection as a write creates it when it
    /// is missing, created at `now` (reused while the key and `now` match).
    fn implicit_collection_encoded(p: &DataPath, now: &str) -> bytes::Bytes {
        let is_key = |k: &str| {
            k.len() == p.owner.len() + 1 + p.collection.len()
                && k.starts_with(p.owner.as_str())
                && k.ends_with(p.collection.as_str())
                && k.as_bytes()[p.owner.len()] == b'/'
        };
        LAST_IMPLICIT.with_borrow_mut(|last| {
            if let Some((k, created, encoded)) = last.as_ref()
                && is_key(k)
                && created == now
            {
                return encoded.clone();
            }
            let mut record = Self::implicit_collection(&p.owner, &p.collection);
            record.created = now.to_string();
            let encoded = bytes::Bytes::from(encode(&record));
            *last = Some((p.collection_key(), now.to_string(), encoded.clone()));
            encoded
        })
    }

    fn implicit_collection(owner: &str, collection: &str) -> CollectionRecord {
        CollectionRecord {
            owner: owner.to_string(),
            name: collection.to_string(),
            acl: Acl::private(),
            created: now_rfc3339(),
        }
    }

    /// Creates a collection (or, with a non-empty `folder`, a folder marker in an
    /// existing collection).
    pub fn create(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        acl: Option<Acl>,
    ) -> Result<(), DataError> {
        self.check_writable(who, p)?;
        if let Some(acl) = &acl {
            acl.validate()?;
        }
        if !p.path.is_empty() {
            // A folder marker, in a collection that exists.
            if self.collection(&p.owner, &p.collection)?.is_none() {
                return Err(not_found_collection(p));
            }
            let rec = FileRecord {
                size: 0,
                content_type: "application/x-directory".into(),
                etag: "\"0\"".into(),
                last_modified: now_rfc3339(),
                blob: None,
                folder: true,
                expires: None,
            };
            let marker = format!("{}/", p.key());
            return wait(self.files.create_folder(&marker, record::encode(&rec))).map_err(
                |e| match e {
                    StoreError::Exists { .. } => {
                        DataError::Conflict(format!("{} already exists", p.uri()))
                    }
                    other => other.into(),
                },
            );
        }
        let rec = CollectionRecord {
            owner: p.owner.clone(),
            name: p.collection.clone(),
            acl: acl.unwrap_or_else(Acl::my_algorithms),
            created: now_rfc3339(),
        };
        wait(self.records.create(
            Bucket::Collections,
            &p.collection_key(),
            encode(&rec).into(),
        ))
        .map(|_| ())
        .map_err(|e| match e {
            StoreError::Exists { .. } => DataError::Conflict(format!("{} already exists", p.uri())),
            other => other.into(),
        })
    }

    /// Changes a collection's ACL (owner's keys with data:write only).
    pub fn set_acl(&self, who: Principal<'_>, p: &DataPath, acl: Acl) -> Result<(), DataError> {
        self.check_writable(who, p)?;
        acl.validate()?;
        let key = p.collection_key();
        // Read, then update at the read revision; a concurrent change makes
        // the update `Changed` and the loop reads again (last writer wins).
        let outcome = loop {
            let Some(entry) = wait(self.records.get(Bucket::Collections, &key))? else {
                break Err(not_found_collection(p));
            };
            let mut rec: CollectionRecord = decode(Bucket::Collections.name(), &key, &entry.value)?;
            rec.acl = acl.clone();
            match wait(self.records.update(
                Bucket::Collections,
                &key,
                encode(&rec).into(),
                entry.rev,
            )) {
                Ok(_) => break Ok(()),
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => break Err(e.into()),
            }
        };
        self.invalidate(p);
        outcome
    }

    /// Every collection record under `prefix` (`""` or `owner/`), page by page.
    fn all_collections(&self, prefix: &str) -> Result<Vec<CollectionRecord>, DataError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = wait(
                self.records
                    .list(Bucket::Collections, prefix, after.as_deref(), 500),
            )?;
            for e in &page.items {
                out.push(decode(Bucket::Collections.name(), &e.key, &e.value)?);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Collections of `owner` the principal may read.
    pub fn collections(
        &self,
        who: Principal<'_>,
        owner: &str,
    ) -> Result<Vec<CollectionRecord>, DataError> {
        let all = self.all_collections(&format!("{owner}/"))?;
        Ok(all
            .into_iter()
            .filter(|c| !c.name.starts_with(TEMP_PREFIX))
            .filter(|c| {
                let t = Target {
                    owner: &c.owner,
                    collection: &c.name,
                };
                who.check_read(t, c).is_ok()
            })
            .collect())
    }

    /// Reads a collection record and checks read access.
    fn readable(
        &self,
        who: Principal<'_>,
        p: &DataPath,
    ) -> Result<Arc<CollectionRecord>, DataError> {
        let coll = self
            .collection(&p.owner, &p.collection)?
            .ok_or_else(|| not_found_collection(p))?;
        who.check_read(Target::of(p), &coll)?;
        Ok(coll)
    }

    /// Checks read access to a borrowed path's collection (every file read; the
    /// hot path of guest reads): against this thread's last collection when it
    /// is the same and unchanged (see [`LastCollection`]), else through the
    /// shared cache. The check itself runs for the given principal every time.
    fn check_readable_ref(&self, who: Principal<'_>, p: &DataPathRef<'_>) -> Result<(), DataError> {
        let target = Target::of_ref(p);
        let key = p.collection_key();
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let memo = LAST_COLLECTION.with_borrow(|last| match last {
            Some(l) if l.service == self.id && l.generation == generation && l.key == key => {
                Some(who.check_read(target, &l.record))
            }
            _ => None,
        });
        if let Some(checked) = memo {
            return checked;
        }
        let coll = self
            .collection_by_key(key)?
            .ok_or_else(|| not_found_collection_ref(p))?;
        let checked = who.check_read(target, &coll);
        LAST_COLLECTION.with_borrow_mut(|last| {
            *last = Some(LastCollection {
                service: self.id,
                generation,
                key: key.to_string(),
                record: coll,
            })
        });
        checked
    }

    /// Checks that the principal may read `p`'s collection (for early rejection).
    pub fn check_readable(
        &self,
        who: Principal<'_>,
        p: &DataPath,
    ) -> Result<Arc<CollectionRecord>, DataError> {
        self.readable(who, p)
    }

    /// Checks write permission (before streaming an upload). A key of another
    /// owner is refused with 403 only for a collection it can see (a public
    /// one); any other answers as a missing collection, so that the refusal
    /// does not tell whether it exists.
    pub fn check_writable(&self, who: Principal<'_>, p: &DataPath) -> Result<(), DataError> {
        let denied = match who.check_write(p) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match who {
            Principal::Key(c) if !c.acts_for(&p.owner) => {
                match self.collection(&p.owner, &p.collection)? {
                    Some(coll) if coll.acl.is_public() => Err(denied),
                    _ => Err(not_found_collection(p)),
                }
            }
            _ => Err(denied),
        }
    }

    /// A file's record, if it exists (and has not expired).
    pub fn stat(&self, who: Principal<'_>, p: &DataPath) -> Result<FileRecord, DataError> {
        self.readable(who, p)?;
        self.file_record(p)
    }

    fn file_record(&self, p: &DataPath) -> Result<FileRecord, DataError> {
        match wait(self.files.stat(&p.key()))? {
            Some(rec) if !rec.expired(unix_now()) => Ok(rec),
            _ => Err(not_found_file(p)),
        }
    }

    /// Reads a file; `max_size` bounds what the caller can hold. The collection
    /// (for the access check) usually comes from the cache; the file record and
    /// small content come from one snapshot read.
    pub fn read(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        max_size: u64,
    ) -> Result<(FileRecord, Content), DataError> {
        let p = p.view();
        let (rec_bytes, data) = self.fetch(who, &p)?;
        let rec = decode_file(p.key(), &rec_bytes)?;
        let content = self.content(
            &p,
            rec.size,
            rec.folder,
            rec.expires,
            rec.blob.as_deref(),
            data,
            max_size,
        )?;
        Ok((rec, content))
    }

    /// Reads a file to serve it as a download: its record, and its content when
    /// it is small (inline); a large file's content is streamed from
    /// [`DataService::blobs`] by the caller, from the offset it needs.
    pub fn read_record(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        max_size: u64,
    ) -> Result<(FileRecord, Option<bytes::Bytes>), DataError> {
        let p = p.view();
        let (rec_bytes, data) = self.fetch(who, &p)?;
        let rec = decode_file(p.key(), &rec_bytes)?;
        Self::readable_content(&p, rec.size, rec.folder, rec.expires, max_size)?;
        let inline = match rec.blob {
            None => Some(data.unwrap_or_default().into()),
            Some(_) => None,
        };
        Ok((rec, inline))
    }

    /// Reads a file for a guest: only what a guest gets back (content type and
    /// bytes), decoding the record without allocating its other fields. The hot
    /// path of `data.get`: `p` usually borrows the guest's URI.
    pub fn read_for_guest(
        &self,
        who: Principal<'_>,
        p: &DataPathRef<'_>,
        max_size: u64,
    ) -> Result<(String, Content), DataError> {
        let (rec_bytes, data) = self.fetch(who, p)?;
        self.guest_content(p, &rec_bytes, data, max_size)
    }

    /// Reads several files for a reader that needs content type and bytes only
    /// (batch jobs prefetch their inputs this way), from one snapshot: one
    /// access check per collection and one store read for all of them. Each
    /// file has its own result.
    pub fn read_many_for_guest(
        &self,
        who: Principal<'_>,
        paths: &[DataPath],
        max_size: u64,
    ) -> Result<Vec<GuestRead>, DataError> {
        let mut checked: Option<(&str, &str)> = None;
        for p in paths {
            if checked != Some((p.owner.as_str(), p.collection.as_str())) {
                self.readable(who, p)?;
                checked = Some((p.owner.as_str(), p.collection.as_str()));
            }
        }
        let keys: Vec<String> = paths.iter().map(DataPath::key).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = match self.files.read_many_now(&keys) {
            Some(got) => got?,
            None => wait(self.files.read_many(&keys))?,
        };
        Ok(paths
            .iter()
            .zip(got)
            .map(|(p, got)| match got {
                Some(f) => self.guest_content(&p.view(), &f.record, f.inline, max_size),
                None => Err(not_found_file(p)),
            })
            .collect())
    }

    /// Decodes only the fields of a file record a guest read needs and returns
    /// the content type and content.
    fn guest_content(
        &self,
        p: &DataPathRef<'_>,
        rec_bytes: &[u8],
        data: Option<Vec<u8>>,
        max_size: u64,
    ) -> Result<(String, Content), DataError> {
        let view = record::decode_for_read(rec_bytes).map_err(|e| corrupt(FILES, p.key(), e))?;
        let content = self.content(
            p,
            view.size,
            view.folder,
            view.expires,
            view.blob.as_deref(),
            data,
            max_size,
        )?;
        Ok((view.content_type.into_owned(), content))
    }

    /// Checks read access, then reads a file's record and inline content from one
    /// snapshot.
    fn fetch(
        &self,
        who: Principal<'_>,
        p: &DataPathRef<'_>,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), DataError> {
        self.check_readable_ref(who, p)?;
        let got = match self.files.read_now(p.key()) {
            Some(got) => got?,
            None => wait(self.files.read(p.key()))?,
        };
        match got {
            Some(f) => Ok((f.record, f.inline)),
            None => Err(not_found_file_ref(p)),
        }
    }

    /// The content of a fetched file, after the checks every read makes: gone
    /// if it is a folder marker or expired, too large for the reader, and the
    /// blob present for large files.
    #[allow(clippy::too_many_arguments)]
    fn content(
        &self,
        p: &DataPathRef<'_>,
        size: u64,
        folder: bool,
        expires: Option<u64>,
        blob: Option<&str>,
        inline: Option<Vec<u8>>,
        max_size: u64,
    ) -> Result<Content, DataError> {
        Self::readable_content(p, size, folder, expires, max_size)?;
        match blob {
            None => Ok(Content::Inline(inline.unwrap_or_default().into())),
            Some(id) => {
                let (size, reader) = wait(self.blobs.open(&BlobId(id.to_string()), 0))?
                    .ok_or_else(|| {
                        DataError::Unavailable(format!(
                            "the content of {} is missing from the blob store",
                            p.uri()
                        ))
                    })?;
                Ok(Content::Blob { size, reader })
            }
        }
    }

    /// The checks every read of a file's content makes: gone if it is a folder
    /// marker or expired, refused if too large for the reader.
    fn readable_content(
        p: &DataPathRef<'_>,
        size: u64,
        folder: bool,
        expires: Option<u64>,
        max_size: u64,
    ) -> Result<(), DataError> {
        if folder || expires.is_some_and(|e| e <= unix_now()) {
            return Err(not_found_file_ref(p));
        }
        if size > max_size {
            return Err(DataError::TooLarge(format!(
                "{} is {size} bytes, more than this reader may hold ({max_size} bytes)",
                p.uri()
            )));
        }
        Ok(())
    }

    /// Writes a small file (inline) or, if it is larger than [`INLINE_MAX`],
    /// through a blob.
    pub fn put(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        content_type: &str,
        body: &[u8],
    ) -> Result<FileRecord, DataError> {
        use sha2::Digest;
        let etag = etag_of(&sha2::Sha256::digest(body));
        if body.len() <= INLINE_MAX {
            return self.commit_file(
                who,
                p,
                content_type,
                body.len() as u64,
                etag,
                Some(body),
                None,
            );
        }
        let id = self.put_blob(bytes::Bytes::copy_from_slice(body))?;
        self.commit_blob(who, p, content_type, body.len() as u64, etag, id)
    }

    /// Stores `body` as a new data blob and returns its id (the record naming
    /// it is the caller's to commit).
    fn put_blob(&self, body: bytes::Bytes) -> Result<String, DataError> {
        wait(async {
            let mut sink = self.blobs.create().await?;
            sink.write(body).await?;
            let (id, _) = sink.finish().await?;
            Ok::<_, StoreError>(id.0)
        })
        .map_err(DataError::from)
    }

    /// Records a file whose content was streamed into blob `blob_id`. On failure
    /// the blob is deleted.
    pub fn commit_blob(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        content_type: &str,
        size: u64,
        etag: String,
        blob_id: String,
    ) -> Result<FileRecord, DataError> {
        let result = self.commit_file(
            who,
            p,
            content_type,
            size,
            etag,
            None,
            Some(blob_id.clone()),
        );
        let id = BlobId(blob_id);
        match &result {
            Ok(_) => wait(self.blobs.recorded(&id)),
            Err(_) => {
                let _ = wait(self.blobs.delete(&id));
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_file(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        content_type: &str,
        size: u64,
        etag: String,
        inline: Option<&[u8]>,
        blob: Option<String>,
    ) -> Result<FileRecord, DataError> {
        if p.path.is_empty() {
            return Err(DataError::InvalidUri(format!(
                "{} is a collection, not a file: add a file path",
                p.uri()
            )));
        }
        self.check_writable(who, p)?;
        let staged = self.staged(
            p,
            content_type,
            size,
            etag,
            inline.map(bytes::Bytes::copy_from_slice),
            blob,
            who.hops(),
        );
        let written = wait(self.files.write(std::slice::from_ref(&staged.write)))?
            .pop()
            .ok_or_else(|| DataError::Unavailable("the write returned no result".into()))?;
        let replaced = staged.outcome(written)?;
        if let Some(old) = replaced {
            let _ = wait(self.blobs.delete(&BlobId(old)));
        }
        Ok(staged.record)
    }

    /// A write of `p` with its record and change event encoded, ready to be
    /// applied inside a transaction (no access check: callers check first).
    #[allow(clippy::too_many_arguments)]
    fn staged(
        &self,
        p: &DataPath,
        content_type: &str,
        size: u64,
        etag: String,
        inline: Option<bytes::Bytes>,
        blob: Option<String>,
        hops: u32,
    ) -> StagedWrite {
        let now = now_rfc3339();
        let event = (!p.is_temp()).then(|| {
            change_event_json(
                "FileCreated",
                (&p.owner, &p.collection, &p.path),
                (size, content_type, &etag),
                &now,
                hops,
            )
        });
        let new_collection = Self::implicit_collection_encoded(p, &now);
        let record = FileRecord {
            size,
            content_type: content_type.to_string(),
            etag,
            last_modified: now,
            blob,
            folder: false,
            expires: p.is_temp().then(|| unix_now() + self.temp_ttl.as_secs()),
        };
        StagedWrite {
            path: p.view(),
            write: FileWrite {
                key: p.key(),
                record: record::encode(&record),
                blob: record.blob.clone(),
                inline: inline.unwrap_or_default(),
                event,
                new_collection,
            },
            record,
        }
    }

    /// Prepares a file write to be applied later inside a transaction of the
    /// caller's (see [`StagedWrite::apply`]), so that many writes, and records of
    /// the caller's own, commit together with one fsync. Checks write access now;
    /// content above [`INLINE_MAX`] goes into a blob now (blocking: call from a
    /// blocking thread for large bodies). Call [`DataService::discard`] if the
    /// write is never applied, so that its blob is removed.
    pub fn stage_write(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        content_type: &str,
        body: bytes::Bytes,
    ) -> Result<StagedWrite, DataError> {
        use sha2::Digest;
        if p.path.is_empty() {
            return Err(DataError::InvalidUri(format!(
                "{} is a collection, not a file: add a file path",
                p.uri()
            )));
        }
        self.check_writable(who, p)?;
        let etag = etag_of(&sha2::Sha256::digest(&body));
        let size = body.len() as u64;
        if body.len() <= INLINE_MAX {
            return Ok(self.staged(p, content_type, size, etag, Some(body), None, who.hops()));
        }
        let id = self.put_blob(body)?;
        Ok(self.staged(p, content_type, size, etag, None, Some(id), who.hops()))
    }

    /// Writes staged files as one batch (one transaction and fsync on the
    /// embedded store), for bulk imports: one result per write, in order (a
    /// path that is a folder fails alone). Durable on return.
    pub fn write_staged(
        &self,
        staged: Vec<StagedWrite>,
    ) -> Result<Vec<Result<(), DataError>>, DataError> {
        let uris: Vec<String> = staged.iter().map(|s| s.path.uri()).collect();
        let writes: Vec<FileWrite> = staged
            .into_iter()
            .map(StagedWrite::into_file_write)
            .collect();
        let written = match wait(self.files.write(&writes)) {
            Ok(w) => w,
            Err(e) => {
                self.release_blobs(writes.into_iter().filter_map(|w| w.blob));
                return Err(e.into());
            }
        };
        let mut results = Vec::with_capacity(written.len());
        for ((w, uri), write) in written.into_iter().zip(&uris).zip(writes) {
            results.push(match w {
                Written::Done { replaced_blob } => {
                    self.release_blobs(replaced_blob);
                    Ok(())
                }
                Written::IsFolder => {
                    self.release_blobs(write.blob);
                    Err(DataError::is_a_folder(uri))
                }
            });
        }
        Ok(results)
    }

    /// Forgets a staged write that was not applied (or whose transaction
    /// failed), deleting its blob if it has one.
    pub fn discard(&self, staged: StagedWrite) {
        self.release_blobs(staged.record.blob);
    }

    /// Deletes blobs that no file names: those a batch write replaced, or
    /// those of writes that did not happen. Best effort: the orphan sweep
    /// removes what a failure here leaves.
    pub fn release_blobs(&self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            let _ = wait(self.blobs.delete(&BlobId(id)));
        }
    }

    /// Deletes a file; `false` if it did not exist.
    pub fn delete(&self, who: Principal<'_>, p: &DataPath) -> Result<bool, DataError> {
        self.check_writable(who, p)?;
        let hops = who.hops();
        let events = |_: &str, rec: &FileRecord| {
            (!p.is_temp() && !rec.folder).then(|| change_event("FileDeleted", p, rec, hops))
        };
        match wait(self.files.delete(&p.key(), &events))? {
            Some(rec) => {
                if let Some(id) = &rec.blob {
                    let _ = wait(self.blobs.delete(&BlobId(id.clone())));
                }
                Ok(!rec.expired(unix_now()))
            }
            None => Ok(false),
        }
    }

    /// Deletes everything under a folder (or the whole collection when `p.path`
    /// is empty, including the collection itself). Without `force`, only empty
    /// folders/collections are deleted. Returns the number of files deleted.
    pub fn delete_tree(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        force: bool,
    ) -> Result<u64, DataError> {
        self.check_writable(who, p)?;
        let exists_coll = self.collection(&p.owner, &p.collection)?.is_some();
        if !exists_coll {
            return Err(not_found_collection(p));
        }
        let prefix = p.folder_prefix();
        let occupancy = wait(self.files.occupancy(&prefix))?;
        if !p.path.is_empty() && occupancy == Occupancy::Empty {
            return Err(not_found_file(p));
        }
        if !force && occupancy == Occupancy::Occupied {
            return Err(DataError::Conflict(format!(
                "{} is not empty: delete with ?force=true (CLI: --force) to remove everything in it",
                p.uri()
            )));
        }
        let hops = who.hops();
        let events = |key: &str, rec: &FileRecord| {
            if rec.folder {
                return None;
            }
            let fp = DataPath::from_key(key)?;
            (!fp.is_temp()).then(|| change_event("FileDeleted", &fp, rec, hops))
        };
        let removed = wait(self.files.delete_tree(&prefix, &events))?;
        for b in removed.blobs {
            let _ = wait(self.blobs.delete(&BlobId(b)));
        }
        let deleted = removed.files;
        if p.path.is_empty() {
            let key = p.collection_key();
            wait(self.records.delete(Bucket::Collections, &key, None))?;
            self.invalidate(p);
        }
        Ok(deleted)
    }

    /// One level of a folder (Algorithmia's listing): sub-folders and files, up to
    /// `limit` entries per page.
    pub fn list_level(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Listing, DataError> {
        self.readable(who, p)?;
        let prefix = p.folder_prefix();
        let limit = limit.clamp(1, MAX_PAGE);
        let start = match marker {
            Some(m) => decode_marker(m, &prefix)?,
            None => prefix.clone(),
        };
        let level = wait(self.files.list_level(&prefix, &start, limit))?;
        let mut listing = Listing {
            folders: vec![],
            files: vec![],
            marker: level.next.as_deref().map(encode_marker),
        };
        let any = level.exists;
        for entry in level.entries {
            match entry {
                Listed::Folder(name) => listing.folders.push(FolderEntry { name }),
                Listed::File(filename, rec) => listing.files.push(FileEntry {
                    filename,
                    size: rec.size,
                    last_modified: rec.last_modified,
                    content_type: rec.content_type,
                    etag: rec.etag,
                }),
            }
        }
        if !any && !p.path.is_empty() {
            return Err(not_found_file(p));
        }
        Ok(listing)
    }

    /// Files under a prefix, recursively (the guest `list`): `(path, record)`
    /// pairs and the marker of the next page.
    pub fn list_files(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<FilePage, DataError> {
        self.readable(who, p)?;
        let prefix = format!("{}/{}/{}", p.owner, p.collection, p.path);
        let limit = limit.clamp(1, MAX_PAGE);
        let mut after = marker.map(|m| format!("{}/{}/{m}", p.owner, p.collection));
        let mut out = Vec::new();
        loop {
            let page = wait(
                self.files
                    .list_tree(&prefix, after.as_deref(), limit + 1, 0),
            )?;
            for item in page.items {
                if out.len() == limit {
                    let last = out
                        .last()
                        .map(|(fp, _): &(DataPath, FileRecord)| fp.path.clone());
                    return Ok((out, last));
                }
                let rec = decode_file(&item.key, &item.record)?;
                if let Some(fp) = DataPath::from_key(&item.key) {
                    out.push((fp, rec));
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok((out, None)),
            }
        }
    }

    /// Files under a folder, recursively, in key order, with their sizes (batch
    /// jobs page through inputs with it): up to `limit` files after the file at
    /// collection path `after`, and where the next page starts (a collection
    /// path), absent on the last page. A page may hold fewer than `limit` files
    /// (folder markers and expired files are skipped) and still have a
    /// successor.
    pub fn list_tree(
        &self,
        who: Principal<'_>,
        folder: &DataPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TreePage, DataError> {
        self.readable(who, folder)?;
        let prefix = folder.folder_prefix();
        let after = after.map(|a| format!("{}/{}/{a}", folder.owner, folder.collection));
        let limit = limit.clamp(1, MAX_PAGE);
        let page = wait(self.files.list_tree(&prefix, after.as_deref(), limit, 0))?;
        let next = page
            .next
            .as_deref()
            .and_then(DataPath::from_key)
            .map(|p| p.path);
        let mut out = Vec::with_capacity(page.items.len());
        for item in page.items {
            let view =
                record::decode_for_read(&item.record).map_err(|e| corrupt(FILES, &item.key, e))?;
            if let Some(fp) = DataPath::from_key(&item.key) {
                out.push((fp, view.size));
            }
        }
        Ok((out, next))
    }

    /// How many files [`list_tree`](Self::list_tree) would list under
    /// `folder` over all its pages, counted from one snapshot without
    /// building the listing.
    pub fn count_tree(&self, who: Principal<'_>, folder: &DataPath) -> Result<u64, DataError> {
        self.readable(who, folder)?;
        Ok(wait(self.files.count_tree(&folder.folder_prefix()))?)
    }

    /// [`list_tree`](Self::list_tree), reading along, from the same snapshot,
    /// the content of the small (inline) files from the start of the page
    /// while their sizes add up to at most `budget` bytes: what a batch job
    /// needs to feed its workers, in one pass over the store instead of a
    /// lookup per file. Files that are not read along (large ones, and those
    /// after the budget ran out) have no content; read them with
    /// [`read_for_guest`](Self::read_for_guest). Contents are checked as
    /// `read_for_guest` checks them (`max_size`).
    pub fn list_tree_with_content(
        &self,
        who: Principal<'_>,
        folder: &DataPath,
        after: Option<&str>,
        limit: usize,
        budget: u64,
        max_size: u64,
    ) -> Result<(Vec<ListedFile>, Option<String>), DataError> {
        self.readable(who, folder)?;
        let prefix = folder.folder_prefix();
        let after = after.map(|a| format!("{}/{}/{a}", folder.owner, folder.collection));
        let limit = limit.clamp(1, MAX_PAGE);
        let page = wait(
            self.files
                .list_tree(&prefix, after.as_deref(), limit, budget),
        )?;
        let next = page
            .next
            .as_deref()
            .and_then(DataPath::from_key)
            .map(|p| p.path);
        let mut out = Vec::with_capacity(page.items.len());
        for item in page.items {
            let view =
                record::decode_for_read(&item.record).map_err(|e| corrupt(FILES, &item.key, e))?;
            let size = view.size;
            let has_blob = view.blob.is_some();
            let content_type = view.content_type.into_owned();
            let Some(path) = DataPathRef::from_key(item.key) else {
                continue;
            };
            let content = match item.inline {
                Some(d) if !has_blob => Some(if size > max_size {
                    Err(DataError::TooLarge(format!(
                        "{} is {size} bytes, more than this reader may hold ({max_size} bytes)",
                        path.uri()
                    )))
                } else {
                    Ok((content_type, Content::Inline(d.into())))
                }),
                _ => None,
            };
            out.push(ListedFile {
                path,
                size,
                content,
            });
        }
        Ok((out, next))
    }

    /// Adds `delta` to a decimal counter file (wasi:keyvalue `increment`) in one
    /// transaction, creating it at 0.
    pub fn increment(
        &self,
        who: Principal<'_>,
        p: &DataPath,
        delta: u64,
    ) -> Result<u64, DataError> {
        self.check_writable(who, p)?;
        let hops = who.hops();
        let expires = p.is_temp().then(|| unix_now() + self.temp_ttl.as_secs());
        let write = |value: u64| {
            use sha2::Digest;
            let body = value.to_string();
            let rec = FileRecord {
                size: body.len() as u64,
                content_type: "text/plain".into(),
                etag: etag_of(&sha2::Sha256::digest(body.as_bytes())),
                last_modified: now_rfc3339(),
                blob: None,
                folder: false,
                expires,
            };
            let event = (!p.is_temp()).then(|| change_event("FileCreated", p, &rec, hops));
            (record::encode(&rec), event)
        };
        let new_collection = encode(&Self::implicit_collection(&p.owner, &p.collection));
        match wait(
            self.files
                .increment(&p.key(), delta, new_collection.into(), &write),
        )? {
            Ok(value) => Ok(value),
            Err(NotCounted::NotACounter) => Err(DataError::Invalid(format!(
                "{} does not hold a decimal counter",
                p.uri()
            ))),
            Err(NotCounted::Overflow) => Err(DataError::Invalid(format!(
                "incrementing {} overflows u64",
                p.uri()
            ))),
        }
    }

    /// Deletes expired temp files; returns how many.
    pub fn sweep_expired(&self) -> Result<u64, DataError> {
        let now = unix_now();
        let mut removed = 0;
        for coll in self.all_collections("")? {
            if !coll.name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let prefix = format!("{}/{}/", coll.owner, coll.name);
            let gone = wait(self.files.delete_expired(&prefix, now))?;
            for b in gone.blobs {
                let _ = wait(self.blobs.delete(&BlobId(b)));
            }
            removed += gone.files;
        }
        Ok(removed)
    }

    /// Deletes data blobs no file record points to: left by a crash between a
    /// file's replacement or deletion and the removal of its old blob, by an
    /// upload that crashed before its record was written, or by a failed
    /// delete. Blobs being uploaded right now are left alone (see
    /// [`Blobs::settled`]). Returns how many were deleted. Runs on a blocking
    /// thread (it scans every file record).
    pub fn remove_orphan_blobs(&self) -> Result<u64, DataError> {
        // Listed first: a blob whose upload settles later is not a candidate,
        // and one settled before is referenced by a record the scan below sees.
        // No grace period: this process knows its own uploads in progress (they
        // are never listed), and no other process writes into its data directory.
        let candidates = wait(self.blobs.settled(Duration::ZERO))?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut live = std::collections::HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = wait(self.files.blob_references(after.as_deref(), 1000))?;
            live.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut removed = 0;
        for id in candidates.iter().filter(|id| !live.contains(id.as_str())) {
            wait(self.blobs.delete(id))?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn not_found_collection(p: &DataPath) -> DataError {
    not_found_collection_ref(&p.view())
}

fn not_found_file(p: &DataPath) -> DataError {
    not_found_file_ref(&p.view())
}

fn not_found_file_ref(p: &DataPathRef<'_>) -> DataError {
    DataError::NotFound(format!("{} not found", p.uri()))
}

fn not_found_collection_ref(p: &DataPathRef<'_>) -> DataError {
    not_found_target(Target::of_ref(p))
}

/// The answer for a missing collection, and for one the caller may not see.
fn not_found_target(p: Target<'_>) -> DataError {
    let (owner, collection) = (p.owner, p.collection);
    DataError::NotFound(format!(
        "collection data://{owner}/{collection} not found: create it (wasmgrid data mk data://{owner}/{collection}) or check the name"
    ))
}

fn encode_marker(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_marker(marker: &str, prefix: &str) -> Result<String, DataError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|k| k.starts_with(prefix))
        .ok_or_else(|| {
            DataError::Invalid(format!(
                "invalid marker {marker:?}: pass the marker of the previous page unchanged"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgrid_store::changelog::ChangeLog;
    use wasmgrid_store::raw::{Store, Table};
    use wasmgrid_store::{EmbeddedQueues, EmbeddedStore};

    thread_local! {
        /// The runtime the tests' blob writes and reads run under (the
        /// embedded backend moves blob I/O to tokio's blocking threads).
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
    }

    /// Runs `f` inside the test runtime's context.
    fn in_runtime<T>(f: impl FnOnce() -> T) -> T {
        RUNTIME.with(|rt| {
            let _guard = rt.enter();
            f()
        })
    }

    /// A whole file's record and content.
    fn read_all(
        data: &DataService,
        who: Principal<'_>,
        p: &DataPath,
        max_size: u64,
    ) -> Result<(FileRecord, bytes::Bytes), DataError> {
        in_runtime(|| {
            let (rec, content) = data.read(who, p, max_size)?;
            let bytes =
                wait(content.into_bytes()).map_err(|e| DataError::Unavailable(e.to_string()))?;
            Ok((rec, bytes))
        })
    }

    /// The change events logged after `after` (at most `limit`), as the API
    /// lists them.
    fn outbox(
        store: &Arc<EmbeddedStore>,
        after: u64,
        limit: usize,
    ) -> Vec<(u64, serde_json::Value)> {
        let log = EmbeddedQueues::new(store.clone());
        wait(log.inspect(after, limit))
            .unwrap()
            .into_iter()
            .map(|l| (l.seq, serde_json::from_slice(&l.event).unwrap()))
            .collect()
    }

    #[test]
    fn change_events_are_the_json_serde_would_write() {
        let tricky = "a \"quoted\" \\ path\twith\u{1}controls/ünïcode\u{7f}/\n\r\u{8}\u{c}";
        for (owner, collection, path) in [
            ("alice", "photos", "2024/cat.jpg"),
            ("alice", ".temp.alice.algo", "scratch.txt"),
            ("bob", "docs", ""),
            ("bob", "docs", tricky),
        ] {
            let (size, content_type, etag) = (1234u64, tricky, "\"0123abcd\"");
            let bytes = change_event_json(
                "FileCreated",
                (owner, collection, path),
                (size, content_type, etag),
                "2024-01-02T03:04:05.678Z",
                0,
            );
            let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let p = DataPath {
                owner: owner.into(),
                collection: collection.into(),
                path: path.into(),
            };
            let expected = serde_json::json!({
                "specversion": "1.0",
                "id": got["id"].clone(),
                "source": format!("/collections/{owner}/{collection}"),
                "type": "wasmgrid.data.FileCreated",
                "subject": format!("/collections/{owner}/{collection}/files/{path}"),
                "time": "2024-01-02T03:04:05.678Z",
                "datacontenttype": "application/json",
                "data": {"uri": p.uri(), "size": size, "contentType": content_type, "etag": etag},
            });
            assert_eq!(got, expected);
            // Byte for byte what serde_json writes for the same fields in order.
            let keys: Vec<&str> = got
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut serde_bytes = b"{".to_vec();
            for (i, k) in [
                "specversion",
                "id",
                "source",
                "type",
                "subject",
                "time",
                "datacontenttype",
            ]
            .into_iter()
            .enumerate()
            {
                assert!(keys.contains(&k));
                if i > 0 {
                    serde_bytes.push(b',');
                }
                serde_json::to_writer(&mut serde_bytes, k).unwrap();
                serde_bytes.push(b':');
                serde_json::to_writer(&mut serde_bytes, &got[k]).unwrap();
            }
            serde_bytes.extend_from_slice(b",\"data\":{");
            for (i, k) in ["uri", "size", "contentType", "etag"]
                .into_iter()
                .enumerate()
            {
                if i > 0 {
                    serde_bytes.push(b',');
                }
                serde_json::to_writer(&mut serde_bytes, k).unwrap();
                serde_bytes.push(b':');
                serde_json::to_writer(&mut serde_bytes, &got["data"][k]).unwrap();
            }
            serde_bytes.extend_from_slice(b"}}");
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                String::from_utf8(serde_bytes).unwrap()
            );
            let id = got["id"].as_str().unwrap();
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4");
        }
        assert_eq!(etag_of(&[0xab; 32]), format!("\"{}\"", "ab".repeat(16)));
    }

    #[test]
    fn acl_changes_take_effect_at_once_despite_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let data = DataService::new(store.clone(), store.clone(), store);
        let admin = Caller {
            key_id: "k".into(),
            owner: "admin".into(),
            scopes: vec![Scope::Admin],
            compat: Default::default(),
            hops: 0,
        };
        let key = Principal::Key(&admin);
        let p = DataPath::new("demo", "c", "f.txt").unwrap();
        let coll = DataPath::new("demo", "c", "").unwrap();
        data.create(key, &coll, Some(Acl::private())).unwrap();
        data.put(key, &p, "text/plain", b"x").unwrap();
        let algo = GuestIdentity {
            owner: "demo".into(),
            name: "a".into(),
            memory_bytes: 1 << 20,
            ..Default::default()
        };
        let guest = Principal::Algorithm(&algo);
        let readable = |d: &DataService| d.read_for_guest(guest, &p.view(), u64::MAX).is_ok();
        assert!(!readable(&data), "private");
        data.set_acl(key, &coll, Acl::my_algorithms()).unwrap();
        assert!(readable(&data), "owner's algorithms may read now");
        assert!(readable(&data), "(cached)");
        data.set_acl(key, &coll, Acl::private()).unwrap();
        assert!(!readable(&data), "private again, at once");
        data.delete_tree(key, &coll, true).unwrap();
        assert!(matches!(
            data.read_for_guest(guest, &p.view(), u64::MAX),
            Err(DataError::NotFound(_))
        ));
    }

    #[test]
    fn expired_temp_files_vanish_and_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let data = DataService::new(store.clone(), store.clone(), store.clone())
            .with_temp_ttl(Duration::from_secs(0));
        let id = GuestIdentity {
            owner: "demo".into(),
            name: "algo".into(),
            memory_bytes: 1 << 20,
            ..Default::default()
        };
        let who = Principal::Algorithm(&id);
        let p = who.parse("data://.algo/temp/scratch.txt").unwrap();
        data.put(who, &p, "text/plain", b"short-lived").unwrap();
        // TTL 0: expired as soon as written.
        assert!(matches!(
            read_all(&data, who, &p, u64::MAX),
            Err(DataError::NotFound(_))
        ));
        assert_eq!(data.sweep_expired().unwrap(), 1);
        assert_eq!(data.sweep_expired().unwrap(), 0);
        // Temp writes are not change events.
        assert!(outbox(&store, 0, 10).is_empty());
    }

    #[test]
    fn json_file_records_of_schema_1_stores_still_work() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let old_blob;
        {
            // What a schema-1 build left behind: JSON records.
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let mut w = store.create_blob().unwrap();
            w.write_all(b"big content").unwrap();
            old_blob = w.finish().unwrap();
            let file = |size: u64, blob: Option<&str>, folder: bool| {
                serde_json::to_vec(&FileRecord {
                    size,
                    content_type: "text/plain".into(),
                    etag: "\"e1\"".into(),
                    last_modified: "2024-01-02T03:04:05.123Z".into(),
                    blob: blob.map(str::to_string),
                    folder,
                    expires: None,
                })
                .unwrap()
            };
            store
                .transact(&mut |txn| {
                    txn.put(Table::META, "schema_version", b"1")?;
                    txn.put(
                        Table::COLLECTIONS,
                        "demo/c",
                        &encode(&CollectionRecord {
                            owner: "demo".into(),
                            name: "c".into(),
                            acl: Acl::my_algorithms(),
                            created: "2024-01-02T03:04:05.123Z".into(),
                        }),
                    )?;
                    txn.put(Table::FILES, "demo/c/old.txt", &file(5, None, false))?;
                    txn.put(Table::FILE_DATA, "demo/c/old.txt", b"hello")?;
                    txn.put(
                        Table::FILES,
                        "demo/c/big.bin",
                        &file(11, Some(&old_blob), false),
                    )?;
                    txn.put(Table::FILES, "demo/c/dir/", &file(0, None, true))
                })
                .unwrap();
        }
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        assert_eq!(
            Store::get(&*store, Table::META, "schema_version")
                .unwrap()
                .unwrap(),
            wasmgrid_store::SCHEMA_VERSION.to_string().as_bytes(),
            "migrated"
        );
        let data = DataService::new(store.clone(), store.clone(), store.clone());
        let admin = Caller {
            key_id: "k".into(),
            owner: "admin".into(),
            scopes: vec![Scope::Admin],
            compat: Default::default(),
            hops: 0,
        };
        let key = Principal::Key(&admin);
        let old = DataPath::new("demo", "c", "old.txt").unwrap();
        let big = DataPath::new("demo", "c", "big.bin").unwrap();
        let (rec, bytes) = read_all(&data, key, &old, u64::MAX).unwrap();
        assert_eq!((rec.etag.as_str(), &bytes[..]), ("\"e1\"", &b"hello"[..]));
        assert_eq!(
            &read_all(&data, key, &big, u64::MAX).unwrap().1[..],
            b"big content"
        );
        let algo = GuestIdentity {
            owner: "demo".into(),
            name: "a".into(),
            ..Default::default()
        };
        let (ct, content) = data
            .read_for_guest(Principal::Algorithm(&algo), &old.view(), u64::MAX)
            .unwrap();
        assert!(matches!(content, Content::Inline(b) if &b[..] == b"hello"));
        assert_eq!(ct, "text/plain");
        let root = DataPath::new("demo", "c", "").unwrap();
        let listing = data.list_level(key, &root, None, 100).unwrap();
        assert_eq!(listing.folders.len(), 1);
        assert_eq!(listing.files.len(), 2);
        // Replacing the blob-backed file frees its blob (found in the JSON record).
        data.put(key, &big, "text/plain", b"small now").unwrap();
        assert!(store.open_blob(&old_blob).unwrap().is_none());
        let raw = Store::get(&*store, Table::FILES, "demo/c/big.bin")
            .unwrap()
            .unwrap();
        assert_eq!(raw[0], record::RECORD_V1, "rewritten records are binary");
        assert_eq!(
            &read_all(&data, key, &big, u64::MAX).unwrap().1[..],
            b"small now"
        );
        // Deleting an old record emits its event with the old etag.
        assert!(data.delete(key, &old).unwrap());
        let events = outbox(&store, 0, 10);
        let last = &events.last().unwrap().1;
        assert_eq!(last["type"], "wasmgrid.data.FileDeleted");
        assert_eq!(last["data"]["etag"], "\"e1\"");
        assert_eq!(data.delete_tree(key, &root, true).unwrap(), 1);
    }

    fn blob_ids(dir: &std::path::Path) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(dir.join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    fn admin() -> Caller {
        Caller {
            key_id: "k".into(),
            owner: "admin".into(),
            scopes: vec![Scope::Admin],
            compat: Default::default(),
            hops: 0,
        }
    }

    /// A data service on a fresh store (keep the directory alive).
    fn service() -> (tempfile::TempDir, Arc<EmbeddedStore>, DataService) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let data = DataService::new(store.clone(), store.clone(), store.clone());
        (dir, store, data)
    }

    #[test]
    fn writes_into_missing_collections_create_each_one_of_its_own() {
        let (_dir, _store, data) = service();
        let caller = admin();
        let who = Principal::Key(&caller);
        // Staged back to back (within one millisecond, mostly): the encoded
        // implicit record a write reuses must be its own collection's.
        let names = ["c1", "c2", "c1", "c3"];
        let staged: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = DataPath::new("admin", c, &format!("f{i}")).unwrap();
                data.stage_write(who, &p, "text/plain", bytes::Bytes::from_static(b"x"))
                    .unwrap()
            })
            .collect();
        let created: Vec<String> = staged
            .iter()
            .map(|s| s.record().last_modified.clone())
            .collect();
        for written in data.write_staged(staged).unwrap() {
            written.unwrap();
        }
        for (i, c) in names.iter().enumerate() {
            let rec = data
                .collection("admin", c)
                .unwrap()
                .expect("collection created");
            assert_eq!((rec.owner.as_str(), rec.name.as_str()), ("admin", *c));
            assert_eq!(rec.acl, Acl::private());
            if i < 2 || *c == "c3" {
                // The first write into a collection created it, at its own time.
                assert_eq!(rec.created, created[i], "{c}");
            }
        }
    }

    #[test]
    fn batched_writes_share_outbox_records_with_one_number_per_event() {
        let (_dir, store, data) = service();
        let caller = admin();
        let who = Principal::Key(&caller);
        let path = |p: &str| DataPath::new("admin", "c", p).unwrap();
        data.put(who, &path("first"), "text/plain", b"1").unwrap();
        // More writes in one transaction than one record holds.
        let n = OUTBOX_EVENTS_PER_RECORD as usize + 6;
        let staged: Vec<_> = (0..n)
            .map(|i| {
                let body = bytes::Bytes::from(format!("{i}"));
                data.stage_write(who, &path(&format!("f{i:03}")), "text/plain", body)
                    .unwrap()
            })
            .collect();
        let writes: Vec<_> = staged
            .into_iter()
            .map(StagedWrite::into_file_write)
            .collect();
        let written =
            in_runtime(|| futures::executor::block_on(DataFiles::write(&*store, &writes))).unwrap();
        assert!(written.iter().all(|w| matches!(w, Written::Done { .. })));
        data.put(who, &path("last"), "text/plain", b"2").unwrap();
        let records = store.scan(Table::OUTBOX, "", None, 100).unwrap();
        assert_eq!(
            records.len(),
            4,
            "single, full batch, rest of batch, single"
        );
        let events = outbox(&store, 0, 1000);
        assert_eq!(events.len(), n + 2);
        let numbers: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(numbers, (1..=n as u64 + 2).collect::<Vec<_>>());
        let subjects: Vec<String> = events
            .iter()
            .map(|(_, e)| {
                e["subject"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(subjects[0], "first");
        assert_eq!(subjects[1], "f000");
        assert_eq!(subjects[n], format!("f{:03}", n - 1));
        assert_eq!(subjects[n + 1], "last");
        // Paging starts inside a record and never repeats or skips an event.
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = outbox(&store, after, 7);
            let Some((last, _)) = page.last() else { break };
            after = *last;
            seen.extend(page.into_iter().map(|(seq, _)| seq));
        }
        assert_eq!(seen, numbers);

        // Deleting the folder's files in one go batches their events too.
        let before = store.scan(Table::OUTBOX, "", None, 100).unwrap().len();
        let root = DataPath::new("admin", "c", "").unwrap();
        assert_eq!(data.delete_tree(who, &root, true).unwrap(), n as u64 + 2);
        assert_eq!(
            store.scan(Table::OUTBOX, "", None, 100).unwrap().len(),
            before + 2,
            "72 events in records of up to 64"
        );
        let deleted = outbox(&store, n as u64 + 2, 1000);
        assert_eq!(deleted.len(), n + 2);
        assert!(
            deleted
                .iter()
                .all(|(_, e)| e["type"] == "wasmgrid.data.FileDeleted")
        );
        let numbers: Vec<u64> = deleted.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            numbers,
            (n as u64 + 3..=2 * (n as u64 + 2)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn batched_writes_refuse_folders_and_replace_files_and_their_blobs() {
        let (dir, store, data) = service();
        let caller = admin();
        let who = Principal::Key(&caller);
        let path = |p: &str| DataPath::new("admin", "c", p).unwrap();
        data.create(who, &DataPath::new("admin", "c", "").unwrap(), None)
            .unwrap();
        data.create(who, &path("dir"), None).unwrap();
        data.put(
            who,
            &path("big"),
            "application/octet-stream",
            &vec![7u8; INLINE_MAX + 1],
        )
        .unwrap();
        // Keys that sort between `crowded` and its folder marker `crowded/`:
        // more than one walk of the probe looks at.
        for i in 0..6 {
            data.put(who, &path(&format!("crowded.{i}")), "text/plain", b"x")
                .unwrap();
        }
        data.create(who, &path("crowded"), None).unwrap();
        let old_blobs = blob_ids(dir.path());
        assert_eq!(old_blobs.len(), 1);
        let staged: Vec<StagedWrite> = [
            ("dir", &b"into a folder"[..]),
            ("crowded", b"into a crowded folder"),
            ("big", b"small now"),
            ("new", b"fresh"),
        ]
        .iter()
        .map(|(p, body)| {
            data.stage_write(
                who,
                &path(p),
                "text/plain",
                bytes::Bytes::copy_from_slice(body),
            )
            .unwrap()
        })
        .collect();
        let writes: Vec<_> = staged
            .into_iter()
            .map(StagedWrite::into_file_write)
            .collect();
        let results =
            in_runtime(|| futures::executor::block_on(DataFiles::write(&*store, &writes))).unwrap();
        assert_eq!(results[0], Written::IsFolder);
        assert_eq!(results[1], Written::IsFolder);
        assert_eq!(
            results[2],
            Written::Done {
                replaced_blob: old_blobs.first().cloned()
            }
        );
        assert_eq!(
            results[3],
            Written::Done {
                replaced_blob: None
            }
        );
        assert_eq!(
            read_all(&data, who, &path("big"), u64::MAX).unwrap().1,
            &b"small now"[..]
        );
        assert_eq!(
            read_all(&data, who, &path("new"), u64::MAX).unwrap().1,
            &b"fresh"[..]
        );
        assert!(read_all(&data, who, &path("dir"), u64::MAX).is_err());
    }

    #[test]
    fn orphan_blobs_are_removed_and_live_or_uploading_ones_kept() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let caller = admin();
        let key = Principal::Key(&caller);
        let big = vec![b'x'; INLINE_MAX + 1];
        let live = DataPath::new("demo", "c", "live.bin").unwrap();
        let replaced = DataPath::new("demo", "c", "replaced.bin").unwrap();
        let component = format!("sha256:{}", "ab".repeat(32));
        let (crashed_upload, replaced_blob);
        {
            let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
            let data = DataService::new(store.clone(), store.clone(), store.clone());
            store.put_blob(&component, b"component bytes").unwrap();
            data.put(key, &live, "application/octet-stream", &big)
                .unwrap();
            // An upload that crashed after finishing its blob, before its record.
            let mut w = store.create_blob().unwrap();
            w.write_all(&big).unwrap();
            crashed_upload = w.finish().unwrap();
            // A file replaced by a process that crashed before deleting the old
            // blob: the record no longer points at it.
            data.put(key, &replaced, "application/octet-stream", &big)
                .unwrap();
            replaced_blob = data.stat(key, &replaced).unwrap().blob.unwrap();
            let small = FileRecord {
                size: 1,
                content_type: "text/plain".into(),
                etag: "\"1\"".into(),
                last_modified: now_rfc3339(),
                blob: None,
                folder: false,
                expires: None,
            };
            store
                .transact(&mut |txn| {
                    txn.put(Table::FILES, &replaced.key(), &record::encode(&small))?;
                    txn.put(Table::FILE_DATA, &replaced.key(), b"y")
                })
                .unwrap();
            // An upload that crashed mid-way: its temporary file stays behind.
            let mut unfinished = store.create_blob().unwrap();
            unfinished.write_all(b"partial").unwrap();
            std::mem::forget(unfinished);
        }
        assert!(blob_ids(dir.path()).iter().any(|n| n.starts_with(".tmp-")));
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        assert!(
            !blob_ids(dir.path()).iter().any(|n| n.starts_with(".tmp-")),
            "temporary files are removed at open"
        );
        let data = DataService::new(store.clone(), store.clone(), store.clone());
        // An upload in progress: finished, record not committed yet.
        let mut w = store.create_blob().unwrap();
        w.write_all(&big).unwrap();
        let uploading = w.finish().unwrap();
        let live_blob = data.stat(key, &live).unwrap().blob.unwrap();
        assert_eq!(data.remove_orphan_blobs().unwrap(), 2);
        let left = blob_ids(dir.path());
        assert!(!left.contains(&crashed_upload) && !left.contains(&replaced_blob));
        assert!(left.contains(&live_blob) && left.contains(&uploading));
        assert!(left.contains(&format!("sha256-{}", "ab".repeat(32))));
        // The upload completes and keeps its blob.
        let fresh = DataPath::new("demo", "c", "fresh.bin").unwrap();
        use sha2::Digest;
        let etag = etag_of(&sha2::Sha256::digest(&big));
        data.commit_blob(
            key,
            &fresh,
            "application/octet-stream",
            big.len() as u64,
            etag,
            uploading,
        )
        .unwrap();
        assert_eq!(data.remove_orphan_blobs().unwrap(), 0);
        for p in [&live, &fresh] {
            assert_eq!(
                read_all(&data, key, p, u64::MAX).unwrap().1.len(),
                big.len()
            );
        }
        assert_eq!(
            &read_all(&data, key, &replaced, u64::MAX).unwrap().1[..],
            b"y"
        );
    }

    #[test]
    fn orphan_sweeps_never_take_a_blob_from_a_concurrent_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let data = Arc::new(DataService::new(store.clone(), store.clone(), store));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let (data, done) = (data.clone(), done.clone());
            std::thread::spawn(move || {
                // Old blobs of replaced files are orphans for a moment (the
                // replacement deletes them after its commit) and may go here.
                let mut sweeps = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    data.remove_orphan_blobs().unwrap();
                    sweeps += 1;
                }
                sweeps
            })
        };
        let caller = admin();
        let key = Principal::Key(&caller);
        let big = vec![b'z'; INLINE_MAX + 1];
        for i in 0..12 {
            let p = DataPath::new("demo", "c", &format!("f{i}")).unwrap();
            data.put(key, &p, "application/octet-stream", &big).unwrap();
            // Replacing frees the old blob itself; the sweep must not race it
            // into deleting the new one.
            data.put(key, &p, "application/octet-stream", &big).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(sweeper.join().unwrap() > 0);
        for i in 0..12 {
            let p = DataPath::new("demo", "c", &format!("f{i}")).unwrap();
            assert_eq!(
                read_all(&data, key, &p, u64::MAX).unwrap().1.len(),
                big.len()
            );
        }
        assert_eq!(data.remove_orphan_blobs().unwrap(), 0);
        assert_eq!(blob_ids(dir.path()).len(), 12);
    }
}
