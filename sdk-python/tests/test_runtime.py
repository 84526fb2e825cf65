"""End-to-end tests of durable sleeps, event waits, the state store (journaled in runs and
direct), run logs and timelines, events, queue management and start options, against the real
server binary."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest

from stackshift import (
    ConflictError,
    Event,
    FailedPreconditionError,
    JobContext,
    NonRetryableError,
    NotFoundError,
    RetryPolicy,
    StackShift,
)

FAST = RetryPolicy(max_attempts=3, initial_interval="50ms")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_sleep_suspends_and_resumes_the_run(endpoint: str) -> None:
    queue = unique("sleep")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            executions: list[int] = []

            @ss.job("sleeper")
            async def sleeper(ctx: JobContext[None]) -> str:
                executions.append(ctx.attempt)
                await ctx.step.run("before", lambda: "b")
                await ctx.step.sleep("nap", "2s")
                await ctx.step.sleep("nap", timedelta(milliseconds=10))  # nap#2
                await ctx.step.sleep_until("past", datetime.now(timezone.utc) - timedelta(days=1))
                return "rested"

            async with ss.worker(queues=[queue]):
                started = await ss.start("sleeper", None, queue_name=queue)
                for _ in range(200):
                    waiting = await ss.get_run(started.id)
                    if waiting.status != "queued" and waiting.status != "running":
                        break
                    await asyncio.sleep(0.02)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert waiting.status == "waiting"
            assert waiting.wait is not None and waiting.wait.step_id == "nap" and waiting.wait.kind == "sleep"
            assert run.status == "completed" and run.result == "rested" and run.attempt == 1
            kinds = {s.id: s.kind for s in run.steps}
            assert kinds == {"before": "step", "nap": "sleep", "nap#2": "sleep", "past": "sleep"}
            timeline = [t.kind for t in run.timeline]
            assert timeline[0] == "CREATED" and timeline[-1] == "COMPLETED"
            assert "WAITING" in timeline and "TIMER_FIRED" in timeline and "ATTEMPT_RESUMED" in timeline
            assert len(executions) >= 2 and set(executions) == {1}

    asyncio.run(scenario())


def test_wait_for_event_receives_or_times_out(endpoint: str) -> None:
    queue = unique("events")
    key = unique("pay")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("confirm")
            async def confirm(ctx: JobContext[dict[str, str]]) -> dict[str, Any]:
                event: Optional[Event] = await ctx.step.wait_for_event(
                    "wait", "payment.confirmed", key=ctx.payload["key"], timeout=ctx.payload["timeout"]
                )
                if event is None:
                    return {"received": False}
                return {"received": True, "payload": event.payload, "key": event.key, "name": event.name}

            async with ss.worker(queues=[queue]):
                received = await ss.start("confirm", {"key": key, "timeout": "30s"}, queue_name=queue)
                timed_out = await ss.start("confirm", {"key": unique("other"), "timeout": "500ms"}, queue_name=queue)
                for _ in range(100):
                    if (await ss.get_run(received.id)).status == "waiting":
                        break
                    await asyncio.sleep(0.05)
                published = await ss.events.publish("payment.confirmed", {"amount": 42}, key=key, id=unique("evt"))
                duplicate = await ss.events.publish("payment.confirmed", {"amount": 42}, key=key, id=published.event.id)
                run = await ss.wait_for_run(received.id, timeout="20s")
                late = await ss.wait_for_run(timed_out.id, timeout="20s")
            assert published.resumed_run_count == 1 and published.resumed_run_ids == [received.id]
            assert duplicate.duplicate and duplicate.resumed_run_count == 0
            assert run.status == "completed"
            assert run.result == {"received": True, "payload": {"amount": 42}, "key": key, "name": "payment.confirmed"}
            assert "EVENT_MATCHED" in [t.kind for t in run.timeline]
            assert late.status == "completed" and late.result == {"received": False}
            assert "WAIT_TIMED_OUT" in [t.kind for t in late.timeline]
            page = await ss.events.list(name="payment.confirmed", key=key)
            assert [e.id for e in page.events] == [published.event.id]

    asyncio.run(scenario())


def test_state_calls_in_a_run_are_journaled(endpoint: str) -> None:
    queue = unique("state")
    key = unique("rows")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("counter")
            async def counter(ctx: JobContext[str]) -> dict[str, Any]:
                total = await ctx.state.increment(ctx.payload, 5)
                await ctx.state.set(f"{ctx.payload}:marker", {"seen": True}, ttl="1h")
                marker = await ctx.state.get(f"{ctx.payload}:marker")
                if ctx.attempt == 1:
                    raise RuntimeError("crash after the increment")
                try:
                    await ctx.state.set(ctx.payload, 0, expected_version=99)
                    conflict = None
                except ConflictError as e:
                    conflict = e.reason
                return {"total": total, "marker": marker, "conflict": conflict}

            async with ss.worker(queues=[queue]):
                started = await ss.start("counter", key, queue_name=queue, retry_policy=FAST)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "completed" and run.attempt == 2
            assert run.result == {"total": 5, "marker": {"seen": True}, "conflict": "VERSION_MISMATCH"}
            assert [s.id for s in run.steps if s.kind == "state"] == ["state:1", "state:2", "state:3", "state:4"]
            # Applied once despite the retry.
            assert await ss.state.get(key) == 5

    asyncio.run(scenario())


def test_reserved_step_ids_are_refused(endpoint: str) -> None:
    queue = unique("reserved")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("reserved")
            async def reserved(ctx: JobContext[None]) -> None:
                await ctx.step.run("state:1", lambda: 1)

            async with ss.worker(queues=[queue]):
                started = await ss.start("reserved", None, queue_name=queue)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "failed" and run.failure is not None and run.failure.non_retryable
            assert "reserved" in run.failure.message

    asyncio.run(scenario())


def test_client_state_and_locks(endpoint: str) -> None:
    prefix = unique("direct")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            state = ss.state
            assert not state.is_journaled
            assert await state.get(f"{prefix}:missing") is None
            version = await state.set(f"{prefix}:a", {"processed": 1, "total": 2})
            entry = await state.get_entry(f"{prefix}:a")
            assert entry is not None and entry.value == {"processed": 1, "total": 2} and entry.version == version
            with pytest.raises(ConflictError) as conflict:
                await state.set(f"{prefix}:a", 1, expected_version=version + 7)
            assert conflict.value.reason == "VERSION_MISMATCH" and conflict.value.code == "FAILED_PRECONDITION"
            assert isinstance(conflict.value, FailedPreconditionError)
            with pytest.raises(ConflictError) as not_int:
                await state.increment(f"{prefix}:a")
            assert not_int.value.reason == "NOT_AN_INTEGER"
            assert await state.increment(f"{prefix}:n") == 1
            assert await state.increment(f"{prefix}:n", 10) == 11
            await state.set(f"{prefix}:ttl", True, expires_at=datetime.now(timezone.utc) + timedelta(days=7))
            keys = await state.list(prefix)
            assert [k.key for k in keys.keys] == [f"{prefix}:a", f"{prefix}:n", f"{prefix}:ttl"]
            assert keys.keys[2].expires_at is not None
            assert await state.delete(f"{prefix}:a") is True
            assert await state.delete(f"{prefix}:a") is False

            lock = await state.lock(f"{prefix}:lock", "10s")
            assert lock is not None and lock.token > 0
            assert await state.lock(f"{prefix}:lock", "10s", wait="100ms") is None
            await lock.extend("20s")
            async with lock:
                pass
            with pytest.raises(ConflictError) as not_held:
                await lock.release()
            assert not_held.value.reason == "LOCK_NOT_HELD"
            again = await state.lock(f"{prefix}:lock", "10s")
            assert again is not None and again.token > lock.token
            await state.release_lock(again.key, again.token)

    asyncio.run(scenario())


def test_logs_are_flushed_before_the_outcome(endpoint: str) -> None:
    queue = unique("logs")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("logger")
            async def logger(ctx: JobContext[None]) -> None:
                ctx.log.info("starting", batch=3)

                async def body() -> str:
                    ctx.log.bind(customer="cus_1").warn("inside the step")
                    return "ok"

                await ctx.step.run("work", body)
                ctx.log.debug("plain")
                if ctx.attempt == 1:
                    ctx.log.error("failing", attempt=ctx.attempt)
                    raise RuntimeError("retry me")

            async with ss.worker(queues=[queue]):
                started = await ss.start("logger", None, queue_name=queue, retry_policy=FAST)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "completed"
            lines = [(e.attempt, e.level, e.message, e.fields, e.step_id) for e in run.logs]
            assert lines == [
                (1, "info", "starting", {"batch": 3}, ""),
                (1, "warn", "inside the step", {"customer": "cus_1"}, "work"),
                (1, "debug", "plain", {}, ""),
                (1, "error", "failing", {"attempt": 1}, ""),
                (2, "info", "starting", {"batch": 3}, ""),
                (2, "debug", "plain", {}, ""),
            ]

    asyncio.run(scenario())


def test_queue_management_and_start_options(endpoint: str) -> None:
    name = unique("managed")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            queue = ss.queue(name)
            with pytest.raises(NotFoundError):
                await queue.pause()
            info = await queue.configure(concurrency_limit=2, key_concurrency_limit=1, retry_policy=FAST, lease_timeout="45s")
            assert (info.name, info.paused) == (name, False)
            assert info.config.concurrency_limit == 2 and info.config.key_concurrency_limit == 1
            assert info.config.lease_timeout == timedelta(seconds=45)
            assert info.config.retry_policy is not None and info.config.retry_policy.max_attempts == 3
            assert (await queue.pause()).paused
            delayed = await queue.enqueue("noop", {"n": 1}, delay="1h", priority=5, concurrency_key="cus_1")
            at = await ss.start("noop", None, queue_name=name, run_at=datetime.now(timezone.utc) + timedelta(hours=2))
            assert delayed.run.priority == 5 and delayed.run.concurrency_key == "cus_1"
            assert delayed.run.next_attempt_at is not None and at.run.next_attempt_at is not None
            stats = (await queue.get()).stats
            assert stats.delayed == 2 and stats.queued >= 0
            resumed = await queue.resume()
            assert not resumed.paused
            configured = await queue.configure()  # replaces the whole configuration
            assert configured.config.concurrency_limit is None
            names: list[str] = []
            token: Optional[str] = None
            while True:
                page = await ss.list_queues(page_size=50, page_token=token)
                names += [q.name for q in page.queues]
                token = page.next_page_token
                if token is None:
                    break
            assert name in names

    asyncio.run(scenario())


def test_wait_arguments_are_validated(endpoint: str) -> None:
    queue = unique("badwait")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("bad")
            async def bad(ctx: JobContext[None]) -> None:
                await ctx.step.sleep("nap", "soon")

            async with ss.worker(queues=[queue]):
                started = await ss.start("bad", None, queue_name=queue)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "failed" and run.failure is not None and run.failure.non_retryable
            assert "nap" in run.failure.message

    asyncio.run(scenario())


def test_non_retryable_is_exported() -> None:
    assert issubclass(ConflictError, FailedPreconditionError)
    assert NonRetryableError("x").non_retryable


def test_locks_in_a_run_are_released_with_the_run(endpoint: str) -> None:
    queue = unique("runlock")
    key = unique("lock")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("holder")
            async def holder(ctx: JobContext[str]) -> dict[str, Any]:
                lock = await ctx.state.lock(ctx.payload, "1h")
                assert lock is not None
                busy = await ctx.state.lock(ctx.payload, "1h", wait="50ms")
                stale = await ctx.state.lock(f"{ctx.payload}:short", "100ms")
                assert stale is not None
                await asyncio.sleep(0.3)
                other = await ctx.state.lock(f"{ctx.payload}:short", "1h")  # the short one expired
                try:
                    await stale.release()
                    reason = None
                except ConflictError as e:
                    reason = e.reason
                return {"token": lock.token, "busy": busy is None, "reason": reason, "other": other is not None}

            async with ss.worker(queues=[queue]):
                started = await ss.start("holder", key, queue_name=queue)
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert run.status == "completed", run.failure
            assert run.result is not None and run.result["busy"] and run.result["other"]
            assert run.result["reason"] == "LOCK_NOT_HELD"
            # Released when the run completed (release_with_run is the default inside a run).
            after = await ss.state.lock(key, "10s")
            assert after is not None and after.token > run.result["token"]
            await after.release()

    asyncio.run(scenario())


def test_logs_are_batched_while_the_handler_runs(endpoint: str) -> None:
    queue = unique("batch")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            release = asyncio.Event()

            @ss.job("chatty")
            async def chatty(ctx: JobContext[None]) -> None:
                for i in range(150):
                    ctx.log.debug("line", i=i)
                ctx.log.info("then waiting")
                await release.wait()

            async with ss.worker(queues=[queue]):
                started = await ss.start("chatty", None, queue_name=queue)
                seen: list[str] = []
                for _ in range(100):  # the 100-line batch at once, the rest within about a second
                    seen = [e.message for e in (await ss.get_run(started.id)).logs]
                    if len(seen) == 151:
                        break
                    await asyncio.sleep(0.05)
                release.set()
                run = await ss.wait_for_run(started.id, timeout="20s")
            assert len(seen) == 151 and seen[-1] == "then waiting"
            assert run.status == "completed" and len(run.logs) == 151
            assert [e.fields["i"] for e in run.logs[:150]] == list(range(150))

    asyncio.run(scenario())
