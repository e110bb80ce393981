//! Recurses without end until the stack overflows.
//!
//! Rust on wasm32 has two stacks, and which one overflows decides the trap:
//!
//! * Input anything but `buffer` (the default): frames hold only scalars, so the
//!   engine's wasm call stack runs out first (Wasmtime's `max_wasm_stack`); the
//!   trap is "call stack exhausted" (`Trap::StackOverflow`).
//! * Input `buffer`: every frame also keeps a 4 KiB buffer on the *linear-memory*
//!   stack (1 MiB, placed at the bottom of memory), which runs out first; the
//!   stack pointer wraps below address 0 and the trap is "out of bounds memory
//!   access", indistinguishable from any other wild access.

use std::hint::black_box;

use wasmgrid_sdk::{Error, Input};

fn apply(input: Input) -> Result<String, Error> {
    let depth = if input.text()?.trim() == "buffer" {
        recurse_with_buffer(0)
    } else {
        recurse(0)
    };
    Ok(format!(
        "returned from depth {depth}, which should be impossible"
    ))
}

/// Non-tail recursion: the result is combined after the call, with an operation
/// LLVM cannot turn into an accumulator loop; `black_box` hides the depth.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)).rotate_left(1) ^ depth
}

/// Like [`recurse`], plus a 4 KiB buffer per frame that is live across the call.
#[inline(never)]
fn recurse_with_buffer(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let mut buf = [0u8; 4096];
    let slot = (depth % 4096) as usize;
    buf[slot] = depth as u8;
    // The optimiser must assume `black_box` reads and writes the whole buffer.
    black_box(&mut buf);
    recurse_with_buffer(black_box(depth + 1)).rotate_left(1) ^ u64::from(buf[slot])
}

wasmgrid_sdk::algorithm!(apply);
