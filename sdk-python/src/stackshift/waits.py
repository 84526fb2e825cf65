"""Combined waits: what ``step.wait_for_any`` and ``step.wait_for_all`` take and return.
:class:`WaitItem` is an event item (name + correlation key) or a sleep item (a duration or a
point in time); :class:`AnyResult` and :class:`AllResult` are the results, with one
:class:`ItemResult` per resolved item. See docs/events.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Optional

from ._duration import DurationLike, to_proto, to_timedelta
from .events import Event, event_from_wait_output
from .v1 import worker_pb2


class WaitItem:
    """One item of a combined wait; build it with :meth:`event`, :meth:`sleep` or
    :meth:`sleep_until`."""

    def __init__(self, item: worker_pb2.WaitItem, description: str) -> None:
        self._item = item
        self._description = description

    @classmethod
    def event(cls, name: str, key: Optional[str] = None) -> "WaitItem":
        """Resolves with the first event ``name`` with exactly the correlation ``key`` from
        the run's inbox (``None``: only events published without a key)."""
        item = worker_pb2.WaitItem(event=worker_pb2.EventMatch(event_name=name, correlation_key=key or ""))
        return cls(item, f"event {name!r}" + (f" key {key!r}" if key else ""))

    @classmethod
    def sleep(cls, duration: DurationLike) -> "WaitItem":
        """Resolves after ``duration`` (``"1h"``, a timedelta or seconds), counted from when the
        server receives the wait."""
        item = worker_pb2.WaitItem(sleep=worker_pb2.SleepWait(duration=to_proto(to_timedelta(duration, "duration"))))
        return cls(item, f"sleep {duration!r}")

    @classmethod
    def sleep_until(cls, until: datetime) -> "WaitItem":
        """Resolves at ``until`` (an aware datetime; naive means UTC; the past resolves at
        once)."""
        wait = worker_pb2.SleepWait()
        wait.until.FromDatetime(until)
        return cls(worker_pb2.WaitItem(sleep=wait), f"sleep until {until.isoformat()}")

    def to_proto(self) -> worker_pb2.WaitItem:
        """The wire item."""
        return self._item

    def __repr__(self) -> str:
        return f"WaitItem({self._description})"


@dataclass
class ItemResult:
    """What one item of a combined wait resolved with: an event item's event, or a sleep
    item's time coming (``kind == "sleep"``, ``event is None``)."""

    #: ``"event"`` or ``"sleep"``.
    kind: Literal["event", "sleep"]
    #: The event that resolved an event item.
    event: Optional[Event] = None


@dataclass
class AnyResult:
    """The result of ``step.wait_for_any``: the first item that resolved, or the timeout."""

    #: True when the whole wait's timeout passed first (``index`` and ``result`` are None).
    timed_out: bool
    #: The resolved item's position in the list given.
    index: Optional[int] = None
    #: What it resolved with.
    result: Optional[ItemResult] = None


@dataclass
class AllResult:
    """The result of ``step.wait_for_all``: each item's result in the order given."""

    #: True when the whole wait's timeout passed before every item resolved.
    timed_out: bool
    #: Each item's result; ``None`` for an item that had not resolved at the timeout.
    items: list[Optional[ItemResult]]


def _item_result(output: Any) -> ItemResult:
    if output is None:
        return ItemResult(kind="sleep")
    event = event_from_wait_output(json.dumps(output).encode("utf-8"))
    if event is None:
        raise ValueError("an item recorded as timed out")
    return ItemResult(kind="event", event=event)


def _load(output: bytes) -> dict[str, Any]:
    value = json.loads(output.decode("utf-8")) if output else None
    if not isinstance(value, dict):
        raise ValueError("not a combined wait result")
    return value


def any_from_journal(output: bytes) -> AnyResult:
    """Decodes an ANY journal entry: ``{"timedOut": true}`` or ``{"timedOut": false, "index":
    I, "output": O}``."""
    value = _load(output)
    if value.get("timedOut") is True:
        return AnyResult(timed_out=True)
    index = value.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("no index")
    return AnyResult(timed_out=False, index=index, result=_item_result(value.get("output")))


def all_from_journal(output: bytes) -> AllResult:
    """Decodes an ALL journal entry: ``{"timedOut": B, "outputs": [...], "resolved":
    [...]}``."""
    value = _load(output)
    outputs = value.get("outputs")
    if not isinstance(outputs, list):
        raise ValueError("no outputs")
    resolved = value.get("resolved")
    items: list[Optional[ItemResult]] = []
    for i, o in enumerate(outputs):
        done = resolved[i] if isinstance(resolved, list) and i < len(resolved) and isinstance(resolved[i], bool) else True
        items.append(_item_result(o) if done else None)
    return AllResult(timed_out=value.get("timedOut") is True, items=items)
