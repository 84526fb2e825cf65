"""Events: :class:`Events` (``stackshift.events``) publishes events, which resume the runs
waiting for them, and lists stored events; :class:`Event` is an event as stored, which
``step.wait_for_event`` returns.

Example::

    published = await stackshift.events.publish(
        "payment.confirmed", {"amount": 4200}, key="pay_123", id="stripe:evt_1N2b3c"
    )
    print(published.resumed_run_count, published.duplicate)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from . import _json
from ._stub import call
from .v1 import events_pb2


@dataclass
class Event:
    """An event as stored by the server."""

    #: The event's id (given at publish, or assigned by the server).
    id: str
    #: The event's name, e.g. ``payment.confirmed``.
    name: str
    #: The payload (decoded JSON; ``None`` when published without one).
    payload: Any
    #: When the server stored the event.
    published_at: Optional[datetime]
    #: The correlation key; ``None`` when the event has none.
    key: Optional[str] = None


@dataclass
class PublishedEvent:
    """What :meth:`Events.publish` returns."""

    #: The stored event (the earlier one when ``duplicate``).
    event: Event
    #: True when an event with this id was already stored: nothing new was published.
    duplicate: bool
    #: How many waiting runs this event resumed.
    resumed_run_count: int
    #: The ids of the resumed runs.
    resumed_run_ids: list[str] = field(default_factory=list)
    #: The ids of the runs the event started through event triggers (one per subscribed
    #: job; empty for a duplicate).
    started_run_ids: list[str] = field(default_factory=list)


@dataclass
class EventPage:
    """One page of :meth:`Events.list`, newest first."""

    events: list[Event]
    next_page_token: Optional[str] = None


def event_from_proto(e: events_pb2.Event) -> Event:
    """A wire event as an :class:`Event`."""
    return Event(
        id=e.id,
        name=e.name,
        payload=_json.decode(e.payload, "event payload"),
        published_at=e.published_at.ToDatetime(tzinfo=timezone.utc) if e.HasField("published_at") else None,
        key=e.correlation_key or None,
    )


def event_from_wait_output(output: bytes) -> Optional[Event]:
    """Decodes what the server journals for an ended event wait: the event, or ``None`` when
    the wait timed out."""
    envelope = json.loads(output.decode("utf-8")) if output else None
    if not isinstance(envelope, dict):
        raise ValueError("not an event wait result")
    if envelope.get("timedOut") is True:
        return None
    e = envelope.get("event")
    if not isinstance(e, dict):
        raise ValueError("an event wait result without its event")
    published = e.get("publishedAt")
    return Event(
        id=str(e.get("id", "")),
        name=str(e.get("name", "")),
        payload=e.get("payload"),
        published_at=datetime.fromtimestamp(published / 1000, tz=timezone.utc) if isinstance(published, (int, float)) else None,
        key=e.get("correlationKey") or None,
    )


class Events:
    """Publishes and lists events (``stackshift.events``)."""

    def __init__(self, stub: Callable[[], Any]) -> None:
        self._stub = stub

    async def publish(
        self, name: str, payload: Any = None, *, key: Optional[str] = None, id: Optional[str] = None
    ) -> PublishedEvent:
        """Publishes the event ``name`` with ``payload`` (any JSON value).

        ``key`` is the correlation key: only waits for the same key match (waits without a key
        match only events without one). ``id`` deduplicates: publishing an id the server already
        stores does nothing and answers ``duplicate=True``. Runs waiting for the event resume
        (``resumed_run_count``); runs created before the event but not yet waiting receive it
        when they reach their wait. Jobs subscribed to the event through triggers each get a
        new run (``started_run_ids``).
        """
        request = events_pb2.PublishEventRequest(
            name=name, payload=_json.encode(payload, "event payload"), id=id or "", correlation_key=key or ""
        )
        response = await call(self._stub(), "PublishEvent", request)
        return PublishedEvent(
            event=event_from_proto(response.event),
            duplicate=response.duplicate,
            resumed_run_count=response.resumed_run_count,
            resumed_run_ids=list(response.resumed_run_ids),
            started_run_ids=list(response.started_run_ids),
        )

    async def list(
        self,
        *,
        name: Optional[str] = None,
        key: Optional[str] = None,
        published_after: Optional[datetime] = None,
        published_before: Optional[datetime] = None,
        page_size: Optional[int] = None,
        page_token: Optional[str] = None,
    ) -> EventPage:
        """One page of stored events, newest first, filtered by name and correlation key."""
        request = events_pb2.ListEventsRequest(
            name=name or "", correlation_key=key or "", page_size=page_size or 0, page_token=page_token or ""
        )
        if published_after is not None:
            request.published_after.FromDatetime(published_after)
        if published_before is not None:
            request.published_before.FromDatetime(published_before)
        response = await call(self._stub(), "ListEvents", request)
        return EventPage(
            events=[event_from_proto(e) for e in response.events], next_page_token=response.next_page_token or None
        )
