//! Following topic and subscription records written by other nodes
//! ([`EventsConfig::follow_records`](super::EventsConfig::follow_records)):
//! the `Topics` and `Subscriptions` buckets are followed
//! ([`wasmgrid_store::records::follow`]) and each change is applied to this
//! node's topic table and subscription index, starting or stopping delivery
//! workers. A node's own writes come back through the watch too; applying
//! them again changes nothing.
//!
//! The node that deletes a subscription drops its queue; the others only stop
//! their workers. A subscription seen before its topic waits until the topic
//! arrives (the two buckets are watched separately, in no order between
//! them).

use super::{EventService, SubscriptionRecord, TopicRecord, TopicState, delivery, lock_err};
use std::collections::HashMap;
use std::sync::Mutex;
use wasmgrid_store::queues::SubId;
use wasmgrid_store::records::{Bucket, Followed, follow as follow_bucket};

/// Subscriptions whose topic this node has not seen yet, by `topic/name`.
type Waiting = Mutex<HashMap<String, SubscriptionRecord>>;

/// Runs until shutdown: follows both buckets and applies their changes.
pub(crate) async fn follow(svc: EventService) {
    let records = svc.inner.records.clone();
    let shutdown = svc.inner.shutdown.clone();
    let waiting = Waiting::default();
    tokio::join!(
        follow_bucket(
            &*records,
            Bucket::Topics,
            "",
            shutdown.cancelled(),
            |change| { on_topic(&svc, change, &waiting) }
        ),
        follow_bucket(
            &*records,
            Bucket::Subscriptions,
            "",
            shutdown.cancelled(),
            |change| { on_subscription(&svc, change, &waiting) }
        ),
    );
}

fn on_topic(svc: &EventService, change: Followed<'_>, waiting: &Waiting) {
    match change {
        Followed::Put(entry) => {
            match wasmgrid_store::records::decode::<TopicRecord>(Bucket::Topics, entry) {
                Ok(record) => {
                    let prefix = format!("{}/", record.name);
                    svc.apply_topic(record);
                    let ready: Vec<SubscriptionRecord> = match waiting.lock() {
                        Ok(mut w) => {
                            let keys: Vec<String> = w
                                .keys()
                                .filter(|k| k.starts_with(&prefix))
                                .cloned()
                                .collect();
                            keys.iter().filter_map(|k| w.remove(k)).collect()
                        }
                        Err(_) => Vec::new(),
                    };
                    for sub in ready {
                        apply_sub(svc, sub, waiting);
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %entry.key, error = %e, "an unreadable topic record: ignored")
                }
            }
        }
        Followed::Deleted(name) => svc.forget_topic(name),
        Followed::Resynced(seen) => {
            for name in svc.custom_topics() {
                if !seen.contains(&name) {
                    svc.forget_topic(&name);
                }
            }
        }
    }
}

fn on_subscription(svc: &EventService, change: Followed<'_>, waiting: &Waiting) {
    match change {
        Followed::Put(entry) => {
            match wasmgrid_store::records::decode::<SubscriptionRecord>(
                Bucket::Subscriptions,
                entry,
            ) {
                Ok(record) => apply_sub(svc, record, waiting),
                Err(e) => {
                    tracing::error!(subscription = %entry.key, error = %e, "an unreadable subscription record: ignored")
                }
            }
        }
        Followed::Deleted(key) => {
            if let Ok(mut w) = waiting.lock() {
                w.remove(key);
            }
            if let Some((topic, name)) = key.split_once('/') {
                svc.forget_subscription(topic, name);
            }
        }
        Followed::Resynced(seen) => {
            for (topic, name) in svc.subscription_keys() {
                if !seen.contains(&format!("{topic}/{name}")) {
                    svc.forget_subscription(&topic, &name);
                }
            }
        }
    }
}

fn apply_sub(svc: &EventService, record: SubscriptionRecord, waiting: &Waiting) {
    let has_topic = svc
        .inner
        .topics
        .read()
        .is_ok_and(|t| t.contains_key(&record.topic));
    if !has_topic {
        if let Ok(mut w) = waiting.lock() {
            w.insert(record.label(), record);
        }
        return;
    }
    let id = record.id;
    match svc.apply_subscription(record) {
        // Its queue's depth, read off the watch's path (the gauge is this
        // node's view; ingest and deliveries move it from here).
        Ok(Some(depth)) => {
            let queues = svc.inner.queues.clone();
            tokio::spawn(async move {
                if let Ok(c) = queues.counts(SubId(id)).await {
                    depth.set(c.depth() as i64);
                }
            });
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "applying a subscription from another node failed"),
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
    /// spec; starts its worker when deliveries run. Returns the depth gauge
    /// of one it installed (to be set from its queue).
    fn apply_subscription(
        &self,
        record: SubscriptionRecord,
    ) -> Result<Option<prometheus_client::metrics::gauge::Gauge>, super::EventError> {
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
                    return Ok(None);
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
                Ok(None)
            }
            other => {
                // Deleted and created again meanwhile: a new id, a new queue.
                if other.is_some() {
                    self.forget_subscription(&record.topic, &record.name);
                }
                let sub = self.install(record, compiled, 0)?;
                let depth = sub.depth.clone();
                if self.inner.started.load(std::sync::atomic::Ordering::SeqCst) {
                    delivery::spawn_worker(self.inner.clone(), sub);
                }
                Ok(Some(depth))
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
