"""What a handler receives: :class:`JobContext` (the payload, the run's identity, the
journaled state store and the run's logger) and :class:`Step`, which runs memoized steps,
durable sleeps, event waits, combined waits (``wait_for_any`` / ``wait_for_all``) and child
runs (``invoke`` / ``invoke_all`` / ``invoke_child``)."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generic, Optional, Sequence, TypeVar, Union, overload

import grpc
from google.protobuf import timestamp_pb2

from . import _json
from ._duration import DurationLike, to_proto, to_timedelta
from .errors import (
    NonRetryableError,
    StepFailedError,
    failure_from_error,
    from_rpc_error,
    is_interrupted,
    is_non_retryable,
)
from .children import MAX_CHILDREN, ChildOutcome, ChildRun, outcomes_from_journal
from .events import Event, event_from_wait_output
from .log import Logger, current_step
from .run import Failure
from .state import State
from .v1 import common_pb2, worker_pb2
from .waits import AllResult, AnyResult, WaitItem, all_from_journal, any_from_journal

if TYPE_CHECKING:
    from ._worker.lease import Lease
    from ._worker.task import WorkerStub

T = TypeVar("T")
P = TypeVar("P")


@dataclass
class Waited:
    """A sleep or event wait that ended, from the journal."""

    #: ``JOURNAL_ENTRY_KIND_SLEEP``, ``_EVENT``, ``_CHILD``, ``_ANY`` or ``_ALL``.
    kind: int
    #: The journaled output (JSON bytes).
    output: bytes


#: A recorded journal outcome: a step's output bytes or terminal failure, or an ended wait.
Recorded = Union[bytes, Failure, Waited]

_KIND_NAMES: dict[int, str] = {
    common_pb2.JOURNAL_ENTRY_KIND_STEP: "step",
    common_pb2.JOURNAL_ENTRY_KIND_SLEEP: "sleep",
    common_pb2.JOURNAL_ENTRY_KIND_EVENT: "event wait",
    common_pb2.JOURNAL_ENTRY_KIND_CHILD: "child run wait",
    common_pb2.JOURNAL_ENTRY_KIND_ANY: "wait for any",
    common_pb2.JOURNAL_ENTRY_KIND_ALL: "wait for all",
}

#: The journal kinds of waits (everything the worker suspends on).
WAIT_KINDS = frozenset(
    {
        common_pb2.JOURNAL_ENTRY_KIND_SLEEP,
        common_pb2.JOURNAL_ENTRY_KIND_EVENT,
        common_pb2.JOURNAL_ENTRY_KIND_CHILD,
        common_pb2.JOURNAL_ENTRY_KIND_ANY,
        common_pb2.JOURNAL_ENTRY_KIND_ALL,
    }
)


def _kind_name(kind: int) -> str:
    return _KIND_NAMES.get(kind, "journal entry of an unknown kind")


MAX_STEP_RETRIES = 100
"""The largest ``retries`` a step accepts."""
DEFAULT_STEP_RETRY_DELAY_MS = 200
"""The default delay before a step's first in-place retry, in ms."""
MAX_STEP_RETRY_DELAY_MS = 5_000
"""The longest delay between two tries of a step, in ms."""


def _retry_policy(retries: Any, retry_delay: Optional[DurationLike]) -> tuple[int, int]:
    """Validates a step's retry options: ``(retries, base delay in ms)``; a bad value raises
    :class:`NonRetryableError`."""
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_STEP_RETRIES:
        raise NonRetryableError(f"step retries must be an integer between 0 and {MAX_STEP_RETRIES}, got {retries!r}")
    if retry_delay is None:
        return retries, DEFAULT_STEP_RETRY_DELAY_MS
    try:
        base = to_timedelta(retry_delay, "retry_delay")
    except Exception as e:
        raise NonRetryableError(f"invalid step retry delay: {e}") from e
    return retries, base // timedelta(milliseconds=1)


def step_retry_delay_ms(base_ms: int, k: int) -> int:
    """The wait after failed try ``k`` (from 1): ``base * 2**(k-1)``, capped at 5 s."""
    return min(base_ms << min(k - 1, 30), MAX_STEP_RETRY_DELAY_MS)


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

    ``step.sleep``, ``step.sleep_until``, ``step.wait_for_event``, ``step.wait_for_any``,
    ``step.wait_for_all``, ``step.invoke``, ``step.invoke_all`` and ``step.invoke_child`` take
    their effective ids from the same counter and share the id space. Ids starting with ``state:`` are reserved
    for state calls.
    """

    def __init__(self, stub: "WorkerStub", lease: "Lease", journal: dict[str, Recorded], log: Optional[Logger] = None) -> None:
        self._stub = stub
        self._lease = lease
        self._journal = journal
        self._occurrences = Occurrences()
        self._log = log

    @overload
    async def run(
        self, step_id: str, fn: Callable[[], Awaitable[T]], *, retries: int = 0, retry_delay: Optional[DurationLike] = None
    ) -> T: ...

    @overload
    async def run(
        self, step_id: str, fn: Callable[[], T], *, retries: int = 0, retry_delay: Optional[DurationLike] = None
    ) -> T: ...

    async def run(
        self, step_id: str, fn: Callable[[], Any], *, retries: int = 0, retry_delay: Optional[DurationLike] = None
    ) -> Any:
        """Runs ``fn`` as the step ``step_id``, or returns its recorded outcome.

        ``retries`` (0 to 100, default 0) retries the step in place: a retryable exception from
        ``fn`` runs it again within the same attempt, up to ``retries`` more times, after
        ``retry_delay`` (``"500ms"``, a timedelta or seconds; default 200 ms) doubled each try
        and capped at 5 s. Each failed try logs a ``warn`` line
        ``step ID failed (try K of N): MESSAGE; retrying in Dms``. Non-retryable errors are not
        retried; cancellation ends the wait at once; once the last try fails the exception is
        handled exactly as without retries.

        Example::

            payment = await step.run("verify-payment", lambda: verify_payment(payload["paymentId"]))
            rate = await step.run("fetch-rate", fetch_rate, retries=3, retry_delay="500ms")
        """
        retries, base_ms = _retry_policy(retries, retry_delay)
        effective = self._effective_id(step_id)
        recorded = self._journal.get(effective)
        if isinstance(recorded, Failure):
            raise StepFailedError(effective, recorded)
        if isinstance(recorded, Waited):
            raise NonRetryableError(
                f"step id {effective} is recorded as a {_kind_name(recorded.kind)} in this run's journal, not as a "
                "step: the handler no longer calls its steps in the recorded order"
            )
        if recorded is not None:
            return _json.decode(recorded, f"the recorded output of step {effective}")
        if self._lease.interrupted:
            raise self._lease.error()
        started_at = datetime.now(timezone.utc)
        attempt_try = 1
        while True:
            token = current_step.set(effective)
            try:
                value = fn()
                if inspect.isawaitable(value):
                    value = await value
                break
            except Exception as error:
                if (
                    attempt_try <= retries
                    and not is_non_retryable(error)
                    and not is_interrupted(error)
                    and not self._lease.interrupted
                ):
                    delay_ms = step_retry_delay_ms(base_ms, attempt_try)
                    if self._log is not None:
                        self._log.warn(
                            f"step {effective} failed (try {attempt_try} of {retries + 1}): {error}; "
                            f"retrying in {delay_ms}ms"
                        )
                else:
                    if is_non_retryable(error) and not is_interrupted(error):
                        failure = failure_from_error(error)
                        failure.non_retryable = True
                        await self._record(effective, failure, started_at)
                    raise
            finally:
                current_step.reset(token)
            # An interruption cancels the handler task, and so this wait, at once.
            await asyncio.sleep(delay_ms / 1000)
            if self._lease.interrupted:
                raise self._lease.error()
            attempt_try += 1
        try:
            output = _json.encode(value, f"the output of step {effective}")
        except Exception as e:
            raise NonRetryableError(str(e)) from e
        await self._record(effective, output, started_at)
        return _json.decode(output)

    def _effective_id(self, step_id: str) -> str:
        if not isinstance(step_id, str) or not step_id:
            raise NonRetryableError("step id must be a non-empty string")
        if step_id.startswith("state:"):
            raise NonRetryableError(f"step id {step_id!r} is reserved: ids starting with 'state:' name state calls")
        return self._occurrences.next(step_id)

    async def sleep(self, step_id: str, duration: DurationLike) -> None:
        """Sleeps durably for ``duration`` (``"1h30m"``, a timedelta or seconds; at most 365
        days), counted from when the server receives the call.

        The run turns ``waiting`` and holds no worker slot while it sleeps; it survives worker
        and server restarts and is delivered again when the sleep ends (the same attempt, so
        sleeping never uses up retries). In that execution, and in every later replay, this
        call returns at once. When the run suspends, this raises
        :class:`AttemptInterruptedError`: let it propagate.

        Example::

            await ctx.step.sleep("cool-down", "10m")
        """
        try:
            wait = worker_pb2.SleepWait(duration=to_proto(to_timedelta(duration, "duration")))
        except Exception as e:
            raise NonRetryableError(f"step.sleep({step_id!r}): {e}") from e
        await self._suspend(step_id, common_pb2.JOURNAL_ENTRY_KIND_SLEEP, "sleeping", sleep=wait)

    async def sleep_until(self, step_id: str, until: datetime) -> None:
        """Sleeps durably until ``until`` (an aware datetime; naive means UTC; at most 365 days
        ahead; a time in the past returns at once). Otherwise like :meth:`sleep`."""
        wait = worker_pb2.SleepWait()
        wait.until.FromDatetime(until)
        await self._suspend(step_id, common_pb2.JOURNAL_ENTRY_KIND_SLEEP, "sleeping", sleep=wait)

    async def wait_for_event(
        self, step_id: str, event: str, *, timeout: DurationLike, key: Optional[str] = None
    ) -> Optional[Event]:
        """Waits for the event named ``event`` with exactly the correlation ``key`` (``None``:
        only events published without a key), for at most ``timeout`` (``"24h"``, a timedelta
        or seconds; 0 to 365 days). Returns the :class:`Event`, or ``None`` once the timeout
        passed.

        The run's inbox decides: the first matching event published **after the run was
        created** that this run has not received yet matches, even when it was published
        before the handler reached this call. Two waits for the same name receive two
        successive events. While no event is there, the run turns ``waiting`` and holds no
        worker slot. Ids, replay and interruption behave as for :meth:`sleep`.

        Example::

            confirmed = await ctx.step.wait_for_event(
                "wait-for-payment", "payment.confirmed", key=payment_id, timeout="1h"
            )
            if confirmed is None:
                raise NonRetryableError("payment not confirmed within an hour")
        """
        try:
            wait = worker_pb2.EventWait(
                event_name=event, correlation_key=key or "", timeout=to_proto(to_timedelta(timeout, "timeout"))
            )
        except Exception as e:
            raise NonRetryableError(f"step.wait_for_event({step_id!r}): {e}") from e
        output = await self._suspend(step_id, common_pb2.JOURNAL_ENTRY_KIND_EVENT, f"waiting for event {event}", event=wait)
        try:
            return event_from_wait_output(output)
        except ValueError as e:
            raise NonRetryableError(f"the recorded result of wait {step_id}: {e}") from e

    async def wait_for_any(
        self, step_id: str, items: Sequence[WaitItem], *, timeout: Optional[DurationLike] = None
    ) -> AnyResult:
        """Waits durably until the **first** of ``items`` (1 to 100 :class:`WaitItem`) resolves,
        or until ``timeout`` (for the whole wait; ``None`` is allowed only when a sleep item
        bounds the wait) passes. When several items can resolve at once, the lowest index
        wins; event items of other indexes do not consume their events. Event items follow
        the inbox rules of :meth:`wait_for_event`. While nothing resolved the run is
        ``waiting`` and holds no worker slot; ids, replay and interruption behave as for
        :meth:`sleep`.

        Example::

            got = await ctx.step.wait_for_any(
                "approval-or-reminder",
                [WaitItem.event("order.approved", key=order_id), WaitItem.sleep("24h")],
            )
            if got.index == 0:
                ...  # approved: got.result.event.payload
            else:
                ...  # a day passed: send a reminder
        """
        wait = _combined("wait_for_any", step_id, items, timeout)
        output = await self._suspend(step_id, common_pb2.JOURNAL_ENTRY_KIND_ANY, "waiting for any of several items", any_=wait)
        try:
            return any_from_journal(output)
        except ValueError as e:
            raise NonRetryableError(f"the recorded result of wait {step_id}: {e}") from e

    async def wait_for_all(
        self, step_id: str, items: Sequence[WaitItem], *, timeout: Optional[DurationLike] = None
    ) -> AllResult:
        """Waits durably until **every** one of ``items`` resolved, or until ``timeout`` (for the
        whole wait; required unless every item is a sleep) passes. Two items for the same
        event name and key take two successive events. ``result.items[i]`` is ``None`` for an
        item that had not resolved at the timeout. Otherwise like :meth:`wait_for_any`.

        Example::

            signed = await ctx.step.wait_for_all(
                "both-signatures",
                [WaitItem.event("contract.signed", key="buyer_1"), WaitItem.event("contract.signed", key="seller_1")],
                timeout="7d",
            )
            if signed.timed_out:
                raise NonRetryableError("not signed by both within a week")
        """
        wait = _combined("wait_for_all", step_id, items, timeout)
        output = await self._suspend(step_id, common_pb2.JOURNAL_ENTRY_KIND_ALL, "waiting for all of several items", all_=wait)
        try:
            return all_from_journal(output)
        except ValueError as e:
            raise NonRetryableError(f"the recorded result of wait {step_id}: {e}") from e

    async def invoke(self, step_id: str, job: str, payload: Any = None) -> Any:
        """Starts a child run of ``job`` with ``payload`` on the parent's queue and waits
        durably for its result. A failed or cancelled child raises
        :class:`~stackshift.ChildFailedError` (non-retryable: letting it propagate fails the
        parent without retries).

        The child is started once per run and id: a replay finds the same child. While the
        child runs, the parent is ``waiting`` and holds no worker slot (a worker with a single
        slot can run both). Cancelling the parent cancels the child. When the run suspends,
        this raises :class:`AttemptInterruptedError`: let it propagate.

        Example::

            url = await ctx.step.invoke("thumbnail", "resize-image", {"image": "cat.png", "width": 128})
        """
        outcome = await self.invoke_child(step_id, ChildRun(job=job, payload=payload))
        return outcome.result_or_raise()

    async def invoke_child(self, step_id: str, child: ChildRun) -> ChildOutcome:
        """Like :meth:`invoke` with the child's options (:class:`~stackshift.ChildRun`: queue,
        priority, lease timeout, concurrency key, retry policy), returning its raw
        :class:`~stackshift.ChildOutcome` (a failed child is an outcome here, not an error)."""
        outcomes = await self.invoke_all(step_id, [child])
        if not outcomes:
            raise NonRetryableError(f"the recorded child wait {step_id} has no child")
        return outcomes[-1]

    async def invoke_all(self, step_id: str, children: Sequence[ChildRun]) -> list[ChildOutcome]:
        """Fan-out: starts every child (1 to 1,000 :class:`~stackshift.ChildRun`) and waits
        durably until all of them are final. Returns their outcomes in the order given; a
        failed or cancelled child is an outcome (``status`` ``"failed"``/``"cancelled"``), not
        an error (``outcome.result_or_raise()`` turns it into one).

        Example::

            outcomes = await ctx.step.invoke_all(
                "process-chunks", [ChildRun("process-chunk", {"chunk": i}) for i in range(50)]
            )
            total = sum(o.result_or_raise() for o in outcomes)
        """
        children = list(children)
        if not 1 <= len(children) <= MAX_CHILDREN:
            raise NonRetryableError(f"step.invoke_all({step_id!r}) needs 1 to {MAX_CHILDREN} child runs, got {len(children)}")
        try:
            specs = [c.to_proto() for c in children]
        except Exception as e:
            raise NonRetryableError(f"step.invoke_all({step_id!r}): {e}") from e
        output = await self._suspend(
            step_id, common_pb2.JOURNAL_ENTRY_KIND_CHILD, "waiting for child runs", child=worker_pb2.ChildWait(children=specs)
        )
        try:
            return outcomes_from_journal(output)
        except ValueError as e:
            raise NonRetryableError(f"the recorded result of child wait {step_id}: {e}") from e

    async def _suspend(
        self,
        step_id: str,
        kind: int,
        what: str,
        *,
        sleep: Optional[worker_pb2.SleepWait] = None,
        event: Optional[worker_pb2.EventWait] = None,
        child: Optional[worker_pb2.ChildWait] = None,
        any_: Optional[worker_pb2.CombinedWait] = None,
        all_: Optional[worker_pb2.CombinedWait] = None,
    ) -> bytes:
        """Assigns the effective id, replays a journaled result, or sends ``SuspendRun``.
        Returns the wait's journaled output; when the run suspends, interrupts the attempt (as
        suspended) and raises :class:`AttemptInterruptedError`."""
        from ._worker.lease import GaveUp, Interrupted, Rejected, write

        effective = self._effective_id(step_id)

        def mismatch(found: int) -> NonRetryableError:
            return NonRetryableError(
                f"step id {effective} is recorded as a {_kind_name(found)} in this run's journal, not as a "
                f"{_kind_name(kind)}: the handler no longer calls its steps in the recorded order"
            )

        recorded = self._journal.get(effective)
        if isinstance(recorded, Waited):
            if recorded.kind != kind:
                raise mismatch(recorded.kind)
            return recorded.output
        if recorded is not None:
            raise mismatch(common_pb2.JOURNAL_ENTRY_KIND_STEP)
        lease = self._lease
        if lease.interrupted:
            raise lease.error()
        if self._log is not None:
            await self._log.flush()
        request = worker_pb2.SuspendRunRequest(run_id=lease.run_id, lease_token=lease.token, step_id=effective)
        if sleep is not None:
            request.sleep.CopyFrom(sleep)
        if event is not None:
            request.event.CopyFrom(event)
        if child is not None:
            request.child.CopyFrom(child)
        if any_ is not None:
            request.any.CopyFrom(any_)
        if all_ is not None:
            request.all.CopyFrom(all_)
        result = await write(lease, "SuspendRun", lambda timeout: self._stub.SuspendRun(request, timeout=timeout))
        if isinstance(result, Interrupted):
            raise result.error
        if isinstance(result, GaveUp):
            lease.interrupt(f"the server stayed unreachable until the lease expired ({result.error.details()})")
            raise lease.error()
        if isinstance(result, Rejected):
            message = f"could not start {what} ({effective}): {result.error.details()}"
            if result.error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE):
                raise NonRetryableError(message)
            raise RuntimeError(message)
        response = result.value
        if response.outcome == worker_pb2.SUSPEND_OUTCOME_SATISFIED:
            entry = response.entry
            if entry.kind != kind:
                raise mismatch(entry.kind)
            return entry.output if entry.WhichOneof("outcome") == "output" and entry.output else b"null"
        if response.outcome == worker_pb2.SUSPEND_OUTCOME_SUSPENDED:
            until = ""
            if response.HasField("wake_at"):
                until = " until " + response.wake_at.ToDatetime(tzinfo=timezone.utc).isoformat()
            if response.child_run_ids:
                until = f" ({len(response.child_run_ids)} child run(s))"
            lease.suspend(f"the run is {what} ({effective}){until}")
            raise lease.error()
        raise RuntimeError(f"SuspendRun answered an unknown outcome {response.outcome}")

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
        elif isinstance(outcome, bytes):
            request.output = outcome
        result = await write(lease, "CompleteStep", lambda timeout: self._stub.CompleteStep(request, timeout=timeout))
        if isinstance(result, Interrupted):
            raise result.error
        if isinstance(result, Rejected):
            error = from_rpc_error(result.error)
            if error.code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"):
                raise NonRetryableError(f"could not record step {step_id}: {error}") from error
            raise RuntimeError(f"could not record step {step_id}: {error}") from error


def _combined(
    method: str, step_id: str, items: Sequence[WaitItem], timeout: Optional[DurationLike]
) -> worker_pb2.CombinedWait:
    """The ``CombinedWait`` of a ``wait_for_any`` / ``wait_for_all`` call (a bad argument
    raises :class:`NonRetryableError`)."""
    items = list(items)
    if not all(isinstance(i, WaitItem) for i in items):
        raise NonRetryableError(f"step.{method}({step_id!r}): items must be WaitItem values")
    wait = worker_pb2.CombinedWait(items=[i.to_proto() for i in items])
    if timeout is not None:
        try:
            wait.timeout.CopyFrom(to_proto(to_timedelta(timeout, "timeout")))
        except Exception as e:
            raise NonRetryableError(f"step.{method}({step_id!r}): {e}") from e
    return wait


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
    #: The state store, journaled in this run: each call is recorded like a step (ids
    #: ``state:1``, ``state:2``, ... by call order), so a retried attempt gets the recorded
    #: results back and an increment is applied once. See :class:`~stackshift.State`.
    state: State
    #: The run's logger: lines are tied to the run, this attempt and the executing step, and
    #: shown in the run's detail. See :class:`~stackshift.Logger`.
    log: Logger

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure of this attempt will not be retried."""
        return self.max_attempts > 0 and self.attempt >= self.max_attempts

    def __repr__(self) -> str:  # never show the payload
        return f"JobContext(run_id={self.run_id!r}, job={self.job!r}, attempt={self.attempt})"


#: A job handler: ``async def handler(ctx: JobContext[P]) -> result`` (sync functions work too).
Handler = Callable[[JobContext[Any]], Any]
