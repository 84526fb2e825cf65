"""Event triggers: :class:`Triggers` (``stackshift.triggers``) subscribes jobs to events.
Publishing a matching event starts one run of each subscribed job, in the same transaction as
the event (a duplicate event id starts nothing). The run's payload is the event envelope,
decoded by :meth:`TriggeredEvent.from_payload`. A job can also declare its triggers when it
is registered (:class:`EventTriggerDeclaration`); the worker creates them when it starts.
See docs/schedules.md.

Example::

    await stackshift.triggers.create("user.signed_up", "send-welcome-email", queue_name="emails")

    @stackshift.job("send-welcome-email", triggers=["user.signed_up"])
    async def welcome(ctx: JobContext[dict]) -> None:
        event = TriggeredEvent.from_payload(ctx.payload)
        await ctx.step.run("send", lambda: send_welcome(event.payload["email"]))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Union

from ._duration import DurationLike, to_proto, to_timedelta
from ._stub import call
from .errors import InvalidArgumentError, StackShiftError
from .run import RetryPolicy
from .v1 import triggers_pb2


@dataclass
class TriggeredEvent:
    """The payload of a run started by an event trigger: the event that started it."""

    #: The event's id.
    id: str
    #: The event's name.
    name: str
    #: The event's correlation key (``""`` when none).
    correlation_key: str
    #: The event's payload (decoded JSON).
    payload: Any
    #: When the event was published.
    published_at: datetime

    @classmethod
    def from_payload(cls, payload: Any) -> "TriggeredEvent":
        """Reads a triggered run's payload ``{"id", "name", "correlationKey", "payload",
        "publishedAt"}`` (``publishedAt`` in epoch ms). Raises :class:`ValueError` when the
        payload is not such an envelope."""
        if not isinstance(payload, dict):
            raise ValueError("a triggered run's payload is an event envelope object")
        published = payload.get("publishedAt")
        if not isinstance(payload.get("id"), str) or not isinstance(payload.get("name"), str):
            raise ValueError("the event envelope has no id or name")
        if isinstance(published, bool) or not isinstance(published, (int, float)):
            raise ValueError("the event envelope has no publishedAt")
        key = payload.get("correlationKey")
        return cls(
            id=payload["id"],
            name=payload["name"],
            correlation_key=key if isinstance(key, str) else "",
            payload=payload.get("payload"),
            published_at=datetime.fromtimestamp(published / 1000, tz=timezone.utc),
        )


@dataclass
class EventTrigger:
    """A stored trigger."""

    #: The trigger's id (assigned by the server).
    id: str
    #: The event name it listens to.
    event_name: str
    #: The job it starts.
    job: str
    #: The queue of the runs.
    queue: str
    #: Only events with exactly this correlation key start a run; ``None`` = any key.
    correlation_key: Optional[str] = None
    #: Retry overrides of the runs.
    retry_policy: Optional[RetryPolicy] = None
    #: Lease timeout of the runs' attempts.
    lease_timeout: Optional[timedelta] = None
    #: Delivery priority of the runs.
    priority: int = 0
    #: When it was created.
    created_at: Optional[datetime] = None


@dataclass
class CreatedEventTrigger:
    """What :meth:`Triggers.create` returns."""

    #: The trigger as stored.
    trigger: EventTrigger
    #: True when this call created it; False when it existed with the same options.
    created: bool


@dataclass
class EventTriggerPage:
    """One page of :meth:`Triggers.list`, by id."""

    triggers: list[EventTrigger]
    next_page_token: Optional[str] = None


@dataclass
class EventTriggerDeclaration:
    """An event trigger declared with a job (``@stackshift.job(name, triggers=[...])``). The
    worker creates it (idempotently) when it starts, before it polls. The runs go to the
    worker's first queue unless ``queue_name`` is given. A plain string in ``triggers`` is the
    same as ``EventTriggerDeclaration(event=that string)``."""

    #: The event name.
    event: str
    #: Only events with exactly this correlation key start a run; ``None`` = any key.
    key: Optional[str] = None
    #: The queue of the runs; ``None`` = the worker's (first) queue.
    queue_name: Optional[str] = None
    #: Retry overrides of the runs.
    retry_policy: Optional[RetryPolicy] = None
    #: Lease timeout of the runs' attempts.
    lease_timeout: Optional[DurationLike] = None
    #: Delivery priority of the runs.
    priority: Optional[int] = None


#: A trigger declaration as ``job(..., triggers=...)`` accepts it: an event name or a
#: :class:`EventTriggerDeclaration`.
TriggerLike = Union[str, EventTriggerDeclaration]


def declaration(value: TriggerLike, job: str) -> EventTriggerDeclaration:
    """Normalises a :data:`TriggerLike`; raises :class:`InvalidArgumentError` for anything
    else."""
    if isinstance(value, str):
        return EventTriggerDeclaration(event=value)
    if isinstance(value, EventTriggerDeclaration):
        return value
    raise InvalidArgumentError(
        f"the triggers of job {job} must be event names or EventTriggerDeclaration values, got {value!r}"
    )


class TriggerDeclarationError(StackShiftError):
    """The server refused a trigger a worker's job declares (e.g. ``ALREADY_EXISTS``: a
    trigger for the same event, key and job exists with other options; ``INVALID_ARGUMENT``:
    a bad event name). Raised when the worker starts, which then does not poll; ``code`` is
    the server's status name and ``__cause__`` the typed error."""

    def __init__(self, job: str, event: str, key: str, queue: str, cause: StackShiftError) -> None:
        super().__init__(
            f"the server refused the event trigger declared by job {job} (event {event!r}"
            + (f", key {key!r}" if key else "")
            + f", queue {queue!r}): {cause.message}",
            cause.code,
        )
        #: The job that declares the trigger.
        self.job = job
        #: The declared event name.
        self.event = event
        #: The declared correlation key (``""`` = any key).
        self.key = key
        #: The queue of the trigger's runs.
        self.queue = queue


def trigger_from_proto(t: triggers_pb2.EventTrigger) -> EventTrigger:
    """A wire trigger as an :class:`EventTrigger`."""
    return EventTrigger(
        id=t.id,
        event_name=t.event_name,
        job=t.job,
        queue=t.queue,
        correlation_key=t.correlation_key or None,
        retry_policy=RetryPolicy.from_proto(t.retry_policy) if t.HasField("retry_policy") else None,
        lease_timeout=t.lease_timeout.ToTimedelta() if t.HasField("lease_timeout") else None,
        priority=t.priority,
        created_at=t.created_at.ToDatetime(tzinfo=timezone.utc) if t.HasField("created_at") else None,
    )


def create_request(
    event: str,
    job: str,
    *,
    key: Optional[str],
    queue_name: Optional[str],
    retry_policy: Optional[RetryPolicy],
    lease_timeout: Optional[DurationLike],
    priority: Optional[int],
) -> triggers_pb2.CreateEventTriggerRequest:
    """The ``CreateEventTrigger`` request for these options."""
    request = triggers_pb2.CreateEventTriggerRequest(
        event_name=event, correlation_key=key or "", job=job, queue=queue_name or "", priority=priority or 0
    )
    if retry_policy is not None:
        request.retry_policy.CopyFrom(retry_policy.to_proto())
    if lease_timeout is not None:
        request.lease_timeout.CopyFrom(to_proto(to_timedelta(lease_timeout, "lease_timeout")))
    return request


class Triggers:
    """Manages event triggers (``stackshift.triggers``)."""

    def __init__(self, stub: Callable[[], Any]) -> None:
        self._stub = stub

    async def create(
        self,
        event: str,
        job: str,
        *,
        key: Optional[str] = None,
        queue_name: Optional[str] = None,
        retry_policy: Optional[RetryPolicy] = None,
        lease_timeout: Optional[DurationLike] = None,
        priority: Optional[int] = None,
    ) -> CreatedEventTrigger:
        """Subscribes ``job`` to the events named ``event`` (only those with exactly the
        correlation ``key`` when given). Each matching event starts one run on ``queue_name``
        (default ``default``) whose payload is the event (:class:`TriggeredEvent`).

        The same (event, key, job) with the same options returns the stored trigger with
        ``created=False``; with other options it raises
        :class:`~stackshift.AlreadyExistsError`. At most 100 triggers per event name.
        """
        request = create_request(
            event,
            job,
            key=key,
            queue_name=queue_name,
            retry_policy=retry_policy,
            lease_timeout=lease_timeout,
            priority=priority,
        )
        response = await call(self._stub(), "CreateEventTrigger", request)
        return CreatedEventTrigger(trigger=trigger_from_proto(response.trigger), created=response.created)

    async def list(
        self,
        *,
        event: Optional[str] = None,
        job: Optional[str] = None,
        page_size: Optional[int] = None,
        page_token: Optional[str] = None,
    ) -> EventTriggerPage:
        """One page of triggers, by id, optionally only those of ``event`` and/or ``job``."""
        request = triggers_pb2.ListEventTriggersRequest(
            event_name=event or "", job=job or "", page_size=page_size or 0, page_token=page_token or ""
        )
        response = await call(self._stub(), "ListEventTriggers", request)
        return EventTriggerPage(
            triggers=[trigger_from_proto(t) for t in response.triggers],
            next_page_token=response.next_page_token or None,
        )

    async def delete(self, trigger_id: str) -> None:
        """Deletes a trigger; events published afterwards start nothing for it."""
        await call(self._stub(), "DeleteEventTrigger", triggers_pb2.DeleteEventTriggerRequest(trigger_id=trigger_id))
