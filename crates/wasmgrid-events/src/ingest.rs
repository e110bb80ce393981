//! Durable ingest with request combining.
//!
//! Every publish request must be durable before it is acknowledged, and a
//! store transaction has a fixed cost (redb's commit bookkeeping, then a share
//! of an fsync) that dwarfs a few B-tree inserts. So concurrent requests are
//! combined: a request is prepared on the caller's task (queue entries
//! serialized, dedup identities built, subscriptions matched), then queued;
//! one blocking writer drains the queue, writing every waiting request in one
//! transaction, and answers each with its own report. While it waits for the
//! disk, new requests gather for the next transaction. A lone request pays
//! what it did before (one transaction); N concurrent ones share one.

use super::{EventError, Inner, PublishReport, Routed, SEQ_KEY, SubState, queue_key, read_counter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use wasmgrid_store::{Store, Table};

/// Most events written by one combined transaction (a bound on how long the
/// writer lock is held and how much a failed transaction takes down).
const MAX_EVENTS_PER_TXN: usize = 20_000;

/// What one request's part of the transaction did: its report, and per
/// subscription how many entries it enqueued.
pub(crate) type Ingested = (PublishReport, Vec<(Arc<SubState>, u64)>);

/// One publish request, prepared outside the writer.
pub(crate) struct Request {
    /// Publish time (ms): the dedup mark's time.
    pub now: u64,
    /// The serialized queue entry of each event.
    pub entries: Vec<String>,
    /// The dedup key (`k/topic\nsource\nid`) of each event, or `None` to
    /// skip deduplication.
    pub dedup_keys: Option<Vec<String>>,
    /// The matching subscriptions of each event.
    pub routed: Routed,
    /// Dedup window in ms.
    pub window: u64,
    reply: Option<oneshot::Sender<Result<Ingested, EventError>>>,
}

impl Request {
    /// A request; `submit` hands back its answer.
    pub fn new(
        now: u64,
        entries: Vec<String>,
        dedup_keys: Option<Vec<String>>,
        routed: Routed,
        window: u64,
    ) -> Self {
        Self {
            now,
            entries,
            dedup_keys,
            routed,
            window,
            reply: None,
        }
    }
}

/// The queue of prepared requests and whether a writer is draining it.
#[derive(Default)]
pub(crate) struct Combiner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: Vec<Request>,
    writing: bool,
}

impl Combiner {
    /// Queues `request` and waits until it is durable (or failed).
    pub(crate) async fn submit(
        inner: &Arc<Inner>,
        mut request: Request,
    ) -> Result<Ingested, EventError> {
        let (tx, rx) = oneshot::channel();
        request.reply = Some(tx);
        let start_writer = {
            let mut st =
                inner.ingest.state.lock().map_err(|_| {
                    EventError::Internal("the ingest queue lock is poisoned".into())
                })?;
            st.pending.push(request);
            !std::mem::replace(&mut st.writing, true)
        };
        if start_writer {
            let inner = inner.clone();
            tokio::task::spawn_blocking(move || drain(&inner));
        }
        rx.await.map_err(|_| {
            EventError::Internal("the ingest writer stopped before answering".into())
        })?
    }
}

/// Writes queued requests, a combined transaction at a time, until none is left.
fn drain(inner: &Inner) {
    loop {
        let batch = {
            let Ok(mut st) = inner.ingest.state.lock() else {
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
        let result = write(&*inner.store, &batch);
        for (i, mut request) in batch.into_iter().enumerate() {
            let answer = match &result {
                Ok(parts) => parts.get(i).cloned().ok_or_else(|| {
                    EventError::Internal("the ingest writer lost a request's result".into())
                }),
                Err(e) => Err(e.clone()),
            };
            if let Some(reply) = request.reply.take() {
                // The publisher may have gone away (client disconnected); its
                // events are durable all the same.
                let _ = reply.send(answer);
            }
        }
    }
}

/// The combined ingest transaction: dedup marks and one queue entry per
/// matching subscription, for every request of `batch`, in order.
fn write(store: &dyn Store, batch: &[Request]) -> Result<Vec<Ingested>, EventError> {
    let mut out: Vec<Ingested> = Vec::with_capacity(batch.len());
    store.transact(&mut |txn| {
        out.clear();
        let mut seq = read_counter(txn, SEQ_KEY)?;
        for request in batch {
            let mut report = PublishReport::default();
            let mut per_sub: HashMap<u64, (Arc<SubState>, u64)> = HashMap::new();
            let mut now_text = String::new();
            for (i, entry) in request.entries.iter().enumerate() {
                if let Some(key) = request.dedup_keys.as_ref().and_then(|v| v.get(i)) {
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
                let routes = request.routed.get(i).map(Vec::as_slice).unwrap_or(&[]);
                report.dropped += usize::from(routes.is_empty());
                for (id, sub) in routes {
                    seq += 1;
                    txn.put(Table::EVENT_QUEUE, &queue_key(*id, seq), entry.as_bytes())?;
                    per_sub.entry(*id).or_insert_with(|| (sub.clone(), 0)).1 += 1;
                    report.deliveries += 1;
                }
            }
            out.push((report, per_sub.into_values().collect()));
        }
        txn.put(Table::META, SEQ_KEY, seq.to_string().as_bytes())
    })?;
    Ok(out)
}
