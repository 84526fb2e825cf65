"""Executing one task: build the lease, the journal (steps, sleeps, event waits), the journaled
state and the run's logger, heartbeat every third of the lease timeout, run the handler as an
asyncio task (cancelled as soon as the run is cancelled or suspends, the lease is lost or the
worker abandons its work at shutdown), flush the handler's log lines, then report the outcome
with ``CompleteRun`` or ``FailRun``, unless the attempt was interrupted or suspended."""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional, Protocol

import grpc
import grpc.aio

from .. import _json
from ..context import WAIT_KINDS, Handler, JobContext, Recorded, Step, Waited
from ..errors import failure_from_error, is_interrupted
from ..log import run_logger
from ..run import Failure, status_from_proto
from ..state import State
from ..triggers import EventTriggerDeclaration
from ..v1 import common_pb2, worker_pb2
from .lease import LEASE_LOST, GaveUp, Interrupted, Lease, Ok, Rejected, WriteResult, lost_reason, sleep_unless, write

log = logging.getLogger("stackshift")

#: The lease timeout assumed when a task names none, in seconds.
DEFAULT_LEASE_TIMEOUT = 30.0


class WorkerStub(Protocol):
    """The parts of the generated ``WorkerServiceStub`` the worker uses (async channel)."""

    def PollTask(self, request: worker_pb2.PollTaskRequest, *, timeout: Optional[float] = ..., metadata: Any = ...) -> Any: ...
    def Heartbeat(self, request: worker_pb2.HeartbeatRequest, *, timeout: Optional[float] = ..., metadata: Any = ...) -> Any: ...
    def CompleteStep(self, request: worker_pb2.CompleteStepRequest, *, timeout: Optional[float] = ..., metadata: Any = ...) -> Any: ...
    def CompleteRun(self, request: worker_pb2.CompleteRunRequest, *, timeout: Optional[float] = ..., metadata: Any = ...) -> Any: ...
    def FailRun(self, request: worker_pb2.FailRunRequest, *, timeout: Optional[float] = ..., metadata: Any = ...) -> Any: ...
    def SuspendRun(self, request: worker_pb2.SuspendRunRequest, *, timeout: Optional[float] = ..., metadata: Any = ...) -> Any: ...
    def AppendLogs(self, request: worker_pb2.AppendLogsRequest, *, timeout: Optional[float] = ..., metadata: Any = ...) -> Any: ...


@dataclass
class RegisteredJob:
    """A job registered on a client."""

    handler: Handler
    #: Lease timeout for runs that set none at start, in seconds.
    lease_timeout: Optional[float] = None
    #: Event triggers the job declares; the worker creates them when it starts.
    triggers: list[EventTriggerDeclaration] = field(default_factory=list)


@dataclass
class TaskEnv:
    """What the worker shares with every task it executes."""

    stub: WorkerStub
    jobs: dict[str, RegisteredJob]
    #: Set when the shutdown grace period is over: running handlers are abandoned.
    abandon: asyncio.Event
    #: The authenticated ``StateServiceStub`` (for ``ctx.state``).
    state_stub: Any = None


async def _call(handler: Handler, ctx: JobContext[Any]) -> Any:
    result = handler(ctx)
    if inspect.isawaitable(result):
        result = await result
    return result


async def execute(env: TaskEnv, task: worker_pb2.Task) -> None:
    """Executes ``task`` to its end (the caller holds the concurrency slot meanwhile)."""
    loop = asyncio.get_running_loop()
    timeout = task.lease_timeout.ToTimedelta().total_seconds() if task.HasField("lease_timeout") else 0.0
    if timeout <= 0 and task.HasField("lease_deadline"):
        left = (task.lease_deadline.ToDatetime(tzinfo=timezone.utc) - datetime.now(timezone.utc)).total_seconds()
        timeout = left if left > 0 else 0.0
    lease = Lease(task.run_id, task.lease_token, timeout or DEFAULT_LEASE_TIMEOUT)
    fields = f"run {task.run_id} job {task.job} attempt {task.attempt}"

    job = env.jobs.get(task.job)
    if job is None:
        await _fail_run(env, lease, Failure(message=f"this worker has no handler for job {task.job}"))
        return
    try:
        payload = _json.decode(task.payload, "payload")
    except Exception as e:
        await _fail_run(env, lease, Failure(message=str(e), type="PayloadMismatch", non_retryable=True))
        return

    logger = run_logger(env.stub, lease)
    state_stub = env.state_stub
    ctx: JobContext[Any] = JobContext(
        payload=payload,
        step=Step(env.stub, lease, _journal_of(task), logger),
        run_id=task.run_id,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        job=task.job,
        queue=task.queue,
        state=State(lambda: state_stub, lease),
        log=logger,
    )
    handler_task = asyncio.ensure_future(_call(job.handler, ctx))
    heartbeat = asyncio.ensure_future(_heartbeat_loop(env, lease))
    interrupted = asyncio.ensure_future(lease.wait_interrupted())
    abandoned = asyncio.ensure_future(env.abandon.wait())
    try:
        await asyncio.wait({handler_task, interrupted, abandoned}, return_when=asyncio.FIRST_COMPLETED)
        if not handler_task.done():
            if abandoned.done():
                lease.interrupt("the worker shut down before the handler finished; the run is redelivered when its lease expires")
            handler_task.cancel()
            await asyncio.gather(handler_task, return_exceptions=True)
            _log_interrupted(fields, lease)
            return
        heartbeat.cancel()
        error = handler_task.exception() if not handler_task.cancelled() else asyncio.CancelledError()
        if not lease.interrupted:
            # Lines still buffered go out before the outcome.
            await logger.flush()
        if lease.interrupted or (error is not None and is_interrupted(error)):
            _log_interrupted(fields, lease)
        elif error is None:
            try:
                result = _json.encode(handler_task.result(), "the run's result")
            except Exception as e:
                await _fail_run(env, lease, Failure(message=str(e), type="ResultRejected", non_retryable=True))
                return
            await _complete_run(env, lease, result)
        else:
            failure = failure_from_error(error)
            log.info("%s: handler failed: %s (non_retryable=%s)", fields, failure.message, failure.non_retryable)
            await _fail_run(env, lease, failure)
    finally:
        for t in (heartbeat, interrupted, abandoned):
            t.cancel()
        if not handler_task.done():
            handler_task.cancel()
        del loop


def _log_interrupted(fields: str, lease: Lease) -> None:
    if lease.suspended:
        # Not a failure: the server holds the wait and delivers the run again.
        log.debug("%s: run suspended (%s); slot freed", fields, lease.error().reason)
    else:
        log.info("%s: attempt interrupted (%s); not reporting", fields, lease.error().reason)


def _journal_of(task: worker_pb2.Task) -> dict[str, Recorded]:
    """The journal's step and wait (sleep, event, child, any, all) entries by id. State calls are left out: the
    server answers a journaled call id with its recorded result."""
    journal: dict[str, Recorded] = {}
    for entry in task.journal:
        if entry.kind in WAIT_KINDS:
            output = entry.output if entry.WhichOneof("outcome") == "output" and entry.output else b"null"
            journal[entry.id] = Waited(kind=entry.kind, output=output)
            continue
        if entry.kind != common_pb2.JOURNAL_ENTRY_KIND_STEP:
            continue
        if entry.WhichOneof("outcome") == "failure":
            journal[entry.id] = Failure.from_proto(entry.failure)
        else:
            journal[entry.id] = entry.output if entry.output else b"null"
    return journal


async def _heartbeat_loop(env: TaskEnv, lease: Lease) -> None:
    """Extends the lease every third of its timeout; interrupts on cancellation or loss."""
    loop = asyncio.get_running_loop()
    interval = max(lease.timeout / 3, 0.1)
    delay = interval
    while True:
        await sleep_unless(lease.wait_interrupted, delay)
        if lease.interrupted:
            return
        sent_at = loop.time()
        try:
            answer = await env.stub.Heartbeat(
                worker_pb2.HeartbeatRequest(run_id=lease.run_id, lease_token=lease.token), timeout=max(interval, 1.0)
            )
            lease.extended(sent_at)
            delay = interval
            if answer.cancel_requested:
                lease.interrupt("the run was cancelled")
                return
        except grpc.aio.AioRpcError as error:
            if error.code() in LEASE_LOST:
                lease.interrupt(lost_reason(error))
                return
            if loop.time() >= lease.deadline:
                lease.interrupt(f"the lease expired: no heartbeat reached the server in time ({error.details()})")
                return
            log.warning("heartbeat for run %s failed (%s); retrying", lease.run_id, error.code().name)
            delay = max(interval / 2, 0.1)


async def _complete_run(env: TaskEnv, lease: Lease, result: bytes) -> None:
    request = worker_pb2.CompleteRunRequest(run_id=lease.run_id, lease_token=lease.token, result=result)
    outcome = await write(lease, "CompleteRun", lambda timeout: env.stub.CompleteRun(request, timeout=timeout))
    if isinstance(outcome, Ok):
        log.info("run %s completed", lease.run_id)
    elif isinstance(outcome, Rejected) and outcome.error.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        # The result itself is unacceptable (e.g. over the size limit): retrying would produce
        # it again, so fail the run instead of leaving it to time out.
        await _fail_run(
            env,
            lease,
            Failure(
                message=f"the run's result could not be recorded: {outcome.error.details()}",
                type="ResultRejected",
                non_retryable=True,
            ),
        )
    else:
        _log_write_failure(lease, "CompleteRun", outcome)


async def _fail_run(env: TaskEnv, lease: Lease, failure: Failure) -> None:
    request = worker_pb2.FailRunRequest(run_id=lease.run_id, lease_token=lease.token, failure=failure.to_proto())
    outcome = await write(lease, "FailRun", lambda timeout: env.stub.FailRun(request, timeout=timeout))
    if isinstance(outcome, Ok):
        log.info("run %s: attempt failure recorded (now %s)", lease.run_id, status_from_proto(outcome.value.status))
    else:
        _log_write_failure(lease, "FailRun", outcome)


def _log_write_failure(lease: Lease, rpc: str, outcome: WriteResult[Any]) -> None:
    if isinstance(outcome, Interrupted):
        log.info("run %s: %s not recorded (%s)", lease.run_id, rpc, outcome.error.reason)
    elif isinstance(outcome, GaveUp):
        log.warning("run %s: server unreachable until the lease expired; the run will be redelivered", lease.run_id)
    elif isinstance(outcome, Rejected):
        log.error("run %s: server rejected %s: %s %s", lease.run_id, rpc, outcome.error.code().name, outcome.error.details())
