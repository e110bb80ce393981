//! The trigger record a guest receives, and wasmgrid's hop-count extension.

/// The CloudEvents extension attribute that counts how many algorithm runs
/// led to an event: a run triggered by an event with `N` hops gives the events
/// it causes (data writes, publishes) `N + 1`, so delivery can stop event loops
/// (docs/EVENTS.md, "Event loops").
pub const HOPS_ATTRIBUTE: &str = "wasmgridhops";

/// A hop count as an attribute carries it: decimal digits that fit a `u32`.
pub fn parse_hops(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// CloudEvents attributes of the event that caused a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerEvent {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `time`.
    pub time: Option<String>,
    /// `datacontenttype`.
    pub data_content_type: Option<String>,
    /// Extension attributes.
    pub extensions: Vec<(String, String)>,
}

impl TriggerEvent {
    /// The trigger's hop count (0 when it has none).
    pub fn hops(&self) -> u32 {
        self.extensions
            .iter()
            .find(|(k, _)| k == HOPS_ATTRIBUTE)
            .and_then(|(_, v)| parse_hops(v))
            .unwrap_or(0)
    }
}
