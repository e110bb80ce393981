//! Writes N lines of 100 bytes (newline included) to stdout and N to stderr,
//! then returns `wrote N lines`; N is text (`1000`) or JSON (`1000`).
//!
//! It uses `println!`/`eprintln!`, which panic if a write fails: when the host
//! caps captured output, it must drop the excess silently for this to succeed.

use wasmgrid_sdk::{Error, Input};

/// Length of every line, including the newline.
const LINE_LEN: usize = 100;

fn apply(input: Input) -> Result<String, Error> {
    let n = whole_number(&input)?;
    for i in 0..n {
        println!("{}", line("stdout", i));
        eprintln!("{}", line("stderr", i));
    }
    Ok(format!("wrote {n} lines"))
}

/// `chatty stdout line 0000000042 xxxx…`, `LINE_LEN - 1` bytes long.
fn line(stream: &str, i: u64) -> String {
    let mut line = format!("chatty {stream} line {i:010} ");
    let fill = (LINE_LEN - 1).saturating_sub(line.len());
    line.extend(std::iter::repeat_n('x', fill));
    line
}

/// A non-negative integer given as text (`1000`), a JSON number (`1000`) or a
/// JSON string (`"1000"`).
fn whole_number(input: &Input) -> Result<u64, Error> {
    let text = input.text()?.trim();
    let text = if input.is_json() {
        text.trim_matches('"')
    } else {
        text
    };
    text.parse().map_err(|_| {
        Error::invalid_input(format!(
            "expected a whole number of lines, e.g. 1000; got {text:?}"
        ))
    })
}

wasmgrid_sdk::algorithm!(apply);
