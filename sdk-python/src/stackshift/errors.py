"""Errors.

- Client calls raise a :class:`StackShiftError` subclass per gRPC status a caller can act on
  (:class:`NotFoundError`, :class:`InvalidArgumentError`, ...); ``error.code`` is the status
  name (``"NOT_FOUND"``), the same string in every StackShift SDK.
- Handlers raise :class:`NonRetryableError` to fail a run at once; ``step.run`` raises
  :class:`StepFailedError` when it replays a step's recorded terminal failure, and
  :class:`AttemptInterruptedError` once the run was cancelled or the lease was lost.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any, Optional

import grpc
import grpc.aio

if TYPE_CHECKING:
    from .run import Failure


class StackShiftError(Exception):
    """An error from a StackShift client call. ``code`` is the gRPC status name."""

    #: The gRPC status name, e.g. ``"NOT_FOUND"``.
    code: str = "UNKNOWN"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def is_transient(self) -> bool:
        """True when retrying the same call later may succeed (the server was unreachable)."""
        return self.code == "UNAVAILABLE"


class InvalidArgumentError(StackShiftError):
    """``INVALID_ARGUMENT``: a malformed request (bad name, unparsable duration, bad JSON, ...)."""

    code = "INVALID_ARGUMENT"


class NotFoundError(StackShiftError):
    """``NOT_FOUND``: the run does not exist (in the caller's namespace)."""

    code = "NOT_FOUND"


class AlreadyExistsError(StackShiftError):
    """``ALREADY_EXISTS``."""

    code = "ALREADY_EXISTS"


class FailedPreconditionError(StackShiftError):
    """``FAILED_PRECONDITION``: the operation does not fit the run's status, or a stale lease."""

    code = "FAILED_PRECONDITION"


class ConflictError(FailedPreconditionError):
    """``FAILED_PRECONDITION`` with a ``reason``: the state store refused the call because of
    the stored state. ``reason`` is one of ``VERSION_MISMATCH`` (compare-and-set lost),
    ``NOT_AN_INTEGER`` (increment of a non-integer value), ``COUNTER_OVERFLOW`` and
    ``LOCK_NOT_HELD`` (the fencing token no longer holds the lock). Inside a run these refusals
    are journaled and replayed like a step result.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        #: Why the call was refused, e.g. ``"VERSION_MISMATCH"``.
        self.reason = reason


class UnauthenticatedError(StackShiftError):
    """``UNAUTHENTICATED``: the API key is missing, unknown or revoked."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(StackShiftError):
    """``PERMISSION_DENIED``."""

    code = "PERMISSION_DENIED"


class ResourceExhaustedError(StackShiftError):
    """``RESOURCE_EXHAUSTED``: a limit was exceeded, e.g. a payload over the size limit."""

    code = "RESOURCE_EXHAUSTED"


class AbortedError(StackShiftError):
    """``ABORTED``: e.g. a worker write to a cancelled run."""

    code = "ABORTED"


class UnavailableError(StackShiftError):
    """``UNAVAILABLE``: the server could not be reached. Retrying later is safe."""

    code = "UNAVAILABLE"


class DeadlineExceededError(StackShiftError):
    """``DEADLINE_EXCEEDED``: the call timed out."""

    code = "DEADLINE_EXCEEDED"


class CancelledError(StackShiftError):
    """``CANCELLED``: the call was cancelled."""

    code = "CANCELLED"


_BY_CODE: dict[grpc.StatusCode, type[StackShiftError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


#: The trailing metadata that names the reason of a state conflict.
REASON_METADATA = "stackshift-error-reason"


def conflict_reason(error: grpc.aio.AioRpcError) -> Optional[str]:
    """The ``stackshift-error-reason`` of a ``FAILED_PRECONDITION`` answer, if it has one (the
    server sets it on state refusals only, never on a lost lease)."""
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    try:
        metadata = error.trailing_metadata() or ()
    except Exception:  # a locally generated error has no metadata
        return None
    for item in metadata:
        key, value = item[0], item[1]
        if key == REASON_METADATA:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


#: Words in an ``UNAVAILABLE`` message that point at TLS (handshake, certificates, or a server
#: that closed the connection of a client it did not accept).
_TLS_SIGNS = ("ssl", "tls", "tsi_", "certificate", "handshake", "socket closed", "connection reset", "broken pipe")


def from_rpc_error(error: grpc.aio.AioRpcError) -> StackShiftError:
    """The typed error for a failed gRPC call."""
    code = error.code()
    message = error.details() or ""
    reason = conflict_reason(error)
    if reason is not None:
        return ConflictError(message, reason)
    cls = _BY_CODE.get(code)
    if cls is UnavailableError and not message:
        message = "the server did not answer"
    if cls is UnavailableError and any(s in message.lower() for s in _TLS_SIGNS):
        message += (
            " (the TLS connection failed or was closed by the server: check the CA for the server certificate"
            " (tls_ca or STACKSHIFT_TLS_CA), and, if the server requires mutual TLS (--tls-client-ca), a client"
            " certificate and key signed by its client CA (tls_client_cert/tls_client_key or"
            " STACKSHIFT_TLS_CLIENT_CERT/STACKSHIFT_TLS_CLIENT_KEY))"
        )
    if cls is not None:
        return cls(message)
    return StackShiftError(message, code.name)


class NonRetryableError(Exception):
    """Raised from a handler, fails the run at once instead of retrying it. Raised from a
    ``step.run`` body, it is also recorded as the step's terminal failure, so a replay raises it
    again (as :class:`StepFailedError`) without running the step.

    Any exception with a true ``non_retryable`` attribute is treated the same way.
    """

    non_retryable = True

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        #: Optional JSON details recorded with the failure.
        self.details = details


class StepFailedError(Exception):
    """A step's recorded terminal failure, raised by ``step.run`` on replay (the body is not run
    again). It keeps the failure's ``non_retryable`` flag, so letting it propagate fails the run.
    """

    def __init__(self, step_id: str, failure: "Failure") -> None:
        super().__init__(f"step {step_id} failed: {failure.message}")
        #: The step id, with its occurrence suffix.
        self.step_id = step_id
        #: The failure recorded when the step first failed.
        self.failure = failure

    @property
    def non_retryable(self) -> bool:
        """Mirrors the recorded failure's flag."""
        return self.failure.non_retryable


class AttemptInterruptedError(Exception):
    """The attempt was interrupted: the run was cancelled, the worker lost the lease, or the
    worker is shutting down. ``step.run`` raises it instead of running or recording anything;
    the worker then reports nothing. Let it propagate."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"attempt interrupted: {reason}")
        #: Why the attempt was interrupted.
        self.reason = reason


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: Optional[BaseException] = error
    while current is not None and current not in seen and len(seen) < 32:
        seen.append(current)
        current = current.__cause__
    return seen


def is_non_retryable(error: BaseException) -> bool:
    """True when ``error`` (or an exception in its ``__cause__`` chain) is non-retryable."""
    return any(getattr(e, "non_retryable", False) is True for e in _chain(error))


def is_interrupted(error: BaseException) -> bool:
    """True when ``error`` (or an exception in its cause chain) is an interruption."""
    return any(isinstance(e, AttemptInterruptedError) for e in _chain(error))


_MAX_STACK_TRACE = 8 * 1024


def failure_from_error(error: BaseException) -> "Failure":
    """Renders an exception as a structured :class:`~stackshift.Failure`."""
    from .run import Failure

    non_retryable = is_non_retryable(error)
    if isinstance(error, StepFailedError):
        return Failure(
            message=str(error),
            type=error.failure.type,
            non_retryable=non_retryable,
            details=error.failure.details,
        )
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if len(stack) > _MAX_STACK_TRACE:
        stack = stack[:_MAX_STACK_TRACE] + "\n... (truncated)"
    return Failure(
        message=str(error) or type(error).__name__,
        type=type(error).__name__,
        non_retryable=non_retryable,
        details=getattr(error, "details", None) if isinstance(error, NonRetryableError) else None,
        stack_trace=stack,
    )
