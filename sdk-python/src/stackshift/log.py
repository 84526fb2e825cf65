"""The handler's run-scoped logger, ``ctx.log``.

Lines carry a level, a message and structured fields (a JSON object), and are tied to the run,
the attempt and the step whose body was executing when they were logged. They are buffered and
sent in batches (``AppendLogs``): when 100 lines are waiting, one second after the first
waiting line, and always before the attempt reports its outcome or suspends. Logging never
fails or blocks the handler: lines that cannot be sent (the lease is gone, the server stayed
unreachable) are dropped.

Example::

    ctx.log.info("charging the card")
    ctx.log.info("charged", amount_cents=4200, currency="EUR")
    ctx.log.bind(customer="cus_1").warn("the provider was slow")

The server keeps at most 1,000 lines and 1 MiB per run (see ``docs/observability.md``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional

from google.protobuf import timestamp_pb2

from .v1 import observability_pb2, worker_pb2

if TYPE_CHECKING:
    from ._worker.lease import Lease
    from ._worker.task import WorkerStub

_log = logging.getLogger("stackshift")

#: Lines buffered before a batch is sent at once.
FLUSH_LINES = 100
#: Longest a line waits in the buffer, in seconds.
FLUSH_INTERVAL = 1.0

#: The step whose body is executing (set by ``step.run``).
current_step: ContextVar[str] = ContextVar("stackshift_current_step", default="")

_LEVELS = {
    "debug": observability_pb2.LOG_LEVEL_DEBUG,
    "info": observability_pb2.LOG_LEVEL_INFO,
    "warn": observability_pb2.LOG_LEVEL_WARN,
    "error": observability_pb2.LOG_LEVEL_ERROR,
}


class _Sink:
    """The buffer shared by a logger and the loggers bound from it."""

    def __init__(self, stub: "WorkerStub", lease: "Lease") -> None:
        self.stub = stub
        self.lease = lease
        self.lines: list[observability_pb2.LogEntry] = []
        self.timer: Optional[asyncio.TimerHandle] = None
        self.sending = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, entry: observability_pb2.LogEntry) -> None:
        self.lines.append(entry)
        loop = asyncio.get_running_loop()
        if len(self.lines) >= FLUSH_LINES:
            self.spawn()
        elif self.timer is None:
            self.timer = loop.call_later(FLUSH_INTERVAL, self.spawn)

    def spawn(self) -> None:
        task = asyncio.ensure_future(self.flush())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def flush(self) -> None:
        from ._worker.lease import Ok, write

        async with self.sending:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            lines, self.lines = self.lines, []
            if not lines:
                return
            lease = self.lease
            request = worker_pb2.AppendLogsRequest(run_id=lease.run_id, lease_token=lease.token, entries=lines)
            result = await write(lease, "AppendLogs", lambda timeout: self.stub.AppendLogs(request, timeout=timeout))
            if not isinstance(result, Ok):
                _log.debug("run %s: %d log line(s) could not be sent; dropped", lease.run_id, len(lines))
            elif result.value.dropped > 0:
                _log.debug("run %s: %d log line(s) dropped by the run's log cap", lease.run_id, result.value.dropped)


class Logger:
    """The run-scoped logger of a handler (``ctx.log``). Fields are keyword arguments; values
    that are not JSON-serializable are logged as their ``str()``."""

    def __init__(self, sink: _Sink, fields: Optional[dict[str, Any]] = None) -> None:
        self._sink = sink
        self._fields: dict[str, Any] = dict(fields or {})

    def bind(self, **fields: Any) -> "Logger":
        """A logger that adds ``fields`` to every line it logs."""
        return Logger(self._sink, {**self._fields, **fields})

    def debug(self, message: str, /, **fields: Any) -> None:
        """Logs at debug level."""
        self._add("debug", message, fields)

    def info(self, message: str, /, **fields: Any) -> None:
        """Logs at info level."""
        self._add("info", message, fields)

    def warn(self, message: str, /, **fields: Any) -> None:
        """Logs at warn level."""
        self._add("warn", message, fields)

    def warning(self, message: str, /, **fields: Any) -> None:
        """Alias of :meth:`warn` (the :mod:`logging` spelling)."""
        self._add("warn", message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        """Logs at error level."""
        self._add("error", message, fields)

    def log(self, level: str, message: str, /, **fields: Any) -> None:
        """Logs at ``level`` (``debug``, ``info``, ``warn`` or ``error``)."""
        if level not in _LEVELS:
            raise ValueError(f"unknown log level {level!r}: expected debug, info, warn or error")
        self._add(level, message, fields)

    async def flush(self) -> None:
        """Sends every buffered line now. The worker calls it before it reports the attempt's
        outcome or suspends; handlers rarely need it."""
        await self._sink.flush()

    def _add(self, level: str, message: str, fields: dict[str, Any]) -> None:
        merged = {**self._fields, **fields}
        at = timestamp_pb2.Timestamp()
        at.FromDatetime(datetime.now(timezone.utc))
        entry = observability_pb2.LogEntry(
            level=_LEVELS[level],
            message=str(message),
            step_id=current_step.get(),
            at=at,
        )
        if merged:
            try:
                encoded = json.dumps(merged, ensure_ascii=False, allow_nan=False, default=str)
            except ValueError as e:  # NaN/Infinity, or a circular value: log the line anyway
                encoded = json.dumps({"fields_error": str(e)})
            entry.fields = encoded.encode("utf-8")
        try:
            self._sink.add(entry)
        except RuntimeError:  # no running event loop: nothing can send it
            pass

    def __repr__(self) -> str:
        return f"Logger(run_id={self._sink.lease.run_id!r}, fields={len(self._fields)})"


def run_logger(stub: "WorkerStub", lease: "Lease") -> Logger:
    """A new logger for one attempt."""
    return Logger(_Sink(stub, lease))
