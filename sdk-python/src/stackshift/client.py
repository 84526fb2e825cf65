"""The client: :class:`StackShift` starts, inspects, waits for, lists, cancels and retries runs,
registers job handlers (optionally with event triggers) and creates workers; ``queue(name)``
enqueues onto and manages a named queue, ``events`` publishes and lists events, ``state``
reads and writes the state store, ``schedules`` manages schedules and ``triggers`` event
triggers.

Example::

    async with StackShift(api_key=os.environ["STACKSHIFT_API_KEY"]) as stackshift:
        started = await stackshift.start(
            "send-verification-email",
            {"userId": "user_123", "email": "ada@example.com"},
            queue_name="emails",
            idempotency_key="verify:user_123",
            idempotency_ttl="30d",
        )
"""

from __future__ import annotations

import asyncio
import os
import re
from datetime import datetime
from types import TracebackType
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar, Union, overload
from urllib.parse import urlparse

import grpc
import grpc.aio

from . import _json
from ._duration import DurationLike, to_proto, to_timedelta
from ._stub import AuthStub, call
from ._worker.task import RegisteredJob
from .context import Handler
from .errors import InvalidArgumentError, from_rpc_error
from .events import Events
from .queues import Queue, QueuePage, queue_from_proto
from .run import RetryPolicy, Run, RunPage, StartedRun, status_to_proto
from .schedules import Schedules
from .state import State
from .triggers import TriggerLike, Triggers, declaration
from .v1 import (
    common_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
    schedules_pb2_grpc,
    state_pb2_grpc,
    triggers_pb2_grpc,
    worker_pb2_grpc,
)
from .worker import DEFAULT_CONCURRENCY, Worker

#: The endpoint used when none is configured.
DEFAULT_ENDPOINT = "http://127.0.0.1:7447"
#: SDK version, sent in the user agent.
SDK_VERSION = "0.1.0"

_CALL_TIMEOUT = 30.0
_MAX_SERVER_WAIT = 60.0
_LONG_POLL_SLACK = 10.0

#: A PEM document as bytes, or the path of a PEM file.
PemLike = Union[bytes, str, "os.PathLike[str]"]

H = TypeVar("H", bound=Callable[..., Any])
T = TypeVar("T")


def _pem(field: str, value: Optional[PemLike]) -> Optional[bytes]:
    """PEM bytes as given, or read from a path; ``None`` when unset."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgumentError(f"invalid TLS settings: {field}: cannot read {os.fspath(value)!r}: {e}") from None


class StackShift:
    """A StackShift client, and the registry of job handlers its workers run.

    ``api_key`` defaults to ``STACKSHIFT_API_KEY``; ``endpoint`` to ``STACKSHIFT_ENDPOINT``,
    else ``http://127.0.0.1:7447``. The gRPC channel opens lazily on the first call (inside the
    running event loop); close it with :meth:`close` or ``async with``.

    An ``https://`` endpoint connects over TLS, trusting the system roots unless ``tls_ca`` is
    given; ``tls_client_cert`` and ``tls_client_key`` (both or neither) are presented to a server
    that requires mutual TLS. Each is PEM ``bytes`` or a path (``str``/``os.PathLike``) to a PEM
    file, and defaults to the file named by ``STACKSHIFT_TLS_CA``, ``STACKSHIFT_TLS_CLIENT_CERT``
    and ``STACKSHIFT_TLS_CLIENT_KEY``.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        endpoint: Optional[str] = None,
        *,
        tls_ca: Optional[PemLike] = None,
        tls_client_cert: Optional[PemLike] = None,
        tls_client_key: Optional[PemLike] = None,
    ) -> None:
        def env(name: str) -> Optional[str]:
            value = os.environ.get(name, "").strip()
            return value or None

        self.endpoint = (endpoint or env("STACKSHIFT_ENDPOINT") or DEFAULT_ENDPOINT).strip()
        key = api_key if api_key is not None else env("STACKSHIFT_API_KEY")
        if key is not None and not re.fullmatch(r"[\x21-\x7e]+", key):
            raise InvalidArgumentError("api_key must be non-empty printable ASCII without spaces")
        url = urlparse(self.endpoint)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise InvalidArgumentError(f"invalid endpoint {self.endpoint!r}: expected e.g. http://127.0.0.1:7447")
        self._target = url.netloc
        self._secure = url.scheme == "https"
        self._tls_ca = _pem("tls_ca", tls_ca if tls_ca is not None else env("STACKSHIFT_TLS_CA"))
        cert = _pem("tls_client_cert", tls_client_cert if tls_client_cert is not None else env("STACKSHIFT_TLS_CLIENT_CERT"))
        key_pem = _pem("tls_client_key", tls_client_key if tls_client_key is not None else env("STACKSHIFT_TLS_CLIENT_KEY"))
        if (cert is None) != (key_pem is None):
            raise InvalidArgumentError(
                "invalid TLS settings: set both tls_client_cert and tls_client_key for mutual TLS, or neither"
            )
        self._tls_cert = cert
        self._tls_key = key_pem
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {key}"),) if key else ()
        self._channel: Optional[grpc.aio.Channel] = None
        self._jobs_stub: Any = None
        self._worker_stub: Any = None
        self._state_stub: Any = None
        self._events_stub: Any = None
        self._queues_stub: Any = None
        self._schedules_stub: Any = None
        self._triggers_stub: Any = None
        self._registry: dict[str, RegisteredJob] = {}
        #: The state store, outside runs (calls apply directly, not journaled).
        self.state = State(self._state)
        #: Publishes and lists events.
        self.events = Events(self._events)
        #: Creates and manages schedules.
        self.schedules = Schedules(self._schedules)
        #: Creates and manages event triggers.
        self.triggers = Triggers(self._triggers)

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._channel is not None:
            return
        options = [
            ("grpc.primary_user_agent", f"stackshift-sdk-python/{SDK_VERSION}"),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        if self._secure:
            self._channel = grpc.aio.secure_channel(
                self._target,
                grpc.ssl_channel_credentials(
                    root_certificates=self._tls_ca, private_key=self._tls_key, certificate_chain=self._tls_cert
                ),
                options=options,
            )
        else:
            self._channel = grpc.aio.insecure_channel(self._target, options=options)
        self._jobs_stub = jobs_pb2_grpc.JobsServiceStub(self._channel)
        self._worker_stub = AuthStub(worker_pb2_grpc.WorkerServiceStub(self._channel), self._metadata)
        self._state_stub = AuthStub(state_pb2_grpc.StateServiceStub(self._channel), self._metadata)
        self._events_stub = AuthStub(events_pb2_grpc.EventsServiceStub(self._channel), self._metadata)
        self._queues_stub = AuthStub(queues_pb2_grpc.QueuesServiceStub(self._channel), self._metadata)
        self._schedules_stub = AuthStub(schedules_pb2_grpc.ScheduleServiceStub(self._channel), self._metadata)
        self._triggers_stub = AuthStub(triggers_pb2_grpc.TriggerServiceStub(self._channel), self._metadata)

    def _state(self) -> Any:
        self._connect()
        return self._state_stub

    def _events(self) -> Any:
        self._connect()
        return self._events_stub

    def _queues(self) -> Any:
        self._connect()
        return self._queues_stub

    def _schedules(self) -> Any:
        self._connect()
        return self._schedules_stub

    def _triggers(self) -> Any:
        self._connect()
        return self._triggers_stub

    @property
    def jobs(self) -> Any:
        """The generated ``JobsServiceStub`` (raw access; pass the API key as metadata yourself)."""
        self._connect()
        return self._jobs_stub

    async def close(self) -> None:
        """Closes the gRPC channel (workers of this client must be shut down first)."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> "StackShift":
        return self

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, timeout: float = _CALL_TIMEOUT) -> Any:
        self._connect()
        try:
            return await getattr(self._jobs_stub, method)(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

    # -- runs ---------------------------------------------------------------------------------

    async def start(
        self,
        job: str,
        payload: Any = None,
        *,
        queue_name: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        idempotency_ttl: Optional[DurationLike] = None,
        retry_policy: Optional[RetryPolicy] = None,
        lease_timeout: Optional[DurationLike] = None,
        delay: Optional[DurationLike] = None,
        run_at: Optional[datetime] = None,
        priority: Optional[int] = None,
        concurrency_key: Optional[str] = None,
    ) -> StartedRun:
        """Starts a run of ``job`` with ``payload`` (any JSON value). With an
        ``idempotency_key`` already used within its TTL (default 24 h; ``"30d"``-style), returns
        the existing run with ``duplicate=True`` instead.

        ``delay`` (``"10m"``, a timedelta or seconds) or ``run_at`` (an aware datetime) make the
        run due later; ``priority`` (higher first, default 0) orders due runs of a queue;
        ``concurrency_key`` groups runs for the queue's ``key_concurrency_limit``.
        """
        request = jobs_pb2.StartRunRequest(
            job=job,
            payload=_json.encode(payload, "payload"),
            queue=queue_name or "",
            idempotency_key=idempotency_key or "",
            priority=priority or 0,
            concurrency_key=concurrency_key or "",
        )
        if idempotency_ttl is not None:
            request.idempotency_ttl.CopyFrom(to_proto(to_timedelta(idempotency_ttl, "idempotency_ttl")))
        if lease_timeout is not None:
            request.lease_timeout.CopyFrom(to_proto(to_timedelta(lease_timeout, "lease_timeout")))
        if retry_policy is not None:
            request.retry_policy.CopyFrom(retry_policy.to_proto())
        if delay is not None and run_at is not None:
            raise InvalidArgumentError("pass delay or run_at, not both")
        if delay is not None:
            request.delay.CopyFrom(to_proto(to_timedelta(delay, "delay")))
        if run_at is not None:
            request.run_at.FromDatetime(run_at)
        response = await self._call("StartRun", request)
        run = Run.from_proto(response.run)
        return StartedRun(id=run.id, run=run, duplicate=response.duplicate)

    def queue(self, name: str) -> Queue:
        """A handle on a named queue: ``await stackshift.queue("emails").enqueue(job, payload)``,
        ``configure``, ``get``, ``pause``, ``resume``."""
        return Queue(self, name)

    async def list_queues(self, *, page_size: Optional[int] = None, page_token: Optional[str] = None) -> QueuePage:
        """One page of the namespace's queues with their configuration and stats."""
        request = queues_pb2.ListQueuesRequest(page_size=page_size or 0, page_token=page_token or "")
        response = await call(self._queues(), "ListQueues", request)
        return QueuePage(queues=[queue_from_proto(q) for q in response.queues], next_page_token=response.next_page_token or None)

    async def get_run(self, run_id: str) -> Run:
        """A run with its attempts and steps. Raises :class:`NotFoundError` for an unknown id."""
        response = await self._call("GetRun", jobs_pb2.GetRunRequest(run_id=run_id))
        return Run.from_proto(response.run)

    async def wait_for_run(self, run_id: str, timeout: DurationLike = "60s") -> Run:
        """Waits until the run is completed, failed or cancelled, or until ``timeout`` passes, and
        returns the run as it then is (check ``run.status``)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + to_timedelta(timeout, "timeout").total_seconds()
        while True:
            wait = max(0.0, min(until - loop.time(), _MAX_SERVER_WAIT))
            request = jobs_pb2.GetRunRequest(run_id=run_id)
            if wait > 0:
                request.wait.FromMilliseconds(int(wait * 1000))
            response = await self._call("GetRun", request, timeout=wait + _LONG_POLL_SLACK)
            run = Run.from_proto(response.run)
            if run.is_final or loop.time() >= until:
                return run
            if wait < 1.0:
                await asyncio.sleep(0.1)

    async def list_runs(
        self,
        *,
        job: Optional[str] = None,
        queue: Optional[str] = None,
        status: Optional[str] = None,
        page_size: Optional[int] = None,
        page_token: Optional[str] = None,
    ) -> RunPage:
        """One page of runs, newest first."""
        request = jobs_pb2.ListRunsRequest(
            job=job or "",
            queue=queue or "",
            status=status_to_proto(status) if status else common_pb2.RUN_STATUS_UNSPECIFIED,
            page_size=page_size or 0,
            page_token=page_token or "",
        )
        response = await self._call("ListRuns", request)
        return RunPage(runs=[Run.from_proto(r) for r in response.runs], next_page_token=response.next_page_token or None)

    async def cancel_run(self, run_id: str, reason: str = "") -> Run:
        """Cancels a queued, running or waiting run (:class:`FailedPreconditionError` if final)."""
        response = await self._call("CancelRun", jobs_pb2.CancelRunRequest(run_id=run_id, reason=reason))
        return Run.from_proto(response.run)

    async def retry_run(self, run_id: str) -> Run:
        """Gives a failed or cancelled run new attempts; its completed steps stay memoized."""
        response = await self._call("RetryRun", jobs_pb2.RetryRunRequest(run_id=run_id))
        return Run.from_proto(response.run)

    # -- jobs and workers ---------------------------------------------------------------------

    @overload
    def job(
        self,
        name: str,
        handler: None = None,
        *,
        lease_timeout: Optional[DurationLike] = None,
        triggers: Optional[Sequence[TriggerLike]] = None,
    ) -> Callable[[H], H]: ...

    @overload
    def job(
        self,
        name: str,
        handler: H,
        *,
        lease_timeout: Optional[DurationLike] = None,
        triggers: Optional[Sequence[TriggerLike]] = None,
    ) -> H: ...

    def job(
        self,
        name: str,
        handler: Optional[H] = None,
        *,
        lease_timeout: Optional[DurationLike] = None,
        triggers: Optional[Sequence[TriggerLike]] = None,
    ) -> Any:
        """Registers a handler for the job ``name``; workers created afterwards run it. Works as
        a decorator (``@stackshift.job("name")``) or a call (``stackshift.job("name", fn)``).
        Registering a name twice keeps the last handler.

        ``triggers`` declares event triggers: event names, or
        :class:`~stackshift.EventTriggerDeclaration` values (correlation key, queue, run
        options). Each matching event published starts a run of the job whose payload is the
        event (:class:`~stackshift.TriggeredEvent`). A worker running the job creates its
        triggers (idempotently) when it starts, before it polls; runs go to the worker's first
        queue unless the declaration names one. A declaration the server refuses (e.g. a
        trigger for the same event, key and job with other options) makes the worker's start
        raise :class:`~stackshift.TriggerDeclarationError`. Removing a declaration does not
        delete the stored trigger (``stackshift.triggers.delete``)."""
        timeout = None if lease_timeout is None else to_timedelta(lease_timeout, "lease_timeout").total_seconds()
        if isinstance(triggers, str):
            raise InvalidArgumentError(f"the triggers of job {name} must be a list, e.g. triggers=[{triggers!r}]")
        declared = [declaration(t, name) for t in triggers or ()]

        def register(fn: H) -> H:
            if not callable(fn):
                raise InvalidArgumentError(f"the handler of job {name} must be callable")
            self._registry[name] = RegisteredJob(handler=fn, lease_timeout=timeout, triggers=declared)
            return fn

        return register if handler is None else register(handler)

    @property
    def registered_jobs(self) -> list[str]:
        """The names of the registered jobs."""
        return list(self._registry)

    def worker(
        self,
        *,
        queues: Optional[list[str]] = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        worker_id: Optional[str] = None,
        shutdown_grace: DurationLike = "30s",
        poll_wait: DurationLike = "30s",
    ) -> Worker:
        """A worker for every job registered so far. Start it with ``async with``, ``start()``
        or ``run_until()``; it first creates the event triggers its jobs declare."""
        self._connect()
        return Worker(
            self._worker_stub,
            self._registry,
            queues=queues,
            concurrency=concurrency,
            worker_id=worker_id,
            shutdown_grace=shutdown_grace,
            poll_wait=poll_wait,
            state_stub=self._state_stub,
            triggers_stub=self._triggers_stub,
        )
