//! The classes of failure the API reports as `error_type` (DESIGN.md's table).
//!
//! Library errors say which class they are ([`ErrorKind`]), and the wire string
//! comes from [`ErrorKind::as_str`] alone, so jobs, events and metrics record
//! the same strings the API answers with. The HTTP status of each class is the
//! API's business (`api::error`).

/// A class of failure; its name is the wire `error_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A malformed request, invalid component, bad filter or version spec.
    InputError,
    /// A missing or unknown key, or a key that may not do this.
    AuthError,
    /// No such algorithm, version, file, topic, subscription or job.
    NotFound,
    /// The version number was published before.
    VersionExists,
    /// The collection, topic or subscription exists already (or is not empty).
    AlreadyExists,
    /// A concurrent write changed the record first.
    Conflict,
    /// Above the limit for that endpoint.
    PayloadTooLarge,
    /// The guest returned `invalid-input` or `permanent`.
    AlgorithmError,
    /// The guest returned `transient`.
    TransientAlgorithmError,
    /// The call passed its timeout.
    TimeoutError,
    /// The guest passed its memory cap.
    OutOfMemoryError,
    /// The guest overflowed its stack.
    StackOverflowError,
    /// Any other trap.
    CrashError,
    /// No instance slot or concurrency permit free.
    Overloaded,
    /// The store or the cluster backend cannot take the write now (retry).
    Unavailable,
    /// A host failure, not the caller's fault.
    InternalError,
}

impl ErrorKind {
    /// The wire `error_type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InputError => "InputError",
            ErrorKind::AuthError => "AuthError",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::VersionExists => "VersionExists",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::PayloadTooLarge => "PayloadTooLarge",
            ErrorKind::AlgorithmError => "AlgorithmError",
            ErrorKind::TransientAlgorithmError => "TransientAlgorithmError",
            ErrorKind::TimeoutError => "TimeoutError",
            ErrorKind::OutOfMemoryError => "OutOfMemoryError",
            ErrorKind::StackOverflowError => "StackOverflowError",
            ErrorKind::CrashError => "CrashError",
            ErrorKind::Overloaded => "Overloaded",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::InternalError => "InternalError",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
