//! Errors: the client-side [`Error`] (one variant per gRPC status a caller can act on), and
//! the error types a job handler works with: [`NonRetryable`] (fail the run at once),
//! [`StepFailed`] (a step's recorded terminal failure, re-raised on replay) and
//! [`Interrupted`] (the attempt lost its lease or the run was cancelled).

use std::fmt;

use tonic::{Code, Status};

use crate::run::Failure;

/// An error from a StackShift client call.
///
/// Each gRPC status a caller can act on has its own variant; the rest land in
/// [`Error::Other`]. [`Error::code`] gives the gRPC code of any variant, which is what tests
/// and retry logic usually want.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was malformed: a bad job name, an unparsable duration, an invalid
    /// endpoint, ... (`INVALID_ARGUMENT`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The run (or another named entity) does not exist (`NOT_FOUND`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The entity already exists (`ALREADY_EXISTS`), e.g. a schedule id taken by another
    /// definition; the server's message says which.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The operation does not fit the entity's state, e.g. retrying a completed run or
    /// writing with a stale lease (`FAILED_PRECONDITION`).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The API key is missing or invalid (`UNAUTHENTICATED`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The API key may not do this (`PERMISSION_DENIED`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A limit was exceeded, e.g. a payload over the server's size limit
    /// (`RESOURCE_EXHAUSTED`).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The call was cancelled (`CANCELLED`).
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// The operation was aborted, e.g. a write to a cancelled run (`ABORTED`).
    #[error("aborted: {0}")]
    Aborted(String),
    /// The server could not be reached, or the connection broke (`UNAVAILABLE`). Usually
    /// transient: retrying later is safe.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// Any other gRPC status, or a response the SDK could not understand.
    #[error("{message} (grpc code: {code:?})")]
    Other {
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// A value could not be converted to or from JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A state-store call was refused because of the key's current state
    /// (`FAILED_PRECONDITION` with a reason): `VERSION_MISMATCH` (compare-and-set),
    /// `NOT_AN_INTEGER` or `COUNTER_OVERFLOW` (increment), `LOCK_NOT_HELD` (release or
    /// extend with a token that does not hold the lock).
    #[error("conflict ({reason}): {message}")]
    Conflict {
        /// The machine-readable reason.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// A call made through a handler's `ctx.state` found the attempt over: the run was
    /// cancelled or the lease is lost. Propagate it with `?`; the worker then stops the
    /// handler and reports nothing.
    #[error("attempt interrupted")]
    Interrupted(#[source] Interrupted),
    /// The server refused an event trigger a job declares ([`crate::JobTrigger`]), so the
    /// worker did not start. [`Error::code`] is the code of the refusal (`source`):
    /// `ALREADY_EXISTS` when a trigger for the same event, key and job exists with other
    /// options (delete it first), `INVALID_ARGUMENT` for a bad name,
    /// `RESOURCE_EXHAUSTED` past 100 triggers on the event.
    #[error(
        "job {job:?} declares a trigger on event {event:?} (correlation key {correlation_key:?}, queue {queue:?}) that the server refused: {}",
        trigger_hint(source)
    )]
    TriggerRefused {
        /// The declaring job.
        job: String,
        /// The trigger's event name.
        event: String,
        /// The trigger's correlation key (`""` = any).
        correlation_key: String,
        /// The queue of the trigger's runs.
        queue: String,
        /// The server's refusal.
        #[source]
        source: Box<Error>,
    },
}

/// The refusal of a declared trigger, with what to do about an existing one.
fn trigger_hint(source: &Error) -> String {
    match source {
        Error::AlreadyExists(_) => "a trigger for the same event, correlation key and job already exists with other options; delete it (`stackshift triggers list --job JOB`, then `stackshift triggers delete ID`) or declare the same options".to_owned(),
        other => other.to_string(),
    }
}

impl Error {
    /// The gRPC status code this error corresponds to.
    ///
    /// [`Error::Json`] reports [`Code::InvalidArgument`]: it comes from a value that could
    /// not be serialized (or a stored value that does not fit the requested type).
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Cancelled(_) => Code::Cancelled,
            Error::Aborted(_) => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Other { code, .. } => *code,
            Error::Json(_) => Code::InvalidArgument,
            Error::Conflict { .. } => Code::FailedPrecondition,
            Error::Interrupted(_) => Code::Aborted,
            Error::TriggerRefused { source, .. } => source.code(),
        }
    }

    /// True when retrying the same call later may succeed (the server was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self.code(), Code::Unavailable)
    }

    /// An error for a response that breaks the protocol (a missing required field, an
    /// unknown enum value).
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Other {
            code: Code::Internal,
            message: format!("unexpected response from server: {}", message.into()),
        }
    }
}

impl From<Status> for Error {
    /// Maps the status code to its variant. A client-side transport failure (the connection
    /// broke mid-call, which tonic reports as `UNKNOWN` or `CANCELLED` with the transport
    /// error as its source) counts as [`Error::Unavailable`].
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        let transport_failure = matches!(status.code(), Code::Unknown | Code::Cancelled)
            && std::error::Error::source(&status).is_some();
        if transport_failure {
            return Error::Unavailable(message);
        }
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::FailedPrecondition => match status
                .metadata()
                .get(crate::state::REASON_METADATA)
                .and_then(|v| v.to_str().ok())
            {
                Some(reason) => Error::Conflict {
                    reason: reason.to_owned(),
                    message,
                },
                None => Error::FailedPrecondition(message),
            },
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            Code::Cancelled => Error::Cancelled(message),
            Code::Aborted => Error::Aborted(message),
            Code::Unavailable => Error::Unavailable(if message.is_empty() {
                "the server did not answer".to_owned()
            } else {
                message
            }),
            code => Error::Other { code, message },
        }
    }
}

impl From<crate::duration::ParseDurationError> for Error {
    fn from(e: crate::duration::ParseDurationError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// An error that must not be retried: returned from a handler (anywhere in the error's
/// chain), it fails the run at once; returned from a `step.run` closure, it is also
/// recorded as the step's terminal failure, so a later replay re-raises it without running
/// the step again.
///
/// ```
/// use stackshift::NonRetryable;
///
/// fn check(status: &str) -> anyhow::Result<()> {
///     if status != "paid" {
///         return Err(NonRetryable::new("payment was declined").into());
///     }
///     Ok(())
/// }
/// # assert!(check("declined").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonRetryable {
    message: String,
}

impl NonRetryable {
    /// A non-retryable error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for NonRetryable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NonRetryable {}

/// A non-retryable [`anyhow::Error`] with this message: shorthand for
/// `anyhow::Error::new(NonRetryable::new(message.to_string()))`.
///
/// Works with `map_err` too: `parse(input).map_err(stackshift::non_retryable)?`.
pub fn non_retryable(message: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(NonRetryable::new(message.to_string()))
}

/// A step's recorded terminal failure, returned by `step.run` when the journal holds a
/// failure for the step (the step body is not run again). It keeps the failure's
/// `non_retryable` flag, so propagating it with `?` fails the run at once.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailed {
    /// The step id, with its occurrence suffix.
    pub step_id: String,
    /// The failure recorded when the step first failed.
    pub failure: Failure,
}

impl fmt::Display for StepFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} failed: {}", self.step_id, self.failure.message)
    }
}

impl std::error::Error for StepFailed {}

/// The attempt was interrupted: the run was cancelled, the worker lost the lease (it
/// expired, or a newer attempt superseded it), or the run suspended on a durable sleep or an
/// event wait (`step.sleep`, `step.wait_for_event`; it is delivered again when the wait
/// ends). `step.run` returns it instead of running or recording anything; the worker then
/// stops the handler and reports nothing, since the server has already moved on. Handlers
/// should propagate it with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    reason: String,
}

impl Interrupted {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// Why the attempt was interrupted.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt interrupted: {}", self.reason)
    }
}

impl std::error::Error for Interrupted {}

/// True when `error`'s chain holds an [`Interrupted`].
pub(crate) fn is_interrupted(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<Interrupted>())
}

/// True when `error`'s chain holds a [`NonRetryable`], or a [`StepFailed`] whose failure is
/// non-retryable.
pub(crate) fn is_non_retryable(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.is::<NonRetryable>()
            || e.is::<crate::context::ChildFailed>()
            || e.downcast_ref::<StepFailed>()
                .is_some_and(|s| s.failure.non_retryable)
    })
}

/// Renders a handler or step error as a [`Failure`]: the full chain as the message, a
/// best-effort type name, the non-retryable flag, and the backtrace when one was captured.
pub(crate) fn failure_from_error(error: &anyhow::Error) -> Failure {
    let non_retryable = is_non_retryable(error);
    let backtrace = error.backtrace();
    let stack_trace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
        .then(|| truncate(backtrace.to_string(), MAX_STACK_TRACE_BYTES));
    Failure {
        message: format!("{error:#}"),
        error_type: Some(type_name_of(error)),
        non_retryable,
        details: None,
        stack_trace,
    }
}

/// The longest stack trace sent with a failure (backtraces are captured only when
/// `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is set, and can be very long).
const MAX_STACK_TRACE_BYTES: usize = 8 * 1024;

/// `text` cut to at most `max` bytes on a line boundary, marked when cut.
fn truncate(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end].rfind('\n').unwrap_or(end);
    format!("{}\n... (truncated)", &text[..cut])
}

/// A best-effort type name for an error: the first well-known type in its chain (outermost
/// first), else `anyhow::Error`.
fn type_name_of(error: &anyhow::Error) -> String {
    for cause in error.chain() {
        if let Some(step) = cause.downcast_ref::<StepFailed>() {
            return step
                .failure
                .error_type
                .clone()
                .unwrap_or_else(|| "StepFailed".to_owned());
        }
        let known = if cause.is::<crate::context::ChildFailed>() {
            Some("ChildFailed")
        } else if cause.is::<NonRetryable>() {
            Some("NonRetryable")
        } else if cause.is::<Error>() {
            Some("stackshift::Error")
        } else if cause.is::<std::io::Error>() {
            Some("std::io::Error")
        } else if cause.is::<serde_json::Error>() {
            Some("serde_json::Error")
        } else if cause.is::<std::num::ParseIntError>() {
            Some("std::num::ParseIntError")
        } else if cause.is::<std::num::ParseFloatError>() {
            Some("std::num::ParseFloatError")
        } else if cause.is::<tonic::Status>() {
            Some("tonic::Status")
        } else {
            None
        };
        if let Some(name) = known {
            return name.to_owned();
        }
    }
    "anyhow::Error".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_variants() {
        let e = Error::from(Status::not_found("run 42 does not exist"));
        assert!(matches!(e, Error::NotFound(ref m) if m == "run 42 does not exist"));
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(
            Error::from(Status::permission_denied("x")).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            Error::from(Status::deadline_exceeded("slow")).code(),
            Code::DeadlineExceeded
        );
        assert!(Error::from(Status::unavailable("")).is_transient());
        assert_eq!(
            Error::from(Status::invalid_argument("bad")).to_string(),
            "invalid argument: bad"
        );
    }

    #[test]
    fn state_conflicts_keep_their_reason() {
        let mut status = Status::failed_precondition("version mismatch on key \"k\"");
        status.metadata_mut().insert(
            "stackshift-error-reason",
            tonic::metadata::MetadataValue::from_static("VERSION_MISMATCH"),
        );
        let e = Error::from(status);
        assert!(matches!(e, Error::Conflict { ref reason, .. } if reason == "VERSION_MISMATCH"));
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(matches!(
            Error::from(Status::failed_precondition("stale lease")),
            Error::FailedPrecondition(_)
        ));
        let interrupted = anyhow::Error::new(Error::Interrupted(Interrupted::new("cancelled")));
        assert!(is_interrupted(&interrupted), "found through the chain");
    }

    #[test]
    fn non_retryable_is_found_through_context() {
        let e = non_retryable("declined").context("charging card");
        assert!(is_non_retryable(&e));
        let f = failure_from_error(&e);
        assert!(f.non_retryable);
        assert_eq!(f.message, "charging card: declined");
        assert_eq!(f.error_type.as_deref(), Some("NonRetryable"));

        let plain = anyhow::anyhow!("boom");
        assert!(!is_non_retryable(&plain));
        assert_eq!(
            failure_from_error(&plain).error_type.as_deref(),
            Some("anyhow::Error")
        );
    }

    #[test]
    fn interrupted_is_found_through_context() {
        let e = anyhow::Error::new(Interrupted::new("run cancelled")).context("step x");
        assert!(is_interrupted(&e));
        assert!(!is_interrupted(&anyhow::anyhow!("other")));
    }

    #[test]
    fn long_stack_traces_are_truncated_on_a_line() {
        let long = "frame\n".repeat(10_000);
        let cut = truncate(long, 100);
        assert!(cut.len() < 130);
        assert!(cut.ends_with("frame\n... (truncated)"));
        assert_eq!(truncate("short".to_owned(), 100), "short");
    }

    #[test]
    fn io_errors_get_their_type_name() {
        let e: anyhow::Error = std::io::Error::other("disk full").into();
        assert_eq!(
            failure_from_error(&e).error_type.as_deref(),
            Some("std::io::Error")
        );
    }
}
