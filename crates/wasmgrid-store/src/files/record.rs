//! How file records (table `files`) are stored.
//!
//! Every file access decodes one, so they use a compact binary layout rather
//! than JSON:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, [`RECORD_V1`] |
//! | 1 | flags: [`FOLDER`], [`HAS_BLOB`], [`HAS_EXPIRES`] |
//! | 8 | size, u64 little-endian |
//! | 8 | expiry (Unix seconds, u64 LE), only with [`HAS_EXPIRES`] |
//! | 4 + n | content type: u32 LE length, UTF-8 |
//! | 4 + n | blob id, only with [`HAS_BLOB`] |
//! | 4 + n | etag |
//! | 4 + n | last modified (RFC 3339) |
//!
//! A record that needs new fields gets a new version byte (and a decoder arm
//! here). Stores of schema version 1 hold JSON records, which start with `{`:
//! they are still read, and become binary when the file is next written.
//! Decoding never panics on malformed input; it reports what was wrong.

use super::FileRecord;
use serde::Deserialize;
use std::borrow::Cow;

/// First byte of a version-1 binary record.
pub const RECORD_V1: u8 = 1;
/// Flag: an empty folder marker.
const FOLDER: u8 = 1;
/// Flag: the content is in a blob (id follows the content type).
const HAS_BLOB: u8 = 2;
/// Flag: the file expires (temp collections).
const HAS_EXPIRES: u8 = 4;

/// A decoded record whose strings borrow from the stored bytes where they can.
#[derive(Debug, Deserialize)]
pub struct FileView<'a> {
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    #[serde(borrow)]
    pub content_type: Cow<'a, str>,
    /// Quoted entity tag.
    #[serde(borrow)]
    pub etag: Cow<'a, str>,
    /// Last write, RFC 3339.
    #[serde(borrow)]
    pub last_modified: Cow<'a, str>,
    /// Blob holding the content of a large file.
    #[serde(default, borrow)]
    pub blob: Option<Cow<'a, str>>,
    /// An empty folder marker.
    #[serde(default)]
    pub folder: bool,
    /// Unix time after which the file is gone.
    #[serde(default)]
    pub expires: Option<u64>,
}

impl FileView<'_> {
    /// The owned record.
    pub fn into_owned(self) -> FileRecord {
        FileRecord {
            size: self.size,
            content_type: self.content_type.into_owned(),
            etag: self.etag.into_owned(),
            last_modified: self.last_modified.into_owned(),
            blob: self.blob.map(Cow::into_owned),
            folder: self.folder,
            expires: self.expires,
        }
    }
}

/// Encodes a record in the current format.
pub fn encode(rec: &FileRecord) -> Vec<u8> {
    let strings = [
        Some(rec.content_type.as_str()),
        rec.blob.as_deref(),
        Some(rec.etag.as_str()),
        Some(rec.last_modified.as_str()),
    ];
    let len = 2 + 8 + 8 + strings.iter().flatten().map(|s| 4 + s.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    let mut flags = 0;
    if rec.folder {
        flags |= FOLDER;
    }
    if rec.blob.is_some() {
        flags |= HAS_BLOB;
    }
    if rec.expires.is_some() {
        flags |= HAS_EXPIRES;
    }
    out.push(RECORD_V1);
    out.push(flags);
    out.extend_from_slice(&rec.size.to_le_bytes());
    if let Some(e) = rec.expires {
        out.extend_from_slice(&e.to_le_bytes());
    }
    for s in strings.into_iter().flatten() {
        // Strings come from requests bounded far below 4 GiB (content types and
        // RFC 3339 times are short; etags and blob ids are generated).
        let n = u32::try_from(s.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&s.as_bytes()[..n as usize]);
    }
    out
}

/// Decodes a record in any format this build knows.
pub fn decode(bytes: &[u8]) -> Result<FileView<'_>, String> {
    match bytes.first() {
        Some(&RECORD_V1) => decode_v1(bytes),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| format!("JSON record: {e}")),
        Some(other) => Err(format!(
            "unknown record format {other:#04x} (written by a newer wasmgrid?)"
        )),
        None => Err("empty record".into()),
    }
}

/// What a read needs from a record: all but the etag and modification time,
/// which a binary record keeps last so that a read can stop before them.
#[derive(Debug, Deserialize)]
pub struct ReadView<'a> {
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    #[serde(borrow)]
    pub content_type: Cow<'a, str>,
    /// Blob holding the content of a large file.
    #[serde(default, borrow)]
    pub blob: Option<Cow<'a, str>>,
    /// An empty folder marker.
    #[serde(default)]
    pub folder: bool,
    /// Unix time after which the file is gone.
    #[serde(default)]
    pub expires: Option<u64>,
}

/// Decodes the part of a record a read needs (see [`ReadView`]).
pub fn decode_for_read(bytes: &[u8]) -> Result<ReadView<'_>, String> {
    match bytes.first() {
        Some(&RECORD_V1) => head_v1(&mut Reader { bytes, at: 1 }),
        _ => decode(bytes).map(|v| ReadView {
            size: v.size,
            content_type: v.content_type,
            blob: v.blob,
            folder: v.folder,
            expires: v.expires,
        }),
    }
}

fn head_v1<'a>(r: &mut Reader<'a>) -> Result<ReadView<'a>, String> {
    let flags = r.take(1)?[0];
    if flags & !(FOLDER | HAS_BLOB | HAS_EXPIRES) != 0 {
        return Err(format!("unknown record flags {flags:#04x}"));
    }
    let size = r.u64()?;
    let expires = if flags & HAS_EXPIRES != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let content_type = r.str()?;
    let blob = if flags & HAS_BLOB != 0 {
        Some(Cow::Borrowed(r.str()?))
    } else {
        None
    };
    Ok(ReadView {
        size,
        content_type: Cow::Borrowed(content_type),
        blob,
        folder: flags & FOLDER != 0,
        expires,
    })
}

fn decode_v1(bytes: &[u8]) -> Result<FileView<'_>, String> {
    let mut r = Reader { bytes, at: 1 };
    let head = head_v1(&mut r)?;
    let etag = r.str()?;
    let last_modified = r.str()?;
    if r.at != bytes.len() {
        return Err(format!(
            "{} unexpected bytes after the record",
            bytes.len() - r.at
        ));
    }
    Ok(FileView {
        size: head.size,
        content_type: head.content_type,
        etag: Cow::Borrowed(etag),
        last_modified: Cow::Borrowed(last_modified),
        blob: head.blob,
        folder: head.folder,
        expires: head.expires,
    })
}

/// A cursor over a binary record.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("record truncated at byte {}", self.at));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let mut n = [0u8; 4];
        n.copy_from_slice(self.take(4)?);
        let at = self.at;
        let s = self.take(u32::from_le_bytes(n) as usize)?;
        std::str::from_utf8(s).map_err(|e| format!("invalid UTF-8 at byte {at}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(blob: bool, folder: bool, expires: bool) -> FileRecord {
        FileRecord {
            size: 1 << 40,
            content_type: "text/plain; charset=\"utf-8\" é".into(),
            etag: "\"0123abcd\"".into(),
            last_modified: "2024-01-02T03:04:05.123Z".into(),
            blob: blob.then(|| format!("data-{}", "ab".repeat(16))),
            folder,
            expires: expires.then_some(1_700_000_000),
        }
    }

    fn same(a: &FileRecord, b: &FileRecord) -> bool {
        serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
    }

    #[test]
    fn binary_records_round_trip_and_json_ones_still_read() {
        for bits in 0..8 {
            let rec = sample(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let bin = encode(&rec);
            assert_eq!(bin[0], RECORD_V1);
            assert!(same(&decode(&bin).unwrap().into_owned(), &rec), "{bits}");
            // What schema-1 stores hold.
            let json = serde_json::to_vec(&rec).unwrap();
            assert!(same(&decode(&json).unwrap().into_owned(), &rec), "{bits}");
            for bytes in [&bin, &json] {
                let v = decode_for_read(bytes).unwrap();
                assert_eq!(
                    (
                        v.size,
                        &*v.content_type,
                        v.blob.as_deref(),
                        v.folder,
                        v.expires
                    ),
                    (
                        rec.size,
                        rec.content_type.as_str(),
                        rec.blob.as_deref(),
                        rec.folder,
                        rec.expires
                    ),
                    "{bits}"
                );
            }
        }
        let empty = FileRecord {
            size: 0,
            content_type: String::new(),
            etag: String::new(),
            last_modified: String::new(),
            blob: None,
            folder: false,
            expires: None,
        };
        assert!(same(&decode(&encode(&empty)).unwrap().into_owned(), &empty));
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = encode(&sample(true, false, true));
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        let mut flags = good.clone();
        flags[1] = 0x80;
        assert!(decode(&flags).is_err());
        let mut huge = good.clone();
        huge[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        let mut utf8 = encode(&sample(false, false, false));
        utf8[14] = 0xff;
        assert!(decode(&utf8).is_err());
        assert!(
            decode(&[2, 0])
                .unwrap_err()
                .contains("unknown record format")
        );
        assert!(decode(b"{\"size\": 1}").is_err());
    }
}
