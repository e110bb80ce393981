//! Sleeps for the given number of milliseconds (text `250` or JSON `250`) and
//! returns `slept 250 ms`. `std::thread::sleep` waits on a `wasi:clocks`
//! pollable, so the host is free to run other work meanwhile.

use std::time::Duration;

use wasmgrid_sdk::{Error, Input};

fn apply(input: Input) -> Result<String, Error> {
    let ms = whole_number(&input)?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok(format!("slept {ms} ms"))
}

/// A non-negative integer given as text (`250`), a JSON number (`250`) or a JSON
/// string (`"250"`).
fn whole_number(input: &Input) -> Result<u64, Error> {
    let text = input.text()?.trim();
    let text = if input.is_json() {
        text.trim_matches('"')
    } else {
        text
    };
    text.parse().map_err(|_| {
        Error::invalid_input(format!(
            "expected a whole number of milliseconds, e.g. 250; got {text:?}"
        ))
    })
}

wasmgrid_sdk::algorithm!(apply);
