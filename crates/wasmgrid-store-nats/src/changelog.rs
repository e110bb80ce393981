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

/// The subject token after `P.log.` that marks a file change (STORAGE.md
/// 4.3): `P.log.f.<path>`.
const FILE_TOKEN: &str = "f";

/// What a log subject (`P.log.<token>[.…]`) carries: a feed's event, or a
/// file change (`None`), whose payload is the change with its event.
fn feed_of_subject(subject: &str) -> Option<Feed> {
    match subject.split('.').nth(2) {
        Some("a") => Some(Feed::Algorithms),
        Some("j") => Some(Feed::Jobs),
        Some(FILE_TOKEN) => None,
        _ => Some(Feed::Data),
    }
}

/// One entry the router read and has not acknowledged.
pub(crate) struct Held {
    seq: u64,
    reply: String,
    state: HeldState,
}

enum HeldState {
    /// A file change not applied yet (its payload).
    File(Bytes),
    /// Ready to route: its event, if it has one.
    Ready(Option<Logged>),
}

/// Entries read by the router and not yet acknowledged, in log order.
pub(crate) type Unacked = Vec<Held>;

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
            let messages = self
                .router
                .fetch()
                .max_messages(max - unacked.len())
                .messages()
                .await
                .map_err(|e| store_err("reading the change log", e))?;
            let mut messages = crate::Unstalled::new(messages, crate::FETCH_STALL);
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| store_err("reading the change log", e))?;
                let (Some(reply), Ok(info)) = (message.reply.clone(), message.info()) else {
                    continue;
                };
                let seq = info.stream_sequence;
                let state = match feed_of_subject(&message.subject) {
                    Some(feed) => HeldState::Ready(Some(Logged {
                        seq,
                        feed,
                        event: message.payload.clone(),
                    })),
                    None => HeldState::File(message.payload.clone()),
                };
                unacked.push(Held {
                    seq,
                    reply: reply.to_string(),
                    state,
                });
            }
        }
        // File changes are applied before their events are routed, in log
        // order; one that fails stops the read there (it is tried again
        // next time, and nothing after it is acknowledged before it).
        let mut read = LogRead::default();
        for held in unacked.iter_mut() {
            if let HeldState::File(payload) = &held.state {
                match self.files.route(held.seq, payload.clone()).await {
                    Ok(event) => {
                        held.state = HeldState::Ready(event.map(|event| Logged {
                            seq: held.seq,
                            feed: Feed::Data,
                            event,
                        }))
                    }
                    Err(e) if read.upto.is_none() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "applying a file change failed; retried on the next read");
                        break;
                    }
                }
            }
            if let HeldState::Ready(logged) = &held.state {
                read.entries.extend(logged.clone());
                read.upto = Some(held.seq);
            }
        }
        Ok(read)
    }

    async fn ack(&self, upto: u64) -> Result<(), StoreError> {
        let mut unacked = self.unacked.lock().await;
        let Some(pos) = unacked.iter().rposition(|h| h.seq <= upto) else {
            return Ok(());
        };
        // Acknowledge-all: the last one covers those before it. Waited for,
        // so the position is durable on return.
        let reply = unacked[pos].reply.clone();
        self.js
            .client()
            .request(reply, Bytes::from_static(b"+ACK"))
            .await
            .map_err(|e| store_err("acknowledging the change log", e))?;
        let before = unacked.first().map_or(upto, |h| h.seq);
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
        let subjects = format!("{}.log.>", self.prefix);
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
                    let (feed, event) = match feed_of_subject(&m.subject) {
                        Some(feed) => (feed, Some(m.payload)),
                        None => (Feed::Data, crate::files::event_of(m.payload)),
                    };
                    if let Some(event) = event {
                        out.push(Logged {
                            seq: m.sequence,
                            feed,
                            event,
                        });
                    }
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
                Some(feed)
            );
        }
        assert_eq!(feed_of_subject("wg.log.f.o.c.a"), None);
        assert_eq!(feed_of_subject("wg.log.f.o.c.j"), None);
    }
}
