//! wasmgrid's storage contracts on NATS JetStream 2.9 (docs/STORAGE.md,
//! section 4; issue 15).
//!
//! This first increment implements [`Records`](wasmgrid_store::records::Records)
//! (one key/value bucket per [`Bucket`]), [`Leases`](wasmgrid_store::leases::Leases)
//! (create-once epoch keys in `P_leases`) and [`Blobs`](wasmgrid_store::blobs::Blobs)
//! (object stores `P_components` and `P_blobs`) on [`NatsStore`], and
//! [`DeliveryQueues`](wasmgrid_store::queues::DeliveryQueues) on
//! [`NatsQueues`] (streams `P_events` and `P_dlq`). Keys are
//! mapped with [`keys::encode_key`] (STORAGE.md 2.0). Everything works on
//! Debian's nats-server 2.9.10, with the one caveat of STORAGE.md rule 3:
//! update-if-revision does not exclude a concurrent writer on a clustered
//! stream before 2.9.21 (nats-server #4320).

mod blobs;
mod changelog;
mod files;
pub use files::{NatsFiles, TOMBSTONE_AGE};
mod jobqueue;
pub use jobqueue::NatsJobs;
pub mod keys;
mod leases;
mod nodes;
pub use leases::SKEW_MARGIN;
pub use nodes::{NODE_TTL, Servers, StreamUsage};
mod queues;
pub use queues::NatsQueues;
mod records;
#[doc(hidden)]
pub mod testing;

use async_nats::jetstream;
use std::collections::HashMap;
use std::time::Duration;
use wasmgrid_store::StoreError;
use wasmgrid_store::records::Bucket;

/// The smallest `max_payload` the backend runs with: a 1 MiB event plus its
/// envelope, and 1 MiB values, must fit in one message.
pub const MIN_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// The largest record value: `max_payload` less room for the subject and
/// headers.
pub const MAX_VALUE: usize = MIN_MAX_PAYLOAD - 64 * 1024;

/// Every [`Bucket`], in the order the buckets are created.
const BUCKETS: [Bucket; 9] = [
    Bucket::Keys,
    Bucket::Versions,
    Bucket::Collections,
    Bucket::Secrets,
    Bucket::Topics,
    Bucket::Subscriptions,
    Bucket::Jobs,
    Bucket::Ids,
    Bucket::Meta,
];

/// Why [`NatsStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No server could be reached.
    #[error(
        "cannot reach NATS at {urls}: {reason} (is nats-server running with JetStream enabled, and are the URL and credentials right?)"
    )]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// The client's error.
        reason: String,
    },
    /// The credentials file could not be read.
    #[error("reading the NATS credentials file {path}: {reason}")]
    Creds {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The server's `max_payload` is below [`MIN_MAX_PAYLOAD`].
    #[error(
        "the NATS server's max_payload is {found} bytes, but wasmgrid needs at least {needed}: set `max_payload: 8MB` in the nats-server configuration"
    )]
    MaxPayload {
        /// The server's limit.
        found: usize,
        /// What wasmgrid needs.
        needed: usize,
    },
    /// The server is older than 2.9.
    #[error("nats-server {0} is too old: wasmgrid needs 2.9 or later with JetStream")]
    Version(String),
    /// The prefix is not a valid bucket name part.
    #[error("cluster prefix {0:?} must be 1-32 characters of [A-Za-z0-9-]")]
    Prefix(String),
    /// Creating or binding a bucket or object store failed.
    #[error("creating or binding {name}: {reason}")]
    Setup {
        /// The bucket or object store.
        name: String,
        /// The server's or client's error.
        reason: String,
    },
}

/// The NATS JetStream backend: one connection, the key/value buckets of
/// STORAGE.md 4.1 and 4.7 and the object stores of 4.6, all with the
/// configured number of replicas.
#[derive(Clone)]
pub struct NatsStore {
    js: jetstream::Context,
    buckets: HashMap<&'static str, jetstream::kv::Store>,
    leases: jetstream::kv::Store,
    /// Heartbeats (crate::nodes).
    nodes: jetstream::kv::Store,
    components: jetstream::object_store::ObjectStore,
    blobs: jetstream::object_store::ObjectStore,
    server_version: String,
    prefix: String,
    replicas: usize,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

/// `(major, minor, patch)` of a server version string (`2.9.10`, `v2.10.0-beta`).
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// The KV bucket name of `bucket` under `prefix` (`P_keys`, `P_subs`, ...).
fn bucket_name(prefix: &str, bucket: Bucket) -> String {
    let short = match bucket {
        Bucket::Subscriptions => "subs",
        other => other.name(),
    };
    format!("{prefix}_{short}")
}

pub(crate) fn setup_err(name: &str) -> impl FnOnce(String) -> ConnectError + '_ {
    move |reason| ConnectError::Setup {
        name: name.to_string(),
        reason,
    }
}

impl NatsStore {
    /// Connects to `urls` (comma-separated `nats://host:port`), checks the
    /// server (version 2.9 or later, `max_payload` at least
    /// [`MIN_MAX_PAYLOAD`]), and creates or binds every bucket and object
    /// store under `prefix` with `replicas` replicas. Logs a warning naming
    /// nats-server #4320 when the server is older than 2.9.21.
    pub async fn connect(
        urls: &str,
        prefix: &str,
        replicas: usize,
        creds: Option<&std::path::Path>,
    ) -> Result<NatsStore, ConnectError> {
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConnectError::Prefix(prefix.to_string()));
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("wasmgrid")
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| ConnectError::Creds {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
        }
        let addrs: Vec<&str> = urls.split(',').map(str::trim).collect();
        let client =
            options
                .connect(addrs.as_slice())
                .await
                .map_err(|e| ConnectError::Unreachable {
                    urls: urls.to_string(),
                    reason: e.to_string(),
                })?;
        let info = client.server_info();
        match parse_version(&info.version) {
            Some(v) if v >= (2, 9, 0) => {
                if v < (2, 9, 21) && replicas > 1 {
                    tracing::warn!(
                        version = %info.version,
                        "nats-server before 2.9.21 does not check update-if-revision at apply time on clustered streams (nats-server issue #4320): concurrent updates of one record may both succeed; use 2.9.21 or later with replicas > 1"
                    );
                }
            }
            _ => return Err(ConnectError::Version(info.version.clone())),
        }
        if info.max_payload < MIN_MAX_PAYLOAD {
            return Err(ConnectError::MaxPayload {
                found: info.max_payload,
                needed: MIN_MAX_PAYLOAD,
            });
        }
        let js = jetstream::new(client);
        let mut buckets = HashMap::new();
        for bucket in BUCKETS {
            let history = if bucket == Bucket::Versions { 5 } else { 1 };
            let kv = kv_bucket(
                &js,
                &bucket_name(prefix, bucket),
                history,
                replicas,
                Duration::ZERO,
            )
            .await?;
            buckets.insert(bucket.name(), kv);
        }
        let leases = kv_bucket(
            &js,
            &format!("{prefix}_leases"),
            1,
            replicas,
            Duration::ZERO,
        )
        .await?;
        let nodes = kv_bucket(
            &js,
            &format!("{prefix}_nodes"),
            1,
            replicas,
            nodes::NODE_TTL,
        )
        .await?;
        let components = object_store(&js, &format!("{prefix}_components"), replicas).await?;
        let blobs = object_store(&js, &format!("{prefix}_blobs"), replicas).await?;
        Ok(NatsStore {
            js,
            buckets,
            leases,
            nodes,
            components,
            blobs,
            server_version: info.version.clone(),
            prefix: prefix.to_string(),
            replicas: replicas.max(1),
        })
    }

    /// The version of the server this store is connected to.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The connection's JetStream context (for tests and later contracts).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    fn kv(&self, bucket: Bucket) -> Result<&jetstream::kv::Store, StoreError> {
        self.buckets
            .get(bucket.name())
            .ok_or_else(|| StoreError::Backend(format!("bucket {} is not set up", bucket.name())))
    }
}

/// Binds bucket `name`, or creates its stream with the configuration
/// async-nats's `create_key_value` would give it (history `history`, file
/// storage, `replicas`, entries older than `max_age` removed unless it is
/// zero), except direct gets off, so a get is answered by the
/// stream leader and sees every write acknowledged before it (STORAGE.md
/// 4.1). The stream is created directly because `create_key_value` first
/// asks for the account info, whose 2.9.10 reply async-nats 0.52 cannot
/// parse.
pub(crate) async fn kv_bucket(
    js: &jetstream::Context,
    name: &str,
    history: i64,
    replicas: usize,
    max_age: Duration,
) -> Result<jetstream::kv::Store, ConnectError> {
    let err = |e: String| setup_err(name)(e);
    let stream_name = format!("KV_{name}");
    if js.get_stream(&stream_name).await.is_err() {
        let created = js
            .create_stream(jetstream::stream::Config {
                name: stream_name.clone(),
                description: Some(format!("wasmgrid records: {name}")),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: history,
                max_age,
                max_message_size: MAX_VALUE as i32,
                storage: jetstream::stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                deny_purge: false,
                allow_direct: false,
                num_replicas: replicas.max(1),
                discard: jetstream::stream::DiscardPolicy::New,
                // JetStream refuses a window longer than the age limit.
                duplicate_window: if max_age.is_zero() {
                    Duration::from_secs(120)
                } else {
                    max_age.min(Duration::from_secs(120))
                },
                ..Default::default()
            })
            .await;
        // Another node may have created it meanwhile: bind below either way.
        if let Err(e) = created
            && js.get_stream(&stream_name).await.is_err()
        {
            return Err(err(e.to_string()));
        }
    }
    js.get_key_value(name).await.map_err(|e| err(e.to_string()))
}

/// Binds object store `name`, or creates its stream with the configuration
/// async-nats's `create_object_store` would give it, except direct gets off
/// (as [`kv_bucket`]): with them on, an object's info may be read from a
/// replica that has not applied the write yet, so a blob finished a moment
/// ago could read as missing. A stream an older build created with direct
/// gets on is switched off here.
async fn object_store(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<jetstream::object_store::ObjectStore, ConnectError> {
    let err = |e: String| setup_err(name)(e);
    let stream_name = format!("OBJ_{name}");
    match js.get_stream(&stream_name).await {
        Ok(mut stream) => {
            let config = stream
                .info()
                .await
                .map_err(|e| err(e.to_string()))?
                .config
                .clone();
            if config.allow_direct {
                js.update_stream(jetstream::stream::Config {
                    allow_direct: false,
                    ..config
                })
                .await
                .map_err(|e| err(e.to_string()))?;
            }
        }
        Err(_) => {
            let created = js
                .create_stream(jetstream::stream::Config {
                    name: stream_name.clone(),
                    description: Some(format!("wasmgrid blobs: {name}")),
                    subjects: vec![format!("$O.{name}.C.>"), format!("$O.{name}.M.>")],
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    discard: jetstream::stream::DiscardPolicy::New,
                    allow_rollup: true,
                    allow_direct: false,
                    ..Default::default()
                })
                .await;
            // Another node may have created it meanwhile: bind below either way.
            if let Err(e) = created
                && js.get_stream(&stream_name).await.is_err()
            {
                return Err(err(e.to_string()));
            }
        }
    }
    js.get_object_store(name)
        .await
        .map_err(|e| err(e.to_string()))
}

/// A client or server error as a [`StoreError`]: timeouts and a missing
/// connection are [`StoreError::Unavailable`], the rest is
/// [`StoreError::Backend`].
pub(crate) fn store_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("no responders")
        || lower.contains("disconnected")
        || lower.contains("connection")
        || lower.contains("insufficient resources")
    {
        StoreError::Unavailable(format!("{what}: {text}"))
    } else if lower.contains("maximum payload") || lower.contains("max payload") {
        StoreError::TooLarge {
            what: "value",
            limit: MIN_MAX_PAYLOAD as u64,
        }
    } else {
        StoreError::Backend(format!("{what}: {text}"))
    }
}

/// How long a no-wait pull request may go unanswered before it is given up.
/// A healthy server answers in milliseconds; a request whose consumer leader
/// died with its server is never answered, and async-nats sets no timer on a
/// fetch without `expires`, so without this a worker would wait forever.
pub(crate) const FETCH_STALL: Duration = Duration::from_secs(5);

/// A pull request's messages, given up after `stall` without one. Messages
/// the server sends after that go to an inbox nobody reads and come back
/// when their ack wait ends.
///
/// One timer per request, not one per message: a message only stamps the
/// time, and the timer, when it fires early, moves to the stamp plus `stall`.
pub(crate) struct Unstalled {
    messages: async_nats::jetstream::consumer::pull::Batch,
    stall: Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Unstalled {
    pub(crate) fn new(
        messages: async_nats::jetstream::consumer::pull::Batch,
        stall: Duration,
    ) -> Self {
        let last = tokio::time::Instant::now();
        Unstalled {
            messages,
            stall,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + stall)),
        }
    }

    /// The next message, or `None` when the request has ended or stalled.
    pub(crate) async fn next(
        &mut self,
    ) -> Option<Result<async_nats::jetstream::Message, async_nats::Error>> {
        use futures::StreamExt;
        loop {
            tokio::select! {
                biased;
                next = self.messages.next() => {
                    self.last = tokio::time::Instant::now();
                    return next;
                }
                () = &mut self.timer => {
                    let due = self.last + self.stall;
                    if due > tokio::time::Instant::now() {
                        self.timer.as_mut().reset(due);
                        continue;
                    }
                    tracing::warn!(
                        "a pull request went unanswered for {:?} (a nats-server lost?); giving it up",
                        self.stall
                    );
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("v2.10.0-beta.1"), Some((2, 10, 0)));
        assert!(parse_version("2.9.10").unwrap() < (2, 9, 21));
        assert_eq!(parse_version("x"), None);
        assert_eq!(bucket_name("wg", Bucket::Subscriptions), "wg_subs");
        assert_eq!(bucket_name("wg", Bucket::Keys), "wg_keys");
    }
}
