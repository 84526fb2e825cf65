"""Queues: :class:`Queue` (``stackshift.queue(name)``) enqueues runs and manages the queue's
configuration (concurrency limits, per-key limits, rate limit, retry policy, lease timeout),
reads its stats, and pauses or resumes it; :class:`QueueInfo` is what the server answers.

Example::

    emails = stackshift.queue("emails")
    await emails.configure(concurrency_limit=5, rate_limit=RateLimit(100, "1m"))
    info = await emails.pause()
    print(info.paused, info.stats.queued)
    await emails.resume()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Optional

from ._duration import DurationLike, to_proto, to_timedelta
from ._stub import call
from .run import RetryPolicy, StartedRun
from .v1 import queues_pb2

if TYPE_CHECKING:
    from .client import StackShift


@dataclass
class RateLimit:
    """At most ``limit`` runs started per ``period`` (``"1m"``, a timedelta or seconds)."""

    limit: int
    period: DurationLike


@dataclass
class QueueConfig:
    """A queue's configuration. ``None`` means unlimited (limits) or the server default."""

    #: Runs of this queue running at once.
    concurrency_limit: Optional[int] = None
    #: Runs with the same concurrency key running at once.
    key_concurrency_limit: Optional[int] = None
    #: Starts per period.
    rate_limit: Optional[RateLimit] = None
    #: Retry policy of runs started without one.
    retry_policy: Optional[RetryPolicy] = None
    #: Lease timeout of runs started without one.
    lease_timeout: Optional[timedelta] = None


@dataclass
class QueueStats:
    """Counts of the queue's runs by status, as of the answer."""

    queued: int = 0
    #: Queued runs not due yet (a delay, a run_at or a retry backoff).
    delayed: int = 0
    running: int = 0
    waiting: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    #: Age of the oldest due queued run.
    oldest_queued_age: Optional[timedelta] = None
    #: Running runs per concurrency key.
    running_by_key: dict[str, int] = field(default_factory=dict)
    #: Runs started in the current rate-limit window.
    rate_window_started: int = 0


@dataclass
class QueueInfo:
    """A queue as the server describes it."""

    name: str
    config: QueueConfig
    paused: bool
    stats: QueueStats
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None


@dataclass
class QueuePage:
    """One page of ``list_queues``."""

    queues: list[QueueInfo]
    next_page_token: Optional[str] = None


def queue_from_proto(q: queues_pb2.Queue) -> QueueInfo:
    """A wire queue as a :class:`QueueInfo`."""
    c, s = q.config, q.stats
    return QueueInfo(
        name=q.name,
        paused=q.paused,
        config=QueueConfig(
            concurrency_limit=c.concurrency_limit if c.HasField("concurrency_limit") else None,
            key_concurrency_limit=c.key_concurrency_limit if c.HasField("key_concurrency_limit") else None,
            rate_limit=RateLimit(c.rate_limit.limit, c.rate_limit.period.ToTimedelta()) if c.HasField("rate_limit") else None,
            retry_policy=RetryPolicy.from_proto(c.retry_policy) if c.HasField("retry_policy") else None,
            lease_timeout=c.lease_timeout.ToTimedelta() if c.HasField("lease_timeout") else None,
        ),
        stats=QueueStats(
            queued=s.queued,
            delayed=s.delayed,
            running=s.running,
            waiting=s.waiting,
            completed=s.completed,
            failed=s.failed,
            cancelled=s.cancelled,
            oldest_queued_age=s.oldest_queued_age.ToTimedelta() if s.HasField("oldest_queued_age") else None,
            running_by_key={k.key: k.running for k in s.running_by_key},
            rate_window_started=s.rate_window_started,
        ),
        created_at=q.created_at.ToDatetime(tzinfo=timezone.utc) if q.HasField("created_at") else None,
        updated_at=q.updated_at.ToDatetime(tzinfo=timezone.utc) if q.HasField("updated_at") else None,
    )


class Queue:
    """A named queue: ``stackshift.queue(name)``. ``enqueue(job, payload, ...)`` is
    ``start(job, payload, queue_name=name, ...)``; the other methods manage the queue."""

    def __init__(self, client: "StackShift", name: str) -> None:
        self._client = client
        #: The queue's name.
        self.name = name

    async def enqueue(
        self,
        job: str,
        payload: Any = None,
        *,
        idempotency_key: Optional[str] = None,
        idempotency_ttl: Optional[DurationLike] = None,
        retry_policy: Optional[RetryPolicy] = None,
        lease_timeout: Optional[DurationLike] = None,
        delay: Optional[DurationLike] = None,
        run_at: Optional[datetime] = None,
        priority: Optional[int] = None,
        concurrency_key: Optional[str] = None,
    ) -> StartedRun:
        """Starts a run of ``job`` on this queue (options as in ``StackShift.start``)."""
        return await self._client.start(
            job,
            payload,
            queue_name=self.name,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            retry_policy=retry_policy,
            lease_timeout=lease_timeout,
            delay=delay,
            run_at=run_at,
            priority=priority,
            concurrency_key=concurrency_key,
        )

    async def configure(
        self,
        *,
        concurrency_limit: Optional[int] = None,
        key_concurrency_limit: Optional[int] = None,
        rate_limit: Optional[RateLimit] = None,
        retry_policy: Optional[RetryPolicy] = None,
        lease_timeout: Optional[DurationLike] = None,
    ) -> QueueInfo:
        """Creates the queue or **replaces its whole configuration** (an option left out
        becomes unlimited or the server default). Does not change whether it is paused."""
        config = queues_pb2.QueueConfig()
        if concurrency_limit is not None:
            config.concurrency_limit = concurrency_limit
        if key_concurrency_limit is not None:
            config.key_concurrency_limit = key_concurrency_limit
        if rate_limit is not None:
            config.rate_limit.limit = rate_limit.limit
            config.rate_limit.period.CopyFrom(to_proto(to_timedelta(rate_limit.period, "rate_limit.period")))
        if retry_policy is not None:
            config.retry_policy.CopyFrom(retry_policy.to_proto())
        if lease_timeout is not None:
            config.lease_timeout.CopyFrom(to_proto(to_timedelta(lease_timeout, "lease_timeout")))
        request = queues_pb2.UpsertQueueRequest(name=self.name, config=config)
        response = await call(self._client._queues(), "UpsertQueue", request)
        return queue_from_proto(response.queue)

    async def get(self) -> QueueInfo:
        """The queue's configuration, paused flag and stats (:class:`~stackshift.NotFoundError`
        for a queue that was never configured nor used)."""
        response = await call(self._client._queues(), "GetQueue", queues_pb2.GetQueueRequest(name=self.name))
        return queue_from_proto(response.queue)

    async def pause(self) -> QueueInfo:
        """Pauses the queue: workers receive none of its runs until it is resumed (runs can
        still be enqueued; running ones finish)."""
        response = await call(self._client._queues(), "PauseQueue", queues_pb2.PauseQueueRequest(name=self.name))
        return queue_from_proto(response.queue)

    async def resume(self) -> QueueInfo:
        """Resumes a paused queue."""
        response = await call(self._client._queues(), "ResumeQueue", queues_pb2.ResumeQueueRequest(name=self.name))
        return queue_from_proto(response.queue)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"
