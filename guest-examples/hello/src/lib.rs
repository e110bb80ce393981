//! Greets its input: text `Ada` (or the JSON string `"Ada"`) gives
//! `Hello, Ada!` as text/plain, and prints `hello: greeting Ada` to stdout.

use wasmgrid_sdk::{Error, Input, Output};

fn apply(input: Input) -> Result<Output, Error> {
    let name = if input.is_json() {
        input.json::<String>().map_err(|_| {
            Error::invalid_input("hello expects a name: plain text or a JSON string")
        })?
    } else {
        input.text()?.trim().to_owned()
    };
    println!("hello: greeting {name}");
    Ok(Output::text(format!("Hello, {name}!")))
}

wasmgrid_sdk::algorithm!(apply);
