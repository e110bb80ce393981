//! The embedded [`ChangeLog`]: table OUTBOX and the router's position, META
//! `event_outbox_cursor`.
//!
//! Record format (shared with the writers of data and version events, which
//! append inside their own transactions): a record holds one event (a JSON
//! object) or, written by one transaction of several writes, a JSON array of
//! up to 64 events stored with `Txn::append_many`, keyed by the number of its
//! last event, each event having its own number. Reading is done only here.

use super::queues::EmbeddedQueues;
use crate::changelog::{ChangeLog, Feed, LOG_RETENTION, LogRead, Logged};
use crate::{Cursor, Store, StoreError, Table, WriteBatch};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// META key of the router's position: the number of the last routed event.
pub(super) const CURSOR_KEY: &str = "event_outbox_cursor";

/// Stored records read per router pass.
const READ_RECORDS: usize = 500;

/// Routed records deleted per prune pass.
const PRUNE_PAGE: usize = 1000;

/// Only the `type` of an event, to tell its feed.
#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
}

fn feed_of(event: &[u8]) -> Feed {
    serde_json::from_slice::<TypeOnly>(event)
        .ok()
        .and_then(|t| t.ty)
        .map_or(Feed::Data, |t| Feed::of_type(&t))
}

/// The events of the record stored under number `last`, each with its own
/// number.
fn decode_record(last: u64, bytes: Vec<u8>) -> Result<Vec<Logged>, serde_json::Error> {
    let is_array = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    if !is_array {
        // Checked to be one JSON value, as the array's elements are.
        serde_json::from_slice::<&RawValue>(&bytes)?;
        return Ok(vec![Logged {
            seq: last,
            feed: feed_of(&bytes),
            event: Bytes::from(bytes),
        }]);
    }
    let events: Vec<&RawValue> = serde_json::from_slice(&bytes)?;
    let first = (last + 1).saturating_sub(events.len() as u64);
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(i, e)| Logged {
            seq: first + i as u64,
            feed: feed_of(e.get().as_bytes()),
            event: Bytes::copy_from_slice(e.get().as_bytes()),
        })
        .collect())
}

fn corrupt(key: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table: Table::OUTBOX.name(),
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// Deletes routed records up to number `upto` (a page per call).
pub(super) fn prune_log(store: &dyn Store, upto: u64) -> Result<(), StoreError> {
    let limit = format!("{upto:020}");
    let page = store.scan(Table::OUTBOX, "", None, PRUNE_PAGE)?;
    let mut batch = WriteBatch::new();
    for (key, _) in page
        .iter()
        .take_while(|(k, _)| k.as_str() <= limit.as_str())
    {
        batch.delete(Table::OUTBOX, key.clone());
    }
    if !batch.ops().is_empty() {
        store.commit(&batch)?;
    }
    Ok(())
}

fn worker_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("store worker failed: {e}"))
}

#[async_trait::async_trait]
impl ChangeLog for EmbeddedQueues {
    async fn append(&self, _feed: Feed, _dedup: &str, event: Bytes) -> Result<u64, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut seq = 0;
            store.transact(&mut |txn| {
                seq = txn.append(Table::OUTBOX, &event)?;
                Ok(())
            })?;
            Ok(seq)
        })
        .await
        .map_err(worker_failed)?
    }

    async fn read(&self, max: usize) -> Result<LogRead, StoreError> {
        let cursor = self
            .store
            .get(Table::META, CURSOR_KEY)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        // Records are keyed by their last event's number: every record after
        // the cursor holds only unrouted events.
        let page = self.store.scan(
            Table::OUTBOX,
            "",
            Some(Cursor::After(&format!("{cursor:020}"))),
            READ_RECORDS,
        )?;
        let mut out = LogRead::default();
        for (key, bytes) in page {
            if out.entries.len() >= max {
                break;
            }
            let last: u64 = key.parse().unwrap_or(cursor);
            out.upto = Some(last);
            match decode_record(last, bytes) {
                Ok(events) => out.entries.extend(events),
                // Skipped: acknowledging `upto` passes it.
                Err(e) => {
                    tracing::error!(key = %key, error = %e, "skipping an unreadable outbox record")
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, upto: u64) -> Result<(), StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.transact(&mut |txn| {
                txn.put(Table::META, CURSOR_KEY, upto.to_string().as_bytes())
            })?;
            if upto > LOG_RETENTION {
                prune_log(&*store, upto - LOG_RETENTION)?;
            }
            Ok(())
        })
        .await
        .map_err(worker_failed)?
    }

    async fn inspect(&self, after: u64, limit: usize) -> Result<Vec<Logged>, StoreError> {
        // Records are keyed by their last event's number: every record after
        // `after` holds at least one event after it.
        let start = format!("{after:020}");
        let page = self
            .store
            .scan(Table::OUTBOX, "", Some(Cursor::After(&start)), limit)?;
        let mut out = Vec::with_capacity(limit);
        for (key, bytes) in page {
            let events =
                decode_record(key.parse().unwrap_or(0), bytes).map_err(|e| corrupt(&key, e))?;
            for logged in events {
                if logged.seq > after && out.len() < limit {
                    out.push(logged);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedStore;
    use std::sync::Arc;

    fn queues(dir: &std::path::Path) -> EmbeddedQueues {
        EmbeddedQueues::new(Arc::new(EmbeddedStore::open(dir).unwrap()))
    }

    #[tokio::test]
    async fn batched_records_give_one_number_per_event_and_feeds_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let q = queues(dir.path());
        // What a data write batch and a deploy store, inside their own txns.
        q.store
            .transact(&mut |txn| {
                txn.append_many(
                    Table::OUTBOX,
                    br#"[{"id":"1","type":"wasmgrid.data.FileCreated"},{"id":"2","type":"wasmgrid.data.FileDeleted"},{"id":"3"}]"#,
                    3,
                )?;
                txn.append(
                    Table::OUTBOX,
                    br#"{"id":"4","type":"wasmgrid.algorithms.VersionDeployed"}"#,
                )?;
                Ok(())
            })
            .unwrap();
        let seq = q
            .append(
                Feed::Jobs,
                "j/JobFailed",
                Bytes::from_static(br#"{"id":"5","type":"wasmgrid.jobs.JobFailed"}"#),
            )
            .await
            .unwrap();
        assert_eq!(seq, 5);
        let all = q.read(100).await.unwrap().entries;
        let got: Vec<(u64, Feed)> = all.iter().map(|l| (l.seq, l.feed)).collect();
        assert_eq!(
            got,
            [
                (1, Feed::Data),
                (2, Feed::Data),
                (3, Feed::Data),
                (4, Feed::Algorithms),
                (5, Feed::Jobs)
            ]
        );
        assert_eq!(
            &all[1].event[..],
            br#"{"id":"2","type":"wasmgrid.data.FileDeleted"}"#
        );
        // Whole records, stopping once `max` is reached.
        assert_eq!(q.read(1).await.unwrap().entries.len(), 3);
        // Inspection starts inside a record and stops at the limit.
        let seqs: Vec<u64> = q
            .inspect(1, 2)
            .await
            .unwrap()
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(seqs, [2, 3]);
        q.ack(3).await.unwrap();
        let seqs: Vec<u64> = q
            .read(100)
            .await
            .unwrap()
            .entries
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(seqs, [4, 5]);
        // Routed entries are kept for inspection.
        assert_eq!(q.inspect(0, 100).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn an_unreadable_record_is_passed_by_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let q = queues(dir.path());
        q.store
            .transact(&mut |txn| {
                txn.append(Table::OUTBOX, br#"{"id":"1"}"#)?;
                txn.append(Table::OUTBOX, b"not json")?;
                Ok(())
            })
            .unwrap();
        let read = q.read(100).await.unwrap();
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.upto, Some(2));
        q.ack(2).await.unwrap();
        assert_eq!(q.read(100).await.unwrap(), LogRead::default());
    }

    #[tokio::test]
    async fn routed_entries_past_the_retention_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let q = queues(dir.path());
        q.store
            .transact(&mut |txn| {
                txn.append(Table::OUTBOX, br#"{"id":"old"}"#)?;
                // Numbers jump past the retention (one record for many events).
                txn.append_many(Table::OUTBOX, b"[]", LOG_RETENTION + 10)?;
                Ok(())
            })
            .unwrap();
        q.ack(LOG_RETENTION + 11).await.unwrap();
        let left = q.inspect(0, 10).await.unwrap();
        assert!(left.iter().all(|l| l.seq > 1), "{left:?}");
    }
}
