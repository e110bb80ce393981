//! Always panics. On wasm32-wasip2 a panic prints its message to stderr and then
//! traps (`unreachable`), so the host reports a crash.

use wasmgrid_sdk::{Error, Input};

fn apply(input: Input) -> Result<String, Error> {
    panic!(
        "this algorithm always panics: it exists to test crash handling (input: {} bytes)",
        input.bytes().len()
    );
}

wasmgrid_sdk::algorithm!(apply);
