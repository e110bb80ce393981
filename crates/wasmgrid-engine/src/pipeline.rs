//! What guests call to build pipelines: `events.publish` and `algo.call`.
//!
//! As for data, the engine only converts between WIT and host types and
//! forwards to the [`HostApi`](super::HostApi) with the running call's identity
//! and [`CallScope`] (its nesting depth, deadline and trigger), which the layer
//! above uses to check grants, stop loops and share the deadline.

use super::bindings::wasmgrid::algorithm::{algo, events, types};
use super::{GuestErrorKind, HostState, Payload, TriggerEvent};
use std::sync::Arc;
use std::time::Instant;

/// Where a running call stands, for the calls and publishes it makes.
#[derive(Debug, Clone)]
pub struct CallScope {
    /// 0 for a call from outside (HTTP, an event delivery, a job); +1 per
    /// nested `algo.call`.
    pub depth: u32,
    /// When the running call times out: nested calls share it.
    pub deadline: Instant,
    /// The event that triggered the running call, if any (nested calls see it;
    /// publishes inherit its `traceparent`).
    pub trigger: Option<Arc<TriggerEvent>>,
}

/// The attributes of an event a guest publishes (the WIT `outgoing-event`).
#[derive(Debug, Clone, Default)]
pub struct OutgoingEvent {
    /// `type`.
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `id` (generated when absent).
    pub id: Option<String>,
    /// `source` (`/algorithms/{owner}/{name}` when absent).
    pub source: Option<String>,
    /// Extension attributes.
    pub extensions: Vec<(String, String)>,
}

/// A failed `publish` or `call` as the guest sees it: the WIT `error` case and
/// its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCallError {
    /// Which case.
    pub kind: GuestErrorKind,
    /// The message.
    pub message: String,
}

impl GuestCallError {
    /// A `permanent` error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: GuestErrorKind::Permanent,
            message: message.into(),
        }
    }
    /// A `transient` error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: GuestErrorKind::Transient,
            message: message.into(),
        }
    }
    /// An `invalid-input` error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self {
            kind: GuestErrorKind::InvalidInput,
            message: message.into(),
        }
    }
}

fn to_wit(e: GuestCallError) -> types::Error {
    match e.kind {
        GuestErrorKind::InvalidInput => types::Error::InvalidInput(e.message),
        GuestErrorKind::Permanent => types::Error::Permanent(e.message),
        GuestErrorKind::Transient => types::Error::Transient(e.message),
    }
}

fn from_wit(p: types::Payload) -> Payload {
    Payload {
        content_type: p.content_type,
        body: p.body.into(),
    }
}

impl events::Host for HostState {
    async fn publish(
        &mut self,
        topic: String,
        event: events::OutgoingEvent,
        data: types::Payload,
    ) -> wasmtime::Result<Result<String, types::Error>> {
        let event = OutgoingEvent {
            ty: event.type_,
            subject: event.subject,
            id: event.id,
            source: event.source,
            extensions: event.extensions,
        };
        Ok(self
            .call
            .host
            .publish(
                &self.call.identity,
                &self.scope,
                topic,
                event,
                from_wit(data),
            )
            .await
            .map_err(to_wit))
    }
}

impl algo::Host for HostState {
    async fn call(
        &mut self,
        endpoint: String,
        input: types::Payload,
    ) -> wasmtime::Result<Result<types::Payload, types::Error>> {
        let result = self
            .call
            .host
            .call(&self.call.identity, &self.scope, endpoint, from_wit(input))
            .await;
        Ok(result
            .map(|p| types::Payload {
                content_type: p.content_type,
                body: Vec::from(p.body),
            })
            .map_err(to_wit))
    }
}
