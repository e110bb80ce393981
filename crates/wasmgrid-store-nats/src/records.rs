//! [`Records`] on key/value buckets (docs/STORAGE.md 4.1).

use crate::keys::{decode_key, encode_key, encode_prefix};
use crate::{MAX_VALUE, NatsStore, store_err};
use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store as Kv, UpdateErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::VecDeque;
use std::time::Duration;
use wasmgrid_store::records::{Bucket, Change, Entry, Records};
use wasmgrid_store::{Page, Rev, StoreError};

/// How long a listing waits for the server to deliver the keys under a prefix.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn nats_key(key: &str) -> Result<String, StoreError> {
    encode_key(key).map_err(|e| StoreError::Backend(e.to_string()))
}

fn check_size(value: &Bytes) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE {
        return Err(StoreError::TooLarge {
            what: "record",
            limit: MAX_VALUE as u64,
        });
    }
    Ok(())
}

/// The KV operation of a message (`KV-Operation` header; none: a put).
pub(crate) fn operation(message: &async_nats::Message) -> Operation {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(Operation::Put)
}

/// The stream sequence of the newest message under `prefix`, as the stream
/// leader has it (0: none). A consumer may be placed on a replica that has not
/// applied the newest writes yet, so its own count of what is pending can miss
/// them; reading up to this sequence makes a listing or a watch's snapshot
/// include every write acknowledged before it started.
async fn leader_last_seq(kv: &Kv, filter: &str) -> Result<u64, StoreError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match kv.stream.get_last_raw_message_by_subject(filter).await {
        Ok(message) => Ok(message.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(store_err("reading the newest key under a prefix", e)),
    }
}

/// An ordered push consumer over the last message of every key under
/// `prefix`, then every later one; and the stream sequence up to which it must
/// be read to have seen every write acknowledged before the call (0: nothing
/// to read).
pub(crate) async fn last_per_key(
    kv: &Kv,
    client: &async_nats::Client,
    prefix: &str,
    headers_only: bool,
) -> Result<(Ordered, u64), StoreError> {
    let filter = encode_prefix(prefix).map_err(|e| StoreError::Backend(e.to_string()))?;
    last_per_subject(kv, client, &filter, headers_only).await
}

/// [`last_per_key`] for the keys matching `filter` (a NATS key pattern with
/// wildcards, such as `a.b.*`).
pub(crate) async fn last_per_subject(
    kv: &Kv,
    client: &async_nats::Client,
    filter: &str,
    headers_only: bool,
) -> Result<(Ordered, u64), StoreError> {
    let filter = format!("{}{filter}", kv.prefix);
    let upto = leader_last_seq(kv, &filter).await?;
    let consumer = kv
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter,
            headers_only,
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| store_err("creating a watch consumer", e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| store_err("subscribing to a watch consumer", e))?;
    Ok((messages, upto))
}

/// Every key under `prefix` that has a message (live or deleted: the caller
/// reads each), logical and sorted, as the stream leader has them: from the
/// stream's info (`subjects_filter`), not a consumer, so a consumer placed
/// on a dead server cannot hold a listing up (nats-server PR #7165), and
/// every write acknowledged before the call is included.
pub(crate) async fn keys_under(kv: &Kv, prefix: &str) -> Result<Vec<String>, StoreError> {
    use futures::TryStreamExt;
    let filter = encode_prefix(prefix).map_err(|e| StoreError::Backend(e.to_string()))?;
    let subjects: Vec<String> = kv
        .stream
        .info_with_subjects(format!("{}{filter}", kv.prefix))
        .await
        .map_err(|e| store_err("listing keys", e))?
        .map_ok(|(subject, _)| subject)
        .try_collect()
        .await
        .map_err(|e| store_err("listing keys", e))?;
    let mut keys: Vec<String> = subjects
        .iter()
        .filter_map(|s| s.strip_prefix(kv.prefix.as_str()))
        .filter_map(|k| match decode_key(k) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!("skipping a key this build did not write: {e}");
                None
            }
        })
        .collect();
    keys.sort_unstable();
    Ok(keys)
}

/// A page of `keys` (sorted) after `after`: `read` gives each key's live
/// value or `None` (deleted), read `IN_FLIGHT` at a time until `limit` are
/// found; the page's `next` is its last key when keys remain after it.
pub(crate) async fn page_of<T, F, Fut>(
    keys: &[String],
    after: Option<&str>,
    limit: usize,
    read: F,
) -> Result<Page<T>, StoreError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
{
    const IN_FLIGHT: usize = 16;
    let limit = limit.max(1);
    let mut pos = keys.partition_point(|k| after.is_some_and(|a| k.as_str() <= a));
    let mut items = Vec::new();
    let mut last = None;
    while pos < keys.len() && items.len() < limit {
        // Read as many keys as the page still needs (at least IN_FLIGHT),
        // concurrently. The futures are built before the stream (not by a
        // closure inside it), which `async_trait`'s `Send` bound cannot see
        // through.
        let wanted = (limit - items.len()).max(IN_FLIGHT);
        let chunk = &keys[pos..(pos + wanted).min(keys.len())];
        let reads: Vec<_> = chunk.iter().map(|k| read(k.clone())).collect();
        let values: Vec<_> = futures::stream::iter(reads)
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        for (key, value) in chunk.iter().zip(values) {
            pos += 1;
            if let Some(v) = value? {
                items.push(v);
                last = Some(key.clone());
                if items.len() == limit {
                    break;
                }
            }
        }
    }
    // Keys after a full page (live or not: the next page may come back
    // empty, but no key is ever skipped).
    let next = if pos < keys.len() { last } else { None };
    Ok(Page { items, next })
}

/// Calls `each` with the NATS key, operation and value (empty with
/// `headers_only`) of the last message of every key under `prefix`, then of
/// any later one up to the stream's newest as of the call: every write
/// acknowledged before it is seen.
pub(crate) async fn scan_last(
    kv: &Kv,
    client: &async_nats::Client,
    prefix: &str,
    headers_only: bool,
    mut each: impl FnMut(&str, Operation, &Bytes),
) -> Result<(), StoreError> {
    let (mut messages, upto) = last_per_key(kv, client, prefix, headers_only).await?;
    if upto == 0 {
        return Ok(());
    }
    let collect = async {
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| store_err("listing keys", e))?;
            let info = message
                .info()
                .map_err(|e| StoreError::Backend(format!("listing keys: {e}")))?;
            let (seq, left) = (info.stream_sequence, info.pending);
            if let Some(k) = message.subject.strip_prefix(kv.prefix.as_str()) {
                each(k, operation(&message), &message.payload);
            }
            if left == 0 && seq >= upto {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "the key listing ended early".into(),
        ))
    };
    tokio::time::timeout(LIST_TIMEOUT, collect)
        .await
        .map_err(|_| StoreError::Unavailable("listing keys timed out".into()))?
}

/// The header that carries a fed record's change event with the record's
/// own message, for the versions feed (crate::queues) to move into the log.
pub(crate) const EVENT_HEADER: &str = "Wg-Event";

impl NatsStore {
    /// Writes a record of a fed bucket as one message that also carries its
    /// change event (base64 in [`EVENT_HEADER`]): the record and its event
    /// are one write, so the feed can never see one without the other. The
    /// write is conditional on the key's last revision being `expected` (0:
    /// never written, a create).
    async fn publish_announced(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        expected: Rev,
        event: Bytes,
    ) -> Result<Rev, StoreError> {
        use async_nats::jetstream::context::PublishErrorKind;
        use base64::Engine as _;
        check_size(&value)?;
        let kv = self.kv(bucket)?;
        let subject = format!(
            "{}{}",
            kv.put_prefix.as_ref().unwrap_or(&kv.prefix),
            nats_key(key)?
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string());
        headers.insert(
            EVENT_HEADER,
            base64::engine::general_purpose::STANDARD.encode(&event),
        );
        let published = async {
            self.js
                .publish_with_headers(subject, headers, value)
                .await?
                .await
        };
        match published.await {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(if expected == 0 {
                StoreError::Exists {
                    bucket: bucket.name(),
                    key: key.to_string(),
                }
            } else {
                self.changed(bucket, key, expected).await
            }),
            Err(e) => Err(store_err("writing a record", e)),
        }
    }

    async fn changed(&self, bucket: Bucket, key: &str, expected: Rev) -> StoreError {
        let found = match self.get(bucket, key).await {
            Ok(entry) => entry.map(|e| e.rev),
            Err(e) => return e,
        };
        StoreError::Changed {
            bucket: bucket.name(),
            key: key.to_string(),
            expected,
            found,
        }
    }
}

/// What a watch holds between items.
struct WatchState {
    kv: Kv,
    client: async_nats::Client,
    prefix: String,
    messages: Option<Ordered>,
    synced: bool,
    /// Before `synced`: the stream sequence the snapshot must reach, and the
    /// keys it has shown (a delete of one of them while catching up is news).
    upto: u64,
    shown: std::collections::HashSet<String>,
    queue: VecDeque<Result<Change, StoreError>>,
    failed: bool,
}

impl WatchState {
    /// (Re)starts the consumer; `reset`: a restart after a failure.
    async fn start(&mut self, reset: bool) {
        match last_per_key(&self.kv, &self.client, &self.prefix, false).await {
            Ok((messages, upto)) => {
                if reset {
                    self.queue.push_back(Ok(Change::Reset));
                }
                self.messages = Some(messages);
                self.upto = upto;
                self.shown.clear();
                self.synced = upto == 0;
                if self.synced {
                    self.queue.push_back(Ok(Change::Synced));
                }
            }
            Err(e) => {
                self.queue.push_back(Err(e));
                self.failed = true;
            }
        }
    }

    fn on_message(&mut self, message: async_nats::jetstream::Message) {
        let (rev, left) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(e) => {
                self.queue
                    .push_back(Err(StoreError::Backend(format!("watch metadata: {e}"))));
                return;
            }
        };
        let op = operation(&message);
        let key = message
            .subject
            .strip_prefix(self.kv.prefix.as_str())
            .map(decode_key);
        match key {
            Some(Ok(key)) => match op {
                Operation::Put => {
                    if !self.synced {
                        self.shown.insert(key.clone());
                    }
                    self.queue.push_back(Ok(Change::Put(Entry {
                        key,
                        value: message.payload.clone(),
                        rev,
                    })))
                }
                // A deleted key in the snapshot is simply absent, unless the
                // snapshot already showed it (a lagging replica catching up).
                _ if !self.synced && !self.shown.remove(&key) => {}
                _ => self.queue.push_back(Ok(Change::Deleted { key, rev })),
            },
            _ => {
                tracing::warn!(subject = %message.subject, "watch: skipping a key this build did not write")
            }
        }
        if !self.synced && left == 0 && rev >= self.upto {
            self.synced = true;
            self.shown.clear();
            self.queue.push_back(Ok(Change::Synced));
        }
    }
}

#[async_trait::async_trait]
impl Records for NatsStore {
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError> {
        let kv = self.kv(bucket)?;
        let entry = kv
            .entry(nats_key(key)?)
            .await
            .map_err(|e| store_err("reading a record", e))?;
        Ok(entry.and_then(|e| {
            (e.operation == Operation::Put).then(|| Entry {
                key: key.to_string(),
                value: e.value,
                rev: e.revision,
            })
        }))
    }

    async fn create(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<Rev, StoreError> {
        check_size(&value)?;
        let kv = self.kv(bucket)?;
        match kv.create(nats_key(key)?, value).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Err(StoreError::Exists {
                bucket: bucket.name(),
                key: key.to_string(),
            }),
            Err(e) => Err(store_err("creating a record", e)),
        }
    }

    async fn create_announced(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        event: Bytes,
    ) -> Result<Rev, StoreError> {
        self.publish_announced(bucket, key, value, 0, event).await
    }

    async fn update(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        expected: Rev,
    ) -> Result<Rev, StoreError> {
        check_size(&value)?;
        let kv = self.kv(bucket)?;
        match kv.update(nats_key(key)?, value, expected).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                Err(self.changed(bucket, key, expected).await)
            }
            Err(e) => Err(store_err("updating a record", e)),
        }
    }

    async fn update_announced(
        &self,
        bucket: Bucket,
        key: &str,
        value: Bytes,
        expected: Rev,
        event: Bytes,
    ) -> Result<Rev, StoreError> {
        self.publish_announced(bucket, key, value, expected, event)
            .await
    }

    async fn put(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<Rev, StoreError> {
        check_size(&value)?;
        self.kv(bucket)?
            .put(nats_key(key)?, value)
            .await
            .map_err(|e| store_err("writing a record", e))
    }

    async fn delete(
        &self,
        bucket: Bucket,
        key: &str,
        expected: Option<Rev>,
    ) -> Result<(), StoreError> {
        let kv = self.kv(bucket)?;
        match kv.delete_expect_revision(nats_key(key)?, expected).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(self
                .changed(bucket, key, expected.unwrap_or_default())
                .await),
            Err(e) => Err(store_err("deleting a record", e)),
        }
    }

    async fn list(
        &self,
        bucket: Bucket,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Entry>, StoreError> {
        let kv = self.kv(bucket)?;
        let keys = keys_under(kv, prefix).await?;
        // Deleted since the key listing, or a delete marker: not in the page.
        page_of(&keys, after, limit, |key| async move {
            self.get(bucket, &key).await
        })
        .await
    }

    async fn watch(
        &self,
        bucket: Bucket,
        prefix: &str,
    ) -> Result<BoxStream<'static, Result<Change, StoreError>>, StoreError> {
        let kv = self.kv(bucket)?.clone();
        encode_prefix(prefix).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut state = WatchState {
            kv,
            client: self.js.client(),
            prefix: prefix.to_string(),
            messages: None,
            synced: false,
            upto: 0,
            shown: Default::default(),
            queue: VecDeque::new(),
            failed: false,
        };
        state.start(false).await;
        if state.failed
            && let Some(Err(e)) = state.queue.pop_front()
        {
            return Err(e);
        }
        let stream = futures::stream::unfold(state, |mut w| async move {
            loop {
                if let Some(item) = w.queue.pop_front() {
                    return Some((item, w));
                }
                if w.failed {
                    return None;
                }
                let next = match w.messages.as_mut() {
                    Some(m) => m.next().await,
                    None => None,
                };
                match next {
                    Some(Ok(message)) => w.on_message(message),
                    // The ordered consumer recreates itself after a gap; an
                    // error or an end it could not recover from: start again
                    // with a fresh snapshot.
                    Some(Err(e)) => {
                        tracing::warn!("records watch restarts after: {e}");
                        w.messages = None;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        w.start(true).await;
                    }
                    None => {
                        w.messages = None;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        w.start(true).await;
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn next_id(&self, scope: &str) -> Result<u64, StoreError> {
        loop {
            let id: u64 = rand::random();
            if id == 0 {
                continue;
            }
            match self
                .create(Bucket::Ids, &format!("{scope}/{id:016x}"), Bytes::new())
                .await
            {
                Ok(_) => return Ok(id),
                Err(StoreError::Exists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
