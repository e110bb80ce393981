//! ChangeLog: the system feeds (`system.data`, `system.algorithms`,
//! `system.jobs`) that the router moves into delivery queues
//! (docs/STORAGE.md, section 2.2).
//!
//! Entries are CloudEvents (structured JSON) numbered in append order, one
//! number per event. Data-file and version events are written by the
//! backend together with the change they describe; [`ChangeLog::append`] is
//! for events that belong to no record write (a job's end). One router per
//! installation reads after its acknowledged position, queues the events
//! (`DeliveryQueues::ingest_routed`) and so moves the position on.

use crate::StoreError;
use bytes::Bytes;

/// Routed entries kept for inspection (`GET /v1/events/outbox`): the newest
/// this many numbers; older routed ones are deleted. Unrouted entries are
/// never dropped.
pub const LOG_RETENTION: u64 = 100_000;

/// Which system topic an entry feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// `system.data`: file created / deleted.
    Data,
    /// `system.algorithms`: version deployed / deleted.
    Algorithms,
    /// `system.jobs`: job completed / failed / canceled.
    Jobs,
}

impl Feed {
    /// The feed of an event with CloudEvent `type` `ty`: `wasmgrid.algorithms.*`
    /// and `wasmgrid.jobs.*` have their own feeds, everything else is data.
    pub fn of_type(ty: &str) -> Feed {
        if ty.starts_with("wasmgrid.algorithms.") {
            Feed::Algorithms
        } else if ty.starts_with("wasmgrid.jobs.") {
            Feed::Jobs
        } else {
            Feed::Data
        }
    }

    /// The system topic this feed is routed to.
    pub fn topic(self) -> &'static str {
        match self {
            Feed::Data => "system.data",
            Feed::Algorithms => "system.algorithms",
            Feed::Jobs => "system.jobs",
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Its number: increasing in append order, one per event, never reused.
    pub seq: u64,
    /// The system topic it feeds.
    pub feed: Feed,
    /// The CloudEvent as structured JSON.
    pub event: Bytes,
}

/// What [`ChangeLog::read`] found after the router's position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    /// The entries, in log order.
    pub entries: Vec<Logged>,
    /// The position to acknowledge once they are routed: the number of the
    /// last entry read, past any unreadable stored record met on the way
    /// (skipped with an error in the log). `None`: nothing new.
    pub upto: Option<u64>,
}

/// The system feeds (docs/STORAGE.md 2.2).
///
/// Guarantees (both backends): numbers increase in append order; an entry
/// is durable when the append (or the write that carried it) returns;
/// routing is at least once (a router that crashes before acknowledging
/// reads the entries again, and queues them under the dedup id `log<seq>`,
/// so that within the duplicate window nothing is queued twice; the
/// embedded backend queues and acknowledges in one transaction, so it routes
/// exactly once); routed entries are kept up to [`LOG_RETENTION`], unrouted
/// ones always.
#[async_trait::async_trait]
pub trait ChangeLog: Send + Sync {
    /// Appends an event that is not part of a record write (a job's end) and
    /// returns its number; durable on return. `dedup` is the event's own
    /// identity (`<job id>/<kind>`): the cluster backend drops a second
    /// append with the same id within its duplicate window. The embedded
    /// backend does not deduplicate appends (a job end announced again after
    /// a crash is logged again, and consumers deduplicate by the event id).
    async fn append(&self, feed: Feed, dedup: &str, event: Bytes) -> Result<u64, StoreError>;

    /// The next entries after the router's acknowledged position, in log
    /// order: whole stored records, stopping once `max` events are reached
    /// (so slightly more may come back). The same entries come back until
    /// they are acknowledged (up to [`LogRead::upto`]).
    async fn read(&self, max: usize) -> Result<LogRead, StoreError>;

    /// Everything up to `upto` is routed and is not read again; durable on
    /// return. Routed entries past the retention are pruned afterwards.
    async fn ack(&self, upto: u64) -> Result<(), StoreError>;

    /// Admin inspection (`GET /v1/events/outbox?after=&limit=`): up to
    /// `limit` retained entries numbered after `after`, routed or not.
    async fn inspect(&self, after: u64, limit: usize) -> Result<Vec<Logged>, StoreError>;
}
