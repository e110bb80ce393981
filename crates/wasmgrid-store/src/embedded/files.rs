//! [`DataFiles`] for the embedded backend: tables FILES (binary records) and
//! FILE_DATA (small contents), read inline from one redb snapshot per call.

use super::EmbeddedStore;
use super::records::create_if_missing;
use crate::files::{
    CounterWrite, DataFiles, DeleteEvents, FileRecord, FileWrite, Level, Listed, NotCounted,
    OUTBOX_EVENTS_PER_RECORD, Occupancy, Removed, StoredFile, TreeItem, Written, record, unix_now,
};
use crate::records::Bucket;
use crate::{Cursor, Page, Store, StoreError, Table, Txn};

/// Keys read per step of a level listing: a level skips each sub-folder's
/// subtree with a new range scan, so pages are kept short.
const LEVEL_SCAN: usize = 256;

fn corrupt(key: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        table: Table::FILES.name(),
        key: key.to_string(),
        reason,
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<FileRecord, StoreError> {
    record::decode(bytes)
        .map(record::FileView::into_owned)
        .map_err(|e| corrupt(key, e))
}

/// Whether an encoded record is a file a listing shows (not a folder marker,
/// not expired at `now`).
fn listed(key: &str, bytes: &[u8], now: u64) -> Result<bool, StoreError> {
    let view = record::decode_for_read(bytes).map_err(|e| corrupt(key, e))?;
    Ok(!(view.folder || view.expires.is_some_and(|e| e <= now)))
}

/// What the file writes applied so far in one transaction have checked and
/// the change events they have not yet written, so that a batch of writes into
/// one collection (a job's outputs) checks the collection once and writes its
/// events as a few outbox records: pass the same one to every
/// [`apply_file_write`] of a transaction, then call [`finish`](Self::finish)
/// in that transaction; a new one for the next.
///
/// Internal to the embedded backend: [`DataFiles::write`] and the
/// [`JobQueue`](crate::jobqueue::JobQueue) steps (outputs with their progress
/// in one transaction) use it.
pub(crate) struct ApplyScope {
    /// Collection keys known to exist in this transaction.
    collections: Vec<String>,
    /// Reused for the folder-marker key.
    scratch: String,
    /// Pending change events: `[` and the events joined by commas.
    events: Vec<u8>,
    /// How many events `events` holds.
    event_count: u64,
}

impl Default for ApplyScope {
    fn default() -> Self {
        ApplyScope {
            collections: Vec::new(),
            scratch: String::new(),
            events: vec![b'['],
            event_count: 0,
        }
    }
}

impl ApplyScope {
    /// Queues a change event of this transaction that no [`apply_file_write`]
    /// carries (a delete's), writing the pending ones once there are
    /// [`OUTBOX_EVENTS_PER_RECORD`].
    pub(crate) fn push_event(&mut self, txn: &mut dyn Txn, event: &[u8]) -> Result<(), StoreError> {
        if self.event_count > 0 {
            self.events.push(b',');
        }
        self.events.extend_from_slice(event);
        self.event_count += 1;
        if self.event_count >= OUTBOX_EVENTS_PER_RECORD {
            self.finish(txn)?;
        }
        Ok(())
    }

    /// Writes the pending change events to the outbox: one event as it is, more
    /// as one record holding a JSON array of them (numbered with
    /// [`Txn::append_many`], one number per event). Call it before the
    /// transaction commits, or the events are lost.
    pub(crate) fn finish(&mut self, txn: &mut dyn Txn) -> Result<(), StoreError> {
        match self.event_count {
            0 => return Ok(()),
            1 => {
                txn.append(Table::OUTBOX, &self.events[1..])?;
            }
            n => {
                self.events.push(b']');
                txn.append_many(Table::OUTBOX, &self.events, n)?;
            }
        }
        self.events.truncate(1);
        self.event_count = 0;
        Ok(())
    }
}

/// Applies one file write inside `txn`: creates the collection if it is
/// missing, stores the record and content, and queues the change event in
/// `scope` (written at the latest by [`ApplyScope::finish`], which the caller
/// must call before committing). [`Written::IsFolder`]: nothing was written for
/// this file, and the transaction may go on.
pub(crate) fn apply_file_write(
    txn: &mut dyn Txn,
    w: &FileWrite,
    scope: &mut ApplyScope,
) -> Result<Written, StoreError> {
    let key = w.key.as_str();
    let collection_key = w.collection_key();
    if !scope.collections.iter().any(|c| c == collection_key) {
        // Writing into a collection that does not exist creates it.
        create_if_missing(txn, Bucket::Collections, collection_key, &w.new_collection)?;
        scope.collections.push(collection_key.to_string());
    }
    // The file's own record and its folder marker (`key/`) are near
    // neighbours: one walk finds both unless many keys sort between them.
    const PROBE: usize = 4;
    scope.scratch.clear();
    scope.scratch.push_str(key);
    scope.scratch.push('/');
    let marker = scope.scratch.as_str();
    let mut near = txn.range(Table::FILES, key, marker, PROBE)?;
    let (is_folder, previous) = if near.len() < PROBE {
        let is_folder = near.last().is_some_and(|(k, _)| k == marker);
        let previous = match near.first_mut() {
            Some((k, v)) if k == key => Some(std::mem::take(v)),
            _ => None,
        };
        (is_folder, previous)
    } else {
        (
            txn.get(Table::FILES, marker)?.is_some(),
            txn.get(Table::FILES, key)?,
        )
    };
    if is_folder {
        return Ok(Written::IsFolder);
    }
    let replaced_blob = match previous {
        Some(b) => record::decode(&b)
            .ok()
            .and_then(|r| r.blob.map(std::borrow::Cow::into_owned))
            .filter(|old| Some(old) != w.blob.as_ref()),
        None => None,
    };
    txn.put(Table::FILES, key, &w.record)?;
    if w.blob.is_none() {
        txn.put(Table::FILE_DATA, key, &w.inline)?;
    } else {
        txn.delete(Table::FILE_DATA, key)?;
    }
    if let Some(event) = &w.event {
        scope.push_event(txn, event)?;
    }
    Ok(Written::Done { replaced_blob })
}

/// The collection part (`owner/collection`) of a file key.
fn collection_of(key: &str) -> &str {
    let mut slashes = key.match_indices('/').map(|(i, _)| i);
    match (slashes.next(), slashes.next()) {
        (Some(_), Some(end)) => &key[..end],
        _ => key,
    }
}

/// Keys a step of [`DataFiles::delete_tree`] removes in one transaction.
const DELETE_PAGE: usize = 500;

impl EmbeddedStore {
    fn files_delete(
        &self,
        key: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Option<FileRecord>, StoreError> {
        let mut removed: Option<FileRecord> = None;
        self.transact(&mut |txn| {
            removed = None;
            if let Some(b) = txn.get(Table::FILES, key)? {
                let rec = record::decode(&b)
                    .map_err(StoreError::Backend)?
                    .into_owned();
                txn.delete(Table::FILES, key)?;
                txn.delete(Table::FILE_DATA, key)?;
                if let Some(event) = events(key, &rec) {
                    txn.append(Table::OUTBOX, &event)?;
                }
                removed = Some(rec);
            }
            Ok(())
        })?;
        Ok(removed)
    }

    fn files_delete_tree(
        &self,
        prefix: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        loop {
            let page = self.scan(Table::FILES, prefix, None, DELETE_PAGE)?;
            if page.is_empty() {
                return Ok(removed);
            }
            let mut blobs = Vec::new();
            self.transact(&mut |txn| {
                blobs.clear();
                let mut scope = ApplyScope::default();
                for (key, bytes) in &page {
                    let rec = record::decode(bytes)
                        .map_err(StoreError::Backend)?
                        .into_owned();
                    txn.delete(Table::FILES, key)?;
                    txn.delete(Table::FILE_DATA, key)?;
                    if let Some(event) = events(key, &rec) {
                        scope.push_event(txn, &event)?;
                    }
                    if let Some(b) = rec.blob {
                        blobs.push(b);
                    }
                }
                scope.finish(txn)
            })?;
            removed.files += page.iter().filter(|(k, _)| !k.ends_with('/')).count() as u64;
            removed.blobs.append(&mut blobs);
        }
    }

    fn files_increment(
        &self,
        key: &str,
        delta: u64,
        new_collection: &[u8],
        write: CounterWrite<'_>,
    ) -> Result<Result<u64, NotCounted>, StoreError> {
        let mut value = 0u64;
        let mut refused = None;
        let outcome = self.transact(&mut |txn| {
            refused = None;
            let current = match (txn.get(Table::FILES, key)?, txn.get(Table::FILE_DATA, key)?) {
                (Some(_), Some(data)) => match std::str::from_utf8(&data)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    Some(v) => v,
                    None => {
                        refused = Some(NotCounted::NotACounter);
                        return Err(StoreError::Backend("not a counter".into()));
                    }
                },
                _ => 0,
            };
            value = match current.checked_add(delta) {
                Some(v) => v,
                None => {
                    refused = Some(NotCounted::Overflow);
                    return Err(StoreError::Backend("overflow".into()));
                }
            };
            let collection_key = collection_of(key);
            create_if_missing(txn, Bucket::Collections, collection_key, new_collection)?;
            let (record, event) = write(value);
            txn.put(Table::FILES, key, &record)?;
            txn.put(Table::FILE_DATA, key, value.to_string().as_bytes())?;
            if let Some(event) = event {
                txn.append(Table::OUTBOX, &event)?;
            }
            Ok(())
        });
        match (outcome, refused) {
            (_, Some(why)) => Ok(Err(why)),
            (Err(e), None) => Err(e),
            (Ok(()), None) => Ok(Ok(value)),
        }
    }

    fn files_create_folder(&self, key: &str, record: &[u8]) -> Result<(), StoreError> {
        self.transact(&mut |txn| {
            let file = key.strip_suffix('/').unwrap_or(key);
            if txn.get(Table::FILES, key)?.is_some() || txn.get(Table::FILES, file)?.is_some() {
                return Err(StoreError::Exists {
                    bucket: Table::FILES.name(),
                    key: key.to_string(),
                });
            }
            txn.put(Table::FILES, key, record)
        })
    }

    fn files_delete_expired(&self, prefix: &str, now: u64) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        for (key, bytes) in self.scan(Table::FILES, prefix, None, usize::MAX)? {
            let rec = decode(&key, &bytes)?;
            if rec.expired(now) {
                self.transact(&mut |txn| {
                    txn.delete(Table::FILES, &key)?;
                    txn.delete(Table::FILE_DATA, &key)
                })?;
                removed.files += 1;
                removed.blobs.extend(rec.blob);
            }
        }
        Ok(removed)
    }

    fn files_write(&self, batch: &[FileWrite]) -> Result<Vec<Written>, StoreError> {
        let mut results = Vec::with_capacity(batch.len());
        let outcome = self.transact(&mut |txn| {
            results.clear();
            let mut scope = ApplyScope::default();
            for w in batch {
                results.push(apply_file_write(txn, w, &mut scope)?);
            }
            if results.iter().all(|r| *r == Written::IsFolder) {
                // Nothing to keep (a collection created on the way included):
                // end without committing.
                return Err(StoreError::Backend("nothing written".into()));
            }
            scope.finish(txn)
        });
        match outcome {
            Err(_) if !results.is_empty() && results.iter().all(|r| *r == Written::IsFolder) => {
                Ok(results)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(results),
        }
    }

    /// One file's record and inline content from one snapshot, without the
    /// key list [`files_read_many`](Self::files_read_many) builds.
    fn files_read_one(&self, key: &str) -> Result<Option<StoredFile>, StoreError> {
        let mut got = self
            .get_many(&[(Table::FILES, key), (Table::FILE_DATA, key)])?
            .into_iter();
        Ok(match (got.next().flatten(), got.next().flatten()) {
            (Some(record), inline) => Some(StoredFile { record, inline }),
            (None, _) => None,
        })
    }

    fn files_read_many(&self, keys: &[&str]) -> Result<Vec<Option<StoredFile>>, StoreError> {
        let reads: Vec<(Table, &str)> = keys
            .iter()
            .flat_map(|k| [(Table::FILES, *k), (Table::FILE_DATA, *k)])
            .collect();
        let mut got = self.get_many(&reads)?.into_iter();
        Ok(keys
            .iter()
            .map(|_| match (got.next().flatten(), got.next().flatten()) {
                (Some(record), inline) => Some(StoredFile { record, inline }),
                (None, _) => None,
            })
            .collect())
    }

    fn files_list_level(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
    ) -> Result<Level, StoreError> {
        let now = unix_now();
        let mut start = start.to_string();
        let mut level = Level {
            entries: Vec::new(),
            next: None,
            exists: false,
        };
        'pages: loop {
            let page = self.scan(Table::FILES, prefix, Some(Cursor::From(&start)), LEVEL_SCAN)?;
            let Some(last_key) = page.last().map(|(k, _)| k.clone()) else {
                break;
            };
            for (key, bytes) in page {
                level.exists = true;
                let rest = &key[prefix.len()..];
                if rest.is_empty() {
                    continue; // the folder's own marker
                }
                if level.entries.len() >= limit {
                    level.next = Some(key);
                    break 'pages;
                }
                if let Some(i) = rest.find('/') {
                    let name = &rest[..i];
                    level.entries.push(Listed::Folder(name.to_string()));
                    // Skip the folder's subtree: every key in it starts with
                    // `name/`, and `0` is the byte after `/`.
                    start = format!("{prefix}{name}0");
                    continue 'pages;
                }
                let rec = decode(&key, &bytes)?;
                if rec.expired(now) {
                    continue;
                }
                level.entries.push(Listed::File(rest.to_string(), rec));
            }
            start = format!("{last_key}\u{0}");
        }
        Ok(level)
    }

    fn files_list_tree(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        budget: u64,
    ) -> Result<Page<TreeItem>, StoreError> {
        let now = unix_now();
        let from = after.map(Cursor::After);
        let page: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = if budget == 0 {
            self.scan(Table::FILES, prefix, from, limit)?
                .into_iter()
                .map(|(k, v)| (k, v, None))
                .collect()
        } else {
            let mut left = budget;
            let mut reading = true;
            self.scan_joined(
                Table::FILES,
                prefix,
                from,
                limit,
                Table::FILE_DATA,
                &mut |_, bytes| {
                    if !reading {
                        return false;
                    }
                    let Ok(view) = record::decode_for_read(bytes) else {
                        return false;
                    };
                    if view.folder || view.expires.is_some_and(|e| e <= now) {
                        return false;
                    }
                    if view.blob.is_none() && view.size <= left {
                        left -= view.size;
                        true
                    } else {
                        // Read in order: the first file that is not read along
                        // ends the read-ahead.
                        reading = false;
                        false
                    }
                },
            )?
        };
        let next = match page.last() {
            Some((k, _, _)) if page.len() == limit => Some(k.clone()),
            _ => None,
        };
        let mut items = Vec::with_capacity(page.len());
        for (key, record, inline) in page {
            if listed(&key, &record, now)? {
                items.push(TreeItem {
                    key,
                    record,
                    inline,
                });
            }
        }
        Ok(Page { items, next })
    }

    fn files_count_tree(&self, prefix: &str) -> Result<u64, StoreError> {
        let now = unix_now();
        let mut bad: Option<StoreError> = None;
        let n = self.count(
            Table::FILES,
            prefix,
            &mut |key, bytes| match listed(key, bytes, now) {
                Ok(keep) => keep,
                Err(e) => {
                    bad.get_or_insert(e);
                    false
                }
            },
        )?;
        match bad {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}

// Every method is a short read of one snapshot: run inline (no thread hop), as
// the callers did before the contract.
#[async_trait::async_trait]
impl DataFiles for EmbeddedStore {
    async fn stat(&self, key: &str) -> Result<Option<FileRecord>, StoreError> {
        match self.get(Table::FILES, key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<StoredFile>, StoreError> {
        self.files_read_one(key)
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<StoredFile>>, StoreError> {
        self.files_read_many(keys)
    }

    fn read_now(&self, key: &str) -> Option<Result<Option<StoredFile>, StoreError>> {
        Some(self.files_read_one(key))
    }

    fn read_many_now(&self, keys: &[&str]) -> Option<Result<Vec<Option<StoredFile>>, StoreError>> {
        Some(self.files_read_many(keys))
    }

    async fn list_level(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
    ) -> Result<Level, StoreError> {
        self.files_list_level(prefix, start, limit)
    }

    async fn list_tree(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        content_budget: u64,
    ) -> Result<Page<TreeItem>, StoreError> {
        self.files_list_tree(prefix, after, limit, content_budget)
    }

    async fn count_tree(&self, prefix: &str) -> Result<u64, StoreError> {
        self.files_count_tree(prefix)
    }

    async fn occupancy(&self, prefix: &str) -> Result<Occupancy, StoreError> {
        let first = self.scan(Table::FILES, prefix, None, 2)?;
        Ok(if first.is_empty() {
            Occupancy::Empty
        } else if first.iter().all(|(k, _)| k == prefix) {
            Occupancy::MarkerOnly
        } else {
            Occupancy::Occupied
        })
    }

    async fn blob_references(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, StoreError> {
        let limit = limit.max(1);
        let page = self.scan(Table::FILES, "", after.map(Cursor::After), limit)?;
        let mut items = Vec::new();
        for (key, bytes) in &page {
            if let Some(blob) = record::decode_for_read(bytes)
                .map_err(|reason| corrupt(key, reason))?
                .blob
            {
                items.push(blob.into_owned());
            }
        }
        let next = match page.last() {
            Some((key, _)) if page.len() == limit => Some(key.clone()),
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn write(&self, batch: &[FileWrite]) -> Result<Vec<Written>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Inline (see the trait): the caller is on a blocking thread already.
        self.files_write(batch)
    }

    async fn delete(
        &self,
        key: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Option<FileRecord>, StoreError> {
        self.files_delete(key, events)
    }

    async fn delete_tree(
        &self,
        prefix: &str,
        events: DeleteEvents<'_>,
    ) -> Result<Removed, StoreError> {
        self.files_delete_tree(prefix, events)
    }

    async fn delete_expired(&self, prefix: &str, now: u64) -> Result<Removed, StoreError> {
        self.files_delete_expired(prefix, now)
    }

    async fn increment(
        &self,
        key: &str,
        delta: u64,
        new_collection: bytes::Bytes,
        write: CounterWrite<'_>,
    ) -> Result<Result<u64, NotCounted>, StoreError> {
        self.files_increment(key, delta, &new_collection, write)
    }

    async fn create_folder(&self, key: &str, record: Vec<u8>) -> Result<(), StoreError> {
        self.files_create_folder(key, &record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Txn;
    use futures::executor::block_on;

    fn rec(size: u64, folder: bool, expires: Option<u64>, blob: bool) -> Vec<u8> {
        record::encode(&FileRecord {
            size,
            content_type: "text/plain".into(),
            etag: "\"e\"".into(),
            last_modified: "2024-01-02T03:04:05.123Z".into(),
            blob: blob.then(|| format!("data-{}", "ab".repeat(16))),
            folder,
            expires,
        })
    }

    /// A store holding `o/c/`: a marker `m/`, files `a`, `b/x`, `b/y`, `big`
    /// (blob), `old` (expired), `z`.
    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .transact(&mut |txn: &mut dyn Txn| {
                for (path, r, data) in [
                    ("a", rec(1, false, None, false), Some(&b"A"[..])),
                    ("b/x", rec(2, false, None, false), Some(b"BX")),
                    ("b/y", rec(2, false, None, false), Some(b"BY")),
                    ("big", rec(1 << 20, false, None, true), None),
                    ("m/", rec(0, true, None, false), None),
                    ("old", rec(3, false, Some(1), false), Some(b"OLD")),
                    ("z", rec(1, false, None, false), Some(b"Z")),
                ] {
                    let key = format!("o/c/{path}");
                    txn.put(Table::FILES, &key, &r)?;
                    if let Some(d) = data {
                        txn.put(Table::FILE_DATA, &key, d)?;
                    }
                }
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    #[test]
    fn occupancy_tells_empty_marker_only_and_occupied() {
        let (_dir, store) = store();
        let of = |p: &str| block_on(store.occupancy(p)).unwrap();
        assert_eq!(of("o/c/m/"), Occupancy::MarkerOnly);
        assert_eq!(of("o/c/b/"), Occupancy::Occupied, "files, no marker");
        assert_eq!(of("o/c/"), Occupancy::Occupied);
        assert_eq!(of("o/c/none/"), Occupancy::Empty);
        assert_eq!(of("o/other/"), Occupancy::Empty);
        // An expired file still occupies its folder until it is swept.
        store
            .transact(&mut |txn: &mut dyn Txn| {
                txn.put(Table::FILES, "o/c/m/", &rec(0, true, None, false))?;
                txn.put(Table::FILES, "o/c/m/gone", &rec(1, false, Some(1), false))
            })
            .unwrap();
        assert_eq!(of("o/c/m/"), Occupancy::Occupied);
    }

    #[test]
    fn blob_references_page_over_every_record() {
        let (_dir, store) = store();
        let blob = |n: u32| format!("data-{n:032x}");
        store
            .transact(&mut |txn: &mut dyn Txn| {
                for n in 0..5u32 {
                    let r = FileRecord {
                        size: 1 << 20,
                        content_type: "text/plain".into(),
                        etag: "\"e\"".into(),
                        last_modified: "2024-01-02T03:04:05.123Z".into(),
                        blob: Some(blob(n)),
                        folder: false,
                        // One expired: its blob is still referenced.
                        expires: (n == 3).then_some(1),
                    };
                    txn.put(Table::FILES, &format!("p/q/f{n}"), &record::encode(&r))?;
                }
                Ok(())
            })
            .unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = block_on(store.blob_references(after.as_deref(), 3)).unwrap();
            pages += 1;
            seen.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        seen.sort();
        let mut want: Vec<String> = (0..5).map(blob).collect();
        want.push(format!("data-{}", "ab".repeat(16)));
        want.sort();
        assert_eq!(
            seen, want,
            "every referenced blob, once, the expired one too"
        );
        assert!(pages >= 4, "12 records in pages of 3: {pages}");
    }

    #[test]
    fn reads_return_record_and_content_together() {
        let (_dir, store) = store();
        let got = block_on(store.read("o/c/a")).unwrap().unwrap();
        assert_eq!(got.inline.as_deref(), Some(&b"A"[..]));
        assert_eq!(record::decode(&got.record).unwrap().size, 1);
        assert!(block_on(store.read("o/c/nope")).unwrap().is_none());
        let many = block_on(store.read_many(&["o/c/b/x", "o/c/nope", "o/c/big"])).unwrap();
        assert_eq!(
            many[0].as_ref().unwrap().inline.as_deref(),
            Some(&b"BX"[..])
        );
        assert!(many[1].is_none());
        assert!(many[2].as_ref().unwrap().inline.is_none());
        // stat includes expired records: expiry is the caller's decision.
        assert!(block_on(store.stat("o/c/old")).unwrap().unwrap().expired(2));
        store
            .transact(&mut |txn: &mut dyn Txn| txn.put(Table::FILES, "o/c/bad", b"\x09"))
            .unwrap();
        assert!(matches!(
            block_on(store.stat("o/c/bad")),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            block_on(store.count_tree("o/c/")),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn levels_skip_subtrees_and_expired_files_and_page() {
        let (_dir, store) = store();
        let names = |l: &Level| {
            l.entries
                .iter()
                .map(|e| match e {
                    Listed::Folder(n) => format!("{n}/"),
                    Listed::File(n, _) => n.clone(),
                })
                .collect::<Vec<_>>()
        };
        let all = block_on(store.list_level("o/c/", "o/c/", 100)).unwrap();
        assert_eq!(names(&all), ["a", "b/", "big", "m/", "z"]);
        assert!(all.exists && all.next.is_none());
        let first = block_on(store.list_level("o/c/", "o/c/", 2)).unwrap();
        assert_eq!(names(&first), ["a", "b/"]);
        let next = first.next.unwrap();
        assert_eq!(next, "o/c/big");
        let rest = block_on(store.list_level("o/c/", &next, 2)).unwrap();
        assert_eq!(names(&rest), ["big", "m/"]);
        // An empty marker folder exists; a missing one does not.
        let m = block_on(store.list_level("o/c/m/", "o/c/m/", 10)).unwrap();
        assert!(m.exists && m.entries.is_empty());
        assert!(
            !block_on(store.list_level("o/c/q/", "o/c/q/", 10))
                .unwrap()
                .exists
        );
    }

    fn write(key: &str, body: &'static [u8], blob: Option<&str>, event: bool) -> FileWrite {
        let r = FileRecord {
            size: body.len() as u64,
            content_type: "text/plain".into(),
            etag: "\"e\"".into(),
            last_modified: "2024-01-02T03:04:05.123Z".into(),
            blob: blob.map(str::to_string),
            folder: false,
            expires: None,
        };
        FileWrite {
            key: key.into(),
            record: record::encode(&r),
            blob: r.blob.clone(),
            inline: bytes::Bytes::from_static(body),
            event: event.then(|| format!("{{\"subject\":\"{key}\"}}").into_bytes()),
            new_collection: bytes::Bytes::from_static(b"{\"implicit\":true}"),
        }
    }

    fn outbox(store: &EmbeddedStore) -> Vec<(String, Vec<u8>)> {
        store.scan(Table::OUTBOX, "", None, 100).unwrap()
    }

    #[test]
    fn writes_are_durable_with_their_events_and_refuse_folders() {
        let dir = tempfile::tempdir().unwrap();
        let blob = format!("data-{}", "cd".repeat(16));
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let got = block_on(store.write(&[
                write("o/new/a", b"one", None, true),
                write("o/new/b", b"two", None, true),
                write("o/new/c", b"", Some(&blob), false),
            ]))
            .unwrap();
            assert!(got.iter().all(|w| *w
                == Written::Done {
                    replaced_blob: None
                }));
            // Two events, one outbox record numbered for both.
            let events = outbox(&store);
            assert_eq!(events.len(), 1);
            assert!(events[0].1.starts_with(b"["));
            // The missing collection was created on the way, at a revision
            // the Records contract handed out (above the implicit 1), so a
            // `set_acl` update at the read revision finds it.
            assert!(store.get(Table::COLLECTIONS, "o/new").unwrap().is_some());
            let entry = block_on(crate::records::Records::get(
                &store,
                Bucket::Collections,
                "o/new",
            ))
            .unwrap()
            .unwrap();
            assert!(entry.rev > 1, "revision {}", entry.rev);
            block_on(crate::records::Records::update(
                &store,
                Bucket::Collections,
                "o/new",
                bytes::Bytes::from_static(b"{}"),
                entry.rev,
            ))
            .unwrap();
        }
        // Durable on return: a reopened store reads them.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let a = block_on(store.read("o/new/a")).unwrap().unwrap();
        assert_eq!(a.inline.as_deref(), Some(&b"one"[..]));
        // Replacing the blob file inline hands back its blob.
        let got = block_on(store.write(&[write("o/new/c", b"x", None, true)])).unwrap();
        assert_eq!(
            got,
            [Written::Done {
                replaced_blob: Some(blob)
            }]
        );
        // A folder is refused, and a batch of refusals commits nothing (not
        // even its collection).
        store
            .transact(&mut |txn: &mut dyn Txn| {
                txn.put(Table::FILES, "o/new/d/", &rec(0, true, None, false))
            })
            .unwrap();
        let before = outbox(&store).len();
        let got = block_on(store.write(&[
            write("o/new/d", b"x", None, true),
            write("o/new/e", b"", None, true),
        ]));
        assert_eq!(got.unwrap()[0], Written::IsFolder);
        assert_eq!(
            outbox(&store).len(),
            before + 1,
            "the other write's event only"
        );
        let got = block_on(store.write(&[write("o/new/d", b"x", None, true)])).unwrap();
        assert_eq!(got, [Written::IsFolder]);
        assert_eq!(outbox(&store).len(), before + 1);
    }

    #[test]
    fn deletes_remove_record_content_and_log_their_events() {
        let (dir, store) = store();
        let events = |key: &str, rec: &FileRecord| {
            (!rec.folder).then(|| format!("{{\"deleted\":\"{key}\"}}").into_bytes())
        };
        let gone = block_on(store.delete("o/c/a", &events)).unwrap().unwrap();
        assert_eq!(gone.size, 1);
        assert!(block_on(store.delete("o/c/a", &events)).unwrap().is_none());
        assert_eq!(outbox(&store).len(), 1);
        // A folder marker goes without an event.
        assert!(
            block_on(store.delete("o/c/m/", &events))
                .unwrap()
                .unwrap()
                .folder
        );
        assert_eq!(outbox(&store).len(), 1);
        let removed = block_on(store.delete_tree("o/c/b/", &events)).unwrap();
        assert_eq!(
            removed,
            Removed {
                files: 2,
                blobs: vec![]
            }
        );
        // Two events, one outbox record.
        assert_eq!(outbox(&store).len(), 2);
        let expired = block_on(store.delete_expired("o/c/", 2)).unwrap();
        assert_eq!(expired.files, 1, "only `old` had expired");
        let removed = block_on(store.delete_tree("o/c/", &events)).unwrap();
        assert_eq!(removed.files, 2);
        assert_eq!(removed.blobs, [format!("data-{}", "ab".repeat(16))]);
        // Durable on return.
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(block_on(store.count_tree("o/c/")).unwrap(), 0);
        assert!(
            store
                .scan(Table::FILE_DATA, "o/c/", None, 10)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn increments_count_from_zero_and_refuse_non_counters() {
        let (dir, store) = store();
        let make = |v: u64| {
            (
                rec(v.to_string().len() as u64, false, None, false),
                Some(b"{}".to_vec()),
            )
        };
        let coll = bytes::Bytes::from_static(b"{}");
        assert_eq!(
            block_on(store.increment("o/k/n", 2, coll.clone(), &make)).unwrap(),
            Ok(2)
        );
        assert_eq!(
            block_on(store.increment("o/k/n", 3, coll.clone(), &make)).unwrap(),
            Ok(5)
        );
        assert!(store.get(Table::COLLECTIONS, "o/k").unwrap().is_some());
        assert_eq!(
            block_on(store.increment("o/k/n", u64::MAX, coll.clone(), &make)).unwrap(),
            Err(NotCounted::Overflow)
        );
        assert_eq!(
            block_on(store.increment("o/c/a", 1, coll.clone(), &make)).unwrap(),
            Err(NotCounted::NotACounter)
        );
        assert_eq!(outbox(&store).len(), 2, "one event per counted increment");
        // Folder markers: created once, and never over a file.
        block_on(store.create_folder("o/c/new/", rec(0, true, None, false))).unwrap();
        assert!(matches!(
            block_on(store.create_folder("o/c/new/", rec(0, true, None, false))),
            Err(StoreError::Exists { .. })
        ));
        assert!(matches!(
            block_on(store.create_folder("o/c/a/", rec(0, true, None, false))),
            Err(StoreError::Exists { .. })
        ));
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let n = block_on(store.read("o/k/n")).unwrap().unwrap();
        assert_eq!(n.inline.as_deref(), Some(&b"5"[..]));
        assert!(block_on(store.stat("o/c/new/")).unwrap().unwrap().folder);
    }

    #[test]
    fn collection_keys_are_the_first_two_segments() {
        assert_eq!(collection_of("o/c/a/b"), "o/c");
        assert_eq!(write("o/c/a/b", b"", None, false).collection_key(), "o/c");
        assert_eq!(write("o/c/a", b"", None, false).collection_key(), "o/c");
    }

    #[test]
    fn trees_page_by_scanned_keys_and_read_contents_within_the_budget() {
        let (_dir, store) = store();
        let keys = |p: &Page<TreeItem>| p.items.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
        let all = block_on(store.list_tree("o/c/", None, 100, 0)).unwrap();
        assert_eq!(
            keys(&all),
            ["o/c/a", "o/c/b/x", "o/c/b/y", "o/c/big", "o/c/z"]
        );
        assert!(all.next.is_none() && all.items.iter().all(|i| i.inline.is_none()));
        // Four keys scanned (the marker and the expired file count): full page.
        let page = block_on(store.list_tree("o/c/", Some("o/c/b/y"), 4, 0)).unwrap();
        assert_eq!(keys(&page), ["o/c/big", "o/c/z"]);
        assert_eq!(page.next.as_deref(), Some("o/c/z"));
        // Contents of the first small files up to 3 bytes: `a` and `b/x`.
        let with = block_on(store.list_tree("o/c/", None, 100, 3)).unwrap();
        let read: Vec<_> = with.items.iter().map(|i| i.inline.is_some()).collect();
        assert_eq!(read, [true, true, false, false, false]);
        assert_eq!(block_on(store.count_tree("o/c/")).unwrap(), 5);
        assert_eq!(block_on(store.count_tree("o/c/b/")).unwrap(), 2);
    }
}
