//! DeliveryQueues: one durable queue per subscription, dead letters and the
//! `(source, id)` deduplication window (docs/STORAGE.md, section 2.4).
