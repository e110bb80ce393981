//! ChangeLog: the system feeds (`system.data`, `system.algorithms`,
//! `system.jobs`) that the router moves into delivery queues
//! (docs/STORAGE.md, section 2.2).
