//! The path prefixes the HTTP server serves itself, and how a route prefix
//! matches a path.
//!
//! What is served under these prefixes is the API's business (`api::router`);
//! the list sits at the bottom of the graph so that the node's assembly
//! (`app::App::open`) can hand it to the registry, which refuses wasi:http
//! route prefixes that overlap it, and the API's fallback can skip them,
//! without either importing the other. Keep it in step with `api::router`.

/// Path prefixes the server serves itself: never wasi:http route prefixes.
/// DESIGN.md's list, including the prefixes of features still to come
/// (`/openapi.json`, `/ui` for the dashboard, `/topics` for Event Grid's
/// namespace paths), so no route claims them before they arrive.
pub const RESERVED_PATHS: &[&str] = &[
    "/v1",
    "/http",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/ui",
    "/topics",
];

/// Whether `path` is `prefix` or lies under it (`/hello` serves `/hello` and
/// `/hello/x`, not `/hellox`; `/` serves everything).
pub fn route_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `path` belongs to the server itself (never served by a route).
pub fn is_reserved(path: &str) -> bool {
    RESERVED_PATHS.iter().any(|r| route_matches(r, path))
}
