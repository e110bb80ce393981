//! The host services guests reach (data collections and secrets), implementing
//! the engine's [`HostApi`]: this is where a guest's identity becomes a
//! [`Principal`] and every access is checked.

use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use wasmgrid_core::data::{DataError, DataPath, DataService, Principal};
use wasmgrid_core::invoker::{Call, Invoker};
use wasmgrid_core::secrets::SecretStore;
use wasmgrid_engine::{
    CallScope, GuestCallError, GuestDataError, GuestFileInfo, GuestIdentity, HostApi, InvokeError,
    OutgoingEvent, Payload,
};
use wasmgrid_events::{EventError, EventService, cloudevent};

/// How deep `algo.call` chains may nest: a deeper call is a loop, not a pipeline.
pub const MAX_CALL_DEPTH: u32 = 8;

/// Data, secrets, events and algorithm calls, as guests see them.
pub struct Services {
    data: Arc<DataService>,
    secrets: Arc<SecretStore>,
    events: EventService,
    /// Runs `algo.call`. It holds these services weakly (they are its host),
    /// so this reference makes no cycle.
    invoker: Arc<Invoker>,
}

impl Services {
    /// Services over the node's data service, secret store, events and invoker.
    pub fn new(
        data: Arc<DataService>,
        secrets: Arc<SecretStore>,
        events: EventService,
        invoker: Arc<Invoker>,
    ) -> Self {
        Self {
            data,
            secrets,
            events,
            invoker,
        }
    }
}

/// The structured CloudEvent a guest's `events.publish` describes.
fn guest_event(
    who: &GuestIdentity,
    scope: &CallScope,
    event: OutgoingEvent,
    data: Payload,
) -> Result<Value, GuestCallError> {
    let mut map = serde_json::Map::new();
    map.insert("specversion".into(), "1.0".into());
    let id = event.id.unwrap_or_else(wasmgrid_core::data::uuid_v4);
    map.insert("id".into(), id.into());
    let source = event
        .source
        .unwrap_or_else(|| format!("/algorithms/{}/{}", who.owner, who.name));
    map.insert("source".into(), source.into());
    map.insert("type".into(), event.ty.into());
    if let Some(subject) = event.subject {
        map.insert("subject".into(), subject.into());
    }
    map.insert(
        "time".into(),
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .into(),
    );
    for (name, value) in event.extensions {
        map.insert(name, value.into());
    }
    // The host sets the hop count: a guest must not reset the counter of the
    // loop it may be part of (a larger value of its own is kept).
    let own = map
        .get(wasmgrid_engine::HOPS_ATTRIBUTE)
        .and_then(cloudevent::hops_value)
        .unwrap_or(0);
    if who.hops > 0 || own > 0 {
        map.insert(
            wasmgrid_engine::HOPS_ATTRIBUTE.into(),
            who.hops.max(own).to_string().into(),
        );
    }
    if !map.contains_key("traceparent")
        && let Some(tp) = scope
            .trigger
            .as_ref()
            .and_then(|t| t.extensions.iter().find(|(k, _)| k == "traceparent"))
    {
        map.insert("traceparent".into(), tp.1.clone().into());
    }
    let media = data
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !data.content_type.is_empty() {
        map.insert("datacontenttype".into(), data.content_type.clone().into());
    }
    if media == "application/json" || media.ends_with("+json") {
        let v: Value = serde_json::from_slice(&data.body).map_err(|e| {
            GuestCallError::invalid_input(format!(
                "the event data is declared {media} but is not valid JSON: {e}"
            ))
        })?;
        map.insert("data".into(), v);
    } else if media.starts_with("text/") {
        let text = std::str::from_utf8(&data.body).map_err(|_| {
            GuestCallError::invalid_input(format!(
                "the event data is declared {media} but is not UTF-8"
            ))
        })?;
        map.insert("data".into(), text.into());
    } else if !data.body.is_empty() {
        use base64::Engine as _;
        map.insert(
            "data_base64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(&data.body)
                .into(),
        );
    }
    let event = cloudevent::canonical(Value::Object(map), "the event")
        .map_err(|e| GuestCallError::invalid_input(e.0))?;
    let size = serde_json::to_vec(&event).map(|b| b.len()).unwrap_or(0);
    if size > cloudevent::MAX_REQUEST_BYTES {
        return Err(GuestCallError::invalid_input(format!(
            "the event is {size} bytes; events are limited to 1 MiB: store large data in a collection and send its URI"
        )));
    }
    Ok(event)
}

fn guest_error(e: DataError) -> GuestDataError {
    match e {
        DataError::NotFound(m) => GuestDataError::NotFound(m),
        DataError::Forbidden(m) => GuestDataError::AccessDenied(m),
        DataError::InvalidUri(m) | DataError::Invalid(m) | DataError::Conflict(m) => {
            GuestDataError::InvalidUri(m)
        }
        DataError::TooLarge(m) => GuestDataError::TooLarge(m),
        DataError::Unavailable(m) => GuestDataError::StoreUnavailable(m),
    }
}

fn parse(who: &GuestIdentity, uri: &str) -> Result<DataPath, GuestDataError> {
    Principal::Algorithm(who).parse(uri).map_err(guest_error)
}

/// Runs a blocking store operation off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, GuestDataError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GuestDataError::StoreUnavailable(format!("store worker failed: {e}")))?
        .map_err(guest_error)
}

#[async_trait::async_trait]
impl HostApi for Services {
    async fn data_get(&self, who: &GuestIdentity, uri: String) -> Result<Payload, GuestDataError> {
        let who_p = Principal::Algorithm(who);
        // Small files are read inline (a store lookup of a few microseconds);
        // only blob-backed files go to a blocking thread.
        let (content_type, content) = who_p
            .parse_ref(&uri)
            .and_then(|p| self.data.read_for_guest(who_p, &p, who.memory_bytes))
            .map_err(guest_error)?;
        let body = content
            .into_bytes()
            .await
            .map_err(|e| GuestDataError::StoreUnavailable(format!("reading {uri}: {e}")))?;
        Ok(Payload { content_type, body })
    }

    async fn data_put(
        &self,
        who: &GuestIdentity,
        uri: String,
        content: Payload,
    ) -> Result<(), GuestDataError> {
        let p = parse(who, &uri)?;
        if content.body.len() as u64 > wasmgrid_core::data::DEFAULT_MAX_FILE {
            return Err(GuestDataError::TooLarge(format!(
                "{uri}: files are limited to 1 GiB"
            )));
        }
        let data = self.data.clone();
        let who = who.clone();
        let ct = if content.content_type.is_empty() {
            "application/octet-stream".to_string()
        } else {
            content.content_type
        };
        blocking(move || {
            data.put(Principal::Algorithm(&who), &p, &ct, &content.body)
                .map(|_| ())
        })
        .await
    }

    async fn data_delete(&self, who: &GuestIdentity, uri: String) -> Result<bool, GuestDataError> {
        let p = parse(who, &uri)?;
        let data = self.data.clone();
        let who = who.clone();
        blocking(move || data.delete(Principal::Algorithm(&who), &p)).await
    }

    async fn data_exists(&self, who: &GuestIdentity, uri: String) -> Result<bool, GuestDataError> {
        let p = parse(who, &uri)?;
        match self.data.stat(Principal::Algorithm(who), &p) {
            Ok(rec) => Ok(!rec.folder),
            Err(DataError::NotFound(_)) => Ok(false),
            Err(e) => Err(guest_error(e)),
        }
    }

    async fn data_list(
        &self,
        who: &GuestIdentity,
        prefix: String,
        marker: Option<String>,
        limit: u32,
    ) -> Result<(Vec<GuestFileInfo>, Option<String>), GuestDataError> {
        // A trailing '/' names a folder; the prefix is matched as a string.
        let folder = prefix.ends_with('/');
        let p = parse(who, prefix.trim_end_matches('/'))?;
        let mut p2 = p.clone();
        if folder && !p2.path.is_empty() {
            p2.path.push('/');
        }
        let (files, next) = self
            .data
            .list_files(
                Principal::Algorithm(who),
                &p2,
                marker.as_deref(),
                limit.clamp(1, 1000) as usize,
            )
            .map_err(guest_error)?;
        let files = files
            .into_iter()
            .map(|(fp, rec)| GuestFileInfo {
                uri: fp.uri(),
                size: rec.size,
                content_type: rec.content_type,
                last_modified: rec.last_modified,
                etag: rec.etag,
            })
            .collect();
        Ok((files, next))
    }

    async fn data_increment(
        &self,
        who: &GuestIdentity,
        uri: String,
        delta: u64,
    ) -> Result<u64, GuestDataError> {
        let p = parse(who, &uri)?;
        let data = self.data.clone();
        let who = who.clone();
        blocking(move || data.increment(Principal::Algorithm(&who), &p, delta)).await
    }

    async fn data_open(
        &self,
        who: &GuestIdentity,
        collection_uri: String,
    ) -> Result<(), GuestDataError> {
        let p = parse(who, &collection_uri)?;
        self.data
            .check_readable(Principal::Algorithm(who), &p)
            .map(|_| ())
            .map_err(guest_error)
    }

    async fn secret(&self, who: &GuestIdentity, name: String) -> Option<String> {
        self.secrets
            .get(&who.owner, &who.name, &name)
            .await
            .ok()
            .flatten()
    }

    async fn publish(
        &self,
        who: &GuestIdentity,
        scope: &CallScope,
        topic: String,
        event: OutgoingEvent,
        data: Payload,
    ) -> Result<String, GuestCallError> {
        if wasmgrid_events::is_reserved_topic(&topic) {
            return Err(GuestCallError::permanent(format!(
                "{topic} is written by wasmgrid itself; algorithms publish to custom topics"
            )));
        }
        let grant = format!("topic:{topic}");
        if !who.grants.contains(&grant) {
            return Err(GuestCallError::permanent(format!(
                "algorithm {}/{} may not publish to {topic}: deploy it with --grant topic:{topic}",
                who.owner, who.name
            )));
        }
        let event = guest_event(who, scope, event, data)?;
        let id = event
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match self
            .events
            .publish_as(&who.owner, &topic, vec![event])
            .await
        {
            Ok(_) => Ok(id),
            Err(EventError::Invalid(m)) => Err(GuestCallError::invalid_input(m)),
            Err(EventError::NotFound(m) | EventError::Forbidden(m) | EventError::Conflict(m)) => {
                Err(GuestCallError::permanent(m))
            }
            Err(e @ (EventError::Store(_) | EventError::Internal(_))) => Err(
                GuestCallError::transient(format!("publishing to {topic} failed: {e}")),
            ),
        }
    }

    async fn call(
        &self,
        who: &GuestIdentity,
        scope: &CallScope,
        endpoint: String,
        input: Payload,
    ) -> Result<Payload, GuestCallError> {
        let (owner, name, spec) = wasmgrid_events::parse_endpoint(&endpoint)
            .map_err(|e| GuestCallError::permanent(e.to_string()))?;
        if owner != who.owner {
            return Err(GuestCallError::permanent(format!(
                "{}/{} may not call {endpoint}: algorithms call algorithms of their own owner ({})",
                who.owner, who.name, who.owner
            )));
        }
        if scope.depth + 1 > MAX_CALL_DEPTH {
            return Err(GuestCallError::permanent(format!(
                "calling {endpoint} would nest algo.call {} deep (the limit is {MAX_CALL_DEPTH}): is there a loop in the pipeline?",
                scope.depth + 1
            )));
        }
        let deployed = self
            .invoker
            .resolve(owner, name, &spec)
            .map_err(|e| GuestCallError::permanent(e.to_string()))?;
        let remaining = scope.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(GuestCallError::transient(format!(
                "no time left to call {endpoint}: the calling algorithm's deadline has passed"
            )));
        }
        let trigger = scope.trigger.as_deref().cloned();
        let result = self
            .invoker
            .call(Call {
                deployed: &deployed,
                input,
                trigger,
                timeout: Some(remaining),
                depth: scope.depth + 1,
                hops: who.hops,
            })
            .await;
        match result {
            Ok(outcome) => Ok(outcome.output),
            Err(InvokeError::Guest { kind, message }) => Err(GuestCallError { kind, message }),
            Err(e) => Err(GuestCallError::transient(format!(
                "{} failed ({}): {e}",
                deployed.endpoint(),
                e.kind().as_str()
            ))),
        }
    }
}
