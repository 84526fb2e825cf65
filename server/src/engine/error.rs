//! The engine's error type: every failure a domain operation can report, independent of
//! the transport (gRPC codes are mapped in `api::status`).

/// An error from a domain operation.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named entity does not exist in the caller's namespace.
    #[error("{0}")]
    NotFound(String),
    /// An entity with this id exists with a different definition.
    #[error("{0}")]
    AlreadyExists(String),
    /// A size or count limit was exceeded.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The operation does not apply in the entity's current state (e.g. a stale lease).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The run was cancelled; the worker should stop executing it.
    #[error("{0}")]
    Cancelled(String),
    /// The caller is not authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// The server is shutting down or the store is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The caller is authenticated but may not do this (e.g. key management without an
    /// admin key).
    #[error("{0}")]
    PermissionDenied(String),
    /// A state-store operation refused because of the key's current state (a version
    /// mismatch, a lock not held, ...); gRPC `FAILED_PRECONDITION` with a reason.
    #[error("{0}")]
    StateConflict(super::state::StateConflict),
    /// The run reached `--max-steps-per-run`: the new journal entry was refused and the run
    /// failed (`StepLimitExceeded`); gRPC `RESOURCE_EXHAUSTED` with reason `STEP_LIMIT`.
    #[error("{0}")]
    StepLimit(String),
    /// An unexpected storage failure.
    #[error("storage error: {0}")]
    Storage(String),
}

impl EngineError {
    /// Shorthand for an `InvalidArgument` error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// The error for a run that does not exist in the caller's namespace.
    pub fn run_not_found(id: &str) -> Self {
        Self::NotFound(format!("run {id} not found"))
    }
}

/// Result alias for engine operations.
pub type EngineResult<T> = Result<T, EngineError>;
