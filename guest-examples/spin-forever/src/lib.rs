//! Never returns: spins the CPU until the host's call timeout stops it.

use std::hint::black_box;

use wasmgrid_sdk::{Error, Input};

fn apply(_input: Input) -> Result<String, Error> {
    let mut counter: u64 = 0;
    loop {
        // `black_box` keeps the optimiser from proving the loop useless.
        counter = black_box(counter.wrapping_add(1));
    }
}

wasmgrid_sdk::algorithm!(apply);
