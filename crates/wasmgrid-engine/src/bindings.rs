//! Host-side bindings of the `wasmgrid:algorithm` WIT package (the one
//! `bindgen!` of the host; private to the engine).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "algorithm",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": super::host::KvBucket,
    },
});

pub use exports::wasmgrid::algorithm::handler::{Error as GuestError, Event, Payload};
