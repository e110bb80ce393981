//! DeliveryQueues: one durable queue per subscription, dead letters and the
//! `(source, id)` deduplication window (docs/STORAGE.md, section 2.4).
//!
//! The store keeps entries, their attempt state, dead letters and the dedup
//! marks. The delivery worker (scheduling, the retry heap,
//! `maxConcurrentDeliveries`, outcome decisions) stays in the events crate
//! and tells the store each outcome: [`DeliveryQueues::ack`],
//! [`DeliveryQueues::retry`], [`DeliveryQueues::dead_letter`].

use crate::{Page, StoreError};
use serde_json::value::RawValue;
use std::time::Duration;

/// A subscription's queue: its subscription id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubId(pub u64);

/// An event's deduplication identity: `(topic, source, id)`.
#[derive(Debug, Clone, Copy)]
pub struct Dedup<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// Its CloudEvent `source`.
    pub source: &'a str,
    /// Its CloudEvent `id`.
    pub id: &'a str,
}

/// One event to queue for the subscriptions it matched.
#[derive(Debug, Clone, Copy)]
pub struct Enqueue<'a> {
    /// The CloudEvent as structured JSON (one JSON value).
    pub event: &'a str,
    /// The subscriptions it goes to (none: accepted and dropped).
    pub subs: &'a [SubId],
    /// Its identity for deduplication; `None` skips it (router entries,
    /// which carry `log_seq` instead).
    pub dedup: Option<Dedup<'a>>,
    /// For entries routed from the change log: the entry's number (the
    /// cluster backend's dedup id `log<seq>`; the embedded one routes in one
    /// transaction and needs none).
    pub log_seq: Option<u64>,
}

/// What one [`DeliveryQueues::ingest`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Events accepted (duplicates excluded).
    pub accepted: usize,
    /// Events already seen within the dedup window: not queued.
    pub duplicates: usize,
    /// Entries queued (accepted events × their subscriptions).
    pub deliveries: usize,
    /// Accepted events that matched no subscription.
    pub dropped: usize,
    /// Entries queued per subscription.
    pub per_sub: Vec<(SubId, u64)>,
}

/// Names a leased entry for its outcome (embedded: the queue key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub Box<str>);

impl Token {
    /// The entry's sequence number within its queue (enqueue order), as
    /// dead-letter files are named; 0 when the token carries none.
    pub fn seq(&self) -> u64 {
        self.0
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// A queued entry handed to the delivery worker, with its attempt state.
/// The worker updates the state and hands it back through
/// [`DeliveryQueues::retry`].
#[derive(Debug, Clone)]
pub struct Leased {
    /// Names it for its outcome.
    pub token: Token,
    /// The CloudEvent as published (structured JSON), not re-parsed.
    pub event: Box<RawValue>,
    /// The stored entry's size in bytes (batch sizing).
    pub size: usize,
    /// When it was queued (ms since the epoch): the start of its time-to-live.
    pub enqueued_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not due before this time (ms; 0: now): a retry's schedule, kept so a
    /// restart picks it up again.
    pub not_before_ms: u64,
    /// The last failed attempt's outcome.
    pub last_outcome: Option<String>,
    /// When the last attempt was made (ms).
    pub last_attempt_ms: Option<u64>,
}

/// Entry counts of one subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Entries ready for delivery. The embedded backend counts every queued
    /// entry here (it does not tell leased and waiting ones apart).
    pub ready: u64,
    /// Entries leased to a worker (cluster backend).
    pub leased: u64,
    /// Entries waiting for a retry (cluster backend).
    pub waiting_retry: u64,
    /// Dead letters.
    pub dead: u64,
}

impl QueueCounts {
    /// Entries still owed a delivery: ready, leased or waiting.
    pub fn depth(&self) -> u64 {
        self.ready + self.leased + self.waiting_retry
    }
}

/// One queue per subscription, dead letters and the `(topic, source, id)`
/// dedup window (docs/STORAGE.md 2.4).
///
/// Order: per queue, entries are leased in enqueue order (except those
/// waiting for a retry). Outcomes of one queue are applied in the order they
/// were given, so an acknowledgement or dead letter is never overtaken by an
/// older retry update of the same entry.
#[async_trait::async_trait]
pub trait DeliveryQueues: Send + Sync {
    /// Prepares the queue of a new subscription (idempotent). Embedded: nothing
    /// to do.
    async fn create_queue(&self, sub: SubId) -> Result<(), StoreError>;

    /// Removes a subscription's queue and its dead letters, after every
    /// outcome given before the call is applied (so none re-creates an
    /// entry). Not atomic: a crash midway leaves a part, which nothing reads
    /// (the subscription is gone) and a second call removes.
    async fn drop_queue(&self, sub: SubId) -> Result<(), StoreError>;

    /// Queues each accepted event for its subscriptions and records its dedup
    /// mark; an event whose identity was ingested within `window` is a
    /// duplicate and queues nothing. Returns once **every** entry is durable.
    /// Embedded: the batch is atomic, and concurrent calls share one
    /// transaction. On `Err` nothing of the batch is queued (embedded); the
    /// cluster backend may have queued a part, and repeating the call within
    /// the window completes it without queueing anything twice.
    async fn ingest(
        &self,
        batch: &[Enqueue<'_>],
        window: Duration,
    ) -> Result<IngestReport, StoreError>;

    /// The router's step: queues change-log entries (no dedup marks; each
    /// has its `log_seq`) and acknowledges the log up to `upto`. Embedded:
    /// both in one transaction (exactly once). Cluster: publishes with dedup
    /// id `log<seq>`, then `ChangeLog::ack` (at least once; a repeat within
    /// the duplicate window queues nothing twice). Durable on return.
    async fn ingest_routed(
        &self,
        batch: &[Enqueue<'_>],
        upto: u64,
    ) -> Result<IngestReport, StoreError>;

    /// Up to `max` further entries of the queue, in enqueue order, with their
    /// attempt state (those waiting for a retry included: `not_before_ms`
    /// says when they are due). An entry leased and never acknowledged comes
    /// back when the lease ends (embedded: after a restart, since the worker
    /// keeps its retries in memory). Fewer than `max`: the queue holds no more
    /// for now. Unreadable entries are dropped with an error in the log.
    async fn lease(&self, sub: SubId, max: usize) -> Result<Vec<Leased>, StoreError>;

    /// [`lease`](Self::lease) for an idle worker: when the queue is empty,
    /// waits up to `wait` for an entry ingested on any node instead of
    /// answering at once, so idle subscriptions cost no polling and a new
    /// entry is handed out the moment it is stored. Dropping the future
    /// while it waits may leave one entry leased until its lease ends.
    /// Default (embedded): [`lease`](Self::lease) at once, since every
    /// ingest notifies the local worker.
    async fn lease_wait(
        &self,
        sub: SubId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Leased>, StoreError> {
        let _ = wait;
        self.lease(sub, max).await
    }

    /// Keeps the entries leased while their calls run (a call may outlast
    /// the lease): the worker calls it every third of the lease. Embedded:
    /// nothing to do (its leases do not expire); NATS: `+WPI`.
    async fn extend(&self, _sub: SubId, _tokens: &[Token]) -> Result<(), StoreError> {
        Ok(())
    }

    /// How long a lease lasts: an entry leased and given no outcome (nor
    /// [`extend`](Self::extend)ed) within it goes to the next worker that
    /// leases, on any node. `None`: leases last until a restart (embedded,
    /// one process). A worker on queues with a lease time leases only what
    /// it can start at once and polls, since entries ingested on another
    /// node bring no local notification.
    fn lease_time(&self) -> Option<Duration> {
        None
    }

    /// How many nodes deliver from these queues now (1: this process
    /// alone). Each node's worker runs at most
    /// `ceil(maxConcurrentDeliveries / nodes)` deliveries of a subscription,
    /// so the installation stays within the limit plus at most one per node.
    fn sharing_nodes(&self) -> usize {
        1
    }

    /// Whether an entry given to [`retry`](Self::retry) comes back through
    /// [`lease`](Self::lease) when it is due (NATS: a nak with a delay; the
    /// worker then forgets it), rather than staying with the worker that
    /// leased it until a restart (embedded: the worker schedules it again
    /// itself).
    fn redelivers_retries(&self) -> bool {
        false
    }

    /// Delivered: removes the entries. **Not necessarily durable** on return
    /// (embedded: committed without an fsync of its own, made durable by the
    /// next durable commit or within 50 ms); a crash may forget recent acks,
    /// which means one more delivery (at least once).
    async fn ack(&self, sub: SubId, tokens: Vec<Token>) -> Result<(), StoreError>;

    /// Stores `entry`'s attempt state as the worker updated it (attempts,
    /// `not_before_ms`, last outcome and attempt time). An entry removed
    /// meanwhile stays removed. Embedded: applied in order by the outcome
    /// writer and durable within one of its rounds ([`flush`](Self::flush)
    /// waits for it); after a crash the entry is due at the stored time, or
    /// at once.
    async fn retry(&self, sub: SubId, entry: &Leased) -> Result<(), StoreError>;

    /// Moves the entry to the dead letters with `record` (the events crate's
    /// dead-letter JSON, which holds the event under `event`). Record and
    /// removal are one step: after a crash there is the dead letter or the
    /// entry, never neither. Embedded: durable as [`retry`](Self::retry).
    async fn dead_letter(
        &self,
        sub: SubId,
        token: Token,
        record: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// Makes every outcome given before the call durable (shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Dead letters in the order they were queued: `(sequence, record)`,
    /// after sequence `after`, at most `limit`; `next` is the last sequence
    /// of the page when more follow.
    async fn dead_letters(
        &self,
        sub: SubId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<(u64, Vec<u8>)>, StoreError>;

    /// Moves dead letters (all, or those whose event id is in `ids`) back to
    /// the queue with fresh attempts; how many. Each moves atomically
    /// (embedded: 500 per transaction); durable on return.
    async fn redrive(&self, sub: SubId, ids: Option<&[String]>) -> Result<usize, StoreError>;

    /// Entry counts (a snapshot per number).
    async fn counts(&self, sub: SubId) -> Result<QueueCounts, StoreError>;

    /// Forgets dedup marks older than `window` (called every few seconds;
    /// the cluster backend's duplicate window expires by itself).
    async fn expire_dedup(&self, window: Duration) -> Result<(), StoreError>;
}
