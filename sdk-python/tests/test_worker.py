"""End-to-end tests of the client and worker against the real server binary."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stackshift import (
    AttemptInterruptedError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobContext,
    NonRetryableError,
    NotFoundError,
    ResourceExhaustedError,
    RetryPolicy,
    StackShift,
    StepFailedError,
)

FAST = RetryPolicy(max_attempts=3, initial_interval="50ms")


def test_steps_are_memoized_across_retries(endpoint: str) -> None:
    executions: list[str] = []

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("memo")
            async def memo(ctx: JobContext[dict[str, int]]) -> Any:
                def first() -> dict[str, int]:
                    executions.append(f"first@{ctx.attempt}")
                    return {"at": ctx.attempt}

                out = await ss_step(ctx, "first", first)
                for i in range(ctx.payload["n"]):
                    await ctx.step.run("loop", lambda i=i: i * 10)  # type: ignore[misc]

                async def flaky() -> str:
                    executions.append(f"flaky@{ctx.attempt}")
                    if ctx.attempt == 1:
                        raise RuntimeError("transient")
                    return "ok"

                await ctx.step.run("flaky", flaky)
                return {"first": out}

            async with ss.worker(queues=["memo"]):
                started = await ss.start("memo", {"n": 3}, queue_name="memo", retry_policy=FAST)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "completed"
            assert run.attempt == 2
            assert run.result == {"first": {"at": 1}}
            assert [s.id for s in run.steps] == ["first", "loop", "loop#2", "loop#3", "flaky"]
            assert run.attempts[0].failure is not None and run.attempts[0].failure.message == "transient"

    async def ss_step(ctx: JobContext[Any], step_id: str, fn: Any) -> Any:
        return await ctx.step.run(step_id, fn)

    asyncio.run(scenario())
    assert executions == ["first@1", "flaky@1", "flaky@2"]


def test_step_retried_in_place(endpoint: str) -> None:
    tries: list[int] = []

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("inplace")
            async def inplace(ctx: JobContext[Any]) -> Any:
                async def flaky() -> int:
                    tries.append(ctx.attempt)
                    if len(tries) < 3:
                        raise RuntimeError(f"transient {len(tries)}")
                    return ctx.attempt

                return await ctx.step.run("flaky", flaky, retries=3, retry_delay="10ms")

            async with ss.worker(queues=["inplace"]):
                started = await ss.start("inplace", None, queue_name="inplace", retry_policy=FAST)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "completed"
            assert run.attempt == 1
            assert run.result == 1
            assert [(log.level, log.message, log.step_id) for log in run.logs] == [
                ("warn", "step flaky failed (try 1 of 4): transient 1; retrying in 10ms", "flaky"),
                ("warn", "step flaky failed (try 2 of 4): transient 2; retrying in 20ms", "flaky"),
            ]

    asyncio.run(scenario())
    assert tries == [1, 1, 1]


def test_step_retry_options_are_validated() -> None:
    from stackshift.context import _retry_policy, step_retry_delay_ms

    assert _retry_policy(0, None) == (0, 200)
    assert _retry_policy(3, "500ms") == (3, 500)
    for bad in (-1, 101, True, 1.5):
        with pytest.raises(NonRetryableError):
            _retry_policy(bad, None)
    with pytest.raises(NonRetryableError):
        _retry_policy(1, "soon")
    assert [step_retry_delay_ms(200, k) for k in range(1, 8)] == [200, 400, 800, 1600, 3200, 5000, 5000]


def test_non_retryable_step_failure_is_recorded_and_replayed(endpoint: str) -> None:
    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            body_runs = 0

            @ss.job("nonretry")
            async def failing(ctx: JobContext[None]) -> None:
                nonlocal body_runs

                def charge() -> None:
                    nonlocal body_runs
                    body_runs += 1
                    raise NonRetryableError("card declined", details={"code": 51})

                await ctx.step.run("charge", charge)

            async with ss.worker(queues=["nonretry"]):
                started = await ss.start("nonretry", None, queue_name="nonretry", retry_policy=FAST)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "failed" and run.attempt == 1
            assert run.failure is not None and run.failure.non_retryable
            assert body_runs == 1
            step = run.step("charge")
            assert step is not None and step.failure is not None
            assert (step.failure.message, step.failure.details) == ("card declined", {"code": 51})

            replayed: list[BaseException] = []

            @ss.job("nonretry")
            async def replaying(ctx: JobContext[None]) -> str:
                try:
                    await ctx.step.run("charge", lambda: "must not run")
                except StepFailedError as e:
                    replayed.append(e)
                return "done"

            async with ss.worker(queues=["nonretry"]):
                await ss.retry_run(run.id)
                again = await ss.wait_for_run(run.id, timeout="20s")
            assert again.status == "completed"
            assert isinstance(replayed[0], StepFailedError)
            assert replayed[0].failure.message == "card declined"

    asyncio.run(scenario())


def test_cancel_stops_the_handler(endpoint: str) -> None:
    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            entered = asyncio.Event()
            seen: list[BaseException] = []

            @ss.job("cancel", lease_timeout="1500ms")
            async def long(ctx: JobContext[None]) -> None:
                async def wait() -> str:
                    entered.set()
                    try:
                        await asyncio.sleep(30)
                    except asyncio.CancelledError as e:
                        seen.append(e)
                        raise
                    return "woke"

                await ctx.step.run("wait", wait)

            async with ss.worker(queues=["cancel"]) as worker:
                started = await ss.start("cancel", None, queue_name="cancel")
                await entered.wait()
                cancelled = await ss.cancel_run(started.id, "changed my mind")
                assert cancelled.status == "cancelled"
                for _ in range(100):
                    if seen:
                        break
                    await asyncio.sleep(0.05)
                assert seen, "the handler was not cancelled"
                assert worker.active_tasks == 0
            run = await ss.get_run(started.id)
            assert run.status == "cancelled" and run.steps == []
            assert run.failure is not None and run.failure.message == "changed my mind"

    asyncio.run(scenario())


def test_client_errors_are_typed(endpoint: str) -> None:
    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            with pytest.raises(NotFoundError) as nf:
                await ss.get_run("01a1fe3c-5ee9-7389-ad76-75dfd472f0b9")
            assert nf.value.code == "NOT_FOUND"
            with pytest.raises(InvalidArgumentError):
                await ss.get_run("not-a-uuid")
            with pytest.raises(InvalidArgumentError):
                await ss.start("bad name!", {})
            with pytest.raises(InvalidArgumentError):
                await ss.start("job", {}, idempotency_ttl="forever")
            with pytest.raises(ResourceExhaustedError):
                await ss.start("job", {"blob": "x" * 70_000})
            started = await ss.queue("typed").enqueue("never-served", {}, idempotency_key="typed-1")
            again = await ss.queue("typed").enqueue("never-served", {}, idempotency_key="typed-1", idempotency_ttl="30d")
            assert again.duplicate and again.id == started.id
            await ss.cancel_run(started.id)
            with pytest.raises(FailedPreconditionError):
                await ss.cancel_run(started.id)
            assert (await ss.retry_run(started.id)).status == "queued"
            page = await ss.list_runs(queue="typed", status="queued")
            assert [r.id for r in page.runs] == [started.id]

    asyncio.run(scenario())


def test_shutdown_lets_in_flight_handlers_finish(endpoint: str) -> None:
    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            entered = asyncio.Event()

            @ss.job("graceful")
            async def graceful(ctx: JobContext[None]) -> str:
                entered.set()
                await asyncio.sleep(0.3)
                return await ctx.step.run("after-pause", lambda: "done")

            worker = ss.worker(queues=["graceful"], shutdown_grace="5s").start()
            started = await ss.start("graceful", None, queue_name="graceful")
            await entered.wait()
            await worker.shutdown()
            run = await ss.get_run(started.id)
            assert (run.status, run.result) == ("completed", "done")

    asyncio.run(scenario())


def test_interrupted_error_type_is_exported() -> None:
    assert issubclass(AttemptInterruptedError, Exception)
