//! The one wire format for errors: `{"error": {"message", "error_type"}}` with the
//! status codes of DESIGN.md. Every library error converts here, in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wasmgrid_core::auth::AuthError;
use wasmgrid_core::names::InvalidName;
use wasmgrid_core::registry::RegistryError;
use wasmgrid_engine::InvokeError;
use wasmgrid_engine::error_kind::ErrorKind;
use wasmgrid_store::StoreError;

/// An API error: status, `error_type` and a message naming the problem and fix.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable class, sent as `error_type`.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
    /// Seconds for a `Retry-After` header (with `Overloaded` and `Unavailable`).
    pub retry_after: Option<u32>,
}

/// The HTTP status of each class of failure (DESIGN.md's table): the one place
/// the two are paired. `AuthError` answers 403 here; a missing or unknown key
/// is [`ApiError::unauthenticated`] (401).
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InputError | ErrorKind::AlgorithmError => StatusCode::BAD_REQUEST,
        ErrorKind::AuthError => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::VersionExists | ErrorKind::AlreadyExists | ErrorKind::Conflict => {
            StatusCode::CONFLICT
        }
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TransientAlgorithmError | ErrorKind::Overloaded | ErrorKind::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::TimeoutError => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::OutOfMemoryError
        | ErrorKind::StackOverflowError
        | ErrorKind::CrashError
        | ErrorKind::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error of class `kind` with its usual status (and `Retry-After` for
    /// `Overloaded` and `Unavailable`).
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status: status_of(kind),
            kind,
            message: message.into(),
            retry_after: matches!(kind, ErrorKind::Overloaded | ErrorKind::Unavailable)
                .then_some(1),
        }
    }
    /// An error of class `kind` answered with another status than its usual
    /// one (405 or 416 `InputError`, for example).
    pub fn with_status(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status,
            ..Self::of(kind, message)
        }
    }
    /// 400 `InputError`.
    pub fn input(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::InputError, message)
    }
    /// 404 `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::NotFound, message)
    }
    /// 413 `PayloadTooLarge`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::PayloadTooLarge, message)
    }
    /// 401 `AuthError`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::with_status(StatusCode::UNAUTHORIZED, ErrorKind::AuthError, message)
    }
    /// 403 `AuthError`: a valid key that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::AuthError, message)
    }
    /// 500 `InternalError`: a host failure, not the caller's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::InternalError, message)
    }
    /// 503 `Overloaded` with `Retry-After`.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Overloaded, message)
    }
}

impl ApiError {
    /// Whether this is the algorithm's own failure (what Algorithmia's
    /// convention answers with 200) rather than the request's or the server's.
    pub fn is_algorithm_outcome(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::AlgorithmError
                | ErrorKind::TransientAlgorithmError
                | ErrorKind::TimeoutError
                | ErrorKind::OutOfMemoryError
                | ErrorKind::StackOverflowError
                | ErrorKind::CrashError
        )
    }

    /// The error in Algorithmia's convention: HTTP 200 with the error object, the
    /// real status in `X-Wasmgrid-Status` (see [`wasmgrid_core::auth::Compat`]).
    pub fn into_algorithmia_response(self) -> Response {
        let status = self.status;
        let mut resp = self.into_response();
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert("x-wasmgrid-status", HeaderValue::from(status.as_u16()));
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"message": self.message, "error_type": self.kind.as_str()}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(m) => Self::unauthenticated(m),
            AuthError::Forbidden(m) => Self::forbidden(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage error");
        match e {
            StoreError::Conflict { .. } | StoreError::Changed { .. } => {
                Self::of(ErrorKind::Conflict, e.to_string())
            }
            StoreError::Exists { .. } => Self::of(ErrorKind::AlreadyExists, e.to_string()),
            StoreError::Unavailable(_) => Self::of(ErrorKind::Unavailable, e.to_string()),
            StoreError::TooLarge { .. } => Self::of(ErrorKind::PayloadTooLarge, e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<InvalidName> for ApiError {
    fn from(e: InvalidName) -> Self {
        Self::input(e.0)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(m) => Self::input(m),
            RegistryError::InvalidComponent(c) => Self::input(c.0),
            RegistryError::NotFound(m) => Self::not_found(m),
            RegistryError::VersionExists(m) => Self::of(ErrorKind::VersionExists, m),
            RegistryError::Store(s) => s.into(),
            RegistryError::Internal(m) => {
                tracing::error!(error = %m, "registry error");
                Self::internal(m)
            }
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        if let InvokeError::Host(_) = e {
            tracing::error!(error = %e, "host failure during invocation");
        }
        Self::of(e.kind(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN.md's table, as the wire sees it.
    #[test]
    fn each_kind_keeps_its_wire_name_and_status() {
        let table = [
            (ErrorKind::InputError, "InputError", 400),
            (ErrorKind::AuthError, "AuthError", 403),
            (ErrorKind::NotFound, "NotFound", 404),
            (ErrorKind::VersionExists, "VersionExists", 409),
            (ErrorKind::AlreadyExists, "AlreadyExists", 409),
            (ErrorKind::Conflict, "Conflict", 409),
            (ErrorKind::PayloadTooLarge, "PayloadTooLarge", 413),
            (ErrorKind::AlgorithmError, "AlgorithmError", 400),
            (
                ErrorKind::TransientAlgorithmError,
                "TransientAlgorithmError",
                503,
            ),
            (ErrorKind::TimeoutError, "TimeoutError", 504),
            (ErrorKind::OutOfMemoryError, "OutOfMemoryError", 500),
            (ErrorKind::StackOverflowError, "StackOverflowError", 500),
            (ErrorKind::CrashError, "CrashError", 500),
            (ErrorKind::Overloaded, "Overloaded", 503),
            (ErrorKind::Unavailable, "Unavailable", 503),
            (ErrorKind::InternalError, "InternalError", 500),
        ];
        for (kind, name, status) in table {
            let e = ApiError::of(kind, "m");
            assert_eq!((kind.as_str(), e.status.as_u16()), (name, status));
            assert_eq!(
                e.retry_after.is_some(),
                matches!(kind, ErrorKind::Overloaded | ErrorKind::Unavailable)
            );
        }
        assert_eq!(
            ApiError::unauthenticated("m").status,
            StatusCode::UNAUTHORIZED
        );
    }
}
