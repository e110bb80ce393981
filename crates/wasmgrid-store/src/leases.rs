//! Leases: at most one holder per epoch, for singletons (sweeps, the feed
//! router, job coordinators, schedules) (docs/STORAGE.md, section 2.7).
//!
//! Names: `feed/router`, `sweep/temp`, `sweep/blobs`, `sweep/repair`,
//! `job/<id>`, later `schedule/<owner>/<name>`, `flow/<id>`. A holder stops
//! acting before [`Grant::valid_until`] and renews well before it (TTL 30 s,
//! renewed every 10 s); every leased task is also safe to run twice at once,
//! since two holders can overlap when clocks jump by more than the margin.

use crate::StoreError;
use std::time::{Duration, Instant};

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The lease's name.
    pub name: String,
    /// Won once: epochs of one name increase, and no two holders share one.
    /// Leased work writes it into the records it changes.
    pub epoch: u64,
    /// Stop acting at this instant unless renewed.
    pub valid_until: Instant,
}

/// Singletons across the installation.
#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// The lease if free or expired (a new, higher epoch); `None` while another
    /// holder has it.
    async fn acquire(&self, name: &str, ttl: Duration) -> Result<Option<Grant>, StoreError>;
    /// Extends a held lease by its TTL from now; `None`: it was lost (stop the
    /// work at once).
    async fn renew(&self, grant: &Grant, ttl: Duration) -> Result<Option<Grant>, StoreError>;
    /// Gives the lease up, so another holder may take it at once.
    async fn release(&self, grant: Grant) -> Result<(), StoreError>;
}
