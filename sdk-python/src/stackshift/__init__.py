"""The Python SDK for StackShift durable jobs: an asyncio client and worker.

Example::

    import asyncio
    from stackshift import JobContext, StackShift

    stackshift = StackShift()  # STACKSHIFT_API_KEY, STACKSHIFT_ENDPOINT

    @stackshift.job("provisionAfterPayment")
    async def provision(ctx: JobContext[dict]) -> dict:
        payment = await ctx.step.run("verify-payment", lambda: verify_payment(ctx.payload["paymentId"]))
        if payment["status"] != "paid":
            raise RuntimeError("Payment is not complete")
        await ctx.step.run("enable-plan", lambda: enable_paid_plan(ctx.payload["customerId"]))
        return {"provisioned": True}

    async def main() -> None:
        async with stackshift.worker(queues=["payments"]):
            started = await stackshift.start("provisionAfterPayment", {"paymentId": "pay_1", "customerId": "cus_1"},
                                             queue_name="payments", idempotency_key="provision:pay_1",
                                             idempotency_ttl="30d")
            run = await stackshift.wait_for_run(started.id)

Handlers also get ``ctx.step.sleep`` / ``ctx.step.wait_for_event`` (durable waits),
``ctx.step.wait_for_any`` / ``ctx.step.wait_for_all`` (combined waits over events and
sleeps), ``ctx.step.invoke`` / ``ctx.step.invoke_all`` (child runs), ``ctx.state`` (the
state store, journaled in the run) and ``ctx.log`` (run-scoped logs); the client has
``stackshift.state``, ``stackshift.events``, ``stackshift.schedules``,
``stackshift.triggers`` and ``stackshift.queue(name)`` management. Jobs can declare event
triggers: ``@stackshift.job("welcome", triggers=["user.signed_up"])``.

Guarantees: code inside a step that has not completed runs at least once; each step's recorded
result and the run's result are recorded exactly once. ``step.run`` returns only once the server
stored the step's result.
"""

from ._duration import DurationLike, parse_duration
from .client import DEFAULT_ENDPOINT, SDK_VERSION, StackShift
from .children import ChildFailedError, ChildOutcome, ChildRun, ChildStatus
from .context import Handler, JobContext, Occurrences, Step
from .errors import (
    AbortedError,
    AlreadyExistsError,
    AttemptInterruptedError,
    CancelledError,
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NonRetryableError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StackShiftError,
    StepFailedError,
    UnauthenticatedError,
    UnavailableError,
    is_non_retryable,
)
from .events import Event, EventPage, Events, PublishedEvent
from .log import Logger
from .queues import Queue, QueueConfig, QueueInfo, QueuePage, QueueStats, RateLimit
from .run import (
    FINAL_STATUSES,
    AttemptInfo,
    Failure,
    LogEntry,
    LogLevel,
    RetryPolicy,
    Run,
    RunPage,
    RunStatus,
    StartedRun,
    StepInfo,
    StepKind,
    TimelineEntry,
    WaitInfo,
)
from .schedules import CatchUp, CreatedSchedule, Schedule, SchedulePage, Schedules
from .state import KeyPage, Lock, State, StateEntry, StateKey
from .triggers import (
    CreatedEventTrigger,
    EventTrigger,
    EventTriggerDeclaration,
    EventTriggerPage,
    TriggerDeclarationError,
    TriggeredEvent,
    TriggerLike,
    Triggers,
)
from .waits import AllResult, AnyResult, ItemResult, WaitItem
from .worker import DEFAULT_CONCURRENCY, Worker

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_ENDPOINT",
    "FINAL_STATUSES",
    "SDK_VERSION",
    "AbortedError",
    "AllResult",
    "AlreadyExistsError",
    "AnyResult",
    "AttemptInfo",
    "AttemptInterruptedError",
    "CancelledError",
    "CatchUp",
    "ChildFailedError",
    "ChildOutcome",
    "ChildRun",
    "ChildStatus",
    "ConflictError",
    "CreatedEventTrigger",
    "CreatedSchedule",
    "DeadlineExceededError",
    "DurationLike",
    "Event",
    "EventPage",
    "EventTrigger",
    "EventTriggerDeclaration",
    "EventTriggerPage",
    "Events",
    "FailedPreconditionError",
    "Failure",
    "Handler",
    "InvalidArgumentError",
    "ItemResult",
    "JobContext",
    "KeyPage",
    "Lock",
    "LogEntry",
    "LogLevel",
    "Logger",
    "NonRetryableError",
    "NotFoundError",
    "Occurrences",
    "PermissionDeniedError",
    "PublishedEvent",
    "Queue",
    "QueueConfig",
    "QueueInfo",
    "QueuePage",
    "QueueStats",
    "RateLimit",
    "ResourceExhaustedError",
    "RetryPolicy",
    "Run",
    "RunPage",
    "RunStatus",
    "Schedule",
    "SchedulePage",
    "Schedules",
    "StackShift",
    "StackShiftError",
    "StartedRun",
    "State",
    "StateEntry",
    "StateKey",
    "Step",
    "StepFailedError",
    "StepInfo",
    "StepKind",
    "TimelineEntry",
    "TriggerDeclarationError",
    "TriggerLike",
    "TriggeredEvent",
    "Triggers",
    "UnauthenticatedError",
    "UnavailableError",
    "WaitInfo",
    "WaitItem",
    "Worker",
    "is_non_retryable",
    "parse_duration",
]
