"""End-to-end tests of schedules and event triggers (client-created and job-declared) against
the real server binary."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

import pytest

from stackshift import (
    AlreadyExistsError,
    EventTriggerDeclaration,
    InvalidArgumentError,
    JobContext,
    NotFoundError,
    StackShift,
    TriggerDeclarationError,
    TriggeredEvent,
)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_schedule_lifecycle(endpoint: str) -> None:
    ids = [unique("sched-a"), unique("sched-b")]

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            created = await ss.schedules.create(
                ids[0],
                "report",
                {"kind": "daily"},
                cron="0 9 * * MON-FRI",
                time_zone="Europe/Paris",
                queue_name="reports",
                catch_up="skip",
            )
            assert created.created
            s = created.schedule
            assert s.id == ids[0] and s.job == "report" and s.payload == {"kind": "daily"}
            assert s.cron == "0 9 * * MON-FRI" and s.time_zone == "Europe/Paris" and s.every is None
            assert s.queue == "reports" and s.catch_up == "skip" and not s.paused
            assert s.next_fire_time is not None and s.last_fire_time is None and s.recent_run_ids == []

            again = await ss.schedules.create(
                ids[0], "report", {"kind": "daily"}, cron="0 9 * * MON-FRI", time_zone="Europe/Paris",
                queue_name="reports", catch_up="skip",
            )
            assert not again.created and again.schedule.id == ids[0]
            with pytest.raises(AlreadyExistsError):
                await ss.schedules.create(ids[0], "report", {"kind": "weekly"}, cron="0 9 * * MON")
            with pytest.raises(InvalidArgumentError):
                await ss.schedules.create(unique("bad"), "report", cron="not a cron")
            with pytest.raises(InvalidArgumentError):
                await ss.schedules.create(unique("bad"), "report", cron="* * * * *", every="1h")

            second = await ss.schedules.create(ids[1], "report", every="1h", paused=True)
            assert second.created and second.schedule.paused and second.schedule.every == timedelta(hours=1)
            assert second.schedule.cron is None and second.schedule.catch_up == "latest"

            listed: list[str] = []
            token = None
            while True:
                page = await ss.schedules.list(page_size=1, page_token=token)
                assert len(page.schedules) <= 1
                listed += [x.id for x in page.schedules]
                token = page.next_page_token
                if token is None:
                    break
            assert set(ids) <= set(listed)

            paused = await ss.schedules.pause(ids[0])
            assert paused.paused and (await ss.schedules.get(ids[0])).paused
            resumed = await ss.schedules.resume(ids[0])
            assert not resumed.paused and resumed.next_fire_time is not None

            for sid in ids:
                await ss.schedules.delete(sid)
                with pytest.raises(NotFoundError):
                    await ss.schedules.get(sid)

    asyncio.run(scenario())


def test_interval_schedule_starts_runs(endpoint: str) -> None:
    queue = unique("sched-q")
    sid = unique("every-second")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("tick")
            def tick(ctx: JobContext[dict[str, int]]) -> int:
                return ctx.payload["n"] + 1

            async with ss.worker(queues=[queue]):
                await ss.schedules.create(sid, "tick", {"n": 41}, every="1s", queue_name=queue, catch_up="skip")
                schedule = await ss.schedules.get(sid)
                for _ in range(150):
                    schedule = await ss.schedules.get(sid)
                    if schedule.recent_run_ids:
                        break
                    await asyncio.sleep(0.1)
                assert schedule.recent_run_ids, "the interval schedule never fired"
                assert schedule.last_fire_time is not None
                run = await ss.wait_for_run(schedule.recent_run_ids[-1], timeout="20s")
                await ss.schedules.delete(sid)
            assert run.status == "completed" and run.result == 42 and run.job == "tick" and run.queue == queue

    asyncio.run(scenario())


def test_client_created_trigger_starts_runs(endpoint: str) -> None:
    queue = unique("trig-q")
    event = unique("user.signed_up")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("welcome")
            def welcome(ctx: JobContext[Any]) -> dict[str, Any]:
                e = TriggeredEvent.from_payload(ctx.payload)
                return {"id": e.id, "name": e.name, "key": e.correlation_key, "payload": e.payload,
                        "year": e.published_at.year}

            ss.job("welcome-vip", welcome)

            created = await ss.triggers.create(event, "welcome", queue_name=queue)
            assert created.created and created.trigger.event_name == event and created.trigger.queue == queue
            assert created.trigger.correlation_key is None
            again = await ss.triggers.create(event, "welcome", queue_name=queue)
            assert not again.created and again.trigger.id == created.trigger.id
            with pytest.raises(AlreadyExistsError):
                await ss.triggers.create(event, "welcome", queue_name=queue, priority=5)
            keyed = await ss.triggers.create(event, "welcome-vip", key="vip", queue_name=queue)
            assert keyed.created and keyed.trigger.correlation_key == "vip"

            page = await ss.triggers.list(event=event)
            assert sorted(t.id for t in page.triggers) == sorted([created.trigger.id, keyed.trigger.id])
            assert [t.id for t in (await ss.triggers.list(event=event, job="nope")).triggers] == []

            async with ss.worker(queues=[queue]):
                plain = await ss.events.publish(event, {"email": "ada@example.com"}, key="regular")
                assert len(plain.started_run_ids) == 1
                vip = await ss.events.publish(event, {"email": "bob@example.com"}, key="vip")
                assert len(vip.started_run_ids) == 2  # one run per subscribed job
                run = await ss.wait_for_run(plain.started_run_ids[0], timeout="20s")
                assert run.status == "completed"
                assert run.result == {
                    "id": plain.event.id, "name": event, "key": "regular",
                    "payload": {"email": "ada@example.com"}, "year": plain.event.published_at.year  # type: ignore[union-attr]
                }
                for run_id in vip.started_run_ids:
                    assert (await ss.wait_for_run(run_id, timeout="20s")).status == "completed"

            await ss.triggers.delete(created.trigger.id)
            await ss.triggers.delete(keyed.trigger.id)
            after = await ss.events.publish(event, {"email": "eve@example.com"})
            assert after.started_run_ids == []
            assert (await ss.triggers.list(event=event)).triggers == []

    asyncio.run(scenario())


def test_job_declared_triggers_are_created_when_the_worker_starts(endpoint: str) -> None:
    queue = unique("declared-q")
    event = unique("order.placed")
    other = unique("order.shipped")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:

            @ss.job("on-order", triggers=[event, EventTriggerDeclaration(other, key="k1", queue_name=queue + "-b")])
            def on_order(ctx: JobContext[Any]) -> Any:
                return TriggeredEvent.from_payload(ctx.payload).payload

            assert (await ss.triggers.list(event=event)).triggers == []
            async with ss.worker(queues=[queue, queue + "-b"]):
                declared = (await ss.triggers.list(event=event, job="on-order")).triggers
                assert len(declared) == 1 and declared[0].queue == queue and declared[0].correlation_key is None
                keyed = (await ss.triggers.list(event=other)).triggers
                assert len(keyed) == 1 and keyed[0].queue == queue + "-b" and keyed[0].correlation_key == "k1"
                published = await ss.events.publish(event, {"order": 7}, key="anything")
                assert len(published.started_run_ids) == 1
                run = await ss.wait_for_run(published.started_run_ids[0], timeout="20s")
                assert run.status == "completed" and run.result == {"order": 7} and run.queue == queue
                assert (await ss.events.publish(other, {"order": 8}, key="k2")).started_run_ids == []
            # A second worker start finds the same triggers (idempotent).
            async with ss.worker(queues=[queue, queue + "-b"]):
                assert len((await ss.triggers.list(event=event)).triggers) == 1

    asyncio.run(scenario())


def test_refused_trigger_declaration_fails_worker_start(endpoint: str) -> None:
    queue = unique("refused-q")
    event = unique("invoice.paid")

    async def scenario() -> None:
        async with StackShift(endpoint=endpoint) as ss:
            await ss.triggers.create(event, "bill", queue_name=queue, priority=9)

            @ss.job("bill", triggers=[event])
            def bill(ctx: JobContext[Any]) -> None:
                return None

            worker = ss.worker(queues=[queue])
            with pytest.raises(TriggerDeclarationError) as raised:
                async with worker:
                    pass
            assert raised.value.code == "ALREADY_EXISTS"
            assert raised.value.job == "bill" and raised.value.event == event
            assert isinstance(raised.value.__cause__, AlreadyExistsError)
            assert raised.value.queue == queue and raised.value.key == ""
            # start() declares in the background: the worker does not poll, shutdown() raises.
            background = ss.worker(queues=[queue]).start()
            with pytest.raises(TriggerDeclarationError):
                await background.shutdown()

        async with StackShift(endpoint=endpoint) as other:

            @other.job("bad", triggers=["not a valid event name!"])
            def bad(ctx: JobContext[Any]) -> None:
                return None

            with pytest.raises(TriggerDeclarationError) as invalid:
                async with other.worker(queues=[queue]):
                    pass
            assert invalid.value.code == "INVALID_ARGUMENT" and invalid.value.job == "bad"

    asyncio.run(scenario())


def test_triggered_event_rejects_other_payloads() -> None:
    with pytest.raises(ValueError):
        TriggeredEvent.from_payload({"hello": 1})
    e = TriggeredEvent.from_payload(
        {"id": "e1", "name": "n", "correlationKey": "", "payload": None, "publishedAt": 1763700000000}
    )
    assert e.correlation_key == "" and e.published_at.year == 2025
