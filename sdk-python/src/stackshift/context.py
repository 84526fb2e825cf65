"""What a handler receives: :class:`JobContext` (the payload, the run's identity) and
:class:`Step`, which runs memoized steps."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generic, TypeVar, Union, overload

from google.protobuf import timestamp_pb2

from . import _json
from .errors import (
    NonRetryableError,
    StepFailedError,
    failure_from_error,
    from_rpc_error,
    is_interrupted,
    is_non_retryable,
)
from .run import Failure
from .v1 import worker_pb2

if TYPE_CHECKING:
    from ._worker.lease import Lease
    from ._worker.task import WorkerStub

T = TypeVar("T")
P = TypeVar("P")

#: A recorded step outcome: the output bytes, or the terminal failure.
Recorded = Union[bytes, Failure]


class Occurrences:
    """Assigns effective step ids: ``id``, ``id#2``, ``id#3``, ... per execution, and refuses an
    effective id already handed out in this execution (an explicit ``a#2`` followed by a second
    ``a``), since the two steps would share one journal entry. The same rule in every SDK."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._used: set[str] = set()

    def next(self, step_id: str) -> str:
        """The effective id for the next use of ``step_id``.

        Raises:
            NonRetryableError: the effective id was already used in this execution.
        """
        count = self._counts.get(step_id, 0) + 1
        self._counts[step_id] = count
        effective = step_id if count == 1 else f"{step_id}#{count}"
        if effective in self._used:
            raise NonRetryableError(
                f"step id {effective!r} is used twice in one execution (an explicit id collides "
                "with an occurrence suffix); rename the step"
            )
        self._used.add(effective)
        return effective


class Step:
    """Runs memoized steps for one attempt.

    ``await step.run(id, fn)`` first assigns the *effective* step id: the first use of ``id``
    in this execution is ``id``, the second ``id#2``, and so on. Then:

    - if the journal holds that id, the recorded output is returned (or the recorded terminal
      failure raised as :class:`StepFailedError`) and ``fn`` is **not** called;
    - otherwise ``fn`` runs (sync or async). Its result is recorded on the server and returned
      only once the server acknowledged it, as it reads back after a JSON round trip (exactly
      what a replay returns). A :class:`NonRetryableError` from ``fn`` is recorded as the
      step's terminal failure and re-raised; any other exception is re-raised unrecorded: the
      attempt fails, is retried, and the step runs again then.

    Once the run is cancelled or the lease is lost, the handler is cancelled (``fn`` included),
    and ``step.run`` raises :class:`AttemptInterruptedError`.
    """

    def __init__(self, stub: "WorkerStub", lease: "Lease", journal: dict[str, Recorded]) -> None:
        self._stub = stub
        self._lease = lease
        self._journal = journal
        self._occurrences = Occurrences()

    @overload
    async def run(self, step_id: str, fn: Callable[[], Awaitable[T]]) -> T: ...

    @overload
    async def run(self, step_id: str, fn: Callable[[], T]) -> T: ...

    async def run(self, step_id: str, fn: Callable[[], Any]) -> Any:
        """Runs ``fn`` as the step ``step_id``, or returns its recorded outcome.

        Example::

            payment = await step.run("verify-payment", lambda: verify_payment(payload["paymentId"]))
        """
        if not isinstance(step_id, str) or not step_id:
            raise NonRetryableError("step id must be a non-empty string")
        effective = self._occurrences.next(step_id)
        recorded = self._journal.get(effective)
        if isinstance(recorded, Failure):
            raise StepFailedError(effective, recorded)
        if recorded is not None:
            return _json.decode(recorded, f"the recorded output of step {effective}")
        if self._lease.interrupted:
            raise self._lease.error()
        started_at = datetime.now(timezone.utc)
        try:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
        except Exception as error:
            if is_non_retryable(error) and not is_interrupted(error):
                failure = failure_from_error(error)
                failure.non_retryable = True
                await self._record(effective, failure, started_at)
            raise
        try:
            output = _json.encode(value, f"the output of step {effective}")
        except Exception as e:
            raise NonRetryableError(str(e)) from e
        await self._record(effective, output, started_at)
        return _json.decode(output)

    async def _record(self, step_id: str, outcome: Recorded, started_at: datetime) -> None:
        from ._worker.lease import Interrupted, Rejected, write

        lease = self._lease
        started = timestamp_pb2.Timestamp()
        started.FromDatetime(started_at)
        request = worker_pb2.CompleteStepRequest(
            run_id=lease.run_id, lease_token=lease.token, step_id=step_id, started_at=started
        )
        if isinstance(outcome, Failure):
            request.failure.CopyFrom(outcome.to_proto())
        else:
            request.output = outcome
        result = await write(lease, "CompleteStep", lambda timeout: self._stub.CompleteStep(request, timeout=timeout))
        if isinstance(result, Interrupted):
            raise result.error
        if isinstance(result, Rejected):
            error = from_rpc_error(result.error)
            if error.code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"):
                raise NonRetryableError(f"could not record step {step_id}: {error}") from error
            raise RuntimeError(f"could not record step {step_id}: {error}") from error


@dataclass
class JobContext(Generic[P]):
    """The context a handler is called with."""

    #: The run's payload (decoded JSON).
    payload: P
    #: Runs memoized steps.
    step: Step
    #: The run's id.
    run_id: str
    #: This attempt's number, from 1.
    attempt: int
    #: Attempts allowed in total.
    max_attempts: int
    #: The job's name.
    job: str
    #: The queue the run came from.
    queue: str

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure of this attempt will not be retried."""
        return self.max_attempts > 0 and self.attempt >= self.max_attempts

    def __repr__(self) -> str:  # never show the payload
        return f"JobContext(run_id={self.run_id!r}, job={self.job!r}, attempt={self.attempt})"


#: A job handler: ``async def handler(ctx: JobContext[P]) -> result`` (sync functions work too).
Handler = Callable[[JobContext[Any]], Any]
