//! [`DataFiles`] on JetStream (docs/STORAGE.md 4.3): the change log first,
//! the record applied from it.
//!
//! - **Commit point.** A write publishes one entry per file to the change log
//!   `P_log`, subject `P.log.f.<path>` (the path's NATS key): the op, record,
//!   inline content and change event. Its stream sequence orders it among the
//!   path's writes; once the PubAck is in, the write has happened.
//! - **Apply.** The writer then applies the entry to the path's value in
//!   bucket `P_files` (record + content + the log sequence it reflects; a
//!   delete leaves a tombstone) with compare-and-set, only forwards: an entry
//!   older than the value's sequence is superseded. The router applies every
//!   file entry again before it routes its event, so an entry whose writer
//!   died after the PubAck is applied within the router's lag.
//! - **Counters.** An increment is a [`Op::PutIfNext`] entry: the new value,
//!   computed from the value at the path's newest entry, valid only if no
//!   other entry of the path came between (checked by everyone the same way:
//!   the path's first entry after that one is this one). A void entry writes
//!   nothing and routes no event, and the writer tries again; concurrent
//!   increments are never lost.
//! - **Listings.** Bucket `P_dirs` holds one key per folder member:
//!   `<folder>.<name>` for a file, `<folder>.<name>_2F` for a sub-folder (the
//!   escape of `/`), `<folder>._m` for the folder's own marker. Creating
//!   `a/b/c` puts `c` under `a/b`, then `b` under `a`, up to the first
//!   ancestor that lists the child already; a folder left empty is unlisted
//!   from its parent and then looked at again, so that a write racing into it
//!   puts it back. Membership changes are plain puts and deletes of one key,
//!   never compare-and-set, so writers on several nodes never lose each
//!   other's (STORAGE.md rule 3: on a clustered 2.9.10 stream two updates
//!   from one revision can both succeed). A level is read with one ordered
//!   consumer over `<folder>.*` (last message per key), sorted in the node;
//!   the router re-checks the membership of every path it applies.
//!
//! - **Tombstones.** A delete leaves a tombstone value (its log sequence),
//!   so that a late apply of an older entry cannot bring the file back. The
//!   router records each delete it routes in stream `P_tombs`; a sweep on
//!   one node ([`NatsFiles::sweep_tombstones`]) removes the tombstones of
//!   deletes older than [`TOMBSTONE_AGE`] that nothing replaced since (a
//!   purge of that one message), so churn does not grow `P_files` forever.
//!
//! What this gives (and STORAGE.md 4.3 states): every successful write has
//! exactly one event, in the order of the path's writes; a write whose caller
//! saw an error after the commit point still happens, event included; reads
//! on any node see every write that returned. Costs: a new name is one put
//! per new level; an overwrite, one get (its listing key, which a writer
//! that died after applying may not have put); a page of a level reads the whole level's keys (O(members)
//! per page, not O(page)); the orphan sweep's `blob_references` reads every
//! file per page.

mod codec;

use crate::keys::encode_key;
use crate::queues::stream;
use crate::{ConnectError, NatsStore, kv_bucket, store_err};
use async_nats::HeaderMap;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store as Kv, UpdateErrorKind};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use codec::{Dir, Entry, Member, Op, Value};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use wasmgrid_store::files::{
    CounterWrite, DataFiles, DeleteEvents, FileRecord, Level, Listed, NotCounted, Occupancy,
    Removed, StoredFile, TreeItem, Written, record, unix_now,
};
use wasmgrid_store::records::{Bucket, Records};
use wasmgrid_store::{Page, StoreError};

/// Files read or deleted per round trip batch.
const PAGE: usize = 256;

/// Gets and applies in flight at once for one call.
const IN_FLIGHT: usize = 16;

/// Rounds of publishing a batch's entries before a write gives up.
const PUBLISH_ROUNDS: usize = 3;

/// Tries of an increment before it reports the path as too busy.
const INCREMENT_TRIES: usize = 64;

/// How long a deleted path's tombstone stays before the sweep removes it:
/// far longer than any writer takes from logging an entry to applying it
/// (an apply after the tombstone is gone could bring an older write back).
pub const TOMBSTONE_AGE: Duration = Duration::from_secs(3600);

/// The files of a cluster, on the connection of a [`NatsStore`].
#[derive(Clone)]
pub struct NatsFiles {
    store: NatsStore,
    files: Kv,
    dirs: Kv,
    log: Stream,
    /// Deletes routed, oldest first: `<log seq> <path>` (subject `P.tomb.f`).
    tombs: Stream,
}

impl std::fmt::Debug for NatsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsFiles")
            .field("prefix", &self.store.prefix)
            .finish_non_exhaustive()
    }
}

impl NatsStore {
    /// The files on this connection: buckets `P_files` and `P_dirs` and the
    /// change log `P_log` (created if missing).
    pub async fn files(&self) -> Result<NatsFiles, ConnectError> {
        let p = &self.prefix;
        let files = kv_bucket(
            &self.js,
            &format!("{p}_files"),
            1,
            self.replicas,
            Duration::ZERO,
        )
        .await?;
        let dirs = kv_bucket(
            &self.js,
            &format!("{p}_dirs"),
            1,
            self.replicas,
            Duration::ZERO,
        )
        .await?;
        let log = stream(&self.js, self.log_config()).await?;
        let tombs = stream(
            &self.js,
            self.stream_config("tombs", "deleted paths, for the tombstone sweep", "tomb"),
        )
        .await?;
        Ok(NatsFiles {
            store: self.clone(),
            files,
            dirs,
            log,
            tombs,
        })
    }
}

fn key_err(e: crate::keys::KeyError) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The NATS key of a file's value: its encoded key, or for a folder marker
/// (`…/`) the folder's encoded key and the token `_m`, which no encoded part
/// can be (`_` is always escaped).
fn file_nats_key(key: &str) -> Result<String, StoreError> {
    match key.strip_suffix('/') {
        Some(folder) => Ok(format!("{}._m", encode_key(folder).map_err(key_err)?)),
        None => encode_key(key).map_err(key_err),
    }
}

/// The logical key of a `P_files` NATS key (see [`file_nats_key`]).
fn file_logical_key(nats: &str) -> Result<String, crate::keys::KeyError> {
    match nats.strip_suffix("._m") {
        Some(folder) => Ok(format!("{}/", crate::keys::decode_key(folder)?)),
        None => crate::keys::decode_key(nats),
    }
}

/// The folder holding `key` and its entry there; `None` for keys of fewer
/// than three parts (a collection itself has no parent index). A marker key
/// (`o/c/a/`) is the folder `o/c/a` in `o/c`.
fn parent(key: &str) -> Option<(&str, Member)> {
    let (trimmed, folder) = match key.strip_suffix('/') {
        Some(t) => (t, true),
        None => (key, false),
    };
    let (dir, name) = trimmed.rsplit_once('/')?;
    // `dir` must be at least `owner/collection`.
    dir.contains('/').then(|| {
        (
            dir,
            Member {
                name: name.to_string(),
                folder,
            },
        )
    })
}

/// The change event a file log entry carries, for inspection (a void
/// counter entry's too: inspection does not check validity).
pub(crate) fn event_of(payload: Bytes) -> Option<Bytes> {
    Entry::decode(payload).ok().and_then(|e| e.event)
}

/// The parent of folder `folder` (no trailing `/`) and the folder's entry
/// there; `None` for a collection.
fn folder_parent(folder: &str) -> Option<(&str, Member)> {
    let (dir, name) = folder.rsplit_once('/')?;
    dir.contains('/').then(|| {
        (
            dir,
            Member {
                name: name.to_string(),
                folder: true,
            },
        )
    })
}

/// The token of a folder's own marker among its members' keys (`_` is
/// always escaped in an encoded name, so no name has this token).
const MARKER_TOKEN: &str = "_m";

/// What ends a sub-folder member's token: the escape of `/`.
const FOLDER_SUFFIX: &str = "_2F";

/// The member that stands for a folder's marker (see `NatsFiles::member_key`).
fn marker_member() -> Member {
    Member {
        name: String::new(),
        folder: false,
    }
}

/// What applying a log entry did.
struct Applied {
    /// This call wrote the value (not superseded or applied by another).
    performed: bool,
    /// The live record the value held before, when this call wrote it.
    previous: Option<Bytes>,
    /// The entry counts (every entry but a void [`Op::PutIfNext`]).
    valid: bool,
    /// The path is live after this entry (as far as this call knows).
    live: bool,
}

fn decode_value(nkey: &str, bytes: Bytes) -> Result<Value, StoreError> {
    Value::decode(bytes).map_err(|reason| StoreError::Corrupt {
        table: "files",
        key: nkey.to_string(),
        reason,
    })
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<FileRecord, StoreError> {
    record::decode(bytes)
        .map(record::FileView::into_owned)
        .map_err(|reason| StoreError::Corrupt {
            table: "files",
            key: key.to_string(),
            reason,
        })
}

/// The stored file of a live value: a large file's or a marker's content is
/// not inline.
fn stored(record: &Bytes, inline: &Bytes) -> StoredFile {
    let inline_kept = record::decode_for_read(record)
        .map(|v| v.blob.is_none() && !v.folder)
        .unwrap_or(true);
    StoredFile {
        record: record.to_vec(),
        inline: inline_kept.then(|| inline.to_vec()),
    }
}

impl NatsFiles {
    fn subject(&self, key: &str) -> Result<String, StoreError> {
        Ok(format!(
            "{}.log.f.{}",
            self.store.prefix,
            file_nats_key(key)?
        ))
    }

    /// A path's value and its revision.
    async fn value(&self, nkey: &str) -> Result<Option<(u64, Value)>, StoreError> {
        let entry = self
            .files
            .entry(nkey)
            .await
            .map_err(|e| store_err("reading a file", e))?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                Ok(Some((e.revision, decode_value(nkey, e.value)?)))
            }
            _ => Ok(None),
        }
    }

    /// The live record and content of `key`.
    async fn live(&self, key: &str) -> Result<Option<(Bytes, Bytes)>, StoreError> {
        Ok(self
            .value(&file_nats_key(key)?)
            .await?
            .and_then(|(_, v)| v.live))
    }

    /// The live values of `keys`, fetched concurrently, in order.
    async fn live_many(&self, keys: &[String]) -> Result<Vec<Option<(Bytes, Bytes)>>, StoreError> {
        let reads: Vec<_> = keys.iter().map(|k| self.live(k)).collect();
        in_order(reads, IN_FLIGHT).await.into_iter().collect()
    }

    /// The sequence of `subject`'s first log entry after `after`.
    async fn first_after(&self, subject: &str, after: u64) -> Result<Option<u64>, StoreError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self
            .log
            .raw_message_builder()
            .sequence(after + 1)
            .next_by_subject(subject.to_string())
            .send()
            .await
        {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(store_err("reading a path's log entries", e)),
        }
    }

    /// The sequence of `subject`'s newest log entry (0: none retained).
    async fn last_of(&self, subject: &str) -> Result<u64, StoreError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self.log.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(store_err("reading a path's newest log entry", e)),
        }
    }

    /// Publishes `entries` to the log, pipelined, and returns their
    /// sequences: the commit point. Each entry has its own message id, so a
    /// publish repeated after a lost acknowledgement is not logged twice.
    async fn commit(&self, entries: &[Entry]) -> Result<Vec<u64>, StoreError> {
        let mut out: Vec<Option<u64>> = vec![None; entries.len()];
        let prepared: Vec<(String, String, Bytes)> = entries
            .iter()
            .map(|e| {
                Ok((
                    self.subject(&e.key)?,
                    hex::encode(rand::random::<[u8; 16]>()),
                    e.encode(),
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let mut last_error = None;
        for _ in 0..PUBLISH_ROUNDS {
            let mut pending = Vec::new();
            for (i, (subject, id, payload)) in prepared.iter().enumerate() {
                if out[i].is_some() {
                    continue;
                }
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                match self
                    .store
                    .js
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await
                {
                    Ok(ack) => pending.push((i, ack)),
                    Err(e) => last_error = Some(store_err("logging a file change", e)),
                }
            }
            for (i, ack) in pending {
                match ack.await {
                    Ok(ack) => out[i] = Some(ack.sequence),
                    Err(e) => last_error = Some(store_err("logging a file change", e)),
                }
            }
            if out.iter().all(Option::is_some) {
                return Ok(out.into_iter().flatten().collect());
            }
        }
        Err(last_error.unwrap_or_else(|| StoreError::Unavailable("logging a file change".into())))
    }

    /// Applies entry `seq` to its path's value (forwards only).
    async fn apply(&self, seq: u64, entry: &Entry) -> Result<Applied, StoreError> {
        let nkey = file_nats_key(&entry.key)?;
        let valid = match entry.op {
            Op::PutIfNext => {
                self.first_after(&self.subject(&entry.key)?, entry.expect_prev)
                    .await?
                    == Some(seq)
            }
            Op::Put | Op::Delete => true,
        };
        loop {
            let current = self.value(&nkey).await?;
            let current_live = current.as_ref().is_some_and(|(_, v)| v.live.is_some());
            if !valid {
                // Void: nothing changes (not even the position, which would
                // skip a valid entry before it that is not applied yet).
                return Ok(Applied {
                    performed: false,
                    previous: None,
                    valid,
                    live: current_live,
                });
            }
            if let Some((_, v)) = &current
                && v.log_seq >= seq
            {
                return Ok(Applied {
                    performed: false,
                    previous: None,
                    valid,
                    live: current_live,
                });
            }
            let before = current.as_ref().and_then(|(_, v)| v.live.clone());
            let live = if entry.op == Op::Delete {
                None
            } else {
                Some((entry.record.clone(), entry.inline.clone()))
            };
            let is_live = live.is_some();
            let value = Value { log_seq: seq, live }.encode();
            let conflict = match &current {
                Some((rev, _)) => match self.files.update(&nkey, value, *rev).await {
                    Ok(_) => false,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => true,
                    Err(e) => return Err(store_err("applying a file change", e)),
                },
                None => match self.files.create(&nkey, value).await {
                    Ok(_) => false,
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => true,
                    Err(e) => return Err(store_err("applying a file change", e)),
                },
            };
            if !conflict {
                return Ok(Applied {
                    performed: true,
                    previous: before.map(|(r, _)| r),
                    valid,
                    live: is_live,
                });
            }
        }
    }

    /// The router's step for one file entry: apply it, settle its path's
    /// listing membership, and return the event to route (`None`: a void
    /// entry, one without an event, or an unreadable one, which is logged
    /// and skipped).
    pub(crate) async fn route(
        &self,
        seq: u64,
        payload: Bytes,
    ) -> Result<Option<Bytes>, StoreError> {
        let entry = match Entry::decode(payload) {
            Ok(e) => e,
            Err(reason) => {
                tracing::error!(seq, %reason, "skipping an unreadable file change in the log");
                return Ok(None);
            }
        };
        let applied = self.apply(seq, &entry).await?;
        if applied.performed
            && let Some(previous) = &applied.previous
        {
            self.delete_replaced_blob(previous, &entry).await;
        }
        self.settle(&entry.key, applied.live).await?;
        if entry.op == Op::Delete && applied.valid {
            self.record_delete(seq, &entry.key).await;
        }
        Ok(if applied.valid { entry.event } else { None })
    }

    fn tomb_subject(&self) -> String {
        format!("{}.tomb.f", self.store.prefix)
    }

    /// Records a routed delete for the tombstone sweep (de-duplicated by its
    /// log sequence when the router routes it again). A delete not recorded
    /// only keeps its tombstone.
    async fn record_delete(&self, seq: u64, key: &str) {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("tomb{seq}"));
        let published = async {
            self.store
                .js
                .publish_with_headers(
                    self.tomb_subject(),
                    headers,
                    Bytes::from(format!("{seq} {key}")),
                )
                .await?
                .await
        };
        if let Err(e) = published.await {
            tracing::warn!(error = %e, %key, "recording a delete for the tombstone sweep failed; its tombstone stays");
        }
    }

    /// Removes the tombstones of deletes routed at least `older_than` ago,
    /// oldest first, and forgets those deletes; how many tombstones went. A
    /// path written or deleted again since keeps its value (the next delete
    /// has its own turn). Run on one node at a time; a second one only
    /// repeats work.
    pub async fn sweep_tombstones(&self, older_than: Duration) -> Result<u64, StoreError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(older_than).as_nanos() as i128;
        let subject = self.tomb_subject();
        let mut next = self
            .tombs
            .get_info()
            .await
            .map_err(|e| store_err("reading the tombstone stream", e))?
            .state
            .first_sequence
            .max(1);
        let mut forgotten = next;
        let mut swept = 0;
        loop {
            let message = match self
                .tombs
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone())
                .send()
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(store_err("reading a recorded delete", e)),
            };
            if message.time.unix_timestamp_nanos() > cutoff {
                break;
            }
            let recorded = std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|p| p.split_once(' '))
                .and_then(|(seq, key)| Some((seq.parse::<u64>().ok()?, key)));
            match recorded {
                Some((seq, key)) => {
                    if self.drop_tombstone(key, seq).await? {
                        swept += 1;
                    }
                }
                None => tracing::warn!(
                    seq = message.sequence,
                    "skipping an unreadable recorded delete"
                ),
            }
            next = message.sequence + 1;
            if next - forgotten >= PAGE as u64 {
                self.forget_deletes(next).await?;
                forgotten = next;
            }
        }
        if next > forgotten {
            self.forget_deletes(next).await?;
        }
        Ok(swept)
    }

    /// Removes the recorded deletes below `upto`.
    async fn forget_deletes(&self, upto: u64) -> Result<(), StoreError> {
        self.tombs
            .purge()
            .sequence(upto)
            .await
            .map(|_| ())
            .map_err(|e| store_err("forgetting swept deletes", e))
    }

    /// Removes `key`'s value if it is still the tombstone of log entry `seq`:
    /// a purge of that message only, so a write that lands meanwhile stays.
    async fn drop_tombstone(&self, key: &str, seq: u64) -> Result<bool, StoreError> {
        let nkey = file_nats_key(key)?;
        let Some(entry) = self
            .files
            .entry(&nkey)
            .await
            .map_err(|e| store_err("reading a file's tombstone", e))?
        else {
            return Ok(false);
        };
        if entry.operation != Operation::Put {
            return Ok(false);
        }
        let value = decode_value(&nkey, entry.value)?;
        if value.live.is_some() || value.log_seq != seq {
            return Ok(false);
        }
        self.files
            .stream
            .purge()
            .filter(format!("{}{nkey}", self.files.prefix))
            .sequence(entry.revision + 1)
            .await
            .map_err(|e| store_err("removing a file's tombstone", e))?;
        Ok(true)
    }

    /// Deletes the blob a record named when the entry that replaced it (as
    /// applied by the router, whose caller never learns of it) names another.
    async fn delete_replaced_blob(&self, previous: &Bytes, entry: &Entry) {
        let old = record::decode_for_read(previous)
            .ok()
            .and_then(|v| v.blob.map(std::borrow::Cow::into_owned));
        let new = record::decode_for_read(&entry.record)
            .ok()
            .and_then(|v| v.blob.map(std::borrow::Cow::into_owned));
        if let Some(old) = old
            && Some(&old) != new.as_ref()
        {
            use wasmgrid_store::blobs::{BlobId, Blobs};
            if let Err(e) = Blobs::delete(&self.store, &BlobId(old)).await {
                tracing::warn!(error = %e, "deleting a replaced blob failed; the orphan sweep removes it");
            }
        }
    }

    // ---- folder membership ----

    /// The `P_dirs` key of `folder`'s member `m`: the folder's NATS key and
    /// one more token, the member's name (a sub-folder's with its `/`, so a
    /// file and a folder of one name are two keys).
    fn member_key(folder: &str, m: &Member) -> Result<String, StoreError> {
        let mut key = encode_key(folder).map_err(key_err)?;
        key.push('.');
        if m.name.is_empty() {
            key.push_str(MARKER_TOKEN);
        } else {
            // One token: a name has no `/`.
            key.push_str(&encode_key(&m.name).map_err(key_err)?);
            if m.folder {
                key.push_str(FOLDER_SUFFIX);
            }
        }
        Ok(key)
    }

    async fn put_member(&self, folder: &str, m: &Member) -> Result<(), StoreError> {
        self.dirs
            .put(Self::member_key(folder, m)?, Bytes::new())
            .await
            .map(|_| ())
            .map_err(|e| store_err("adding to a folder listing", e))
    }

    async fn delete_member(&self, folder: &str, m: &Member) -> Result<(), StoreError> {
        self.dirs
            .delete(Self::member_key(folder, m)?)
            .await
            .map_err(|e| store_err("removing from a folder listing", e))
    }

    async fn has_member(&self, folder: &str, m: &Member) -> Result<bool, StoreError> {
        let entry = self
            .dirs
            .entry(Self::member_key(folder, m)?)
            .await
            .map_err(|e| store_err("reading a folder listing", e))?;
        Ok(entry.is_some_and(|e| e.operation == Operation::Put))
    }

    /// `folder`'s marker flag and members in listing order, reading at most
    /// `enough` live keys (`usize::MAX`: all); `None` if it has none.
    async fn scan_dir(&self, folder: &str, enough: usize) -> Result<Option<Dir>, StoreError> {
        let filter = format!("{}.*", encode_key(folder).map_err(key_err)?);
        let (mut messages, upto) =
            crate::records::last_per_subject(&self.dirs, &self.store.js.client(), &filter, true)
                .await?;
        if upto == 0 {
            return Ok(None);
        }
        let mut live: BTreeMap<String, bool> = BTreeMap::new();
        let collect = async {
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| store_err("listing a folder", e))?;
                let info = message
                    .info()
                    .map_err(|e| StoreError::Backend(format!("listing a folder: {e}")))?;
                let (seq, left) = (info.stream_sequence, info.pending);
                if let Some(token) = message
                    .subject
                    .strip_prefix(self.dirs.prefix.as_str())
                    .and_then(|k| k.rsplit('.').next())
                {
                    let put = crate::records::operation(&message) == Operation::Put;
                    if put {
                        live.insert(token.to_string(), true);
                    } else {
                        live.remove(token);
                    }
                }
                if live.len() >= enough || (left == 0 && seq >= upto) {
                    return Ok(());
                }
            }
            Err(StoreError::Unavailable(
                "the folder listing ended early".into(),
            ))
        };
        tokio::time::timeout(Duration::from_secs(30), collect)
            .await
            .map_err(|_| StoreError::Unavailable("listing a folder timed out".into()))??;
        if live.is_empty() {
            return Ok(None);
        }
        let mut dir = Dir::default();
        for token in live.into_keys() {
            if token == MARKER_TOKEN {
                dir.marker = true;
                continue;
            }
            // A sub-folder's token ends in the escape of `/` (see
            // `member_key`; a literal `_` is always escaped, so no name's
            // token ends that way).
            let (name_token, folder) = match token.strip_suffix(FOLDER_SUFFIX) {
                Some(t) => (t, true),
                None => (token.as_str(), false),
            };
            match crate::keys::decode_key(name_token) {
                Ok(name) => {
                    dir.insert(Member { name, folder });
                }
                Err(e) => tracing::warn!("skipping a folder entry this build did not write: {e}"),
            }
        }
        Ok(Some(dir))
    }

    async fn dir(&self, folder: &str) -> Result<Option<Dir>, StoreError> {
        self.scan_dir(folder, usize::MAX).await
    }

    /// Whether anything is under `folder` (a member or its marker).
    async fn occupied(&self, folder: &str) -> Result<bool, StoreError> {
        Ok(self.scan_dir(folder, 1).await?.is_some())
    }

    /// Lists `members` in `folder` and the folder in its parent, up to the
    /// first ancestor that lists it already. Membership changes are plain
    /// puts and deletes of one key each, so concurrent writers never lose
    /// one another's (no compare-and-set: STORAGE.md rule 3).
    async fn link(&self, folder: &str, members: &[Member]) -> Result<(), StoreError> {
        let puts: Vec<_> = members.iter().map(|m| self.put_member(folder, m)).collect();
        for put in in_order(puts, IN_FLIGHT).await {
            put?;
        }
        let mut child = folder.to_string();
        while let Some((up, me)) = folder_parent(&child) {
            if self.has_member(up, &me).await? {
                break;
            }
            self.put_member(up, &me).await?;
            child = up.to_string();
        }
        Ok(())
    }

    /// Unlists `members` from `folder`; while a folder is left empty,
    /// unlists it from its parent and then looks again: a write that raced
    /// into it (and found the folder still listed) puts it back.
    async fn unlink(&self, folder: &str, members: &[Member]) -> Result<(), StoreError> {
        let deletes: Vec<_> = members
            .iter()
            .map(|m| self.delete_member(folder, m))
            .collect();
        for delete in in_order(deletes, IN_FLIGHT).await {
            delete?;
        }
        let mut folder = folder.to_string();
        while !self.occupied(&folder).await? {
            let Some((up, me)) = folder_parent(&folder) else {
                break;
            };
            self.delete_member(up, &me).await?;
            if self.occupied(&folder).await? {
                self.put_member(up, &me).await?;
                break;
            }
            folder = up.to_string();
        }
        Ok(())
    }

    /// Makes `key`'s listing membership match whether it is `live` (the
    /// router's repair: it reads before it writes).
    async fn settle(&self, key: &str, live: bool) -> Result<(), StoreError> {
        let (folder, me) = match key.strip_suffix('/') {
            // A folder marker: the `_m` key in the folder's own listing.
            Some(folder) => (folder, marker_member()),
            None => match parent(key) {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        let listed = self.has_member(folder, &me).await?;
        if live && !listed {
            self.link(folder, &[me]).await
        } else if live {
            // Listed: make sure the folder is too (a lost walk up).
            self.link(folder, &[]).await
        } else if listed {
            self.unlink(folder, &[me]).await
        } else {
            Ok(())
        }
    }

    /// Files and markers under `prefix` in byte order of their keys, after
    /// `after`, at most `limit`: a depth-first walk of the folder indexes.
    async fn walk(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let past = |k: &str| after.is_none_or(|a| k > a);
        let mut out = Vec::new();
        // (folder prefix, its members, the next member's index)
        let mut stack: Vec<(String, Vec<Member>, usize)> = Vec::new();
        let mut enter = Some(prefix.to_string());
        while out.len() < limit {
            if let Some(folder_prefix) = enter.take() {
                let folder = folder_prefix.trim_end_matches('/');
                if let Some(dir) = self.dir(folder).await? {
                    if dir.marker && past(&folder_prefix) {
                        out.push(folder_prefix.clone());
                    }
                    stack.push((folder_prefix, dir.members, 0));
                }
                continue;
            }
            let Some((folder_prefix, members, next)) = stack.last_mut() else {
                break;
            };
            let Some(m) = members.get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            let full = format!("{folder_prefix}{}", m.key_part());
            if !m.folder {
                if past(&full) {
                    out.push(full);
                }
            } else if after.is_none_or(|a| full.as_str() > a || a.starts_with(&full)) {
                enter = Some(full);
            }
        }
        Ok(out)
    }
}

/// Runs `futures` with at most `n` in flight; their outputs in order. (The
/// futures are built before, not by a closure inside the stream, which
/// `async_trait`'s `Send` bound cannot see through.)
async fn in_order<F: std::future::Future>(futures: Vec<F>, n: usize) -> Vec<F::Output> {
    futures::stream::iter(futures).buffered(n).collect().await
}

/// Groups keys by folder, for one index update per folder.
fn by_folder<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeMap<String, Vec<Member>> {
    let mut out: BTreeMap<String, Vec<Member>> = BTreeMap::new();
    for key in keys {
        if let Some((folder, m)) = parent(key) {
            out.entry(folder.to_string()).or_default().push(m);
        }
    }
    out
}

impl NatsFiles {
    /// Deletes the live files among `keys` (with their events when `events`
    /// is given), pipelined; what was removed.
    async fn delete_keys(
        &self,
        keys: &[String],
        events: Option<DeleteEvents<'_>>,
        only_expired_at: Option<u64>,
    ) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        let values = self.live_many(keys).await?;
        let mut entries = Vec::new();
        for (key, value) in keys.iter().zip(values) {
            let Some((record_bytes, _)) = value else {
                continue;
            };
            let rec = decode_record(key, &record_bytes)?;
            if only_expired_at.is_some_and(|now| !rec.expired(now)) {
                continue;
            }
            if !key.ends_with('/') {
                removed.files += 1;
            }
            removed.blobs.extend(rec.blob.clone());
            entries.push(Entry {
                op: Op::Delete,
                expect_prev: 0,
                key: key.clone(),
                record: Bytes::new(),
                inline: Bytes::new(),
                event: events.and_then(|ev| ev(key, &rec)).map(Bytes::from),
            });
        }
        let seqs = self.commit(&entries).await?;
        let applies: Vec<_> = entries
            .iter()
            .zip(&seqs)
            .map(|(e, s)| self.apply(*s, e))
            .collect();
        let applied = in_order(applies, IN_FLIGHT).await;
        let mut gone = Vec::new();
        for (e, a) in entries.iter().zip(applied) {
            match a {
                Ok(a) if a.performed && !a.live => gone.push(e.key.as_str()),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, key = %e.key, "applying a delete failed; the router applies it");
                }
            }
        }
        for (folder, members) in by_folder(gone.iter().copied().filter(|k| !k.ends_with('/'))) {
            if let Err(e) = self.unlink(&folder, &members).await {
                tracing::warn!(error = %e, "updating a folder index failed; the router repairs it");
            }
        }
        for marker in gone.iter().filter(|k| k.ends_with('/')) {
            if let Err(e) = self.settle(marker, false).await {
                tracing::warn!(error = %e, "updating a folder index failed; the router repairs it");
            }
        }
        Ok(removed)
    }

    /// Deletes everything under `prefix` that [`walk`](Self::walk) finds
    /// (files and markers), page by page.
    async fn delete_walk(
        &self,
        prefix: &str,
        events: Option<DeleteEvents<'_>>,
        only_expired_at: Option<u64>,
    ) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        let mut after: Option<String> = None;
        loop {
            let keys = self.walk(prefix, after.as_deref(), PAGE).await?;
            let full = keys.len() == PAGE;
            let mut step = self.delete_keys(&keys, events, only_expired_at).await?;
            removed.files += step.files;
            removed.blobs.append(&mut step.blobs);
            after = keys.last().cloned();
            if !full {
                return Ok(removed);
            }
        }
    }
}

#[async_trait::async_trait]
impl DataFiles for NatsFiles {
    async fn stat(&self, key: &str) -> Result<Option<FileRecord>, StoreError> {
        match self.live(key).await? {
            Some((record, _)) => decode_record(key, &record).map(Some),
            None => Ok(None),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<StoredFile>, StoreError> {
        Ok(self.live(key).await?.map(|(r, i)| stored(&r, &i)))
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<StoredFile>>, StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        Ok(self
            .live_many(&keys)
            .await?
            .into_iter()
            .map(|v| v.map(|(r, i)| stored(&r, &i)))
            .collect())
    }

    async fn list_level(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
    ) -> Result<Level, StoreError> {
        let now = unix_now();
        let mut level = Level {
            entries: Vec::new(),
            next: None,
            exists: false,
        };
        let Some(dir) = self.dir(prefix.trim_end_matches('/')).await? else {
            return Ok(level);
        };
        level.exists = dir.marker && start <= prefix;
        let candidates: Vec<(String, Member)> = dir
            .members
            .into_iter()
            .map(|m| (format!("{prefix}{}", m.key_part()), m))
            .filter(|(full, m)| full.as_str() >= start || (m.folder && start.starts_with(full)))
            .collect();
        for chunk in candidates.chunks(PAGE) {
            let file_keys: Vec<String> = chunk
                .iter()
                .filter(|(_, m)| !m.folder)
                .map(|(k, _)| k.clone())
                .collect();
            let mut values = self.live_many(&file_keys).await?.into_iter();
            for (full, m) in chunk {
                level.exists = true;
                if level.entries.len() >= limit {
                    level.next = Some(full.clone());
                    return Ok(level);
                }
                if m.folder {
                    level.entries.push(Listed::Folder(m.name.clone()));
                    continue;
                }
                // Deleted since the index was read, or expired: not listed.
                if let Some(Some((record, _))) = values.next() {
                    let rec = decode_record(full, &record)?;
                    if !rec.expired(now) {
                        level.entries.push(Listed::File(m.name.clone(), rec));
                    }
                }
            }
        }
        Ok(level)
    }

    async fn list_tree(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        content_budget: u64,
    ) -> Result<Page<TreeItem>, StoreError> {
        let now = unix_now();
        let keys = self.walk(prefix, after, limit).await?;
        let next = (keys.len() == limit)
            .then(|| keys.last().cloned())
            .flatten();
        let files: Vec<String> = keys.into_iter().filter(|k| !k.ends_with('/')).collect();
        let values = self.live_many(&files).await?;
        let mut left = content_budget;
        let mut reading = content_budget > 0;
        let mut items = Vec::with_capacity(files.len());
        for (key, value) in files.into_iter().zip(values) {
            let Some((record, inline)) = value else {
                continue;
            };
            let view = record::decode_for_read(&record).map_err(|reason| StoreError::Corrupt {
                table: "files",
                key: key.clone(),
                reason,
            })?;
            if view.folder || view.expires.is_some_and(|e| e <= now) {
                continue;
            }
            let inline = if reading && view.blob.is_none() && view.size <= left {
                left -= view.size;
                Some(inline.to_vec())
            } else {
                // Read in order: the first file not read along ends it.
                reading = false;
                None
            };
            items.push(TreeItem {
                key,
                record: record.to_vec(),
                inline,
            });
        }
        Ok(Page { items, next })
    }

    async fn count_tree(&self, prefix: &str) -> Result<u64, StoreError> {
        let now = unix_now();
        let mut count = 0;
        let mut after: Option<String> = None;
        loop {
            let keys = self.walk(prefix, after.as_deref(), PAGE).await?;
            let full = keys.len() == PAGE;
            let files: Vec<String> = keys.iter().filter(|k| !k.ends_with('/')).cloned().collect();
            for (key, value) in files.iter().zip(self.live_many(&files).await?) {
                if let Some((record, _)) = value {
                    let view =
                        record::decode_for_read(&record).map_err(|reason| StoreError::Corrupt {
                            table: "files",
                            key: key.clone(),
                            reason,
                        })?;
                    if !view.folder && view.expires.is_none_or(|e| e > now) {
                        count += 1;
                    }
                }
            }
            after = keys.last().cloned();
            if !full {
                return Ok(count);
            }
        }
    }

    async fn occupancy(&self, prefix: &str) -> Result<Occupancy, StoreError> {
        // Two keys tell: a member, or the marker alone.
        Ok(
            match self.scan_dir(prefix.trim_end_matches('/'), 2).await? {
                Some(d) if !d.members.is_empty() => Occupancy::Occupied,
                Some(d) if d.marker => Occupancy::MarkerOnly,
                _ => Occupancy::Empty,
            },
        )
    }

    async fn blob_references(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, StoreError> {
        // O(files) per page: the orphan sweep's listing (STORAGE.md 4.3).
        let limit = limit.max(1);
        let mut found: Vec<(String, Option<String>)> = Vec::new();
        let mut bad = None;
        crate::records::scan_last(
            &self.files,
            &self.store.js.client(),
            "",
            false,
            |nkey, op, payload| {
                if op != Operation::Put {
                    return;
                }
                let Ok(key) = file_logical_key(nkey) else {
                    return;
                };
                if after.is_some_and(|a| key.as_str() <= a) {
                    return;
                }
                match Value::decode(payload.clone()) {
                    Ok(Value {
                        live: Some((record, _)),
                        ..
                    }) => {
                        let blob = record::decode_for_read(&record)
                            .ok()
                            .and_then(|v| v.blob.map(std::borrow::Cow::into_owned));
                        found.push((key, blob));
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        bad.get_or_insert(StoreError::Corrupt {
                            table: "files",
                            key,
                            reason,
                        });
                    }
                }
            },
        )
        .await?;
        if let Some(e) = bad {
            return Err(e);
        }
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = found.len() > limit;
        found.truncate(limit);
        let next = if more {
            found.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Ok(Page {
            items: found.into_iter().filter_map(|(_, b)| b).collect(),
            next,
        })
    }

    async fn write(
        &self,
        batch: &[wasmgrid_store::files::FileWrite],
    ) -> Result<Vec<Written>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // A marker `key/` makes the path a folder (a check, then the write:
        // a racing create_folder may leave both, listed as a folder and a
        // file of one name).
        let markers: Vec<String> = batch.iter().map(|w| format!("{}/", w.key)).collect();
        let is_folder = self.live_many(&markers).await?;
        let mut created: Vec<&str> = Vec::new();
        let mut entries = Vec::new();
        let mut positions = Vec::new();
        for (i, (w, folder)) in batch.iter().zip(&is_folder).enumerate() {
            if folder.is_some() {
                continue;
            }
            let collection = w.collection_key();
            if !w.new_collection.is_empty() && !created.contains(&collection) {
                // Writing into a missing collection creates it.
                match self
                    .store
                    .create(Bucket::Collections, collection, w.new_collection.clone())
                    .await
                {
                    Ok(_) | Err(StoreError::Exists { .. }) => created.push(collection),
                    Err(e) => return Err(e),
                }
            }
            entries.push(Entry {
                op: Op::Put,
                expect_prev: 0,
                key: w.key.clone(),
                record: Bytes::from(w.record.clone()),
                inline: if w.blob.is_some() {
                    Bytes::new()
                } else {
                    w.inline.clone()
                },
                event: w.event.clone().map(Bytes::from),
            });
            positions.push(i);
        }
        let seqs = self.commit(&entries).await?;
        // Past the commit point nothing fails the call: what is not applied
        // here, the router applies (and then deletes replaced blobs itself).
        let distinct = {
            let mut keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
            keys.sort_unstable();
            keys.windows(2).all(|w| w[0] != w[1])
        };
        let in_flight = if distinct { IN_FLIGHT } else { 1 };
        let applies: Vec<_> = entries
            .iter()
            .zip(&seqs)
            .map(|(e, s)| self.apply(*s, e))
            .collect();
        let applied = in_order(applies, in_flight).await;
        let mut results: Vec<Written> = is_folder
            .iter()
            .map(|f| {
                if f.is_some() {
                    Written::IsFolder
                } else {
                    Written::Done {
                        replaced_blob: None,
                    }
                }
            })
            .collect();
        let mut appeared = Vec::new();
        let mut overwritten = Vec::new();
        for ((entry, i), applied) in entries.iter().zip(&positions).zip(applied) {
            match applied {
                Ok(a) if a.performed => {
                    let replaced_blob = a.previous.as_ref().and_then(|p| {
                        record::decode_for_read(p)
                            .ok()
                            .and_then(|v| v.blob.map(std::borrow::Cow::into_owned))
                            .filter(|old| Some(old) != batch[*i].blob.as_ref())
                    });
                    results[*i] = Written::Done { replaced_blob };
                    if a.previous.is_none() {
                        appeared.push(entry.key.as_str());
                    } else {
                        overwritten.push(entry.key.as_str());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, key = %entry.key, "applying a file write failed; the router applies it");
                }
            }
        }
        // A file that existed may still be unlisted: its first writer died
        // between applying and linking, and the router has not repaired it
        // yet. This write returns, so it must be listed now (one get each).
        let checks: Vec<_> = overwritten
            .iter()
            .map(|key| async move {
                match parent(key) {
                    Some((folder, me)) => self.has_member(folder, &me).await.map(|listed| !listed),
                    None => Ok(false),
                }
            })
            .collect();
        for (key, unlisted) in overwritten.iter().zip(in_order(checks, IN_FLIGHT).await) {
            match unlisted {
                Ok(true) => appeared.push(key),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, %key, "checking a folder index failed; the router repairs it");
                }
            }
        }
        for (folder, members) in by_folder(appeared.into_iter()) {
            if let Err(e) = self.link(&folder, &members).await {
                tracing::warn!(error = %e, "updating a folder index failed; the router repairs it");
            }
        }
        Ok(results)
    }

    async fn delete(
        &self,
        key: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Option<FileRecord>, StoreError> {
        let Some((record, _)) = self.live(key).await? else {
            return Ok(None);
        };
        let rec = decode_record(key, &record)?;
        self.delete_keys(&[key.to_string()], Some(events), None)
            .await?;
        Ok(Some(rec))
    }

    async fn delete_tree(
        &self,
        prefix: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Removed, StoreError> {
        self.delete_walk(prefix, Some(events), None).await
    }

    async fn delete_expired(&self, prefix: &str, now: u64) -> Result<Removed, StoreError> {
        self.delete_walk(prefix, None, Some(now)).await
    }

    async fn increment(
        &self,
        key: &str,
        delta: u64,
        new_collection: Bytes,
        write: CounterWrite<'_>,
    ) -> Result<Result<u64, NotCounted>, StoreError> {
        let nkey = file_nats_key(key)?;
        let subject = self.subject(key)?;
        if !new_collection.is_empty() {
            let collection = {
                let mut parts = key.splitn(3, '/');
                match (parts.next(), parts.next()) {
                    (Some(o), Some(c)) => format!("{o}/{c}"),
                    _ => key.to_string(),
                }
            };
            match self
                .store
                .create(Bucket::Collections, &collection, new_collection)
                .await
            {
                Ok(_) | Err(StoreError::Exists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for attempt in 0..INCREMENT_TRIES {
            if attempt > 0 {
                // Lost to a concurrent write of the path: back off a random
                // while, growing up to about a second, so that contenders stop
                // voiding each other even when a try takes tens of
                // milliseconds (a loaded machine: 64 ms was too little in CI).
                let cap = 1u64 << attempt.min(10);
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % cap + 1)).await;
            }
            // The value must reflect every entry of the path up to its
            // newest (a writer may be between its commit and its apply):
            // apply what is missing, then count from there.
            let newest = self.last_of(&subject).await?;
            let at = self.value(&nkey).await?.map_or(0, |(_, v)| v.log_seq);
            if newest > at {
                self.catch_up(key, &subject, at, newest).await?;
            }
            let current = self.value(&nkey).await?;
            if current.as_ref().is_some_and(|(_, v)| v.log_seq > newest) {
                continue; // a newer entry came meanwhile
            }
            let at = newest;
            let base = match current.and_then(|(_, v)| v.live) {
                Some((_, inline)) => match std::str::from_utf8(&inline)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    Some(v) => v,
                    None => return Ok(Err(NotCounted::NotACounter)),
                },
                None => 0,
            };
            let Some(value) = base.checked_add(delta) else {
                return Ok(Err(NotCounted::Overflow));
            };
            let (record, event) = write(value);
            let entry = Entry {
                op: Op::PutIfNext,
                expect_prev: at,
                key: key.to_string(),
                record: Bytes::from(record),
                inline: Bytes::from(value.to_string()),
                event: event.map(Bytes::from),
            };
            let seq = self.commit(std::slice::from_ref(&entry)).await?[0];
            let applied = self.apply(seq, &entry).await?;
            if applied.valid {
                if applied.performed && applied.previous.is_none() {
                    self.settle(key, true).await?;
                }
                return Ok(Ok(value));
            }
        }
        Err(StoreError::Unavailable(format!(
            "{key} changed {INCREMENT_TRIES} times while it was being incremented; try again"
        )))
    }

    async fn create_folder(&self, key: &str, record: Vec<u8>) -> Result<(), StoreError> {
        let file = key.trim_end_matches('/');
        let exists = self
            .live_many(&[key.to_string(), file.to_string()])
            .await?
            .iter()
            .any(Option::is_some);
        if exists {
            return Err(StoreError::Exists {
                bucket: "files",
                key: key.to_string(),
            });
        }
        let entry = Entry {
            op: Op::Put,
            expect_prev: 0,
            key: key.to_string(),
            record: Bytes::from(record),
            inline: Bytes::new(),
            event: None,
        };
        let seq = self.commit(std::slice::from_ref(&entry)).await?[0];
        let applied = self.apply(seq, &entry).await?;
        self.settle(key, applied.live).await
    }
}

impl NatsFiles {
    /// Applies `key`'s log entries in `(after, upto]` in order.
    async fn catch_up(
        &self,
        key: &str,
        subject: &str,
        after: u64,
        upto: u64,
    ) -> Result<(), StoreError> {
        let mut at = after;
        while at < upto {
            let Some(seq) = self.first_after(subject, at).await? else {
                return Ok(());
            };
            let message = self
                .log
                .get_raw_message(seq)
                .await
                .map_err(|e| store_err("reading a path's log entry", e))?;
            match Entry::decode(message.payload) {
                Ok(entry) => {
                    let applied = self.apply(seq, &entry).await?;
                    if applied.performed {
                        self.settle(key, applied.live).await?;
                    }
                }
                Err(reason) => {
                    tracing::error!(seq, %reason, "skipping an unreadable file change in the log")
                }
            }
            at = seq;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_nats_and_back() {
        assert_eq!(file_nats_key("o/c/a.b").unwrap(), "o.c.a=b");
        assert_eq!(file_nats_key("o/c/a/").unwrap(), "o.c.a._m");
        assert_eq!(file_logical_key("o.c.a._m").unwrap(), "o/c/a/");
        assert_eq!(file_nats_key("o/c/_m_").unwrap(), "o.c._5Fm_5F");
        assert_eq!(file_logical_key("o.c._5Fm_5F").unwrap(), "o/c/_m_");
        assert_eq!(file_nats_key("o/c/_m").unwrap(), "o.c._5Fm");
    }

    #[test]
    fn parents_of_files_and_markers() {
        let (dir, m) = parent("o/c/a/b").unwrap();
        assert_eq!((dir, m.name.as_str(), m.folder), ("o/c/a", "b", false));
        let (dir, m) = parent("o/c/a/").unwrap();
        assert_eq!((dir, m.name.as_str(), m.folder), ("o/c", "a", true));
        let (dir, m) = folder_parent("o/c/a").unwrap();
        assert_eq!((dir, m.name.as_str(), m.folder), ("o/c", "a", true));
        assert!(folder_parent("o/c").is_none());
        assert!(parent("o/c").is_none());
        assert!(parent("o/c/").is_none());
        let (dir, _) = parent("o/c/x").unwrap();
        assert_eq!(dir, "o/c");
    }
}
