//! Reading published events: CloudEvents 1.0 in structured, batch and binary
//! mode, and Azure Event Grid's own schema, all turned into one canonical form,
//! a structured-mode CloudEvent held as a JSON object (what filters match on,
//! what the queue stores and what webhooks receive).
//!
//! Why not `cloudevents-sdk`'s `Event`: the filter engine works on
//! `serde_json::Value`, and the SDK's type would add a conversion to and from
//! its own data representation on every event of the hot path, while the rules
//! checked here (the four required attributes, attribute types, extension
//! names, `data` xor `data_base64`) are few. The rules follow the CloudEvents
//! 1.0.2 core spec, its JSON format and its HTTP protocol binding.

use crate::{HOPS_ATTRIBUTE, TriggerEvent, parse_hops};
use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Largest request body (and so largest single event) accepted by ingress,
/// as in Event Grid: 1 MiB.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Context attributes with a fixed meaning (not extensions).
const CORE_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// Why a published event was refused (HTTP 400). The message names the event
/// (by position in the request) and the attribute, and says what is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EventFormatError(pub String);

fn bad(at: &str, msg: impl std::fmt::Display) -> EventFormatError {
    EventFormatError(format!("{at}: {msg}"))
}

/// How a request carries its events, decided by `Content-Type` and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/cloudevents+json`: one structured event.
    Structured,
    /// `application/cloudevents-batch+json`: a JSON array of structured events.
    Batch,
    /// `ce-*` headers carry the attributes, the body is the data.
    Binary,
    /// `application/json` (or no type): an array (or one object) of CloudEvents
    /// or of Event Grid schema events, told apart by their fields.
    Json,
}

/// Picks the encoding from the media type (parameters such as `charset`
/// ignored) and whether a `ce-specversion` header is present.
pub fn encoding(content_type: Option<&str>, has_ce_headers: bool) -> Encoding {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        "application/cloudevents+json" => Encoding::Structured,
        "application/cloudevents-batch+json" => Encoding::Batch,
        _ if has_ce_headers => Encoding::Binary,
        _ => Encoding::Json,
    }
}

/// Parses a structured-mode body (`Structured`, `Batch` or `Json`) into
/// canonical events. `topic` fills `source` of Event Grid schema events that
/// carry no `topic` of their own.
pub fn parse_body(
    encoding: Encoding,
    body: &[u8],
    topic: &str,
) -> Result<Vec<Value>, EventFormatError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        EventFormatError(format!(
            "the request body is not valid JSON ({e}); send a CloudEvent, an array of CloudEvents, or an Event Grid event array"
        ))
    })?;
    match encoding {
        Encoding::Structured => match value {
            Value::Object(_) => Ok(vec![canonical(value, "event")?]),
            _ => Err(EventFormatError(
                "application/cloudevents+json needs one JSON object; send arrays as application/cloudevents-batch+json".into(),
            )),
        },
        Encoding::Batch => match value {
            Value::Array(items) => each(items, canonical),
            _ => Err(EventFormatError(
                "application/cloudevents-batch+json needs a JSON array of CloudEvents".into(),
            )),
        },
        Encoding::Json | Encoding::Binary => {
            let items = match value {
                Value::Array(items) => items,
                obj @ Value::Object(_) => vec![obj],
                _ => {
                    return Err(EventFormatError(
                        "the body must be a CloudEvent object or an array of CloudEvents or Event Grid events".into(),
                    ));
                }
            };
            each(items, |v, at| {
                if v.get("specversion").is_some() {
                    canonical(v, at)
                } else if v.get("eventType").is_some() {
                    from_event_grid(v, at, topic)
                } else {
                    Err(bad(
                        at,
                        "is neither a CloudEvent (no `specversion`) nor an Event Grid event (no `eventType`)",
                    ))
                }
            })
        }
    }
}

fn each(
    items: Vec<Value>,
    f: impl Fn(Value, &str) -> Result<Value, EventFormatError>,
) -> Result<Vec<Value>, EventFormatError> {
    if items.is_empty() {
        return Err(EventFormatError(
            "the request holds no events: send at least one".into(),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| f(v, &format!("event [{i}]")))
        .collect()
}

/// Validates a structured-mode CloudEvent and returns it in canonical form
/// (`null` attributes dropped).
pub fn canonical(value: Value, at: &str) -> Result<Value, EventFormatError> {
    let Value::Object(mut map) = value else {
        return Err(bad(at, "must be a JSON object"));
    };
    map.retain(|_, v| !v.is_null());
    match map.get("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::String(v)) => {
            return Err(bad(
                at,
                format!("specversion {v:?} is not supported; use \"1.0\""),
            ));
        }
        Some(_) => return Err(bad(at, "specversion must be the string \"1.0\"")),
        None => return Err(bad(at, "the required attribute `specversion` is missing")),
    }
    for name in ["id", "source", "type"] {
        match map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => {
                return Err(bad(at, format!("attribute `{name}` must not be empty")));
            }
            Some(_) => return Err(bad(at, format!("attribute `{name}` must be a string"))),
            None => {
                return Err(bad(
                    at,
                    format!("the required attribute `{name}` is missing"),
                ));
            }
        }
    }
    for name in ["subject", "datacontenttype", "dataschema"] {
        if let Some(v) = map.get(name)
            && !v.is_string()
        {
            return Err(bad(at, format!("attribute `{name}` must be a string")));
        }
    }
    if let Some(v) = map.get("time") {
        match v.as_str() {
            Some(t) if is_rfc3339(t) => {}
            _ => {
                return Err(bad(
                    at,
                    "attribute `time` must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z",
                ));
            }
        }
    }
    if map.contains_key("data") && map.contains_key("data_base64") {
        return Err(bad(
            at,
            "has both `data` and `data_base64`; send one of them",
        ));
    }
    if let Some(v) = map.get("data_base64") {
        let ok = v
            .as_str()
            .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
        if !ok {
            return Err(bad(at, "`data_base64` must be a base64 string"));
        }
    }
    for (name, v) in &map {
        if CORE_ATTRIBUTES.contains(&name.as_str()) {
            continue;
        }
        if !is_extension_name(name) {
            return Err(bad(
                at,
                format!(
                    "extension attribute name {name:?} is invalid: CloudEvents attribute names are 1 to 20 lowercase letters or digits"
                ),
            ));
        }
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(bad(
                at,
                format!("extension attribute `{name}` must be a string, number or boolean"),
            ));
        }
    }
    // Kept when valid, so a loop through an outside system (a webhook that
    // publishes back) is still counted; refused when it is not a count.
    if let Some(v) = map.get(HOPS_ATTRIBUTE)
        && hops_value(v).is_none()
    {
        return Err(bad(
            at,
            format!(
                "extension attribute `{HOPS_ATTRIBUTE}` (wasmgrid's event-loop hop count) must be a whole number from 0 to {}",
                u32::MAX
            ),
        ));
    }
    Ok(Value::Object(map))
}

/// Converts an Event Grid schema event into a CloudEvent: `eventType` → `type`,
/// `eventTime` → `time`, `topic` (or `/topics/{topic}`) → `source`,
/// `dataVersion` → extension `dataversion`, `data` stays JSON.
fn from_event_grid(value: Value, at: &str, topic: &str) -> Result<Value, EventFormatError> {
    let Value::Object(map) = value else {
        return Err(bad(at, "must be a JSON object"));
    };
    let text = |name: &str, required: bool| -> Result<Option<String>, EventFormatError> {
        match map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(_)) => Err(bad(at, format!("`{name}` must not be empty"))),
            Some(_) => Err(bad(at, format!("`{name}` must be a string"))),
            None => Err(bad(
                at,
                format!("the required Event Grid field `{name}` is missing"),
            )),
        }
    };
    let mut out = Map::new();
    out.insert("specversion".into(), "1.0".into());
    out.insert("id".into(), text("id", true)?.into());
    let source = text("topic", false)?.unwrap_or_else(|| format!("/topics/{topic}"));
    out.insert("source".into(), source.into());
    out.insert("type".into(), text("eventType", true)?.into());
    out.insert("subject".into(), text("subject", true)?.into());
    let time = text("eventTime", true)?.unwrap_or_default();
    if !is_rfc3339(&time) {
        return Err(bad(
            at,
            "`eventTime` must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z",
        ));
    }
    out.insert("time".into(), time.into());
    if let Some(v) = text("dataVersion", false)? {
        out.insert("dataversion".into(), v.into());
    }
    if let Some(data) = map.get("data").filter(|d| !d.is_null()) {
        out.insert("datacontenttype".into(), "application/json".into());
        out.insert("data".into(), data.clone());
    }
    Ok(Value::Object(out))
}

/// Builds a canonical event from a binary-mode request: `ce-*` headers
/// (lowercase names, values percent-decoded as the HTTP binding says) and the
/// body as data (JSON when the content type is JSON and it parses, text when
/// it is textual UTF-8, else `data_base64`).
pub fn from_binary<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Value, EventFormatError> {
    let at = "binary-mode event";
    let mut map = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.strip_prefix("ce-") else {
            continue;
        };
        let raw = std::str::from_utf8(value)
            .map_err(|_| bad(at, format!("header {name} is not UTF-8")))?;
        let decoded = percent_decode(raw)
            .ok_or_else(|| bad(at, format!("header {name} has an invalid percent-encoding")))?;
        // Two values for one attribute are ambiguous: refuse rather than let
        // the last one silently win.
        if map
            .insert(attr.to_string(), Value::String(decoded))
            .is_some()
        {
            return Err(bad(
                at,
                format!(
                    "header {name} appears more than once: send each CloudEvents attribute once"
                ),
            ));
        }
    }
    if let Some(ct) = content_type {
        map.insert("datacontenttype".into(), ct.into());
    }
    if !body.is_empty() {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let json = media == "application/json" || media.ends_with("+json");
        let textual =
            media.starts_with("text/") || media.ends_with("+xml") || media == "application/xml";
        match (json, textual) {
            (true, _) => {
                let data: Value = serde_json::from_slice(body).map_err(|e| {
                    bad(
                        at,
                        format!("the body is declared JSON but does not parse: {e}"),
                    )
                })?;
                map.insert("data".into(), data);
            }
            (false, true) if std::str::from_utf8(body).is_ok() => {
                let text = String::from_utf8_lossy(body).into_owned();
                map.insert("data".into(), text.into());
            }
            _ => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(body);
                map.insert("data_base64".into(), b64.into());
            }
        }
    }
    canonical(Value::Object(map), at)
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The hop count an event's `wasmgridhops` attribute holds: a string of
/// digits (as binary mode and most publishers send it) or a JSON integer.
pub fn hops_value(v: &Value) -> Option<u32> {
    match v {
        Value::String(s) => parse_hops(s),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

/// CloudEvents attribute names: 1–20 of `a-z0-9`.
pub fn is_extension_name(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)` (RFC 3339; `t`/`z` accepted).
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    // The fields must also name a real instant: month 1-12, a day that exists
    // in that month (leap years included), hour 0-23, minute 0-59, second 0-60
    // (60 for a leap second), and an offset of at most 23:59.
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days_in_month || num(11..13) > 23 || num(14..16) > 59 || num(17..19) > 60 {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') <= 23
                && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// A stored CloudEvent read without building a tree: its top-level
/// attributes, each kept as raw JSON borrowed from the stored bytes. Delivery
/// reads a few attributes and passes `data` on as it is, so parsing `data`
/// (and re-serializing it) would be wasted work.
pub struct EventView<'a> {
    attributes: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A JSON string that borrows from the input unless it has escapes.
#[derive(serde::Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> serde::Deserialize<'a> for EventView<'a> {
    fn deserialize<D: serde::Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct Attributes;
        impl<'a> serde::de::Visitor<'a> for Attributes {
            type Value = EventView<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a CloudEvent (a JSON object)")
            }
            fn visit_map<M: serde::de::MapAccess<'a>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut attributes = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((Text(key), value)) = m.next_entry::<Text<'a>, &'a RawValue>()? {
                    attributes.push((key, value));
                }
                Ok(EventView { attributes })
            }
        }
        d.deserialize_map(Attributes)
    }
}

impl<'a> EventView<'a> {
    /// Reads the attributes of the event stored as `raw`.
    pub fn parse(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw.get())
    }

    /// The raw JSON of attribute `name`.
    pub fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// Attribute `name` if it is a JSON string.
    pub fn text(&self, name: &str) -> Option<Cow<'a, str>> {
        self.raw(name)
            .and_then(|v| serde_json::from_str::<Text<'a>>(v.get()).ok())
            .map(|t| t.0)
    }

    /// The CloudEvents attributes as the guest's `trigger`: the context
    /// attributes by name, every other attribute an extension (strings as
    /// their text, anything else as its JSON).
    pub fn trigger(&self) -> TriggerEvent {
        let s = |k: &str| self.text(k).map(Cow::into_owned);
        let extensions = self
            .attributes
            .iter()
            // `dataschema` has no field of its own in the trigger record, so
            // it travels as an extension.
            .filter(|(k, _)| k == "dataschema" || !CORE_ATTRIBUTES.contains(&k.as_ref()))
            .map(|(k, v)| {
                let text = serde_json::from_str::<Text>(v.get())
                    .map(|t| t.0.into_owned())
                    .unwrap_or_else(|_| v.get().to_string());
                (k.to_string(), text)
            })
            .collect();
        TriggerEvent {
            id: s("id").unwrap_or_default(),
            source: s("source").unwrap_or_default(),
            ty: s("type").unwrap_or_default(),
            subject: s("subject"),
            time: s("time"),
            data_content_type: s("datacontenttype"),
            extensions,
        }
    }

    /// The event's data as the bytes and media type an algorithm receives:
    /// `data_base64` decoded; JSON data as it is (`application/json` unless
    /// the event names another JSON type); a string with a non-JSON content
    /// type as its text; no data as JSON `null`.
    pub fn data_payload(&self) -> (String, Vec<u8>) {
        let declared = self.text("datacontenttype").map(Cow::into_owned);
        if let Some(b64) = self.text("data_base64") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .unwrap_or_default();
            return (
                declared.unwrap_or_else(|| "application/octet-stream".into()),
                bytes,
            );
        }
        let media = declared
            .as_deref()
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        let json_media = media
            .as_deref()
            .is_none_or(|m| m == "application/json" || m.ends_with("+json"));
        let Some(data) = self.raw("data") else {
            return ("application/json".into(), b"null".to_vec());
        };
        if !json_media && let Ok(Text(text)) = serde_json::from_str::<Text>(data.get()) {
            return (declared.unwrap_or_default(), text.into_owned().into_bytes());
        }
        (
            if json_media {
                declared.unwrap_or_else(|| "application/json".into())
            } else {
                "application/json".into()
            },
            data.get().as_bytes().to_vec(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structured_event_is_validated_and_nulls_dropped() {
        let ev = canonical(
            json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "subject": null, "comexample": 5}),
            "event",
        )
        .unwrap();
        assert!(ev.get("subject").is_none());
        assert_eq!(ev["comexample"], 5);
        let missing = canonical(
            json!({"specversion": "1.0", "id": "1", "type": "t"}),
            "event [3]",
        );
        assert_eq!(
            missing.unwrap_err().0,
            "event [3]: the required attribute `source` is missing"
        );
        let bad_ext = canonical(
            json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "Bad-Name": "x"}),
            "event",
        );
        assert!(bad_ext.unwrap_err().0.contains("\"Bad-Name\""));
        let both = canonical(
            json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": 1, "data_base64": "AA=="}),
            "event",
        );
        assert!(both.unwrap_err().0.contains("both"));
        let v03 = canonical(
            json!({"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}),
            "e",
        );
        assert!(v03.unwrap_err().0.contains("\"1.0\""));
    }

    #[test]
    fn event_grid_schema_becomes_a_cloudevent() {
        let body = json!([{"id": "a", "eventType": "Contoso.Items.ItemShipped", "subject": "/orders/1",
            "eventTime": "2026-11-22T10:00:00.123+01:00", "dataVersion": "1.0", "data": {"n": 1}}]);
        let evs = parse_body(Encoding::Json, body.to_string().as_bytes(), "orders").unwrap();
        assert_eq!(evs[0]["type"], "Contoso.Items.ItemShipped");
        assert_eq!(evs[0]["source"], "/topics/orders");
        assert_eq!(evs[0]["dataversion"], "1.0");
        assert_eq!(evs[0]["data"]["n"], 1);
        let no_time = json!([{"id": "a", "eventType": "x", "subject": "/s", "data": {}}]);
        let err = parse_body(Encoding::Json, no_time.to_string().as_bytes(), "t").unwrap_err();
        assert!(err.0.contains("eventTime"), "{err}");
    }

    #[test]
    fn binary_mode_reads_headers_and_body() {
        let headers = [
            ("ce-specversion", b"1.0".as_slice()),
            ("ce-id", b"42"),
            ("ce-source", b"/sensors/a%20b"),
            ("ce-type", b"com.example.reading"),
            ("ce-traceparent", b"00-abc-def-01"),
            ("content-length", b"9"),
        ];
        let ev = from_binary(
            headers.iter().map(|(k, v)| (*k, *v)),
            Some("application/json"),
            br#"{"t": 21}"#,
        )
        .unwrap();
        assert_eq!(ev["source"], "/sensors/a b");
        assert_eq!(ev["traceparent"], "00-abc-def-01");
        assert_eq!(ev["data"]["t"], 21);
        let bin = from_binary(
            headers.iter().map(|(k, v)| (*k, *v)),
            Some("application/octet-stream"),
            &[0, 159, 146, 150],
        )
        .unwrap();
        assert_eq!(data_payload(&bin).1, vec![0, 159, 146, 150]);
    }

    #[test]
    fn times_must_exist_on_the_calendar() {
        for ok in [
            "2026-02-28T00:00:00Z",
            "2024-02-29T23:59:59.5+23:59",
            "2000-02-29T00:00:00-05:00",
            "2026-12-31T23:59:60z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:61Z",
            "2026-01-01T00:00:00+99:00",
            "2026-01-01T00:00:00+01:60",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
        let err = canonical(
            json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": "2026-02-30T00:00:00Z"}),
            "event",
        )
        .unwrap_err();
        assert!(err.0.contains("`time`"), "{err}");
    }

    #[test]
    fn a_repeated_binary_header_is_refused() {
        let headers = [
            ("ce-specversion", b"1.0".as_slice()),
            ("ce-id", b"1"),
            ("ce-id", b"2"),
            ("ce-source", b"/s"),
            ("ce-type", b"t"),
        ];
        let err = from_binary(headers.iter().map(|(k, v)| (*k, *v)), None, b"").unwrap_err();
        assert!(err.0.contains("ce-id appears more than once"), "{err}");
    }

    #[test]
    fn hop_counts_must_be_whole_numbers() {
        let ev = |hops: Value| {
            canonical(
                json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "wasmgridhops": hops}),
                "event",
            )
        };
        assert_eq!(ev(json!("3")).unwrap()["wasmgridhops"], "3");
        assert!(ev(json!(7)).is_ok());
        for bad in [
            json!("-1"),
            json!("x"),
            json!(""),
            json!(1.5),
            json!(-2),
            json!(true),
            json!("99999999999"),
        ] {
            let err = ev(bad.clone()).unwrap_err();
            assert!(err.0.contains("`wasmgridhops`"), "{bad}: {err}");
        }
    }

    /// What delivery does: the event stored compactly, read as a view.
    fn data_payload(event: &Value) -> (String, Vec<u8>) {
        let raw = RawValue::from_string(event.to_string()).unwrap();
        EventView::parse(&raw).unwrap().data_payload()
    }

    #[test]
    fn event_view_reads_attributes_without_parsing_data() {
        let event = json!({"specversion": "1.0", "id": "e\"1", "source": "/s", "type": "t",
                           "subject": "a/b", "traceparent": "00-abc-def-01", "n": 3,
                           "data": {"x": [1, 2, {"y": "z"}]}});
        let raw = RawValue::from_string(event.to_string()).unwrap();
        let view = EventView::parse(&raw).unwrap();
        let trigger = view.trigger();
        assert_eq!(trigger.id, "e\"1");
        assert_eq!(trigger.subject.as_deref(), Some("a/b"));
        assert_eq!(trigger.time, None);
        assert_eq!(
            trigger.extensions,
            vec![
                ("traceparent".to_string(), "00-abc-def-01".to_string()),
                ("n".to_string(), "3".to_string())
            ]
        );
        assert_eq!(
            view.data_payload(),
            (
                "application/json".into(),
                br#"{"x":[1,2,{"y":"z"}]}"#.to_vec()
            )
        );
        let none = RawValue::from_string(r#"{"id":"1"}"#.into()).unwrap();
        assert_eq!(
            EventView::parse(&none).unwrap().data_payload(),
            ("application/json".into(), b"null".to_vec())
        );
        let not_object = RawValue::from_string("[1]".into()).unwrap();
        assert!(EventView::parse(&not_object).is_err());
    }

    #[test]
    fn encodings_and_payloads() {
        assert_eq!(
            encoding(
                Some("application/cloudevents-batch+json; charset=utf-8"),
                false
            ),
            Encoding::Batch
        );
        assert_eq!(encoding(Some("text/plain"), true), Encoding::Binary);
        assert_eq!(encoding(None, false), Encoding::Json);
        let text = json!({"datacontenttype": "text/plain", "data": "hi"});
        assert_eq!(data_payload(&text), ("text/plain".into(), b"hi".to_vec()));
        let js = json!({"data": {"a": 1}});
        assert_eq!(data_payload(&js).1, br#"{"a":1}"#.to_vec());
        assert!(is_rfc3339("2026-11-22T10:00:00Z"));
        assert!(is_rfc3339("2026-11-22T10:00:00.5-08:00"));
        assert!(!is_rfc3339("2026-11-22 10:00"));
    }
}
