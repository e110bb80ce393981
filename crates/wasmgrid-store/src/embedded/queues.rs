//! The embedded [`DeliveryQueues`]: tables EVENT_QUEUE, DEAD_LETTERS,
//! EVENT_DEDUP and the META counter `event_seq`.
//!
//! Two mechanisms keep ingest and delivery cheap, moved here unchanged from
//! the events crate:
//!
//! - **The ingest combiner.** Every publish must be durable before it is
//!   acknowledged, and a transaction has a fixed cost (redb's commit
//!   bookkeeping, then a share of an fsync) that dwarfs a few B-tree inserts.
//!   So concurrent calls are combined: each is prepared on the caller's task
//!   (queue entries serialized, dedup keys built), then queued; one blocking
//!   writer drains the queue, writing every waiting call in one transaction,
//!   and answers each with its own report. While it waits for the disk, new
//!   calls gather for the next transaction.
//! - **The outcome writer (flusher).** Acknowledgements, retry updates and
//!   dead letters go through one task that applies them in order, many per
//!   transaction: acknowledgements need no fsync of their own (a lost one only
//!   means one more delivery), so they are committed lazily and made durable
//!   by the next durable commit (an ingest, or the flusher's own after 50 ms of
//!   quiet); retry updates and dead letters are rare and committed durably.
//!   One ordered path per entry means an acknowledgement or dead letter is
//!   never overtaken by an older update of the same entry.
//!
//! The queue entry format (`QueueEntry`) is written and read only here.

use super::changelog::{CURSOR_KEY, prune_log};
use crate::changelog::LOG_RETENTION;
use crate::queues::{DeliveryQueues, Enqueue, IngestReport, Leased, QueueCounts, SubId, Token};
use crate::{Cursor, Page, Store, StoreError, Table, Txn, WriteBatch};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// META key of the queue sequence counter (one counter for every queue, so
/// keys sort in enqueue order within a queue).
const SEQ_KEY: &str = "event_seq";

/// Most events written by one combined transaction (a bound on how long the
/// writer lock is held and how much a failed transaction takes down).
const MAX_EVENTS_PER_TXN: usize = 20_000;

/// Dead letters moved per redrive transaction.
const REDRIVE_PAGE: usize = 500;

/// Keys deleted per purge or dedup-sweep transaction.
const PURGE_PAGE: usize = 1000;

/// How long the flusher lets lazily committed outcomes wait for a durable
/// commit by someone else before it makes one itself.
const LAZY_FLUSH_DELAY: Duration = Duration::from_millis(50);

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn queue_prefix(id: u64) -> String {
    format!("{id:016x}/")
}

fn queue_key(id: u64, seq: u64) -> String {
    format!("{id:016x}/{seq:020}")
}

/// A queued delivery as stored in `event_queue` (JSON).
#[derive(Debug, Deserialize)]
struct QueueEntry {
    /// Publish time (ms since the epoch): the start of the time-to-live.
    enqueued: u64,
    /// Attempts made so far.
    attempts: u32,
    /// Not before this time (ms); 0 = now.
    next: u64,
    #[serde(default)]
    last_outcome: Option<String>,
    #[serde(default)]
    last_attempt: Option<u64>,
    /// The CloudEvent as published (structured JSON), kept unparsed.
    event: Box<RawValue>,
}

/// [`QueueEntry`] borrowed from a [`Leased`], for writing back its state.
#[derive(Serialize)]
struct QueueEntryRef<'a> {
    enqueued: u64,
    attempts: u32,
    next: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_attempt: Option<u64>,
    event: &'a RawValue,
}

/// A fresh entry (no attempts yet) for the structured JSON `event`.
fn new_entry(now: u64, event: &str) -> String {
    format!("{{\"enqueued\":{now},\"attempts\":0,\"next\":0,\"event\":{event}}}")
}

fn encode_entry(l: &Leased) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&QueueEntryRef {
        enqueued: l.enqueued_ms,
        attempts: l.attempts,
        next: l.not_before_ms,
        last_outcome: l.last_outcome.as_deref(),
        last_attempt: l.last_attempt_ms,
        event: &l.event,
    })
    .map_err(|e| StoreError::Backend(format!("encoding a queue entry: {e}")))
}

fn decode_entry(key: String, bytes: &[u8]) -> Result<Leased, serde_json::Error> {
    let e: QueueEntry = serde_json::from_slice(bytes)?;
    Ok(Leased {
        token: Token(key.into_boxed_str()),
        event: e.event,
        size: bytes.len(),
        enqueued_ms: e.enqueued,
        attempts: e.attempts,
        not_before_ms: e.next,
        last_outcome: e.last_outcome,
        last_attempt_ms: e.last_attempt,
    })
}

/// A counter in META (0 when absent).
fn read_counter(txn: &dyn Txn, key: &str) -> Result<u64, StoreError> {
    Ok(txn
        .get(Table::META, key)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

fn worker_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("store worker failed: {e}"))
}

/// The embedded backend's delivery queues and change log, over its
/// [`Store`]. A separate object from [`super::EmbeddedStore`] because the
/// combined ingest writer and the outcome writer run as tasks that own a
/// handle to the store (construct it once per store, from the same `Arc`).
pub struct EmbeddedQueues {
    pub(super) store: Arc<dyn Store>,
    combiner: Arc<Combiner>,
    flusher: Flusher,
    /// Per queue, the key of the last entry leased (the worker keeps what it
    /// leased in memory until its outcome).
    cursors: Mutex<HashMap<u64, String>>,
}

impl EmbeddedQueues {
    /// The queues and log kept in `store`.
    pub fn new(store: Arc<super::EmbeddedStore>) -> Self {
        Self {
            store,
            combiner: Arc::new(Combiner::default()),
            flusher: Flusher::new(),
            cursors: Mutex::new(HashMap::new()),
        }
    }

    fn prepare(&self, batch: &[Enqueue<'_>], window: Duration, log_upto: Option<u64>) -> Request {
        let now = now_ms();
        let mut entries = Vec::with_capacity(batch.len());
        let mut dedup_keys = Vec::with_capacity(batch.len());
        let mut routes = Vec::with_capacity(batch.len());
        for e in batch {
            entries.push(new_entry(now, e.event));
            dedup_keys.push(
                e.dedup
                    .map(|d| format!("k/{}\n{}\n{}", d.topic, d.source, d.id)),
            );
            routes.push(e.subs.iter().map(|s| s.0).collect());
        }
        Request {
            now,
            entries,
            dedup_keys,
            routes,
            window: window.as_millis() as u64,
            log_upto,
            reply: None,
        }
    }

    async fn submit(&self, mut request: Request) -> Result<IngestReport, StoreError> {
        let (tx, rx) = oneshot::channel();
        request.reply = Some(tx);
        let start_writer = {
            let mut st = self
                .combiner
                .state
                .lock()
                .map_err(|_| StoreError::Backend("the ingest queue lock is poisoned".into()))?;
            st.pending.push(request);
            !std::mem::replace(&mut st.writing, true)
        };
        if start_writer {
            let (store, combiner) = (self.store.clone(), self.combiner.clone());
            tokio::task::spawn_blocking(move || drain(&*store, &combiner));
        }
        rx.await
            .map_err(|_| StoreError::Backend("the ingest writer stopped before answering".into()))?
    }

    fn send(&self, op: FlushOp) {
        self.flusher.start(&self.store);
        // The loop lives as long as the sender (this object); a send can
        // only fail after its runtime is gone, when nothing waits anyway.
        let _ = self.flusher.tx.send(op);
    }

    async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(FlushOp::Barrier(tx));
        let _ = rx.await;
    }
}

#[async_trait::async_trait]
impl DeliveryQueues for EmbeddedQueues {
    async fn create_queue(&self, _sub: SubId) -> Result<(), StoreError> {
        Ok(())
    }

    async fn drop_queue(&self, sub: SubId) -> Result<(), StoreError> {
        // Let queued outcomes of its worker land before purging, so none
        // re-creates an entry afterwards.
        self.barrier().await;
        if let Ok(mut c) = self.cursors.lock() {
            c.remove(&sub.0);
        }
        for table in [Table::EVENT_QUEUE, Table::DEAD_LETTERS] {
            let store = self.store.clone();
            let prefix = queue_prefix(sub.0);
            tokio::task::spawn_blocking(move || purge_prefix(&*store, table, &prefix))
                .await
                .map_err(worker_failed)??;
        }
        Ok(())
    }

    async fn ingest(
        &self,
        batch: &[Enqueue<'_>],
        window: Duration,
    ) -> Result<IngestReport, StoreError> {
        // Prepared here, on the caller's task, so the writer only inserts.
        let request = self.prepare(batch, window, None);
        self.submit(request).await
    }

    async fn ingest_routed(
        &self,
        batch: &[Enqueue<'_>],
        upto: u64,
    ) -> Result<IngestReport, StoreError> {
        let mut request = self.prepare(batch, Duration::ZERO, Some(upto));
        // Router entries carry no dedup marks (routing is exactly once here).
        request.dedup_keys.iter_mut().for_each(|k| *k = None);
        let report = self.submit(request).await?;
        if upto > LOG_RETENTION {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || prune_log(&*store, upto - LOG_RETENTION))
                .await
                .map_err(worker_failed)??;
        }
        Ok(report)
    }

    async fn lease(&self, sub: SubId, max: usize) -> Result<Vec<Leased>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        let after = self
            .cursors
            .lock()
            .map_err(|_| StoreError::Backend("the queue cursor lock is poisoned".into()))?
            .get(&sub.0)
            .cloned();
        // A page of up to `max` entries (512 for the worker): a blocking
        // B-tree walk, on a blocking thread as before.
        let (out, dropped, last) =
            tokio::task::spawn_blocking(move || load_page(&*store, sub.0, after, max))
                .await
                .map_err(worker_failed)??;
        if let Some(last) = last
            && let Ok(mut c) = self.cursors.lock()
        {
            c.insert(sub.0, last);
        }
        if !dropped.is_empty() {
            self.send(FlushOp::Acks(dropped));
        }
        Ok(out)
    }

    async fn ack(&self, _sub: SubId, tokens: Vec<Token>) -> Result<(), StoreError> {
        if !tokens.is_empty() {
            self.send(FlushOp::Acks(
                tokens.into_iter().map(|t| String::from(t.0)).collect(),
            ));
        }
        Ok(())
    }

    async fn retry(&self, _sub: SubId, entry: &Leased) -> Result<(), StoreError> {
        let bytes = encode_entry(entry)?;
        self.send(FlushOp::Update(String::from(entry.token.0.clone()), bytes));
        Ok(())
    }

    async fn dead_letter(
        &self,
        _sub: SubId,
        token: Token,
        record: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.send(FlushOp::DeadLetter {
            key: String::from(token.0),
            record,
        });
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.barrier().await;
        Ok(())
    }

    async fn dead_letters(
        &self,
        sub: SubId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<(u64, Vec<u8>)>, StoreError> {
        let start = after.map(|s| queue_key(sub.0, s));
        let page = self.store.scan(
            Table::DEAD_LETTERS,
            &queue_prefix(sub.0),
            start.as_deref().map(Cursor::After),
            limit + 1,
        )?;
        let items = page
            .into_iter()
            .map(|(key, bytes)| (Token(key.into_boxed_str()).seq(), bytes))
            .collect();
        Ok(Page::from_overfetch(items, limit, |(seq, _)| {
            seq.to_string()
        }))
    }

    async fn redrive(&self, sub: SubId, ids: Option<&[String]>) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let ids = ids.map(<[String]>::to_vec);
        tokio::task::spawn_blocking(move || redrive_txn(&*store, sub.0, ids.as_deref()))
            .await
            .map_err(worker_failed)?
    }

    async fn counts(&self, sub: SubId) -> Result<QueueCounts, StoreError> {
        let prefix = queue_prefix(sub.0);
        let ready = self
            .store
            .count(Table::EVENT_QUEUE, &prefix, &mut |_, _| true)?;
        let dead = self
            .store
            .count(Table::DEAD_LETTERS, &prefix, &mut |_, _| true)?;
        Ok(QueueCounts {
            ready,
            dead,
            ..QueueCounts::default()
        })
    }

    async fn expire_dedup(&self, window: Duration) -> Result<(), StoreError> {
        let store = self.store.clone();
        let older_than = now_ms().saturating_sub(window.as_millis() as u64);
        tokio::task::spawn_blocking(move || sweep_dedup(&*store, older_than))
            .await
            .map_err(worker_failed)?
    }
}

/// Up to `max` readable entries of queue `sub` after key `after`, the keys of
/// unreadable ones met on the way (dropped, with an error in the log), and
/// the last key read.
#[allow(clippy::type_complexity)]
fn load_page(
    store: &dyn Store,
    sub: u64,
    mut after: Option<String>,
    max: usize,
) -> Result<(Vec<Leased>, Vec<String>, Option<String>), StoreError> {
    let prefix = queue_prefix(sub);
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    loop {
        let want = max - out.len();
        let page = store.scan(
            Table::EVENT_QUEUE,
            &prefix,
            after.as_deref().map(Cursor::After),
            want,
        )?;
        let full = page.len() == want;
        for (key, bytes) in page {
            after = Some(key.clone());
            match decode_entry(key, &bytes) {
                Ok(l) => out.push(l),
                Err(e) => {
                    let key = after.clone().unwrap_or_default();
                    tracing::error!(key = %key, error = %e, "dropping an unreadable queue entry");
                    dropped.push(key);
                }
            }
        }
        // Unreadable entries are made up for, so that a short answer still
        // means the end of the queue.
        if !full || out.len() >= max {
            return Ok((out, dropped, after));
        }
    }
}

// ----- the ingest combiner -----

/// One ingest call, prepared outside the writer.
struct Request {
    /// Ingest time (ms): the entries' `enqueued` and the dedup marks' time.
    now: u64,
    /// The serialized queue entry of each event.
    entries: Vec<String>,
    /// The dedup key (`k/topic\nsource\nid`) of each event, if it has one.
    dedup_keys: Vec<Option<String>>,
    /// The subscriptions of each event.
    routes: Vec<Vec<u64>>,
    /// Dedup window in ms.
    window: u64,
    /// Router calls: the change-log position to acknowledge with the entries.
    log_upto: Option<u64>,
    reply: Option<oneshot::Sender<Result<IngestReport, StoreError>>>,
}

/// The queue of prepared calls and whether a writer is draining it.
#[derive(Default)]
struct Combiner {
    state: Mutex<CombinerState>,
}

#[derive(Default)]
struct CombinerState {
    pending: Vec<Request>,
    writing: bool,
}

/// Writes queued calls, a combined transaction at a time, until none is left.
fn drain(store: &dyn Store, combiner: &Combiner) {
    loop {
        let batch = {
            let Ok(mut st) = combiner.state.lock() else {
                return;
            };
            if st.pending.is_empty() {
                st.writing = false;
                return;
            }
            let mut events = 0;
            let take = st
                .pending
                .iter()
                .take_while(|r| {
                    let first = events == 0;
                    events += r.entries.len();
                    first || events <= MAX_EVENTS_PER_TXN
                })
                .count();
            st.pending.drain(..take).collect::<Vec<_>>()
        };
        let result = write(store, &batch);
        for (i, mut request) in batch.into_iter().enumerate() {
            let answer = match &result {
                Ok(parts) => parts.get(i).cloned().ok_or_else(|| {
                    StoreError::Backend("the ingest writer lost a request's result".into())
                }),
                Err(e) => Err(e.clone()),
            };
            if let Some(reply) = request.reply.take() {
                // The caller may have gone away (client disconnected); its
                // entries are durable all the same.
                let _ = reply.send(answer);
            }
        }
    }
}

/// The combined ingest transaction: dedup marks and one queue entry per
/// subscription, for every call of `batch`, in order (and the change-log
/// position of router calls).
fn write(store: &dyn Store, batch: &[Request]) -> Result<Vec<IngestReport>, StoreError> {
    let mut out: Vec<IngestReport> = Vec::with_capacity(batch.len());
    store.transact(&mut |txn| {
        out.clear();
        let mut seq = read_counter(txn, SEQ_KEY)?;
        for request in batch {
            let mut report = IngestReport::default();
            let mut per_sub: HashMap<u64, u64> = HashMap::new();
            let mut now_text = String::new();
            for (i, entry) in request.entries.iter().enumerate() {
                if let Some(Some(key)) = request.dedup_keys.get(i) {
                    if let Some(seen) = txn.get(Table::EVENT_DEDUP, key)? {
                        let seen: u64 = std::str::from_utf8(&seen)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        if request.now.saturating_sub(seen) < request.window {
                            report.duplicates += 1;
                            continue;
                        }
                    }
                    if now_text.is_empty() {
                        now_text = request.now.to_string();
                    }
                    txn.put(Table::EVENT_DEDUP, key, now_text.as_bytes())?;
                    // The time index the sweeper walks: `t/{time}/{identity}`.
                    let identity = key.strip_prefix("k/").unwrap_or(key);
                    txn.put(
                        Table::EVENT_DEDUP,
                        &format!("t/{:020}/{identity}", request.now),
                        b"",
                    )?;
                }
                report.accepted += 1;
                let routes = request.routes.get(i).map(Vec::as_slice).unwrap_or(&[]);
                report.dropped += usize::from(routes.is_empty());
                for id in routes {
                    seq += 1;
                    txn.put(Table::EVENT_QUEUE, &queue_key(*id, seq), entry.as_bytes())?;
                    *per_sub.entry(*id).or_default() += 1;
                    report.deliveries += 1;
                }
            }
            report.per_sub = per_sub.into_iter().map(|(id, n)| (SubId(id), n)).collect();
            if let Some(upto) = request.log_upto {
                txn.put(Table::META, CURSOR_KEY, upto.to_string().as_bytes())?;
            }
            out.push(report);
        }
        txn.put(Table::META, SEQ_KEY, seq.to_string().as_bytes())
    })?;
    Ok(out)
}

// ----- the outcome writer -----

enum FlushOp {
    /// Acknowledgements (one message per worker wake-up).
    Acks(Vec<String>),
    /// A retry's new attempt state.
    Update(String, Vec<u8>),
    DeadLetter {
        key: String,
        record: Vec<u8>,
    },
    Barrier(oneshot::Sender<()>),
}

/// Applies queue outcomes in order, batching them into transactions. Its
/// loop starts with the first outcome (inside the caller's runtime).
struct Flusher {
    tx: mpsc::UnboundedSender<FlushOp>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<FlushOp>>>,
    started: AtomicBool,
}

impl Flusher {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
        }
    }

    fn start(&self, store: &Arc<dyn Store>) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let rx = self.rx.lock().ok().and_then(|mut r| r.take());
        if let Some(rx) = rx {
            tokio::spawn(flush_loop(store.clone(), rx));
        }
        self.started.store(true, Ordering::Release);
    }
}

async fn flush_loop(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<FlushOp>) {
    // Acknowledgements are committed lazily (no fsync of their own; the next
    // durable commit, usually an ingest, carries them). `dirty` says some are
    // not known durable yet.
    let mut dirty = false;
    loop {
        let mut ops = Vec::new();
        // After LAZY_FLUSH_DELAY of quiet, one durable commit (of nothing)
        // makes the lazy ones durable.
        let mut quiet = false;
        if dirty {
            match tokio::time::timeout(LAZY_FLUSH_DELAY, rx.recv()).await {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(_) => quiet = true,
            }
        } else {
            match rx.recv().await {
                Some(op) => ops.push(op),
                None => break,
            }
        }
        while !quiet && ops.len() < 8192 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut barriers = Vec::new();
        let mut writes = Vec::new();
        for op in ops {
            match op {
                FlushOp::Barrier(b) => barriers.push(b),
                other => writes.push(other),
            }
        }
        // A barrier needs everything before it durable (a durable commit
        // covers every earlier lazy one). Retry state and dead letters are
        // rare and worth an fsync: only acknowledgements, the bulk, are lazy.
        let durable = quiet
            || !barriers.is_empty()
            || writes
                .iter()
                .any(|w| matches!(w, FlushOp::Update(..) | FlushOp::DeadLetter { .. }));
        let writes = Arc::new(writes);
        loop {
            let store = store.clone();
            let w = writes.clone();
            let result = tokio::task::spawn_blocking(move || {
                let mut apply = |txn: &mut dyn Txn| {
                    for op in w.iter() {
                        match op {
                            FlushOp::Acks(keys) => {
                                for key in keys {
                                    txn.delete(Table::EVENT_QUEUE, key)?;
                                }
                            }
                            FlushOp::Update(key, bytes) => {
                                // An entry deleted meanwhile (subscription removed) stays deleted.
                                if txn.get(Table::EVENT_QUEUE, key)?.is_some() {
                                    txn.put(Table::EVENT_QUEUE, key, bytes)?;
                                }
                            }
                            FlushOp::DeadLetter { key, record } => {
                                txn.put(Table::DEAD_LETTERS, key, record)?;
                                txn.delete(Table::EVENT_QUEUE, key)?;
                            }
                            FlushOp::Barrier(_) => {}
                        }
                    }
                    Ok(())
                };
                if durable {
                    store.transact(&mut apply)
                } else {
                    store.transact_lazy(&mut apply)
                }
            })
            .await;
            match result {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "writing delivery outcomes failed; retrying");
                }
                Err(e) => tracing::error!(error = %e, "delivery outcome writer failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        dirty = !durable;
        for b in barriers {
            let _ = b.send(());
        }
    }
}

// ----- dead letters, purge, dedup -----

/// The part of a dead-letter record a redrive needs.
#[derive(Deserialize)]
struct DeadEvent {
    event: serde_json::Value,
}

fn redrive_txn(store: &dyn Store, sub: u64, ids: Option<&[String]>) -> Result<usize, StoreError> {
    let prefix = queue_prefix(sub);
    let mut moved = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(
            Table::DEAD_LETTERS,
            &prefix,
            after.as_deref().map(Cursor::After),
            REDRIVE_PAGE,
        )?;
        let full = page.len() == REDRIVE_PAGE;
        after = page.last().map(|(k, _)| k.clone());
        let now = now_ms();
        let mut chosen = Vec::new();
        for (key, bytes) in page {
            let Ok(dl) = serde_json::from_slice::<DeadEvent>(&bytes) else {
                continue;
            };
            let event_id = dl
                .event
                .get("id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            if ids.is_none_or(|ids| ids.iter().any(|i| i == event_id)) {
                let event = serde_json::to_string(&dl.event).unwrap_or_else(|_| "null".into());
                chosen.push((key, new_entry(now, &event)));
            }
        }
        if !chosen.is_empty() {
            store.transact(&mut |txn| {
                let mut seq = read_counter(txn, SEQ_KEY)?;
                for (key, entry) in &chosen {
                    seq += 1;
                    txn.put(Table::EVENT_QUEUE, &queue_key(sub, seq), entry.as_bytes())?;
                    txn.delete(Table::DEAD_LETTERS, key)?;
                }
                txn.put(Table::META, SEQ_KEY, seq.to_string().as_bytes())
            })?;
            moved += chosen.len();
        }
        if !full {
            return Ok(moved);
        }
    }
}

fn purge_prefix(store: &dyn Store, table: Table, prefix: &str) -> Result<(), StoreError> {
    loop {
        let page = store.scan(table, prefix, None, PURGE_PAGE)?;
        if page.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (k, _) in &page {
            batch.delete(table, k.clone());
        }
        store.commit(&batch)?;
    }
}

fn sweep_dedup(store: &dyn Store, older_than: u64) -> Result<(), StoreError> {
    let limit = format!("t/{older_than:020}");
    loop {
        let page = store.scan(Table::EVENT_DEDUP, "t/", None, PURGE_PAGE)?;
        let expired: Vec<&(String, Vec<u8>)> = page
            .iter()
            .take_while(|(k, _)| k.as_str() < limit.as_str())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (k, _) in &expired {
            batch.delete(Table::EVENT_DEDUP, k.clone());
            // `t/{ms}/{ident}` → `k/{ident}`, unless the mark was renewed later.
            if let Some((ms, ident)) = k[2..].split_once('/') {
                let key = format!("k/{ident}");
                let current = store.get(Table::EVENT_DEDUP, &key)?;
                let renewed = current
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|t| format!("{t:020}").as_str() > ms);
                if !renewed {
                    batch.delete(Table::EVENT_DEDUP, key);
                }
            }
        }
        store.commit(&batch)?;
        if expired.len() < page.len() || page.len() < PURGE_PAGE {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedStore;
    use crate::changelog::{ChangeLog, Feed};
    use crate::queues::Dedup;
    use std::path::Path;

    const WINDOW: Duration = Duration::from_secs(600);

    /// A runtime per "process": shutting it down ends the queue tasks, so
    /// the store can be opened again (what a restart sees).
    fn run<T>(dir: &Path, f: impl AsyncFnOnce(Arc<EmbeddedQueues>) -> T) -> T {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(EmbeddedStore::open(dir).unwrap());
        let q = Arc::new(EmbeddedQueues::new(store));
        let out = rt.block_on(f(q));
        rt.shutdown_timeout(Duration::from_secs(5));
        out
    }

    fn ev(id: &str) -> String {
        format!(r#"{{"id":"{id}","source":"/s","type":"t","specversion":"1.0"}}"#)
    }

    fn enq<'a>(event: &'a str, subs: &'a [SubId], id: &'a str) -> Enqueue<'a> {
        Enqueue {
            event,
            subs,
            dedup: Some(Dedup {
                topic: "orders",
                source: "/s",
                id,
            }),
            log_seq: None,
        }
    }

    fn ids(leased: &[Leased]) -> Vec<String> {
        leased
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l.event.get()).unwrap();
                v["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn ingest_is_durable_on_return_and_fans_out_per_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ev("a"), ev("b"));
        let report = run(dir.path(), async |q| {
            let both = [SubId(1), SubId(2)];
            let one = [SubId(1)];
            q.ingest(&[enq(&a, &both, "a"), enq(&b, &one, "b")], WINDOW)
                .await
                .unwrap()
        });
        assert_eq!(
            (report.accepted, report.deliveries, report.dropped),
            (2, 3, 0)
        );
        let mut per_sub = report.per_sub.clone();
        per_sub.sort();
        assert_eq!(per_sub, vec![(SubId(1), 2), (SubId(2), 1)]);
        // Reopened: the entries are there, in order, with no attempts.
        let (one, two, counts) = run(dir.path(), async |q| {
            (
                q.lease(SubId(1), 10).await.unwrap(),
                q.lease(SubId(2), 10).await.unwrap(),
                q.counts(SubId(1)).await.unwrap(),
            )
        });
        assert_eq!(ids(&one), ["a", "b"]);
        assert_eq!(ids(&two), ["a"]);
        assert!(one.iter().all(|l| l.attempts == 0 && l.not_before_ms == 0));
        assert!(one[0].token < one[1].token);
        assert_eq!(counts.depth(), 2);
    }

    #[test]
    fn duplicates_within_the_window_queue_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = ev("a");
        run(dir.path(), async |q| {
            let subs = [SubId(7)];
            let first = q.ingest(&[enq(&a, &subs, "a")], WINDOW).await.unwrap();
            assert_eq!((first.accepted, first.duplicates), (1, 0));
            let again = q
                .ingest(&[enq(&a, &subs, "a"), enq(&a, &subs, "a")], WINDOW)
                .await
                .unwrap();
            assert_eq!((again.accepted, again.duplicates), (0, 2));
            // Outside the window (0 ms), the same identity is accepted.
            let late = q
                .ingest(&[enq(&a, &subs, "a")], Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(late.accepted, 1);
            // No subscriptions: accepted and dropped.
            let none = q.ingest(&[enq(&a, &[], "z")], WINDOW).await.unwrap();
            assert_eq!((none.accepted, none.dropped, none.deliveries), (1, 1, 0));
            assert_eq!(q.counts(SubId(7)).await.unwrap().ready, 2);
        });
    }

    #[test]
    fn concurrent_ingests_all_land_with_distinct_keys() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), async |q| {
            let mut tasks = Vec::new();
            for i in 0..50 {
                let q = q.clone();
                tasks.push(tokio::spawn(async move {
                    let e = ev(&format!("e{i}"));
                    let id = format!("e{i}");
                    q.ingest(&[enq(&e, &[SubId(3)], &id)], WINDOW)
                        .await
                        .unwrap()
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap().deliveries, 1);
            }
            let leased = q.lease(SubId(3), 100).await.unwrap();
            assert_eq!(leased.len(), 50);
        });
    }

    #[test]
    fn lease_pages_forward_and_sees_later_entries() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), async |q| {
            let subs = [SubId(1)];
            let (a, b, c) = (ev("a"), ev("b"), ev("c"));
            q.ingest(&[enq(&a, &subs, "a"), enq(&b, &subs, "b")], WINDOW)
                .await
                .unwrap();
            assert_eq!(ids(&q.lease(SubId(1), 1).await.unwrap()), ["a"]);
            assert_eq!(ids(&q.lease(SubId(1), 5).await.unwrap()), ["b"]);
            assert!(q.lease(SubId(1), 5).await.unwrap().is_empty());
            q.ingest(&[enq(&c, &subs, "c")], WINDOW).await.unwrap();
            assert_eq!(ids(&q.lease(SubId(1), 5).await.unwrap()), ["c"]);
        });
    }

    #[test]
    fn unreadable_entries_are_dropped_and_made_up_for() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), async |q| {
            let subs = [SubId(1)];
            let (a, b) = (ev("a"), ev("b"));
            q.ingest(&[enq(&a, &subs, "a")], WINDOW).await.unwrap();
            q.store
                .transact(&mut |txn| {
                    txn.put(Table::EVENT_QUEUE, &queue_key(1, 2), b"garbage")?;
                    txn.put(Table::META, SEQ_KEY, b"2")
                })
                .unwrap();
            q.ingest(&[enq(&b, &subs, "b")], WINDOW).await.unwrap();
            // Two asked for: the garbage between is skipped, not counted.
            let leased = q.lease(SubId(1), 2).await.unwrap();
            assert_eq!(ids(&leased), ["a", "b"]);
            q.flush().await.unwrap();
            assert_eq!(q.counts(SubId(1)).await.unwrap().ready, 2);
        });
    }

    #[test]
    fn acks_retries_and_dead_letters_are_kept_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (ev("a"), ev("b"), ev("c"));
        run(dir.path(), async |q| {
            let subs = [SubId(1)];
            q.ingest(
                &[
                    enq(&a, &subs, "a"),
                    enq(&b, &subs, "b"),
                    enq(&c, &subs, "c"),
                ],
                WINDOW,
            )
            .await
            .unwrap();
            let mut leased = q.lease(SubId(1), 10).await.unwrap();
            let lc = leased.pop().unwrap();
            let mut lb = leased.pop().unwrap();
            let la = leased.pop().unwrap();
            DeliveryQueues::ack(&*q, SubId(1), vec![la.token])
                .await
                .unwrap();
            lb.attempts = 1;
            lb.not_before_ms = 4_000_000_000_000;
            lb.last_outcome = Some("HTTP 500".into());
            lb.last_attempt_ms = Some(123);
            q.retry(SubId(1), &lb).await.unwrap();
            q.dead_letter(
                SubId(1),
                lc.token.clone(),
                br#"{"event":{"id":"c"}}"#.to_vec(),
            )
            .await
            .unwrap();
            q.flush().await.unwrap();
        });
        let (leased, dead) = run(dir.path(), async |q| {
            (
                q.lease(SubId(1), 10).await.unwrap(),
                q.dead_letters(SubId(1), None, 10).await.unwrap(),
            )
        });
        assert_eq!(ids(&leased), ["b"]);
        let b = &leased[0];
        assert_eq!(
            (
                b.attempts,
                b.not_before_ms,
                b.last_outcome.as_deref(),
                b.last_attempt_ms
            ),
            (1, 4_000_000_000_000, Some("HTTP 500"), Some(123))
        );
        assert_eq!(dead.items.len(), 1);
        assert_eq!(dead.next, None);
        assert_eq!(dead.items[0].1, br#"{"event":{"id":"c"}}"#);
    }

    #[test]
    fn redrive_moves_chosen_dead_letters_back_with_fresh_attempts() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), async |q| {
            let subs = [SubId(1)];
            let (a, b) = (ev("a"), ev("b"));
            q.ingest(&[enq(&a, &subs, "a"), enq(&b, &subs, "b")], WINDOW)
                .await
                .unwrap();
            for mut l in q.lease(SubId(1), 10).await.unwrap() {
                l.attempts = 3;
                let record = format!(r#"{{"deadLetterReason":"x","event":{}}}"#, l.event.get());
                q.dead_letter(SubId(1), l.token, record.into_bytes())
                    .await
                    .unwrap();
            }
            q.flush().await.unwrap();
            let page = q.dead_letters(SubId(1), None, 1).await.unwrap();
            assert_eq!(page.items.len(), 1);
            let after: u64 = page.next.unwrap().parse().unwrap();
            let rest = q.dead_letters(SubId(1), Some(after), 10).await.unwrap();
            assert_eq!((rest.items.len(), rest.next), (1, None));

            let moved = q.redrive(SubId(1), Some(&["b".to_string()])).await.unwrap();
            assert_eq!(moved, 1);
            let counts = q.counts(SubId(1)).await.unwrap();
            assert_eq!((counts.ready, counts.dead), (1, 1));
            let back = q.lease(SubId(1), 10).await.unwrap();
            assert_eq!(ids(&back), ["b"]);
            assert_eq!(back[0].attempts, 0);
            assert_eq!(q.redrive(SubId(1), None).await.unwrap(), 1);
            assert_eq!(q.counts(SubId(1)).await.unwrap().dead, 0);
        });
    }

    #[test]
    fn drop_queue_purges_entries_and_dead_letters_of_that_queue_only() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), async |q| {
            let a = ev("a");
            q.ingest(&[enq(&a, &[SubId(1), SubId(2)], "a")], WINDOW)
                .await
                .unwrap();
            let l = q.lease(SubId(1), 1).await.unwrap().remove(0);
            q.dead_letter(SubId(1), l.token, b"{}".to_vec())
                .await
                .unwrap();
            let b = ev("b");
            q.ingest(&[enq(&b, &[SubId(1)], "b")], WINDOW)
                .await
                .unwrap();
            q.drop_queue(SubId(1)).await.unwrap();
            assert_eq!(q.counts(SubId(1)).await.unwrap(), QueueCounts::default());
            assert_eq!(q.counts(SubId(2)).await.unwrap().ready, 1);
        });
    }

    #[test]
    fn expired_dedup_marks_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), async |q| {
            let a = ev("a");
            q.ingest(&[enq(&a, &[SubId(1)], "a")], WINDOW)
                .await
                .unwrap();
            q.expire_dedup(WINDOW).await.unwrap();
            assert_eq!(
                q.store
                    .count(Table::EVENT_DEDUP, "", &mut |_, _| true)
                    .unwrap(),
                2
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            q.expire_dedup(Duration::ZERO).await.unwrap();
            assert_eq!(
                q.store
                    .count(Table::EVENT_DEDUP, "", &mut |_, _| true)
                    .unwrap(),
                0
            );
        });
    }

    #[test]
    fn routing_queues_and_acknowledges_the_log_together() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), async |q| {
            let e1 = ev("j1");
            let s1 = q
                .append(Feed::Jobs, "j1/JobCompleted", e1.clone().into())
                .await
                .unwrap();
            let s2 = q
                .append(Feed::Jobs, "j2/JobCompleted", ev("j2").into())
                .await
                .unwrap();
            assert!(s2 > s1);
            let read = q.read(100).await.unwrap().entries;
            assert_eq!(read.iter().map(|l| l.seq).collect::<Vec<_>>(), [s1, s2]);
            let subs = [SubId(9)];
            let batch = [Enqueue {
                event: &e1,
                subs: &subs,
                dedup: None,
                log_seq: Some(s1),
            }];
            let report = q.ingest_routed(&batch, s1).await.unwrap();
            assert_eq!(report.deliveries, 1);
            // Only what follows the acknowledged position is read again.
            let read = q.read(100).await.unwrap().entries;
            assert_eq!(read.iter().map(|l| l.seq).collect::<Vec<_>>(), [s2]);
            assert_eq!(ids(&q.lease(SubId(9), 10).await.unwrap()), ["j1"]);
        });
        // The position is durable.
        let read = run(dir.path(), async |q| q.read(100).await.unwrap().entries);
        assert_eq!(read.len(), 1);
    }
}
