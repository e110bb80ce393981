//! What a job gives an algorithm and how the results become output files: pure
//! functions, so the rules in the module docs of [`super`] are tested here.

use base64::Engine as _;
use bytes::Bytes;
use wasmgrid_engine::Payload;

/// One input file of an invocation: where it is, its content type and bytes.
#[derive(Debug, Clone)]
pub(crate) struct InputContent {
    /// `data://` URI of the file.
    pub uri: String,
    /// The file's content type.
    pub content_type: String,
    /// The file's bytes.
    pub body: Bytes,
}

/// One output file: content type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputContent {
    /// Media type of the output.
    pub content_type: String,
    /// Bytes to write.
    pub body: Bytes,
}

/// A content type's media type without parameters, lower case.
pub(crate) fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json(content_type: &str) -> bool {
    let e = essence(content_type);
    e == "application/json" || e.ends_with("+json")
}

/// Whether a mini-batch carries this file as text (`content`) rather than
/// base64 (`content_base64`): textual media types whose bytes are UTF-8.
fn is_textual(content_type: &str, body: &[u8]) -> bool {
    let e = essence(content_type);
    let textual = e.starts_with("text/")
        || is_json(&e)
        || e.ends_with("+xml")
        || e == "application/xml"
        || e == "application/x-ndjson";
    textual && std::str::from_utf8(body).is_ok()
}

/// The input payload of one file (mini-batch size 1): the file's bytes with its
/// content type (`application/octet-stream` if it has none).
pub(crate) fn single(content_type: &str, body: Bytes) -> Payload {
    let content_type = if content_type.trim().is_empty() {
        "application/octet-stream".to_string()
    } else {
        content_type.to_string()
    };
    Payload { content_type, body }
}

/// The input payload of a mini-batch: a JSON array with one object per file,
/// `{"uri", "content_type", "content"}` for text or
/// `{"uri", "content_type", "content_base64"}` for anything else.
pub(crate) fn mini_batch(files: &[InputContent]) -> Payload {
    let items: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            if is_textual(&f.content_type, &f.body) {
                serde_json::json!({
                    "uri": f.uri,
                    "content_type": f.content_type,
                    "content": String::from_utf8_lossy(&f.body),
                })
            } else {
                serde_json::json!({
                    "uri": f.uri,
                    "content_type": f.content_type,
                    "content_base64": base64::engine::general_purpose::STANDARD.encode(&f.body),
                })
            }
        })
        .collect();
    Payload {
        content_type: "application/json".into(),
        body: serde_json::to_vec(&items).unwrap_or_default().into(),
    }
}

/// Splits a mini-batch result into one output per input file: the result must
/// be a JSON array with exactly `n` elements, in input order; a string element
/// is written as `text/plain`, any other value as `application/json`.
pub(crate) fn split_mini_batch(output: &Payload, n: usize) -> Result<Vec<OutputContent>, String> {
    if !is_json(&output.content_type) {
        return Err(format!(
            "a mini-batch result must be a JSON array with one element per input file, but the algorithm returned {}",
            if output.content_type.is_empty() {
                "no content type"
            } else {
                output.content_type.as_str()
            }
        ));
    }
    let items: Vec<serde_json::Value> = serde_json::from_slice(&output.body).map_err(|e| {
        format!("a mini-batch result must be a JSON array with one element per input file: {e}")
    })?;
    if items.len() != n {
        return Err(format!(
            "a mini-batch result must have one element per input file: {n} files in, {} elements out",
            items.len()
        ));
    }
    Ok(items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(s) => OutputContent {
                content_type: "text/plain".into(),
                body: Bytes::from(s.into_bytes()),
            },
            other => OutputContent {
                content_type: "application/json".into(),
                body: serde_json::to_vec(&other).unwrap_or_default().into(),
            },
        })
        .collect())
}

/// The file extension added to an output whose content type differs from its
/// input's.
fn extension_for(content_type: &str) -> &'static str {
    let e = essence(content_type);
    if is_json(&e) {
        return "json";
    }
    match e.as_str() {
        "text/plain" => "txt",
        "text/csv" => "csv",
        "text/html" => "html",
        "text/markdown" => "md",
        "application/xml" | "text/xml" => "xml",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "application/octet-stream" => "bin",
        _ => "out",
    }
}

/// The output file's path relative to the output folder: the input's relative
/// path, plus an extension for the output's media type when it differs from
/// the input's (`a.csv` scored into CSV stays `a.csv`; `photo.png` classified
/// into JSON becomes `photo.png.json`).
pub(crate) fn output_name(relative: &str, input_type: &str, output_type: &str) -> String {
    if essence(input_type) == essence(output_type) {
        relative.to_string()
    } else {
        format!("{relative}.{}", extension_for(output_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(uri: &str, ct: &str, body: &'static [u8]) -> InputContent {
        InputContent {
            uri: uri.into(),
            content_type: ct.into(),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn output_names_keep_the_path_and_add_an_extension_for_a_new_type() {
        assert_eq!(
            output_name("a/b.csv", "text/csv; charset=utf-8", "text/csv"),
            "a/b.csv"
        );
        assert_eq!(
            output_name("photo.png", "image/png", "application/json"),
            "photo.png.json"
        );
        assert_eq!(
            output_name("n.txt", "text/plain", "application/octet-stream"),
            "n.txt.bin"
        );
        assert_eq!(
            output_name(
                "x",
                "application/octet-stream",
                "application/cloudevents+json"
            ),
            "x.json"
        );
        assert_eq!(output_name("x", "text/plain", "model/gltf"), "x.out");
    }

    #[test]
    fn single_files_keep_their_content_type() {
        let f = file("data://o/c/a.csv", "text/csv", b"a,b\n");
        let p = single(&f.content_type, f.body);
        assert_eq!(p.content_type, "text/csv");
        assert_eq!(&p.body[..], b"a,b\n");
        assert_eq!(
            single("", Bytes::from_static(b"\x00")).content_type,
            "application/octet-stream"
        );
    }

    #[test]
    fn mini_batches_carry_text_as_text_and_bytes_as_base64() {
        let p = mini_batch(&[
            file("data://o/c/a.csv", "text/csv", b"a,b\n1,2\n"),
            file("data://o/c/b.bin", "application/octet-stream", b"\x00\xff"),
            file("data://o/c/c.txt", "text/plain", b"\xff not utf-8"),
        ]);
        assert_eq!(p.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"uri": "data://o/c/a.csv", "content_type": "text/csv", "content": "a,b\n1,2\n"},
                {"uri": "data://o/c/b.bin", "content_type": "application/octet-stream", "content_base64": "AP8="},
                {"uri": "data://o/c/c.txt", "content_type": "text/plain", "content_base64": "/yBub3QgdXRmLTg="},
            ])
        );
    }

    #[test]
    fn mini_batch_results_split_into_one_output_per_file() {
        let out = |ct: &str, body: &'static [u8]| Payload {
            content_type: ct.into(),
            body: Bytes::from_static(body),
        };
        let parts = split_mini_batch(&out("application/json", br#"["x", {"a": 1}]"#), 2).unwrap();
        assert_eq!(parts[0].content_type, "text/plain");
        assert_eq!(&parts[0].body[..], b"x");
        assert_eq!(parts[1].content_type, "application/json");
        assert_eq!(&parts[1].body[..], br#"{"a":1}"#);
        assert!(
            split_mini_batch(&out("application/json", b"[1]"), 2)
                .unwrap_err()
                .contains("2 files in, 1 elements out")
        );
        assert!(split_mini_batch(&out("text/plain", b"[1]"), 1).is_err());
        assert!(split_mini_batch(&out("application/json", b"{}"), 1).is_err());
    }
}
