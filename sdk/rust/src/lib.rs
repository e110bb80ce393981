//! Write wasmgrid algorithms in Rust.
//!
//! An algorithm is a WebAssembly component of the world
//! `wasmgrid:algorithm/algorithm@0.1.0` (see `wit/algorithm.wit`): it exports one
//! function, `handler.apply`, that turns an input payload into an output payload or
//! a typed error. This crate hides the generated WIT bindings: an algorithm is a
//! plain Rust function from [`Input`] to `Result<impl Into<Output>, Error>`,
//! registered with [`algorithm!`]. Guest crates depend on `wasmgrid-sdk` only (not
//! on `wit-bindgen`).
//!
//! # Example
//!
//! `Cargo.toml` of the guest:
//!
//! ```toml
//! [package]
//! name = "word-count"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! wasmgrid-sdk = { path = "../../sdk/rust" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use wasmgrid_sdk::{Error, Input, Output};
//!
//! #[derive(Deserialize)]
//! struct Request {
//!     text: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Response {
//!     words: usize,
//! }
//!
//! fn apply(input: Input) -> Result<Output, Error> {
//!     // JSON input: {"text": "..."}; plain text is counted directly.
//!     let text = if input.is_json() {
//!         input.json::<Request>()?.text
//!     } else {
//!         input.text()?.to_owned()
//!     };
//!     if text.is_empty() {
//!         return Err(Error::invalid_input("`text` must not be empty"));
//!     }
//!     if let Some(event) = input.trigger() {
//!         // Printed lines are captured per call (`?stdout=true`).
//!         println!("triggered by event {} from {}", event.id, event.source);
//!     }
//!     Output::json(&Response {
//!         words: text.split_whitespace().count(),
//!     })
//! }
//!
//! wasmgrid_sdk::algorithm!(apply);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/word_count.wasm`.
//!
//! # Failures
//!
//! Return an [`Error`] for failures the caller should see as a typed error:
//! [`Error::invalid_input`] (bad input, never retried), [`Error::permanent`]
//! (retrying won't help) or [`Error::transient`] (may succeed later; event
//! deliveries are retried). A panic is not an error value: it prints its message
//! to stderr and traps (the wasm32 targets abort on panic), and the host reports
//! the call as a crash.
//!
//! # Host interfaces
//!
//! - [`data`]: read, write, delete and list files of the hosted data
//!   collections (`data://owner/collection/path`). Its [`data::DataError`]
//!   converts into an [`Error`], so `?` works in `apply`.
//! - [`secrets`]: the algorithm's secrets, e.g. an API token.
//! - [`keyvalue`]: `wasi:keyvalue` (store, atomics, batch) over the same
//!   collections.
//!
//! A component imports only the host interfaces it calls: an algorithm that
//! never touches [`data`] does not import `wasmgrid:algorithm/data`.
//!
//! ```no_run
//! use wasmgrid_sdk::keyvalue::{atomics, store};
//! use wasmgrid_sdk::serde_json::{Value, json};
//! use wasmgrid_sdk::{Error, Input, Output, data, secrets};
//!
//! fn apply(_input: Input) -> Result<Output, Error> {
//!     // Hosted data collections (`data://owner/collection/path`); `DataError`
//!     // converts into `Error`, so `?` works (store-unavailable is transient,
//!     // everything else permanent).
//!     let config: Value = data::get_json("data://.my/config/settings.json")?;
//!     data::put_text("data://.my/out/result.txt", "done")?;
//!     for file in data::list("data://.my/in/") {
//!         println!("{}", file?.uri);
//!     }
//!     // Secrets set by the owner (`PUT /v1/algorithms/{owner}/{name}/secrets/{key}`).
//!     let token = secrets::get("API_TOKEN");
//!     // wasi:keyvalue over the same collections ("owner/collection" buckets).
//!     let bucket = store::open(".my/counters")?;
//!     let n = atomics::increment(&bucket, "calls", 1)?;
//!     Output::json(&json!({ "calls": n, "config": config, "has_token": token.is_some() }))
//! }
//!
//! wasmgrid_sdk::algorithm!(apply);
//! ```

#![warn(missing_docs)]

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod algo;
pub mod data;
pub mod events;
pub mod secrets;

/// `wasi:keyvalue` 0.2.0-draft (`store`, `atomics`, `batch`): a key-value view of
/// the hosted data collections, so guests need no wit-bindgen of their own.
///
/// [`store::open`](keyvalue::store::open)`("owner/collection")` opens a
/// collection as a bucket (`".my/collection"` for the algorithm's own owner), with
/// the same grants and ACLs as [`data`]: a key is a file's path in that
/// collection. [`store::Bucket`](keyvalue::store::Bucket) has `get`, `set`,
/// `delete`, `exists` and `list_keys`; [`atomics::increment`](keyvalue::atomics::increment)
/// and the [`batch`](keyvalue::batch) functions take a `&Bucket`.
///
/// A [`keyvalue::store::Error`] converts into a permanent [`Error`] (see the
/// `From` impl), so `?` works inside an algorithm.
///
/// ```no_run
/// use wasmgrid_sdk::keyvalue::{atomics, batch, store};
/// use wasmgrid_sdk::{Error, Input};
///
/// fn apply(input: Input) -> Result<String, Error> {
///     let bucket = store::open(".my/counters")?;
///     let visits = atomics::increment(&bucket, "visits", 1)?;
///     bucket.set("last-visitor", input.bytes())?;
///     let last = bucket.get("last-visitor")?; // Some(bytes)
///     batch::set_many(&bucket, &[("a", b"1".as_slice()), ("b", b"2".as_slice())])?;
///     let page = bucket.list_keys(None)?; // page.keys, page.cursor
///     Ok(format!("visit {visits}, {} keys", page.keys.len()))
/// }
///
/// wasmgrid_sdk::algorithm!(apply);
/// ```
#[doc(inline)]
pub use __private::bindings::wasi::keyvalue;

/// A `wasi:keyvalue` failure as a permanent error: `keyvalue: no such store
/// ...`, `keyvalue: access denied ...` or `keyvalue: <host message>`. The
/// keyvalue error does not say whether retrying can help; where it can, map the
/// error yourself, e.g. `.map_err(|e| Error::transient(e.to_string()))`.
/// A WIT `error` from a host call (`algo.call`, `events.publish`) keeps its case.
impl From<__private::WitError> for Error {
    fn from(e: __private::WitError) -> Error {
        match e {
            __private::WitError::InvalidInput(m) => Error::invalid_input(m),
            __private::WitError::Permanent(m) => Error::permanent(m),
            __private::WitError::Transient(m) => Error::transient(m),
        }
    }
}

impl From<keyvalue::store::Error> for Error {
    fn from(e: keyvalue::store::Error) -> Error {
        use keyvalue::store::Error as KvError;
        let message = match e {
            KvError::NoSuchStore => String::from(
                "keyvalue: no such store (open a bucket as \"owner/collection\", e.g. \".my/counters\")",
            ),
            KvError::AccessDenied => {
                String::from("keyvalue: access denied (no grant or ACL permission for this bucket)")
            }
            KvError::Other(message) => format!("keyvalue: {message}"),
        };
        Error::permanent(message)
    }
}

/// The `serde_json` crate the SDK uses (for [`serde_json::Value`] and the
/// [`serde_json::json!`] macro), so guests need not depend on it themselves.
pub use serde_json;

/// The media types the host uses for payloads, for use with
/// [`Output::with_content_type`] and comparisons.
pub mod media_type {
    /// UTF-8 JSON: `application/json`.
    pub const JSON: &str = "application/json";
    /// UTF-8 text: `text/plain`.
    pub const TEXT: &str = "text/plain";
    /// Arbitrary bytes: `application/octet-stream`.
    pub const OCTET_STREAM: &str = "application/octet-stream";

    /// The media type of `content_type` without parameters, trimmed and in
    /// lower case: `"Application/JSON; charset=utf-8"` gives
    /// `"application/json"`.
    pub fn essence(content_type: &str) -> String {
        content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// Whether `content_type` is a JSON media type: `application/json` or a
    /// `+json` structured syntax suffix (e.g. `application/cloudevents+json`),
    /// ignoring parameters and case.
    pub fn is_json(content_type: &str) -> bool {
        let essence = essence(content_type);
        essence == JSON || essence.ends_with("+json")
    }
}

/// The `CloudEvents` 1.0 attributes of the event whose delivery caused a call
/// (mirrors the WIT record `wasmgrid:algorithm/types.event`).
///
/// The event's `data` is not here: it is the call's [`Input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `id`: unique per `source`.
    pub id: String,
    /// `source`: a URI reference naming the producer.
    pub source: String,
    /// `type`, e.g. `wasmgrid.data.FileCreated`.
    pub ty: String,
    /// `subject`: what the event is about within the source, if set.
    pub subject: Option<String>,
    /// `time`: RFC 3339 timestamp of the occurrence, if set.
    pub time: Option<String>,
    /// `datacontenttype`: the media type of the data, if set.
    pub data_content_type: Option<String>,
    /// Extension attributes (e.g. `traceparent`) as name/value pairs, in the
    /// order the event carried them.
    pub extensions: Vec<(String, String)>,
}

impl Event {
    /// The value of the first extension attribute called `name`, if any.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The input of one call: the payload (media type and bytes) plus the event that
/// triggered the call, if a single event delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    content_type: String,
    body: Vec<u8>,
    trigger: Option<Event>,
}

impl Input {
    /// An input with the given media type and bytes and no trigger. The host
    /// builds inputs for real calls; this is for unit tests of algorithms.
    #[must_use]
    pub fn new(content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Input {
        Input {
            content_type: content_type.into(),
            body: body.into(),
            trigger: None,
        }
    }

    /// This input with `trigger` set to `event` (for unit tests).
    #[must_use]
    pub fn with_trigger(mut self, event: Event) -> Input {
        self.trigger = Some(event);
        self
    }

    /// The media type of the payload as the host set it: `application/json`,
    /// `text/plain` or `application/octet-stream` (possibly with parameters such
    /// as `; charset=utf-8`).
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The raw bytes of the payload.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The raw bytes of the payload, without copying.
    pub fn into_bytes(self) -> Vec<u8> {
        self.body
    }

    /// The payload as UTF-8 text, whatever its content type (a JSON payload gives
    /// its JSON source text, e.g. `"Ada"` with the quotes).
    ///
    /// # Errors
    ///
    /// An [`Error::invalid_input`] if the bytes are not valid UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::invalid_input(format!("input is not valid UTF-8 text: {e}")))
    }

    /// The payload parsed as JSON into `T`. The bytes are parsed whatever the
    /// content type says; check [`Input::is_json`] first to accept JSON only.
    ///
    /// # Errors
    ///
    /// An [`Error::invalid_input`] naming the problem serde reported (syntax
    /// error, wrong type, missing field, ...) with its line and column.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::invalid_input(format!("input is not the expected JSON: {e}")))
    }

    /// The event whose delivery caused this call; `None` for direct HTTP/CLI
    /// calls and for batched deliveries (whose input is a JSON array of
    /// CloudEvents).
    pub fn trigger(&self) -> Option<&Event> {
        self.trigger.as_ref()
    }

    /// Whether the content type says JSON (`application/json` or a `+json`
    /// media type, ignoring parameters and case).
    pub fn is_json(&self) -> bool {
        media_type::is_json(&self.content_type)
    }
}

/// The successful result of a call: bytes plus the media type that says how to
/// read them (the HTTP API returns a JSON value for `application/json`, a string
/// for `text/plain` and base64 for anything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    content_type: String,
    body: Vec<u8>,
}

impl Output {
    /// `value` serialized as JSON (`application/json`).
    ///
    /// # Errors
    ///
    /// An [`Error::permanent`] if `value` cannot be serialized (e.g. a map with
    /// non-string keys): the same input would fail again, so retrying is useless.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Output, Error> {
        serde_json::to_vec(value)
            .map(|body| Output::with_content_type(media_type::JSON, body))
            .map_err(|e| Error::permanent(format!("cannot serialize the output as JSON: {e}")))
    }

    /// UTF-8 text (`text/plain`).
    #[must_use]
    pub fn text(text: impl Into<String>) -> Output {
        Output::with_content_type(media_type::TEXT, text.into().into_bytes())
    }

    /// Arbitrary bytes (`application/octet-stream`).
    #[must_use]
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Output {
        Output::with_content_type(media_type::OCTET_STREAM, bytes)
    }

    /// Bytes with an explicit media type, e.g. `"text/csv"`.
    #[must_use]
    pub fn with_content_type(content_type: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Output {
        Output {
            content_type: content_type.into(),
            body: bytes.into(),
        }
    }

    /// The media type of the output.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The bytes of the output (for unit tests).
    pub fn as_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The bytes of the output, without copying.
    pub fn into_bytes(self) -> Vec<u8> {
        self.body
    }
}

/// Text output (`text/plain`).
impl From<String> for Output {
    fn from(text: String) -> Output {
        Output::text(text)
    }
}

/// Text output (`text/plain`).
impl From<&str> for Output {
    fn from(text: &str) -> Output {
        Output::text(text)
    }
}

/// Byte output (`application/octet-stream`).
impl From<Vec<u8>> for Output {
    fn from(bytes: Vec<u8>) -> Output {
        Output::bytes(bytes)
    }
}

/// JSON output (`application/json`). Serializing a `Value` cannot fail.
impl From<serde_json::Value> for Output {
    fn from(value: serde_json::Value) -> Output {
        Output::with_content_type(media_type::JSON, value.to_string().into_bytes())
    }
}

/// The input echoed back unchanged: same content type and bytes (the trigger is
/// dropped).
impl From<Input> for Output {
    fn from(input: Input) -> Output {
        Output {
            content_type: input.content_type,
            body: input.body,
        }
    }
}

/// Which kind of failure an [`Error`] is; decides how the host reports and
/// retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input cannot be processed: HTTP 400 `AlgorithmError`; event
    /// deliveries are not retried.
    InvalidInput,
    /// Retrying the same input will not help: HTTP 400 `AlgorithmError`; never
    /// retried.
    Permanent,
    /// May succeed on a later attempt: HTTP 503 `TransientAlgorithmError`; event
    /// deliveries are retried.
    Transient,
}

/// A typed failure of an algorithm (the WIT variant
/// `wasmgrid:algorithm/types.error`). The message goes to the caller: say what
/// was wrong and, where possible, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// The input cannot be processed (wrong shape, missing field, bad value).
    #[must_use]
    pub fn invalid_input(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// The algorithm failed and retrying the same input will not help.
    #[must_use]
    pub fn permanent(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Permanent, message)
    }

    /// The failure may go away on a later attempt (a dependency was busy or
    /// unavailable).
    #[must_use]
    pub fn transient(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Transient, message)
    }

    /// An error of the given kind.
    #[must_use]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `invalid input: <message>`, `permanent error: <message>` or
/// `transient error: <message>`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Permanent => "permanent error",
            ErrorKind::Transient => "transient error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Registers `fn(Input) -> Result<O, Error>` (with `O: Into<Output>`) as the
/// algorithm's `handler.apply` export.
///
/// Use it once, at the root of a `cdylib` crate built for `wasm32-wasip2`:
///
/// ```no_run
/// use wasmgrid_sdk::{Error, Input};
///
/// fn apply(input: Input) -> Result<String, Error> {
///     Ok(input.text()?.to_uppercase())
/// }
///
/// wasmgrid_sdk::algorithm!(apply);
/// ```
///
/// The argument is a path to the function, e.g. `algorithm!(handlers::apply)`.
/// The macro defines a type named `__WasmgridAlgorithm` in the calling module.
///
/// # Set up once per instance: `init`
///
/// `algorithm!(apply, init = load)` also registers `fn() -> Result<(), Error>`
/// as `lifecycle.init` (the component then has the world
/// `algorithm-with-init`). The host runs it once per instance, before the
/// first call: load a model or build a table there, keep it in a static, and
/// deploy the version with `--reuse N` so that one instance serves N calls
/// (with the default fresh instance per call, `init` runs before every call).
/// An `init` error fails the call that started the instance.
///
/// ```no_run
/// use std::sync::OnceLock;
/// use wasmgrid_sdk::{Error, Input};
///
/// static TABLE: OnceLock<Vec<u64>> = OnceLock::new();
///
/// fn load() -> Result<(), Error> {
///     TABLE.get_or_init(|| (0..1_000_000).map(|i| i * i).collect());
///     Ok(())
/// }
///
/// fn apply(input: Input) -> Result<String, Error> {
///     let table = TABLE.get().ok_or_else(|| Error::permanent("init did not run"))?;
///     let i: usize = input.text()?.trim().parse().map_err(|_| Error::invalid_input("send an index"))?;
///     Ok(table.get(i).map(u64::to_string).unwrap_or_default())
/// }
///
/// wasmgrid_sdk::algorithm!(apply, init = load);
/// ```
#[macro_export]
macro_rules! algorithm {
    ($apply:path, init = $init:path) => {
        // `handler` exactly as without init (the `algorithm` world's export
        // macro), plus `lifecycle` from its own bindings: together the
        // component has the world `algorithm-with-init`.
        $crate::algorithm!($apply);

        impl $crate::__private::init_bindings::exports::wasmgrid::algorithm::lifecycle::Guest
            for __WasmgridAlgorithm
        {
            fn init() -> ::core::result::Result<(), $crate::__private::WitError> {
                $crate::__private::run_init($init)
            }
        }

        $crate::__private::init_bindings::__wasmgrid_export_init!(
            __WasmgridAlgorithm with_types_in $crate::__private::init_bindings
        );
    };
    ($apply:path) => {
        #[doc(hidden)]
        struct __WasmgridAlgorithm;

        impl $crate::__private::Guest for __WasmgridAlgorithm {
            fn apply(
                input: $crate::__private::Payload,
                trigger: ::core::option::Option<$crate::__private::WitEvent>,
            ) -> ::core::result::Result<$crate::__private::Payload, $crate::__private::WitError>
            {
                $crate::__private::run($apply, input, trigger)
            }
        }

        $crate::__private::bindings::__wasmgrid_export!(
            __WasmgridAlgorithm with_types_in $crate::__private::bindings
        );
    };
}

/// Implementation details used by [`algorithm!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use bindings::exports::wasmgrid::algorithm::handler::Guest;
    pub use bindings::wasmgrid::algorithm::types::{
        Error as WitError, Event as WitEvent, PayloadResult as Payload,
    };

    use crate::{Error, ErrorKind, Event, Input, Output};

    /// The generated bindings of the `algorithm` world.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "algorithm",
            pub_export_macro: true,
            export_macro_name: "__wasmgrid_export",
            default_bindings_module: "wasmgrid_sdk::__private::bindings",
            // Bindings for every interface of the world, including the
            // `wasi:keyvalue` ones from `wit/deps`. Imports a guest does not
            // call are dropped when its component is linked.
            generate_all,
            // Imports take borrowed arguments (`&str`, `&[u8]`, `PayloadParam`
            // with borrowed fields), so `data::put` passes the caller's bytes in
            // place; exports and results use owned types (`PayloadResult`).
            ownership: Borrowing { duplicate_if_necessary: true },
        });
    }

    /// Bindings of the `lifecycle` export alone (a world of its own, so its
    /// export macro does not repeat `handler`'s), with its types taken from
    /// [`bindings`]. A component that uses both export macros has the world
    /// `algorithm-with-init`: `wit-component` unions the worlds the two
    /// macros describe.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod init_bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            inline: "
                package wasmgrid:sdk-internal;
                world init-export {
                    export wasmgrid:algorithm/lifecycle@0.1.0;
                }
            ",
            world: "wasmgrid:sdk-internal/init-export",
            pub_export_macro: true,
            export_macro_name: "__wasmgrid_export_init",
            default_bindings_module: "wasmgrid_sdk::__private::init_bindings",
            with: {
                "wasmgrid:algorithm/types@0.1.0": crate::__private::bindings::wasmgrid::algorithm::types,
            },
            ownership: Borrowing { duplicate_if_necessary: true },
        });
    }

    /// Runs the algorithm's `init` and converts its error.
    pub fn run_init<F>(init: F) -> Result<(), WitError>
    where
        F: FnOnce() -> Result<(), Error>,
    {
        init().map_err(to_wit)
    }

    /// An SDK error as the WIT `error` case of the same kind.
    fn to_wit(Error { kind, message }: Error) -> WitError {
        match kind {
            ErrorKind::InvalidInput => WitError::InvalidInput(message),
            ErrorKind::Permanent => WitError::Permanent(message),
            ErrorKind::Transient => WitError::Transient(message),
        }
    }

    /// Calls the algorithm with the WIT arguments converted to SDK types and
    /// converts its result back.
    pub fn run<O, F>(
        apply: F,
        input: Payload,
        trigger: Option<WitEvent>,
    ) -> Result<Payload, WitError>
    where
        F: FnOnce(Input) -> Result<O, Error>,
        O: Into<Output>,
    {
        let input = Input {
            content_type: input.content_type,
            body: input.body,
            trigger: trigger.map(|e| Event {
                id: e.id,
                source: e.source,
                ty: e.type_,
                subject: e.subject,
                time: e.time,
                data_content_type: e.data_content_type,
                extensions: e.extensions,
            }),
        };
        match apply(input) {
            Ok(output) => {
                let output = output.into();
                Ok(Payload {
                    content_type: output.content_type,
                    body: output.body,
                })
            }
            Err(e) => Err(to_wit(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::__private::{Payload, WitError, WitEvent, run};
    use super::*;

    fn payload(content_type: &str, body: &[u8]) -> Payload {
        Payload {
            content_type: content_type.into(),
            body: body.into(),
        }
    }

    #[test]
    fn media_types() {
        assert!(media_type::is_json("application/json"));
        assert!(media_type::is_json(" Application/JSON ; charset=utf-8"));
        assert!(media_type::is_json("application/cloudevents+json"));
        assert!(!media_type::is_json("text/plain"));
        assert!(!media_type::is_json("application/jsonx"));
        assert_eq!(
            media_type::essence("Text/Plain; charset=utf-8"),
            "text/plain"
        );
    }

    #[test]
    fn input_accessors() {
        let input = Input::new("text/plain", "héllo");
        assert_eq!(input.content_type(), "text/plain");
        assert_eq!(input.text().unwrap(), "héllo");
        assert_eq!(input.bytes(), "héllo".as_bytes());
        assert!(!input.is_json());
        assert!(input.trigger().is_none());
        assert_eq!(input.into_bytes(), "héllo".as_bytes());

        let bad = Input::new("application/octet-stream", vec![0xff, 0xfe]);
        let err = bad.text().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("UTF-8"), "{err}");
    }

    #[test]
    fn input_json() {
        let input = Input::new("application/json", "[1, 2]");
        assert!(input.is_json());
        assert_eq!(input.json::<Vec<u32>>().unwrap(), vec![1, 2]);
        let err = input.json::<String>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("invalid type"), "{err}");
        assert!(err.to_string().starts_with("invalid input: "), "{err}");
    }

    #[test]
    fn outputs() {
        let o = Output::json(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(
            (o.content_type(), o.as_bytes()),
            ("application/json", &b"{\"a\":1}"[..])
        );
        let o = Output::text("hi");
        assert_eq!((o.content_type(), o.as_bytes()), ("text/plain", &b"hi"[..]));
        let o = Output::bytes(vec![1, 2]);
        assert_eq!(o.content_type(), "application/octet-stream");
        assert_eq!(o.into_bytes(), vec![1, 2]);
        let o = Output::with_content_type("text/csv", "a,b\n");
        assert_eq!(o.content_type(), "text/csv");
        assert_eq!(Output::from("x"), Output::text("x"));
        assert_eq!(Output::from(String::from("x")), Output::text("x"));
        assert_eq!(Output::from(vec![7]), Output::bytes(vec![7]));
        assert_eq!(
            Output::from(serde_json::json!([1, "b"])),
            Output::with_content_type("application/json", "[1,\"b\"]")
        );
        assert_eq!(
            Output::from(Input::new("image/png", vec![9])),
            Output::with_content_type("image/png", vec![9])
        );

        let mut map = std::collections::HashMap::new();
        map.insert(vec![1], 2);
        assert_eq!(Output::json(&map).unwrap_err().kind(), ErrorKind::Permanent);
    }

    #[test]
    fn errors() {
        let e = Error::transient("busy");
        assert_eq!((e.kind(), e.message()), (ErrorKind::Transient, "busy"));
        assert_eq!(e.to_string(), "transient error: busy");
        assert_eq!(Error::permanent("no").to_string(), "permanent error: no");
        assert_eq!(Error::invalid_input("bad").kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn keyvalue_errors() {
        use keyvalue::store::Error as KvError;
        let e: Error = KvError::AccessDenied.into();
        assert_eq!(e.kind(), ErrorKind::Permanent);
        assert!(e.message().starts_with("keyvalue: access denied"), "{e}");
        let e: Error = KvError::NoSuchStore.into();
        assert!(e.message().starts_with("keyvalue: no such store"), "{e}");
        let e: Error = KvError::Other("disk full".into()).into();
        assert_eq!(
            (e.kind(), e.message()),
            (ErrorKind::Permanent, "keyvalue: disk full")
        );
    }

    #[test]
    fn run_converts_both_ways() {
        let trigger = WitEvent {
            id: "1".into(),
            source: "/s".into(),
            type_: "t".into(),
            subject: Some("sub".into()),
            time: None,
            data_content_type: Some("application/json".into()),
            extensions: vec![("traceparent".into(), "00-abc".into())],
        };
        let out = run(
            |input: Input| {
                let event = input.trigger().expect("trigger");
                assert_eq!(event.ty, "t");
                assert_eq!(event.subject.as_deref(), Some("sub"));
                assert_eq!(event.extension("traceparent"), Some("00-abc"));
                assert_eq!(event.extension("missing"), None);
                Ok::<_, Error>(format!("{}!", input.text()?))
            },
            payload("text/plain", b"hi"),
            Some(trigger),
        )
        .unwrap();
        assert_eq!(
            (out.content_type.as_str(), out.body.as_slice()),
            ("text/plain", &b"hi!"[..])
        );

        for (error, expected) in [
            (Error::invalid_input("i"), "InvalidInput(\"i\")"),
            (Error::permanent("p"), "Permanent(\"p\")"),
            (Error::transient("t"), "Transient(\"t\")"),
        ] {
            let err: WitError = run(
                |_| Err::<Output, _>(error),
                payload("text/plain", b""),
                None,
            )
            .unwrap_err();
            assert_eq!(format!("{err:?}"), format!("Error::{expected}"));
        }
    }
}
