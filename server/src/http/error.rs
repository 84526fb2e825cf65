//! The one mapping from engine errors to HTTP statuses for the JSON API. Errors are sent as
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::response::{IntoResponse, Response};
use tonic::codegen::http::StatusCode;

use crate::engine::EngineError;

/// An error answer of the JSON API.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: message.into(),
        }
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            EngineError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            EngineError::ResourceExhausted(_) | EngineError::StepLimit(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted")
            }
            EngineError::FailedPrecondition(_) | EngineError::StateConflict(_) => {
                (StatusCode::CONFLICT, "failed_precondition")
            }
            EngineError::Cancelled(_) => (StatusCode::CONFLICT, "aborted"),
            EngineError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            EngineError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            EngineError::PermissionDenied(_) => (StatusCode::FORBIDDEN, "permission_denied"),
            EngineError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "internal error (http api)");
        }
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = super::json::response(&body);
        *resp.status_mut() = self.status;
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                tonic::codegen::http::header::WWW_AUTHENTICATE,
                tonic::codegen::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
