//! The NATS key encoding of docs/STORAGE.md 2.0: a logical key's `/` parts
//! become `.`-separated tokens, each byte outside `[A-Za-z0-9-]` escaped
//! (`.` as `=`, any other byte as `_HH`), so the mapping is injective and
//! every token is a valid, non-empty NATS subject token.

use thiserror::Error;

/// Why a key cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// A logical key with an empty `/` part (or an empty key).
    #[error("key {0:?} has an empty part")]
    EmptyPart(String),
    /// A NATS key that no logical key encodes to.
    #[error("NATS key {0:?} is not an encoded key")]
    NotEncoded(String),
}

fn push_token(out: &mut String, segment: &str) {
    for &b in segment.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(b as char),
            b'.' => out.push('='),
            _ => {
                out.push('_');
                out.push_str(&format!("{b:02X}"));
            }
        }
    }
}

/// Encodes a logical key (`owner/name/1.2.3`) as a NATS key
/// (`owner.name.1=2=3`): one token per `/` part.
pub fn encode_key(key: &str) -> Result<String, KeyError> {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, segment) in key.split('/').enumerate() {
        if segment.is_empty() {
            return Err(KeyError::EmptyPart(key.to_string()));
        }
        if i > 0 {
            out.push('.');
        }
        push_token(&mut out, segment);
    }
    Ok(out)
}

/// Encodes a listing prefix (`""`, or whole parts ending in `/`) as the
/// subject filter below a bucket's subject prefix: `>` or `a.b.>`.
pub fn encode_prefix(prefix: &str) -> Result<String, KeyError> {
    if prefix.is_empty() {
        return Ok(">".to_string());
    }
    let Some(parts) = prefix.strip_suffix('/') else {
        return Err(KeyError::EmptyPart(prefix.to_string()));
    };
    Ok(format!("{}.>", encode_key(parts)?))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a NATS key made by [`encode_key`] back into its logical key.
pub fn decode_key(nats: &str) -> Result<String, KeyError> {
    let bad = || KeyError::NotEncoded(nats.to_string());
    let mut out = Vec::with_capacity(nats.len());
    for (i, token) in nats.split('.').enumerate() {
        if token.is_empty() {
            return Err(bad());
        }
        if i > 0 {
            out.push(b'/');
        }
        let bytes = token.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            match bytes[j] {
                b'=' => out.push(b'.'),
                b'_' => {
                    let hi = bytes
                        .get(j + 1)
                        .copied()
                        .and_then(hex_digit)
                        .ok_or_else(bad)?;
                    let lo = bytes
                        .get(j + 2)
                        .copied()
                        .and_then(hex_digit)
                        .ok_or_else(bad)?;
                    let byte = hi * 16 + lo;
                    // Only bytes `enc` escapes come back from an escape.
                    if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.' || byte == b'/'
                    {
                        return Err(bad());
                    }
                    out.push(byte);
                    j += 2;
                }
                b @ (b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-') => out.push(b),
                _ => return Err(bad()),
            }
            j += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[(&str, &str)] = &[
        ("demo/uploads/a/b.csv", "demo.uploads.a.b=csv"),
        ("demo/uploads/my file.txt", "demo.uploads.my_20file=txt"),
        ("demo/uploads/100%/x.json", "demo.uploads.100_25.x=json"),
        (
            "demo/uploads/résumé.pdf",
            "demo.uploads.r_C3_A9sum_C3_A9=pdf",
        ),
        ("demo/uploads/..env/.x", "demo.uploads.==env.=x"),
        ("demo/uploads/a_b=c", "demo.uploads.a_5Fb_3Dc"),
        ("demo/.temp.algo/out.bin", "demo.=temp=algo.out=bin"),
        ("demo/hello/1.2.3", "demo.hello.1=2=3"),
        ("my_org/c/x", "my_5Forg.c.x"),
    ];

    #[test]
    fn the_table_of_storage_md_round_trips() {
        for (logical, nats) in TABLE {
            assert_eq!(encode_key(logical).unwrap(), *nats, "{logical}");
            assert_eq!(decode_key(nats).unwrap(), *logical, "{nats}");
        }
    }

    #[test]
    fn encoding_is_injective_and_tokens_are_valid() {
        let keys = [
            "a.b", "a=b", "a_b", "a_2Eb", "a/b", "a b", "a%2Eb", "A", "a", "-", "_", "=", ".",
            "..", "x/y.z", "x.y/z", "\u{7f}", "日本",
        ];
        let mut seen = std::collections::HashMap::new();
        for k in keys {
            let e = encode_key(k).unwrap();
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b)),
                "{e}"
            );
            assert!(!e.starts_with('.') && !e.ends_with('.') && !e.contains(".."));
            assert_eq!(decode_key(&e).unwrap(), k);
            assert_eq!(seen.insert(e.clone(), k), None, "{k} and another give {e}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(encode_key("").is_err());
        assert!(encode_key("a//b").is_err());
        assert!(encode_key("a/").is_err());
        for bad in ["", "a..b", ".a", "a_", "a_4", "a_zz", "a_41", "a*b", "a_FF"] {
            assert!(decode_key(bad).is_err(), "{bad}");
        }
        assert_eq!(encode_prefix("").unwrap(), ">");
        assert_eq!(encode_prefix("a b/c/").unwrap(), "a_20b.c.>");
        assert!(encode_prefix("a").is_err());
    }
}
