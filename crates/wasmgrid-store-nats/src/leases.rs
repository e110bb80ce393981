//! [`Leases`] on bucket `P_leases` (docs/STORAGE.md 4.7): one key per epoch,
//! `<name>.<epoch>`, won by a create-once write (exact on 2.9.10 at any
//! replica count); only the holder ever writes its epoch key after that.

use crate::records::{live_keys, nats_key};
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
    /// The epochs of lease `name` that exist, highest last.
    async fn epochs(&self, name: &str) -> Result<Vec<u64>, StoreError> {
        let keys = live_keys(&self.leases, &self.js.client(), &format!("{name}/")).await?;
        let mut epochs: Vec<u64> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(name)?.strip_prefix('/')?.parse().ok())
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
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
        let epochs = self.epochs(name).await?;
        let newest = epochs.last().copied().unwrap_or(0);
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
        // Epochs before the previous one are of no use to anyone any more.
        for old in epochs.iter().filter(|e| **e + 1 < newest) {
            if let Ok(key) = nats_key(&format!("{name}/{old}")) {
                let _ = self.leases.purge(key).await;
            }
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
        let newest = self.epochs(&grant.name).await?.last().copied().unwrap_or(0);
        if newest != grant.epoch {
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
        let newest = self.epochs(&grant.name).await?.last().copied().unwrap_or(0);
        if newest == grant.epoch {
            self.write_epoch(&grant.name, grant.epoch, Duration::ZERO, false)
                .await?;
        }
        Ok(())
    }
}
