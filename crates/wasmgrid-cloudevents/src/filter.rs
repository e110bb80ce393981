//! Azure Event Grid subscription filters for CloudEvents 1.0 events.
//!
//! An event is a structured-mode CloudEvent held as a `serde_json::Value`
//! object: context attributes (`id`, `source`, `type`, `subject`, `time`,
//! `datacontenttype`, `dataschema`, `specversion`), extension attributes at
//! the top level, and `data`. A [`Filter`] is the `filter` object of an Event
//! Grid event subscription, with Event Grid's camelCase JSON field names.
//! [`Filter::compile`] validates it once and gives a [`CompiledFilter`] whose
//! [`CompiledFilter::matches`] is cheap; [`SubscriptionIndex`] finds every
//! subscription matching an event without evaluating all of them.
//!
//! Sources: Microsoft Learn, "Understand event filtering for Event Grid
//! subscriptions" (`articles/event-grid/event-filtering.md` in
//! MicrosoftDocs/azure-docs, 2022 revision), and the Event Grid on IoT Edge
//! "Advanced filtering" page for arrays. Where those pages are silent the
//! choice made here is marked **(our choice)**.
//!
//! # The three parts, combined with AND
//!
//! 1. **Event types.** `includedEventTypes` absent or `null` accepts every
//!    type, and so does a list containing `"All"` (any case), as in Event
//!    Grid. Otherwise the event's `type` must equal one entry, compared
//!    case-insensitively **(our choice; the page does not say)**. An event
//!    without a string `type` only passes "all types". An empty list is
//!    rejected rather than silently matching nothing **(our choice)**.
//! 2. **Subject.** `subjectBeginsWith` / `subjectEndsWith` are a prefix and a
//!    suffix of `subject`, case-insensitive unless `isSubjectCaseSensitive`.
//!    An empty string means "no condition". An event without a string
//!    `subject` fails any non-empty subject condition.
//! 3. **Advanced filters.** Every entry of `advancedFilters` must hold (AND).
//!    Within one entry, several `values` are OR for the positive operators
//!    and "none of them" for the `Not` operators.
//!
//! ```json
//! { "includedEventTypes": ["Contoso.Items.ItemShipped"],
//!   "subjectBeginsWith": "/orders/", "subjectEndsWith": ".json",
//!   "advancedFilters": [
//!     { "operatorType": "NumberGreaterThan", "key": "data.total", "value": 100 },
//!     { "operatorType": "StringIn", "key": "data.region", "values": ["eu", "us"] } ] }
//! ```
//!
//! # Keys
//!
//! A key is either a context attribute name (`id`, `source`, `type`,
//! `subject`, `time`, `datacontenttype`, `dataschema`, `specversion`), an
//! extension attribute name (CloudEvents: 1 to 20 lowercase ASCII letters or
//! digits, e.g. `comexampleothervalue`), or a path into the data,
//! `data.a.b.c`, with `.` as separator and no escaping (Event Grid has none
//! either). The first segment is case-insensitive (`Data.Key1`, `Subject`
//! work, as in Event Grid's own examples); property names below `data` are
//! matched exactly **(our choice)**. A key has at most [`MAX_KEY_DEPTH`]
//! segments, `data` included **(our choice; the old page said two levels of
//! nesting, the current one states no limit)**. Paths do not index into
//! arrays.
//!
//! # Operators
//!
//! The event value found at the key is a *scalar* (string, number, bool), an
//! *array*, *missing* (key absent, or `null`: both are "undefined" here), or
//! an *object* (never matches anything but `IsNotNull`). A value of the wrong
//! type for the operator is **ignored**, as Event Grid's pseudo code says
//! ("any key values with data types that don't match the filter's data type
//! are ignored"): it makes a positive operator fail and a `Not` operator
//! succeed. One exception, from the page's extension-attribute example
//! (`StringBeginsWith` on a numeric extension with values `"5"`, `"1"`):
//! string operators see numbers and booleans as their JSON text (`5`, `2.5`,
//! `true`; a float written `5.0` is the text `5.0`).
//!
//! **Numbers** (compared as `f64`; Event Grid uses .NET `decimal`, so values
//! beyond 15-16 significant digits can compare differently):
//!
//! ```json
//! { "operatorType": "NumberIn",        "key": "data.counter", "values": [5, 1] }
//! { "operatorType": "NumberNotIn",     "key": "data.counter", "values": [41, 0] }
//! { "operatorType": "NumberLessThan",  "key": "data.counter", "value": 100 }
//! { "operatorType": "NumberGreaterThanOrEquals", "key": "data.counter", "value": 30 }
//! { "operatorType": "NumberInRange",   "key": "data.key1", "values": [[3.14, 999.95], [3000, 4000]] }
//! { "operatorType": "NumberNotInRange","key": "data.key1", "values": [[0, 10]] }
//! ```
//!
//! `NumberGreaterThan`, `NumberGreaterThanOrEquals`, `NumberLessThan`,
//! `NumberLessThanOrEquals` take one `value`; `NumberIn`, `NumberNotIn` take
//! `values`; the range operators take `values` as `[[min, max], ...]`, both
//! ends inclusive, `min <= max`.
//!
//! **Booleans**: `{ "operatorType": "BoolEquals", "key": "data.isEnabled",
//! "value": true }`. Only JSON booleans match (not the string `"true"`).
//!
//! **Strings** (all comparisons case-insensitive, as Event Grid documents;
//! Unicode lowercase mapping applied char by char, no context rules):
//!
//! ```json
//! { "operatorType": "StringIn",          "key": "data.key1", "values": ["contoso", "fabrikam"] }
//! { "operatorType": "StringNotIn",       "key": "data.key1", "values": ["aws", "bridge"] }
//! { "operatorType": "StringContains",    "key": "data.key1", "values": ["microsoft", "azure"] }
//! { "operatorType": "StringNotContains", "key": "data.key1", "values": ["contoso"] }
//! { "operatorType": "StringBeginsWith",  "key": "comexampleothervalue", "values": ["5", "1"] }
//! { "operatorType": "StringNotBeginsWith", "key": "data.key1", "values": ["event"] }
//! { "operatorType": "StringEndsWith",    "key": "data.key1", "values": ["jpg", "png"] }
//! { "operatorType": "StringNotEndsWith", "key": "data.key1", "values": ["tmp"] }
//! ```
//!
//! **Null checks** take neither `value` nor `values`:
//! `{ "operatorType": "IsNullOrUndefined", "key": "data.key1" }` holds when
//! the key is missing or `null`; `IsNotNull` holds when it is present and not
//! `null` (any type, arrays and objects included).
//!
//! # Missing keys
//!
//! Straight from the page's note: a missing key **fails** `NumberGreaterThan`,
//! `NumberGreaterThanOrEquals`, `NumberLessThan`, `NumberLessThanOrEquals`,
//! `NumberIn`, `BoolEquals`, `StringContains`, `StringNotContains`,
//! `StringBeginsWith`, `StringNotBeginsWith`, `StringEndsWith`,
//! `StringNotEndsWith`, `StringIn`, and **passes** `NumberNotIn` and
//! `StringNotIn`. Note that three `Not` operators fail on a missing key.
//! The range operators, added later, are not in that note: `NumberInRange`
//! fails and `NumberNotInRange` passes, like `NumberIn` / `NumberNotIn`
//! **(our choice)**. A `null` value counts as missing for every operator.
//!
//! # Arrays
//!
//! As in Event Grid, array values are only filtered when the subscription
//! sets `enableAdvancedFilteringOnArrays: true`; otherwise an array value
//! makes every operator fail (except `IsNotNull`, which passes). With the
//! flag, a positive operator passes when any element matches any filter
//! value, and a `Not` operator passes when no element matches any filter
//! value (an empty array passes it). Elements of the wrong type (objects,
//! nested arrays, `null`, strings for a number operator, ...) are ignored.
//!
//! ```json
//! { "enableAdvancedFilteringOnArrays": true,
//!   "advancedFilters": [{ "operatorType": "StringIn", "key": "data.tags", "values": ["urgent"] }] }
//! ```
//!
//! # Limits (checked by [`Filter::compile`])
//!
//! [`MAX_ADVANCED_FILTERS`] advanced filters and [`MAX_FILTER_VALUES`] values
//! *across all of them* (Event Grid: "25 advanced filters and 25 filter values
//! across all the filters per Event Grid subscription"; a single `value`
//! counts as one, a `[min, max]` range as one), string values up to
//! [`MAX_STRING_VALUE_CHARS`] characters, keys up to [`MAX_KEY_DEPTH`]
//! segments. Operator type names are accepted in any case.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most advanced filters one subscription may have (Event Grid: 25).
pub const MAX_ADVANCED_FILTERS: usize = 25;
/// Most filter values across all advanced filters of one subscription
/// (Event Grid: 25). A single `value` and a `[min, max]` range count as one.
pub const MAX_FILTER_VALUES: usize = 25;
/// Longest string filter value, in characters (Event Grid: 512).
pub const MAX_STRING_VALUE_CHARS: usize = 512;
/// Longest `subjectBeginsWith` / `subjectEndsWith`, in bytes (our limit: the
/// filter is stored and returned with every listing).
pub const MAX_SUBJECT_FILTER_BYTES: usize = 1024;
/// Most entries in `includedEventTypes` (our limit).
pub const MAX_EVENT_TYPES: usize = 64;
/// Longest event type in `includedEventTypes`, and longest advanced filter
/// key, in bytes (our limits).
pub const MAX_NAME_BYTES: usize = 256;
/// Most `.`-separated segments in an advanced filter key, `data` included
/// (`data.a.b.c` has 4). Our limit; Event Grid documents none today.
pub const MAX_KEY_DEPTH: usize = 10;
/// CloudEvents 1.0 context attributes usable as advanced filter keys.
pub const CONTEXT_ATTRIBUTES: &[&str] = &[
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "specversion",
];
/// Every valid `operatorType`, as Event Grid spells them.
pub const OPERATOR_TYPES: &[&str] = &[
    "NumberIn",
    "NumberNotIn",
    "NumberLessThan",
    "NumberGreaterThan",
    "NumberLessThanOrEquals",
    "NumberGreaterThanOrEquals",
    "NumberInRange",
    "NumberNotInRange",
    "BoolEquals",
    "StringIn",
    "StringNotIn",
    "StringContains",
    "StringNotContains",
    "StringBeginsWith",
    "StringNotBeginsWith",
    "StringEndsWith",
    "StringNotEndsWith",
    "IsNullOrUndefined",
    "IsNotNull",
];

/// The `filter` of an event subscription, as Event Grid's JSON spells it.
/// See the [module docs](self) for the semantics; turn it into a
/// [`CompiledFilter`] with [`Filter::compile`] before matching.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// Event types to deliver (case-insensitive); `None` or a list holding
    /// `"All"` delivers every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included_event_types: Option<Vec<String>>,
    /// Required prefix of the event's `subject`; empty or `None`: no condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_begins_with: Option<String>,
    /// Required suffix of the event's `subject`; empty or `None`: no condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_ends_with: Option<String>,
    /// Compare the subject prefix and suffix case-sensitively.
    #[serde(default)]
    pub is_subject_case_sensitive: bool,
    /// Apply advanced filters element-wise to array values (Event Grid's
    /// `enableAdvancedFilteringOnArrays`); when false, an array value fails
    /// every operator but `IsNotNull`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_advanced_filtering_on_arrays: bool,
    /// Conditions on attributes and data, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advanced_filters: Vec<AdvancedFilter>,
}

/// One advanced filter: an operator applied to the event value at `key`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdvancedFilter {
    /// One of [`OPERATOR_TYPES`] (any case), e.g. `"NumberIn"`.
    pub operator_type: String,
    /// Attribute name, extension name, or `data.` path, e.g. `"data.counter"`.
    pub key: String,
    /// The single operand of `NumberLessThan`, `NumberGreaterThan`,
    /// `NumberLessThanOrEquals`, `NumberGreaterThanOrEquals` and `BoolEquals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The operands of the `*In`, `String*` and `*InRange` operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Value>>,
}

/// Why a [`Filter`] was rejected. Messages name the offending field and say
/// how to fix it; they are meant for API users (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// `includedEventTypes` is an empty list.
    #[error(
        "includedEventTypes is an empty list, which would match no event: omit it (or use [\"All\"]) to receive every event type, or list the types to receive"
    )]
    EmptyEventTypes,
    /// An entry of `includedEventTypes` is empty.
    #[error("includedEventTypes[{index}] is an empty string: remove it or give an event type name")]
    EmptyEventType {
        /// Position in the list.
        index: usize,
    },
    /// A string field longer than its limit.
    #[error("{field} is {len} bytes long: at most {max} bytes are allowed")]
    TooLong {
        /// The field, e.g. `subjectBeginsWith` or `includedEventTypes[3]`.
        field: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_EVENT_TYPES`] entries in `includedEventTypes`.
    #[error(
        "includedEventTypes has {count} entries: at most {max} are allowed; split the subscription"
    )]
    TooManyEventTypes {
        /// Entries given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_ADVANCED_FILTERS`] advanced filters.
    #[error(
        "too many advanced filters: {count} given, at most {max} are allowed per subscription; merge filters on the same key and operator into one with several values"
    )]
    TooManyFilters {
        /// Filters given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_FILTER_VALUES`] values across all advanced filters.
    #[error(
        "too many advanced filter values: {count} given across all advanced filters, at most {max} are allowed per subscription (a single `value` and a [min, max] range count as one); remove values or split the subscription"
    )]
    TooManyValues {
        /// Values given, across all filters.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// `operatorType` is not one of [`OPERATOR_TYPES`].
    #[error(
        "advancedFilters[{index}] (key {key:?}) has unknown operatorType {operator:?}; valid operator types are: {valid}"
    )]
    UnknownOperator {
        /// Position in `advancedFilters`.
        index: usize,
        /// The filter's key.
        key: String,
        /// The unknown operator as given.
        operator: String,
        /// Comma-separated list of the valid operator types.
        valid: String,
    },
    /// The key is empty, malformed, too deep, or names no attribute.
    #[error("advancedFilters[{index}] ({operator}) has invalid key {key:?}: {problem}")]
    InvalidKey {
        /// Position in `advancedFilters`.
        index: usize,
        /// The operator type.
        operator: String,
        /// The key as given.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// `value`/`values` is missing, superfluous, or of the wrong type.
    #[error("advancedFilters[{index}] ({operator}, key {key:?}): {problem}")]
    InvalidValue {
        /// Position in `advancedFilters`.
        index: usize,
        /// The operator type.
        operator: String,
        /// The filter's key.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Where an advanced filter looks in the event.
#[derive(Clone, Debug, PartialEq)]
enum Key {
    /// A top-level attribute (context or extension), lowercase.
    Attribute(String),
    /// A path below `data`.
    Data(Vec<String>),
}

impl Key {
    fn lookup<'a>(&self, event: &'a Value) -> Option<&'a Value> {
        match self {
            Key::Attribute(name) => event.get(name.as_str()),
            Key::Data(path) => {
                let mut v = event.get("data")?;
                for seg in path {
                    v = v.as_object()?.get(seg.as_str())?;
                }
                Some(v)
            }
        }
    }
}

/// Numeric test of the positive form of a number operator.
#[derive(Clone, Debug, PartialEq)]
enum NumTest {
    In(Vec<f64>),
    Lt(f64),
    Gt(f64),
    Le(f64),
    Ge(f64),
    InRange(Vec<(f64, f64)>),
}

impl NumTest {
    fn test(&self, x: f64) -> bool {
        match self {
            NumTest::In(vs) => vs.contains(&x),
            NumTest::Lt(v) => x < *v,
            NumTest::Gt(v) => x > *v,
            NumTest::Le(v) => x <= *v,
            NumTest::Ge(v) => x >= *v,
            NumTest::InRange(rs) => rs.iter().any(|(lo, hi)| *lo <= x && x <= *hi),
        }
    }
}

/// String test of the positive form of a string operator.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StrTest {
    Equals,
    Contains,
    BeginsWith,
    EndsWith,
}

/// The pre-parsed condition of an advanced filter (positive form).
#[derive(Clone, Debug, PartialEq)]
enum Cond {
    Num(NumTest),
    Bool(bool),
    /// Values are lowercased at compile time.
    Str(StrTest, Vec<String>),
    IsNullOrUndefined,
    IsNotNull,
}

/// A validated advanced filter.
#[derive(Clone, Debug, PartialEq)]
struct CompiledAdvanced {
    key: Key,
    cond: Cond,
    /// A `Not` operator: passes when no (element, value) pair matches.
    negate: bool,
    /// Result when the key is missing or null.
    missing_matches: bool,
}

impl CompiledAdvanced {
    fn eval(&self, event: &Value, arrays: bool) -> bool {
        let found = self.key.lookup(event);
        match self.cond {
            Cond::IsNullOrUndefined => return found.is_none_or(Value::is_null),
            Cond::IsNotNull => return found.is_some_and(|v| !v.is_null()),
            _ => {}
        }
        match found {
            None | Some(Value::Null) => self.missing_matches,
            Some(Value::Object(_)) => false,
            Some(Value::Array(items)) => arrays && items.iter().any(|v| self.hit(v)) != self.negate,
            Some(scalar) => self.hit(scalar) != self.negate,
        }
    }

    /// Whether one scalar matches one of the values under the positive form
    /// of the operator; values of another type never do.
    fn hit(&self, v: &Value) -> bool {
        match &self.cond {
            Cond::Num(t) => match v {
                Value::Number(n) => n.as_f64().is_some_and(|x| t.test(x)),
                _ => false,
            },
            Cond::Bool(b) => v.as_bool() == Some(*b),
            Cond::Str(t, values) => with_text(v, |s| values.iter().any(|f| str_test(*t, s, f))),
            Cond::IsNullOrUndefined | Cond::IsNotNull => false,
        }
    }
}

/// Calls `f` with the text a string operator sees for `v` (strings as is,
/// numbers and booleans as JSON text), or returns false for other types.
/// Numbers are formatted on the stack.
fn with_text(v: &Value, f: impl Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        Value::Bool(true) => f("true"),
        Value::Bool(false) => f("false"),
        Value::Number(n) => {
            let mut buf = StackBuf::default();
            if write!(buf, "{n}").is_ok() {
                f(buf.as_str())
            } else {
                f(&n.to_string())
            }
        }
        _ => false,
    }
}

/// A small fixed buffer for formatting numbers without allocating.
struct StackBuf {
    buf: [u8; 48],
    len: usize,
}

impl Default for StackBuf {
    fn default() -> Self {
        StackBuf {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl StackBuf {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn str_test(t: StrTest, hay: &str, lower_needle: &str) -> bool {
    match t {
        StrTest::Equals => eq_ci(hay, lower_needle),
        StrTest::Contains => contains_ci(hay, lower_needle),
        StrTest::BeginsWith => starts_with_ci(hay, lower_needle),
        StrTest::EndsWith => ends_with_ci(hay, lower_needle),
    }
}

/// Lowercases char by char (no context-dependent mappings), the same mapping
/// the `*_ci` helpers apply on the fly.
fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Like [`lower`] but borrows when `s` has nothing to lowercase.
fn lower_cow(s: &str) -> Cow<'_, str> {
    if s.chars().all(|c| c.is_ascii() && !c.is_ascii_uppercase()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(lower(s))
    }
}

/// `lower(hay) == lower_needle`, without allocating.
fn eq_ci(hay: &str, lower_needle: &str) -> bool {
    if hay.is_ascii() && lower_needle.is_ascii() {
        return hay.eq_ignore_ascii_case(lower_needle);
    }
    hay.chars()
        .flat_map(char::to_lowercase)
        .eq(lower_needle.chars())
}

/// `lower(hay).starts_with(lower_needle)`, without allocating.
fn starts_with_ci(hay: &str, lower_needle: &str) -> bool {
    if hay.is_ascii() && lower_needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), lower_needle.as_bytes());
        return h.len() >= n.len() && h[..n.len()].eq_ignore_ascii_case(n);
    }
    let mut h = hay.chars().flat_map(char::to_lowercase);
    lower_needle.chars().all(|c| h.next() == Some(c))
}

/// `lower(hay).ends_with(lower_needle)`, without allocating.
fn ends_with_ci(hay: &str, lower_needle: &str) -> bool {
    if hay.is_ascii() && lower_needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), lower_needle.as_bytes());
        return h.len() >= n.len() && h[h.len() - n.len()..].eq_ignore_ascii_case(n);
    }
    let mut h = hay.chars().rev().flat_map(|c| c.to_lowercase().rev());
    lower_needle.chars().rev().all(|c| h.next() == Some(c))
}

/// `lower(hay).contains(lower_needle)`, without allocating (naive search;
/// filter values are at most 512 characters).
fn contains_ci(hay: &str, lower_needle: &str) -> bool {
    if lower_needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && lower_needle.is_ascii() {
        let n = lower_needle.as_bytes();
        return hay
            .as_bytes()
            .windows(n.len())
            .any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.char_indices()
        .any(|(i, _)| starts_with_ci(&hay[i..], lower_needle))
}

/// A validated, pre-processed [`Filter`], ready for [`CompiledFilter::matches`].
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledFilter {
    /// Lowercased, sorted, deduplicated; `None` = all types.
    event_types: Option<Vec<String>>,
    /// Lowercased unless `subject_case_sensitive`; empty = no condition.
    subject_prefix: String,
    subject_suffix: String,
    subject_case_sensitive: bool,
    /// `lower(subjectBeginsWith)` whatever the case flag: the index key.
    index_prefix: String,
    arrays: bool,
    advanced: Vec<CompiledAdvanced>,
}

impl Filter {
    /// Validates the filter and pre-processes it for matching.
    ///
    /// # Errors
    ///
    /// A [`FilterError`] naming the first problem found: an empty event type
    /// list or entry, too many advanced filters or values, an unknown
    /// operator, an invalid key, or a missing, superfluous or mistyped
    /// `value`/`values`.
    pub fn compile(&self) -> Result<CompiledFilter, FilterError> {
        self.check_sizes()?;
        let event_types = match &self.included_event_types {
            None => None,
            Some(types) if types.is_empty() => return Err(FilterError::EmptyEventTypes),
            Some(types) => {
                if let Some(index) = types.iter().position(|t| t.is_empty()) {
                    return Err(FilterError::EmptyEventType { index });
                }
                if types.iter().any(|t| t.eq_ignore_ascii_case("all")) {
                    None
                } else {
                    let mut lowered: Vec<String> = types.iter().map(|t| lower(t)).collect();
                    lowered.sort();
                    lowered.dedup();
                    Some(lowered)
                }
            }
        };

        let case = self.is_subject_case_sensitive;
        let prefix = self.subject_begins_with.as_deref().unwrap_or("");
        let suffix = self.subject_ends_with.as_deref().unwrap_or("");
        let fold = |s: &str| if case { s.to_owned() } else { lower(s) };

        let count = self.advanced_filters.len();
        if count > MAX_ADVANCED_FILTERS {
            return Err(FilterError::TooManyFilters {
                count,
                max: MAX_ADVANCED_FILTERS,
            });
        }
        let total: usize = self
            .advanced_filters
            .iter()
            .map(|f| f.values.as_ref().map_or(0, Vec::len) + usize::from(f.value.is_some()))
            .sum();
        if total > MAX_FILTER_VALUES {
            return Err(FilterError::TooManyValues {
                count: total,
                max: MAX_FILTER_VALUES,
            });
        }
        let advanced = self
            .advanced_filters
            .iter()
            .enumerate()
            .map(|(i, f)| compile_advanced(i, f))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(CompiledFilter {
            event_types,
            subject_prefix: fold(prefix),
            subject_suffix: fold(suffix),
            subject_case_sensitive: case,
            index_prefix: lower(prefix),
            arrays: self.enable_advanced_filtering_on_arrays,
            advanced,
        })
    }
}

impl Filter {
    /// Caps on the strings a filter stores (values have their own, in
    /// `compile_advanced`).
    fn check_sizes(&self) -> Result<(), FilterError> {
        let too_long = |field: String, s: &str, max: usize| {
            if s.len() > max {
                Err(FilterError::TooLong {
                    field,
                    len: s.len(),
                    max,
                })
            } else {
                Ok(())
            }
        };
        for (field, v) in [
            ("subjectBeginsWith", &self.subject_begins_with),
            ("subjectEndsWith", &self.subject_ends_with),
        ] {
            if let Some(v) = v {
                too_long(field.to_string(), v, MAX_SUBJECT_FILTER_BYTES)?;
            }
        }
        if let Some(types) = &self.included_event_types {
            if types.len() > MAX_EVENT_TYPES {
                return Err(FilterError::TooManyEventTypes {
                    count: types.len(),
                    max: MAX_EVENT_TYPES,
                });
            }
            for (i, t) in types.iter().enumerate() {
                too_long(format!("includedEventTypes[{i}]"), t, MAX_NAME_BYTES)?;
            }
        }
        for (i, f) in self.advanced_filters.iter().enumerate() {
            too_long(format!("advancedFilters[{i}].key"), &f.key, MAX_NAME_BYTES)?;
            too_long(
                format!("advancedFilters[{i}].operatorType"),
                &f.operator_type,
                MAX_NAME_BYTES,
            )?;
        }
        Ok(())
    }
}

/// How an operator takes its operands.
#[derive(Clone, Copy, PartialEq)]
enum Arity {
    /// `value`, one operand.
    Single,
    /// `values`, one or more operands.
    List,
    /// Neither.
    None,
}

fn compile_advanced(index: usize, f: &AdvancedFilter) -> Result<CompiledAdvanced, FilterError> {
    let Some(op) = OPERATOR_TYPES
        .iter()
        .find(|o| o.eq_ignore_ascii_case(&f.operator_type))
        .copied()
    else {
        return Err(FilterError::UnknownOperator {
            index,
            key: f.key.clone(),
            operator: f.operator_type.clone(),
            valid: OPERATOR_TYPES.join(", "),
        });
    };
    let key = compile_key(&f.key).map_err(|problem| FilterError::InvalidKey {
        index,
        operator: op.to_owned(),
        key: f.key.clone(),
        problem,
    })?;
    let bad = |problem: String| FilterError::InvalidValue {
        index,
        operator: op.to_owned(),
        key: f.key.clone(),
        problem,
    };

    let arity = match op {
        "NumberLessThan"
        | "NumberGreaterThan"
        | "NumberLessThanOrEquals"
        | "NumberGreaterThanOrEquals"
        | "BoolEquals" => Arity::Single,
        "IsNullOrUndefined" | "IsNotNull" => Arity::None,
        _ => Arity::List,
    };
    let expected = match op {
        "BoolEquals" => "a boolean (true or false)",
        "NumberInRange" | "NumberNotInRange" => "a [min, max] pair of numbers",
        o if o.starts_with("Number") => "a number",
        _ => "a string",
    };
    match (arity, &f.value, &f.values) {
        (Arity::Single, Some(_), None)
        | (Arity::List, None, Some(_))
        | (Arity::None, None, None) => {}
        (Arity::Single, None, Some(_)) => {
            return Err(bad(format!(
                "this operator takes a single `value`, not `values`: write \"value\": <{expected}>"
            )));
        }
        (Arity::Single, _, _) => {
            return Err(bad(format!(
                "this operator needs exactly one `value` ({expected}) and no `values`"
            )));
        }
        (Arity::List, Some(_), None) => {
            return Err(bad(format!(
                "this operator takes `values`, a list, not `value`: write \"values\": [<{expected}>, ...]"
            )));
        }
        (Arity::List, _, _) => {
            return Err(bad(format!(
                "this operator needs `values`, a list of {expected} items, and no `value`"
            )));
        }
        (Arity::None, _, _) => {
            return Err(bad(
                "this operator takes neither `value` nor `values`: remove them".to_owned(),
            ));
        }
    }
    let values: &[Value] = f.values.as_deref().unwrap_or_default();
    if arity == Arity::List && values.is_empty() {
        return Err(bad(format!(
            "`values` is empty: give at least one {expected}"
        )));
    }

    let describe = |v: &Value| {
        let kind = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let mut text = v.to_string();
        if text.len() > 40 {
            let cut = (0..=40)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        format!("{kind} {text}")
    };
    let number = |what: &str, v: &Value| {
        v.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| bad(format!("{what} must be a number, got {}", describe(v))))
    };
    let numbers = || {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| number(&format!("values[{i}]"), v))
            .collect::<Result<Vec<f64>, _>>()
    };
    let ranges = || {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_array().map(Vec::as_slice) {
                Some([lo, hi]) => {
                    let lo = number(&format!("values[{i}][0]"), lo)?;
                    let hi = number(&format!("values[{i}][1]"), hi)?;
                    if lo > hi {
                        return Err(bad(format!(
                            "values[{i}] is the range [{lo}, {hi}] whose min exceeds its max: write it as [{hi}, {lo}]"
                        )));
                    }
                    Ok((lo, hi))
                }
                _ => Err(bad(format!(
                    "values[{i}] must be a [min, max] pair of numbers, got {}",
                    describe(v)
                ))),
            })
            .collect::<Result<Vec<(f64, f64)>, _>>()
    };
    let strings = || {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if s.chars().count() > MAX_STRING_VALUE_CHARS => Err(bad(format!(
                    "values[{i}] is {} characters long; string values are limited to {MAX_STRING_VALUE_CHARS}",
                    s.chars().count()
                ))),
                Value::String(s) => Ok(lower(s)),
                _ => Err(bad(format!(
                    "values[{i}] must be a string, got {} (quote numbers, e.g. \"5\")",
                    describe(v)
                ))),
            })
            .collect::<Result<Vec<String>, _>>()
    };
    let single = f.value.as_ref();
    let single_number = || number("value", single.unwrap_or(&Value::Null));

    let (cond, negate, missing_matches) = match op {
        "NumberIn" => (Cond::Num(NumTest::In(numbers()?)), false, false),
        "NumberNotIn" => (Cond::Num(NumTest::In(numbers()?)), true, true),
        "NumberLessThan" => (Cond::Num(NumTest::Lt(single_number()?)), false, false),
        "NumberGreaterThan" => (Cond::Num(NumTest::Gt(single_number()?)), false, false),
        "NumberLessThanOrEquals" => (Cond::Num(NumTest::Le(single_number()?)), false, false),
        "NumberGreaterThanOrEquals" => (Cond::Num(NumTest::Ge(single_number()?)), false, false),
        "NumberInRange" => (Cond::Num(NumTest::InRange(ranges()?)), false, false),
        "NumberNotInRange" => (Cond::Num(NumTest::InRange(ranges()?)), true, true),
        "BoolEquals" => match single {
            Some(Value::Bool(b)) => (Cond::Bool(*b), false, false),
            Some(v) => {
                return Err(bad(format!(
                    "value must be a boolean (true or false), got {}",
                    describe(v)
                )));
            }
            None => unreachable!("arity checked above"),
        },
        "StringIn" => (Cond::Str(StrTest::Equals, strings()?), false, false),
        "StringNotIn" => (Cond::Str(StrTest::Equals, strings()?), true, true),
        "StringContains" => (Cond::Str(StrTest::Contains, strings()?), false, false),
        "StringNotContains" => (Cond::Str(StrTest::Contains, strings()?), true, false),
        "StringBeginsWith" => (Cond::Str(StrTest::BeginsWith, strings()?), false, false),
        "StringNotBeginsWith" => (Cond::Str(StrTest::BeginsWith, strings()?), true, false),
        "StringEndsWith" => (Cond::Str(StrTest::EndsWith, strings()?), false, false),
        "StringNotEndsWith" => (Cond::Str(StrTest::EndsWith, strings()?), true, false),
        "IsNullOrUndefined" => (Cond::IsNullOrUndefined, false, true),
        "IsNotNull" => (Cond::IsNotNull, false, false),
        other => unreachable!("operator {other} is in OPERATOR_TYPES but not handled"),
    };
    Ok(CompiledAdvanced {
        key,
        cond,
        negate,
        missing_matches,
    })
}

/// Parses an advanced filter key; the error is the problem and its fix.
fn compile_key(raw: &str) -> Result<Key, String> {
    const HINT: &str = "use a CloudEvents attribute (id, source, type, subject, time, datacontenttype, dataschema, specversion), an extension attribute name (1-20 lowercase letters or digits), or data.<property>[.<property>...]";
    if raw.is_empty() {
        return Err(format!("the key is empty; {HINT}"));
    }
    let segments: Vec<&str> = raw.split('.').collect();
    if segments.len() > MAX_KEY_DEPTH {
        return Err(format!(
            "the key has {} segments; at most {MAX_KEY_DEPTH} are allowed, `data` included",
            segments.len()
        ));
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(
            "the key has an empty segment (leading, trailing or doubled `.`); write e.g. data.a.b"
                .to_owned(),
        );
    }
    let first = lower(segments[0]);
    if first == "data" {
        if segments.len() == 1 {
            return Err(
                "`data` alone is not a filterable key; name a property, e.g. data.status"
                    .to_owned(),
            );
        }
        return Ok(Key::Data(
            segments[1..].iter().map(|s| (*s).to_owned()).collect(),
        ));
    }
    let known = CONTEXT_ATTRIBUTES.contains(&first.as_str())
        || (first.len() <= 20
            && first
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if !known {
        return Err(format!(
            "`{}` is not a CloudEvents attribute name; {HINT}",
            segments[0]
        ));
    }
    if segments.len() > 1 {
        return Err(format!(
            "only keys under `data` can be nested, and `{first}` is an attribute; use `{first}` alone or data.<property>"
        ));
    }
    Ok(Key::Attribute(first))
}

impl CompiledFilter {
    /// Whether `event` (a structured-mode CloudEvent JSON object) passes the
    /// filter: event type, subject, and every advanced filter. Allocates
    /// nothing except, for string operators on very long numbers, a string.
    pub fn matches(&self, event: &Value) -> bool {
        if let Some(types) = &self.event_types {
            let Some(ty) = event.get("type").and_then(Value::as_str) else {
                return false;
            };
            if !types.iter().any(|t| eq_ci(ty, t)) {
                return false;
            }
        }
        if !self.subject_prefix.is_empty() || !self.subject_suffix.is_empty() {
            let Some(subject) = event.get("subject").and_then(Value::as_str) else {
                return false;
            };
            let ok = if self.subject_case_sensitive {
                subject.starts_with(&self.subject_prefix) && subject.ends_with(&self.subject_suffix)
            } else {
                starts_with_ci(subject, &self.subject_prefix)
                    && ends_with_ci(subject, &self.subject_suffix)
            };
            if !ok {
                return false;
            }
        }
        self.advanced.iter().all(|a| a.eval(event, self.arrays))
    }
}

/// Subscriptions under one event type (or under "all types"), keyed by the
/// lowercased subject prefix (`""` for no prefix).
#[derive(Debug, Default)]
struct PrefixBucket {
    by_prefix: HashMap<String, BTreeSet<u64>>,
    /// Distinct prefix byte lengths present → how many prefixes have it.
    lengths: BTreeMap<usize, usize>,
}

impl PrefixBucket {
    fn insert(&mut self, prefix: &str, id: u64) {
        let set = self.by_prefix.entry(prefix.to_owned()).or_default();
        if set.is_empty() {
            *self.lengths.entry(prefix.len()).or_default() += 1;
        }
        set.insert(id);
    }

    fn remove(&mut self, prefix: &str, id: u64) {
        let Some(set) = self.by_prefix.get_mut(prefix) else {
            return;
        };
        set.remove(&id);
        if set.is_empty() {
            self.by_prefix.remove(prefix);
            if let Some(n) = self.lengths.get_mut(&prefix.len()) {
                *n -= 1;
                if *n == 0 {
                    self.lengths.remove(&prefix.len());
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// Calls `f` for every id whose prefix is a prefix of `subject`
    /// (already lowercased); with no subject, only the no-prefix ids.
    fn candidates(&self, subject: Option<&str>, f: &mut impl FnMut(u64)) {
        let max = subject.map_or(0, str::len);
        for &len in self.lengths.range(..=max).map(|(len, _)| len) {
            let key = match subject {
                Some(s) if s.is_char_boundary(len) => &s[..len],
                Some(_) => continue,
                None => "",
            };
            if let Some(ids) = self.by_prefix.get(key) {
                ids.iter().for_each(|id| f(*id));
            }
        }
    }
}

/// Finds the subscriptions whose filter matches an event without evaluating
/// every filter.
///
/// Filters are bucketed by lowercased event type (one bucket per listed
/// type, plus one for "all types"), and within a bucket by lowercased
/// `subjectBeginsWith` (case-sensitive filters too: an exact prefix is also a
/// lowercase prefix, and the full check runs afterwards). For an event,
/// [`matching`](Self::matching) looks up the event's type bucket and the
/// all-types bucket, probes each for the prefixes of the lowercased subject
/// (only at the prefix lengths that bucket actually holds), and runs
/// [`CompiledFilter::matches`] on those candidates only.
///
/// Cost per event: O(D · L) for the probes (D = distinct prefix lengths in
/// the two buckets, L = subject length, for hashing) plus O(C · A) for the
/// candidates (C candidates, A = cost of one full filter check) plus
/// O(k log k) to sort the k results; independent of subscriptions in other
/// type buckets or with non-matching prefixes. Insert and remove are
/// O(T · (P + log n)) for T listed event types and a prefix of length P.
#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    filters: HashMap<u64, CompiledFilter>,
    by_type: HashMap<String, PrefixBucket>,
    any_type: PrefixBucket,
}

impl SubscriptionIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds subscription `id` with `filter`, replacing any filter it had.
    pub fn insert(&mut self, id: u64, filter: CompiledFilter) {
        self.remove(id);
        match &filter.event_types {
            None => self.any_type.insert(&filter.index_prefix, id),
            Some(types) => {
                for t in types {
                    self.by_type
                        .entry(t.clone())
                        .or_default()
                        .insert(&filter.index_prefix, id);
                }
            }
        }
        self.filters.insert(id, filter);
    }

    /// Removes subscription `id`, returning its filter if it was present.
    pub fn remove(&mut self, id: u64) -> Option<CompiledFilter> {
        let filter = self.filters.remove(&id)?;
        match &filter.event_types {
            None => self.any_type.remove(&filter.index_prefix, id),
            Some(types) => {
                for t in types {
                    if let Some(bucket) = self.by_type.get_mut(t) {
                        bucket.remove(&filter.index_prefix, id);
                        if bucket.is_empty() {
                            self.by_type.remove(t);
                        }
                    }
                }
            }
        }
        Some(filter)
    }

    /// The filter of subscription `id`, if present.
    pub fn get(&self, id: u64) -> Option<&CompiledFilter> {
        self.filters.get(&id)
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Ids of the subscriptions matching `event`, ascending.
    pub fn matching(&self, event: &Value) -> Vec<u64> {
        let mut out = Vec::new();
        self.matching_into(event, &mut out);
        out
    }

    /// Like [`matching`](Self::matching), into a caller-provided vector
    /// (cleared first) so that its allocation can be reused.
    pub fn matching_into(&self, event: &Value, out: &mut Vec<u64>) {
        out.clear();
        self.candidates(event, |id| {
            if self.filters.get(&id).is_some_and(|f| f.matches(event)) {
                out.push(id);
            }
        });
        out.sort_unstable();
    }

    /// Calls `f` once for every candidate subscription of `event` (a
    /// superset of the matching ones, and each at most once).
    fn candidates(&self, event: &Value, mut f: impl FnMut(u64)) {
        let subject = event.get("subject").and_then(Value::as_str).map(lower_cow);
        let subject = subject.as_deref();
        self.any_type.candidates(subject, &mut f);
        if let Some(ty) = event.get("type").and_then(Value::as_str)
            && let Some(bucket) = self.by_type.get(lower_cow(ty).as_ref())
        {
            bucket.candidates(subject, &mut f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> CompiledFilter {
        serde_json::from_value::<Filter>(v)
            .expect("filter JSON")
            .compile()
            .expect("valid filter")
    }

    fn compile_err(v: Value) -> String {
        serde_json::from_value::<Filter>(v)
            .expect("filter JSON")
            .compile()
            .expect_err("invalid filter")
            .to_string()
    }

    /// One advanced filter on its own.
    fn adv(op: &str, key: &str, operand: Value) -> CompiledFilter {
        let mut f = json!({ "operatorType": op, "key": key });
        match op {
            "NumberLessThan"
            | "NumberGreaterThan"
            | "NumberLessThanOrEquals"
            | "NumberGreaterThanOrEquals"
            | "BoolEquals" => f["value"] = operand,
            "IsNullOrUndefined" | "IsNotNull" => {}
            _ => f["values"] = operand,
        }
        filter(json!({ "advancedFilters": [f] }))
    }

    fn adv_arrays(op: &str, key: &str, operand: Value) -> CompiledFilter {
        let mut f = adv(op, key, operand);
        f.arrays = true;
        f
    }

    fn event(data: Value) -> Value {
        json!({
            "specversion": "1.0", "id": "1", "source": "/src",
            "type": "Contoso.Items.ItemShipped", "subject": "/Orders/42/Item.JSON",
            "comexampleothervalue": 5, "comexampleext": "Value",
            "data": data,
        })
    }

    fn on(f: &CompiledFilter, x: Value) -> bool {
        f.matches(&event(json!({ "x": x })))
    }

    fn missing(f: &CompiledFilter) -> bool {
        f.matches(&event(json!({ "other": 1 })))
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = filter(json!({}));
        assert!(f.matches(&event(json!(null))));
        assert!(f.matches(&json!({})));
    }

    #[test]
    fn event_types_case_insensitive_and_all() {
        let f = filter(json!({ "includedEventTypes": ["contoso.items.itemshipped", "Other"] }));
        assert!(f.matches(&event(json!({}))));
        assert!(!f.matches(&json!({ "type": "Contoso.Items.ItemCreated" })));
        assert!(!f.matches(&json!({ "subject": "x" })), "no type");
        let all = filter(json!({ "includedEventTypes": ["ALL"] }));
        assert!(all.matches(&json!({ "type": "anything" })));
        assert!(all.matches(&json!({})));
    }

    #[test]
    fn subject_prefix_suffix_case_insensitive_by_default() {
        let f = filter(json!({ "subjectBeginsWith": "/orders/", "subjectEndsWith": ".json" }));
        assert!(f.matches(&event(json!({}))));
        assert!(!f.matches(&json!({ "subject": "/orders/1.xml" })));
        assert!(!f.matches(&json!({ "subject": "/items/1.json" })));
        assert!(!f.matches(&json!({ "type": "t" })), "no subject");
        assert!(!f.matches(&json!({ "subject": 5 })), "non-string subject");
        let empty = filter(json!({ "subjectBeginsWith": "", "subjectEndsWith": "" }));
        assert!(empty.matches(&json!({})), "empty strings are no condition");
    }

    #[test]
    fn subject_case_sensitive_flag() {
        let f = filter(
            json!({ "subjectBeginsWith": "/Orders/", "subjectEndsWith": ".JSON", "isSubjectCaseSensitive": true }),
        );
        assert!(f.matches(&event(json!({}))));
        assert!(!f.matches(&json!({ "subject": "/orders/42/item.json" })));
        let g = filter(json!({ "subjectEndsWith": ".json", "isSubjectCaseSensitive": true }));
        assert!(!g.matches(&event(json!({}))));
    }

    #[test]
    fn unicode_case_folding() {
        let f = adv("StringIn", "data.x", json!(["ÄRGER"]));
        assert!(on(&f, json!("ärger")));
        assert!(on(&f, json!("ÄrGeR")));
        let c = adv("StringContains", "data.x", json!(["ÉT"]));
        assert!(on(&c, json!("l'Été")));
        let e = adv("StringEndsWith", "data.x", json!(["ÉTÉ"]));
        assert!(on(&e, json!("l'été")));
        assert!(!on(&e, json!("l'étéx")));
        let s = filter(json!({ "subjectBeginsWith": "/ÄB" }));
        assert!(s.matches(&json!({ "subject": "/äb/c" })));
    }

    #[test]
    fn number_in_and_not_in() {
        let f = adv("NumberIn", "data.x", json!([5, 1.5]));
        assert!(on(&f, json!(5)));
        assert!(on(&f, json!(5.0)));
        assert!(on(&f, json!(1.5)));
        assert!(!on(&f, json!(2)));
        assert!(!missing(&f));
        let n = adv("NumberNotIn", "data.x", json!([41, 0]));
        assert!(on(&n, json!(7)));
        assert!(!on(&n, json!(41)));
        assert!(!on(&n, json!(0)));
        assert!(missing(&n), "NumberNotIn passes on a missing key");
    }

    #[test]
    fn number_comparisons() {
        let cases = [
            ("NumberLessThan", 10, [(9, true), (10, false), (11, false)]),
            (
                "NumberLessThanOrEquals",
                10,
                [(9, true), (10, true), (11, false)],
            ),
            (
                "NumberGreaterThan",
                10,
                [(9, false), (10, false), (11, true)],
            ),
            (
                "NumberGreaterThanOrEquals",
                10,
                [(9, false), (10, true), (11, true)],
            ),
        ];
        for (op, limit, checks) in cases {
            let f = adv(op, "data.x", json!(limit));
            for (x, want) in checks {
                assert_eq!(on(&f, json!(x)), want, "{op} {limit} on {x}");
            }
            assert!(!missing(&f), "{op} fails on a missing key");
            assert!(!on(&f, json!("9")), "{op} ignores strings");
            assert!(!on(&f, json!(null)), "{op} fails on null");
        }
        let neg = adv("NumberGreaterThan", "data.x", json!(-2.5));
        assert!(on(&neg, json!(-2)));
        assert!(!on(&neg, json!(-3)));
    }

    #[test]
    fn number_ranges_inclusive() {
        let f = adv(
            "NumberInRange",
            "data.x",
            json!([[3.5, 999.95], [3000, 4000]]),
        );
        for (x, want) in [
            (3.5, true),
            (500.0, true),
            (999.95, true),
            (1000.0, false),
            (3000.0, true),
            (4000.0, true),
            (4000.5, false),
            (0.0, false),
        ] {
            assert_eq!(on(&f, json!(x)), want, "in range {x}");
        }
        assert!(!missing(&f));
        let n = adv("NumberNotInRange", "data.x", json!([[0, 10]]));
        assert!(on(&n, json!(11)));
        assert!(!on(&n, json!(0)));
        assert!(!on(&n, json!(10)));
        assert!(
            missing(&n),
            "NumberNotInRange passes on a missing key (our choice)"
        );
        assert!(
            on(&n, json!("5")),
            "wrong type is ignored, so the Not operator passes"
        );
    }

    #[test]
    fn bool_equals() {
        let f = adv("BoolEquals", "data.x", json!(true));
        assert!(on(&f, json!(true)));
        assert!(!on(&f, json!(false)));
        assert!(!on(&f, json!("true")), "strings are not booleans");
        assert!(!on(&f, json!(1)));
        assert!(!missing(&f));
        let g = adv("BoolEquals", "data.x", json!(false));
        assert!(on(&g, json!(false)));
    }

    #[test]
    fn string_in_and_not_in() {
        let f = adv("StringIn", "data.x", json!(["contoso", "Fabrikam"]));
        assert!(on(&f, json!("CONTOSO")));
        assert!(on(&f, json!("fabrikam")));
        assert!(!on(&f, json!("contoso2")));
        assert!(!missing(&f));
        let n = adv("StringNotIn", "data.x", json!(["aws", "bridge"]));
        assert!(on(&n, json!("azure")));
        assert!(!on(&n, json!("AWS")));
        assert!(missing(&n), "StringNotIn passes on a missing key");
        assert!(on(&n, json!(null)), "null counts as missing");
    }

    #[test]
    fn string_contains_begins_ends() {
        let c = adv("StringContains", "data.x", json!(["microsoft", "azure"]));
        assert!(on(&c, json!("Azure Data Factory")));
        assert!(!on(&c, json!("aws")));
        let b = adv("StringBeginsWith", "data.x", json!(["event", "message"]));
        assert!(on(&b, json!("Event Hubs")));
        assert!(!on(&b, json!("hubs event")));
        let e = adv("StringEndsWith", "data.x", json!(["jpg", "png"]));
        assert!(on(&e, json!("eventgrid.PNG")));
        assert!(!on(&e, json!("png.txt")));
        for f in [&c, &b, &e] {
            assert!(!missing(f));
            assert!(!on(f, json!(null)));
        }
    }

    #[test]
    fn string_negations_fail_on_missing_key() {
        let nc = adv(
            "StringNotContains",
            "data.x",
            json!(["contoso", "fabrikam"]),
        );
        assert!(on(&nc, json!("azure")));
        assert!(!on(&nc, json!("big CONTOSO inc")));
        let nb = adv("StringNotBeginsWith", "data.x", json!(["event"]));
        assert!(on(&nb, json!("hubs")));
        assert!(!on(&nb, json!("Events")));
        let ne = adv("StringNotEndsWith", "data.x", json!(["jpg"]));
        assert!(on(&ne, json!("a.png")));
        assert!(!on(&ne, json!("a.JPG")));
        for f in [&nc, &nb, &ne] {
            assert!(!missing(f), "documented: missing key fails {f:?}");
            assert!(!on(f, json!(null)));
        }
    }

    #[test]
    fn null_checks() {
        let f = adv("IsNullOrUndefined", "data.x", json!(null));
        assert!(missing(&f));
        assert!(on(&f, json!(null)));
        assert!(!on(&f, json!(0)));
        assert!(!on(&f, json!("")));
        assert!(!on(&f, json!([])));
        let g = adv("IsNotNull", "data.x", json!(null));
        assert!(!missing(&g));
        assert!(!on(&g, json!(null)));
        assert!(on(&g, json!(false)));
        assert!(on(&g, json!({ "a": 1 })));
        assert!(on(&g, json!([1])));
        let data_missing = json!({ "type": "t" });
        assert!(f.matches(&data_missing));
        assert!(!g.matches(&data_missing));
        let data_not_object = json!({ "data": "text" });
        assert!(
            f.matches(&data_not_object),
            "path through a string is undefined"
        );
    }

    #[test]
    fn type_mismatches() {
        let num = adv("NumberIn", "data.x", json!([5]));
        assert!(!on(&num, json!("5")), "NumberIn does not parse strings");
        assert!(!on(&num, json!(true)));
        assert!(!on(&num, json!({ "v": 5 })));
        let not_num = adv("NumberNotIn", "data.x", json!([5]));
        assert!(
            on(&not_num, json!("5")),
            "mismatched type ignored: nothing excluded"
        );
        assert!(
            !on(&not_num, json!({ "v": 5 })),
            "objects fail every operator"
        );
        // String operators see numbers and booleans as their JSON text.
        let s = adv("StringContains", "data.x", json!(["23"]));
        assert!(on(&s, json!(1234)));
        assert!(!on(&s, json!(1324)));
        let si = adv("StringIn", "data.x", json!(["TRUE", "2.5"]));
        assert!(on(&si, json!(true)));
        assert!(on(&si, json!(2.5)));
        assert!(!on(&si, json!(false)));
        let text = json!(f64::MAX).to_string();
        assert!(text.len() > 20, "{text}");
        let big = adv("StringIn", "data.x", json!([text]));
        assert!(on(&big, json!(f64::MAX)), "long numbers format correctly");
        assert!(!on(&s, json!({ "a": "23" })), "objects are never strings");
    }

    #[test]
    fn arrays_need_the_flag() {
        let tags = json!(["urgent", "Customer", 7, null, { "o": 1 }]);
        let off = adv("StringIn", "data.x", json!(["customer"]));
        assert!(
            !on(&off, tags.clone()),
            "arrays fail without enableAdvancedFilteringOnArrays"
        );
        let off_not = adv("StringNotIn", "data.x", json!(["nope"]));
        assert!(!on(&off_not, tags.clone()));
        assert!(on(&adv("IsNotNull", "data.x", json!(null)), tags.clone()));

        let f = adv_arrays("StringIn", "data.x", json!(["customer"]));
        assert!(on(&f, tags.clone()), "any element matches");
        assert!(!on(&f, json!(["a", "b"])));
        assert!(!on(&f, json!([])));
        let not = adv_arrays("StringNotIn", "data.x", json!(["urgent"]));
        assert!(!on(&not, tags.clone()), "one element matches: Not fails");
        assert!(on(&not, json!(["calm", "quiet"])));
        assert!(on(&not, json!([])), "empty array: nothing matches");
        let num = adv_arrays("NumberGreaterThan", "data.x", json!(6));
        assert!(on(&num, tags.clone()), "7 > 6, strings ignored");
        assert!(!on(&num, json!(["100", 1])));
        let range = adv_arrays("NumberNotInRange", "data.x", json!([[0, 5]]));
        assert!(on(&range, json!([6, 7])));
        assert!(!on(&range, json!([6, 3])));
        let b = adv_arrays("BoolEquals", "data.x", json!(true));
        assert!(on(&b, json!([false, true])));
        let serde_flag = filter(json!({
            "enableAdvancedFilteringOnArrays": true,
            "advancedFilters": [{ "operatorType": "StringContains", "key": "data.x", "values": ["URG"] }]
        }));
        assert!(on(&serde_flag, tags));
    }

    #[test]
    fn nested_keys_attributes_and_extensions() {
        let f = adv(
            "StringIn",
            "Data.appEventTypeDetail.action",
            json!(["started"]),
        );
        assert!(f.matches(&event(
            json!({ "appEventTypeDetail": { "action": "Started" } })
        )));
        assert!(
            !f.matches(&event(
                json!({ "appEventTypeDetail": { "Action": "Started" } })
            )),
            "data property names are exact"
        );
        assert!(!f.matches(&event(json!({ "appEventTypeDetail": "Started" }))));
        let deep = adv("NumberIn", "data.a.b.c.d.e.f.g.h.i", json!([1]));
        let ev = event(
            json!({ "a": { "b": { "c": { "d": { "e": { "f": { "g": { "h": { "i": 1 } } } } } } } } }),
        );
        assert!(deep.matches(&ev));
        let src = adv("StringBeginsWith", "Source", json!(["/SR"]));
        assert!(src.matches(&event(json!({}))));
        let ext = adv(
            "StringBeginsWith",
            "comexampleothervalue",
            json!(["5", "1"]),
        );
        assert!(
            ext.matches(&event(json!({}))),
            "numeric extension, string operator (docs example)"
        );
        let ext_num = adv("NumberIn", "comexampleothervalue", json!([5]));
        assert!(ext_num.matches(&event(json!({}))));
        let ext_str = adv("StringIn", "ComExampleExt", json!(["value"]));
        assert!(ext_str.matches(&event(json!({}))));
        let absent_ext = adv("StringNotIn", "nosuchext", json!(["x"]));
        assert!(absent_ext.matches(&event(json!({}))));
        let ty = adv("StringEndsWith", "type", json!(["shipped"]));
        assert!(ty.matches(&event(json!({}))));
    }

    #[test]
    fn advanced_filters_are_anded_and_combined_with_basics() {
        let f = filter(json!({
            "includedEventTypes": ["Contoso.Items.ItemShipped"],
            "subjectBeginsWith": "/orders/",
            "advancedFilters": [
                { "operatorType": "NumberGreaterThan", "key": "data.total", "value": 100 },
                { "operatorType": "StringIn", "key": "data.region", "values": ["eu", "us"] },
                { "operatorType": "StringContains", "key": "subject", "values": ["/42/"] }
            ]
        }));
        assert!(f.matches(&event(json!({ "total": 101, "region": "EU" }))));
        assert!(!f.matches(&event(json!({ "total": 100, "region": "EU" }))));
        assert!(!f.matches(&event(json!({ "total": 101, "region": "asia" }))));
        let mut other = event(json!({ "total": 101, "region": "EU" }));
        other["type"] = json!("Contoso.Items.ItemCreated");
        assert!(!f.matches(&other));
        other["type"] = json!("contoso.items.itemshipped");
        other["subject"] = json!("/orders/43/x");
        assert!(!f.matches(&other));
    }

    #[test]
    fn serde_round_trip_uses_event_grid_names() {
        let v = json!({
            "includedEventTypes": ["A"],
            "subjectBeginsWith": "/a",
            "subjectEndsWith": ".b",
            "isSubjectCaseSensitive": true,
            "advancedFilters": [{ "operatorType": "NumberLessThan", "key": "data.x", "value": 3 }]
        });
        let f: Filter = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&f).unwrap(), v);
        assert_eq!(
            serde_json::to_value(Filter::default()).unwrap(),
            json!({ "isSubjectCaseSensitive": false })
        );
    }

    #[test]
    fn validation_operator_and_key_errors() {
        let e = compile_err(
            json!({ "advancedFilters": [{ "operatorType": "NumberEquals", "key": "data.x", "value": 1 }] }),
        );
        assert!(
            e.contains("advancedFilters[0]") && e.contains("NumberEquals"),
            "{e}"
        );
        assert!(
            e.contains("NumberIn") && e.contains("IsNotNull") && e.contains("StringNotEndsWith"),
            "{e}"
        );
        // Operator names are accepted in any case.
        filter(
            json!({ "advancedFilters": [{ "operatorType": "numberin", "key": "data.x", "values": [1] }] }),
        );

        let key_err = |key: &str| {
            compile_err(json!({ "advancedFilters": [
                { "operatorType": "IsNotNull", "key": "data.ok" },
                { "operatorType": "StringIn", "key": key, "values": ["a"] }
            ] }))
        };
        let e = key_err("");
        assert!(
            e.contains("advancedFilters[1]")
                && e.contains("empty")
                && e.contains("data.<property>"),
            "{e}"
        );
        let e = key_err("data");
        assert!(e.contains("name a property"), "{e}");
        let e = key_err("data..x");
        assert!(e.contains("empty segment"), "{e}");
        let e = key_err("data.a.b.c.d.e.f.g.h.i.j");
        assert!(e.contains("11 segments") && e.contains("at most 10"), "{e}");
        let e = key_err("my_attr");
        assert!(
            e.contains("not a CloudEvents attribute") && e.contains("specversion"),
            "{e}"
        );
        let e = key_err("averyveryverylongextension");
        assert!(e.contains("not a CloudEvents attribute"), "{e}");
        let e = key_err("source.host");
        assert!(e.contains("only keys under `data` can be nested"), "{e}");
    }

    #[test]
    fn validation_value_shape_errors() {
        let err = |f: Value| compile_err(json!({ "advancedFilters": [f] }));
        let e = err(json!({ "operatorType": "NumberIn", "key": "data.x", "values": [1, "2"] }));
        assert!(
            e.contains("advancedFilters[0]")
                && e.contains("data.x")
                && e.contains("values[1] must be a number")
                && e.contains("string \"2\""),
            "{e}"
        );
        let e = err(json!({ "operatorType": "NumberLessThan", "key": "data.x", "values": [1] }));
        assert!(e.contains("single `value`, not `values`"), "{e}");
        let e = err(json!({ "operatorType": "NumberLessThan", "key": "data.x" }));
        assert!(e.contains("needs exactly one `value`"), "{e}");
        let e = err(json!({ "operatorType": "NumberLessThan", "key": "data.x", "value": "3" }));
        assert!(e.contains("value must be a number"), "{e}");
        let e = err(json!({ "operatorType": "StringIn", "key": "data.x", "value": "a" }));
        assert!(e.contains("takes `values`, a list, not `value`"), "{e}");
        let e = err(json!({ "operatorType": "StringIn", "key": "data.x", "values": [] }));
        assert!(e.contains("`values` is empty"), "{e}");
        let e = err(json!({ "operatorType": "StringIn", "key": "data.x", "values": [5] }));
        assert!(
            e.contains("values[0] must be a string") && e.contains("quote numbers"),
            "{e}"
        );
        let e = err(
            json!({ "operatorType": "StringIn", "key": "data.x", "values": ["x".repeat(513)] }),
        );
        assert!(e.contains("513 characters") && e.contains("512"), "{e}");
        let e = err(json!({ "operatorType": "BoolEquals", "key": "data.x", "value": "true" }));
        assert!(e.contains("must be a boolean"), "{e}");
        let e = err(json!({ "operatorType": "IsNotNull", "key": "data.x", "value": 1 }));
        assert!(e.contains("neither `value` nor `values`"), "{e}");
        let e =
            err(json!({ "operatorType": "NumberInRange", "key": "data.x", "values": [[1, 2], 3] }));
        assert!(e.contains("values[1] must be a [min, max] pair"), "{e}");
        let e =
            err(json!({ "operatorType": "NumberInRange", "key": "data.x", "values": [[5, 1]] }));
        assert!(
            e.contains("min exceeds its max") && e.contains("[1, 5]"),
            "{e}"
        );
        let e = err(
            json!({ "operatorType": "NumberNotInRange", "key": "data.x", "values": [[1, "b"]] }),
        );
        assert!(e.contains("values[0][1] must be a number"), "{e}");
    }

    #[test]
    fn validation_limits_and_event_types() {
        let many: Vec<Value> = (0..26)
            .map(|i| json!({ "operatorType": "IsNotNull", "key": format!("data.k{i}") }))
            .collect();
        let e = compile_err(json!({ "advancedFilters": many }));
        assert!(e.contains("26 given") && e.contains("at most 25"), "{e}");
        let ok: Vec<Value> = (0..25)
            .map(|i| json!({ "operatorType": "IsNotNull", "key": format!("data.k{i}") }))
            .collect();
        filter(json!({ "advancedFilters": ok }));
        let e = compile_err(json!({ "advancedFilters": [
            { "operatorType": "NumberIn", "key": "data.a", "values": (0..20).collect::<Vec<_>>() },
            { "operatorType": "NumberIn", "key": "data.b", "values": (0..6).collect::<Vec<_>>() }
        ] }));
        assert!(e.contains("26 given across all advanced filters"), "{e}");
        let e = compile_err(json!({ "includedEventTypes": [] }));
        assert!(
            e.contains("includedEventTypes") && e.contains("omit it"),
            "{e}"
        );
        let e = compile_err(json!({ "includedEventTypes": ["a", ""] }));
        assert!(e.contains("includedEventTypes[1]"), "{e}");
    }

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len() as u64) as usize]
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    fn recase(rng: &mut Rng, s: &str) -> String {
        s.chars()
            .map(|c| {
                if rng.chance(30) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    const TYPES: &[&str] = &[
        "orders.created",
        "orders.shipped",
        "items.deleted",
        "items.created",
        "users.signup",
        "billing.paid",
        "billing.failed",
        "audit.log",
    ];
    const SEGMENTS: &[&str] = &["a", "b", "orders", "items", "x1", "Ünï"];

    fn random_path(rng: &mut Rng, max_depth: u64) -> String {
        let depth = 1 + rng.below(max_depth);
        (0..depth)
            .map(|_| format!("/{}", rng.pick(SEGMENTS)))
            .collect()
    }

    fn random_filter(rng: &mut Rng) -> Filter {
        let mut f = Filter::default();
        if rng.chance(80) {
            let n = 1 + rng.below(3);
            f.included_event_types = Some(
                (0..n)
                    .map(|_| {
                        let t = rng.pick(TYPES);
                        recase(rng, t)
                    })
                    .collect(),
            );
        }
        if rng.chance(70) {
            let mut p = random_path(rng, 3);
            if rng.chance(30) {
                p.pop();
            }
            f.subject_begins_with = Some(recase(rng, &p));
        }
        if rng.chance(20) {
            let suffix = rng_suffix(rng);
            f.subject_ends_with = Some(recase(rng, suffix));
        }
        f.is_subject_case_sensitive = rng.chance(20);
        f.enable_advanced_filtering_on_arrays = rng.chance(50);
        for _ in 0..rng.below(3) {
            let k = rng.below(4);
            let af = match k {
                0 => {
                    json!({ "operatorType": "NumberGreaterThan", "key": "data.n", "value": rng.below(10) })
                }
                1 => {
                    json!({ "operatorType": "StringNotIn", "key": "data.s", "values": [rng.pick(&["red", "green", "blue"])] })
                }
                2 => {
                    json!({ "operatorType": "NumberInRange", "key": "data.list", "values": [[rng.below(5), 5 + rng.below(5)]] })
                }
                _ => json!({ "operatorType": "IsNullOrUndefined", "key": "comexampleflag" }),
            };
            f.advanced_filters.push(serde_json::from_value(af).unwrap());
        }
        f
    }

    fn rng_suffix(rng: &mut Rng) -> &'static str {
        ["1", "a", "/b", "s", "ï"][rng.below(5) as usize]
    }

    fn random_event(rng: &mut Rng) -> Value {
        let mut e = json!({ "specversion": "1.0", "id": "x", "source": "/s" });
        if rng.chance(95) {
            let t = if rng.chance(90) {
                rng.pick(TYPES).to_owned()
            } else {
                "unknown.type".to_owned()
            };
            e["type"] = json!(recase(rng, &t));
        }
        if rng.chance(90) {
            let p = random_path(rng, 5);
            e["subject"] = json!(recase(rng, &p));
        }
        if rng.chance(30) {
            e["comexampleflag"] = json!(true);
        }
        e["data"] = json!({
            "n": rng.below(12),
            "s": rng.pick(&["red", "Green", "BLUE", "black"]),
            "list": (0..rng.below(4)).map(|_| rng.below(12)).collect::<Vec<_>>(),
        });
        e
    }

    #[test]
    fn index_agrees_with_brute_force() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut index = SubscriptionIndex::new();
        let mut all: Vec<(u64, CompiledFilter)> = Vec::new();
        for id in 0..10_000u64 {
            let f = random_filter(&mut rng)
                .compile()
                .expect("generated filters are valid");
            index.insert(id * 7 + 3, f.clone());
            all.push((id * 7 + 3, f));
        }
        // Replace and remove some, keeping the brute-force list in step.
        for i in (0..all.len()).step_by(13) {
            let id = all[i].0;
            if i % 2 == 0 {
                assert!(index.remove(id).is_some());
                all[i].1 = filter(json!({ "includedEventTypes": ["never.sent"] }));
            } else {
                let f = random_filter(&mut rng).compile().unwrap();
                index.insert(id, f.clone());
                all[i].1 = f;
            }
        }
        all.retain(|(id, _)| index.get(*id).is_some());
        assert_eq!(index.len(), all.len());

        let (mut total_matches, mut total_candidates) = (0usize, 0usize);
        let mut out = Vec::new();
        let events = 300;
        for _ in 0..events {
            let ev = random_event(&mut rng);
            let mut expected: Vec<u64> = all
                .iter()
                .filter(|(_, f)| f.matches(&ev))
                .map(|(id, _)| *id)
                .collect();
            expected.sort_unstable();
            index.matching_into(&ev, &mut out);
            assert_eq!(out, expected, "event {ev}");
            assert_eq!(index.matching(&ev), expected);
            let mut seen = std::collections::HashSet::new();
            index.candidates(&ev, |id| {
                assert!(seen.insert(id), "candidate {id} reported twice");
            });
            total_candidates += seen.len();
            total_matches += expected.len();
        }
        assert!(
            total_matches > events,
            "the generator should produce matches: {total_matches}"
        );
        // The index must prune: far fewer candidates than subscriptions.
        assert!(
            total_candidates < events * all.len() / 5,
            "{total_candidates} candidates for {events} events over {} subscriptions",
            all.len()
        );
    }

    #[test]
    fn index_insert_replace_remove() {
        let mut index = SubscriptionIndex::new();
        assert!(index.is_empty());
        index.insert(
            1,
            filter(json!({ "includedEventTypes": ["A"], "subjectBeginsWith": "/x" })),
        );
        index.insert(2, filter(json!({})));
        index.insert(
            3,
            filter(json!({ "subjectBeginsWith": "/X/Y", "isSubjectCaseSensitive": true })),
        );
        let ev = json!({ "type": "a", "subject": "/X/Y/z" });
        assert_eq!(index.matching(&ev), vec![1, 2, 3]);
        assert_eq!(
            index.matching(&json!({ "type": "a", "subject": "/x/y" })),
            vec![1, 2]
        );
        assert_eq!(index.matching(&json!({ "type": "b" })), vec![2]);
        index.insert(1, filter(json!({ "includedEventTypes": ["B"] })));
        assert_eq!(index.matching(&ev), vec![2, 3]);
        assert_eq!(index.matching(&json!({ "type": "B" })), vec![1, 2]);
        assert!(index.remove(2).is_some());
        assert!(index.remove(2).is_none());
        assert_eq!(index.matching(&ev), vec![3]);
        index.remove(1);
        index.remove(3);
        assert!(index.is_empty() && index.by_type.is_empty() && index.any_type.is_empty());
        assert!(index.any_type.lengths.is_empty());
    }
}
