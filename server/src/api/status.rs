//! The one mapping from engine errors to gRPC statuses.

use tonic::{Code, Status};

use crate::engine::EngineError;

/// Trailing metadata naming the reason of a state conflict (`VERSION_MISMATCH`, ...) or
/// of a step-limit refusal (`STEP_LIMIT`).
pub const STATE_REASON_METADATA: &str = "stackshift-error-reason";

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::InvalidArgument(_) => Code::InvalidArgument,
            EngineError::NotFound(_) => Code::NotFound,
            EngineError::AlreadyExists(_) => Code::AlreadyExists,
            EngineError::ResourceExhausted(_) | EngineError::StepLimit(_) => {
                Code::ResourceExhausted
            }
            EngineError::FailedPrecondition(_) | EngineError::StateConflict(_) => {
                Code::FailedPrecondition
            }
            EngineError::Cancelled(_) => Code::Aborted,
            EngineError::Unauthenticated(_) => Code::Unauthenticated,
            EngineError::Unavailable(_) => Code::Unavailable,
            EngineError::PermissionDenied(_) => Code::PermissionDenied,
            EngineError::Storage(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        let mut status = Status::new(code, e.to_string());
        if let EngineError::StateConflict(c) = &e {
            // Lets a worker tell a state conflict from a stale lease (both are
            // FAILED_PRECONDITION).
            status.metadata_mut().insert(
                STATE_REASON_METADATA,
                tonic::metadata::MetadataValue::from_static(c.reason.as_str()),
            );
        }
        if let EngineError::StepLimit(_) = &e {
            // Lets a worker tell the step limit (its run is failed) from a size limit.
            status.metadata_mut().insert(
                STATE_REASON_METADATA,
                tonic::metadata::MetadataValue::from_static(
                    crate::engine::history::STEP_LIMIT_REASON,
                ),
            );
        }
        status
    }
}
