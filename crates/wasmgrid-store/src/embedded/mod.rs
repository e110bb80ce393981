//! The embedded backend: metadata in a redb database, blobs as files.

use super::{BlobWriter, Cursor, SCHEMA_VERSION, Store, StoreError, Table, Txn};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

mod blobs;
mod changelog;
mod files;
mod jobqueue;
mod leases;
mod queues;
mod records;

pub use queues::EmbeddedQueues;

/// Metadata in `<data dir>/store.redb` (one ACID database, crash-safe, fsync on
/// every commit) and blobs in `<data dir>/blobs/`, one file per content digest,
/// written to a temporary file and renamed into place so a crash never leaves a
/// partial blob under a digest's name.
///
/// Clones share the one database (the contracts' async methods move a clone
/// onto a blocking thread).
#[derive(Clone)]
pub struct EmbeddedStore {
    db: std::sync::Arc<Database>,
    blob_dir: PathBuf,
    flush: std::sync::Arc<GroupCommit>,
    /// Data blobs finished but not yet recorded (see [`Store::blob_recorded`]):
    /// the orphan sweep leaves them alone.
    pending: PendingBlobs,
    /// The records contract's change broadcast (see `records`).
    records: std::sync::Arc<records::RecordsState>,
}

/// Ids of finished data blobs whose file record is not committed yet.
type PendingBlobs = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// Group commit: each transaction commits without an fsync (redb's
/// `Durability::None`), then waits until a durable (`Immediate`) commit has
/// covered it. One writer at a time performs that flush; transactions that
/// committed meanwhile ride on the next one, so N concurrent writers share one
/// fsync instead of paying N. `transact` still returns only once its writes are
/// on disk.
#[derive(Default)]
struct GroupCommit {
    state: std::sync::Mutex<FlushState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct FlushState {
    /// Transactions committed (non-durably) so far.
    committed: u64,
    /// Transactions known durable.
    durable: u64,
    /// Whether some thread is flushing now.
    flushing: bool,
}

/// Where a prefix scan starts, and the key to skip there (`Cursor::After`); a
/// cursor before the prefix starts at the prefix.
fn scan_start<'k>(prefix: &'k str, from: Option<Cursor<'k>>) -> (&'k str, Option<&'k str>) {
    match from {
        Some(Cursor::After(k)) if k >= prefix => (k, Some(k)),
        Some(Cursor::From(k)) if k >= prefix => (k, None),
        _ => (prefix, None),
    }
}

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir`, creating every table
    /// and checking or writing the schema version.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let blob_dir = data_dir.join("blobs");
        fs::create_dir_all(&blob_dir).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", blob_dir.display()))
        })?;
        let path = data_dir.join("store.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.display().to_string(),
            },
            other => StoreError::Backend(format!("cannot open {}: {other}", path.display())),
        })?;
        // The database lock is held: no other process writes into this data
        // directory, and nothing in this one has started a blob yet, so any
        // temporary file left in the blob folder is from a crash.
        remove_temp_files(&blob_dir);
        let store = Self {
            db: std::sync::Arc::new(db),
            blob_dir,
            flush: Default::default(),
            pending: Default::default(),
            records: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Creates missing tables and brings the schema to [`SCHEMA_VERSION`].
    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let found = {
            for table in Table::ALL {
                txn.open_table(definition(*table)).map_err(backend)?;
            }
            txn.open_table(definition(records::REVISIONS))
                .map_err(backend)?;
            let mut meta = txn.open_table(definition(Table::META)).map_err(backend)?;
            let found = match meta.get("schema_version").map_err(backend)? {
                Some(v) => {
                    serde_json::from_slice::<u64>(v.value()).map_err(|e| StoreError::Corrupt {
                        table: "meta",
                        key: "schema_version".into(),
                        reason: e.to_string(),
                    })?
                }
                None => 0,
            };
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            // Migrations from `found` to SCHEMA_VERSION go here, one step per version.
            // Version 0 is a freshly created store: the tables above are all it needs.
            // 1 -> 2: nothing to rewrite; file records written from now on are
            // binary, and the data layer still reads version-1 JSON ones.
            let version = serde_json::to_vec(&SCHEMA_VERSION).map_err(backend)?;
            meta.insert("schema_version", version.as_slice())
                .map_err(backend)?;
            found
        };
        txn.commit().map_err(backend)?;
        if found != SCHEMA_VERSION {
            tracing::info!(
                from = found,
                to = SCHEMA_VERSION,
                "store schema initialised/migrated"
            );
        }
        Ok(())
    }

    fn data_blob_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        let ok = id
            .strip_prefix("data-")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if ok {
            Ok(self.blob_dir.join(id))
        } else {
            Err(StoreError::Backend(format!("invalid blob id {id:?}")))
        }
    }

    /// Runs `f` in a transaction committed without an fsync; returns its
    /// group-commit ticket.
    fn commit_non_durable(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(redb::Durability::None)
            .map_err(backend)?;
        // Dropping `txn` without commit (on error) aborts it. The tables the
        // closure opened are closed (dropped with `RedbTxn`) before the commit.
        {
            let mut t = RedbTxn::new(&txn);
            f(&mut t)?;
            t.finish()?;
        }
        // The ticket is taken while this thread still holds redb's single write
        // lock, so tickets follow commit order.
        let ticket = {
            let mut st = self
                .flush
                .state
                .lock()
                .map_err(|_| backend("flush state poisoned"))?;
            st.committed += 1;
            st.committed
        };
        txn.commit().map_err(backend)?;
        Ok(ticket)
    }

    /// Blocks until transaction `ticket` is on disk, flushing if nobody else is.
    fn wait_durable(&self, ticket: u64) -> Result<(), StoreError> {
        let mut st = self
            .flush
            .state
            .lock()
            .map_err(|_| backend("flush state poisoned"))?;
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if !st.flushing {
                st.flushing = true;
                drop(st);
                // An empty durable commit persists every earlier non-durable
                // one. Its target is read inside the write lock, so it covers
                // exactly the transactions committed before it.
                let result = (|| {
                    let txn = self.db.begin_write().map_err(backend)?;
                    let target = self
                        .flush
                        .state
                        .lock()
                        .map_err(|_| backend("flush state poisoned"))?
                        .committed;
                    {
                        // redb skips persisting a commit that changed nothing.
                        let mut meta = txn.open_table(definition(Table::META)).map_err(backend)?;
                        meta.insert("flushed", target.to_le_bytes().as_slice())
                            .map_err(backend)?;
                    }
                    txn.commit().map_err(backend)?;
                    Ok::<u64, StoreError>(target)
                })();
                st = self
                    .flush
                    .state
                    .lock()
                    .map_err(|_| backend("flush state poisoned"))?;
                st.flushing = false;
                self.flush.done.notify_all();
                match result {
                    Ok(target) => st.durable = st.durable.max(target),
                    Err(e) => return Err(e),
                }
                continue;
            }
            st = self
                .flush
                .done
                .wait(st)
                .map_err(|_| backend("flush state poisoned"))?;
        }
    }
}

/// A redb write transaction seen through [`Txn`]. Tables are opened once per
/// transaction and kept (opening one costs a table-tree lookup and its drop a
/// write-back, which dominated batches of small writes), and sequence counters
/// are cached after their first read.
struct RedbTxn<'a> {
    txn: &'a redb::WriteTransaction,
    open: std::cell::RefCell<Vec<(Table, RedbTable<'a>)>>,
    counters: Vec<(Table, u64)>,
}

type RedbTable<'a> = redb::Table<'a, &'static str, &'static [u8]>;

impl<'a> RedbTxn<'a> {
    fn new(txn: &'a redb::WriteTransaction) -> Self {
        Self {
            txn,
            open: std::cell::RefCell::new(Vec::new()),
            counters: Vec::new(),
        }
    }

    /// Runs `f` on the open table, opening it on first use.
    fn with_table<R>(
        &self,
        table: Table,
        f: impl FnOnce(&mut RedbTable<'a>) -> Result<R, redb::StorageError>,
    ) -> Result<R, StoreError> {
        let mut open = self.open.borrow_mut();
        let i = match open.iter().position(|(t, _)| *t == table) {
            Some(i) => i,
            None => {
                let t = self.txn.open_table(definition(table)).map_err(backend)?;
                open.push((table, t));
                open.len() - 1
            }
        };
        f(&mut open[i].1).map_err(backend)
    }
}

/// The `meta` key of a table's sequence counter.
fn counter_key(table: Table) -> String {
    format!("seq:{}", table.name())
}

impl RedbTxn<'_> {
    /// Writes the sequence counters `append` advanced (once per transaction,
    /// not once per append).
    fn finish(self) -> Result<(), StoreError> {
        for (table, last) in &self.counters {
            let value = serde_json::to_vec(last).map_err(backend)?;
            self.with_table(Table::META, |t| {
                t.insert(counter_key(*table).as_str(), value.as_slice())
                    .map(|_| ())
            })?;
        }
        Ok(())
    }
}

impl Txn for RedbTxn<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_table(table, |t| Ok(t.get(key)?.map(|v| v.value().to_vec())))
    }

    fn range(
        &self,
        table: Table,
        first: &str,
        last: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if first > last || limit == 0 {
            return Ok(Vec::new());
        }
        self.with_table(table, |t| {
            let mut out = Vec::new();
            for entry in t.range::<&str>(first..=last)? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), v.value().to_vec()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with_table(table, |t| t.insert(key, value).map(|_| ()))
    }

    fn put_if_absent(&mut self, table: Table, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        // Insert, and put the old value back in the rare case there was one.
        self.with_table(table, |t| {
            let old = t.insert(key, value)?.map(|v| v.value().to_vec());
            match old {
                None => Ok(true),
                Some(old) => t.insert(key, old.as_slice()).map(|_| false),
            }
        })
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.with_table(table, |t| t.remove(key).map(|_| ()))
    }

    fn append_many(&mut self, table: Table, value: &[u8], count: u64) -> Result<u64, StoreError> {
        let count = count.max(1);
        let last = match self.counters.iter_mut().find(|(t, _)| *t == table) {
            Some(c) => {
                c.1 += count;
                c.1
            }
            None => {
                let before = match self.get(Table::META, &counter_key(table))? {
                    Some(v) => serde_json::from_slice::<u64>(&v).map_err(backend)?,
                    None => 0,
                };
                self.counters.push((table, before + count));
                before + count
            }
        };
        self.put(table, &format!("{last:020}"), value)?;
        Ok(last - count + 1)
    }
}

impl Store for EmbeddedStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(definition(table)).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn get_many(&self, reads: &[(Table, &str)]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let mut out = Vec::with_capacity(reads.len());
        // Each table is opened once, however many reads it serves.
        let mut open: Vec<(Table, redb::ReadOnlyTable<&'static str, &'static [u8]>)> = Vec::new();
        for (table, key) in reads {
            let i = match open.iter().position(|(t, _)| t == table) {
                Some(i) => i,
                None => {
                    open.push((*table, txn.open_table(definition(*table)).map_err(backend)?));
                    open.len() - 1
                }
            };
            out.push(
                open[i]
                    .1
                    .get(*key)
                    .map_err(backend)?
                    .map(|v| v.value().to_vec()),
            );
        }
        Ok(out)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        from: Option<Cursor<'_>>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(definition(table)).map_err(backend)?;
        let (start, skip) = scan_start(prefix, from);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for entry in t.range::<&str>(start..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if Some(key) == skip {
                continue;
            }
            out.push((key.to_string(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn count(
        &self,
        table: Table,
        prefix: &str,
        keep: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(definition(table)).map_err(backend)?;
        let mut n = 0;
        for entry in t.range::<&str>(prefix..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if keep(key, v.value()) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn scan_joined(
        &self,
        table: Table,
        prefix: &str,
        from: Option<Cursor<'_>>,
        limit: usize,
        joined: Table,
        want: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<Vec<(String, Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(definition(table)).map_err(backend)?;
        let j = txn.open_table(definition(joined)).map_err(backend)?;
        let (start, skip) = scan_start(prefix, from);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // The joined table is walked alongside, opened at the first wanted key.
        let mut side: Option<redb::Range<'_, &'static str, &'static [u8]>> = None;
        let mut side_next: Option<(
            redb::AccessGuard<'_, &'static str>,
            redb::AccessGuard<'_, &'static [u8]>,
        )> = None;
        for entry in t.range::<&str>(start..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if Some(key) == skip {
                continue;
            }
            let value = v.value();
            let mut joined_value = None;
            if want(key, value) {
                let range = match &mut side {
                    Some(r) => r,
                    None => side.insert(j.range::<&str>(key..).map_err(backend)?),
                };
                // Advance past smaller keys; the joined table rarely has any
                // the listing lacks.
                loop {
                    if side_next.is_none() {
                        side_next = match range.next() {
                            Some(e) => Some(e.map_err(backend)?),
                            None => break,
                        };
                    }
                    let Some((jk, jv)) = &side_next else { break };
                    match jk.value().cmp(key) {
                        std::cmp::Ordering::Less => side_next = None,
                        std::cmp::Ordering::Equal => {
                            joined_value = Some(jv.value().to_vec());
                            side_next = None;
                            break;
                        }
                        std::cmp::Ordering::Greater => break,
                    }
                }
            }
            out.push((key.to_string(), value.to_vec(), joined_value));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn transact(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let ticket = self.commit_non_durable(f)?;
        self.wait_durable(ticket)
    }

    fn transact_lazy(
        &self,
        f: &mut dyn FnMut(&mut dyn Txn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // redb persists a non-durable commit with the next durable one, and a
        // crash before that rolls back to the last durable commit: all or nothing.
        self.commit_non_durable(f).map(|_| ())
    }

    fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        blobs::write_component(&self.blob_dir, digest, bytes)
    }

    fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        blobs::read_component(&self.blob_dir, digest)
    }

    fn create_blob(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        let (path, file) = tempfile_in(&self.blob_dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create a blob in {}: {e}",
                self.blob_dir.display()
            ))
        })?;
        Ok(Box::new(FileBlobWriter {
            dir: self.blob_dir.clone(),
            tmp: Some(path),
            file,
            pending: self.pending.clone(),
        }))
    }

    fn open_blob(&self, id: &str) -> Result<Option<fs::File>, StoreError> {
        match fs::File::open(self.data_blob_path(id)?) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Backend(format!("opening blob {id}: {e}"))),
        }
    }

    fn delete_blob(&self, id: &str) -> Result<(), StoreError> {
        let result = match fs::remove_file(self.data_blob_path(id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Backend(format!("deleting blob {id}: {e}"))),
        };
        self.blob_recorded(id);
        result
    }

    fn blob_recorded(&self, id: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(id);
        }
    }

    fn settled_data_blobs(&self) -> Result<Vec<String>, StoreError> {
        let io = |e: std::io::Error| {
            StoreError::Backend(format!("listing {}: {e}", self.blob_dir.display()))
        };
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.blob_dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            if let Some(name) = name.to_str()
                && self.data_blob_path(name).is_ok()
            {
                ids.push(name.to_string());
            }
        }
        // Read after the listing: a blob listed above whose writer has settled
        // it by now has its record committed before this point.
        let pending = self
            .pending
            .lock()
            .map_err(|_| backend("pending blob set poisoned"))?;
        ids.retain(|id| !pending.contains(id));
        Ok(ids)
    }
}

/// Removes `.tmp-*` files (unfinished blobs) from the blob folder; failures are
/// logged, not fatal.
fn remove_temp_files(blob_dir: &Path) {
    let Ok(entries) = fs::read_dir(blob_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed an unfinished blob left by a crash")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unfinished blob")
                }
            }
        }
    }
}

/// A data blob being written to a temporary file in the blob folder.
struct FileBlobWriter {
    dir: PathBuf,
    tmp: Option<PathBuf>,
    file: fs::File,
    pending: PendingBlobs,
}

impl Write for FileBlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter for FileBlobWriter {
    fn finish(mut self: Box<Self>) -> Result<String, StoreError> {
        let io = |e: std::io::Error| StoreError::Backend(format!("finishing a blob: {e}"));
        self.file.sync_all().map_err(io)?;
        let id = format!("data-{}", hex::encode(rand::random::<[u8; 16]>()));
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| StoreError::Backend("blob finished twice".into()))?;
        // Pending before it is visible under its id, so the orphan sweep never
        // sees it unprotected before its record is committed.
        self.pending
            .lock()
            .map_err(|_| backend("pending blob set poisoned"))?
            .insert(id.clone());
        let renamed = fs::rename(&tmp, self.dir.join(&id)).and_then(|()| sync_dir(&self.dir));
        if let Err(e) = renamed {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(self.dir.join(&id));
            if let Ok(mut pending) = self.pending.lock() {
                pending.remove(&id);
            }
            return Err(io(e));
        }
        Ok(id)
    }
}

impl Drop for FileBlobWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Creates a uniquely named temporary file in `dir`.
pub fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    loop {
        let name = format!(".tmp-{:016x}", rand::random::<u64>());
        let path = dir.join(name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StoreExt, WriteBatch};

    #[test]
    fn batch_is_atomic_and_conflicts_abort() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.require_absent(Table::TAKEN_VERSIONS, "a/b/1.0.0")
            .put_json(Table::TAKEN_VERSIONS, "a/b/1.0.0", &serde_json::json!({}))
            .put_json(Table::VERSIONS, "a/b/1.0.0", &serde_json::json!({"x": 1}));
        store.commit(&b).unwrap();
        let mut again = WriteBatch::new();
        again
            .put_json(Table::VERSIONS, "a/b/2.0.0", &serde_json::json!({}))
            .require_absent(Table::TAKEN_VERSIONS, "a/b/1.0.0");
        assert!(matches!(
            store.commit(&again),
            Err(StoreError::Conflict { .. })
        ));
        assert!(
            store.get(Table::VERSIONS, "a/b/2.0.0").unwrap().is_none(),
            "aborted batch wrote nothing"
        );
        let v: serde_json::Value = store
            .get_json(Table::VERSIONS, "a/b/1.0.0")
            .unwrap()
            .unwrap();
        assert_eq!(v["x"], 1);
    }

    #[test]
    fn scan_is_prefix_bounded_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        for k in ["a/1", "a/2", "a/3", "ab/1", "b/1"] {
            b.put_json(Table::KEYS, k, &1);
        }
        store.commit(&b).unwrap();
        let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(store.scan(Table::KEYS, "a/", None, 10).unwrap()),
            ["a/1", "a/2", "a/3"]
        );
        assert_eq!(
            keys(
                store
                    .scan(Table::KEYS, "a/", Some(Cursor::After("a/1")), 1)
                    .unwrap()
            ),
            ["a/2"]
        );
        assert_eq!(
            keys(
                store
                    .scan(Table::KEYS, "a/", Some(Cursor::From("a/2")), 5)
                    .unwrap()
            ),
            ["a/2", "a/3"]
        );
        assert_eq!(store.scan_json::<u32>(Table::KEYS, "").unwrap().len(), 5);
    }

    #[test]
    fn count_stays_under_its_prefix_and_applies_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        for (k, v) in [
            ("a", "x"),
            ("a/1", "x"),
            ("a/2", "y"),
            ("a/3", "x"),
            ("ab/1", "x"),
        ] {
            b.put_raw(Table::FILES, k, v.as_bytes().to_vec());
        }
        store.commit(&b).unwrap();
        assert_eq!(
            store.count(Table::FILES, "a/", &mut |_, _| true).unwrap(),
            3
        );
        assert_eq!(
            store
                .count(Table::FILES, "a/", &mut |_, v| v == b"x")
                .unwrap(),
            2
        );
        assert_eq!(
            store.count(Table::FILES, "b/", &mut |_, _| true).unwrap(),
            0
        );
    }

    #[test]
    fn scan_joined_pairs_each_wanted_entry_with_its_row_from_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        for k in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"] {
            b.put_raw(Table::FILES, k, format!("rec {k}").into_bytes());
        }
        // Rows for some keys only, one the listing lacks ("a/0"), one outside it.
        for k in ["a/0", "a/2", "a/3", "a/5", "b/1"] {
            b.put_raw(Table::FILE_DATA, k, format!("data {k}").into_bytes());
        }
        store.commit(&b).unwrap();
        let mut asked = Vec::new();
        let got = store
            .scan_joined(
                Table::FILES,
                "a/",
                Some(Cursor::After("a/1")),
                3,
                Table::FILE_DATA,
                &mut |k, v| {
                    asked.push(k.to_string());
                    assert_eq!(v, format!("rec {k}").as_bytes());
                    k != "a/3"
                },
            )
            .unwrap();
        assert_eq!(asked, ["a/2", "a/3", "a/4"]);
        let got: Vec<(String, Option<String>)> = got
            .into_iter()
            .map(|(k, v, d)| {
                assert_eq!(v, format!("rec {k}").into_bytes());
                (k, d.map(|d| String::from_utf8(d).unwrap()))
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a/2".to_string(), Some("data a/2".to_string())),
                ("a/3".to_string(), None),
                ("a/4".to_string(), None),
            ]
        );
        let all = store
            .scan_joined(
                Table::FILES,
                "a/",
                None,
                10,
                Table::FILE_DATA,
                &mut |_, _| true,
            )
            .unwrap();
        let joined: Vec<bool> = all.iter().map(|(_, _, d)| d.is_some()).collect();
        assert_eq!(joined, [false, true, true, false, true]);
    }

    #[test]
    fn transactions_read_their_writes_and_append_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut seqs = Vec::new();
        store
            .transact(&mut |txn| {
                txn.put(Table::FILES, "a", b"1")?;
                assert_eq!(txn.get(Table::FILES, "a")?.as_deref(), Some(&b"1"[..]));
                seqs.push(txn.append(Table::OUTBOX, b"e1")?);
                seqs.push(txn.append(Table::OUTBOX, b"e2")?);
                Ok(())
            })
            .unwrap();
        assert_eq!(seqs, [1, 2]);
        // A failing transaction writes nothing and consumes no sequence number.
        let failed = store.transact(&mut |txn| {
            txn.append(Table::OUTBOX, b"lost")?;
            Err(StoreError::Backend("boom".into()))
        });
        assert!(failed.is_err());
        let mut next = 0;
        store
            .transact(&mut |txn| {
                next = txn.append(Table::OUTBOX, b"e3")?;
                Ok(())
            })
            .unwrap();
        assert_eq!(next, 3);
        let all = store.scan(Table::OUTBOX, "", None, 10).unwrap();
        assert_eq!(
            all.iter().map(|(_, v)| v.as_slice()).collect::<Vec<_>>(),
            [b"e1", b"e2", b"e3"]
        );
    }

    #[test]
    fn concurrent_writers_share_flushes_and_everything_acknowledged_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            store
                                .transact(&mut |txn| {
                                    txn.put(Table::FILES, &format!("t{t}/{i:03}"), b"x")?;
                                    txn.append(Table::OUTBOX, b"e").map(|_| ())
                                })
                                .unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let st = store.flush.state.lock().unwrap();
            assert_eq!(st.committed, 400);
            assert!(st.durable >= 400);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.scan(Table::FILES, "", None, 1000).unwrap().len(), 400);
        let outbox = store.scan(Table::OUTBOX, "", None, 1000).unwrap();
        assert_eq!(outbox.len(), 400);
        assert_eq!(outbox.last().unwrap().0, format!("{:020}", 400));
    }

    #[test]
    fn data_blobs_stream_in_and_out() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut w = store.create_blob().unwrap();
        w.write_all(b"part one, ").unwrap();
        w.write_all(b"part two").unwrap();
        let id = w.finish().unwrap();
        let mut text = String::new();
        store
            .open_blob(&id)
            .unwrap()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "part one, part two");
        store.delete_blob(&id).unwrap();
        assert!(store.open_blob(&id).unwrap().is_none());
        assert!(store.open_blob("../store.redb").is_err());
        // An unfinished writer leaves nothing behind.
        drop(store.create_blob().unwrap());
        let leftovers = fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn reopen_keeps_data_and_rejects_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .put_blob(&format!("sha256:{}", "ab".repeat(32)), b"bytes")
                .unwrap();
            let mut b = WriteBatch::new();
            b.put_json(Table::META, "schema_version", &(SCHEMA_VERSION + 1));
            store.commit(&b).unwrap();
        }
        match EmbeddedStore::open(dir.path()) {
            Err(StoreError::NewerSchema { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("opened a store with a newer schema"),
        }
    }

    #[test]
    fn blob_digests_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(store.put_blob("../../etc/passwd", b"x").is_err());
        let d = format!("sha256:{}", "0f".repeat(32));
        store.put_blob(&d, b"hello").unwrap();
        assert_eq!(store.get_blob(&d).unwrap().unwrap(), b"hello");
    }
}
