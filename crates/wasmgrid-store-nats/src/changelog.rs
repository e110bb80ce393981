//! [`ChangeLog`] on JetStream (docs/STORAGE.md 4.2), on [`NatsQueues`] as the
//! embedded log is on `EmbeddedQueues` (the router's step queues and
//! acknowledges through one object): stream `P_log` with one subject per
//! feed (`P.log.d`, `P.log.a`, `P.log.j`), appends deduplicated by
//! `Nats-Msg-Id`, and the router reading through the durable pull consumer
//! `router` (acknowledge-all: one acknowledgement moves the position).
//!
//! Entries a router read and has not acknowledged stay with it: a second
//! `read` in the same process returns them again (followed by newer ones, if
//! there is room); after a crash they go to the next router once the
//! consumer's 30 s acknowledgement wait ends. A read right after an append
//! may miss it (the consumer's replica may not have applied it yet); the
//! router's next read gets it.

use crate::queues::NatsQueues;
use crate::store_err;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use wasmgrid_store::StoreError;
use wasmgrid_store::changelog::{ChangeLog, Feed, LOG_RETENTION, LogRead, Logged};

/// The subject token of a feed.
pub(crate) fn feed_token(feed: Feed) -> &'static str {
    match feed {
        Feed::Data => "d",
        Feed::Algorithms => "a",
        Feed::Jobs => "j",
    }
}

fn feed_of_subject(subject: &str) -> Feed {
    match subject.rsplit('.').next() {
        Some("a") => Feed::Algorithms,
        Some("j") => Feed::Jobs,
        _ => Feed::Data,
    }
}

/// Entries read by the router and not yet acknowledged: `(entry, reply
/// subject)`, in log order.
pub(crate) type Unacked = Vec<(Logged, String)>;

/// Routed entries are pruned when the acknowledged position passes a
/// multiple of this (one purge request per so many entries).
const PRUNE_EVERY: u64 = 1000;

#[async_trait::async_trait]
impl ChangeLog for NatsQueues {
    async fn append(&self, feed: Feed, dedup: &str, event: Bytes) -> Result<u64, StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", dedup);
        // A duplicate's acknowledgement carries the first append's number.
        let ack = self
            .js
            .publish_with_headers(self.log_subject(feed), headers, event)
            .await
            .map_err(|e| store_err("appending to the change log", e))?
            .await
            .map_err(|e| store_err("appending to the change log", e))?;
        Ok(ack.sequence)
    }

    async fn read(&self, max: usize) -> Result<LogRead, StoreError> {
        let mut unacked = self.unacked.lock().await;
        // What this router holds comes first; then more, if there is room.
        if unacked.len() < max {
            let mut messages = self
                .router
                .fetch()
                .max_messages(max - unacked.len())
                .messages()
                .await
                .map_err(|e| store_err("reading the change log", e))?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| store_err("reading the change log", e))?;
                let (Some(reply), Ok(info)) = (message.reply.clone(), message.info()) else {
                    continue;
                };
                let seq = info.stream_sequence;
                unacked.push((
                    Logged {
                        seq,
                        feed: feed_of_subject(&message.subject),
                        event: message.payload.clone(),
                    },
                    reply.to_string(),
                ));
            }
        }
        Ok(LogRead {
            upto: unacked.last().map(|(l, _)| l.seq),
            entries: unacked.iter().map(|(l, _)| l.clone()).collect(),
        })
    }

    async fn ack(&self, upto: u64) -> Result<(), StoreError> {
        let mut unacked = self.unacked.lock().await;
        let Some(pos) = unacked.iter().rposition(|(l, _)| l.seq <= upto) else {
            return Ok(());
        };
        // Acknowledge-all: the last one covers those before it. Waited for,
        // so the position is durable on return.
        let reply = unacked[pos].1.clone();
        self.js
            .client()
            .request(reply, Bytes::from_static(b"+ACK"))
            .await
            .map_err(|e| store_err("acknowledging the change log", e))?;
        let before = unacked.first().map_or(upto, |(l, _)| l.seq);
        unacked.drain(..=pos);
        drop(unacked);
        if upto > LOG_RETENTION && before / PRUNE_EVERY != upto / PRUNE_EVERY {
            // Everything below the retained window (2.9 purges by sequence).
            if let Err(e) = self.log.purge().sequence(upto - LOG_RETENTION).await {
                tracing::warn!(error = %e, "pruning the change log failed; retried after the next thousand entries");
            }
        }
        Ok(())
    }

    async fn inspect(&self, after: u64, limit: usize) -> Result<Vec<Logged>, StoreError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let subjects = format!("{}.log.*", self.prefix);
        let mut out = Vec::new();
        let mut seq = after + 1;
        while out.len() < limit {
            match self
                .log
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subjects.clone())
                .send()
                .await
            {
                Ok(m) => {
                    seq = m.sequence + 1;
                    out.push(Logged {
                        seq: m.sequence,
                        feed: feed_of_subject(&m.subject),
                        event: m.payload,
                    });
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(store_err("inspecting the change log", e)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_map_to_subject_tokens_and_back() {
        for feed in [Feed::Data, Feed::Algorithms, Feed::Jobs] {
            assert_eq!(
                feed_of_subject(&format!("wg.log.{}", feed_token(feed))),
                feed
            );
        }
    }
}
