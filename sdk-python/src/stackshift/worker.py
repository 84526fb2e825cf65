"""The worker: long-polls the server for tasks of its registered jobs on its queues, never
holding more tasks than it has concurrency slots, runs each handler (replaying recorded steps),
heartbeats every third of the lease, and reports outcomes. Shutdown is graceful: polling stops,
in-flight handlers get the grace period to finish, and whatever still runs after it is
abandoned (the server redelivers those runs when their leases expire). Before it polls, the
worker creates the event triggers its jobs declare (idempotent ``CreateEventTrigger``).

Use it as an async context manager::

    async with stackshift.worker(queues=["emails"], concurrency=8):
        ...  # the worker polls in the background; leaving the block shuts it down gracefully
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import signal
import socket
from types import TracebackType
from typing import Any, Awaitable, Optional, Union

import grpc
import grpc.aio

from ._duration import DurationLike, to_proto, to_timedelta
from ._worker.lease import Backoff, sleep_unless
from ._stub import call
from ._worker.task import RegisteredJob, TaskEnv, WorkerStub, execute
from .errors import InvalidArgumentError, StackShiftError
from .triggers import TriggerDeclarationError, create_request
from .v1 import worker_pb2

log = logging.getLogger("stackshift")

#: Default number of concurrency slots.
DEFAULT_CONCURRENCY = 10
#: The most tasks one poll may ask for (the server's limit).
_MAX_TASKS_PER_POLL = 100
#: Extra seconds on top of the poll's wait before the client gives up on the call.
_POLL_SLACK = 10.0
#: Seconds abandoned handlers get after the grace period.
_ABANDON_WAIT = 2.0


class Worker:
    """A worker; created by :meth:`stackshift.StackShift.worker`."""

    def __init__(
        self,
        stub: WorkerStub,
        jobs: dict[str, RegisteredJob],
        *,
        queues: Optional[list[str]] = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        worker_id: Optional[str] = None,
        shutdown_grace: DurationLike = "30s",
        poll_wait: DurationLike = "30s",
        state_stub: Any = None,
        triggers_stub: Any = None,
    ) -> None:
        self._stub = stub
        self._triggers_stub = triggers_stub
        self._triggers_declared = False
        self._state_stub = state_stub
        self._jobs = dict(jobs)
        self.queues = list(queues) if queues else ["default"]
        self.concurrency = max(1, int(concurrency))
        #: The id recorded on the attempts this worker runs.
        self.worker_id = worker_id or _default_worker_id()
        self._grace = to_timedelta(shutdown_grace, "shutdown_grace").total_seconds()
        self._poll_wait = min(max(to_timedelta(poll_wait, "poll_wait").total_seconds(), 1.0), 60.0)
        self._stop = asyncio.Event()
        self._abandon = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._in_flight = 0
        self._loop_task: Optional[asyncio.Task[None]] = None

    @property
    def active_tasks(self) -> int:
        """Handlers currently running."""
        return self._in_flight

    async def declare_triggers(self) -> None:
        """Creates the event triggers the worker's jobs declare (idempotent: an existing
        identical trigger is kept). ``async with`` and :meth:`run_until` call it before
        polling; :meth:`start` does it first thing in the background (retrying while the
        server is unreachable).

        Raises:
            TriggerDeclarationError: the server refused a declaration, e.g.
                ``ALREADY_EXISTS`` for a trigger of the same event, key and job with other
                options, or ``INVALID_ARGUMENT`` for a bad event name.
            UnavailableError: the server could not be reached.
        """
        if self._triggers_declared:
            return
        for name, job in self._jobs.items():
            for declared in job.triggers:
                queue = declared.queue_name or self.queues[0]
                try:
                    if self._triggers_stub is None:
                        raise InvalidArgumentError("this worker has no trigger service (create it with StackShift.worker)")
                    request = create_request(
                        declared.event,
                        name,
                        key=declared.key,
                        queue_name=queue,
                        retry_policy=declared.retry_policy,
                        lease_timeout=declared.lease_timeout,
                        priority=declared.priority,
                    )
                    answer = await call(self._triggers_stub, "CreateEventTrigger", request)
                except StackShiftError as e:
                    if e.is_transient:
                        raise
                    raise TriggerDeclarationError(name, declared.event, declared.key or "", queue, e) from e
                log.info(
                    "declared event trigger in place: job %s event %s trigger %s (created %s)",
                    name,
                    declared.event,
                    answer.trigger.id,
                    answer.created,
                )
        self._triggers_declared = True

    async def _declare_in_background(self) -> bool:
        """For :meth:`start`: declares the triggers, retrying while the server is unreachable.
        False when the worker must not poll (shutdown requested meanwhile); a refusal
        raises."""
        backoff = Backoff()
        while True:
            try:
                await self.declare_triggers()
                return True
            except TriggerDeclarationError as e:
                log.error("worker %s does not start: %s", self.worker_id, e)
                raise
            except StackShiftError as e:
                if not e.is_transient:
                    raise
                delay = backoff.next()
                log.warning("cannot create the declared event triggers yet (%s); retrying in %.0f ms", e, delay * 1000)
                await sleep_unless(self._stop.wait, delay)
                if self._stop.is_set():
                    return False

    def start(self) -> "Worker":
        """Starts polling in the background (in the running event loop); returns ``self``.
        Declared triggers are created first; if that fails the worker logs the error and does
        not poll, and :meth:`shutdown` raises the :class:`TriggerDeclarationError`. Prefer
        ``async with``, which raises it at once."""
        if self._loop_task is None:
            self._loop_task = asyncio.ensure_future(self._poll_loop())
        return self

    async def shutdown(self) -> None:
        """Stops polling, lets in-flight handlers finish within the grace period, abandons the
        rest (redelivered when their leases expire), and returns once the worker stopped."""
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task

    async def run_until(self, stop: Union[asyncio.Event, Awaitable[object], None] = None) -> None:
        """Creates the declared triggers, runs until ``stop`` is set/completes (default: SIGINT
        or SIGTERM), then shuts down."""
        await self.declare_triggers()
        self.start()
        if stop is None:
            event = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, event.set)
            try:
                await event.wait()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        elif isinstance(stop, asyncio.Event):
            await stop.wait()
        else:
            await stop
        await self.shutdown()

    async def __aenter__(self) -> "Worker":
        await self.declare_triggers()
        return self.start()

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.shutdown()

    async def _poll_loop(self) -> None:
        jobs = []
        for name, job in self._jobs.items():
            spec = worker_pb2.JobSpec(name=name)
            if job.lease_timeout is not None:
                spec.lease_timeout.CopyFrom(to_proto(to_timedelta(job.lease_timeout)))
            jobs.append(spec)
        if not jobs:
            log.error("worker has no jobs registered; it will not poll")
            return
        if not await self._declare_in_background():
            return
        env = TaskEnv(stub=self._stub, jobs=self._jobs, abandon=self._abandon, state_stub=self._state_stub)
        log.info("worker %s started: queues %s, jobs %s, concurrency %d", self.worker_id, self.queues, list(self._jobs), self.concurrency)
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while not self._stop.is_set():
            while self._in_flight >= self.concurrency and not self._stop.is_set():
                self._slot_freed.clear()
                await sleep_unless(self._wait_slot_or_stop, 3600)
            if self._stop.is_set():
                break
            free = min(self.concurrency - self._in_flight, _MAX_TASKS_PER_POLL)
            request = worker_pb2.PollTaskRequest(worker_id=self.worker_id, queues=self.queues, jobs=jobs, max_tasks=free)
            request.wait.FromMilliseconds(int(self._poll_wait * 1000))
            started = loop.time()
            poll = asyncio.ensure_future(self._stub.PollTask(request, timeout=self._poll_wait + _POLL_SLACK))
            stopped = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({poll, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not poll.done():
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
                break
            delay: Optional[float] = None
            error = poll.exception()
            if error is None:
                tasks = list(poll.result().tasks)
                backoff.reset()
                if len(tasks) > free:
                    log.error("server sent %d tasks, more than the %d asked for; dropping the extra ones", len(tasks), free)
                for task in tasks[:free]:
                    self._in_flight += 1
                    asyncio.ensure_future(self._run_task(env, task))
                if not tasks and loop.time() - started < self._poll_wait / 2:
                    delay = 0.05 + random.random() * 0.1  # never a busy loop
            else:
                delay = backoff.next()
                if isinstance(error, grpc.aio.AioRpcError) and error.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    log.error("server refused the worker's credentials (%s); check STACKSHIFT_API_KEY", error.details())
                else:
                    log.warning("poll failed (%s); retrying in %.0f ms", error, delay * 1000)
            if delay is not None:
                await sleep_unless(self._stop.wait, delay)
        await self._drain()

    async def _wait_slot_or_stop(self) -> None:
        slot = asyncio.ensure_future(self._slot_freed.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({slot, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            slot.cancel()
            stop.cancel()

    async def _run_task(self, env: TaskEnv, task: worker_pb2.Task) -> None:
        try:
            await execute(env, task)
        except Exception:
            log.exception("task execution for run %s failed unexpectedly", task.run_id)
        finally:
            self._in_flight -= 1
            self._slot_freed.set()

    async def _drain(self) -> None:
        async def wait_idle(seconds: float) -> None:
            loop = asyncio.get_running_loop()
            until = loop.time() + seconds
            while self._in_flight > 0 and loop.time() < until:
                await asyncio.sleep(min(0.05, max(until - loop.time(), 0)))

        if self._in_flight:
            log.info("worker stopping; waiting up to %.1f s for %d running handler(s)", self._grace, self._in_flight)
        await wait_idle(self._grace)
        if self._in_flight:
            log.warning("shutdown grace period over; abandoning %d running handler(s)", self._in_flight)
            self._abandon.set()
            await wait_idle(_ABANDON_WAIT)
        log.info("worker %s stopped", self.worker_id)


def _default_worker_id() -> str:
    """``<hostname>-<pid>-<6 random hex digits>``."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-_.")[:100] or "worker"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
