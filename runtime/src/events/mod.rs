//! Events: CloudEvents 1.0 routing support.
//!
//! [`filter`] implements Azure Event Grid subscription filtering (event
//! types, subject prefix/suffix, advanced filters) over structured-mode
//! CloudEvents held as `serde_json::Value`, plus a [`filter::SubscriptionIndex`]
//! that finds the subscriptions matching an event without scanning them all.

pub mod filter;
