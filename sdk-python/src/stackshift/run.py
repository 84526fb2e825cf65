"""What the SDK returns about runs: :class:`Run` with its status, attempts, steps and
:class:`Failure`. Plain dataclasses: JSON decoded, timestamps as aware ``datetime`` (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Optional

from google.protobuf import timestamp_pb2

from . import _json
from ._duration import DurationLike, to_proto, to_timedelta
from .v1 import common_pb2, events_pb2, jobs_pb2, observability_pb2

#: A run's lifecycle state.
RunStatus = Literal["queued", "running", "waiting", "completed", "failed", "cancelled"]

#: The statuses after which a run changes only through ``retry_run``.
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

_STATUS_FROM_PB: dict[common_pb2.RunStatus.ValueType, RunStatus] = {
    common_pb2.RUN_STATUS_QUEUED: "queued",
    common_pb2.RUN_STATUS_RUNNING: "running",
    common_pb2.RUN_STATUS_WAITING: "waiting",
    common_pb2.RUN_STATUS_COMPLETED: "completed",
    common_pb2.RUN_STATUS_FAILED: "failed",
    common_pb2.RUN_STATUS_CANCELLED: "cancelled",
}
_STATUS_TO_PB = {v: k for k, v in _STATUS_FROM_PB.items()}


def status_from_proto(value: int) -> RunStatus:
    """A wire status as a :data:`RunStatus`."""
    try:
        return _STATUS_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unexpected run status {value} from the server") from None


def status_to_proto(status: str) -> "common_pb2.RunStatus.ValueType":
    """The wire value of a status name."""
    from .errors import InvalidArgumentError

    try:
        return _STATUS_TO_PB[status]  # type: ignore[index]
    except KeyError:
        raise InvalidArgumentError(f"unknown run status {status!r}") from None


@dataclass
class Failure:
    """A structured error: why a step, an attempt or a run failed."""

    message: str
    type: Optional[str] = None
    non_retryable: bool = False
    details: Any = None
    stack_trace: Optional[str] = None

    @classmethod
    def from_proto(cls, f: common_pb2.Failure) -> "Failure":
        details: Any = None
        if f.details:
            try:
                details = _json.decode(f.details)
            except Exception:  # undecodable details are dropped, not fatal
                details = None
        return cls(
            message=f.message,
            type=f.type or None,
            non_retryable=f.non_retryable,
            details=details,
            stack_trace=f.stack_trace or None,
        )

    def to_proto(self) -> common_pb2.Failure:
        return common_pb2.Failure(
            message=self.message,
            type=self.type or "",
            non_retryable=self.non_retryable,
            details=b"" if self.details is None else _json.encode(self.details, "failure details"),
            stack_trace=self.stack_trace or "",
        )


@dataclass
class RetryPolicy:
    """How failed attempts are retried. ``None`` fields take the server defaults (5 attempts,
    1 s, x2, 5 min)."""

    max_attempts: Optional[int] = None
    initial_interval: Optional[DurationLike] = None
    backoff_coefficient: Optional[float] = None
    maximum_interval: Optional[DurationLike] = None

    def to_proto(self) -> common_pb2.RetryPolicy:
        policy = common_pb2.RetryPolicy(
            max_attempts=self.max_attempts or 0, backoff_coefficient=self.backoff_coefficient or 0.0
        )
        if self.initial_interval is not None:
            policy.initial_interval.CopyFrom(to_proto(to_timedelta(self.initial_interval, "initial_interval")))
        if self.maximum_interval is not None:
            policy.maximum_interval.CopyFrom(to_proto(to_timedelta(self.maximum_interval, "maximum_interval")))
        return policy

    @classmethod
    def from_proto(cls, p: common_pb2.RetryPolicy) -> "RetryPolicy":
        return cls(
            max_attempts=p.max_attempts or None,
            initial_interval=p.initial_interval.ToTimedelta() if p.HasField("initial_interval") else None,
            backoff_coefficient=p.backoff_coefficient or None,
            maximum_interval=p.maximum_interval.ToTimedelta() if p.HasField("maximum_interval") else None,
        )


@dataclass
class AttemptInfo:
    """One delivery of a run to a worker."""

    number: int
    worker_id: str
    started_at: Optional[datetime]
    ended_at: Optional[datetime] = None
    failure: Optional[Failure] = None


#: What a journal entry records: a step, a state call, a sleep, an event wait, a child run
#: wait (``invoke``/``invoke_all``) or a combined wait (``wait_for_any``/``wait_for_all``).
StepKind = Literal["step", "state", "sleep", "event", "child", "any", "all"]

_KIND_FROM_PB: dict[int, StepKind] = {
    common_pb2.JOURNAL_ENTRY_KIND_STEP: "step",
    common_pb2.JOURNAL_ENTRY_KIND_STATE: "state",
    common_pb2.JOURNAL_ENTRY_KIND_SLEEP: "sleep",
    common_pb2.JOURNAL_ENTRY_KIND_EVENT: "event",
    common_pb2.JOURNAL_ENTRY_KIND_CHILD: "child",
    common_pb2.JOURNAL_ENTRY_KIND_ANY: "any",
    common_pb2.JOURNAL_ENTRY_KIND_ALL: "all",
}

#: A log line's level.
LogLevel = Literal["debug", "info", "warn", "error"]

_LEVEL_FROM_PB: dict[int, LogLevel] = {
    observability_pb2.LOG_LEVEL_DEBUG: "debug",
    observability_pb2.LOG_LEVEL_INFO: "info",
    observability_pb2.LOG_LEVEL_WARN: "warn",
    observability_pb2.LOG_LEVEL_ERROR: "error",
}


@dataclass
class StepInfo:
    """A recorded journal entry: a step result, a state call, or an ended sleep or event
    wait."""

    id: str
    attempt: int
    output_size: int
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    output: Any = None
    failure: Optional[Failure] = None
    kind: StepKind = "step"


@dataclass
class TimelineEntry:
    """One transition of a run (see docs/observability.md for the kinds)."""

    #: Orders the entries (a database sequence).
    id: int
    #: The kind, e.g. ``"ATTEMPT_STARTED"``, ``"WAITING"``, ``"COMPLETED"``.
    kind: str
    #: When it happened (server clock).
    at: Optional[datetime]
    #: The attempt it belongs to (0 when none).
    attempt: int = 0
    #: The step, sleep or wait it concerns (``""`` when none).
    step_id: str = ""
    #: When something is scheduled: a retry, a wake-up, a wait's timeout.
    scheduled_at: Optional[datetime] = None
    #: Facts about the transition (a JSON object; never payloads or outputs).
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogEntry:
    """One line the handler logged with ``ctx.log``."""

    id: int
    level: LogLevel
    message: str
    #: Structured fields (``{}`` when none).
    fields: dict[str, Any]
    #: The step whose body logged it (``""`` outside steps).
    step_id: str
    #: When it was logged (worker clock).
    at: Optional[datetime]
    attempt: int
    #: True for the marker that replaces the lines over the run's log cap.
    truncated: bool = False


@dataclass
class WaitInfo:
    """What a ``waiting`` run waits for."""

    step_id: str
    #: ``"sleep"``, ``"event"``, ``"child"``, ``"any"`` or ``"all"``.
    kind: StepKind
    #: The event name (event waits).
    event_name: str = ""
    #: The correlation key (event waits).
    key: str = ""
    #: When the sleep ends or the wait times out.
    wake_at: Optional[datetime] = None
    #: When the wait began.
    since: Optional[datetime] = None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = _json.decode(data)
    except Exception:
        return {}
    return value if isinstance(value, dict) else {}


def _timeline_kind(value: int) -> str:
    try:
        name = observability_pb2.TimelineEntryKind.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return "UNSPECIFIED"
    return name.removeprefix("TIMELINE_ENTRY_KIND_")


@dataclass
class Run:
    """One execution of a job with a payload."""

    id: str
    job: str
    queue: str
    status: RunStatus
    payload: Any
    attempt: int
    max_attempts: int
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    result: Any = None
    failure: Optional[Failure] = None
    idempotency_key: Optional[str] = None
    lease_timeout: Optional[timedelta] = None
    finished_at: Optional[datetime] = None
    next_attempt_at: Optional[datetime] = None
    attempts: list[AttemptInfo] = field(default_factory=list)
    steps: list[StepInfo] = field(default_factory=list)
    #: Higher runs first among the due runs of a queue (default 0).
    priority: int = 0
    concurrency_key: Optional[str] = None
    #: What the run waits for while ``waiting``.
    wait: Optional[WaitInfo] = None
    #: Every transition, oldest first (filled by ``get_run``/``wait_for_run`` only).
    timeline: list[TimelineEntry] = field(default_factory=list)
    #: The handler's log lines, oldest first (filled by ``get_run``/``wait_for_run`` only).
    logs: list[LogEntry] = field(default_factory=list)
    #: The run that started this one with ``step.invoke``/``invoke_all`` (``None`` for a run
    #: started otherwise).
    parent_run_id: Optional[str] = None
    #: The parent's step id of the child wait that started this run.
    parent_step_id: Optional[str] = None

    @property
    def is_final(self) -> bool:
        """True for completed, failed and cancelled runs."""
        return self.status in FINAL_STATUSES

    def step(self, step_id: str) -> Optional[StepInfo]:
        """The recorded step with this id (suffix included), if any."""
        return next((s for s in self.steps if s.id == step_id), None)

    @classmethod
    def from_proto(cls, r: jobs_pb2.Run) -> "Run":
        return cls(
            id=r.id,
            job=r.job,
            queue=r.queue,
            status=status_from_proto(r.status),
            payload=_json.decode(r.payload, "payload"),
            attempt=r.attempt,
            max_attempts=r.max_attempts,
            created_at=_time(r, "created_at"),
            updated_at=_time(r, "updated_at"),
            result=_json.decode(r.result, "result") if r.status == common_pb2.RUN_STATUS_COMPLETED else None,
            failure=Failure.from_proto(r.failure) if r.HasField("failure") else None,
            idempotency_key=r.idempotency_key or None,
            lease_timeout=r.lease_timeout.ToTimedelta() if r.HasField("lease_timeout") else None,
            finished_at=_time(r, "finished_at"),
            next_attempt_at=_time(r, "next_attempt_at"),
            attempts=[
                AttemptInfo(
                    number=a.number,
                    worker_id=a.worker_id,
                    started_at=_time(a, "started_at"),
                    ended_at=_time(a, "ended_at"),
                    failure=Failure.from_proto(a.failure) if a.HasField("failure") else None,
                )
                for a in r.attempts
            ],
            steps=[
                StepInfo(
                    id=s.id,
                    attempt=s.attempt,
                    output_size=s.output_size,
                    started_at=_time(s, "started_at"),
                    completed_at=_time(s, "completed_at"),
                    output=None if s.HasField("failure") else _json.decode(s.output, "step output"),
                    failure=Failure.from_proto(s.failure) if s.HasField("failure") else None,
                    kind=_KIND_FROM_PB.get(s.kind, "step"),
                )
                for s in r.steps
            ],
            priority=r.priority,
            concurrency_key=r.concurrency_key or None,
            wait=_wait_from_proto(r.wait) if r.HasField("wait") else None,
            timeline=[
                TimelineEntry(
                    id=t.id,
                    kind=_timeline_kind(t.kind),
                    at=_time(t, "at"),
                    attempt=t.attempt,
                    step_id=t.step_id,
                    scheduled_at=_time(t, "scheduled_at"),
                    detail=_json_object(t.detail),
                )
                for t in r.timeline
            ],
            logs=[
                LogEntry(
                    id=entry.id,
                    level=_LEVEL_FROM_PB.get(entry.level, "info"),
                    message=entry.message,
                    fields=_json_object(entry.fields),
                    step_id=entry.step_id,
                    at=_time(entry, "at"),
                    attempt=entry.attempt,
                    truncated=entry.truncated,
                )
                for entry in r.logs
            ],
            parent_run_id=r.parent_run_id or None,
            parent_step_id=r.parent_step_id or None,
        )


@dataclass
class StartedRun:
    """What ``start`` and ``enqueue`` return."""

    id: str
    run: Run
    #: True when the idempotency key matched an existing run and nothing new was created.
    duplicate: bool


@dataclass
class RunPage:
    """One page of ``list_runs``."""

    runs: list[Run]
    next_page_token: Optional[str] = None


def _wait_from_proto(w: events_pb2.RunWait) -> WaitInfo:
    return WaitInfo(
        step_id=w.step_id,
        kind=_KIND_FROM_PB.get(w.kind, "sleep"),
        event_name=w.event_name,
        key=w.correlation_key,
        wake_at=_time(w, "wake_at"),
        since=_time(w, "since"),
    )


def _time(message: Any, name: str) -> Optional[datetime]:
    if not message.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    return ts.ToDatetime(tzinfo=timezone.utc)
