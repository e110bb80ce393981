//! [`Leases`] on bucket `P_leases` (docs/STORAGE.md 4.7): one key per epoch,
//! `<name>.<epoch>`, won by a create-once write (exact on 2.9.10 at any
//! replica count); only the holder ever writes its epoch key after that.

use crate::records::nats_key;
use crate::{NatsStore, store_err};
use async_nats::jetstream::kv::{CreateErrorKind, Operation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmgrid_store::StoreError;
use wasmgrid_store::leases::{Grant, Leases};

/// Clock skew allowed between nodes: an epoch is taken over only this long
/// after its holder's own deadline.
pub const SKEW_MARGIN: Duration = Duration::from_secs(5);

/// The value of an epoch key.
#[derive(Debug, Serialize, Deserialize)]
struct Held {
    /// Which process holds it (for operators).
    node: String,
    /// Wall-clock milliseconds of the last grant or renewal.
    renewed_ms: u64,
    /// The TTL from then; 0: released.
    ttl_ms: u64,
}

/// Milliseconds since the epoch on this node's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn node_id() -> String {
    format!("pid-{}", std::process::id())
}

impl NatsStore {
    /// The newest epoch of lease `name` (0: none), read with message gets
    /// answered by the bucket's stream leader, never with a consumer: after
    /// a nats-server dies, 2.9 may place a new ephemeral consumer on the dead
    /// peer and time out (fixed upstream in nats-server PR #7165), and a lease
    /// that cannot be read stops the feed router and every job.
    ///
    /// The newest message under `<name>.*` names an epoch `e` (a create, a
    /// renewal, a release or the purge marker of an old epoch); every later
    /// epoch was created one after another and is never purged while it is
    /// among the newest two, so the newest is found by reading `e+1`, `e+2`,
    /// … until one is missing: usually two gets.
    async fn newest_epoch(&self, name: &str) -> Result<u64, StoreError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let filter = format!("{}{}.*", self.leases.prefix, nats_key(name)?);
        let last = match self
            .leases
            .stream
            .get_last_raw_message_by_subject(&filter)
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(0),
            Err(e) => return Err(store_err("reading a lease's newest epoch", e)),
        };
        let mut epoch: u64 = last
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "lease key {:?} does not end in an epoch number",
                    last.subject
                ))
            })?;
        while self.epoch_exists(name, epoch + 1).await? {
            epoch += 1;
        }
        Ok(epoch)
    }

    async fn epoch_exists(&self, name: &str, epoch: u64) -> Result<bool, StoreError> {
        let entry = self
            .leases
            .entry(nats_key(&format!("{name}/{epoch}"))?)
            .await
            .map_err(|e| store_err("reading a lease", e))?;
        Ok(entry.is_some_and(|e| e.operation == Operation::Put))
    }

    async fn held(&self, name: &str, epoch: u64) -> Result<Option<(Held, u64)>, StoreError> {
        let entry = self
            .leases
            .entry(nats_key(&format!("{name}/{epoch}"))?)
            .await
            .map_err(|e| store_err("reading a lease", e))?;
        Ok(entry.and_then(|e| {
            if e.operation != Operation::Put {
                return None;
            }
            serde_json::from_slice::<Held>(&e.value)
                .ok()
                .map(|h| (h, e.revision))
        }))
    }

    async fn write_epoch(
        &self,
        name: &str,
        epoch: u64,
        ttl: Duration,
        create: bool,
    ) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(&Held {
            node: node_id(),
            renewed_ms: now_ms(),
            ttl_ms: ttl.as_millis() as u64,
        })
        .map_err(|e| StoreError::Backend(format!("encoding a lease: {e}")))?;
        let key = nats_key(&format!("{name}/{epoch}"))?;
        if create {
            match self.leases.create(key, value.into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(store_err("taking a lease", e)),
            }
        } else {
            self.leases
                .put(key, value.into())
                .await
                .map_err(|e| store_err("renewing a lease", e))?;
            Ok(true)
        }
    }
}

#[async_trait::async_trait]
impl Leases for NatsStore {
    async fn acquire(&self, name: &str, ttl: Duration) -> Result<Option<Grant>, StoreError> {
        let start = Instant::now();
        nats_key(name)?;
        let newest = self.newest_epoch(name).await?;
        if newest > 0
            && let Some((held, _)) = self.held(name, newest).await?
        {
            let until = held
                .renewed_ms
                .saturating_add(held.ttl_ms)
                .saturating_add(SKEW_MARGIN.as_millis() as u64);
            if held.ttl_ms > 0 && now_ms() < until {
                return Ok(None);
            }
        }
        let epoch = newest + 1;
        if !self.write_epoch(name, epoch, ttl, true).await? {
            return Ok(None);
        }
        // The epoch before the previous one is of no use to anyone any more
        // (each acquire purges one, so at most the newest two remain).
        if newest >= 2
            && let Ok(key) = nats_key(&format!("{name}/{}", newest - 1))
        {
            let _ = self.leases.purge(key).await;
        }
        Ok(Some(Grant {
            name: name.to_string(),
            epoch,
            valid_until: start + ttl,
        }))
    }

    async fn renew(&self, grant: &Grant, ttl: Duration) -> Result<Option<Grant>, StoreError> {
        let start = Instant::now();
        if start >= grant.valid_until {
            return Ok(None);
        }
        if self.newest_epoch(&grant.name).await? != grant.epoch {
            return Ok(None);
        }
        self.write_epoch(&grant.name, grant.epoch, ttl, false)
            .await?;
        Ok(Some(Grant {
            valid_until: start + ttl,
            ..grant.clone()
        }))
    }

    async fn release(&self, grant: Grant) -> Result<(), StoreError> {
        if self.newest_epoch(&grant.name).await? == grant.epoch {
            self.write_epoch(&grant.name, grant.epoch, Duration::ZERO, false)
                .await?;
        }
        Ok(())
    }
}
