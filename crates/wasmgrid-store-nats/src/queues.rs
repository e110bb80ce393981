//! [`DeliveryQueues`] on JetStream (docs/STORAGE.md 4.4; the change log of
//! 4.2 lives on the same object, in crate::changelog): stream `P_events`
//! (work-queue retention, one subject `P.q.<sub hex>` per subscription) with
//! one durable pull consumer per subscription, dead letters in stream
//! `P_dlq` (`P.dl.<sub hex>`), and each entry's attempt state in the
//! key/value bucket `P_attempts`.
//!
//! A leased entry is a message delivered to this node and not yet
//! acknowledged; when the lease (the consumer's `ack_wait`) ends without an
//! outcome, the server hands it to the next node that leases. A retry is a
//! nak with a delay: the server keeps the message and hands it out again
//! when it is due ([`DeliveryQueues::redelivers_retries`]).

use crate::{ConnectError, NatsStore, kv_bucket, setup_err, store_err};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::kv::Store as Kv;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType, Stream,
};
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use wasmgrid_store::queues::{
    DeliveryQueues, Enqueue, IngestReport, Leased, QueueCounts, SubId, Token,
};
use wasmgrid_store::{Page, StoreError};

/// How many messages a subscription may hold leased or waiting for a retry
/// delay at once (STORAGE.md 4.4): the retry backlog, not the concurrency
/// (the workers enforce `maxConcurrentDeliveries`).
const MAX_ACK_PENDING: i64 = 65_536;

/// How long attempt records outlive their entry at most: the longest
/// time-to-live (1440 min) plus an hour.
const ATTEMPTS_MAX_AGE: Duration = Duration::from_secs(25 * 3600);

/// Dead letters and redrives page through the dead-letter stream this many
/// messages at a time.
const REDRIVE_PAGE: usize = 500;

/// An entry's attempt state between deliveries (`P_attempts`, key
/// `<sub hex>.<stream seq>`), written by [`DeliveryQueues::retry`].
#[derive(Serialize, Deserialize)]
struct Attempts {
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_attempt_ms: Option<u64>,
}

/// The delivery queues of a cluster, on the connection of a [`NatsStore`].
pub struct NatsQueues {
    pub(crate) js: jetstream::Context,
    pub(crate) prefix: String,
    /// The change log (`P_log`, crate::changelog) and its router's consumer.
    pub(crate) log: Stream,
    pub(crate) router: PullConsumer,
    /// Applies file changes as the router reads them (the repair pass of
    /// STORAGE.md 4.3).
    pub(crate) files: crate::files::NatsFiles,
    /// What the router read and has not acknowledged.
    pub(crate) unacked: tokio::sync::Mutex<crate::changelog::Unacked>,
    /// Reads every revision of the `Versions` bucket for the versions feed.
    versions_feed: PullConsumer,
    events: Stream,
    dlq: Stream,
    attempts: Kv,
    lease: Duration,
    consumers: Mutex<HashMap<u64, PullConsumer>>,
    /// Live nodes, as the heartbeats last showed them (at least 1).
    sharing_nodes: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for NatsQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueues")
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Binds stream `config.name`, or creates it; an existing stream whose
/// duplicate window or subjects differ is updated to `config`'s.
pub(crate) async fn stream(
    js: &jetstream::Context,
    config: StreamConfig,
) -> Result<Stream, ConnectError> {
    let name = config.name.clone();
    let err = |e: String| setup_err(&name)(e);
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let current = existing
                .info()
                .await
                .map_err(|e| err(e.to_string()))?
                .config
                .clone();
            if current.duplicate_window != config.duplicate_window
                || current.subjects != config.subjects
            {
                js.update_stream(StreamConfig {
                    duplicate_window: config.duplicate_window,
                    subjects: config.subjects,
                    ..current
                })
                .await
                .map_err(|e| err(e.to_string()))?;
            }
            Ok(existing)
        }
        Err(_) => match js.create_stream(config).await {
            Ok(created) => Ok(created),
            // Another node may have created it meanwhile.
            Err(e) => js.get_stream(&name).await.map_err(|_| err(e.to_string())),
        },
    }
}

impl NatsStore {
    /// A file stream `P_<name>` on subjects `P.<token>.*` with this store's
    /// replicas: discard new (never drop what is not handled yet), a 2 min
    /// duplicate window, values up to [`crate::MAX_VALUE`].
    pub(crate) fn stream_config(&self, name: &str, what: &str, token: &str) -> StreamConfig {
        let p = &self.prefix;
        StreamConfig {
            name: format!("{p}_{name}"),
            description: Some(format!("wasmgrid {what}")),
            subjects: vec![format!("{p}.{token}.*")],
            storage: StorageType::File,
            num_replicas: self.replicas,
            discard: DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            max_message_size: crate::MAX_VALUE as i32,
            ..Default::default()
        }
    }

    /// The change log `P_log` (STORAGE.md 4.2): the feeds' subjects
    /// `P.log.{d,a,j}` and one subject per file path `P.log.f.<path>` (4.3).
    ///
    /// No size cap yet: JetStream reserves a stream's `max_bytes` on every
    /// replica's disk up front, so a fixed 8 GiB cap failed placement on
    /// small disks (and in the tests, which create several logs). The router
    /// prunes routed entries past LOG_RETENTION; the cap comes with the
    /// node's `--cluster-log-bytes` flag. Discard new: never drop an
    /// unrouted entry.
    pub(crate) fn log_config(&self) -> StreamConfig {
        StreamConfig {
            subjects: vec![format!("{}.log.>", self.prefix)],
            ..self.stream_config(
                "log",
                "change log: the system feeds and file changes",
                "log",
            )
        }
    }

    /// The delivery queues on this connection: streams `P_events` and
    /// `P_dlq` and bucket `P_attempts` (created if missing). `lease` is how
    /// long a node holds an entry without an outcome before another may take
    /// it (the consumers' `ack_wait`); `dedup_window` is the `(source, id)`
    /// deduplication window (the events stream's duplicate window).
    pub async fn queues(
        &self,
        lease: Duration,
        dedup_window: Duration,
    ) -> Result<NatsQueues, ConnectError> {
        let p = &self.prefix;
        let events = stream(
            &self.js,
            StreamConfig {
                retention: RetentionPolicy::WorkQueue,
                duplicate_window: dedup_window.max(Duration::from_secs(1)),
                ..self.stream_config(
                    "events",
                    "delivery queues, one subject per subscription",
                    "q",
                )
            },
        )
        .await?;
        let dlq = stream(
            &self.js,
            self.stream_config("dlq", "dead letters, one subject per subscription", "dl"),
        )
        .await?;
        let log = stream(&self.js, self.log_config()).await?;
        let files = self.files().await?;
        let router = log
            .create_consumer(pull::Config {
                durable_name: Some("router".into()),
                ack_policy: AckPolicy::All,
                deliver_policy: DeliverPolicy::All,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .map_err(|e| setup_err(&format!("{p}_log router"))(e.to_string()))?;
        // Every revision of the Versions bucket, for the versions feed
        // (history 5 per key, never expired: none is missed).
        let versions = self
            .kv(wasmgrid_store::records::Bucket::Versions)
            .map_err(|e| setup_err("versions")(e.to_string()))?
            .stream
            .clone();
        let versions_feed = versions
            .create_consumer(pull::Config {
                durable_name: Some("versions-feed".into()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1_000,
                ..Default::default()
            })
            .await
            .map_err(|e| setup_err(&format!("{p}_versions feed"))(e.to_string()))?;
        let attempts = kv_bucket(
            &self.js,
            &format!("{p}_attempts"),
            1,
            self.replicas,
            ATTEMPTS_MAX_AGE,
        )
        .await?;
        Ok(NatsQueues {
            js: self.js.clone(),
            prefix: p.clone(),
            log,
            router,
            files,
            unacked: Default::default(),
            versions_feed,
            events,
            dlq,
            attempts,
            lease,
            consumers: Mutex::new(HashMap::new()),
            sharing_nodes: std::sync::atomic::AtomicUsize::new(1),
        })
    }
}

/// The reply subject and stream sequence a token carries
/// (`<reply subject>/<stream seq>`).
fn token_parts(token: &Token) -> Result<(&str, u64), StoreError> {
    token
        .0
        .rsplit_once('/')
        .and_then(|(reply, seq)| Some((reply, seq.parse().ok()?)))
        .ok_or_else(|| {
            StoreError::Backend(format!("not a delivery token of this backend: {}", token.0))
        })
}

/// The message id that deduplicates an event per subscription: the first 32
/// hex digits of the sha256 of topic, source and id, each after its length
/// (so no two triples share the input).
fn dedup_id(topic: &str, source: &str, id: &str) -> String {
    let mut h = Sha256::new();
    for part in [topic, source, id] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    hex::encode(&digest[..16])
}

impl NatsQueues {
    /// Moves the change event each version record carries (written by
    /// `create_announced` / `update_announced`) into the change log's
    /// algorithms feed, in revision order, until `shutdown` resolves. One
    /// node runs it (the router's lease, in the node step); a crash between
    /// the append and the acknowledgement appends again under the same
    /// dedup id `ver.<stream seq>`, which the log drops.
    pub async fn run_versions_feed(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let batch = async {
                self.versions_feed
                    .batch()
                    .max_messages(100)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
            };
            let mut messages = tokio::select! {
                m = batch => match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading version records for the feed failed; retrying in 1 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = &mut shutdown => return,
                        }
                    }
                },
                _ = &mut shutdown => return,
            };
            loop {
                let next = tokio::select! {
                    n = messages.next() => n,
                    _ = &mut shutdown => return,
                };
                let Some(Ok(message)) = next else { break };
                if let Err(e) = self.feed_version(&message).await {
                    // Not acknowledged: it comes back after the wait, in order.
                    tracing::warn!(error = %e, "moving a version's event into the log failed; retried");
                    break;
                }
            }
        }
    }

    async fn feed_version(
        &self,
        message: &async_nats::jetstream::Message,
    ) -> Result<(), StoreError> {
        use base64::Engine as _;
        let seq = message
            .info()
            .map_err(|e| StoreError::Backend(format!("version record metadata: {e}")))?
            .stream_sequence;
        let event = message
            .headers
            .as_ref()
            .and_then(|h| h.get(crate::records::EVENT_HEADER))
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str())
                    .ok()
            });
        if let Some(event) = event {
            wasmgrid_store::changelog::ChangeLog::append(
                self,
                wasmgrid_store::changelog::Feed::Algorithms,
                &format!("ver.{seq}"),
                event.into(),
            )
            .await?;
        }
        message
            .double_ack()
            .await
            .map_err(|e| store_err("acknowledging a version record", e))
    }

    pub(crate) fn log_subject(&self, feed: wasmgrid_store::changelog::Feed) -> String {
        format!("{}.log.{}", self.prefix, crate::changelog::feed_token(feed))
    }

    fn queue_subject(&self, sub: SubId) -> String {
        format!("{}.q.{:x}", self.prefix, sub.0)
    }

    fn dead_subject(&self, sub: SubId) -> String {
        format!("{}.dl.{:x}", self.prefix, sub.0)
    }

    fn consumer_config(&self, sub: SubId) -> pull::Config {
        pull::Config {
            durable_name: Some(format!("sub-{:x}", sub.0)),
            filter_subject: self.queue_subject(sub),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: self.lease,
            max_ack_pending: MAX_ACK_PENDING,
            max_deliver: -1,
            ..Default::default()
        }
    }

    /// The subscription's consumer, created when missing (idempotent: the
    /// same configuration from every node).
    async fn consumer(&self, sub: SubId) -> Result<PullConsumer, StoreError> {
        if let Some(c) = self
            .consumers
            .lock()
            .ok()
            .and_then(|c| c.get(&sub.0).cloned())
        {
            return Ok(c);
        }
        let consumer = self
            .events
            .create_consumer(self.consumer_config(sub))
            .await
            .map_err(|e| store_err("creating a subscription's consumer", e))?;
        if let Ok(mut c) = self.consumers.lock() {
            c.insert(sub.0, consumer.clone());
        }
        Ok(consumer)
    }

    fn attempts_key(sub: SubId, seq: u64) -> String {
        format!("{:x}.{seq}", sub.0)
    }

    /// Sends `body` to a message's reply subject (an acknowledgement, nak,
    /// progress or term).
    async fn reply(&self, reply: &str, body: Bytes) -> Result<(), StoreError> {
        self.js
            .client()
            .publish(reply.to_string(), body)
            .await
            .map_err(|e| store_err("acknowledging a delivery", e))
    }

    /// Publishes `payload` to `subject` with message id `msg_id` and waits
    /// for the stream's acknowledgement; whether it was a duplicate.
    async fn publish_durable(
        &self,
        subject: String,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<bool, StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| store_err("publishing", e))?
            .await
            .map_err(|e| store_err("publishing", e))?;
        Ok(ack.duplicate)
    }

    /// Dead letters of `sub` from stream sequence `from` on, at most `limit`.
    async fn dead_page(
        &self,
        sub: SubId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let subject = self.dead_subject(sub);
        let mut out = Vec::new();
        let mut seq = from.max(1);
        while out.len() < limit {
            // STREAM.MSG.GET is answered by the stream leader.
            match self
                .dlq
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subject.clone())
                .send()
                .await
            {
                Ok(m) => {
                    seq = m.sequence + 1;
                    out.push((m.sequence, m.payload));
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(store_err("reading dead letters", e)),
            }
        }
        Ok(out)
    }
    /// Records how many nodes are live (their heartbeats), which divides
    /// each subscription's `maxConcurrentDeliveries` among them
    /// ([`DeliveryQueues::sharing_nodes`]).
    pub fn set_sharing_nodes(&self, nodes: usize) {
        self.sharing_nodes
            .store(nodes.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The deliveries of one pull request's messages, with their attempt
    /// state; a request unanswered for `stall` ends there.
    async fn leased(
        &self,
        sub: SubId,
        messages: async_nats::jetstream::consumer::pull::Batch,
        stall: Duration,
    ) -> Result<Vec<Leased>, StoreError> {
        let mut out = Vec::new();
        let mut messages = crate::Unstalled::new(messages, stall);
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| store_err("leasing deliveries", e))?;
            let Some(reply) = message.reply.as_ref().map(|r| r.to_string()) else {
                continue;
            };
            let (seq, delivered, published) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    info.delivered,
                    info.published.unix_timestamp_nanos(),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "a queued message without metadata: skipped");
                    continue;
                }
            };
            let event = match std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|s| RawValue::from_string(s.to_string()).ok())
            {
                Some(event) => event,
                None => {
                    tracing::error!(seq, "an unreadable queued event: dropped");
                    self.reply(&reply, Bytes::from_static(b"+TERM")).await?;
                    continue;
                }
            };
            let state = if delivered > 1 {
                match self.attempts.get(Self::attempts_key(sub, seq)).await {
                    Ok(Some(bytes)) => serde_json::from_slice::<Attempts>(&bytes).ok(),
                    Ok(None) => None,
                    Err(e) => return Err(store_err("reading an entry's attempts", e)),
                }
            } else {
                None
            };
            out.push(Leased {
                token: Token(format!("{reply}/{seq}").into_boxed_str()),
                size: message.payload.len(),
                event,
                enqueued_ms: u64::try_from(published / 1_000_000).unwrap_or(0),
                attempts: state.as_ref().map_or(0, |s| s.attempts),
                not_before_ms: 0,
                last_outcome: state.as_ref().and_then(|s| s.last_outcome.clone()),
                last_attempt_ms: state.and_then(|s| s.last_attempt_ms),
            });
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl DeliveryQueues for NatsQueues {
    async fn create_queue(&self, sub: SubId) -> Result<(), StoreError> {
        self.consumer(sub).await.map(|_| ())
    }

    async fn drop_queue(&self, sub: SubId) -> Result<(), StoreError> {
        if let Ok(mut c) = self.consumers.lock() {
            c.remove(&sub.0);
        }
        let name = format!("sub-{:x}", sub.0);
        if let Err(e) = self.events.delete_consumer(&name).await {
            // Already gone (a second call, or another node): fine.
            if !e.to_string().to_ascii_lowercase().contains("not found") {
                return Err(store_err("deleting a subscription's consumer", e));
            }
        }
        self.events
            .purge()
            .filter(self.queue_subject(sub))
            .await
            .map_err(|e| store_err("purging a subscription's queue", e))?;
        self.dlq
            .purge()
            .filter(self.dead_subject(sub))
            .await
            .map_err(|e| store_err("purging a subscription's dead letters", e))?;
        // Attempt records expire with the bucket's max age.
        Ok(())
    }

    async fn ingest(
        &self,
        batch: &[Enqueue<'_>],
        _window: Duration,
    ) -> Result<IngestReport, StoreError> {
        // Every publish first (pipelined), then every acknowledgement.
        let mut pending: Vec<(usize, SubId, PublishAckFuture)> = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            let id = e.dedup.map(|d| dedup_id(d.topic, d.source, d.id));
            for &sub in e.subs {
                let mut headers = HeaderMap::new();
                match (&id, e.log_seq) {
                    (Some(id), _) => headers.insert("Nats-Msg-Id", format!("{id}.{:x}", sub.0)),
                    (None, Some(seq)) => {
                        headers.insert("Nats-Msg-Id", format!("log{seq}.{:x}", sub.0))
                    }
                    (None, None) => {}
                }
                let ack = self
                    .js
                    .publish_with_headers(
                        self.queue_subject(sub),
                        headers,
                        Bytes::copy_from_slice(e.event.as_bytes()),
                    )
                    .await
                    .map_err(|e| store_err("queueing an event", e))?;
                pending.push((i, sub, ack));
            }
        }
        // Per event: how many of its messages were new.
        let mut fresh = vec![0usize; batch.len()];
        let mut per_sub: HashMap<SubId, u64> = HashMap::new();
        for (i, sub, ack) in pending {
            let ack = ack.await.map_err(|e| store_err("queueing an event", e))?;
            if !ack.duplicate {
                fresh[i] += 1;
                *per_sub.entry(sub).or_default() += 1;
            }
        }
        let mut report = IngestReport::default();
        for (e, fresh) in batch.iter().zip(fresh) {
            if e.subs.is_empty() {
                report.accepted += 1;
                report.dropped += 1;
            } else if fresh == 0 {
                report.duplicates += 1;
            } else {
                report.accepted += 1;
                report.deliveries += fresh;
            }
        }
        let mut per_sub: Vec<(SubId, u64)> = per_sub.into_iter().collect();
        per_sub.sort_unstable();
        report.per_sub = per_sub;
        Ok(report)
    }

    async fn ingest_routed(
        &self,
        batch: &[Enqueue<'_>],
        upto: u64,
    ) -> Result<IngestReport, StoreError> {
        // Queued first, then the log acknowledged: a crash between routes
        // the entries again, and their `log<seq>` ids queue nothing twice.
        let report = self.ingest(batch, Duration::ZERO).await?;
        wasmgrid_store::changelog::ChangeLog::ack(self, upto).await?;
        Ok(report)
    }

    async fn lease(&self, sub: SubId, max: usize) -> Result<Vec<Leased>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.consumer(sub).await?;
        let messages = consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|e| store_err("leasing deliveries", e))?;
        self.leased(sub, messages, crate::FETCH_STALL).await
    }

    /// One pull request for a single message that the server holds until
    /// one is stored or `wait` passes (a 2.9 pull request with `expires`),
    /// then [`lease`](Self::lease) for the rest.
    async fn lease_wait(
        &self,
        sub: SubId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Leased>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.consumer(sub).await?;
        let first = consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| store_err("waiting for deliveries", e))?;
        let mut out = self.leased(sub, first, wait + crate::FETCH_STALL).await?;
        if !out.is_empty() && max > 1 {
            out.extend(self.lease(sub, max - 1).await?);
        }
        Ok(out)
    }

    async fn extend(&self, _sub: SubId, tokens: &[Token]) -> Result<(), StoreError> {
        for token in tokens {
            let (reply, _) = token_parts(token)?;
            self.reply(reply, Bytes::from_static(b"+WPI")).await?;
        }
        Ok(())
    }

    async fn ack(&self, _sub: SubId, tokens: Vec<Token>) -> Result<(), StoreError> {
        for token in &tokens {
            let (reply, _) = token_parts(token)?;
            self.reply(reply, Bytes::from_static(b"+ACK")).await?;
        }
        Ok(())
    }

    async fn retry(&self, sub: SubId, entry: &Leased) -> Result<(), StoreError> {
        let (reply, seq) = token_parts(&entry.token)?;
        let state = Attempts {
            attempts: entry.attempts,
            last_outcome: entry.last_outcome.clone(),
            last_attempt_ms: entry.last_attempt_ms,
        };
        let bytes = serde_json::to_vec(&state)
            .map_err(|e| StoreError::Backend(format!("encoding attempts: {e}")))?;
        self.attempts
            .put(Self::attempts_key(sub, seq), bytes.into())
            .await
            .map_err(|e| store_err("recording an entry's attempts", e))?;
        let delay =
            Duration::from_millis(entry.not_before_ms.saturating_sub(crate::leases::now_ms()));
        let body = format!("-NAK {{\"delay\":{}}}", delay.as_nanos());
        self.reply(reply, body.into()).await
    }

    async fn dead_letter(
        &self,
        sub: SubId,
        token: Token,
        record: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (reply, seq) = token_parts(&token)?;
        // The record first (deduplicated on the entry), then the removal:
        // after a crash there is the dead letter, the entry, or both.
        self.publish_durable(self.dead_subject(sub), &format!("dl{seq}"), record.into())
            .await?;
        self.reply(reply, Bytes::from_static(b"+TERM")).await?;
        let _ = self.attempts.purge(Self::attempts_key(sub, seq)).await;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.js
            .client()
            .flush()
            .await
            .map_err(|e| store_err("flushing outcomes", e))
    }

    async fn dead_letters(
        &self,
        sub: SubId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<(u64, Vec<u8>)>, StoreError> {
        let limit = limit.max(1);
        let from = after.map_or(1, |a| a + 1);
        let page = self.dead_page(sub, from, limit + 1).await?;
        let items = page.into_iter().map(|(s, b)| (s, b.to_vec())).collect();
        Ok(Page::from_overfetch(items, limit, |(seq, _)| {
            seq.to_string()
        }))
    }

    async fn redrive(&self, sub: SubId, ids: Option<&[String]>) -> Result<usize, StoreError> {
        #[derive(Deserialize)]
        struct DeadLetter {
            event: Box<RawValue>,
        }
        #[derive(Deserialize)]
        struct EventId<'a> {
            #[serde(borrow)]
            id: Option<std::borrow::Cow<'a, str>>,
        }
        let mut moved = 0;
        let mut from = 1;
        loop {
            let page = self.dead_page(sub, from, REDRIVE_PAGE).await?;
            let Some(&(last, _)) = page.last() else {
                break;
            };
            from = last + 1;
            for (dl_seq, bytes) in page {
                let Ok(dl) = serde_json::from_slice::<DeadLetter>(&bytes) else {
                    tracing::error!(dl_seq, "an unreadable dead letter: left in place");
                    continue;
                };
                let id = serde_json::from_str::<EventId>(dl.event.get())
                    .ok()
                    .and_then(|e| e.id.map(|i| i.into_owned()));
                if let Some(ids) = ids
                    && !id.as_ref().is_some_and(|id| ids.contains(id))
                {
                    continue;
                }
                // Queue it again (deduplicated on the dead letter), then
                // remove the dead letter.
                self.publish_durable(
                    self.queue_subject(sub),
                    &format!("rd{dl_seq}"),
                    Bytes::copy_from_slice(dl.event.get().as_bytes()),
                )
                .await?;
                self.dlq
                    .delete_message(dl_seq)
                    .await
                    .map_err(|e| store_err("removing a redriven dead letter", e))?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    async fn counts(&self, sub: SubId) -> Result<QueueCounts, StoreError> {
        let mut consumer = self.consumer(sub).await?;
        let info = consumer
            .info()
            .await
            .map_err(|e| store_err("reading a subscription's consumer", e))?;
        let (ready, leased) = (info.num_pending, info.num_ack_pending as u64);
        let subject = self.dead_subject(sub);
        let mut subjects = self
            .dlq
            .info_with_subjects(&subject)
            .await
            .map_err(|e| store_err("counting dead letters", e))?;
        let mut dead = 0;
        while let Some(s) = subjects.next().await {
            let (name, count) = s.map_err(|e| store_err("counting dead letters", e))?;
            if name == subject {
                dead = count as u64;
            }
        }
        Ok(QueueCounts {
            ready,
            leased,
            waiting_retry: 0,
            dead,
        })
    }

    async fn expire_dedup(&self, _window: Duration) -> Result<(), StoreError> {
        // The events stream's duplicate window expires message ids itself.
        Ok(())
    }

    fn redelivers_retries(&self) -> bool {
        true
    }

    fn lease_time(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn sharing_nodes(&self) -> usize {
        self.sharing_nodes
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_reply_subject_and_sequence() {
        let t = Token("$JS.ACK.wg_events.sub-1.1.7.7.1700000000000000000.0/7".into());
        assert_eq!(
            token_parts(&t).unwrap(),
            ("$JS.ACK.wg_events.sub-1.1.7.7.1700000000000000000.0", 7)
        );
        assert_eq!(t.seq(), 7);
        assert!(token_parts(&Token("q/0001/x".into())).is_err());
    }

    #[test]
    fn dedup_ids_are_stable_and_separate_their_parts() {
        assert_eq!(dedup_id("t", "s", "1"), dedup_id("t", "s", "1"));
        assert_ne!(dedup_id("t", "s\n1", ""), dedup_id("t", "s", "1\n"));
        assert_eq!(dedup_id("t", "s", "1").len(), 32);
    }
}
