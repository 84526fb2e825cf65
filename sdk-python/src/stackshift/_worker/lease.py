"""The lease an attempt runs under, and the write path every worker RPC takes.

:class:`Lease` holds the run id, the lease token, a local estimate of the deadline (extended by
each heartbeat) and the interrupt switch. :func:`write` sends one worker RPC: it retries
``UNAVAILABLE`` (and timeouts, broken connections) with backoff until the lease deadline, turns
``ABORTED``, ``FAILED_PRECONDITION`` and ``NOT_FOUND`` into an interruption, and reports anything
else as rejected. Identical rules in every StackShift SDK.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, Optional, TypeVar, Union

import grpc
import grpc.aio

from ..errors import AttemptInterruptedError

T = TypeVar("T")
log = logging.getLogger("stackshift")

#: Deadline of one worker write RPC, in seconds.
WRITE_TIMEOUT = 10.0

LEASE_LOST = {grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


class Backoff:
    """100 ms doubling up to 5 s, each delay randomized to between half and all of it."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self._initial, self._maximum, self._failures = initial, maximum, 0

    def next(self) -> float:
        nominal = min(self._initial * 2.0 ** min(self._failures, 20), self._maximum)
        self._failures += 1
        return nominal / 2 + random.random() * nominal / 2

    def reset(self) -> None:
        self._failures = 0


class Lease:
    """One attempt's lease (times are ``loop.time()`` seconds)."""

    def __init__(self, run_id: str, token: str, timeout: float) -> None:
        self.run_id = run_id
        self.token = token
        self.timeout = timeout
        self.deadline = asyncio.get_running_loop().time() + timeout
        self._event = asyncio.Event()
        self._reason: Optional[str] = None
        self._suspended = False

    def extended(self, sent_at: float) -> None:
        """Records a successful heartbeat sent at ``sent_at``."""
        self.deadline = max(self.deadline, sent_at + self.timeout)

    def interrupt(self, reason: str) -> None:
        """Stops the attempt: nothing more is run or written. The first reason wins."""
        if self._reason is None:
            self._reason = reason
        self._event.set()

    def suspend(self, reason: str) -> None:
        """Stops the attempt because the run suspended (a sleep or an event wait): the server
        released the lease and delivers the run again when the wait ends."""
        self._suspended = True
        self.interrupt(reason)

    @property
    def suspended(self) -> bool:
        """True once :meth:`suspend` was called."""
        return self._suspended

    @property
    def interrupted(self) -> bool:
        return self._event.is_set()

    async def wait_interrupted(self) -> None:
        await self._event.wait()

    def error(self) -> AttemptInterruptedError:
        """The error ``step.run`` raises once the attempt is interrupted."""
        return AttemptInterruptedError(self._reason or "the attempt was stopped")


@dataclass
class Interrupted:
    """The run was cancelled or the lease is lost; the lease is now interrupted."""

    error: AttemptInterruptedError


@dataclass
class GaveUp:
    """The server stayed unreachable until the lease deadline passed; it will redeliver."""

    error: grpc.aio.AioRpcError


@dataclass
class Rejected:
    """The server refused the write for another reason."""

    error: grpc.aio.AioRpcError


@dataclass
class Ok(Generic[T]):
    value: T


WriteResult = Union[Ok[T], Interrupted, GaveUp, Rejected]


def lost_reason(error: grpc.aio.AioRpcError) -> str:
    """A human-readable reason for an interruption caused by ``error``."""
    what = {
        grpc.StatusCode.ABORTED: "the run was cancelled",
        grpc.StatusCode.FAILED_PRECONDITION: "the lease is no longer valid",
        grpc.StatusCode.NOT_FOUND: "the run no longer exists",
    }.get(error.code(), "the attempt was stopped")
    details = error.details()
    return f"{what} ({details})" if details else what


async def sleep_unless(event_wait: Callable[[], Awaitable[object]], delay: float) -> None:
    """Sleeps ``delay`` seconds, or less if ``event_wait()`` completes first."""
    waiter = asyncio.ensure_future(event_wait())
    try:
        await asyncio.wait({waiter}, timeout=delay)
    finally:
        waiter.cancel()


async def write(lease: Lease, what: str, call: Callable[[float], Awaitable[T]]) -> WriteResult[T]:
    """Sends one worker write, retrying transient failures with backoff until the lease deadline."""
    backoff = Backoff()
    loop = asyncio.get_running_loop()
    while True:
        if lease.interrupted:
            return Interrupted(lease.error())
        try:
            return Ok(await call(WRITE_TIMEOUT))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code in LEASE_LOST:
                lease.interrupt(lost_reason(error))
                return Interrupted(lease.error())
            if code not in TRANSIENT:
                return Rejected(error)
            now = loop.time()
            if now >= lease.deadline:
                return GaveUp(error)
            delay = min(backoff.next(), lease.deadline - now)
            log.warning("%s failed (%s: %s); retrying in %.0f ms while the lease lasts", what, code.name, error.details(), delay * 1000)
            await sleep_unless(lease.wait_interrupted, delay)
