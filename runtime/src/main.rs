//! The `wasmgrid` command.

fn main() -> std::process::ExitCode {
    wasmgrid::cli::main()
}
