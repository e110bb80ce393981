//! Allocates memory without end, 1 MiB at a time, writing to every byte so the
//! pages are really used, until the host's memory cap stops it.
//!
//! When the host refuses to grow linear memory, the allocator fails and Rust
//! aborts ("memory allocation of 1048576 bytes failed" on stderr, then a trap),
//! unless the host already trapped in its resource limiter.

use std::hint::black_box;

use wasmgrid_sdk::{Error, Input};

const MIB: usize = 1 << 20;

fn apply(_input: Input) -> Result<String, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero fill: every byte is written (a zeroed allocation could be
        // satisfied by fresh, untouched pages).
        let chunk = vec![0xA5_u8; MIB];
        hoard.push(black_box(chunk));
    }
}

wasmgrid_sdk::algorithm!(apply);
