//! The delivery engine: one worker per subscription drains its durable queue.
//!
//! A worker pages through its queue in key (= publish) order, keeps at most
//! `maxConcurrentDeliveries` deliveries in flight, and holds retries in an
//! in-memory timer heap (their due time is also written to the entry, so a
//! restart picks the schedule up again). Entries and outcomes go through the
//! [`DeliveryQueues`] contract: `lease` pages through the queue, `ack`,
//! `retry` and `dead_letter` record outcomes (in order, so an acknowledgement
//! or dead letter is never overtaken by an older update of the same entry).
//!
//! On shared queues (a cluster backend, whose leases end: see
//! [`DeliveryQueues::lease_time`]) a worker leases only what it can start at
//! once, extends the leases of deliveries still running every third of the
//! lease time, polls for entries other nodes ingested while busy (idle, it
//! waits in the server: [`DeliveryQueues::lease_wait`]), and lets the queue
//! hand retried entries back when they are due
//! ([`DeliveryQueues::redelivers_retries`]) instead of holding them.

use super::cloudevent::EventView;
use super::{
    DeadLetterRecord, Destination, Inner, SubState, SubscriptionRecord, now_ms, parse_endpoint,
    rfc3339_ms,
};
use serde_json::Value;
use serde_json::value::RawValue;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use wasmgrid_core::auth::{Caller, Scope};
use wasmgrid_core::data::Principal;
use wasmgrid_core::invoker::Call;
use wasmgrid_core::metrics::DeadLetterLabels;
use wasmgrid_engine::{GuestErrorKind, HOPS_ATTRIBUTE, InvokeError, Payload};
use wasmgrid_store::queues::{DeliveryQueues, Leased, SubId, Token};

/// Event Grid's retry delays in seconds (10 s … 6 h), then 12 h for every
/// further attempt. Scaled by [`super::EventsConfig::time_scale`], with ±20%
/// jitter.
pub const RETRY_SCHEDULE: [u64; 10] = [10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200];

/// Entries a worker keeps loaded ahead of its deliveries.
const LOAD_AHEAD: usize = 512;

/// How often a worker on shared queues that has deliveries running looks
/// for entries ingested on other nodes (or handed back after a retry delay
/// or an ended lease); an idle one waits in the server instead
/// ([`SHARED_IDLE_WAIT`]).
const SHARED_POLL: Duration = Duration::from_millis(100);

/// How long an idle worker on shared queues lets the server hold its pull
/// request ([`DeliveryQueues::lease_wait`]): an idle subscription costs one
/// request per node this often, and a new event is handed out as soon as it
/// is stored.
const SHARED_IDLE_WAIT: Duration = Duration::from_secs(5);

/// How long a worker on shared queues keeps polling an empty queue before
/// it waits in the server: a busy subscription whose queue runs dry for a
/// moment between publishes keeps the one-request lease.
const SHARED_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How a delivery failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Try again later (counts as an attempt).
    Retryable(String),
    /// Never retried: dead-lettered at once with `NonRetryableError`.
    NonRetryable(String),
    /// The destination had no free slot: try again shortly, not counted as
    /// an attempt.
    Busy(String),
}

struct Item {
    /// The entry with its attempt state, as leased.
    entry: Leased,
    /// The event's hop count ([`HOPS_ATTRIBUTE`]), read once when loaded: the
    /// hop limit and the delivered call's count both need it.
    hops: u32,
}

struct Delayed {
    due: u64,
    item: Item,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, &self.item.entry.token) == (o.due, &o.item.entry.token)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, &self.item.entry.token).cmp(&(o.due, &o.item.entry.token))
    }
}

/// Starts the worker of one subscription (it stops when the subscription is
/// deleted or the server shuts down).
pub(crate) fn spawn_worker(inner: Arc<Inner>, sub: Arc<SubState>) {
    if sub.worker.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let tasks = inner.tasks.clone();
    tasks.spawn(run_worker(inner, sub));
}

type Done = (Vec<Item>, Result<(), Failure>, u64);

/// Most single-event deliveries one task makes, one after another, when the
/// queue has a backlog of more events than `maxConcurrentDeliveries` (fewer
/// task spawns and wake-ups per event; concurrency stays the same, and
/// without a backlog every event gets its own task at once).
const MAX_DELIVERIES_PER_TASK: usize = 16;

async fn run_worker(inner: Arc<Inner>, sub: Arc<SubState>) {
    let queue = SubId(sub.id);
    let mut ready: VecDeque<Item> = VecDeque::new();
    let mut delayed: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    // One task is one delivery in progress (a batch, or single events one
    // after another): at most `maxConcurrentDeliveries` of them.
    let mut inflight: JoinSet<Vec<Done>> = JoinSet::new();
    // Shared queues: each running task's leases, extended while it runs.
    let lease_time = inner.queues.lease_time();
    let mut leases: HashMap<tokio::task::Id, Vec<Token>> = HashMap::new();
    let mut next_extend = lease_time.map(|t| tokio::time::Instant::now() + t / 3);
    let mut exhausted = false;
    // Since when every look at the queue found it empty.
    let mut found_none_since: Option<std::time::Instant> = None;
    loop {
        let stopping = sub.cancel.is_cancelled();
        if stopping && inflight.is_empty() {
            return;
        }
        let record = sub.record();
        // This node's share of the subscription's limit (all of it on one
        // node).
        let limit = (record.spec.max_concurrent_deliveries.max(1) as usize)
            .div_ceil(inner.queues.sharing_nodes());
        if !stopping {
            // Embedded: a page ahead. Shared: only what can start now (an
            // entry held unstarted would be leased for nothing, and
            // another node could take it over when its lease ends).
            let want = match lease_time {
                None if ready.len() < LOAD_AHEAD => LOAD_AHEAD,
                None => 0,
                Some(_) => {
                    let free = limit.saturating_sub(inflight.len());
                    let per_task = record
                        .spec
                        .batching
                        .as_ref()
                        .map_or(1, |b| b.max_events_per_batch.max(1) as usize);
                    (free * per_task).saturating_sub(ready.len())
                }
            };
            if !exhausted && want > 0 {
                // Idle on shared queues (every look for a second found
                // nothing, and nothing is running or waiting): let the
                // server hold the request until an entry comes.
                let idle = lease_time.is_some()
                    && found_none_since.is_some_and(|t| t.elapsed() >= SHARED_IDLE_AFTER)
                    && inflight.is_empty()
                    && ready.is_empty()
                    && delayed.is_empty();
                let page = if idle {
                    tokio::select! {
                        page = inner.queues.lease_wait(queue, want, SHARED_IDLE_WAIT) => page,
                        _ = sub.cancel.cancelled() => continue,
                    }
                } else {
                    inner.queues.lease(queue, want).await
                };
                match page {
                    Ok(page) => {
                        exhausted = page.len() < want;
                        found_none_since = match (page.is_empty(), found_none_since) {
                            (true, Some(since)) => Some(since),
                            (true, None) => Some(std::time::Instant::now()),
                            (false, _) => None,
                        };
                        let now = now_ms();
                        for entry in page {
                            let item = Item {
                                hops: event_hops(&entry.event),
                                entry,
                            };
                            if item.entry.not_before_ms > now {
                                delayed.push(Reverse(Delayed {
                                    due: item.entry.not_before_ms,
                                    item,
                                }));
                            } else {
                                ready.push_back(item);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(subscription = %record.label(), error = %e, "reading the event queue failed; retrying in 1 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = sub.cancel.cancelled() => {}
                        }
                        continue;
                    }
                }
            }
            let now = now_ms();
            while delayed.peek().is_some_and(|d| d.0.due <= now) {
                if let Some(Reverse(d)) = delayed.pop() {
                    ready.push_back(d.item);
                }
            }
            while inflight.len() < limit && !ready.is_empty() {
                // With a backlog, a task delivers several single events in turn.
                let group = if batched(&record) {
                    take_batch(&mut ready, &record)
                } else {
                    let per_task = (ready.len() / (limit - inflight.len()))
                        .clamp(1, MAX_DELIVERIES_PER_TASK)
                        .min(ready.len());
                    ready.drain(..per_task).collect()
                };
                let max_hops = inner.config.max_hops;
                let (group, looping): (Vec<Item>, Vec<Item>) =
                    group.into_iter().partition(|i| i.hops <= max_hops);
                for item in looping {
                    let hops = item.hops;
                    let outcome = format!(
                        "not delivered: the event has {HOPS_ATTRIBUTE}={hops}, past the limit of {max_hops}: \
                         it is the end of a chain of {hops} algorithm runs each caused by the event before, \
                         an event loop (e.g. an algorithm writing into the folder its subscription watches); \
                         break the loop, e.g. by writing results elsewhere or filtering them out"
                    );
                    dead_letter(&inner, &sub, &record, item, "HopLimitExceeded", outcome).await;
                }
                let (live, expired): (Vec<Item>, Vec<Item>) = group
                    .into_iter()
                    .partition(|i| now < expiry(&inner, &record, &i.entry));
                for item in expired {
                    let outcome = item
                        .entry
                        .last_outcome
                        .clone()
                        .unwrap_or_else(|| "not attempted".into());
                    dead_letter(&inner, &sub, &record, item, "TimeToLiveExceeded", outcome).await;
                }
                if live.is_empty() {
                    continue;
                }
                let tokens: Option<Vec<Token>> =
                    lease_time.map(|_| live.iter().map(|i| i.entry.token.clone()).collect());
                let (inner, record) = (inner.clone(), record.clone());
                let handle = if batched(&record) {
                    inflight.spawn(async move { vec![deliver(&inner, &record, live).await] })
                } else {
                    inflight.spawn(async move { deliver_each(&inner, &record, live).await })
                };
                if let Some(tokens) = tokens {
                    leases.insert(handle.id(), tokens);
                }
            }
            let room = match lease_time {
                None => ready.len() < LOAD_AHEAD,
                Some(_) => inflight.len() < limit,
            };
            if !exhausted && room {
                continue;
            }
        }
        let next_due = delayed.peek().map(|d| d.0.due);
        let mut sleep = next_due.map(|due| Duration::from_millis(due.saturating_sub(now_ms())));
        if lease_time.is_some() && !stopping {
            // Entries may arrive without a local notification.
            sleep = Some(sleep.map_or(SHARED_POLL, |s| s.min(SHARED_POLL)));
        }
        let extend_at = next_extend.filter(|_| !leases.is_empty() || !delayed.is_empty());
        tokio::select! {
            biased;
            Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                // Settle every finished delivery now, and acknowledge them in one message.
                let mut acks = Vec::new();
                let mut next = Some(done);
                while let Some(done) = next {
                    match done {
                        Ok((id, outcomes)) => {
                            leases.remove(&id);
                            for done in outcomes {
                                settle(&inner, &sub, &record, done, &mut delayed, &mut acks).await;
                            }
                        }
                        Err(e) => {
                            leases.remove(&e.id());
                            tracing::error!(subscription = %record.label(), error = %e, "a delivery task failed; its events will be delivered again after a restart");
                        }
                    }
                    next = inflight.try_join_next_with_id();
                }
                if !acks.is_empty()
                    && let Err(e) = inner.queues.ack(queue, acks).await
                {
                    tracing::error!(subscription = %record.label(), error = %e, "acknowledging deliveries failed; they will be delivered again after a restart");
                }
            }
            _ = sub.notify.notified(), if !stopping => exhausted = false,
            _ = sleep_until_opt(extend_at) => {
                extend_leases(&*inner.queues, queue, &leases, &delayed, &record).await;
                next_extend = lease_time.map(|t| tokio::time::Instant::now() + t / 3);
            }
            _ = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() && !stopping => {
                if lease_time.is_some() {
                    exhausted = false;
                }
            }
            _ = sub.cancel.cancelled(), if !stopping => {}
        }
    }
}

/// Sleeps until `at`; never wakes when there is none.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Extends the leases of running deliveries and of entries waiting a moment
/// for a free slot, so no other node takes them over.
async fn extend_leases(
    queues: &dyn DeliveryQueues,
    queue: SubId,
    running: &HashMap<tokio::task::Id, Vec<Token>>,
    waiting: &BinaryHeap<Reverse<Delayed>>,
    record: &SubscriptionRecord,
) {
    let tokens: Vec<Token> = running
        .values()
        .flatten()
        .cloned()
        .chain(waiting.iter().map(|d| d.0.item.entry.token.clone()))
        .collect();
    if let Err(e) = queues.extend(queue, &tokens).await {
        tracing::warn!(subscription = %record.label(), error = %e, "extending delivery leases failed; another node may deliver these events too");
    }
}

/// Whether the subscription is in batch mode: then every delivery is a JSON
/// array of CloudEvents, even of one.
fn batched(record: &SubscriptionRecord) -> bool {
    record.spec.batching.is_some()
}

fn take_batch(ready: &mut VecDeque<Item>, record: &SubscriptionRecord) -> Vec<Item> {
    let Some(b) = record.spec.batching.filter(|_| batched(record)) else {
        return ready.pop_front().into_iter().collect();
    };
    let max_events = b.max_events_per_batch.max(1) as usize;
    let max_bytes = b.preferred_batch_size_in_kilobytes as usize * 1024;
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some(next) = ready.front() {
        if out.len() >= max_events || (!out.is_empty() && bytes + next.entry.size > max_bytes) {
            break;
        }
        bytes += next.entry.size;
        if let Some(item) = ready.pop_front() {
            out.push(item);
        }
    }
    out
}

/// An event's hop count ([`HOPS_ATTRIBUTE`], 0 without one). Most events
/// have none: a substring check spares parsing those.
fn event_hops(raw: &RawValue) -> u32 {
    if !raw.get().contains(HOPS_ATTRIBUTE) {
        return 0;
    }
    EventView::parse(raw)
        .ok()
        .and_then(|v| v.raw(HOPS_ATTRIBUTE))
        .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
        .and_then(|v| super::cloudevent::hops_value(&v))
        .unwrap_or(0)
}

fn scaled(inner: &Inner, d: Duration) -> u64 {
    (d.as_millis() as f64 * inner.config.time_scale).max(1.0) as u64
}

fn expiry(inner: &Inner, record: &SubscriptionRecord, entry: &Leased) -> u64 {
    let ttl =
        Duration::from_secs(record.spec.retry_policy.event_time_to_live_in_minutes as u64 * 60);
    entry.enqueued_ms.saturating_add(scaled(inner, ttl))
}

/// Delay before attempt `attempts + 1`, with ±20% jitter.
fn retry_delay(inner: &Inner, attempts: u32) -> u64 {
    let i = (attempts.max(1) as usize - 1).min(RETRY_SCHEDULE.len() - 1);
    let base = scaled(inner, Duration::from_secs(RETRY_SCHEDULE[i])) as f64;
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    (base * jitter).max(1.0) as u64
}

async fn settle(
    inner: &Arc<Inner>,
    sub: &Arc<SubState>,
    record: &Arc<SubscriptionRecord>,
    (items, result, attempted_at): Done,
    delayed: &mut BinaryHeap<Reverse<Delayed>>,
    acks: &mut Vec<Token>,
) {
    match result {
        Ok(()) => {
            let n = items.len();
            acks.extend(items.into_iter().map(|item| item.entry.token));
            sub.depth.dec_by(n as i64);
            sub.delivered.inc_by(n as u64);
        }
        Err(Failure::Busy(_)) => {
            let due = now_ms() + 20 + rand::random::<u64>() % 200;
            for item in items {
                delayed.push(Reverse(Delayed { due, item }));
            }
        }
        Err(Failure::NonRetryable(outcome)) => {
            sub.failures.inc_by(items.len() as u64);
            for mut item in items {
                item.entry.attempts += 1;
                item.entry.last_attempt_ms = Some(attempted_at);
                dead_letter(
                    inner,
                    sub,
                    record,
                    item,
                    "NonRetryableError",
                    outcome.clone(),
                )
                .await;
            }
        }
        Err(Failure::Retryable(outcome)) => {
            sub.failures.inc_by(items.len() as u64);
            let now = now_ms();
            for mut item in items {
                item.entry.attempts += 1;
                item.entry.last_attempt_ms = Some(attempted_at);
                item.entry.last_outcome = Some(outcome.clone());
                if item.entry.attempts >= record.spec.retry_policy.max_delivery_attempts {
                    dead_letter(
                        inner,
                        sub,
                        record,
                        item,
                        "MaxDeliveryAttemptsExceeded",
                        outcome.clone(),
                    )
                    .await;
                    continue;
                }
                let expires = expiry(inner, record, &item.entry);
                if now >= expires {
                    dead_letter(
                        inner,
                        sub,
                        record,
                        item,
                        "TimeToLiveExceeded",
                        outcome.clone(),
                    )
                    .await;
                    continue;
                }
                // Past the time-to-live, the next look dead-letters it.
                item.entry.not_before_ms =
                    (now + retry_delay(inner, item.entry.attempts)).min(expires);
                if let Err(e) = inner.queues.retry(SubId(sub.id), &item.entry).await {
                    tracing::error!(subscription = %record.label(), error = %e, "recording a retry failed; the event is retried from its earlier state after a restart");
                }
                if inner.queues.redelivers_retries() {
                    // The queue hands it back when it is due.
                    continue;
                }
                delayed.push(Reverse(Delayed {
                    due: item.entry.not_before_ms,
                    item,
                }));
            }
        }
    }
}

/// Moves an entry to the dead-letter list (and, when configured, writes it as
/// a JSON file into the subscription's dead-letter collection).
async fn dead_letter(
    inner: &Arc<Inner>,
    sub: &Arc<SubState>,
    record: &Arc<SubscriptionRecord>,
    item: Item,
    reason: &str,
    outcome: String,
) {
    let dl = DeadLetterRecord {
        dead_letter_reason: reason.to_string(),
        delivery_attempts: item.entry.attempts,
        last_delivery_outcome: outcome,
        last_delivery_attempt_time: item.entry.last_attempt_ms.map(rfc3339_ms),
        publish_time: rfc3339_ms(item.entry.enqueued_ms),
        subscription: record.label(),
        event: serde_json::from_str(item.entry.event.get()).unwrap_or(Value::Null),
    };
    let Ok(bytes) = serde_json::to_vec_pretty(&dl) else {
        return;
    };
    sub.depth.dec();
    inner
        .metrics
        .events_dead_lettered
        .get_or_create(&DeadLetterLabels {
            subscription: record.label(),
            reason: reason.to_string(),
        })
        .inc();
    let event_id = dl.event.get("id").and_then(|v| v.as_str()).unwrap_or("");
    tracing::warn!(subscription = %record.label(), reason, event = %event_id, "event dead-lettered");
    if let Some(target) = &record.spec.dead_letter {
        let seq = format!("{:020}", item.entry.token.seq());
        let uri = format!(
            "{}{}/{}/{seq}.json",
            target.collection, record.topic, record.name
        );
        let data = inner.data.clone();
        let acting = acting_caller(record);
        let file = bytes.clone();
        tokio::task::spawn_blocking(move || {
            let who = Principal::Key(&acting);
            let written = who
                .parse(&uri)
                .and_then(|p| data.put(who, &p, "application/json", &file));
            if let Err(e) = written {
                tracing::error!(uri = %uri, error = %e, "writing a dead letter into its collection failed (it stays in the dead-letter list)");
            }
        });
    }
    if let Err(e) = inner
        .queues
        .dead_letter(SubId(sub.id), item.entry.token, bytes)
        .await
    {
        tracing::error!(subscription = %record.label(), error = %e, "recording a dead letter failed; the event is delivered again after a restart");
    }
}

/// The identity deliveries act with: the subscription owner's, with the
/// rights its creating key had for data.
fn acting_caller(record: &SubscriptionRecord) -> Caller {
    Caller {
        key_id: format!("subscription {}", record.label()),
        owner: record.owner.clone(),
        scopes: if record.admin {
            vec![Scope::Admin]
        } else {
            vec![Scope::DataRead, Scope::DataWrite]
        },
        compat: Default::default(),
        hops: 0,
    }
}

/// The events as one JSON array (a CloudEvents batch), without reparsing them.
pub(crate) fn json_array(events: &[&RawValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + events.iter().map(|e| e.get().len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event.get().as_bytes());
    }
    out.push(b']');
    out
}

/// Delivers `items` one event at a time, in order. Once the destination is
/// busy, the rest are not tried now (they come back shortly, as busy).
async fn deliver_each(
    inner: &Arc<Inner>,
    record: &Arc<SubscriptionRecord>,
    items: Vec<Item>,
) -> Vec<Done> {
    let mut out: Vec<Done> = Vec::with_capacity(items.len());
    for item in items {
        if let Some((_, Err(Failure::Busy(why)), at)) = out.last() {
            let (why, at) = (why.clone(), *at);
            out.push((vec![item], Err(Failure::Busy(why)), at));
            continue;
        }
        out.push(deliver(inner, record, vec![item]).await);
    }
    out
}

async fn deliver(inner: &Arc<Inner>, record: &Arc<SubscriptionRecord>, items: Vec<Item>) -> Done {
    let attempted_at = now_ms();
    let events: Vec<&RawValue> = items.iter().map(|i| &*i.entry.event).collect();
    let result = match &record.spec.destination {
        Destination::Algorithm(endpoint) => {
            // The call's own events are one hop past the furthest it is given.
            let hops = items.iter().map(|i| i.hops).max().unwrap_or(0);
            deliver_to_algorithm(inner, endpoint, &events, hops, batched(record)).await
        }
        Destination::Webhook(url) => {
            let secret = record.spec.webhook_secret.as_deref().unwrap_or("");
            inner
                .webhooks
                .deliver(url, secret, &events, batched(record))
                .await
        }
        Destination::Job(spec) => match &inner.jobs {
            Some(jobs) => {
                let mut result = Ok(());
                for ev in &events {
                    let ev: Value = serde_json::from_str(ev.get()).unwrap_or(Value::Null);
                    result = jobs.start(&record.owner, record.admin, spec, &ev).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
            None => Err(Failure::Retryable(
                "the batch jobs service is not running on this server".into(),
            )),
        },
    };
    (items, result, attempted_at)
}

async fn deliver_to_algorithm(
    inner: &Arc<Inner>,
    endpoint: &str,
    events: &[&RawValue],
    hops: u32,
    batched: bool,
) -> Result<(), Failure> {
    let (owner, name, spec) =
        parse_endpoint(endpoint).map_err(|e| Failure::NonRetryable(e.to_string()))?;
    // Resolved at each delivery: `o/n/1` follows new 1.x versions, and a
    // redrive after a fix reaches the fixed version.
    let deployed = inner
        .invoker
        .resolve(owner, name, &spec)
        .map_err(|e| Failure::Retryable(format!("NotFound: {e}")))?;
    let hops = hops.saturating_add(1);
    let (payload, trigger) = if batched {
        (
            Payload {
                content_type: "application/json".into(),
                body: json_array(events).into(),
            },
            None,
        )
    } else {
        let event = events.first().copied().map(EventView::parse).transpose();
        let event = event.map_err(|e| {
            Failure::NonRetryable(format!("the stored event is not a JSON object: {e}"))
        })?;
        let (content_type, body) = event
            .as_ref()
            .map(EventView::data_payload)
            .unwrap_or_else(|| ("application/json".into(), b"null".to_vec()));
        (
            Payload {
                content_type,
                body: body.into(),
            },
            event.as_ref().map(EventView::trigger),
        )
    };
    let result = inner
        .invoker
        .call(Call {
            deployed: &deployed,
            input: payload,
            // A batch has no single trigger, but its events' hops still count.
            trigger,
            timeout: None,
            depth: 0,
            hops,
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let outcome = format!("{}: {e}", e.kind().as_str());
            Err(match e {
                InvokeError::Guest {
                    kind: GuestErrorKind::InvalidInput | GuestErrorKind::Permanent,
                    ..
                } => Failure::NonRetryable(outcome),
                InvokeError::Overloaded(_) => Failure::Busy(outcome),
                _ => Failure::Retryable(outcome),
            })
        }
    }
}
