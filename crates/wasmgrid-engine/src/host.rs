//! What guests can call: the `data`, `secrets` and `wasi:keyvalue` imports.
//!
//! The engine does not implement storage: it forwards each call, with the
//! identity of the running algorithm, to a [`HostApi`] supplied by the layer
//! above (the data collections and secret store), and converts results to WIT
//! types. Host failures that are not the guest's fault become typed errors, never
//! traps; only an invalid resource handle (a host or guest bug) traps.

use super::HostState;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::bindings::wasmgrid::algorithm::{data, secrets, types};
use crate::identity::GuestIdentity;
use std::sync::Arc;
use wasmtime::component::Resource;

/// A data failure as guests see it (the WIT `data-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestDataError {
    /// No such file or collection.
    NotFound(String),
    /// No grant or ACL permission.
    AccessDenied(String),
    /// Malformed URI.
    InvalidUri(String),
    /// Too large for the guest or the store.
    TooLarge(String),
    /// The store failed.
    StoreUnavailable(String),
}

/// A file in a guest listing.
#[derive(Debug, Clone)]
pub struct GuestFileInfo {
    /// `data://` URI.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    pub content_type: String,
    /// RFC 3339.
    pub last_modified: String,
    /// Entity tag.
    pub etag: String,
}

/// Host services available to guests, implemented above the engine.
#[async_trait::async_trait]
pub trait HostApi: Send + Sync + 'static {
    /// Reads a file.
    async fn data_get(
        &self,
        who: &GuestIdentity,
        uri: String,
    ) -> Result<super::Payload, GuestDataError>;
    /// Writes a file.
    async fn data_put(
        &self,
        who: &GuestIdentity,
        uri: String,
        content: super::Payload,
    ) -> Result<(), GuestDataError>;
    /// Deletes a file; whether it existed.
    async fn data_delete(&self, who: &GuestIdentity, uri: String) -> Result<bool, GuestDataError>;
    /// Whether a file exists.
    async fn data_exists(&self, who: &GuestIdentity, uri: String) -> Result<bool, GuestDataError>;
    /// Lists files under a prefix, recursively.
    async fn data_list(
        &self,
        who: &GuestIdentity,
        prefix: String,
        marker: Option<String>,
        limit: u32,
    ) -> Result<(Vec<GuestFileInfo>, Option<String>), GuestDataError>;
    /// Atomically adds to a decimal counter file.
    async fn data_increment(
        &self,
        who: &GuestIdentity,
        uri: String,
        delta: u64,
    ) -> Result<u64, GuestDataError>;
    /// Checks that a collection may be opened (read access) as a keyvalue bucket.
    async fn data_open(
        &self,
        who: &GuestIdentity,
        collection_uri: String,
    ) -> Result<(), GuestDataError>;
    /// One of the algorithm's secrets.
    async fn secret(&self, who: &GuestIdentity, name: String) -> Option<String>;
    /// Publishes an event to a topic (WIT `events.publish`); the event id.
    async fn publish(
        &self,
        who: &GuestIdentity,
        scope: &super::CallScope,
        topic: String,
        event: super::OutgoingEvent,
        data: super::Payload,
    ) -> Result<String, super::GuestCallError> {
        let _ = (who, scope, event, data);
        Err(super::GuestCallError::permanent(format!(
            "cannot publish to {topic}: this host has no events service"
        )))
    }
    /// Calls another algorithm (WIT `algo.call`).
    async fn call(
        &self,
        who: &GuestIdentity,
        scope: &super::CallScope,
        endpoint: String,
        input: super::Payload,
    ) -> Result<super::Payload, super::GuestCallError> {
        let _ = (who, scope, input);
        Err(super::GuestCallError::permanent(format!(
            "cannot call {endpoint}: this host runs algorithms on their own"
        )))
    }
}

/// A [`HostApi`] with no services: every data call is refused and there are no
/// secrets. For an engine used on its own (benchmarks, embedding without a store).
pub struct NoHostServices;

#[async_trait::async_trait]
impl HostApi for NoHostServices {
    async fn data_get(
        &self,
        _: &GuestIdentity,
        _: String,
    ) -> Result<super::Payload, GuestDataError> {
        Err(no_service())
    }
    async fn data_put(
        &self,
        _: &GuestIdentity,
        _: String,
        _: super::Payload,
    ) -> Result<(), GuestDataError> {
        Err(no_service())
    }
    async fn data_delete(&self, _: &GuestIdentity, _: String) -> Result<bool, GuestDataError> {
        Err(no_service())
    }
    async fn data_exists(&self, _: &GuestIdentity, _: String) -> Result<bool, GuestDataError> {
        Err(no_service())
    }
    async fn data_list(
        &self,
        _: &GuestIdentity,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<(Vec<GuestFileInfo>, Option<String>), GuestDataError> {
        Err(no_service())
    }
    async fn data_increment(
        &self,
        _: &GuestIdentity,
        _: String,
        _: u64,
    ) -> Result<u64, GuestDataError> {
        Err(no_service())
    }
    async fn data_open(&self, _: &GuestIdentity, _: String) -> Result<(), GuestDataError> {
        Err(no_service())
    }
    async fn secret(&self, _: &GuestIdentity, _: String) -> Option<String> {
        None
    }
}

fn no_service() -> GuestDataError {
    GuestDataError::StoreUnavailable("this engine runs without a data service".into())
}

/// Who a call runs as, and the services it can reach.
#[derive(Clone)]
pub struct CallContext {
    /// The running algorithm.
    pub identity: Arc<GuestIdentity>,
    /// Host services.
    pub host: Arc<dyn HostApi>,
    /// Nesting depth of `algo.call` (0 for calls from outside).
    pub depth: u32,
}

impl CallContext {
    /// A context with no host services.
    pub fn standalone(identity: GuestIdentity) -> Self {
        Self {
            identity: Arc::new(identity),
            host: Arc::new(NoHostServices),
            depth: 0,
        }
    }
}

/// An open wasi:keyvalue bucket: a data collection.
pub struct KvBucket {
    /// `data://owner/collection`.
    collection_uri: String,
    /// `list-keys` cursors handed out in this call: cursor N resumes after
    /// marker N-1.
    markers: Vec<String>,
}

impl KvBucket {
    fn key_uri(&self, key: &str) -> String {
        format!("{}/{key}", self.collection_uri)
    }
}

fn to_wit(e: GuestDataError) -> data::DataError {
    match e {
        GuestDataError::NotFound(m) => data::DataError::NotFound(m),
        GuestDataError::AccessDenied(m) => data::DataError::AccessDenied(m),
        GuestDataError::InvalidUri(m) => data::DataError::InvalidUri(m),
        GuestDataError::TooLarge(m) => data::DataError::TooLarge(m),
        GuestDataError::StoreUnavailable(m) => data::DataError::StoreUnavailable(m),
    }
}

fn to_kv(e: GuestDataError) -> store::Error {
    match e {
        GuestDataError::AccessDenied(_) => store::Error::AccessDenied,
        GuestDataError::NotFound(m)
        | GuestDataError::InvalidUri(m)
        | GuestDataError::TooLarge(m)
        | GuestDataError::StoreUnavailable(m) => store::Error::Other(m),
    }
}

impl types::Host for HostState {}

impl data::Host for HostState {
    async fn get(
        &mut self,
        uri: String,
    ) -> wasmtime::Result<Result<types::Payload, data::DataError>> {
        let r = self.call.host.data_get(&self.call.identity, uri).await;
        Ok(r.map(|p| types::Payload {
            content_type: p.content_type,
            // Reuses the allocation when the bytes are not shared.
            body: Vec::from(p.body),
        })
        .map_err(to_wit))
    }

    async fn put(
        &mut self,
        uri: String,
        content: types::Payload,
    ) -> wasmtime::Result<Result<(), data::DataError>> {
        let payload = super::Payload {
            content_type: content.content_type,
            body: content.body.into(),
        };
        Ok(self
            .call
            .host
            .data_put(&self.call.identity, uri, payload)
            .await
            .map_err(to_wit))
    }

    async fn delete(&mut self, uri: String) -> wasmtime::Result<Result<bool, data::DataError>> {
        Ok(self
            .call
            .host
            .data_delete(&self.call.identity, uri)
            .await
            .map_err(to_wit))
    }

    async fn exists(&mut self, uri: String) -> wasmtime::Result<Result<bool, data::DataError>> {
        Ok(self
            .call
            .host
            .data_exists(&self.call.identity, uri)
            .await
            .map_err(to_wit))
    }

    async fn list(
        &mut self,
        prefix: String,
        marker: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<data::FilePage, data::DataError>> {
        let r = self
            .call
            .host
            .data_list(&self.call.identity, prefix, marker, limit)
            .await;
        Ok(r.map(|(files, marker)| data::FilePage {
            files: files
                .into_iter()
                .map(|f| data::FileInfo {
                    uri: f.uri,
                    size: f.size,
                    content_type: f.content_type,
                    last_modified: f.last_modified,
                    etag: f.etag,
                })
                .collect(),
            marker,
        })
        .map_err(to_wit))
    }
}

impl secrets::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.call.host.secret(&self.call.identity, name).await)
    }
}

impl store::Host for HostState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<KvBucket>, store::Error>> {
        let collection_uri = format!("data://{}", identifier.trim_matches('/'));
        if identifier.is_empty() || identifier.matches('/').count() != 1 {
            return Ok(Err(store::Error::Other(format!(
                "bucket {identifier:?}: open a data collection as \"owner/collection\" (\".my/collection\" for your own)"
            ))));
        }
        match self
            .call
            .host
            .data_open(&self.call.identity, collection_uri.clone())
            .await
        {
            Ok(()) => {}
            Err(GuestDataError::NotFound(_)) => {
                // A bucket for a collection that does not exist yet opens; the
                // first write creates it (if the algorithm may write).
            }
            Err(GuestDataError::AccessDenied(_)) => return Ok(Err(store::Error::AccessDenied)),
            Err(other) => return Ok(Err(to_kv(other))),
        }
        let bucket = self.table.push(KvBucket {
            collection_uri,
            markers: Vec::new(),
        })?;
        // Opened under this call's grants: dropped when the call ends, even if
        // the instance stays warm (see `HostState::end_call`).
        self.call_buckets.push(bucket.rep());
        Ok(Ok(bucket))
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let uri = self.table.get(&bucket)?.key_uri(&key);
        Ok(
            match self.call.host.data_get(&self.call.identity, uri).await {
                Ok(p) => Ok(Some(Vec::from(p.body))),
                Err(GuestDataError::NotFound(_)) => Ok(None),
                Err(e) => Err(to_kv(e)),
            },
        )
    }

    async fn set(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let uri = self.table.get(&bucket)?.key_uri(&key);
        let payload = super::Payload {
            content_type: "application/octet-stream".into(),
            body: value.into(),
        };
        Ok(self
            .call
            .host
            .data_put(&self.call.identity, uri, payload)
            .await
            .map_err(to_kv))
    }

    async fn delete(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let uri = self.table.get(&bucket)?.key_uri(&key);
        Ok(self
            .call
            .host
            .data_delete(&self.call.identity, uri)
            .await
            .map(|_| ())
            .map_err(to_kv))
    }

    async fn exists(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let uri = self.table.get(&bucket)?.key_uri(&key);
        Ok(self
            .call
            .host
            .data_exists(&self.call.identity, uri)
            .await
            .map_err(to_kv))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<KvBucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let b = self.table.get(&bucket)?;
        let prefix = format!("{}/", b.collection_uri);
        let marker = match cursor {
            None | Some(0) => None,
            Some(n) => match b.markers.get(n as usize - 1) {
                Some(m) => Some(m.clone()),
                None => {
                    return Ok(Err(store::Error::Other(format!(
                        "unknown cursor {n}: pass a cursor list-keys returned"
                    ))));
                }
            },
        };
        let page = self
            .call
            .host
            .data_list(&self.call.identity, prefix.clone(), marker, 1000)
            .await;
        let (files, next) = match page {
            Ok(p) => p,
            Err(GuestDataError::NotFound(_)) => (Vec::new(), None),
            Err(e) => return Ok(Err(to_kv(e))),
        };
        let keys = files
            .into_iter()
            .filter_map(|f| f.uri.strip_prefix(&prefix).map(str::to_string))
            .collect();
        let cursor = match next {
            Some(m) => {
                let b = self.table.get_mut(&bucket)?;
                b.markers.push(m);
                Some(b.markers.len() as u64)
            }
            None => None,
        };
        Ok(Ok(store::KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<KvBucket>) -> wasmtime::Result<()> {
        let rep = bucket.rep();
        self.table.delete(bucket)?;
        self.call_buckets.retain(|r| *r != rep);
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<KvBucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, store::Error>> {
        let uri = self.table.get(&bucket)?.key_uri(&key);
        Ok(self
            .call
            .host
            .data_increment(&self.call.identity, uri, delta)
            .await
            .map_err(to_kv))
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let uri = self.table.get(&bucket)?.key_uri(&key);
            match self.call.host.data_get(&self.call.identity, uri).await {
                Ok(p) => out.push(Some((key, Vec::from(p.body)))),
                Err(GuestDataError::NotFound(_)) => out.push(None),
                Err(e) => return Ok(Err(to_kv(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<KvBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        for (key, value) in key_values {
            let uri = self.table.get(&bucket)?.key_uri(&key);
            let payload = super::Payload {
                content_type: "application/octet-stream".into(),
                body: value.into(),
            };
            if let Err(e) = self
                .call
                .host
                .data_put(&self.call.identity, uri, payload)
                .await
            {
                return Ok(Err(to_kv(e)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<KvBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        for key in keys {
            let uri = self.table.get(&bucket)?.key_uri(&key);
            if let Err(e) = self.call.host.data_delete(&self.call.identity, uri).await {
                return Ok(Err(to_kv(e)));
            }
        }
        Ok(Ok(()))
    }
}
