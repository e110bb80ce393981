//! Following topic and subscription records written by other nodes
//! ([`EventsConfig::follow_records`](super::EventsConfig::follow_records)):
//! one task watches the `Topics` and `Subscriptions` buckets and applies each
//! change to this node's topic table and subscription index, starting or
//! stopping delivery workers. A node's own writes come back through the watch
//! too; applying them again changes nothing.
//!
//! The node that deletes a subscription drops its queue; the others only stop
//! their workers. A subscription seen before its topic waits until the topic
//! arrives (the two buckets are watched separately, in no order between
//! them).

use super::{EventService, SubscriptionRecord, TopicRecord, TopicState, delivery, lock_err};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use wasmgrid_store::queues::SubId;
use wasmgrid_store::records::{Bucket, Change, Entry};

/// A watch's state between a `Reset` and the `Synced` after it: the keys the
/// fresh snapshot holds (the rest were deleted meanwhile).
#[derive(Default)]
struct Resync {
    active: bool,
    seen: HashSet<String>,
}

impl Resync {
    fn saw(&mut self, key: &str) {
        if self.active {
            self.seen.insert(key.to_string());
        }
    }
}

/// Runs until shutdown: watches both buckets and applies their changes.
pub(crate) async fn follow(svc: EventService) {
    let records = svc.inner.records.clone();
    let cancel = svc.inner.shutdown.clone();
    loop {
        let watches = async {
            let topics = records.watch(Bucket::Topics, "").await?;
            let subs = records.watch(Bucket::Subscriptions, "").await?;
            Ok::<_, wasmgrid_store::StoreError>((topics, subs))
        };
        let (mut topics, mut subs) = tokio::select! {
            w = watches => match w {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "watching topics and subscriptions failed; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = cancel.cancelled() => return,
                    }
                }
            },
            _ = cancel.cancelled() => return,
        };
        // Subscriptions whose topic this node has not seen yet, by key.
        let mut waiting: HashMap<String, SubscriptionRecord> = HashMap::new();
        let (mut topic_sync, mut sub_sync) = (Resync::default(), Resync::default());
        loop {
            tokio::select! {
                change = topics.next() => match change {
                    Some(Ok(change)) => {
                        on_topic(&svc, change, &mut topic_sync, &mut waiting).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the topic watch failed; starting it again");
                        break;
                    }
                    None => break,
                },
                change = subs.next() => match change {
                    Some(Ok(change)) => {
                        on_subscription(&svc, change, &mut sub_sync, &mut waiting).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the subscription watch failed; starting it again");
                        break;
                    }
                    None => break,
                },
                _ = cancel.cancelled() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

async fn on_topic(
    svc: &EventService,
    change: Change,
    sync: &mut Resync,
    waiting: &mut HashMap<String, SubscriptionRecord>,
) {
    match change {
        Change::Put(entry) => {
            sync.saw(&entry.key);
            match wasmgrid_store::records::decode::<TopicRecord>(Bucket::Topics, &entry) {
                Ok(record) => {
                    let name = record.name.clone();
                    svc.apply_topic(record);
                    let ready: Vec<String> = waiting
                        .keys()
                        .filter(|k| k.split_once('/').is_some_and(|(t, _)| t == name))
                        .cloned()
                        .collect();
                    for key in ready {
                        if let Some(sub) = waiting.remove(&key) {
                            apply_sub(svc, sub, waiting).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %entry.key, error = %e, "an unreadable topic record: ignored")
                }
            }
        }
        Change::Deleted { key, .. } => svc.forget_topic(&key),
        Change::Reset => {
            sync.active = true;
            sync.seen.clear();
        }
        Change::Synced => {
            if std::mem::take(&mut sync.active) {
                for name in svc.custom_topics() {
                    if !sync.seen.contains(&name) {
                        svc.forget_topic(&name);
                    }
                }
            }
        }
    }
}

async fn on_subscription(
    svc: &EventService,
    change: Change,
    sync: &mut Resync,
    waiting: &mut HashMap<String, SubscriptionRecord>,
) {
    match change {
        Change::Put(entry) => {
            sync.saw(&entry.key);
            if let Some(record) = decode_sub(&entry) {
                apply_sub(svc, record, waiting).await;
            }
        }
        Change::Deleted { key, .. } => {
            waiting.remove(&key);
            if let Some((topic, name)) = key.split_once('/') {
                svc.forget_subscription(topic, name);
            }
        }
        Change::Reset => {
            sync.active = true;
            sync.seen.clear();
        }
        Change::Synced => {
            if std::mem::take(&mut sync.active) {
                for (topic, name) in svc.subscription_keys() {
                    if !sync.seen.contains(&format!("{topic}/{name}")) {
                        svc.forget_subscription(&topic, &name);
                    }
                }
            }
        }
    }
}

fn decode_sub(entry: &Entry) -> Option<SubscriptionRecord> {
    match wasmgrid_store::records::decode::<SubscriptionRecord>(Bucket::Subscriptions, entry) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::error!(subscription = %entry.key, error = %e, "an unreadable subscription record: ignored");
            None
        }
    }
}

async fn apply_sub(
    svc: &EventService,
    record: SubscriptionRecord,
    waiting: &mut HashMap<String, SubscriptionRecord>,
) {
    let has_topic = svc
        .inner
        .topics
        .read()
        .is_ok_and(|t| t.contains_key(&record.topic));
    if !has_topic {
        waiting.insert(record.label(), record);
        return;
    }
    let depth = match svc.inner.queues.counts(SubId(record.id)).await {
        Ok(c) => c.depth() as i64,
        Err(_) => 0,
    };
    if let Err(e) = svc.apply_subscription(record, depth) {
        tracing::error!(error = %e, "applying a subscription from another node failed");
    }
}

impl EventService {
    /// Adds a topic another node created, or takes its new record (keys
    /// regenerated).
    fn apply_topic(&self, record: TopicRecord) {
        if let Ok(mut topics) = self.inner.topics.write() {
            match topics.get_mut(&record.name) {
                Some(t) => t.record = Some(record),
                None => {
                    topics.insert(record.name.clone(), TopicState::new(Some(record)));
                }
            }
        }
    }

    /// Drops a topic another node deleted, stopping its subscriptions' workers.
    fn forget_topic(&self, name: &str) {
        let removed = self.inner.topics.write().ok().and_then(|mut t| {
            let custom = t.get(name).is_some_and(|t| t.record.is_some());
            if custom { t.remove(name) } else { None }
        });
        if let Some(topic) = removed {
            for sub in topic.subs.values() {
                sub.cancel.cancel();
            }
        }
    }

    /// Installs a subscription another node created, or takes its replaced
    /// spec; starts its worker when deliveries run.
    fn apply_subscription(
        &self,
        record: SubscriptionRecord,
        depth: i64,
    ) -> Result<(), super::EventError> {
        let compiled = record.spec.filter.compile().map_err(|e| {
            super::EventError::Internal(format!(
                "subscription {} has an invalid filter: {e}",
                record.label()
            ))
        })?;
        let current = {
            let topics = self.inner.topics.read().map_err(|_| lock_err())?;
            topics.get(&record.topic).and_then(|t| {
                t.by_name
                    .get(&record.name)
                    .and_then(|id| t.subs.get(id))
                    .cloned()
            })
        };
        match current {
            Some(sub) if sub.id == record.id => {
                let same = sub
                    .record
                    .read()
                    .is_ok_and(|r| r.updated == record.updated && r.spec == record.spec);
                if same {
                    return Ok(());
                }
                {
                    let mut topics = self.inner.topics.write().map_err(|_| lock_err())?;
                    if let Some(t) = topics.get_mut(&record.topic) {
                        t.index.insert(record.id, compiled);
                    }
                }
                if let Ok(mut r) = sub.record.write() {
                    *r = std::sync::Arc::new(record);
                }
                sub.notify.notify_one();
                Ok(())
            }
            other => {
                // Deleted and created again meanwhile: a new id, a new queue.
                if other.is_some() {
                    self.forget_subscription(&record.topic, &record.name);
                }
                let sub = self.install(record, compiled, depth)?;
                if self.inner.started.load(std::sync::atomic::Ordering::SeqCst) {
                    delivery::spawn_worker(self.inner.clone(), sub);
                }
                Ok(())
            }
        }
    }

    /// Stops a subscription another node deleted (that node drops its queue).
    fn forget_subscription(&self, topic: &str, name: &str) {
        let removed = self.inner.topics.write().ok().and_then(|mut topics| {
            let t = topics.get_mut(topic)?;
            let id = t.by_name.remove(name)?;
            t.index.remove(id);
            t.subs.remove(&id)
        });
        if let Some(sub) = removed {
            sub.cancel.cancel();
            self.inner
                .metrics
                .queue_depth
                .remove(&wasmgrid_core::metrics::SubscriptionLabel {
                    subscription: format!("{topic}/{name}"),
                });
        }
    }

    /// The names of the custom topics this node knows.
    fn custom_topics(&self) -> Vec<String> {
        self.inner
            .topics
            .read()
            .map(|t| {
                t.iter()
                    .filter(|(_, t)| t.record.is_some())
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(topic, name)` of every subscription this node knows.
    fn subscription_keys(&self) -> Vec<(String, String)> {
        self.inner
            .topics
            .read()
            .map(|t| {
                t.iter()
                    .flat_map(|(topic, t)| {
                        t.by_name.keys().map(move |n| (topic.clone(), n.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
