//! A plain WASI command (`wasi:cli/command` world), not a wasmgrid algorithm: it
//! does not export `wasmgrid:algorithm/handler`, so deploying it must fail.

fn main() {
    println!("not-an-algorithm: I am a wasi:cli/command, not a wasmgrid algorithm");
}
