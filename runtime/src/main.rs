//! The `wasmgrid` command.

/// mimalloc instead of the system allocator: a request allocates ~120 small
/// objects across wasmtime, hyper and the API, and glibc's malloc/free took
/// ~20% of a request's instructions (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wasmgrid::cli::main()
}
