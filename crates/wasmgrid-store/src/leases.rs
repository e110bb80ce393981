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

/// A lease kept renewed in the background by [`hold`]. Dropping it stops the
/// renewals and releases the lease, as [`HeldLease::release`] does without
/// waiting.
pub struct HeldLease {
    grant: Grant,
    lost: tokio_util::sync::CancellationToken,
    stop: tokio_util::sync::CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl HeldLease {
    /// The grant as first won (its epoch does not change while held).
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Cancelled the moment the lease is lost: a renewal was refused, or
    /// renewals kept failing until the grant ran out. Stop the leased work
    /// at once.
    pub fn lost(&self) -> tokio_util::sync::CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and gives the lease up, so another holder may take it
    /// at once.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Acquires lease `name` and keeps it renewed every third of `ttl` on a task
/// of its own; `None` while another holder has it. A renewal that fails (the
/// store briefly unreachable, a leader election) is retried every second
/// for as long as the grant lasts: only a refused renewal or a grant that
/// ran out loses the lease. Call from a tokio runtime.
pub async fn hold(
    leases: std::sync::Arc<dyn Leases>,
    name: &str,
    ttl: Duration,
) -> Result<Option<HeldLease>, StoreError> {
    let Some(grant) = leases.acquire(name, ttl).await? else {
        return Ok(None);
    };
    let lost = tokio_util::sync::CancellationToken::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let renewer = tokio::spawn(renew_until_stopped(
        leases,
        grant.clone(),
        ttl,
        lost.clone(),
        stop.clone(),
    ));
    Ok(Some(HeldLease {
        grant,
        lost,
        stop,
        renewer: Some(renewer),
    }))
}

async fn renew_until_stopped(
    leases: std::sync::Arc<dyn Leases>,
    mut grant: Grant,
    ttl: Duration,
    lost: tokio_util::sync::CancellationToken,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut wait = ttl / 3;
    loop {
        let wake = Instant::now() + wait;
        tokio::select! {
            _ = tokio::time::sleep_until(wake.min(grant.valid_until).into()) => {}
            _ = stop.cancelled() => {
                if let Err(e) = leases.release(grant).await {
                    tracing::warn!(error = %e, "releasing a lease failed; another holder takes it when it runs out");
                }
                return;
            }
        }
        if Instant::now() >= grant.valid_until {
            tracing::warn!(lease = %grant.name, "a lease ran out before it could be renewed; stopping its work");
            lost.cancel();
            return;
        }
        match leases.renew(&grant, ttl).await {
            Ok(Some(renewed)) => {
                grant = renewed;
                wait = ttl / 3;
            }
            Ok(None) => {
                tracing::warn!(lease = %grant.name, "lost a lease; another holder takes over");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %grant.name, error = %e, "renewing a lease failed; retrying");
                wait = Duration::from_secs(1).min(ttl / 3);
            }
        }
    }
}
