//! `data://owner/collection/path` URIs and their validation.

use super::DataError;
use crate::registry::validate_name;

/// Prefix of the per-algorithm temporary collection's internal name.
pub const TEMP_PREFIX: &str = ".temp.";

/// A location in a data collection. `path` is empty for the collection itself and
/// never starts or ends with `/` (folders are path prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPath {
    /// Owner of the collection.
    pub owner: String,
    /// Collection name (`.temp.<algorithm>` for an algorithm's temp space).
    pub collection: String,
    /// Path inside the collection.
    pub path: String,
}

impl DataPath {
    /// Builds a path from already-split parts, validating each.
    pub fn new(owner: &str, collection: &str, path: &str) -> Result<Self, DataError> {
        validate_name("owner", owner).map_err(|e| DataError::InvalidUri(e.to_string()))?;
        if !collection.starts_with(TEMP_PREFIX) {
            validate_name("collection name", collection)
                .map_err(|e| DataError::InvalidUri(e.to_string()))?;
        }
        validate_path(path)?;
        Ok(Self {
            owner: owner.to_string(),
            collection: collection.to_string(),
            path: path.to_string(),
        })
    }

    /// Parses `data://owner/collection[/path]`. `.my` is replaced by `my_owner`;
    /// `data://.algo/temp/...` is `temp` (the caller's temp collection) when given.
    pub fn parse(uri: &str, my_owner: &str, temp: Option<&str>) -> Result<Self, DataError> {
        let rest = uri.strip_prefix("data://").ok_or_else(|| {
            DataError::InvalidUri(format!(
                "{uri:?} is not a data URI: write data://owner/collection/path"
            ))
        })?;
        let rest = rest.trim_end_matches('/');
        if let Some(tail) = rest.strip_prefix(".algo/temp") {
            let algorithm = temp.ok_or_else(|| {
                DataError::InvalidUri("data://.algo/temp/ is an algorithm's temporary space; only algorithms can use it".into())
            })?;
            let path = tail.strip_prefix('/').unwrap_or(tail);
            if !tail.is_empty() && !tail.starts_with('/') {
                return Err(DataError::InvalidUri(format!(
                    "{uri:?}: write data://.algo/temp/path"
                )));
            }
            return Self::new(my_owner, &format!("{TEMP_PREFIX}{algorithm}"), path);
        }
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().unwrap_or("");
        let collection = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        if owner.is_empty() || collection.is_empty() {
            return Err(DataError::InvalidUri(format!(
                "{uri:?} names no collection: write data://owner/collection/path"
            )));
        }
        let owner = if owner == ".my" { my_owner } else { owner };
        if collection.starts_with('.') {
            return Err(DataError::InvalidUri(format!(
                "{uri:?}: collection names cannot start with '.'"
            )));
        }
        Self::new(owner, collection, path)
    }

    /// The store key of the collection: `owner/collection`.
    pub fn collection_key(&self) -> String {
        format!("{}/{}", self.owner, self.collection)
    }

    /// The store key of this path: `owner/collection/path`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.owner, self.collection, self.path)
    }

    /// The prefix of everything under this path as a folder.
    pub fn folder_prefix(&self) -> String {
        if self.path.is_empty() {
            format!("{}/{}/", self.owner, self.collection)
        } else {
            format!("{}/{}/{}/", self.owner, self.collection, self.path)
        }
    }

    /// The `data://` URI (temp collections shown as `data://.algo/temp/...`).
    pub fn uri(&self) -> String {
        let base = if self.collection.starts_with(TEMP_PREFIX) {
            "data://.algo/temp".to_string()
        } else {
            format!("data://{}/{}", self.owner, self.collection)
        };
        if self.path.is_empty() {
            base
        } else {
            format!("{base}/{}", self.path)
        }
    }

    /// The path inside the collection from a store key under `collection_key()/`.
    pub fn from_key(key: &str) -> Option<Self> {
        let mut parts = key.splitn(3, '/');
        Some(Self {
            owner: parts.next()?.to_string(),
            collection: parts.next()?.to_string(),
            path: parts.next()?.to_string(),
        })
    }

    /// Whether this is an algorithm's temp collection.
    pub fn is_temp(&self) -> bool {
        self.collection.starts_with(TEMP_PREFIX)
    }
}

/// Checks a path inside a collection: `/`-separated non-empty segments, no `.`
/// or `..`, no control characters, at most 1024 bytes.
pub fn validate_path(path: &str) -> Result<(), DataError> {
    if path.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| DataError::InvalidUri(format!("invalid file path {path:?}: {why}"));
    if path.len() > 1024 {
        return Err(bad("longer than 1024 bytes"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(bad("control characters are not allowed"));
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err(bad("empty segment (leading, trailing or double '/')")),
            "." | ".." => return Err(bad("'.' and '..' segments are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        let p = DataPath::parse("data://demo/uploads/a/b.csv", "me", None).unwrap();
        assert_eq!(
            (p.owner.as_str(), p.collection.as_str(), p.path.as_str()),
            ("demo", "uploads", "a/b.csv")
        );
        assert_eq!(p.key(), "demo/uploads/a/b.csv");
        assert_eq!(p.uri(), "data://demo/uploads/a/b.csv");
        let p = DataPath::parse("data://.my/c/", "me", None).unwrap();
        assert_eq!((p.owner.as_str(), p.path.as_str()), ("me", ""));
        assert_eq!(p.folder_prefix(), "me/c/");
        let t = DataPath::parse("data://.algo/temp/x.bin", "me", Some("algo")).unwrap();
        assert_eq!(t.collection, ".temp.algo");
        assert_eq!(t.uri(), "data://.algo/temp/x.bin");
        assert!(t.is_temp());
        for bad in [
            "http://x/y",
            "data://demo",
            "data://demo/c/../etc",
            "data://demo/c//x",
            "data://demo/.temp.x/y",
            "data://de mo/c/x",
        ] {
            assert!(DataPath::parse(bad, "me", Some("a")).is_err(), "{bad}");
        }
        assert!(
            DataPath::parse("data://.algo/temp/x", "me", None).is_err(),
            "keys have no temp space"
        );
    }
}
