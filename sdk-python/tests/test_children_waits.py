"""End-to-end tests of child runs (``step.invoke`` / ``invoke_all`` / ``invoke_child``) and
combined waits (``step.wait_for_any`` / ``wait_for_all``) against the real server binary."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from stackshift import (
    AllResult,
    AnyResult,
    ChildFailedError,
    ChildOutcome,
    ChildRun,
    JobContext,
    NonRetryableError,
    RetryPolicy,
    Run,
    StackShift,
    WaitItem,
)

FAST = RetryPolicy(max_attempts=3, initial_interval="50ms")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def register_children(ss: StackShift) -> None:
    @ss.job("double")
    def double(ctx: JobContext[int]) -> int:
        return ctx.payload * 2

    @ss.job("explode")
    def explode(ctx: JobContext[str]) -> None:
        raise NonRetryableError(ctx.payload)


def test_invoke_returns_the_child_result_on_a_single_slot(endpoint: str) -> None:
    queue = unique("invoke")
    executions: list[int] = []

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            register_children(ss)

            @ss.job("parent")
            async def parent(ctx: JobContext[int]) -> Any:
                executions.append(ctx.attempt)
                before = await ctx.step.run("before", lambda: "b")
                doubled = await ctx.step.invoke("child", "double", ctx.payload)
                again = await ctx.step.invoke("child", "double", doubled)  # child#2
                return {"before": before, "doubled": doubled, "again": again}

            # One slot: the parent must free it while its child runs.
            async with ss.worker(queues=[queue], concurrency=1):
                started = await ss.start("parent", 21, queue_name=queue, retry_policy=FAST)
                run = await ss.wait_for_run(started.id, timeout="30s")
                children = (await ss.list_runs(queue=queue, job="double")).runs
            assert run.status == "completed" and run.result == {"before": "b", "doubled": 42, "again": 84}
            assert run.attempt == 1 and len(executions) >= 3
            kinds = {s.id: s.kind for s in run.steps}
            assert kinds == {"before": "step", "child": "child", "child#2": "child"}
            assert run.parent_run_id is None
            assert len(children) == 2
            assert {c.parent_run_id for c in children} == {started.id}
            assert {c.parent_step_id for c in children} == {"child", "child#2"}
            assert all(c.queue == queue for c in children)

    asyncio.run(scenario())


def test_invoke_raises_child_failed_and_propagating_fails_without_retries(endpoint: str) -> None:
    queue = unique("invoke-fail")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            register_children(ss)

            @ss.job("catching")
            async def catching(ctx: JobContext[None]) -> Any:
                try:
                    await ctx.step.invoke("child", "explode", "kaboom")
                except ChildFailedError as e:
                    return {"run_id": e.run_id, "job": e.job, "status": e.status, "message": e.failure.message}
                return "unreachable"

            @ss.job("propagating")
            async def propagating(ctx: JobContext[None]) -> Any:
                return await ctx.step.invoke("child", "explode", "boom")

            async with ss.worker(queues=[queue], concurrency=2):
                caught = await ss.start("catching", None, queue_name=queue, retry_policy=FAST)
                propagated = await ss.start("propagating", None, queue_name=queue, retry_policy=FAST)
                caught_run = await ss.wait_for_run(caught.id, timeout="30s")
                failed_run = await ss.wait_for_run(propagated.id, timeout="30s")
            assert caught_run.status == "completed"
            result = caught_run.result
            assert result["job"] == "explode" and result["status"] == "failed" and result["message"] == "kaboom"
            child: Run = await ss_get(endpoint, result["run_id"])
            assert child.status == "failed" and child.parent_run_id == caught.id

            assert failed_run.status == "failed" and failed_run.attempt == 1 and failed_run.max_attempts == 3
            assert failed_run.failure is not None and failed_run.failure.non_retryable
            assert failed_run.failure.type == "ChildFailedError"
            assert "(explode) failed: boom" in failed_run.failure.message

    async def ss_get(endpoint: str, run_id: str) -> Run:
        async with StackShift(endpoint=endpoint) as c:
            return await c.get_run(run_id)

    asyncio.run(scenario())


def test_invoke_all_returns_every_outcome_in_order(endpoint: str) -> None:
    queue = unique("fanout")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            register_children(ss)

            @ss.job("fan")
            async def fan(ctx: JobContext[None]) -> Any:
                children = [ChildRun("double", i) for i in range(5)]
                children.insert(2, ChildRun("explode", "chunk failed"))
                outcomes = await ctx.step.invoke_all("chunks", children)
                single: ChildOutcome = await ctx.step.invoke_child(
                    "priority-child", ChildRun("double", 50, priority=10, lease_timeout="30s", concurrency_key="k")
                )
                return {
                    "outcomes": [
                        [o.status, o.result, o.failure.message if o.failure else None, o.job] for o in outcomes
                    ],
                    "single": single.result_or_raise(),
                }

            async with ss.worker(queues=[queue], concurrency=3):
                started = await ss.start("fan", None, queue_name=queue)
                run = await ss.wait_for_run(started.id, timeout="30s")
            assert run.status == "completed"
            assert run.result == {
                "outcomes": [
                    ["completed", 0, None, "double"],
                    ["completed", 2, None, "double"],
                    ["failed", None, "chunk failed", "explode"],
                    ["completed", 4, None, "double"],
                    ["completed", 6, None, "double"],
                    ["completed", 8, None, "double"],
                ],
                "single": 100,
            }

    asyncio.run(scenario())


def any_json(r: AnyResult) -> Any:
    if r.timed_out:
        return "timed out"
    assert r.result is not None
    return [r.index, r.result.kind, r.result.event.payload if r.result.event else None]


def all_json(r: AllResult) -> Any:
    return [r.timed_out, [None if i is None else (i.kind, i.event.payload if i.event else None) for i in r.items]]


def test_wait_for_any(endpoint: str) -> None:
    queue = unique("any")
    key = unique("k")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("any-event")
            async def any_event(ctx: JobContext[str]) -> Any:
                got = await ctx.step.wait_for_any(
                    "approval", [WaitItem.sleep("60s"), WaitItem.event("approved", key=ctx.payload)]
                )
                return any_json(got)

            @ss.job("any-sleep")
            async def any_sleep(ctx: JobContext[None]) -> Any:
                got = await ctx.step.wait_for_any(
                    "approval", [WaitItem.event("never.published"), WaitItem.sleep("300ms")], timeout="60s"
                )
                return any_json(got)

            @ss.job("any-timeout")
            async def any_timeout(ctx: JobContext[None]) -> Any:
                got = await ctx.step.wait_for_any("approval", [WaitItem.event("never.published")], timeout="300ms")
                return any_json(got)

            async with ss.worker(queues=[queue]):
                ev = await ss.start("any-event", key, queue_name=queue)
                sl = await ss.start("any-sleep", None, queue_name=queue)
                to = await ss.start("any-timeout", None, queue_name=queue)
                for _ in range(200):
                    if (await ss.get_run(ev.id)).status == "waiting":
                        break
                    await asyncio.sleep(0.02)
                waiting = await ss.get_run(ev.id)
                await ss.events.publish("approved", {"by": "ada"}, key=key)
                ev_run = await ss.wait_for_run(ev.id, timeout="20s")
                sl_run = await ss.wait_for_run(sl.id, timeout="20s")
                to_run = await ss.wait_for_run(to.id, timeout="20s")
            assert waiting.status == "waiting" and waiting.wait is not None and waiting.wait.kind == "any"
            assert ev_run.status == "completed" and ev_run.result == [1, "event", {"by": "ada"}]
            assert sl_run.status == "completed" and sl_run.result == [1, "sleep", None]
            assert to_run.status == "completed" and to_run.result == "timed out"
            assert ev_run.step("approval") is not None and ev_run.step("approval").kind == "any"  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_wait_for_all(endpoint: str) -> None:
    queue = unique("all")
    key = unique("contract")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("all-events")
            async def all_events(ctx: JobContext[str]) -> Any:
                got = await ctx.step.wait_for_all(
                    "signatures",
                    [WaitItem.event("signed", key=ctx.payload), WaitItem.event("signed", key=ctx.payload), WaitItem.sleep(0.1)],
                    timeout="60s",
                )
                return all_json(got)

            @ss.job("all-timeout")
            async def all_timeout(ctx: JobContext[str]) -> Any:
                got = await ctx.step.wait_for_all(
                    "signatures", [WaitItem.event("half", key=ctx.payload), WaitItem.event("never.published")],
                    timeout="500ms",
                )
                return all_json(got)

            @ss.job("all-sleeps")
            async def all_sleeps(ctx: JobContext[None]) -> Any:
                return all_json(await ctx.step.wait_for_all("naps", [WaitItem.sleep("100ms"), WaitItem.sleep("200ms")]))

            async with ss.worker(queues=[queue]):
                ev = await ss.start("all-events", key, queue_name=queue)
                to = await ss.start("all-timeout", key, queue_name=queue)
                sl = await ss.start("all-sleeps", None, queue_name=queue)
                await ss.events.publish("signed", {"n": 1}, key=key)
                await ss.events.publish("half", {"n": 0}, key=key)
                await ss.events.publish("signed", {"n": 2}, key=key)
                ev_run = await ss.wait_for_run(ev.id, timeout="20s")
                to_run = await ss.wait_for_run(to.id, timeout="20s")
                sl_run = await ss.wait_for_run(sl.id, timeout="20s")
            assert ev_run.status == "completed"
            assert ev_run.result == [False, [["event", {"n": 1}], ["event", {"n": 2}], ["sleep", None]]]
            assert to_run.status == "completed" and to_run.result == [True, [["event", {"n": 0}], None]]
            assert sl_run.status == "completed" and sl_run.result == [False, [["sleep", None], ["sleep", None]]]

    asyncio.run(scenario())


def test_combined_wait_without_a_bound_fails_the_run(endpoint: str) -> None:
    queue = unique("unbounded")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("unbounded")
            async def unbounded(ctx: JobContext[None]) -> Any:
                return all_json(await ctx.step.wait_for_all("w", [WaitItem.event("x")]))

            @ss.job("no-children")
            async def no_children(ctx: JobContext[None]) -> Any:
                return await ctx.step.invoke_all("none", [])

            async with ss.worker(queues=[queue]):
                a = await ss.start("unbounded", None, queue_name=queue, retry_policy=FAST)
                b = await ss.start("no-children", None, queue_name=queue, retry_policy=FAST)
                a_run = await ss.wait_for_run(a.id, timeout="20s")
                b_run = await ss.wait_for_run(b.id, timeout="20s")
            assert a_run.status == "failed" and a_run.attempt == 1
            assert a_run.failure is not None and a_run.failure.non_retryable
            assert b_run.status == "failed" and b_run.attempt == 1
            assert b_run.failure is not None and "needs 1 to 1000 child runs" in b_run.failure.message

    asyncio.run(scenario())
