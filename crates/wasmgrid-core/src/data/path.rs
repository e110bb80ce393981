//! `data://owner/collection/path` URIs and their validation.

use super::DataError;
use crate::names::validate_name;
use std::borrow::Cow;

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
        validate_parts(owner, collection, path)?;
        Ok(Self {
            owner: owner.to_string(),
            collection: collection.to_string(),
            path: path.to_string(),
        })
    }

    /// Parses `data://owner/collection[/path]`. `.my` is replaced by `my_owner`;
    /// `data://.algo/temp/...` is `temp` (the caller's temp collection) when given.
    pub fn parse(uri: &str, my_owner: &str, temp: Option<&str>) -> Result<Self, DataError> {
        DataPathRef::parse(uri, my_owner, temp).map(|r| r.to_owned())
    }

    /// A view of this path (its store key is built once, here; the view owns
    /// it, so it may outlive `self`).
    pub fn view(&self) -> DataPathRef<'static> {
        DataPathRef {
            key: Cow::Owned(self.key()),
            owner_end: self.owner.len(),
            collection_end: self.owner.len() + 1 + self.collection.len(),
        }
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

/// A location in a data collection, borrowed: its store key
/// `owner/collection/path` and where the parts end. Parsing a plain
/// `data://owner/collection/path` URI yields one without allocating (the key is
/// a slice of the URI), which is what a guest's `data.get` does per call; `.my`,
/// `.algo/temp` and collection URIs build the key once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPathRef<'a> {
    /// `owner/collection/path` (`owner/collection/` for the collection itself).
    key: Cow<'a, str>,
    /// Byte index of the `/` after the owner.
    owner_end: usize,
    /// Byte index of the `/` after the collection.
    collection_end: usize,
}

impl<'a> DataPathRef<'a> {
    /// Parses `data://owner/collection[/path]` exactly as [`DataPath::parse`]
    /// does (same checks, same errors), borrowing from `uri` when it can.
    pub fn parse(uri: &'a str, my_owner: &str, temp: Option<&str>) -> Result<Self, DataError> {
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
            return Self::owned(my_owner, &format!("{TEMP_PREFIX}{algorithm}"), path);
        }
        let (owner, after_owner) = split_at_slash(rest);
        let (collection, path) = split_at_slash(after_owner);
        if owner.is_empty() || collection.is_empty() {
            return Err(DataError::InvalidUri(format!(
                "{uri:?} names no collection: write data://owner/collection/path"
            )));
        }
        if collection.starts_with('.') {
            return Err(DataError::InvalidUri(format!(
                "{uri:?}: collection names cannot start with '.'"
            )));
        }
        if owner == ".my" {
            return Self::owned(my_owner, collection, path);
        }
        if path.is_empty() {
            // The key of a collection ends in '/', which the URI lacks.
            return Self::owned(owner, collection, path);
        }
        validate_parts(owner, collection, path)?;
        Ok(Self {
            key: Cow::Borrowed(rest),
            owner_end: owner.len(),
            collection_end: owner.len() + 1 + collection.len(),
        })
    }

    fn owned(owner: &str, collection: &str, path: &str) -> Result<Self, DataError> {
        validate_parts(owner, collection, path)?;
        Ok(Self {
            key: Cow::Owned(format!("{owner}/{collection}/{path}")),
            owner_end: owner.len(),
            collection_end: owner.len() + 1 + collection.len(),
        })
    }

    /// The path of a store key `owner/collection/path`, taking the key (the
    /// inverse of [`key`](Self::key); see also [`DataPath::from_key`]).
    pub fn from_key(key: String) -> Option<DataPathRef<'static>> {
        let owner_end = key.bytes().position(|b| b == b'/')?;
        let collection_end =
            owner_end + 1 + key[owner_end + 1..].bytes().position(|b| b == b'/')?;
        Some(DataPathRef {
            key: Cow::Owned(key),
            owner_end,
            collection_end,
        })
    }

    /// Owner of the collection.
    pub fn owner(&self) -> &str {
        &self.key[..self.owner_end]
    }

    /// Collection name (`.temp.<algorithm>` for an algorithm's temp space).
    pub fn collection(&self) -> &str {
        &self.key[self.owner_end + 1..self.collection_end]
    }

    /// Path inside the collection (empty for the collection itself).
    pub fn path(&self) -> &str {
        &self.key[self.collection_end + 1..]
    }

    /// The store key of this path: `owner/collection/path`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The store key of the collection: `owner/collection`.
    pub fn collection_key(&self) -> &str {
        &self.key[..self.collection_end]
    }

    /// Whether this is an algorithm's temp collection.
    pub fn is_temp(&self) -> bool {
        self.collection().starts_with(TEMP_PREFIX)
    }

    /// The `data://` URI (temp collections shown as `data://.algo/temp/...`).
    pub fn uri(&self) -> String {
        self.to_owned().uri()
    }

    /// The owned path.
    pub fn to_owned(&self) -> DataPath {
        DataPath {
            owner: self.owner().to_string(),
            collection: self.collection().to_string(),
            path: self.path().to_string(),
        }
    }
}

/// `s` split at its first `/` (which is dropped), or all of `s` and "". A byte
/// search: `str::split_once` with a char pattern costs more on this hot path.
fn split_at_slash(s: &str) -> (&str, &str) {
    match s.bytes().position(|b| b == b'/') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// Checks the parts of a location: owner and collection names (temp
/// collections are named by the host) and the path.
fn validate_parts(owner: &str, collection: &str, path: &str) -> Result<(), DataError> {
    validate_name("owner", owner).map_err(|e| DataError::InvalidUri(e.to_string()))?;
    if !collection.starts_with(TEMP_PREFIX) {
        validate_name("collection name", collection)
            .map_err(|e| DataError::InvalidUri(e.to_string()))?;
    }
    validate_path(path)
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
    // Bytewise (this runs on every guest data call): Unicode control characters
    // are U+0000-U+001F, U+007F and U+0080-U+009F, the last encoded as 0xC2
    // followed by 0x80-0x9F (0xC2 is only ever a lead byte).
    let bytes = path.as_bytes();
    let control = bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    });
    if control {
        return Err(bad("control characters are not allowed"));
    }
    for seg in bytes.split(|&b| b == b'/') {
        match seg {
            b"" => return Err(bad("empty segment (leading, trailing or double '/')")),
            b"." | b".." => return Err(bad("'.' and '..' segments are not allowed")),
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

    #[test]
    fn borrowed_view_matches_the_owned_path() {
        let plain = DataPathRef::parse("data://demo/uploads/a/b.csv", "me", None).unwrap();
        assert!(
            matches!(plain.key, Cow::Borrowed(_)),
            "a plain URI is not copied"
        );
        assert_eq!(
            (plain.owner(), plain.collection(), plain.path()),
            ("demo", "uploads", "a/b.csv")
        );
        assert_eq!(plain.collection_key(), "demo/uploads");
        assert_eq!(plain.uri(), "data://demo/uploads/a/b.csv");
        for (uri, temp) in [
            ("data://demo/uploads/a/b.csv", None),
            ("data://demo/uploads/a/b.csv/", None),
            ("data://.my/c/x", None),
            ("data://demo/c", None),
            ("data://demo/c/", None),
            ("data://.algo/temp/x.bin", Some("algo")),
            ("data://.algo/temp", Some("algo")),
        ] {
            let r = DataPathRef::parse(uri, "me", temp).unwrap();
            let owned = r.to_owned();
            assert_eq!(r.key(), owned.key(), "{uri}");
            assert_eq!(r.collection_key(), owned.collection_key(), "{uri}");
            assert_eq!(r.is_temp(), owned.is_temp(), "{uri}");
            assert_eq!(owned.view(), r, "{uri}");
        }
    }

    #[test]
    fn path_checks_agree_with_unicode_control_characters() {
        for c in [
            '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', 'a', '\u{a0}', 'é', '\u{2028}', '€',
        ] {
            let path = format!("dir/a{c}b");
            assert_eq!(validate_path(&path).is_err(), c.is_control(), "{c:?}");
        }
        assert!(validate_path("a/./b").is_err());
        assert!(validate_path("a/../b").is_err());
        assert!(validate_path("a/.../b").is_ok());
        assert!(validate_path("/a").is_err());
        assert!(validate_path(&"x".repeat(1025)).is_err());
    }
}
