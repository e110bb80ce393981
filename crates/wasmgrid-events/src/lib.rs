//! Events: Azure Event Grid's programming model over CloudEvents 1.0, with
//! Wasm algorithms (or webhooks) as handlers.
//!
//! - [`cloudevent`] reads what publishers send (structured, batch, binary
//!   mode, Event Grid schema) into one canonical form.
//! - [`filter`] compiles subscription filters and indexes them per topic.
//! - This module keeps topics and subscriptions ([`EventService`]) and ingests
//!   events through the [`DeliveryQueues`] contract: the deduplication marks
//!   and one queue entry per matching subscription are durable before a 2xx
//!   (the embedded backend combines concurrent publishes into one
//!   transaction).
//! - `delivery` drains each subscription's durable queue with bounded
//!   concurrency, retries on Event Grid's schedule, dead-letters, batches.
//! - The [`ChangeLog`] (data changes, the registry's lifecycle events, job
//!   ends) feeds the system topics `system.data`, `system.algorithms` and
//!   `system.jobs`.

pub use wasmgrid_cloudevents::event as cloudevent;
mod delivery;
pub use wasmgrid_cloudevents::filter;
mod follow;
mod webhook;

use filter::{CompiledFilter, Filter, SubscriptionIndex};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_core::data::{DataService, Principal};
use wasmgrid_core::invoker::Invoker;
use wasmgrid_core::metrics::{Metrics, SubscriptionLabel, TopicLabel};
use wasmgrid_core::registry::VersionSpec;
use wasmgrid_store::StoreError;
use wasmgrid_store::changelog::{ChangeLog, Feed};
use wasmgrid_store::leases::{Leases, hold};
use wasmgrid_store::queues::{Dedup, DeliveryQueues, Enqueue, IngestReport, SubId};
use wasmgrid_store::records::{Bucket, Records, RecordsExt};

pub use delivery::{Failure, RETRY_SCHEDULE};

/// The built-in topics, written by wasmgrid itself and never by publishers.
pub const SYSTEM_TOPICS: &[&str] = &["system.data", "system.algorithms", "system.jobs"];

/// Whether a topic name is in wasmgrid's reserved `system.` namespace, in any
/// case: `System.data` must not pass for a custom topic beside `system.data`.
pub fn is_reserved_topic(name: &str) -> bool {
    name.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("system."))
}

/// Longest webhook URL a subscription takes, in bytes.
pub const MAX_WEBHOOK_URL_BYTES: usize = 2048;
/// Longest `webhookSecret`, in bytes.
pub const MAX_WEBHOOK_SECRET_BYTES: usize = 256;

/// Settings of the event system.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Multiplies retry delays and event time-to-live (1.0 in production; tests
    /// compress Event Grid's hours into milliseconds).
    pub time_scale: f64,
    /// Allow webhooks to loopback and private addresses (tests, trusted LANs).
    pub allow_private_webhooks: bool,
    /// How long `(source, id)` is remembered per topic for deduplication.
    pub dedup_window: Duration,
    /// Events whose hop count (`wasmgridhops`) passes this are dead-lettered
    /// with `HopLimitExceeded` instead of delivered: they are an event loop.
    pub max_hops: u32,
    /// Follow topic and subscription records that other nodes write (a
    /// watch of both buckets; cluster mode). Off for one node, which writes
    /// every record itself.
    pub follow_records: bool,
}

/// The default of [`EventsConfig::max_hops`].
pub const DEFAULT_MAX_HOPS: u32 = 16;

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            allow_private_webhooks: false,
            dedup_window: Duration::from_secs(600),
            max_hops: DEFAULT_MAX_HOPS,
            follow_records: false,
        }
    }
}

/// Errors of topic, subscription and publish operations.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventError {
    /// Bad input (400 `InputError`).
    #[error("{0}")]
    Invalid(String),
    /// No such topic, subscription or dead letter (404).
    #[error("{0}")]
    NotFound(String),
    /// Not allowed for this key (403 `AuthError`).
    #[error("{0}")]
    Forbidden(String),
    /// The name is taken by another owner's topic or subscription (409).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or lost worker (500).
    #[error("{0}")]
    Internal(String),
}

impl From<wasmgrid_core::auth::AuthError> for EventError {
    fn from(e: wasmgrid_core::auth::AuthError) -> Self {
        EventError::Forbidden(e.to_string())
    }
}

/// A custom topic as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Owner (who may manage it and subscribe to it).
    pub owner: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// `(key name, SHA-256 hex)` of each publish key (`key1`, `key2`).
    pub key_hashes: Vec<(String, String)>,
}

/// Where a subscription delivers: `{"algorithm": "o/n[/v]"}`,
/// `{"webhook": "https://…"}` or `{"job": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Destination {
    /// An algorithm endpoint, resolved at each delivery.
    Algorithm(String),
    /// A webhook URL (structured-mode CloudEvents POST, HMAC-signed).
    Webhook(String),
    /// A batch job started per event (needs the batch jobs service).
    Job(Value),
}

/// Event Grid's `retryPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// 1–30 (default 30).
    #[serde(default = "default_attempts")]
    pub max_delivery_attempts: u32,
    /// 1–1440 (default 1440, one day).
    #[serde(default = "default_ttl")]
    pub event_time_to_live_in_minutes: u32,
}

fn default_attempts() -> u32 {
    30
}
fn default_ttl() -> u32 {
    1440
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_delivery_attempts: default_attempts(),
            event_time_to_live_in_minutes: default_ttl(),
        }
    }
}

/// Where undeliverable events are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetter {
    /// A `data://owner/collection/prefix/` folder.
    pub collection: String,
}

/// Event Grid's output batching.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batching {
    /// 1–5000 events per delivery (default 1: no batching).
    #[serde(default = "default_batch_events")]
    pub max_events_per_batch: u32,
    /// 1–1024 KiB: a batch closes before passing this size (a single larger
    /// event still goes alone). Default 64.
    #[serde(default = "default_batch_kb")]
    pub preferred_batch_size_in_kilobytes: u32,
}

fn default_batch_events() -> u32 {
    1
}
fn default_batch_kb() -> u32 {
    64
}

/// What a user sends to create or replace a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Where events go.
    pub destination: Destination,
    /// Which events (Event Grid's filter).
    #[serde(default)]
    pub filter: Filter,
    /// Attempts and time-to-live.
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    /// Where undeliverable events are written (besides the dead-letter list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
    /// Output batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// Deliveries in flight at once for this subscription (1–1000, default 16).
    #[serde(default = "default_concurrency")]
    pub max_concurrent_deliveries: u32,
    /// HMAC-SHA256 key for webhook signatures; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

fn default_concurrency() -> u32 {
    16
}

/// A subscription as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Stable numeric id (names the queue; kept when the spec is replaced).
    pub id: u64,
    /// Topic.
    pub topic: String,
    /// Subscription name.
    pub name: String,
    /// Owner of the key that created it: deliveries act for this owner.
    pub owner: String,
    /// Created by an admin key (sees every owner's system events).
    pub admin: bool,
    /// Creation time.
    pub created: String,
    /// Last replacement time.
    pub updated: String,
    /// The spec, with the dead-letter URI resolved (no `.my`) and the webhook
    /// secret filled in.
    pub spec: SubscriptionSpec,
}

impl SubscriptionRecord {
    /// `topic/name`, the label of its metrics.
    pub fn label(&self) -> String {
        format!("{}/{}", self.topic, self.name)
    }

    /// The JSON the API returns.
    pub fn to_json(&self, queue_depth: i64) -> Value {
        let mut v = serde_json::to_value(&self.spec).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("name".into(), self.name.clone().into());
            m.insert("topic".into(), self.topic.clone().into());
            m.insert("owner".into(), self.owner.clone().into());
            m.insert("createdAt".into(), self.created.clone().into());
            m.insert("updatedAt".into(), self.updated.clone().into());
            m.insert("queueDepth".into(), queue_depth.into());
            match &self.spec.destination {
                // Basic-auth passwords in webhook URLs are never echoed back.
                Destination::Webhook(url) => {
                    m.insert(
                        "destination".into(),
                        serde_json::json!({"webhook": webhook::redact(url)}),
                    );
                }
                _ => {
                    m.remove("webhookSecret");
                }
            }
        }
        v
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PublishReport {
    /// Events accepted (duplicates excluded).
    pub accepted: usize,
    /// Events already seen within the dedup window: acknowledged, not enqueued.
    pub duplicates: usize,
    /// Deliveries enqueued (events × matching subscriptions).
    pub deliveries: usize,
    /// Accepted events that matched no subscription (a metric, not reported).
    #[serde(skip)]
    pub dropped: usize,
}

/// A dead-lettered event as stored and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    /// `MaxDeliveryAttemptsExceeded`, `TimeToLiveExceeded`, `NonRetryableError`
    /// or `HopLimitExceeded`.
    pub dead_letter_reason: String,
    /// Attempts made.
    pub delivery_attempts: u32,
    /// What the last attempt answered (`error_type: message` or an HTTP status).
    pub last_delivery_outcome: String,
    /// When the last attempt was made (RFC 3339), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_delivery_attempt_time: Option<String>,
    /// When the event was published (RFC 3339).
    pub publish_time: String,
    /// `topic/subscription`.
    pub subscription: String,
    /// The event (structured CloudEvent).
    pub event: Value,
}

/// Starts a batch job for a subscription's `job` destination (implemented by
/// the jobs service; the event system only knows this trait).
pub trait JobStarter: Send + Sync {
    /// Validates a `{"job": …}` destination at subscription time, with the
    /// rights deliveries will act with: the algorithm must be one the owner may
    /// invoke, the output a folder it may write.
    fn validate(&self, owner: &str, admin: bool, spec: &Value) -> Result<(), EventError>;
    /// Starts one job for `event` (whose data names the input file).
    fn start(
        &self,
        owner: &str,
        admin: bool,
        spec: &Value,
        event: &Value,
    ) -> futures::future::BoxFuture<'static, Result<(), Failure>>;
}

/// One live subscription: its record, queue signal and metrics.
pub(crate) struct SubState {
    id: u64,
    record: RwLock<Arc<SubscriptionRecord>>,
    /// Woken when entries are appended to its queue.
    notify: Notify,
    /// Stops its worker (subscription deleted, or shutdown).
    cancel: CancellationToken,
    depth: Gauge,
    /// Its `events_matched` / `events_delivered` / `event_delivery_failures`
    /// counters, looked up once instead of by label per delivery.
    matched: Counter,
    delivered: Counter,
    failures: Counter,
    /// Set once its worker runs: `start` and a subscription created after it
    /// must not both start one.
    worker: std::sync::atomic::AtomicBool,
}

impl SubState {
    fn record(&self) -> Arc<SubscriptionRecord> {
        self.record
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

struct TopicState {
    /// `None` for system topics.
    record: Option<TopicRecord>,
    index: SubscriptionIndex,
    subs: HashMap<u64, Arc<SubState>>,
    by_name: HashMap<String, u64>,
}

impl TopicState {
    fn new(record: Option<TopicRecord>) -> Self {
        Self {
            record,
            index: SubscriptionIndex::new(),
            subs: HashMap::new(),
            by_name: HashMap::new(),
        }
    }
}

pub(crate) struct Inner {
    /// Topic and subscription records, subscription ids.
    records: Arc<dyn Records>,
    /// Delivery queues, dead letters and the dedup window.
    queues: Arc<dyn DeliveryQueues>,
    /// Singletons: the feed router runs under the lease `feed/router`.
    leases: Arc<dyn Leases>,
    /// The system feeds, routed into the queues by the feed task.
    log: Arc<dyn ChangeLog>,
    invoker: Arc<Invoker>,
    data: Arc<DataService>,
    metrics: Arc<Metrics>,
    config: EventsConfig,
    topics: RwLock<HashMap<String, TopicState>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    webhooks: webhook::WebhookClient,
    /// For `{"job": …}` destinations; `None` on a node without batch jobs.
    jobs: Option<Arc<dyn JobStarter>>,
    /// Set by [`EventService::start`].
    started: std::sync::atomic::AtomicBool,
}

/// Topics, subscriptions, ingestion and the delivery engine.
#[derive(Clone)]
pub struct EventService {
    inner: Arc<Inner>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, milliseconds) of a Unix time in ms.
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn lock_err() -> EventError {
    EventError::Internal("event state lock poisoned".into())
}

/// Topic names: 1–128 of letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit.
fn validate_topic_name(name: &str) -> Result<(), EventError> {
    let ok = (1..=128).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EventError::Invalid(format!(
            "invalid topic name {name:?}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

fn validate_sub_name(name: &str) -> Result<(), EventError> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EventError::Invalid(format!(
            "invalid subscription name {name:?}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )))
    }
}

/// The owner a system event belongs to: the second segment of its `source`
/// (`/collections/{owner}/…`, `/algorithms/{owner}/…`, `/jobs/{owner}/…`).
fn system_event_owner(event: &Value) -> Option<&str> {
    event
        .get("source")
        .and_then(Value::as_str)
        .and_then(|s| s.split('/').nth(2))
}

/// A topic or webhook key: `wgt_` + 256 random bits (base64url). The prefix
/// makes leaked keys recognisable and keeps them from starting with `-` (which
/// command lines would take for a flag).
fn random_key() -> String {
    use base64::Engine as _;
    format!(
        "wgt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

impl EventService {
    /// Loads topics and subscriptions. Call [`EventService::start`] inside a
    /// tokio runtime to run deliveries and the system-topic feed. Topic and
    /// subscription records come from `records` (written through by this
    /// service; issue 15 feeds its tables from watches). Queues, dead letters
    /// and deduplication live in `queues`; the system topics are fed from
    /// `log` by one router per installation, under the lease `feed/router`
    /// of `leases`. Deliveries to algorithms call through `invoker`; `jobs` starts
    /// the jobs of `{"job": …}` destinations (none: such subscriptions are
    /// refused).
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        records: Arc<dyn Records>,
        queues: Arc<dyn DeliveryQueues>,
        log: Arc<dyn ChangeLog>,
        leases: Arc<dyn Leases>,
        invoker: Arc<Invoker>,
        data: Arc<DataService>,
        metrics: Arc<Metrics>,
        config: EventsConfig,
        jobs: Option<Arc<dyn JobStarter>>,
    ) -> Result<Self, EventError> {
        let mut topics: HashMap<String, TopicState> = SYSTEM_TOPICS
            .iter()
            .map(|t| (t.to_string(), TopicState::new(None)))
            .collect();
        for entry in records.list_all(Bucket::Topics, "").await? {
            let record: TopicRecord = wasmgrid_store::records::decode(Bucket::Topics, &entry)?;
            topics.insert(entry.key, TopicState::new(Some(record)));
        }
        let subscriptions = records.list_all(Bucket::Subscriptions, "").await?;
        let webhooks = webhook::WebhookClient::new(config.allow_private_webhooks)?;
        let inner = Arc::new(Inner {
            records,
            queues: queues.clone(),
            log,
            leases,
            invoker,
            data,
            metrics,
            config,
            topics: RwLock::new(topics),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            webhooks,
            jobs,
            started: std::sync::atomic::AtomicBool::new(false),
        });
        let svc = EventService { inner };
        for entry in subscriptions {
            let record: SubscriptionRecord =
                wasmgrid_store::records::decode(Bucket::Subscriptions, &entry)?;
            let compiled = record.spec.filter.compile().map_err(|e| {
                EventError::Internal(format!(
                    "stored subscription {} has an invalid filter: {e}",
                    record.label()
                ))
            })?;
            let depth = queues.counts(SubId(record.id)).await?.depth();
            svc.install(record, compiled, depth as i64)?;
        }
        Ok(svc)
    }

    /// Starts the background work: one delivery worker per subscription, the outbox feed of the system topics and the
    /// deduplication sweeper. Subscriptions created before this call start
    /// delivering now; those created after it start at once.
    pub fn start(&self) {
        let inner = &self.inner;
        inner
            .started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let subs: Vec<Arc<SubState>> = match inner.topics.read() {
            Ok(t) => t.values().flat_map(|t| t.subs.values().cloned()).collect(),
            Err(_) => Vec::new(),
        };
        for sub in subs {
            delivery::spawn_worker(inner.clone(), sub);
        }
        let feed = inner.clone();
        inner.tasks.spawn(async move { outbox_feed(feed).await });
        let sweep = inner.clone();
        inner.tasks.spawn(async move { dedup_sweeper(sweep).await });
        if inner.config.follow_records {
            inner.tasks.spawn(follow::follow(self.clone()));
        }
    }

    /// Stops taking new deliveries, lets the running ones finish and flushes
    /// their acknowledgements.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        if let Err(e) = self.inner.queues.flush().await {
            tracing::error!(error = %e, "flushing delivery outcomes at shutdown failed; some events will be delivered again");
        }
    }

    fn install(
        &self,
        record: SubscriptionRecord,
        compiled: CompiledFilter,
        depth: i64,
    ) -> Result<Arc<SubState>, EventError> {
        let mut topics = self.inner.topics.write().map_err(|_| lock_err())?;
        let topic = topics
            .get_mut(&record.topic)
            .ok_or_else(|| EventError::NotFound(format!("topic {} not found", record.topic)))?;
        // Installed already (a watch of the records brought it first).
        if let Some(sub) = topic.subs.get(&record.id) {
            return Ok(sub.clone());
        }
        let label = SubscriptionLabel {
            subscription: record.label(),
        };
        let m = &self.inner.metrics;
        let gauge = m.queue_depth.get_or_create(&label).clone();
        gauge.set(depth);
        let matched = m.events_matched.get_or_create(&label).clone();
        let delivered = m.events_delivered.get_or_create(&label).clone();
        let failures = m.delivery_failures.get_or_create(&label).clone();
        let sub = Arc::new(SubState {
            id: record.id,
            notify: Notify::new(),
            cancel: self.inner.shutdown.child_token(),
            depth: gauge,
            matched,
            delivered,
            failures,
            record: RwLock::new(Arc::new(record.clone())),
            worker: std::sync::atomic::AtomicBool::new(false),
        });
        topic.index.insert(record.id, compiled);
        topic.by_name.insert(record.name.clone(), record.id);
        topic.subs.insert(record.id, sub.clone());
        Ok(sub)
    }

    // ----- topics -----

    /// Creates a custom topic (returning its two publish keys, shown once), or
    /// returns the existing one (without keys) if the caller may manage it.
    pub async fn create_topic(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(bool, Value), EventError> {
        caller
            .require(Scope::Deploy, &caller.owner)
            .map_err(|e| EventError::Forbidden(e.to_string()))?;
        validate_topic_name(name)?;
        if is_reserved_topic(name) {
            return Err(EventError::Invalid(format!(
                "topic names starting with `system.` are reserved for wasmgrid's own topics ({}); choose another name",
                SYSTEM_TOPICS.join(", ")
            )));
        }
        if let Some(existing) = self.topic_record(name)? {
            Self::check_name_taken(caller, &existing)?;
            return Ok((false, topic_json(&existing, None)));
        }
        let keys = [
            ("key1".to_string(), random_key()),
            ("key2".to_string(), random_key()),
        ];
        let record = TopicRecord {
            name: name.to_string(),
            owner: caller.owner.clone(),
            created: rfc3339_ms(now_ms()),
            key_hashes: keys
                .iter()
                .map(|(n, k)| (n.clone(), sha256_hex(k)))
                .collect(),
        };
        let committed = self
            .inner
            .records
            .create_json(Bucket::Topics, name, &record)
            .await;
        match committed {
            Ok(_) => {}
            Err(StoreError::Exists { .. }) => {
                // Lost a race with a concurrent create: answer as for an existing topic.
                let existing = self.load_topic(name).await?;
                Self::check_name_taken(caller, &existing)?;
                return Ok((false, topic_json(&existing, None)));
            }
            Err(e) => return Err(e.into()),
        }
        self.inner
            .topics
            .write()
            .map_err(|_| lock_err())?
            .entry(name.to_string())
            .or_insert_with(|| TopicState::new(Some(record.clone())));
        Ok((true, topic_json(&record, Some(&keys))))
    }

    async fn load_topic(&self, name: &str) -> Result<TopicRecord, EventError> {
        self.inner
            .records
            .get_json::<TopicRecord>(Bucket::Topics, name)
            .await?
            .map(|t| t.value)
            .ok_or_else(|| EventError::Internal(format!("topic {name} vanished")))
    }

    fn topic_record(&self, name: &str) -> Result<Option<TopicRecord>, EventError> {
        let topics = self.inner.topics.read().map_err(|_| lock_err())?;
        Ok(topics.get(name).and_then(|t| t.record.clone()))
    }

    /// Another owner's topic answers exactly as a missing one.
    fn check_topic_owner(&self, caller: &Caller, topic: &TopicRecord) -> Result<(), EventError> {
        if caller.acts_for(&topic.owner) {
            Ok(())
        } else {
            Err(Self::not_found_topic(&topic.name))
        }
    }

    /// Topic names are one namespace for every owner, so creating one that
    /// another owner holds cannot pass for a fresh create: 409, without
    /// naming the owner.
    fn check_name_taken(caller: &Caller, topic: &TopicRecord) -> Result<(), EventError> {
        if caller.acts_for(&topic.owner) {
            Ok(())
        } else {
            Err(EventError::Conflict(format!(
                "topic name {} is taken by another owner: choose another name",
                topic.name
            )))
        }
    }

    /// Checks that `topic` exists and the caller may see it (a system topic,
    /// or a custom one of its owner); otherwise the "not found" answer.
    pub fn check_topic_visible(&self, caller: &Caller, topic: &str) -> Result<(), EventError> {
        let topics = self.inner.topics.read().map_err(|_| lock_err())?;
        match topics.get(topic).map(|t| &t.record) {
            None => Err(Self::not_found_topic(topic)),
            Some(Some(r)) => self.check_topic_owner(caller, r),
            Some(None) => Ok(()),
        }
    }

    /// Checks a custom topic the caller manages (regenerateKey), before its
    /// request body is read.
    pub fn check_topic_managed(&self, caller: &Caller, topic: &str) -> Result<(), EventError> {
        // Built-in topics are visible to every key, so saying what they are
        // reveals nothing.
        if SYSTEM_TOPICS.contains(&topic) {
            return Err(Self::system_topic_has_no_keys(topic));
        }
        let record = self
            .topic_record(topic)?
            .ok_or_else(|| Self::not_found_topic(topic))?;
        self.check_topic_owner(caller, &record)
    }

    /// What a subscription create or replace checks before its body is read:
    /// the `deploy` scope, then that the topic is visible.
    pub fn check_subscription_put(&self, caller: &Caller, topic: &str) -> Result<(), EventError> {
        caller
            .require(Scope::Deploy, &caller.owner)
            .map_err(|e| EventError::Forbidden(e.to_string()))?;
        self.check_topic_visible(caller, topic)
    }

    /// Checks that a subscription exists and is the caller's, before a request
    /// body or query is read.
    pub fn check_subscription_visible(
        &self,
        caller: &Caller,
        topic: &str,
        name: &str,
    ) -> Result<(), EventError> {
        self.visible_subscription(caller, topic, name).map(|_| ())
    }

    fn system_topic_has_no_keys(topic: &str) -> EventError {
        EventError::Invalid(format!(
            "{topic} is written by wasmgrid itself and has no publish keys (users cannot publish to it); \
             regenerate the keys of a custom topic instead"
        ))
    }

    fn not_found_topic(name: &str) -> EventError {
        EventError::NotFound(format!(
            "topic {name} not found: create it first (wasmgrid topic create {name})"
        ))
    }

    /// One topic (custom or system).
    pub fn topic(&self, caller: &Caller, name: &str) -> Result<Value, EventError> {
        let topics = self.inner.topics.read().map_err(|_| lock_err())?;
        let t = topics
            .get(name)
            .ok_or_else(|| Self::not_found_topic(name))?;
        match &t.record {
            Some(r) => {
                self.check_topic_owner(caller, r)?;
                let mut v = topic_json(r, None);
                v["subscriptions"] = t.subs.len().into();
                Ok(v)
            }
            None => {
                Ok(serde_json::json!({"name": name, "system": true, "subscriptions": t.subs.len()}))
            }
        }
    }

    /// Topics visible to the caller: the system topics and its own.
    pub fn topics(&self, caller: &Caller) -> Result<Vec<Value>, EventError> {
        let topics = self.inner.topics.read().map_err(|_| lock_err())?;
        let mut out: Vec<Value> = topics
            .iter()
            .filter_map(|(name, t)| match &t.record {
                None => Some(serde_json::json!({"name": name, "system": true})),
                Some(r) if caller.is_admin() || r.owner == caller.owner => {
                    Some(topic_json(r, None))
                }
                Some(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(out)
    }

    /// Deletes a custom topic with its subscriptions and their queues.
    pub async fn delete_topic(&self, caller: &Caller, name: &str) -> Result<(), EventError> {
        let record = self.topic_record(name)?.ok_or_else(|| {
            if SYSTEM_TOPICS.contains(&name) {
                EventError::Invalid(format!("{name} is a built-in topic and cannot be deleted"))
            } else {
                Self::not_found_topic(name)
            }
        })?;
        self.check_topic_owner(caller, &record)?;
        let subs: Vec<String> = {
            let topics = self.inner.topics.read().map_err(|_| lock_err())?;
            topics
                .get(name)
                .map(|t| t.by_name.keys().cloned().collect())
                .unwrap_or_default()
        };
        for sub in subs {
            self.remove_subscription(name, &sub).await?;
        }
        self.inner
            .records
            .delete(Bucket::Topics, name, None)
            .await?;
        self.inner
            .topics
            .write()
            .map_err(|_| lock_err())?
            .remove(name);
        Ok(())
    }

    /// Replaces one of a topic's publish keys (`key1` or `key2`) and returns the
    /// new key, shown once.
    pub async fn regenerate_key(
        &self,
        caller: &Caller,
        topic: &str,
        key_name: &str,
    ) -> Result<Value, EventError> {
        if SYSTEM_TOPICS.contains(&topic) {
            return Err(Self::system_topic_has_no_keys(topic));
        }
        let cached = self
            .topic_record(topic)?
            .ok_or_else(|| Self::not_found_topic(topic))?;
        self.check_topic_owner(caller, &cached)?;
        let key = random_key();
        // Read, change one key, write at the revision read; a concurrent
        // change of the other key is re-read, not overwritten.
        let record = loop {
            let stored = self
                .inner
                .records
                .get_json::<TopicRecord>(Bucket::Topics, topic)
                .await?
                .ok_or_else(|| Self::not_found_topic(topic))?;
            let mut record = stored.value;
            let slot = record
                .key_hashes
                .iter_mut()
                .find(|(n, _)| n == key_name)
                .ok_or_else(|| {
                    EventError::Invalid(format!(
                        "keyName {key_name:?} is not a key of this topic: use \"key1\" or \"key2\""
                    ))
                })?;
            slot.1 = sha256_hex(&key);
            match self
                .inner
                .records
                .update_json(Bucket::Topics, topic, &record, stored.rev)
                .await
            {
                Ok(_) => break record,
                Err(StoreError::Changed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut topics = self.inner.topics.write().map_err(|_| lock_err())?;
        if let Some(t) = topics.get_mut(topic) {
            t.record = Some(record);
        }
        Ok(serde_json::json!({"keyName": key_name, "key": key}))
    }

    /// Whether `key` is a publish key of `topic` (constant-time comparison).
    pub fn verify_topic_key(&self, topic: &str, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Ok(topics) = self.inner.topics.read() else {
            return false;
        };
        let Some(record) = topics.get(topic).and_then(|t| t.record.as_ref()) else {
            return false;
        };
        let presented = sha256_hex(key);
        record.key_hashes.iter().fold(false, |found, (_, h)| {
            found | bool::from(h.as_bytes().ct_eq(presented.as_bytes()))
        })
    }

    /// Checks that an API key may publish to `topic`: `publish` scope for the
    /// topic's owner. System topics take no outside events.
    pub fn check_publisher(&self, caller: &Caller, topic: &str) -> Result<(), EventError> {
        let record = self.publish_target(topic)?;
        caller.require_visible(Scope::Publish, &record.owner, || {
            Self::not_found_topic(topic)
        })
    }

    fn publish_target(&self, topic: &str) -> Result<TopicRecord, EventError> {
        if SYSTEM_TOPICS.contains(&topic) {
            return Err(EventError::Forbidden(format!(
                "{topic} is written by wasmgrid itself; publish to a custom topic instead (wasmgrid topic create NAME)"
            )));
        }
        self.topic_record(topic)?
            .ok_or_else(|| Self::not_found_topic(topic))
    }

    // ----- publishing -----

    /// Ingests validated events into a custom topic: deduplicates by
    /// `(source, id)`, matches subscriptions and enqueues one delivery per
    /// match, durably, in one transaction. Returns once it is on disk.
    pub async fn publish(
        &self,
        topic: &str,
        events: Vec<Value>,
    ) -> Result<PublishReport, EventError> {
        self.publish_target(topic)?;
        self.ingest(topic, events, true).await
    }

    /// [`publish`](Self::publish) on behalf of an algorithm of `owner`. A
    /// `topic:NAME` grant is written by whoever deploys the algorithm, so it
    /// must not open someone else's event stream: it reaches topics of the
    /// algorithm's own owner and the operator's topics (created with the
    /// bootstrap admin key, as `wasmgrid up` does); another owner's topic
    /// answers exactly as a missing one.
    pub async fn publish_as(
        &self,
        owner: &str,
        topic: &str,
        events: Vec<Value>,
    ) -> Result<PublishReport, EventError> {
        let record = self.publish_target(topic)?;
        if record.owner != owner && record.owner != wasmgrid_core::auth::ADMIN_OWNER {
            return Err(Self::not_found_topic(topic));
        }
        self.ingest(topic, events, true).await
    }

    async fn ingest(
        &self,
        topic: &str,
        events: Vec<Value>,
        dedup: bool,
    ) -> Result<PublishReport, EventError> {
        let routed = self.route(topic, &events)?;
        let window = self.inner.config.dedup_window;
        // Serialized here, on the publisher's task, so the writer only inserts.
        let texts: Vec<String> = events
            .iter()
            .map(|ev| serde_json::to_string(ev).unwrap_or_else(|_| "null".into()))
            .collect();
        let subs: Vec<Vec<SubId>> = routed
            .iter()
            .map(|r| r.iter().map(|(id, _)| SubId(*id)).collect())
            .collect();
        let batch: Vec<Enqueue<'_>> = events
            .iter()
            .zip(&texts)
            .zip(&subs)
            .map(|((ev, text), subs)| Enqueue {
                event: text,
                subs,
                dedup: dedup.then(|| Dedup {
                    topic,
                    source: ev.get("source").and_then(Value::as_str).unwrap_or(""),
                    id: ev.get("id").and_then(Value::as_str).unwrap_or(""),
                }),
                log_seq: None,
            })
            .collect();
        let report = self.inner.queues.ingest(&batch, window).await?;
        let per_sub = per_sub_states(&routed, &report);
        let report = PublishReport {
            accepted: report.accepted,
            duplicates: report.duplicates,
            deliveries: report.deliveries,
            dropped: report.dropped,
        };
        self.after_ingest(topic, &per_sub, report);
        Ok(report)
    }

    /// Matches each event against the topic's subscriptions.
    fn route(&self, topic: &str, events: &[Value]) -> Result<Routed, EventError> {
        let topics = self.inner.topics.read().map_err(|_| lock_err())?;
        let Some(state) = topics.get(topic) else {
            return Err(Self::not_found_topic(topic));
        };
        let system = state.record.is_none();
        let mut ids = Vec::new();
        Ok(events
            .iter()
            .map(|ev| {
                state.index.matching_into(ev, &mut ids);
                ids.iter()
                    .filter_map(|id| state.subs.get(id))
                    .filter(|s| {
                        // System events reach only subscriptions of their owner (or admin's).
                        !system || {
                            let r = s.record();
                            r.admin || system_event_owner(ev) == Some(r.owner.as_str())
                        }
                    })
                    .map(|s| (s.id, s.clone()))
                    .collect()
            })
            .collect())
    }

    fn after_ingest(&self, topic: &str, routed: &[(Arc<SubState>, u64)], report: PublishReport) {
        let m = &self.inner.metrics;
        let label = TopicLabel {
            topic: topic.to_string(),
        };
        m.events_published
            .get_or_create(&label)
            .inc_by(report.accepted as u64);
        if report.dropped > 0 {
            m.events_dropped
                .get_or_create(&label)
                .inc_by(report.dropped as u64);
        }
        if report.duplicates > 0 {
            m.events_duplicates
                .get_or_create(&label)
                .inc_by(report.duplicates as u64);
        }
        for (sub, n) in routed {
            sub.depth.inc_by(*n as i64);
            sub.matched.inc_by(*n);
            sub.notify.notify_one();
        }
    }

    // ----- subscriptions -----

    /// Creates or replaces a subscription. Returns whether it was created and
    /// its JSON.
    pub async fn put_subscription(
        &self,
        caller: &Caller,
        topic: &str,
        name: &str,
        mut spec: SubscriptionSpec,
    ) -> Result<(bool, Value), EventError> {
        self.check_subscription_put(caller, topic)?;
        validate_sub_name(name)?;
        let compiled = spec
            .filter
            .compile()
            .map_err(|e| EventError::Invalid(format!("filter: {e}")))?;
        self.validate_spec(caller, &mut spec).await?;

        let existing = self.subscription_state(topic, name).ok();
        let now = rfc3339_ms(now_ms());
        let record = match &existing {
            Some(sub) => {
                let old = sub.record();
                if !caller.acts_for(&old.owner) {
                    // Subscription names are shared on a system topic.
                    return Err(EventError::Conflict(format!(
                        "subscription name {name} on topic {topic} is taken by another owner: choose another name"
                    )));
                }
                if spec.webhook_secret.is_none() {
                    spec.webhook_secret = old.spec.webhook_secret.clone();
                }
                if let (Destination::Webhook(url), Destination::Webhook(stored)) =
                    (&mut spec.destination, &old.spec.destination)
                    && let Some(kept) = webhook::keep_redacted_password(url, stored)
                {
                    *url = kept;
                }
                SubscriptionRecord {
                    spec,
                    updated: now,
                    ..(*old).clone()
                }
            }
            None => SubscriptionRecord {
                id: self.next_subscription_id().await?,
                topic: topic.to_string(),
                name: name.to_string(),
                owner: caller.owner.clone(),
                admin: caller.is_admin(),
                created: now.clone(),
                updated: now,
                spec: SubscriptionSpec {
                    webhook_secret: spec.webhook_secret.clone().or_else(|| {
                        matches!(spec.destination, Destination::Webhook(_)).then(random_key)
                    }),
                    ..spec
                },
            },
        };
        if existing.is_none() {
            // The queue before the record (docs/STORAGE.md 2.1, Subscriptions).
            self.inner.queues.create_queue(SubId(record.id)).await?;
        }
        self.inner
            .records
            .put_json(Bucket::Subscriptions, &format!("{topic}/{name}"), &record)
            .await?;
        match existing {
            Some(sub) => {
                let depth = sub.depth.get();
                {
                    let mut topics = self.inner.topics.write().map_err(|_| lock_err())?;
                    if let Some(t) = topics.get_mut(topic) {
                        t.index.insert(record.id, compiled);
                    }
                }
                if let Ok(mut r) = sub.record.write() {
                    *r = Arc::new(record.clone());
                }
                sub.notify.notify_one();
                Ok((false, record.to_json(depth)))
            }
            None => {
                let sub = self.install(record.clone(), compiled, 0)?;
                if self.inner.started.load(std::sync::atomic::Ordering::SeqCst) {
                    delivery::spawn_worker(self.inner.clone(), sub);
                }
                Ok((true, record.to_json(0)))
            }
        }
    }

    async fn validate_spec(
        &self,
        caller: &Caller,
        spec: &mut SubscriptionSpec,
    ) -> Result<(), EventError> {
        let rp = &spec.retry_policy;
        if !(1..=30).contains(&rp.max_delivery_attempts) {
            return Err(EventError::Invalid(format!(
                "retryPolicy.maxDeliveryAttempts is {}: use 1 to 30",
                rp.max_delivery_attempts
            )));
        }
        if !(1..=1440).contains(&rp.event_time_to_live_in_minutes) {
            return Err(EventError::Invalid(format!(
                "retryPolicy.eventTimeToLiveInMinutes is {}: use 1 to 1440",
                rp.event_time_to_live_in_minutes
            )));
        }
        if let Some(b) = &spec.batching {
            if !(1..=5000).contains(&b.max_events_per_batch) {
                return Err(EventError::Invalid(format!(
                    "batching.maxEventsPerBatch is {}: use 1 to 5000",
                    b.max_events_per_batch
                )));
            }
            if !(1..=1024).contains(&b.preferred_batch_size_in_kilobytes) {
                return Err(EventError::Invalid(format!(
                    "batching.preferredBatchSizeInKilobytes is {}: use 1 to 1024",
                    b.preferred_batch_size_in_kilobytes
                )));
            }
        }
        if let Some(secret) = &spec.webhook_secret
            && secret.len() > MAX_WEBHOOK_SECRET_BYTES
        {
            return Err(EventError::Invalid(format!(
                "webhookSecret is {} bytes long: at most {MAX_WEBHOOK_SECRET_BYTES} bytes are allowed",
                secret.len()
            )));
        }
        if !(1..=1000).contains(&spec.max_concurrent_deliveries) {
            return Err(EventError::Invalid(format!(
                "maxConcurrentDeliveries is {}: use 1 to 1000",
                spec.max_concurrent_deliveries
            )));
        }
        match &spec.destination {
            Destination::Algorithm(endpoint) => {
                let (owner, name, _) = parse_endpoint(endpoint)?;
                caller
                    .require_visible(Scope::Invoke, owner, || {
                        EventError::NotFound(
                            wasmgrid_core::registry::not_found(owner, name).to_string(),
                        )
                    })
                    .map_err(|e| match e {
                        EventError::NotFound(m) => {
                            EventError::NotFound(format!("destination.algorithm: {m}"))
                        }
                        other => EventError::Forbidden(format!(
                            "destination.algorithm {endpoint}: {other}"
                        )),
                    })?;
                wasmgrid_core::names::validate_name("owner", owner)
                    .and_then(|_| wasmgrid_core::names::validate_name("algorithm name", name))
                    .map_err(|e| EventError::Invalid(format!("destination.algorithm: {e}")))?;
            }
            Destination::Webhook(url) => {
                if url.len() > MAX_WEBHOOK_URL_BYTES {
                    return Err(EventError::Invalid(format!(
                        "destination.webhook is {} bytes long: at most {MAX_WEBHOOK_URL_BYTES} bytes are allowed",
                        url.len()
                    )));
                }
                self.inner
                    .webhooks
                    .check_url(url)
                    .await
                    .map_err(|e| EventError::Invalid(format!("destination.webhook: {e}")))?;
            }
            Destination::Job(job) => match &self.inner.jobs {
                Some(jobs) => jobs
                    .validate(&caller.owner, caller.is_admin(), job)
                    .map_err(|e| e.prefixed("destination.job"))?,
                None => {
                    return Err(EventError::Invalid(
                        "destination.job: this server has no batch jobs service; use an algorithm or webhook destination".into(),
                    ));
                }
            },
        }
        if let Some(dl) = &mut spec.dead_letter {
            let who = Principal::Key(caller);
            let mut uri = dl.collection.clone();
            if !uri.ends_with('/') {
                uri.push('/');
            }
            let probe = who
                .parse(&format!("{uri}probe.json"))
                .map_err(|e| EventError::Invalid(format!("deadLetter.collection: {e}")))?;
            self.inner
                .data
                .check_writable(who, &probe)
                .map_err(|e| EventError::from_data(e).prefixed("deadLetter.collection"))?;
            // Store the resolved form, without `.my`.
            dl.collection = probe
                .uri()
                .strip_suffix("probe.json")
                .unwrap_or(&uri)
                .to_string();
        }
        Ok(())
    }

    async fn next_subscription_id(&self) -> Result<u64, EventError> {
        Ok(self.inner.records.next_id("subscription").await?)
    }

    fn subscription_state(&self, topic: &str, name: &str) -> Result<Arc<SubState>, EventError> {
        let topics = self.inner.topics.read().map_err(|_| lock_err())?;
        let t = topics
            .get(topic)
            .ok_or_else(|| Self::not_found_topic(topic))?;
        t.by_name
            .get(name)
            .and_then(|id| t.subs.get(id))
            .cloned()
            .ok_or_else(|| not_found_subscription(topic, name))
    }

    fn visible_subscription(
        &self,
        caller: &Caller,
        topic: &str,
        name: &str,
    ) -> Result<Arc<SubState>, EventError> {
        // The topic first: another owner's topic is "not found" whatever
        // subscriptions it has.
        self.check_topic_visible(caller, topic)?;
        let sub = self.subscription_state(topic, name)?;
        if caller.acts_for(&sub.record().owner) {
            Ok(sub)
        } else {
            Err(not_found_subscription(topic, name))
        }
    }

    /// One subscription's JSON.
    pub fn subscription(
        &self,
        caller: &Caller,
        topic: &str,
        name: &str,
    ) -> Result<Value, EventError> {
        let sub = self.visible_subscription(caller, topic, name)?;
        Ok(sub.record().to_json(sub.depth.get()))
    }

    /// The caller's subscriptions of a topic (all of them for an admin).
    pub fn subscriptions(&self, caller: &Caller, topic: &str) -> Result<Vec<Value>, EventError> {
        self.check_topic_visible(caller, topic)?;
        let topics = self.inner.topics.read().map_err(|_| lock_err())?;
        let t = topics
            .get(topic)
            .ok_or_else(|| Self::not_found_topic(topic))?;
        let mut out: Vec<(String, Value)> = t
            .subs
            .values()
            .map(|s| (s.record(), s.depth.get()))
            .filter(|(r, _)| caller.is_admin() || r.owner == caller.owner)
            .map(|(r, d)| (r.name.clone(), r.to_json(d)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }

    /// Deletes a subscription, its queue and its dead-letter list.
    pub async fn delete_subscription(
        &self,
        caller: &Caller,
        topic: &str,
        name: &str,
    ) -> Result<(), EventError> {
        self.visible_subscription(caller, topic, name)?;
        self.remove_subscription(topic, name).await
    }

    async fn remove_subscription(&self, topic: &str, name: &str) -> Result<(), EventError> {
        let sub = self.subscription_state(topic, name)?;
        {
            let mut topics = self.inner.topics.write().map_err(|_| lock_err())?;
            if let Some(t) = topics.get_mut(topic) {
                t.index.remove(sub.id);
                t.subs.remove(&sub.id);
                t.by_name.remove(name);
            }
        }
        sub.cancel.cancel();
        self.inner
            .records
            .delete(Bucket::Subscriptions, &format!("{topic}/{name}"), None)
            .await?;
        // After its worker's last outcomes (the queue waits for them).
        self.inner.queues.drop_queue(SubId(sub.id)).await?;
        self.inner.metrics.queue_depth.remove(&SubscriptionLabel {
            subscription: format!("{topic}/{name}"),
        });
        Ok(())
    }

    // ----- dead letters -----

    /// Dead letters of a subscription, oldest first, a page at a time.
    pub async fn dead_letters(
        &self,
        caller: &Caller,
        topic: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<u64>), EventError> {
        let sub = self.visible_subscription(caller, topic, name)?;
        let page = self
            .inner
            .queues
            .dead_letters(SubId(sub.id), after, limit)
            .await?;
        let mut out = Vec::with_capacity(page.items.len());
        for (seq, bytes) in page.items {
            let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                table: "dead_letters",
                key: format!("{:016x}/{seq:020}", sub.id),
                reason: e.to_string(),
            })?;
            v["sequence"] = seq.into();
            out.push(v);
        }
        let next = page.next.and_then(|n| n.parse().ok());
        Ok((out, next))
    }

    /// Moves dead letters back into the subscription's queue with fresh
    /// attempts (all of them, or those whose event id is in `ids`). Their
    /// destination is resolved again at delivery, so a fixed version gets them.
    pub async fn redrive(
        &self,
        caller: &Caller,
        topic: &str,
        name: &str,
        ids: Option<Vec<String>>,
    ) -> Result<usize, EventError> {
        let sub = self.visible_subscription(caller, topic, name)?;
        let moved = self
            .inner
            .queues
            .redrive(SubId(sub.id), ids.as_deref())
            .await?;
        sub.depth.inc_by(moved as i64);
        sub.notify.notify_one();
        Ok(moved)
    }

    /// System-feed events numbered after `after`, at most `limit`, routed or
    /// not (`GET /v1/events/outbox`, admin).
    pub async fn outbox(&self, after: u64, limit: usize) -> Result<Vec<(u64, Value)>, EventError> {
        let logged = self.inner.log.inspect(after, limit).await?;
        logged
            .into_iter()
            .map(|l| {
                let event = serde_json::from_slice(&l.event).map_err(|e| StoreError::Corrupt {
                    table: "outbox",
                    key: format!("{:020}", l.seq),
                    reason: e.to_string(),
                })?;
                Ok((l.seq, event))
            })
            .collect()
    }
}

/// The answer for a missing subscription, and for another owner's.
fn not_found_subscription(topic: &str, name: &str) -> EventError {
    EventError::NotFound(format!(
        "subscription {name} not found on topic {topic}: list them with wasmgrid sub ls {topic}"
    ))
}

impl EventError {
    /// The same error with `field: ` before its message.
    pub fn prefixed(self, field: &str) -> Self {
        match self {
            EventError::Invalid(m) => EventError::Invalid(format!("{field}: {m}")),
            EventError::NotFound(m) => EventError::NotFound(format!("{field}: {m}")),
            EventError::Forbidden(m) => EventError::Forbidden(format!("{field}: {m}")),
            EventError::Conflict(m) => EventError::Conflict(format!("{field}: {m}")),
            EventError::Internal(m) => EventError::Internal(format!("{field}: {m}")),
            e @ EventError::Store(_) => e,
        }
    }

    /// A data access refusal as the subscription API reports it.
    pub fn from_data(e: wasmgrid_core::data::DataError) -> Self {
        use wasmgrid_core::data::DataError;
        match e {
            DataError::NotFound(m) => EventError::NotFound(m),
            DataError::Forbidden(m) => EventError::Forbidden(m),
            DataError::Unavailable(m) => EventError::Internal(m),
            other => EventError::Invalid(other.to_string()),
        }
    }
}

/// Splits `owner/name[/version]`.
pub fn parse_endpoint(endpoint: &str) -> Result<(&str, &str, VersionSpec), EventError> {
    let mut parts = endpoint.trim_matches('/').splitn(3, '/');
    let (Some(owner), Some(name)) = (parts.next(), parts.next()) else {
        return Err(EventError::Invalid(format!(
            "algorithm endpoint {endpoint:?} must be owner/name or owner/name/version"
        )));
    };
    let spec = VersionSpec::parse(parts.next())
        .map_err(|e| EventError::Invalid(format!("algorithm endpoint {endpoint:?}: {e}")))?;
    Ok((owner, name, spec))
}

fn topic_json(r: &TopicRecord, keys: Option<&[(String, String)]>) -> Value {
    let mut v = serde_json::json!({
        "name": r.name,
        "owner": r.owner,
        "createdAt": r.created,
    });
    if let Some(keys) = keys {
        v["keys"] = keys
            .iter()
            .map(|(n, k)| (n.clone(), Value::String(k.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    v
}

/// Per event, the subscriptions it goes to.
type Routed = Vec<Vec<(u64, Arc<SubState>)>>;

/// Per subscription, the entries an ingest queued for it, with its state.
fn per_sub_states(routed: &Routed, report: &IngestReport) -> Vec<(Arc<SubState>, u64)> {
    let mut states: HashMap<u64, &Arc<SubState>> = HashMap::new();
    for (id, sub) in routed.iter().flatten() {
        states.entry(*id).or_insert(sub);
    }
    report
        .per_sub
        .iter()
        .filter_map(|(id, n)| states.get(&id.0).map(|s| ((*s).clone(), *n)))
        .collect()
}

/// Feeds the system topics from the change log: each batch of entries is
/// queued and the log acknowledged in one step (`ingest_routed`: one
/// transaction in the embedded backend, so every change is routed exactly
/// once even across crashes; at least once, deduplicated, in a cluster).
/// The router's lease: one router per installation routes the system feeds,
/// so their events are queued in log order.
const ROUTER_LEASE: &str = "feed/router";
/// How long the router's lease lasts unless renewed (renewed every third).
const ROUTER_TTL: Duration = Duration::from_secs(30);

async fn outbox_feed(inner: Arc<Inner>) {
    let svc = EventService {
        inner: inner.clone(),
    };
    while !inner.shutdown.is_cancelled() {
        // Hold the lease (one process: always granted), or wait for it.
        let held = match hold(inner.leases.clone(), ROUTER_LEASE, ROUTER_TTL).await {
            Ok(Some(held)) => held,
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "taking the feed router's lease failed; retrying");
                }
                // Another node routes; look again in a second.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = inner.shutdown.cancelled() => break,
                }
            }
        };
        let lost = held.lost();
        let mut idle = Duration::from_millis(5);
        while !lost.is_cancelled() && !inner.shutdown.is_cancelled() {
            let pause = match feed_once(&svc).await {
                Ok(0) => {
                    let pause = idle;
                    idle = (idle * 2).min(Duration::from_millis(50));
                    pause
                }
                Ok(_) => {
                    idle = Duration::from_millis(5);
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "routing the data outbox to the system topics failed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = lost.cancelled() => {}
                _ = inner.shutdown.cancelled() => {}
            }
        }
        // Let another node take over at once.
        held.release().await;
    }
}

async fn feed_once(svc: &EventService) -> Result<usize, EventError> {
    // Events routed in one transaction, about: a stored record of a batch of
    // writes holds up to 64 events.
    const EVENTS: usize = 2000;
    let read = svc.inner.log.read(EVENTS).await?;
    let Some(last) = read.upto else {
        return Ok(0);
    };
    let logged = read.entries;
    // An unreadable record alone still counts, so the feed goes on at once.
    let n = logged.len().max(1);
    let mut by_feed: HashMap<Feed, (Vec<u64>, Vec<Value>)> = HashMap::new();
    for l in logged {
        match serde_json::from_slice::<Value>(&l.event) {
            Ok(ev) => {
                let (seqs, events) = by_feed.entry(l.feed).or_default();
                seqs.push(l.seq);
                events.push(ev);
            }
            Err(e) => {
                tracing::error!(seq = l.seq, error = %e, "skipping an unreadable outbox event")
            }
        }
    }
    let mut topics = Vec::new();
    for (feed, (seqs, events)) in by_feed {
        let routed = svc.route(feed.topic(), &events)?;
        topics.push((feed.topic(), seqs, events, routed));
    }
    let mut texts = Vec::new();
    let mut subs = Vec::new();
    for (_, _, events, routed) in &topics {
        for (ev, r) in events.iter().zip(routed) {
            texts.push(serde_json::to_string(ev).unwrap_or_else(|_| "null".into()));
            subs.push(r.iter().map(|(id, _)| SubId(*id)).collect::<Vec<_>>());
        }
    }
    let seqs = topics
        .iter()
        .flat_map(|(_, seqs, _, _)| seqs.iter().copied());
    let batch: Vec<Enqueue<'_>> = texts
        .iter()
        .zip(&subs)
        .zip(seqs)
        .map(|((text, subs), seq)| Enqueue {
            event: text,
            subs,
            dedup: None,
            log_seq: Some(seq),
        })
        .collect();
    // Queued and acknowledged together (embedded: one transaction).
    svc.inner.queues.ingest_routed(&batch, last).await?;
    for (topic, _, _, routed) in &topics {
        // Router entries are never duplicates: the report follows from the routes.
        let mut report = PublishReport::default();
        let mut per_sub: HashMap<u64, (Arc<SubState>, u64)> = HashMap::new();
        for r in routed {
            report.accepted += 1;
            report.dropped += usize::from(r.is_empty());
            for (id, sub) in r {
                per_sub.entry(*id).or_insert_with(|| (sub.clone(), 0)).1 += 1;
                report.deliveries += 1;
            }
        }
        let per_sub: Vec<(Arc<SubState>, u64)> = per_sub.into_values().collect();
        svc.after_ingest(topic, &per_sub, report);
    }
    Ok(n)
}

/// Forgets `(source, id)` marks older than the dedup window, every few seconds.
async fn dedup_sweeper(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = inner.shutdown.cancelled() => return,
        }
        let swept = inner.queues.expire_dedup(inner.config.dedup_window).await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "sweeping the event dedup window failed");
        }
    }
}
