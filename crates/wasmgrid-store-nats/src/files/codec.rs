//! The binary forms of the file log entries and the file values in
//! `P_files` (docs/STORAGE.md 4.3), and folder listings in memory. Little-endian,
//! length-prefixed; the first byte is a format version so a later build can
//! tell what an older one wrote.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::cmp::Ordering;

const VERSION: u8 = 1;

/// What a log entry does to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Stores the record and content.
    Put = 1,
    /// Removes the file (a tombstone keeps its log position).
    Delete = 2,
    /// Stores the record and content if the entry directly follows
    /// `expect_prev` among its path's entries (a counter's read-modify-write);
    /// void otherwise.
    PutIfNext = 3,
}

/// One file change in the log (subject `P.log.f.<path>`): the commit point of
/// a write. Everything needed to apply it and to route its event.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub op: Op,
    /// For [`Op::PutIfNext`]: the sequence of the path's entry it follows.
    pub expect_prev: u64,
    /// The logical key (`owner/collection/path`, a marker ending in `/`).
    pub key: String,
    pub record: Bytes,
    pub inline: Bytes,
    pub event: Option<Bytes>,
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn take_bytes(buf: &mut Bytes) -> Result<Bytes, String> {
    if buf.remaining() < 4 {
        return Err("truncated length".into());
    }
    let n = buf.get_u32_le() as usize;
    if buf.remaining() < n {
        return Err(format!("truncated field of {n} bytes"));
    }
    Ok(buf.split_to(n))
}

fn take_u64(buf: &mut Bytes) -> Result<u64, String> {
    if buf.remaining() < 8 {
        return Err("truncated number".into());
    }
    Ok(buf.get_u64_le())
}

fn take_u8(buf: &mut Bytes) -> Result<u8, String> {
    if buf.remaining() < 1 {
        return Err("truncated".into());
    }
    Ok(buf.get_u8())
}

impl Entry {
    pub fn encode(&self) -> Bytes {
        let event_len = self.event.as_ref().map_or(0, |e| e.len());
        let mut out = BytesMut::with_capacity(
            32 + self.key.len() + self.record.len() + self.inline.len() + event_len,
        );
        out.put_u8(VERSION);
        out.put_u8(self.op as u8);
        out.put_u64_le(self.expect_prev);
        put_bytes(&mut out, self.key.as_bytes());
        put_bytes(&mut out, &self.record);
        put_bytes(&mut out, &self.inline);
        match &self.event {
            Some(e) => {
                out.put_u8(1);
                put_bytes(&mut out, e);
            }
            None => out.put_u8(0),
        }
        out.freeze()
    }

    /// Decodes an entry; its byte fields share `payload`'s buffer.
    pub fn decode(mut payload: Bytes) -> Result<Entry, String> {
        let version = take_u8(&mut payload)?;
        if version != VERSION {
            return Err(format!(
                "file log entry format {version} is not one this build reads ({VERSION})"
            ));
        }
        let op = match take_u8(&mut payload)? {
            1 => Op::Put,
            2 => Op::Delete,
            3 => Op::PutIfNext,
            other => return Err(format!("unknown file operation {other}")),
        };
        let expect_prev = take_u64(&mut payload)?;
        let key = String::from_utf8(take_bytes(&mut payload)?.to_vec())
            .map_err(|_| "key is not UTF-8".to_string())?;
        let record = take_bytes(&mut payload)?;
        let inline = take_bytes(&mut payload)?;
        let event = match take_u8(&mut payload)? {
            0 => None,
            _ => Some(take_bytes(&mut payload)?),
        };
        Ok(Entry {
            op,
            expect_prev,
            key,
            record,
            inline,
            event,
        })
    }
}

/// A path's value in `P_files`: the log position it reflects, and the
/// record and content (live) or nothing (a tombstone).
#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub log_seq: u64,
    /// `None`: a tombstone (deleted at `log_seq`).
    pub live: Option<(Bytes, Bytes)>,
}

impl Value {
    pub fn encode(&self) -> Bytes {
        let (record, inline) = self
            .live
            .as_ref()
            .map_or((&[][..], &[][..]), |(r, i)| (&r[..], &i[..]));
        let mut out = BytesMut::with_capacity(18 + record.len() + inline.len());
        out.put_u8(VERSION);
        out.put_u64_le(self.log_seq);
        out.put_u8(u8::from(self.live.is_some()));
        put_bytes(&mut out, record);
        put_bytes(&mut out, inline);
        out.freeze()
    }

    pub fn decode(mut bytes: Bytes) -> Result<Value, String> {
        let version = take_u8(&mut bytes)?;
        if version != VERSION {
            return Err(format!(
                "file record format {version} is not one this build reads ({VERSION})"
            ));
        }
        let log_seq = take_u64(&mut bytes)?;
        let live = take_u8(&mut bytes)? != 0;
        let record = take_bytes(&mut bytes)?;
        let inline = take_bytes(&mut bytes)?;
        Ok(Value {
            log_seq,
            live: live.then_some((record, inline)),
        })
    }
}

/// One entry of a folder's index: a file or a sub-folder of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: String,
    pub folder: bool,
}

impl Member {
    /// Listing order: byte order of `name` for a file and `name/` for a
    /// folder, which is the byte order of the full keys below them.
    pub fn order(&self, other: &Member) -> Ordering {
        let a = self
            .name
            .as_bytes()
            .iter()
            .chain(self.folder.then_some(&b'/'));
        let b = other
            .name
            .as_bytes()
            .iter()
            .chain(other.folder.then_some(&b'/'));
        a.cmp(b)
    }

    /// The part of the full key after the folder's prefix (`name` or `name/`).
    pub fn key_part(&self) -> String {
        if self.folder {
            format!("{}/", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// A folder's listing as read from `P_dirs` (one key per member): whether it
/// has an explicit (empty-folder) marker, and its members in listing order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dir {
    pub marker: bool,
    pub members: Vec<Member>,
}

impl Dir {
    /// Adds `m` in order; false if it was there already.
    pub fn insert(&mut self, m: Member) -> bool {
        match self.members.binary_search_by(|x| x.order(&m)) {
            Ok(_) => false,
            Err(i) => {
                self.members.insert(i, m);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_values_and_dirs_round_trip() {
        let e = Entry {
            op: Op::PutIfNext,
            expect_prev: 7,
            key: "o/c/a b".into(),
            record: Bytes::from_static(b"rec"),
            inline: Bytes::from_static(b"12"),
            event: Some(Bytes::from_static(b"{}")),
        };
        let d = Entry::decode(e.encode()).unwrap();
        assert_eq!(
            (d.op, d.expect_prev, d.key.as_str(), &d.inline[..]),
            (Op::PutIfNext, 7, "o/c/a b", &b"12"[..])
        );
        assert_eq!(d.event.as_deref(), Some(&b"{}"[..]));
        let v = Value {
            log_seq: 9,
            live: None,
        };
        assert!(Value::decode(v.encode()).unwrap().live.is_none());
        let mut dir = Dir::default();
        for (name, folder) in [("b", false), ("a", true), ("a", false), ("a0", false)] {
            assert!(dir.insert(Member {
                name: name.into(),
                folder
            }));
        }
        // `a` < `a/` < `a0` < `b`: the byte order of full keys.
        let order: Vec<String> = dir.members.iter().map(Member::key_part).collect();
        assert_eq!(order, ["a", "a/", "a0", "b"]);
        assert!(Entry::decode(Bytes::from_static(b"\x02")).is_err());
    }
}
