"""What the SDK returns about runs: :class:`Run` with its status, attempts, steps and
:class:`Failure`. Plain dataclasses: JSON decoded, timestamps as aware ``datetime`` (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Optional, Union

from google.protobuf import timestamp_pb2

from . import _json
from ._duration import DurationLike
from .v1 import common_pb2, jobs_pb2

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


@dataclass
class AttemptInfo:
    """One delivery of a run to a worker."""

    number: int
    worker_id: str
    started_at: Optional[datetime]
    ended_at: Optional[datetime] = None
    failure: Optional[Failure] = None


@dataclass
class StepInfo:
    """A recorded step result."""

    id: str
    attempt: int
    output_size: int
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    output: Any = None
    failure: Optional[Failure] = None


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
                )
                for s in r.steps
            ],
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


def _time(message: Union[jobs_pb2.Run, jobs_pb2.Attempt, jobs_pb2.Step], name: str) -> Optional[datetime]:
    if not message.HasField(name):  # type: ignore[arg-type]
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    return ts.ToDatetime(tzinfo=timezone.utc)
