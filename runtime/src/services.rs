//! The host services guests reach (data collections and secrets), implementing
//! the engine's [`HostApi`]: this is where a guest's identity becomes a
//! [`Principal`] and every access is checked.

use crate::data::{Content, DataError, DataPath, DataService, Principal};
use crate::engine::{GuestDataError, GuestFileInfo, GuestIdentity, HostApi, Payload};
use crate::secrets::SecretStore;
use std::sync::Arc;

/// Data and secrets, as guests see them.
pub struct Services {
    data: Arc<DataService>,
    secrets: Arc<SecretStore>,
}

impl Services {
    /// Services over the node's data service and secret store.
    pub fn new(data: Arc<DataService>, secrets: Arc<SecretStore>) -> Self {
        Self { data, secrets }
    }
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
        let body = match content {
            Content::Inline(b) => b,
            Content::Blob(mut f) => {
                let size = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
                tokio::task::spawn_blocking(move || {
                    use std::io::Read;
                    let mut buf = Vec::with_capacity(size);
                    f.read_to_end(&mut buf).map(|_| buf)
                })
                .await
                .map_err(|e| GuestDataError::StoreUnavailable(format!("store worker failed: {e}")))?
                .map_err(|e| GuestDataError::StoreUnavailable(format!("reading {uri}: {e}")))?
                .into()
            }
        };
        Ok(Payload { content_type, body })
    }

    async fn data_put(
        &self,
        who: &GuestIdentity,
        uri: String,
        content: Payload,
    ) -> Result<(), GuestDataError> {
        let p = parse(who, &uri)?;
        if content.body.len() as u64 > crate::data::DEFAULT_MAX_FILE {
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
            .ok()
            .flatten()
    }
}
