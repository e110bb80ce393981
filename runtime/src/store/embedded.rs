//! The embedded backend: metadata in a redb database, blobs as files.

use super::{SCHEMA_VERSION, Store, StoreError, Table, WriteBatch, WriteOp};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Metadata in `<data dir>/store.redb` (one ACID database, crash-safe, fsync on
/// every commit) and blobs in `<data dir>/blobs/`, one file per content digest,
/// written to a temporary file and renamed into place so a crash never leaves a
/// partial blob under a digest's name.
pub struct EmbeddedStore {
    db: Database,
    blob_dir: PathBuf,
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
        let store = Self { db, blob_dir };
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

    fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        // Digests are `sha256:<hex>`; anything else never reaches the filesystem.
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| StoreError::Backend(format!("invalid blob digest {digest:?}")))?;
        Ok(self.blob_dir.join(format!("sha256-{hex}")))
    }
}

impl Store for EmbeddedStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(definition(table)).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(definition(table)).map_err(backend)?;
        let start = match start_after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let mut out = Vec::new();
        for entry in t.range::<&str>(start..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if Some(key) == start_after {
                continue;
            }
            out.push((key.to_string(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        for op in batch.ops() {
            match op {
                WriteOp::Put { table, key, value } => {
                    let mut t = txn.open_table(definition(*table)).map_err(backend)?;
                    t.insert(key.as_str(), value.as_slice()).map_err(backend)?;
                }
                WriteOp::Delete { table, key } => {
                    let mut t = txn.open_table(definition(*table)).map_err(backend)?;
                    t.remove(key.as_str()).map_err(backend)?;
                }
                WriteOp::RequireAbsent { table, key } => {
                    let t = txn.open_table(definition(*table)).map_err(backend)?;
                    if t.get(key.as_str()).map_err(backend)?.is_some() {
                        // Dropping the transaction without commit aborts it.
                        return Err(StoreError::Conflict {
                            table: table.name(),
                            key: key.clone(),
                        });
                    }
                }
            }
        }
        txn.commit().map_err(backend)
    }

    fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(());
        }
        let io = |e: std::io::Error| StoreError::Backend(format!("writing blob {digest}: {e}"));
        let mut tmp = tempfile_in(&self.blob_dir).map_err(io)?;
        tmp.1.write_all(bytes).map_err(io)?;
        tmp.1.sync_all().map_err(io)?;
        fs::rename(&tmp.0, &path).map_err(io)?;
        sync_dir(&self.blob_dir).map_err(io)?;
        Ok(())
    }

    fn get_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(digest)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Backend(format!("reading blob {digest}: {e}"))),
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
    use crate::store::StoreExt;

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
            keys(store.scan(Table::KEYS, "a/", Some("a/1"), 1).unwrap()),
            ["a/2"]
        );
        assert_eq!(store.scan_json::<u32>(Table::KEYS, "").unwrap().len(), 5);
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
