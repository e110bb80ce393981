//! Leases: at most one holder per epoch, for singletons (sweeps, the feed
//! router, job coordinators, schedules) (docs/STORAGE.md, section 2.7).
