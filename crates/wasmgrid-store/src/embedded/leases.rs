//! [`Leases`] in one process: every lease is granted at once. The process
//! holds the data directory's lock, so it is the only node; singletons inside
//! it are kept single by their owners (one task each), as before the contract.

use super::EmbeddedStore;
use crate::StoreError;
use crate::leases::{Grant, Leases};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Epochs handed out by this process: increasing, never repeated within it.
static EPOCH: AtomicU64 = AtomicU64::new(0);

#[async_trait::async_trait]
impl Leases for EmbeddedStore {
    async fn acquire(&self, name: &str, ttl: Duration) -> Result<Option<Grant>, StoreError> {
        Ok(Some(Grant {
            name: name.to_string(),
            epoch: EPOCH.fetch_add(1, Ordering::Relaxed) + 1,
            valid_until: Instant::now() + ttl,
        }))
    }

    async fn renew(&self, grant: &Grant, ttl: Duration) -> Result<Option<Grant>, StoreError> {
        Ok(Some(Grant {
            valid_until: Instant::now() + ttl,
            ..grant.clone()
        }))
    }

    async fn release(&self, _grant: Grant) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_are_granted_with_increasing_epochs_and_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let ttl = Duration::from_secs(30);
        let before = Instant::now();
        let a = s.acquire("sweep/blobs", ttl).await.unwrap().unwrap();
        assert_eq!(a.name, "sweep/blobs");
        assert!(a.valid_until >= before + ttl);
        let b = s.acquire("sweep/blobs", ttl).await.unwrap().unwrap();
        assert!(b.epoch > a.epoch, "a new grant is a new epoch");
        let renewed = s.renew(&b, ttl).await.unwrap().unwrap();
        assert_eq!((renewed.epoch, &renewed.name), (b.epoch, &b.name));
        assert!(renewed.valid_until >= b.valid_until);
        s.release(renewed).await.unwrap();
        let c = s.acquire("sweep/blobs", ttl).await.unwrap().unwrap();
        assert!(c.epoch > b.epoch);
    }
}
