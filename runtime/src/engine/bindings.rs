//! Host-side bindings of the `wasmgrid:algorithm` WIT package (the one
//! `bindgen!` of the host; private to the engine).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "algorithm",
    exports: { default: async },
});

pub use exports::wasmgrid::algorithm::handler::{Error as GuestError, Event, Payload};

/// Adds the wasmgrid host interfaces to the linker. The `types` interface holds
/// only type definitions; an empty instance satisfies a guest's import of it.
pub fn add_to_linker<T>(linker: &mut wasmtime::component::Linker<T>) -> wasmtime::Result<()> {
    linker.instance("wasmgrid:algorithm/types@0.1.0")?;
    Ok(())
}
