"""Child runs: what ``step.invoke``, ``step.invoke_all`` and ``step.invoke_child`` take and
return. :class:`ChildRun` is a child to start (job, payload and options),
:class:`ChildOutcome` how it ended, and :class:`ChildFailedError` what ``step.invoke`` raises
for a child that failed or was cancelled. See docs/children.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Optional

from . import _json
from ._duration import DurationLike, to_proto, to_timedelta
from .run import Failure, RetryPolicy
from .v1 import worker_pb2

#: How a child run ended.
ChildStatus = Literal["completed", "failed", "cancelled"]

#: The most children one ``invoke_all`` starts.
MAX_CHILDREN = 1000


@dataclass
class ChildRun:
    """One child run to start with ``step.invoke_all`` or ``step.invoke_child``. Unset options
    mean what they mean for ``start``, except ``queue_name``: ``None`` runs the child on the
    parent's queue."""

    #: The child's job.
    job: str
    #: The child's payload (any JSON value).
    payload: Any = None
    #: The child's queue; ``None`` = the parent's queue.
    queue_name: Optional[str] = None
    #: Retry overrides for the child.
    retry_policy: Optional[RetryPolicy] = None
    #: The child's lease timeout (1 s to 1 h).
    lease_timeout: Optional[DurationLike] = None
    #: The child's delivery priority within its queue (-1000 to 1000).
    priority: Optional[int] = None
    #: The child's concurrency key.
    concurrency_key: Optional[str] = None

    def to_proto(self) -> worker_pb2.ChildRunSpec:
        """The wire spec (raises on a payload that is not JSON-serializable)."""
        spec = worker_pb2.ChildRunSpec(
            job=self.job,
            payload=_json.encode(self.payload, f"the payload of child job {self.job}"),
            queue=self.queue_name or "",
            priority=self.priority or 0,
            concurrency_key=self.concurrency_key or "",
        )
        if self.retry_policy is not None:
            spec.retry_policy.CopyFrom(self.retry_policy.to_proto())
        if self.lease_timeout is not None:
            spec.lease_timeout.CopyFrom(to_proto(to_timedelta(self.lease_timeout, "lease_timeout")))
        return spec


class ChildFailedError(Exception):
    """A child run started by ``step.invoke`` failed or was cancelled (raised instead of its
    result). Letting it propagate fails the parent **without retries**: the child's outcome is
    journaled, so a retry would see the same failure."""

    #: Always true: the parent fails at once.
    non_retryable = True

    def __init__(self, run_id: str, job: str, status: ChildStatus, failure: Failure) -> None:
        how = "was cancelled" if status == "cancelled" else "failed"
        super().__init__(f"child run {run_id} ({job}) {how}: {failure.message}")
        #: The child's run id.
        self.run_id = run_id
        #: The child's job.
        self.job = job
        #: ``"failed"`` or ``"cancelled"``.
        self.status = status
        #: The child's failure, or the cancellation reason.
        self.failure = failure


@dataclass
class ChildOutcome:
    """The recorded outcome of one child run."""

    #: The child's run id.
    run_id: str
    #: The child's job.
    job: str
    #: How it ended.
    status: ChildStatus
    #: Its result (decoded JSON), when completed.
    result: Any = None
    #: Its failure (or the cancellation reason), when failed or cancelled.
    failure: Optional[Failure] = None

    def result_or_raise(self) -> Any:
        """The child's result, or :class:`ChildFailedError` when it failed or was
        cancelled."""
        if self.status == "completed":
            return self.result
        raise ChildFailedError(self.run_id, self.job, self.status, self.failure or Failure(message=""))


def outcomes_from_journal(output: bytes) -> list[ChildOutcome]:
    """Decodes a child wait's journal output ``{"children": [{runId, job, status, result,
    failure?}, ...]}``. Raises :class:`ValueError` on anything else."""
    recorded = json.loads(output.decode("utf-8")) if output else None
    children = recorded.get("children") if isinstance(recorded, dict) else None
    if not isinstance(children, list):
        raise ValueError("not a child wait result")
    outcomes: list[ChildOutcome] = []
    for child in children:
        if not isinstance(child, dict) or not isinstance(child.get("runId"), str):
            raise ValueError("a child without its run id")
        status = child.get("status")
        if status not in ("completed", "failed", "cancelled"):
            raise ValueError(f"unknown child status {status!r}")
        failure: Optional[Failure] = None
        f = child.get("failure")
        if isinstance(f, dict):
            failure = Failure(
                message=str(f.get("message", "")),
                type=str(f.get("errorType") or "") or None,
                non_retryable=f.get("nonRetryable") is True,
            )
        outcomes.append(
            ChildOutcome(
                run_id=child["runId"],
                job=str(child.get("job", "")),
                status=status,
                result=child.get("result") if status == "completed" else None,
                failure=failure,
            )
        )
    return outcomes
