//! Hosted data collections: read and write files addressed as
//! `data://owner/collection/path` (the WIT interface `wasmgrid:algorithm/data`).
//!
//! Two special owners: `.my` is the algorithm's own owner
//! (`data://.my/reports/2024.csv`), and `data://.algo/temp/...` is this
//! algorithm's private scratch space, whose files expire after a TTL (24 hours by
//! default).
//!
//! Every access is checked against the collection's ACL and the grants the
//! algorithm was deployed with (`data://owner/collection:read`, `:write`);
//! without permission a call fails with [`DataError::AccessDenied`], never with
//! the data. A [`DataError`] converts into an [`Error`], so `?`
//! works inside an algorithm: a missing file, a denied access, a bad URI or a file
//! that is too large is a permanent failure, an unavailable store a transient one
//! (event deliveries retry it).
//!
//! # Example
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use wasmgrid_sdk::serde_json::json;
//! use wasmgrid_sdk::{Error, Input, Output, data};
//!
//! #[derive(Deserialize)]
//! struct Request {
//!     /// e.g. `data://.my/in/numbers.json`
//!     source: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Summary {
//!     count: usize,
//!     sum: f64,
//! }
//!
//! fn apply(input: Input) -> Result<Output, Error> {
//!     let request: Request = input.json()?;
//!     let numbers: Vec<f64> = data::get_json(&request.source)?;
//!     let summary = Summary {
//!         count: numbers.len(),
//!         sum: numbers.iter().sum(),
//!     };
//!     data::put_json("data://.my/out/summary.json", &summary)?;
//!     data::put_text("data://.algo/temp/last-run.txt", "ok")?;
//!
//!     // Every file of a collection, however many pages the listing takes.
//!     let mut bytes = 0;
//!     for file in data::list("data://.my/in/") {
//!         bytes += file?.size;
//!     }
//!     Output::json(&json!({ "inputs_bytes": bytes }))
//! }
//!
//! wasmgrid_sdk::algorithm!(apply);
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::wasmgrid::algorithm::data as wit;
use crate::__private::bindings::wasmgrid::algorithm::types::PayloadParam;
use crate::{Error, media_type};

/// The most files [`list_page`] returns per page, and the page size [`list`]
/// uses.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Why a data operation failed (the WIT variant
/// `wasmgrid:algorithm/data.data-error`). Each case carries the host's message.
///
/// Converts into an [`Error`] with `?`: see the [`From`] impl.
///
/// ```no_run
/// use wasmgrid_sdk::data::{self, DataError};
///
/// // A missing file is not a failure here: fall back to a default. Other
/// // errors go to the caller (`into` makes them a `wasmgrid_sdk::Error`).
/// let threshold: f64 = match data::get("data://.my/config/threshold.txt") {
///     Ok(bytes) => String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0.5),
///     Err(DataError::NotFound(_)) => 0.5,
///     Err(e) => return Err(e.into()),
/// };
/// # Ok::<(), wasmgrid_sdk::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// No file (or collection) at that URI.
    NotFound(String),
    /// The algorithm has no grant or ACL permission for this access.
    AccessDenied(String),
    /// The URI is not `data://owner/collection/path` (or has an empty or invalid
    /// segment).
    InvalidUri(String),
    /// The file is larger than the algorithm may hold in memory (its memory cap),
    /// or a put is above the size limit.
    TooLarge(String),
    /// The store failed; the operation may succeed if retried.
    StoreUnavailable(String),
}

impl DataError {
    /// The host's message.
    pub fn message(&self) -> &str {
        match self {
            DataError::NotFound(m)
            | DataError::AccessDenied(m)
            | DataError::InvalidUri(m)
            | DataError::TooLarge(m)
            | DataError::StoreUnavailable(m) => m,
        }
    }

    /// The kind in words: `"not found"`, `"access denied"`, `"invalid uri"`,
    /// `"too large"` or `"store unavailable"`.
    pub fn kind_str(&self) -> &'static str {
        match self {
            DataError::NotFound(_) => "not found",
            DataError::AccessDenied(_) => "access denied",
            DataError::InvalidUri(_) => "invalid uri",
            DataError::TooLarge(_) => "too large",
            DataError::StoreUnavailable(_) => "store unavailable",
        }
    }

    /// Whether this is [`DataError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, DataError::NotFound(_))
    }

    /// Whether retrying may help (only [`DataError::StoreUnavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, DataError::StoreUnavailable(_))
    }
}

/// `<kind>: <message>`, e.g. `access denied: no read grant for data://ada/private`.
impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind_str(), self.message())
    }
}

impl std::error::Error for DataError {}

/// [`DataError::StoreUnavailable`] becomes an [`Error::transient`] (event
/// deliveries retry it); every other case an [`Error::permanent`]. The message
/// is `data: <kind>: <host message>`, e.g. `data: access denied: ...`.
impl From<DataError> for Error {
    fn from(e: DataError) -> Error {
        let message = format!("data: {e}");
        if e.is_transient() {
            Error::transient(message)
        } else {
            Error::permanent(message)
        }
    }
}

impl From<wit::DataError> for DataError {
    fn from(e: wit::DataError) -> DataError {
        match e {
            wit::DataError::NotFound(m) => DataError::NotFound(m),
            wit::DataError::AccessDenied(m) => DataError::AccessDenied(m),
            wit::DataError::InvalidUri(m) => DataError::InvalidUri(m),
            wit::DataError::TooLarge(m) => DataError::TooLarge(m),
            wit::DataError::StoreUnavailable(m) => DataError::StoreUnavailable(m),
        }
    }
}

/// A whole file as [`get_payload`] returns it: the bytes and the media type they
/// were written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The media type given when the file was written, e.g. `text/plain`.
    pub content_type: String,
    /// The file's bytes.
    pub body: Vec<u8>,
}

impl Content {
    /// Whether the content type says JSON (`application/json` or a `+json`
    /// media type, ignoring parameters and case).
    pub fn is_json(&self) -> bool {
        media_type::is_json(&self.content_type)
    }
}

/// A file in a listing (the WIT record `data.file-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's full URI, `data://owner/collection/path`.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type given when the file was written.
    pub content_type: String,
    /// Last write time, RFC 3339 (UTC).
    pub last_modified: String,
    /// Entity tag of the content (changes whenever the content changes).
    pub etag: String,
}

impl From<wit::FileInfo> for FileInfo {
    fn from(f: wit::FileInfo) -> FileInfo {
        FileInfo {
            uri: f.uri,
            size: f.size,
            content_type: f.content_type,
            last_modified: f.last_modified,
            etag: f.etag,
        }
    }
}

/// One page of a listing, as [`list_page`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Files in path order.
    pub files: Vec<FileInfo>,
    /// Pass this to [`list_page`] to get the next page; `None` on the last page.
    pub marker: Option<String>,
}

/// Reads a whole file's bytes.
///
/// ```no_run
/// let bytes = wasmgrid_sdk::data::get("data://.my/images/cat.png")?;
/// # Ok::<(), wasmgrid_sdk::data::DataError>(())
/// ```
///
/// # Errors
///
/// [`DataError::NotFound`] if there is no such file; any other [`DataError`]
/// the host reports (access, URI, size, store).
pub fn get(uri: &str) -> Result<Vec<u8>, DataError> {
    Ok(get_payload(uri)?.body)
}

/// Reads a whole file: its bytes and the media type it was written with.
///
/// ```no_run
/// use wasmgrid_sdk::data;
///
/// let file = data::get_payload("data://.my/in/report")?;
/// if file.is_json() {
///     let value: wasmgrid_sdk::serde_json::Value =
///         wasmgrid_sdk::serde_json::from_slice(&file.body).unwrap_or_default();
///     println!("{value}");
/// }
/// # Ok::<(), data::DataError>(())
/// ```
///
/// # Errors
///
/// As for [`get`].
pub fn get_payload(uri: &str) -> Result<Content, DataError> {
    let payload = wit::get(uri)?;
    Ok(Content {
        content_type: payload.content_type,
        body: payload.body,
    })
}

/// Reads a whole file as UTF-8 text (whatever content type it was written
/// with).
///
/// ```no_run
/// let greeting = wasmgrid_sdk::data::get_text("data://.my/config/greeting.txt")?;
/// # Ok::<(), wasmgrid_sdk::Error>(())
/// ```
///
/// # Errors
///
/// The [`DataError`] of the read converted to an [`Error`] (permanent, or
/// transient for an unavailable store), or an [`Error::permanent`] if the file
/// is not valid UTF-8. To tell a missing file apart, use [`get`] (whose
/// [`DataError`] can be matched) or [`exists`].
pub fn get_text(uri: &str) -> Result<String, Error> {
    String::from_utf8(get(uri)?)
        .map_err(|e| Error::permanent(format!("data: {uri} is not valid UTF-8 text: {e}")))
}

/// Reads a whole file as JSON into `T` (whatever content type it was written
/// with).
///
/// ```no_run
/// use std::collections::HashMap;
///
/// let prices: HashMap<String, f64> =
///     wasmgrid_sdk::data::get_json("data://.my/config/prices.json")?;
/// # Ok::<(), wasmgrid_sdk::Error>(())
/// ```
///
/// # Errors
///
/// The [`DataError`] of the read converted to an [`Error`], or an
/// [`Error::permanent`] naming the problem serde reported if the file is not the
/// expected JSON.
pub fn get_json<T: DeserializeOwned>(uri: &str) -> Result<T, Error> {
    serde_json::from_slice(&get(uri)?)
        .map_err(|e| Error::permanent(format!("data: {uri} is not the expected JSON: {e}")))
}

/// Writes a whole file (creating or replacing it) as
/// `application/octet-stream`, atomically and durably. Emits a
/// `wasmgrid.data.FileCreated` event on the `system.data` topic.
///
/// ```no_run
/// wasmgrid_sdk::data::put("data://.algo/temp/blob.bin", [0u8, 1, 2, 3])?;
/// # Ok::<(), wasmgrid_sdk::data::DataError>(())
/// ```
///
/// # Errors
///
/// Any [`DataError`] the host reports; writing needs a `:write` grant on a
/// collection of the algorithm's own owner (or the `.algo/temp` scratch space).
pub fn put(uri: &str, bytes: impl AsRef<[u8]>) -> Result<(), DataError> {
    put_with_content_type(uri, media_type::OCTET_STREAM, bytes)
}

/// Writes a whole file as UTF-8 text (`text/plain`); see [`put`].
///
/// ```no_run
/// wasmgrid_sdk::data::put_text("data://.my/messages/hello.txt", "Hello!")?;
/// # Ok::<(), wasmgrid_sdk::data::DataError>(())
/// ```
///
/// # Errors
///
/// As for [`put`].
pub fn put_text(uri: &str, text: &str) -> Result<(), DataError> {
    put_with_content_type(uri, media_type::TEXT, text)
}

/// Writes `value` serialized as JSON (`application/json`); see [`put`].
///
/// ```no_run
/// let scores = wasmgrid_sdk::serde_json::json!({ "ada": 3, "grace": 5 });
/// wasmgrid_sdk::data::put_json("data://.my/out/scores.json", &scores)?;
/// # Ok::<(), wasmgrid_sdk::Error>(())
/// ```
///
/// # Errors
///
/// An [`Error::permanent`] if `value` cannot be serialized (e.g. a map with
/// non-string keys), or the [`DataError`] of the write converted to an
/// [`Error`].
pub fn put_json<T: Serialize + ?Sized>(uri: &str, value: &T) -> Result<(), Error> {
    let body = serde_json::to_vec(value)
        .map_err(|e| Error::permanent(format!("cannot serialize {uri} as JSON: {e}")))?;
    Ok(put_with_content_type(uri, media_type::JSON, body)?)
}

/// Writes a whole file with an explicit media type, e.g. `text/csv`; see
/// [`put`].
///
/// ```no_run
/// wasmgrid_sdk::data::put_with_content_type("data://.my/out/table.csv", "text/csv", "a,b\n1,2\n")?;
/// # Ok::<(), wasmgrid_sdk::data::DataError>(())
/// ```
///
/// # Errors
///
/// As for [`put`].
pub fn put_with_content_type(
    uri: &str,
    content_type: &str,
    bytes: impl AsRef<[u8]>,
) -> Result<(), DataError> {
    // The bytes are passed to the host in place, without a copy.
    let content = PayloadParam {
        content_type,
        body: bytes.as_ref(),
    };
    Ok(wit::put(uri, content)?)
}

/// Deletes a file. Returns whether it existed. Emits a
/// `wasmgrid.data.FileDeleted` event when it did.
///
/// ```no_run
/// if wasmgrid_sdk::data::delete("data://.algo/temp/scratch.bin")? {
///     println!("cleaned up");
/// }
/// # Ok::<(), wasmgrid_sdk::data::DataError>(())
/// ```
///
/// # Errors
///
/// Any [`DataError`] the host reports (a missing file is `Ok(false)`, not an
/// error).
pub fn delete(uri: &str) -> Result<bool, DataError> {
    Ok(wit::delete(uri)?)
}

/// Whether a file exists (and the algorithm may read it).
///
/// ```no_run
/// use wasmgrid_sdk::data;
///
/// if !data::exists("data://.my/out/done.flag")? {
///     data::put_text("data://.my/out/done.flag", "")?;
/// }
/// # Ok::<(), data::DataError>(())
/// ```
///
/// # Errors
///
/// Any [`DataError`] the host reports.
pub fn exists(uri: &str) -> Result<bool, DataError> {
    Ok(wit::exists(uri)?)
}

/// One page of the files whose URI starts with `prefix` (a collection, a
/// folder such as `data://o/c/in/`, or any path prefix), recursively, in path
/// order, at most `limit` files (clamped to 1 ..= [`MAX_PAGE_SIZE`]). Start with
/// `marker = None`, then pass the previous page's [`Page::marker`] until it is
/// `None`. [`list`] does this for you.
///
/// ```no_run
/// use wasmgrid_sdk::data;
///
/// let first = data::list_page("data://.my/photos/", None, 10)?;
/// for file in &first.files {
///     println!("{} ({} bytes)", file.uri, file.size);
/// }
/// if let Some(marker) = first.marker.as_deref() {
///     let second = data::list_page("data://.my/photos/", Some(marker), 10)?;
/// }
/// # Ok::<(), data::DataError>(())
/// ```
///
/// # Errors
///
/// Any [`DataError`] the host reports.
pub fn list_page(prefix: &str, marker: Option<&str>, limit: u32) -> Result<Page, DataError> {
    let page = wit::list(prefix, marker, limit.clamp(1, MAX_PAGE_SIZE))?;
    Ok(Page {
        files: page.files.into_iter().map(FileInfo::from).collect(),
        marker: page.marker,
    })
}

/// All the files whose URI starts with `prefix`, in path order, fetched a page
/// of [`MAX_PAGE_SIZE`] at a time as the iterator advances.
///
/// A failed page fetch is yielded as one `Err` item, after which the iterator
/// ends.
///
/// ```no_run
/// use wasmgrid_sdk::data;
///
/// let mut total = 0;
/// for file in data::list("data://.my/logs/2024-") {
///     let file = file?;
///     total += file.size;
/// }
/// // Or collect them all, stopping at the first error:
/// let uris = data::list("data://.my/logs/")
///     .map(|f| f.map(|f| f.uri))
///     .collect::<Result<Vec<_>, _>>()?;
/// # Ok::<(), data::DataError>(())
/// ```
pub fn list(prefix: &str) -> List {
    List::new(prefix, list_page)
}

/// The iterator returned by [`list`].
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct List {
    prefix: String,
    /// The marker for the next fetch; `None` with `done == false` means the
    /// first page has not been fetched yet.
    marker: Option<String>,
    files: std::vec::IntoIter<FileInfo>,
    done: bool,
    fetch: fn(&str, Option<&str>, u32) -> Result<Page, DataError>,
}

impl List {
    fn new(prefix: &str, fetch: fn(&str, Option<&str>, u32) -> Result<Page, DataError>) -> List {
        List {
            prefix: prefix.to_owned(),
            marker: None,
            files: Vec::new().into_iter(),
            done: false,
            fetch,
        }
    }
}

impl Iterator for List {
    type Item = Result<FileInfo, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(file) = self.files.next() {
                return Some(Ok(file));
            }
            if self.done {
                return None;
            }
            match (self.fetch)(&self.prefix, self.marker.as_deref(), MAX_PAGE_SIZE) {
                Ok(page) => {
                    self.files = page.files.into_iter();
                    self.done = page.marker.is_none();
                    self.marker = page.marker;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for List {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn file(uri: &str) -> FileInfo {
        FileInfo {
            uri: uri.into(),
            size: 1,
            content_type: "text/plain".into(),
            last_modified: "2024-01-01T00:00:00Z".into(),
            etag: "e".into(),
        }
    }

    #[test]
    fn errors_convert() {
        let cases = [
            (
                DataError::NotFound("no file data://a/b/c".into()),
                ErrorKind::Permanent,
                "data: not found: no file data://a/b/c",
            ),
            (
                DataError::AccessDenied("no grant".into()),
                ErrorKind::Permanent,
                "data: access denied: no grant",
            ),
            (
                DataError::InvalidUri("x".into()),
                ErrorKind::Permanent,
                "data: invalid uri: x",
            ),
            (
                DataError::TooLarge("5 GB".into()),
                ErrorKind::Permanent,
                "data: too large: 5 GB",
            ),
            (
                DataError::StoreUnavailable("disk".into()),
                ErrorKind::Transient,
                "data: store unavailable: disk",
            ),
        ];
        for (data_error, kind, message) in cases {
            assert_eq!(
                data_error.to_string(),
                message.strip_prefix("data: ").unwrap()
            );
            let error: Error = data_error.into();
            assert_eq!((error.kind(), error.message()), (kind, message));
        }
        assert!(DataError::NotFound(String::new()).is_not_found());
        assert!(!DataError::TooLarge(String::new()).is_not_found());
        assert_eq!(DataError::InvalidUri("m".into()).message(), "m");

        // `?` inside a function returning the SDK error.
        fn read() -> Result<(), Error> {
            Err(DataError::AccessDenied("nope".into()))?;
            Ok(())
        }
        assert_eq!(read().unwrap_err().message(), "data: access denied: nope");
    }

    #[test]
    fn wit_errors_map() {
        let e: DataError = wit::DataError::StoreUnavailable("s".into()).into();
        assert_eq!(e, DataError::StoreUnavailable("s".into()));
        let e: DataError = wit::DataError::InvalidUri("u".into()).into();
        assert_eq!(e, DataError::InvalidUri("u".into()));
    }

    /// Three pages: a, b | (empty) | c, then the end.
    fn three_pages(prefix: &str, marker: Option<&str>, limit: u32) -> Result<Page, DataError> {
        assert_eq!((prefix, limit), ("data://o/c/", MAX_PAGE_SIZE));
        let (files, marker) = match marker {
            None => (vec![file("a"), file("b")], Some("m1")),
            Some("m1") => (vec![], Some("m2")),
            Some("m2") => (vec![file("c")], None),
            Some(other) => panic!("unexpected marker {other}"),
        };
        Ok(Page {
            files,
            marker: marker.map(str::to_owned),
        })
    }

    #[test]
    fn list_pages_through() {
        let uris: Vec<String> = List::new("data://o/c/", three_pages)
            .map(|f| f.unwrap().uri)
            .collect();
        assert_eq!(uris, ["a", "b", "c"]);
    }

    fn fails_second(_: &str, marker: Option<&str>, _: u32) -> Result<Page, DataError> {
        match marker {
            None => Ok(Page {
                files: vec![file("a")],
                marker: Some("m".into()),
            }),
            Some(_) => Err(DataError::StoreUnavailable("down".into())),
        }
    }

    #[test]
    fn list_stops_after_error() {
        let mut list = List::new("p", fails_second);
        assert_eq!(list.next(), Some(Ok(file("a"))));
        assert_eq!(
            list.next(),
            Some(Err(DataError::StoreUnavailable("down".into())))
        );
        assert_eq!(list.next(), None);
        assert_eq!(list.next(), None);
    }

    #[test]
    fn empty_listing() {
        fn empty(_: &str, _: Option<&str>, _: u32) -> Result<Page, DataError> {
            Ok(Page {
                files: vec![],
                marker: None,
            })
        }
        assert_eq!(List::new("p", empty).count(), 0);
    }
}
