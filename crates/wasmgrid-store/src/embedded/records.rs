//! [`Records`] over the existing redb tables (docs/STORAGE.md 3): each bucket
//! is the table it always was (Versions is VERSIONS + TAKEN_VERSIONS), so data
//! directories written before the contract read unchanged. Revisions live in
//! their own table, `record_revisions`; a record without a row there (written
//! by an older build, or by code not yet on the contract) is at revision 1.

use super::{EmbeddedStore, backend, definition};
use crate::records::{Bucket, Change, Entry, Records};
use crate::{Page, Rev, Store, StoreError, Table, Txn};
use bytes::Bytes;
use futures::stream::BoxStream;
use redb::{Database, ReadableDatabase};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// `bucket/key` → the record's revision (decimal). Created by
/// [`EmbeddedStore::open`] like the other tables; older builds ignore it.
pub(super) const REVISIONS: Table = Table("record_revisions");

/// Changes a watcher may fall behind by before it is reset to a fresh
/// snapshot (small in tests, so that the reset can be exercised).
const BACKLOG: usize = if cfg!(test) { 8 } else { 1024 };

/// The records contract's per-store state, shared by the store's clones.
pub(super) struct RecordsState {
    /// Every committed record change, for [`Records::watch`].
    changes: broadcast::Sender<Arc<Announced>>,
    /// Taken inside a record write's transaction and held until its change is
    /// broadcast, so that changes are sent in commit order.
    order: std::sync::Mutex<()>,
}

impl Default for RecordsState {
    fn default() -> Self {
        Self {
            changes: broadcast::channel(BACKLOG).0,
            order: std::sync::Mutex::new(()),
        }
    }
}

/// One committed change of one bucket.
struct Announced {
    bucket: Bucket,
    change: Change,
}

/// What a write asks for.
#[derive(Clone, Copy)]
enum Write {
    Create,
    Update(Rev),
    Put,
    Delete(Option<Rev>),
}

/// The table holding a bucket, and the prefix its keys get there (the ids of
/// [`Bucket::Ids`] share META with the store's own settings).
fn table_of(bucket: Bucket) -> (Table, &'static str) {
    match bucket {
        Bucket::Keys => (Table::KEYS, ""),
        Bucket::Versions => (Table::VERSIONS, ""),
        Bucket::Collections => (Table::COLLECTIONS, ""),
        Bucket::Secrets => (Table::SECRETS, ""),
        Bucket::Topics => (Table::TOPICS, ""),
        Bucket::Subscriptions => (Table::SUBSCRIPTIONS, ""),
        Bucket::Jobs => (Table::JOBS, ""),
        Bucket::Ids => (Table::META, "ids/"),
        Bucket::Meta => (Table::META, ""),
    }
}

fn rev_key(bucket: Bucket, key: &str) -> String {
    format!("{}/{key}", bucket.name())
}

/// The META key of a bucket's revision counter. Starts at 1, so that every
/// revision this contract hands out is above the implicit 1 of older records.
fn counter_key(bucket: Bucket) -> String {
    format!("rev/{}", bucket.name())
}

fn parse_num(bytes: &[u8], table: &'static str, key: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            table,
            key: key.to_string(),
            reason: "not a decimal number".into(),
        })
}

/// Whether a Versions value is a tombstone (a JSON object with `deleted`).
fn is_tombstone(value: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .is_some_and(|v| v.get("deleted").is_some())
}

/// The TAKEN_VERSIONS value of a version, in today's format.
fn taken_mark(value: &[u8]) -> Vec<u8> {
    let published = serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v.get("created").or_else(|| v.get("deleted")).cloned())
        .unwrap_or(serde_json::Value::Null);
    serde_json::to_vec(&serde_json::json!({ "published": published })).unwrap_or_default()
}

/// Applies one write inside a transaction; the change it made, if any.
fn apply(
    txn: &mut dyn Txn,
    bucket: Bucket,
    key: &str,
    write: Write,
    value: &[u8],
    event: Option<&[u8]>,
) -> Result<Option<Change>, StoreError> {
    let (table, pfx) = table_of(bucket);
    let tkey = format!("{pfx}{key}");
    let rkey = rev_key(bucket, key);
    let versions = bucket == Bucket::Versions;
    let live = txn.get(table, &tkey)?.is_some();
    let taken = if versions {
        txn.get(Table::TAKEN_VERSIONS, key)?
    } else {
        None
    };
    let current = if live || taken.is_some() {
        Some(match txn.get(REVISIONS, &rkey)? {
            Some(v) => parse_num(&v, REVISIONS.name(), &rkey)?,
            None => 1,
        })
    } else {
        None
    };
    let changed = |expected: Rev| StoreError::Changed {
        bucket: bucket.name(),
        key: key.to_string(),
        expected,
        found: current,
    };
    match write {
        Write::Create if current.is_some() => {
            return Err(StoreError::Exists {
                bucket: bucket.name(),
                key: key.to_string(),
            });
        }
        Write::Update(expected) | Write::Delete(Some(expected)) if current != Some(expected) => {
            return Err(changed(expected));
        }
        Write::Delete(_) if current.is_none() => return Ok(None),
        _ => {}
    }
    let ckey = counter_key(bucket);
    let rev = match txn.get(Table::META, &ckey)? {
        Some(v) => parse_num(&v, Table::META.name(), &ckey)?,
        None => 1,
    } + 1;
    txn.put(Table::META, &ckey, rev.to_string().as_bytes())?;
    let change = if versions {
        // A version is never removed: deleting or tombstoning it drops the
        // live row and keeps the taken mark, which reads as its tombstone.
        let tombstone = matches!(write, Write::Delete(_)) || is_tombstone(value);
        let mark = match taken {
            Some(mark) => mark,
            None => {
                let mark = taken_mark(value);
                txn.put(Table::TAKEN_VERSIONS, key, &mark)?;
                mark
            }
        };
        if tombstone {
            txn.delete(Table::VERSIONS, key)?;
        } else {
            txn.put(Table::VERSIONS, key, value)?;
        }
        txn.put(REVISIONS, &rkey, rev.to_string().as_bytes())?;
        let value = if tombstone { mark } else { value.to_vec() };
        Change::Put(Entry {
            key: key.to_string(),
            value: Bytes::from(value),
            rev,
        })
    } else if let Write::Delete(_) = write {
        txn.delete(table, &tkey)?;
        txn.delete(REVISIONS, &rkey)?;
        Change::Deleted {
            key: key.to_string(),
            rev,
        }
    } else {
        txn.put(table, &tkey, value)?;
        txn.put(REVISIONS, &rkey, rev.to_string().as_bytes())?;
        Change::Put(Entry {
            key: key.to_string(),
            value: Bytes::copy_from_slice(value),
            rev,
        })
    };
    if let Some(event) = event {
        // Today's format: the event JSON as one OUTBOX entry.
        txn.append(Table::OUTBOX, event)?;
    }
    Ok(Some(change))
}

/// Creates `key` inside the caller's transaction unless it exists, moving
/// the bucket's revision counter and the record's revision as every
/// [`Records`] write does. For writes of another contract that create a
/// record on the way (a file write creating its collection), so that the
/// record's revisions stay those the contract hands out. The change is not
/// broadcast to watchers: the caller's transaction does not take the
/// records' order lock. Returns whether it created the record.
pub(super) fn create_if_missing(
    txn: &mut dyn Txn,
    bucket: Bucket,
    key: &str,
    value: &[u8],
) -> Result<bool, StoreError> {
    let (table, pfx) = table_of(bucket);
    if txn.get(table, &format!("{pfx}{key}"))?.is_some() {
        return Ok(false);
    }
    apply(txn, bucket, key, Write::Create, value, None)?;
    Ok(true)
}

/// Writes `key` unconditionally inside the caller's transaction, moving the
/// bucket's counter and the record's revision as [`Records::put`] does, and
/// returns the new revision: for the [`JobQueue`](crate::jobqueue::JobQueue)
/// steps that update a job record together with its batch's outputs and
/// progress, so that `update`s of that record by revision see those writes. Not broadcast to watchers (as
/// [`create_if_missing`]).
pub(crate) fn put_record_in(
    txn: &mut dyn Txn,
    bucket: Bucket,
    key: &str,
    value: &[u8],
) -> Result<Rev, StoreError> {
    match apply(txn, bucket, key, Write::Put, value, None)? {
        Some(change) => Ok(change_rev(&change)),
        None => Err(backend("a record write reported no change")),
    }
}

fn change_rev(change: &Change) -> Rev {
    match change {
        Change::Put(e) => e.rev,
        Change::Deleted { rev, .. } => *rev,
        Change::Synced | Change::Reset => 0,
    }
}

fn change_key(change: &Change) -> &str {
    match change {
        Change::Put(e) => &e.key,
        Change::Deleted { key, .. } => key,
        Change::Synced | Change::Reset => "",
    }
}

type ReadTable = redb::ReadOnlyTable<&'static str, &'static [u8]>;

/// The revision of a stored record (1 without a row).
fn stored_rev(revs: &ReadTable, bucket: Bucket, key: &str) -> Result<Rev, StoreError> {
    let rkey = rev_key(bucket, key);
    match revs.get(rkey.as_str()).map_err(backend)? {
        Some(v) => parse_num(v.value(), REVISIONS.name(), &rkey),
        None => Ok(1),
    }
}

/// Up to `limit` rows of `table` whose key starts with `prefix`, after `after`.
fn scan(
    t: &ReadTable,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    let start = match after {
        Some(a) if a >= prefix => a,
        _ => prefix,
    };
    if limit == 0 {
        return Ok(out);
    }
    for row in t.range::<&str>(start..).map_err(backend)? {
        let (k, v) = row.map_err(backend)?;
        let k = k.value();
        if !k.starts_with(prefix) {
            break;
        }
        if Some(k) == after {
            continue;
        }
        out.push((k.to_string(), v.value().to_vec()));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Up to `limit` records of `bucket` under `prefix` after `after`, and the
/// bucket's revision counter, from one snapshot.
fn read_records(
    db: &Database,
    bucket: Bucket,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Entry>, Rev), StoreError> {
    let rt = db.begin_read().map_err(backend)?;
    let (table, pfx) = table_of(bucket);
    let t = rt.open_table(definition(table)).map_err(backend)?;
    let revs = rt.open_table(definition(REVISIONS)).map_err(backend)?;
    let meta = rt.open_table(definition(Table::META)).map_err(backend)?;
    let ckey = counter_key(bucket);
    let counter = match meta.get(ckey.as_str()).map_err(backend)? {
        Some(v) => parse_num(v.value(), Table::META.name(), &ckey)?,
        None => 1,
    };
    let full_prefix = format!("{pfx}{prefix}");
    let full_after = after.map(|a| format!("{pfx}{a}"));
    let mut rows = scan(&t, &full_prefix, full_after.as_deref(), limit)?;
    if bucket == Bucket::Versions {
        // Tombstones are the taken marks without a live row: merge the two
        // listings by key (the first `limit` of the union are among the
        // first `limit` of each).
        let taken = rt
            .open_table(definition(Table::TAKEN_VERSIONS))
            .map_err(backend)?;
        let marks = scan(&taken, &full_prefix, full_after.as_deref(), limit)?;
        let mut merged = std::collections::BTreeMap::new();
        for (k, v) in marks {
            merged.insert(k, v);
        }
        for (k, v) in rows {
            merged.insert(k, v);
        }
        rows = merged.into_iter().take(limit).collect();
    }
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let key = k[pfx.len()..].to_string();
        let rev = stored_rev(&revs, bucket, &key)?;
        out.push(Entry {
            key,
            value: Bytes::from(v),
            rev,
        });
    }
    Ok((out, counter))
}

/// The whole of `bucket` under `prefix` as a watch snapshot.
fn snapshot(
    db: &Database,
    bucket: Bucket,
    prefix: &str,
) -> Result<(VecDeque<Change>, Rev), StoreError> {
    let (entries, counter) = read_records(db, bucket, prefix, None, usize::MAX)?;
    let mut changes: VecDeque<Change> = entries.into_iter().map(Change::Put).collect();
    changes.push_back(Change::Synced);
    Ok((changes, counter))
}

/// A watch in progress.
struct Watch {
    db: Arc<Database>,
    rx: broadcast::Receiver<Arc<Announced>>,
    bucket: Bucket,
    prefix: String,
    /// Reported next, before any broadcast change.
    pending: VecDeque<Change>,
    /// The revision counter of the last snapshot: broadcast changes at or
    /// below it are in that snapshot already.
    seen: Rev,
}

impl EmbeddedStore {
    /// Runs a blocking store operation on a blocking thread when inside a
    /// tokio runtime, at once otherwise (a caller on a plain thread, such as
    /// start-up, may block).
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(EmbeddedStore) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let store = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(move || f(store))
                .await
                .map_err(|e| StoreError::Backend(format!("store worker failed: {e}")))?,
            Err(_) => f(store),
        }
    }

    /// One record write in one durable transaction; its change is broadcast
    /// to the watchers, in commit order, once committed.
    fn write_record(
        &self,
        bucket: Bucket,
        key: &str,
        write: Write,
        value: &[u8],
        event: Option<&[u8]>,
    ) -> Result<Option<Rev>, StoreError> {
        let order = &self.records.order;
        let mut guard = None;
        let mut change = None;
        let ticket = self.commit_non_durable(&mut |txn| {
            // Inside the transaction, so the lock is taken in commit order.
            if guard.is_none() {
                guard = Some(
                    order
                        .lock()
                        .map_err(|_| backend("records order lock poisoned"))?,
                );
            }
            change = apply(txn, bucket, key, write, value, event)?;
            Ok(())
        })?;
        let rev = change.as_ref().map(change_rev);
        if let Some(change) = change {
            // No receivers is not an error: nobody watches.
            let _ = self
                .records
                .changes
                .send(Arc::new(Announced { bucket, change }));
        }
        drop(guard);
        self.wait_durable(ticket)?;
        Ok(rev)
    }

    async fn write_async(
        &self,
        bucket: Bucket,
        key: &str,
        write: Write,
        value: Bytes,
        event: Option<Bytes>,
    ) -> Result<Option<Rev>, StoreError> {
        let key = key.to_string();
        self.blocking(move |store| {
            store.write_record(bucket, &key, write, &value, event.as_deref())
        })
        .await
    }

    async fn write_rev(
        &self,
        bucket: Bucket,
        key: &str,
        write: Write,
        value: Bytes,
        event: Option<Bytes>,
    ) -> Result<Rev, StoreError> {
        self.write_async(bucket, key, write, value, event)
            .await?
            .ok_or_else(|| backend("a record write reported no change"))
    }
}

#[async_trait::async_trait]
impl Records for EmbeddedStore {
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError> {
        let rt = self.db.begin_read().map_err(backend)?;
        let (table, pfx) = table_of(bucket);
        let t = rt.open_table(definition(table)).map_err(backend)?;
        let mut value = t
            .get(format!("{pfx}{key}").as_str())
            .map_err(backend)?
            .map(|v| v.value().to_vec());
        if value.is_none() && bucket == Bucket::Versions {
            let taken = rt
                .open_table(definition(Table::TAKEN_VERSIONS))
                .map_err(backend)?;
            value = taken.get(key).map_err(backend)?.map(|v| v.value().to_vec());
        }
        let Some(value) = value else {
            return Ok(None);
        };
        let revs = rt.open_table(definition(REVISIONS)).map_err(backend)?;
        Ok(Some(Entry {
            key: key.to_string(),
            value: Bytes::from(value),
            rev: stored_rev(&revs, bucket, key)?,
        }))
    }

    async fn create(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<Rev, StoreError> {
        self.write_rev(bucket, key, Write::Create, value, None)
            .await
    }

    async fn create_announced(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        event: Bytes,
    ) -> Result<Rev, StoreError> {
        self.write_rev(bucket, key, Write::Create, value, Some(event))
            .await
    }

    async fn update(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        expected: Rev,
    ) -> Result<Rev, StoreError> {
        self.write_rev(bucket, key, Write::Update(expected), value, None)
            .await
    }

    async fn update_announced(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        expected: Rev,
        event: Bytes,
    ) -> Result<Rev, StoreError> {
        self.write_rev(bucket, key, Write::Update(expected), value, Some(event))
            .await
    }

    async fn put(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<Rev, StoreError> {
        self.write_rev(bucket, key, Write::Put, value, None).await
    }

    async fn delete(
        &self,
        bucket: Bucket,
        key: &str,
        expected: Option<Rev>,
    ) -> Result<(), StoreError> {
        self.write_async(bucket, key, Write::Delete(expected), Bytes::new(), None)
            .await
            .map(|_| ())
    }

    async fn list(
        &self,
        bucket: Bucket,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Entry>, StoreError> {
        let (items, _) = read_records(&self.db, bucket, prefix, after, limit.saturating_add(1))?;
        Ok(Page::from_overfetch(items, limit, |e| e.key.clone()))
    }

    async fn watch(
        &self,
        bucket: Bucket,
        prefix: &str,
    ) -> Result<BoxStream<'static, Result<Change, StoreError>>, StoreError> {
        // Subscribed before the snapshot is read: a change committed after
        // the snapshot is in the channel, one before it is in the snapshot
        // (and skipped in the channel by its revision).
        let rx = self.records.changes.subscribe();
        let (pending, seen) = snapshot(&self.db, bucket, prefix)?;
        let watch = Watch {
            db: self.db.clone(),
            rx,
            bucket,
            prefix: prefix.to_string(),
            pending,
            seen,
        };
        let stream = futures::stream::unfold(watch, |mut w| async move {
            loop {
                if let Some(change) = w.pending.pop_front() {
                    return Some((Ok(change), w));
                }
                match w.rx.recv().await {
                    Ok(a) => {
                        if a.bucket == w.bucket
                            && change_key(&a.change).starts_with(w.prefix.as_str())
                            && change_rev(&a.change) > w.seen
                        {
                            return Some((Ok(a.change.clone()), w));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Start again from the channel's tail: what it still
                        // holds is older than the snapshot read next, and a
                        // receiver left at the oldest held change would lag
                        // again at the next send.
                        w.rx = w.rx.resubscribe();
                        match snapshot(&w.db, w.bucket, &w.prefix) {
                            Ok((mut pending, seen)) => {
                                pending.push_front(Change::Reset);
                                w.pending = pending;
                                w.seen = seen;
                            }
                            Err(e) => return Some((Err(e), w)),
                        }
                    }
                    // The store is gone.
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn next_id(&self, scope: &str) -> Result<u64, StoreError> {
        // Today's META counter (`subscription_id` for subscriptions).
        let key = format!("{scope}_id");
        self.blocking(move |store| {
            let mut id = 0;
            store.transact(&mut |txn| {
                let current = txn
                    .get(Table::META, &key)?
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                id = current + 1;
                txn.put(Table::META, &key, id.to_string().as_bytes())
            })?;
            Ok(id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteBatch;
    use crate::records::RecordsExt;
    use futures::StreamExt;

    fn open(dir: &std::path::Path) -> EmbeddedStore {
        EmbeddedStore::open(dir).unwrap()
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn a_write_inside_another_transaction_moves_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let r1 = s
            .create(Bucket::Jobs, "job-1", b("{\"v\":1}"))
            .await
            .unwrap();
        let mut r2 = 0;
        s.transact(&mut |txn| {
            r2 = put_record_in(txn, Bucket::Jobs, "job-1", b"{\"v\":2}")?;
            Ok(())
        })
        .unwrap();
        assert!(r2 > r1);
        // An update from the revision read before that write is refused.
        assert!(matches!(
            s.update(Bucket::Jobs, "job-1", b("{\"v\":3}"), r1).await,
            Err(StoreError::Changed { .. })
        ));
        let got = Records::get(&s, Bucket::Jobs, "job-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.value, got.rev), (b("{\"v\":2}"), r2));
    }

    #[tokio::test]
    async fn create_is_once_and_updates_check_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let r1 = s.create(Bucket::Topics, "t", b("{\"v\":1}")).await.unwrap();
        assert!(r1 > 1, "contract revisions are above the implicit 1");
        assert!(matches!(
            s.create(Bucket::Topics, "t", b("{}")).await,
            Err(StoreError::Exists {
                bucket: "topics",
                ..
            })
        ));
        let r2 = s
            .update(Bucket::Topics, "t", b("{\"v\":2}"), r1)
            .await
            .unwrap();
        assert!(r2 > r1);
        match s.update(Bucket::Topics, "t", b("{\"v\":3}"), r1).await {
            Err(StoreError::Changed {
                expected, found, ..
            }) => assert_eq!((expected, found), (r1, Some(r2))),
            other => panic!("stale update: {other:?}"),
        }
        assert!(matches!(
            s.delete(Bucket::Topics, "t", Some(r1)).await,
            Err(StoreError::Changed { .. })
        ));
        assert!(matches!(
            s.update(Bucket::Topics, "gone", b("{}"), 1).await,
            Err(StoreError::Changed { found: None, .. })
        ));
        let got = Records::get(&s, Bucket::Topics, "t")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.value, got.rev), (b("{\"v\":2}"), r2));
        s.delete(Bucket::Topics, "t", Some(r2)).await.unwrap();
        assert!(
            Records::get(&s, Bucket::Topics, "t")
                .await
                .unwrap()
                .is_none()
        );
        // Deleting a missing record unconditionally does nothing.
        s.delete(Bucket::Topics, "t", None).await.unwrap();
        // Re-created after a delete: a fresh, higher revision.
        let r3 = s.create(Bucket::Topics, "t", b("{}")).await.unwrap();
        assert!(r3 > r2);
    }

    #[tokio::test]
    async fn writes_are_durable_on_return_and_old_records_read_at_revision_1() {
        let dir = tempfile::tempdir().unwrap();
        let rev = {
            let s = open(dir.path());
            // Written as older builds do, without a revision.
            let mut batch = WriteBatch::new();
            batch.put_raw(Table::KEYS, "old", b"{\"id\":\"old\"}".to_vec());
            s.commit(&batch).unwrap();
            s.put(Bucket::Secrets, "o/a/K", b("sealed")).await.unwrap()
        };
        let s = open(dir.path());
        let old = Records::get(&s, Bucket::Keys, "old")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old.rev, 1);
        let secret = Records::get(&s, Bucket::Secrets, "o/a/K")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((secret.value, secret.rev), (b("sealed"), rev));
        // The old record takes part in compare-and-set at revision 1.
        assert!(s.update(Bucket::Keys, "old", b("{}"), 2).await.is_err());
        let r = s.update(Bucket::Keys, "old", b("{}"), 1).await.unwrap();
        assert!(r > old.rev);
        let again = s
            .put(Bucket::Secrets, "o/a/K", b("resealed"))
            .await
            .unwrap();
        assert!(again > rev, "revisions keep increasing across a reopen");
        // The record is stored where older builds read it.
        assert_eq!(
            s.get_json::<serde_json::Value>(Bucket::Keys, "old")
                .await
                .unwrap()
                .unwrap()
                .rev,
            r
        );
        assert_eq!(Store::get(&s, Table::KEYS, "old").unwrap().unwrap(), b"{}");
    }

    #[tokio::test]
    async fn a_version_is_never_reused_and_its_event_commits_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let key = "o/a/1.0.0";
        let rev = s
            .create_announced(
                Bucket::Versions,
                key,
                b("{\"created\":\"T\",\"x\":1}"),
                b("{\"type\":\"deployed\"}"),
            )
            .await
            .unwrap();
        // Stored in today's tables and formats.
        assert_eq!(
            Store::get(&s, Table::TAKEN_VERSIONS, key).unwrap().unwrap(),
            b"{\"published\":\"T\"}"
        );
        assert!(Store::get(&s, Table::VERSIONS, key).unwrap().is_some());
        // A refused create appends no event.
        assert!(matches!(
            s.create_announced(Bucket::Versions, key, b("{}"), b("{\"type\":\"lost\"}"))
                .await,
            Err(StoreError::Exists { .. })
        ));
        let t = s
            .update_announced(
                Bucket::Versions,
                key,
                b("{\"deleted\":\"U\"}"),
                rev,
                b("{\"type\":\"deleted\"}"),
            )
            .await
            .unwrap();
        assert!(Store::get(&s, Table::VERSIONS, key).unwrap().is_none());
        // The tombstone is the taken mark, and the number stays taken.
        let tomb = Records::get(&s, Bucket::Versions, key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((tomb.value, tomb.rev), (b("{\"published\":\"T\"}"), t));
        assert!(matches!(
            s.create(Bucket::Versions, key, b("{}")).await,
            Err(StoreError::Exists { .. })
        ));
        let outbox: Vec<Vec<u8>> = Store::scan(&s, Table::OUTBOX, "", None, 10)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            outbox,
            [
                b"{\"type\":\"deployed\"}".to_vec(),
                b"{\"type\":\"deleted\"}".to_vec()
            ]
        );
        let listed = s.list(Bucket::Versions, "o/", None, 10).await.unwrap();
        assert_eq!(listed.items.len(), 1);
    }

    #[tokio::test]
    async fn list_pages_in_key_order_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        for k in ["a/1", "a/2", "a/3", "ab/1", "b/1"] {
            s.put(Bucket::Secrets, k, b(k)).await.unwrap();
        }
        let p1 = s.list(Bucket::Secrets, "a/", None, 2).await.unwrap();
        let keys = |p: &Page<Entry>| p.items.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&p1), ["a/1", "a/2"]);
        assert_eq!(p1.next.as_deref(), Some("a/2"));
        let p2 = s
            .list(Bucket::Secrets, "a/", p1.next.as_deref(), 2)
            .await
            .unwrap();
        assert_eq!(keys(&p2), ["a/3"]);
        assert_eq!(p2.next, None);
        assert_eq!(s.list_all(Bucket::Secrets, "").await.unwrap().len(), 5);
        // Ids live apart from the store's own settings.
        s.create(Bucket::Ids, "sub/1", Bytes::new()).await.unwrap();
        assert_eq!(
            keys(&s.list(Bucket::Ids, "", None, 10).await.unwrap()),
            ["sub/1"]
        );
    }

    #[tokio::test]
    async fn watch_reports_the_snapshot_then_live_changes_and_resets_a_laggard() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.put(Bucket::Topics, "a", b("1")).await.unwrap();
        s.put(Bucket::Keys, "k", b("x")).await.unwrap();
        let mut w = s.watch(Bucket::Topics, "").await.unwrap();
        match w.next().await.unwrap().unwrap() {
            Change::Put(e) => assert_eq!((e.key.as_str(), e.value), ("a", b("1"))),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.next().await.unwrap().unwrap(), Change::Synced);
        s.put(Bucket::Keys, "k2", b("other bucket")).await.unwrap();
        let r = s.put(Bucket::Topics, "b", b("2")).await.unwrap();
        s.delete(Bucket::Topics, "a", None).await.unwrap();
        match w.next().await.unwrap().unwrap() {
            Change::Put(e) => assert_eq!((e.key.as_str(), e.rev), ("b", r)),
            other => panic!("{other:?}"),
        }
        match w.next().await.unwrap().unwrap() {
            Change::Deleted { key, rev } => assert!(key == "a" && rev > r),
            other => panic!("{other:?}"),
        }
        // Falling behind by more than the backlog: a reset and a fresh snapshot.
        for i in 0..(BACKLOG + 2) {
            s.put(Bucket::Topics, &format!("n{i:02}"), b("n"))
                .await
                .unwrap();
        }
        assert_eq!(w.next().await.unwrap().unwrap(), Change::Reset);
        let mut n = 0;
        loop {
            match w.next().await.unwrap().unwrap() {
                Change::Put(_) => n += 1,
                Change::Synced => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(n, BACKLOG + 3, "b and every n");
        s.put(Bucket::Topics, "z", b("live")).await.unwrap();
        match w.next().await.unwrap().unwrap() {
            Change::Put(e) => assert_eq!(e.key, "z"),

            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_of_one_key_are_watched_in_revision_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut w = s.watch(Bucket::Topics, "").await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap(), Change::Synced);
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut last = 0;
                    for i in 0..5 {
                        last = s
                            .put(Bucket::Topics, "k", b(&format!("{t}.{i}")))
                            .await
                            .unwrap();
                    }
                    last
                })
            })
            .collect();
        let mut newest = 0;
        for writer in writers {
            newest = newest.max(writer.await.unwrap());
        }
        // Every report of `k` is newer than the one before (a fresh snapshot
        // after a reset may repeat the newest), ending at the newest write.
        let mut seen = 0;
        let mut after_reset = false;
        while seen < newest {
            match w.next().await.unwrap().unwrap() {
                Change::Put(e) => {
                    assert!(
                        e.rev > seen || (after_reset && e.rev == seen),
                        "{} after {seen}",
                        e.rev
                    );
                    seen = e.rev;
                }
                Change::Reset => after_reset = true,
                Change::Synced => after_reset = false,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, newest);
        let last = Records::get(&s, Bucket::Topics, "k")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.rev, newest);
    }

    #[tokio::test]
    async fn next_id_continues_the_stored_counter_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            let mut batch = WriteBatch::new();
            batch.put_raw(Table::META, "subscription_id", b"41".to_vec());
            s.commit(&batch).unwrap();
            assert_eq!(s.next_id("subscription").await.unwrap(), 42);
        }
        let s = open(dir.path());
        assert_eq!(s.next_id("subscription").await.unwrap(), 43);
    }

    #[test]
    fn writes_work_outside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let rev = futures::executor::block_on(s.create(Bucket::Keys, "k", b("{}"))).unwrap();
        let got = futures::executor::block_on(Records::get(&s, Bucket::Keys, "k")).unwrap();
        assert_eq!(got.map(|e| e.rev), Some(rev));
    }
}
