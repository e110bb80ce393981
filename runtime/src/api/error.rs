//! The one wire format for errors: `{"error": {"message", "error_type"}}` with the
//! status codes of DESIGN.md. Every library error converts here, in one place.

use crate::auth::AuthError;
use crate::engine::{GuestErrorKind, InvokeError};
use crate::names::InvalidName;
use crate::registry::RegistryError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API error: status, `error_type` and a message naming the problem and fix.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable class (`InputError`, `NotFound`, ...).
    pub error_type: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Seconds for a `Retry-After` header (with `Overloaded`).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400 `InputError`.
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InputError", message)
    }
    /// 404 `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
    /// 413 `PayloadTooLarge`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", message)
    }
    /// 401 `AuthError`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AuthError", message)
    }
    /// 403 `AuthError`: a valid key that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AuthError", message)
    }
    /// 500 `InternalError`: a host failure, not the caller's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
    /// 503 `Overloaded` with `Retry-After`.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "Overloaded", message)
        }
    }
}

impl ApiError {
    /// Whether this is the algorithm's own failure (what Algorithmia's
    /// convention answers with 200) rather than the request's or the server's.
    pub fn is_algorithm_outcome(&self) -> bool {
        matches!(
            self.error_type,
            "AlgorithmError"
                | "TransientAlgorithmError"
                | "TimeoutError"
                | "OutOfMemoryError"
                | "StackOverflowError"
                | "CrashError"
        )
    }

    /// The error in Algorithmia's convention: HTTP 200 with the error object, the
    /// real status in `X-Wasmgrid-Status` (see [`crate::auth::Compat`]).
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
        let body =
            serde_json::json!({"error": {"message": self.message, "error_type": self.error_type}});
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
            StoreError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
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
            RegistryError::VersionExists(m) => Self::new(StatusCode::CONFLICT, "VersionExists", m),
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
        let message = e.to_string();
        match e {
            InvokeError::Guest {
                kind: GuestErrorKind::Transient,
                ..
            } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TransientAlgorithmError",
                message,
            ),
            InvokeError::Guest { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "AlgorithmError", message)
            }
            InvokeError::Timeout { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "TimeoutError", message)
            }
            InvokeError::OutOfMemory { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "OutOfMemoryError",
                message,
            ),
            InvokeError::StackOverflow { .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "StackOverflowError",
                message,
            ),
            InvokeError::Crash { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "CrashError", message)
            }
            InvokeError::Overloaded(_) => Self::overloaded(message),
            InvokeError::Host(_) => {
                tracing::error!(error = %message, "host failure during invocation");
                Self::internal(message)
            }
        }
    }
}
