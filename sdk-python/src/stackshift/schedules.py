"""Schedules: :class:`Schedules` (``stackshift.schedules``) creates, reads, lists, pauses,
resumes and deletes schedules. A schedule starts a run of a job with a fixed payload at each
time of a cron expression (in an IANA time zone) or of a fixed interval; each scheduled time
starts at most one run, even with several server replicas and after downtime (see
docs/schedules.md).

Example::

    created = await stackshift.schedules.create(
        "nightly-report", "build-report", {"kind": "daily"},
        cron="0 2 * * *", time_zone="Europe/Paris", catch_up="latest",
    )
    print(created.created, created.schedule.next_fire_time)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Optional

from . import _json
from ._duration import DurationLike, to_proto, to_timedelta
from ._stub import call
from .errors import InvalidArgumentError
from .run import RetryPolicy
from .v1 import schedules_pb2

#: What a schedule does about scheduled times that passed while no server ran: ``"skip"``
#: (start nothing for them), ``"latest"`` (one run for the most recent one; the default) or
#: ``"all"`` (one run per missed time, at most 100).
CatchUp = Literal["skip", "latest", "all"]

_CATCH_UP_TO_PB: dict[str, "schedules_pb2.ScheduleCatchUp.ValueType"] = {
    "skip": schedules_pb2.SCHEDULE_CATCH_UP_SKIP,
    "latest": schedules_pb2.SCHEDULE_CATCH_UP_LATEST,
    "all": schedules_pb2.SCHEDULE_CATCH_UP_ALL,
}
_CATCH_UP_FROM_PB: dict[int, CatchUp] = {
    schedules_pb2.SCHEDULE_CATCH_UP_SKIP: "skip",
    schedules_pb2.SCHEDULE_CATCH_UP_LATEST: "latest",
    schedules_pb2.SCHEDULE_CATCH_UP_ALL: "all",
}


@dataclass
class Schedule:
    """A stored schedule. Exactly one of ``cron`` and ``every`` is set."""

    #: The schedule's id, unique in its namespace.
    id: str
    #: The job it starts.
    job: str
    #: The payload of every run it starts (decoded JSON).
    payload: Any
    #: The queue of the runs.
    queue: str
    #: What it does about missed times.
    catch_up: CatchUp
    #: True while paused: it does not fire.
    paused: bool
    #: The cron expression (cron schedules).
    cron: Optional[str] = None
    #: The IANA time zone the cron expression is evaluated in (cron schedules).
    time_zone: Optional[str] = None
    #: The interval (interval schedules), aligned to the Unix epoch.
    every: Optional[timedelta] = None
    #: Retry overrides of the runs.
    retry_policy: Optional[RetryPolicy] = None
    #: Lease timeout of the runs' attempts.
    lease_timeout: Optional[timedelta] = None
    #: Delivery priority of the runs.
    priority: int = 0
    #: The next scheduled time it fires at (while not paused).
    next_fire_time: Optional[datetime] = None
    #: The scheduled time of the newest run it started; ``None`` before the first.
    last_fire_time: Optional[datetime] = None
    #: Ids of the most recent runs it started, newest first (at most 10).
    recent_run_ids: list[str] = field(default_factory=list)
    #: When it was created.
    created_at: Optional[datetime] = None
    #: When it last changed (fired, paused or resumed).
    updated_at: Optional[datetime] = None


@dataclass
class CreatedSchedule:
    """What :meth:`Schedules.create` returns."""

    #: The schedule as stored.
    schedule: Schedule
    #: True when this call created it; False when it existed with the same definition.
    created: bool


@dataclass
class SchedulePage:
    """One page of :meth:`Schedules.list`, by id."""

    schedules: list[Schedule]
    next_page_token: Optional[str] = None


def _time(message: Any, name: str) -> Optional[datetime]:
    if not message.HasField(name):
        return None
    value: datetime = getattr(message, name).ToDatetime(tzinfo=timezone.utc)
    return value


def schedule_from_proto(s: schedules_pb2.Schedule) -> Schedule:
    """A wire schedule as a :class:`Schedule`."""
    spec = s.spec
    action = s.action
    kind = spec.WhichOneof("spec")
    return Schedule(
        id=s.id,
        job=action.job,
        payload=_json.decode(action.payload, "schedule payload"),
        queue=action.queue,
        catch_up=_CATCH_UP_FROM_PB.get(s.catch_up, "latest"),
        paused=s.paused,
        cron=spec.cron.expression if kind == "cron" else None,
        time_zone=(spec.cron.time_zone or "UTC") if kind == "cron" else None,
        every=spec.interval.interval.ToTimedelta() if kind == "interval" else None,
        retry_policy=RetryPolicy.from_proto(action.retry_policy) if action.HasField("retry_policy") else None,
        lease_timeout=action.lease_timeout.ToTimedelta() if action.HasField("lease_timeout") else None,
        priority=action.priority,
        next_fire_time=_time(s, "next_fire_time"),
        last_fire_time=_time(s, "last_fire_time"),
        recent_run_ids=list(s.recent_run_ids),
        created_at=_time(s, "created_at"),
        updated_at=_time(s, "updated_at"),
    )


class Schedules:
    """Manages schedules (``stackshift.schedules``)."""

    def __init__(self, stub: Callable[[], Any]) -> None:
        self._stub = stub

    async def create(
        self,
        schedule_id: str,
        job: str,
        payload: Any = None,
        *,
        cron: Optional[str] = None,
        time_zone: Optional[str] = None,
        every: Optional[DurationLike] = None,
        queue_name: Optional[str] = None,
        catch_up: Optional[CatchUp] = None,
        paused: bool = False,
        retry_policy: Optional[RetryPolicy] = None,
        lease_timeout: Optional[DurationLike] = None,
        priority: Optional[int] = None,
    ) -> CreatedSchedule:
        """Creates the schedule ``schedule_id``, which starts ``job`` with ``payload`` (any
        JSON value) at each time of ``cron`` (5 or 6 fields, e.g. ``"0 9 * * MON-FRI"``,
        evaluated in ``time_zone``, default ``UTC``) or ``every`` interval (``"15m"``, a
        timedelta or seconds; 1 s to 366 days, aligned to the Unix epoch). Pass exactly one of
        ``cron`` and ``every``.

        Creating an id that exists with the same definition returns the stored schedule with
        ``created=False`` (``paused`` is not part of the definition); with another definition
        it raises :class:`~stackshift.AlreadyExistsError` (delete it first). A bad cron
        expression or time zone raises :class:`~stackshift.InvalidArgumentError`.
        """
        if (cron is None) == (every is None):
            raise InvalidArgumentError("pass exactly one of cron and every")
        if time_zone is not None and cron is None:
            raise InvalidArgumentError("time_zone applies to cron schedules only")
        spec = schedules_pb2.ScheduleSpec()
        if cron is not None:
            spec.cron.CopyFrom(schedules_pb2.CronSpec(expression=cron, time_zone=time_zone or ""))
        else:
            assert every is not None
            spec.interval.interval.CopyFrom(to_proto(to_timedelta(every, "every")))
        action = schedules_pb2.ScheduleAction(
            job=job,
            payload=_json.encode(payload, "schedule payload"),
            queue=queue_name or "",
            priority=priority or 0,
        )
        if retry_policy is not None:
            action.retry_policy.CopyFrom(retry_policy.to_proto())
        if lease_timeout is not None:
            action.lease_timeout.CopyFrom(to_proto(to_timedelta(lease_timeout, "lease_timeout")))
        if catch_up is not None and catch_up not in _CATCH_UP_TO_PB:
            raise InvalidArgumentError(f"catch_up must be 'skip', 'latest' or 'all', got {catch_up!r}")
        request = schedules_pb2.CreateScheduleRequest(
            schedule_id=schedule_id,
            spec=spec,
            action=action,
            catch_up=_CATCH_UP_TO_PB[catch_up] if catch_up is not None else schedules_pb2.SCHEDULE_CATCH_UP_UNSPECIFIED,
            paused=paused,
        )
        response = await call(self._stub(), "CreateSchedule", request)
        return CreatedSchedule(schedule=schedule_from_proto(response.schedule), created=response.created)

    async def get(self, schedule_id: str) -> Schedule:
        """One schedule; :class:`~stackshift.NotFoundError` for an unknown id."""
        response = await call(self._stub(), "GetSchedule", schedules_pb2.GetScheduleRequest(schedule_id=schedule_id))
        return schedule_from_proto(response.schedule)

    async def list(self, *, page_size: Optional[int] = None, page_token: Optional[str] = None) -> SchedulePage:
        """One page of the namespace's schedules, by id (``page_size`` 1-1000, default 50)."""
        request = schedules_pb2.ListSchedulesRequest(page_size=page_size or 0, page_token=page_token or "")
        response = await call(self._stub(), "ListSchedules", request)
        return SchedulePage(
            schedules=[schedule_from_proto(s) for s in response.schedules],
            next_page_token=response.next_page_token or None,
        )

    async def pause(self, schedule_id: str) -> Schedule:
        """Stops the schedule from firing until resumed (pausing a paused schedule does
        nothing)."""
        response = await call(self._stub(), "PauseSchedule", schedules_pb2.PauseScheduleRequest(schedule_id=schedule_id))
        return schedule_from_proto(response.schedule)

    async def resume(self, schedule_id: str) -> Schedule:
        """Makes a paused schedule fire again from its first time after now (times that passed
        while paused are not caught up)."""
        response = await call(
            self._stub(), "ResumeSchedule", schedules_pb2.ResumeScheduleRequest(schedule_id=schedule_id)
        )
        return schedule_from_proto(response.schedule)

    async def delete(self, schedule_id: str) -> None:
        """Deletes the schedule; runs it already started are not affected."""
        await call(self._stub(), "DeleteSchedule", schedules_pb2.DeleteScheduleRequest(schedule_id=schedule_id))
