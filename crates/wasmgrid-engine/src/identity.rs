//! Who a running guest is, and the hop count it carries into the events it
//! causes: plain data that the engine hands to host calls and the data layer
//! checks grants against and stamps on change events, so neither depends on
//! the other.

/// The algorithm version a call runs, as host calls see it.
#[derive(Debug, Clone, Default)]
pub struct GuestIdentity {
    /// Owner.
    pub owner: String,
    /// Algorithm name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Capability grants from deploy time.
    pub grants: Vec<String>,
    /// Memory cap in bytes (the largest file the guest can be handed).
    pub memory_bytes: u64,
    /// The hop count ([`HOPS_ATTRIBUTE`]) of the events this call causes:
    /// 0 outside event deliveries, else one more than the delivered event's.
    pub hops: u32,
}

pub use wasmgrid_cloudevents::{HOPS_ATTRIBUTE, parse_hops};
