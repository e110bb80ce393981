//! Returns its input unchanged (same content type, same bytes): the smallest
//! possible algorithm, used to measure the host's per-call overhead.

use wasmgrid_sdk::{Error, Input};

fn apply(input: Input) -> Result<Input, Error> {
    Ok(input)
}

wasmgrid_sdk::algorithm!(apply);
