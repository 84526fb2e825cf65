//! The one mapping from engine errors to gRPC statuses.

use tonic::{Code, Status};

use crate::engine::EngineError;

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::InvalidArgument(_) => Code::InvalidArgument,
            EngineError::NotFound(_) => Code::NotFound,
            EngineError::ResourceExhausted(_) => Code::ResourceExhausted,
            EngineError::FailedPrecondition(_) => Code::FailedPrecondition,
            EngineError::Cancelled(_) => Code::Aborted,
            EngineError::Unauthenticated(_) => Code::Unauthenticated,
            EngineError::Unavailable(_) => Code::Unavailable,
            EngineError::Storage(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::new(code, e.to_string())
    }
}
