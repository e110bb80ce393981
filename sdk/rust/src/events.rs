//! Publishing custom events (the WIT interface `wasmgrid:algorithm/events`).
//!
//! An algorithm deployed with `--grant topic:NAME` may publish to the custom
//! topic `NAME`; subscriptions of that topic then deliver the event, as for
//! events published over HTTP. `publish` returns once the event is durable.
//! When the running call was triggered by an event with a `traceparent`, the
//! published event carries it too, so a trace follows the pipeline.
//!
//! # Example
//!
//! ```no_run
//! use wasmgrid_sdk::serde_json::{Value, json};
//! use wasmgrid_sdk::{Error, Input, events};
//!
//! fn apply(input: Input) -> Result<Value, Error> {
//!     let score: f64 = input.json()?;
//!     let id = events::Event::new("com.example.ai.InferenceCompleted")
//!         .subject("/models/resnet")
//!         .publish_json("inference", &json!({ "confidence": score }))?;
//!     Ok(json!({ "published": id }))
//! }
//!
//! wasmgrid_sdk::algorithm!(apply);
//! ```

use serde::Serialize;

use crate::__private::bindings::wasmgrid::algorithm::events as wit;
use crate::__private::bindings::wasmgrid::algorithm::types::PayloadParam;
use crate::{Error, media_type};

/// An event to publish: its CloudEvents attributes (the data is given to the
/// `publish*` methods).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    ty: String,
    subject: Option<String>,
    id: Option<String>,
    source: Option<String>,
    extensions: Vec<(String, String)>,
}

impl Event {
    /// An event of CloudEvents `type` `ty`, e.g. `com.example.order.Shipped`.
    pub fn new(ty: impl Into<String>) -> Event {
        Event {
            ty: ty.into(),
            ..Event::default()
        }
    }

    /// Sets `subject`, e.g. `/orders/42`.
    pub fn subject(mut self, subject: impl Into<String>) -> Event {
        self.subject = Some(subject.into());
        self
    }

    /// Sets `id` (default: a fresh UUID). Topics deduplicate by `(source, id)`,
    /// so a stable id makes a retried publish safe.
    pub fn id(mut self, id: impl Into<String>) -> Event {
        self.id = Some(id.into());
        self
    }

    /// Sets `source` (default: `/algorithms/{owner}/{name}`).
    pub fn source(mut self, source: impl Into<String>) -> Event {
        self.source = Some(source.into());
        self
    }

    /// Adds an extension attribute (name: 1-20 lowercase letters or digits).
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.extensions.push((name.into(), value.into()));
        self
    }

    /// Publishes with `data` of media type `content_type` to `topic`; returns
    /// the event id once the event is durable.
    ///
    /// Errors: `permanent` without a `topic:NAME` grant, for an unknown or
    /// `system.*` topic; `invalid-input` for an invalid attribute or an event
    /// above 1 MiB; `transient` when the store is unavailable.
    pub fn publish(&self, topic: &str, content_type: &str, data: &[u8]) -> Result<String, Error> {
        let extensions: Vec<(&str, &str)> = self
            .extensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let event = wit::OutgoingEvent {
            type_: &self.ty,
            subject: self.subject.as_deref(),
            id: self.id.as_deref(),
            source: self.source.as_deref(),
            extensions: &extensions,
        };
        let data = PayloadParam {
            content_type,
            body: data,
        };
        wit::publish(topic, event, data).map_err(Error::from)
    }

    /// Publishes `data` serialized as JSON (`application/json`).
    pub fn publish_json<T: Serialize + ?Sized>(&self, topic: &str, data: &T) -> Result<String, Error> {
        let body = serde_json::to_vec(data)
            .map_err(|e| Error::permanent(format!("cannot serialize the event data: {e}")))?;
        self.publish(topic, media_type::JSON, &body)
    }

    /// Publishes `text` (`text/plain`).
    pub fn publish_text(&self, topic: &str, text: &str) -> Result<String, Error> {
        self.publish(topic, media_type::TEXT, text.as_bytes())
    }
}
