"""The Python SDK's conformance adapter: a worker built on ``stackshift`` that registers the
fixed job catalogue (``conf.script``, ``conf.echo``) and answers client commands on stdin,
following the protocol in docs/conformance.md. Started by
``cargo run -p stackshift-conformance -- --sdk python``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any, Optional

from stackshift import (
    AllResult,
    AttemptInterruptedError,
    ChildFailedError,
    ChildOutcome,
    ChildRun,
    ConflictError,
    EventTriggerDeclaration,
    ItemResult,
    JobContext,
    NonRetryableError,
    RetryPolicy,
    QueueInfo,
    Run,
    StackShift,
    Schedule,
    StackShiftError,
    StepFailedError,
    WaitItem,
)

LEDGER = os.environ["CONFORMANCE_LEDGER"]


def record(run_id: str, step: str, attempt: int, phase: str) -> None:
    """Appends one ledger line."""
    line = json.dumps({"run_id": run_id, "step": step, "attempt": attempt, "phase": phase, "t": time.time() * 1000})
    with open(LEDGER, "a", encoding="utf-8") as f:
        f.write(line + "\n")


async def step_body(ctx: JobContext[Any], step_id: str, op: dict[str, Any], try_no: int = 1) -> Any:
    """Ledger start, optional sleep, optional failure, ledger end."""
    record(ctx.run_id, step_id, ctx.attempt, "start")
    if isinstance(op.get("sleep_ms"), int):
        await asyncio.sleep(op["sleep_ms"] / 1000)
    message: Optional[str] = op.get("message")
    until = op.get("fail_until_attempt")
    if isinstance(until, int) and ctx.attempt <= until:
        raise RuntimeError(message or f"step {step_id} failed on attempt {ctx.attempt}")
    until_try = op.get("fail_until_try")
    if isinstance(until_try, int) and try_no <= until_try:
        raise RuntimeError(message or f"step {step_id} failed on try {try_no}")
    if op.get("non_retryable") is True:
        raise NonRetryableError(message or f"step {step_id} failed permanently")
    record(ctx.run_id, step_id, ctx.attempt, "end")
    if isinstance(op.get("output_bytes"), int):
        return "x" * op["output_bytes"]
    return op["output"] if "output" in op else {"step": step_id, "attempt": ctx.attempt}


def error_kind(error: Exception) -> tuple[str, str]:
    """``step_failed`` (replayed terminal failure), ``non_retryable`` or ``error``."""
    if isinstance(error, StepFailedError):
        return "step_failed", error.failure.message
    if isinstance(error, NonRetryableError):
        return "non_retryable", error.message
    return "error", str(error)


def ms(value: Any) -> timedelta:
    """A millisecond count as a timedelta."""
    return timedelta(milliseconds=int(value))


STATE_OPS = ("state_set", "state_get", "state_incr", "state_delete", "lock")


async def state_op(ctx: JobContext[Any], op: dict[str, Any], outputs: list[Any]) -> None:
    """One ``state_*`` or ``lock`` script op through ``ctx.state``."""
    if "state_set" in op:
        ttl = ms(op["ttl_ms"]) if isinstance(op.get("ttl_ms"), int) else None
        await ctx.state.set(op["state_set"], op.get("value"), ttl=ttl)
    elif "state_get" in op:
        outputs.append(await ctx.state.get(op["state_get"]))
    elif "state_incr" in op:
        if isinstance(op.get("by"), int):
            outputs.append(await ctx.state.increment(op["state_incr"], op["by"]))
        else:
            outputs.append(await ctx.state.increment(op["state_incr"]))
    elif "state_delete" in op:
        outputs.append(await ctx.state.delete(op["state_delete"]))
    else:
        wait = ms(op["wait_ms"]) if isinstance(op.get("wait_ms"), int) else None
        lock = await ctx.state.lock(op["lock"], ms(op["ttl_ms"]), wait=wait)
        if lock is None:
            outputs.append({"granted": False})
            return
        outputs.append({"granted": True, "token": lock.token})
        if isinstance(op.get("hold_ms"), int):
            await asyncio.sleep(op["hold_ms"] / 1000)
        if op.get("release") is not False:
            await lock.release()


def wait_items(items: list[dict[str, Any]]) -> list[WaitItem]:
    """``{event: NAME, key?: K}`` or ``{sleep_ms: N}`` as wait items."""
    return [
        WaitItem.sleep(ms(item["sleep_ms"])) if "sleep_ms" in item else WaitItem.event(item["event"], item.get("key") or None)
        for item in items
    ]


def item_output(result: Optional[ItemResult]) -> Any:
    """An item's output: ``{name, key, payload}`` for an event item, ``null`` otherwise."""
    if result is None or result.event is None:
        return None
    event = result.event
    return {"name": event.name, "key": event.key or "", "payload": event.payload}


def outcome_json(outcome: ChildOutcome) -> dict[str, Any]:
    if outcome.status == "completed":
        return {"status": "completed", "result": outcome.result}
    return {"status": outcome.status, "message": outcome.failure.message if outcome.failure else ""}


def all_json(result: AllResult) -> dict[str, Any]:
    return {
        "timed_out": result.timed_out,
        "outputs": [item_output(item) for item in result.items],
        "resolved": [item is not None for item in result.items],
    }


async def run_ops(ctx: JobContext[Any], ops: list[Any], outputs: list[Any], caught: list[Any]) -> None:
    for op in ops:
        state_key = next((op[name] for name in STATE_OPS if name in op), None)
        if isinstance(state_key, str):
            try:
                await state_op(ctx, op, outputs)
            except ConflictError as e:
                if op.get("catch") is not True:
                    raise
                caught.append({"step": state_key, "kind": "conflict", "reason": e.reason})
        elif isinstance(op.get("sleep"), str):
            await ctx.step.sleep(op["sleep"], ms(op.get("ms", 0)))
        elif isinstance(op.get("wait_event"), str):
            key = op.get("key") or None
            event = await ctx.step.wait_for_event(op["wait_event"], op["event"], key=key, timeout=ms(op["timeout_ms"]))
            outputs.append({"received": False} if event is None else {"received": True, "payload": event.payload})
        elif isinstance(op.get("invoke"), str):
            try:
                outputs.append(await ctx.step.invoke(op["invoke"], op["job"], op.get("payload")))
            except ChildFailedError as e:
                if op.get("propagate") is True:
                    raise
                outputs.append({"child_failed": True, "status": e.status, "message": e.failure.message})
        elif isinstance(op.get("invoke_all"), str):
            children = [ChildRun(c["job"], c.get("payload")) for c in op.get("children", [])]
            outcomes = await ctx.step.invoke_all(op["invoke_all"], children)
            outputs.append([outcome_json(o) for o in outcomes])
        elif isinstance(op.get("wait_any"), str):
            timeout = ms(op["timeout_ms"]) if isinstance(op.get("timeout_ms"), int) else None
            got = await ctx.step.wait_for_any(op["wait_any"], wait_items(op.get("items", [])), timeout=timeout)
            outputs.append(
                {"timed_out": True}
                if got.timed_out
                else {"timed_out": False, "index": got.index, "output": item_output(got.result)}
            )
        elif isinstance(op.get("wait_all"), str):
            timeout = ms(op["timeout_ms"]) if isinstance(op.get("timeout_ms"), int) else None
            outputs.append(all_json(await ctx.step.wait_for_all(op["wait_all"], wait_items(op.get("items", [])), timeout=timeout)))
        elif isinstance(op.get("log"), str):
            fields = op.get("fields") if isinstance(op.get("fields"), dict) else {}
            getattr(ctx.log, str(op.get("level", "info")))(op["log"], **fields)
        elif isinstance(op.get("step"), str):
            step_id: str = op["step"]
            try:
                if "retries" in op or "retry_delay_ms" in op:
                    tries = [0]

                    def body() -> Any:
                        tries[0] += 1
                        return step_body(ctx, step_id, op, tries[0])

                    delay = op.get("retry_delay_ms")
                    outputs.append(
                        await ctx.step.run(
                            step_id,
                            body,
                            retries=op.get("retries", 0),
                            retry_delay=None if delay is None else f"{delay}ms",
                        )
                    )
                else:
                    outputs.append(await ctx.step.run(step_id, lambda: step_body(ctx, step_id, op)))
            except AttemptInterruptedError:
                raise
            except Exception as e:
                if op.get("catch") is not True:
                    raise
                kind, message = error_kind(e)
                caught.append({"step": step_id, "kind": kind, "message": message})
        elif isinstance(op.get("repeat"), int):
            for _ in range(op["repeat"]):
                await run_ops(ctx, op.get("ops", []), outputs, caught)
        elif isinstance(op.get("fail"), str):
            until = op.get("until_attempt")
            if not isinstance(until, int) or ctx.attempt <= until:
                if op.get("non_retryable") is True:
                    raise NonRetryableError(op["fail"])
                raise RuntimeError(op["fail"])
        elif isinstance(op.get("sleep_ms"), int):
            await asyncio.sleep(op["sleep_ms"] / 1000)
        else:
            raise NonRetryableError(f"unknown script op {json.dumps(op)}")


client = StackShift()


@client.job("conf.script")
async def script(ctx: JobContext[dict[str, Any]]) -> Any:
    outputs: list[Any] = []
    caught: list[Any] = []
    await run_ops(ctx, ctx.payload.get("ops", []), outputs, caught)
    if isinstance(ctx.payload.get("result_bytes"), int):
        return "x" * ctx.payload["result_bytes"]
    if "result" in ctx.payload:
        return ctx.payload["result"]
    return {"outputs": outputs, "caught": caught}


@client.job("conf.echo")
def echo(ctx: JobContext[Any]) -> Any:
    return ctx.payload


@client.job(
    "conf.on_event",
    triggers=[EventTriggerDeclaration(f"conf.triggered.{os.environ['CONFORMANCE_QUEUE']}", queue_name=os.environ["CONFORMANCE_QUEUE"])],
)
def on_event(ctx: JobContext[Any]) -> Any:
    """Started by the declared trigger; returns the event envelope unchanged."""
    return ctx.payload


def run_json(run: Run, detail: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "run_id": run.id,
        "status": run.status,
        "attempt": run.attempt,
        "queue": run.queue,
        "result": run.result,
        "failure": {"message": run.failure.message, "non_retryable": run.failure.non_retryable} if run.failure else None,
        "parent_run_id": run.parent_run_id or "",
    }
    if detail:
        answer["timeline"] = [{"kind": t.kind, "attempt": t.attempt, "step_id": t.step_id} for t in run.timeline]
        answer["logs"] = [
            {"level": entry.level, "message": entry.message, "fields": entry.fields, "step_id": entry.step_id, "attempt": entry.attempt}
            for entry in run.logs
        ]
    return answer


def queue_json(queue: QueueInfo) -> dict[str, Any]:
    return {
        "name": queue.name,
        "paused": queue.paused,
        "concurrency_limit": queue.config.concurrency_limit,
        "key_concurrency_limit": queue.config.key_concurrency_limit,
    }


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return {
        "schedule_id": schedule.id,
        "job": schedule.job,
        "paused": schedule.paused,
        "recent_run_ids": schedule.recent_run_ids,
    }


def rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def client_op(op: str, c: dict[str, Any]) -> Any:
    """One client command through the SDK's public API."""
    ss = StackShift(api_key=c["api_key"]) if isinstance(c.get("api_key"), str) else client
    run_id = str(c.get("run_id", ""))
    if op == "start":
        policy = None
        if "max_attempts" in c or "initial_interval" in c:
            policy = RetryPolicy(max_attempts=c.get("max_attempts"), initial_interval=c.get("initial_interval"))
        payload = "x" * c["payload_bytes"] if isinstance(c.get("payload_bytes"), int) else c.get("payload")
        queue = c.get("queue", "default")
        options: dict[str, Any] = {
            "idempotency_key": c.get("idempotency_key"),
            "idempotency_ttl": c.get("idempotency_ttl"),
            "retry_policy": policy,
            "lease_timeout": c.get("lease_timeout"),
            "delay": ms(c["delay_ms"]) if isinstance(c.get("delay_ms"), int) else None,
            "run_at": rfc3339(c["run_at"]) if isinstance(c.get("run_at"), str) else None,
            "priority": c.get("priority"),
            "concurrency_key": c.get("concurrency_key"),
        }
        if c.get("via_queue") is True:
            started = await ss.queue(queue).enqueue(c.get("job", ""), payload, **options)
        else:
            started = await ss.start(c.get("job", ""), payload, queue_name=queue, **options)
        return {"run_id": started.id, "duplicate": started.duplicate, "status": started.run.status}
    if op == "get_run":
        return run_json(await ss.get_run(run_id), detail=True)
    if op == "wait_run":
        return run_json(await ss.wait_for_run(run_id, timeout=c.get("timeout", "20s")), detail=True)
    if op == "cancel_run":
        return run_json(await ss.cancel_run(run_id, c.get("reason", "")))
    if op == "retry_run":
        return run_json(await ss.retry_run(run_id))
    if op == "list_runs":
        page = await ss.list_runs(queue=c.get("queue"), job=c.get("job"), status=c.get("status"))
        return {"run_ids": [r.id for r in page.runs]}
    if op == "publish_event":
        published = await ss.events.publish(c["name"], c.get("payload"), key=c.get("key"), id=c.get("event_id"))
        return {
            "event_id": published.event.id,
            "duplicate": published.duplicate,
            "matched": published.resumed_run_count,
            "started_run_ids": published.started_run_ids,
        }
    if op == "create_schedule":
        every = ms(c["every_ms"]) if isinstance(c.get("every_ms"), int) else None
        created = await ss.schedules.create(
            c.get("schedule_id", ""),
            c.get("job", ""),
            c.get("payload"),
            cron=c.get("cron"),
            time_zone=c.get("time_zone"),
            every=every,
            queue_name=c.get("queue"),
            catch_up=c.get("catch_up"),
            paused=c.get("paused") is True,
        )
        return {**schedule_json(created.schedule), "created": created.created}
    if op == "get_schedule":
        return schedule_json(await ss.schedules.get(c["schedule_id"]))
    if op == "pause_schedule":
        return schedule_json(await ss.schedules.pause(c["schedule_id"]))
    if op == "resume_schedule":
        return schedule_json(await ss.schedules.resume(c["schedule_id"]))
    if op == "delete_schedule":
        await ss.schedules.delete(c["schedule_id"])
        return None
    if op == "list_schedules":
        schedule_ids: list[str] = []
        next_token: Optional[str] = None
        while True:
            schedules = await ss.schedules.list(page_size=1000, page_token=next_token)
            schedule_ids += [s.id for s in schedules.schedules]
            next_token = schedules.next_page_token
            if next_token is None:
                return {"schedule_ids": schedule_ids}
    if op == "create_trigger":
        trigger = await ss.triggers.create(c["event"], c["job"], key=c.get("key"), queue_name=c.get("queue"))
        return {"trigger_id": trigger.trigger.id, "created": trigger.created}
    if op == "list_triggers":
        trigger_ids: list[str] = []
        token: Optional[str] = None
        while True:
            triggers = await ss.triggers.list(event=c.get("event"), job=c.get("job"), page_size=1000, page_token=token)
            trigger_ids += [t.id for t in triggers.triggers]
            token = triggers.next_page_token
            if token is None:
                return {"trigger_ids": trigger_ids}
    if op == "delete_trigger":
        await ss.triggers.delete(c["trigger_id"])
        return None
    if op == "state_get":
        return await ss.state.get(c["key"])
    if op == "state_set":
        ttl = ms(c["ttl_ms"]) if isinstance(c.get("ttl_ms"), int) else None
        version = await ss.state.set(c["key"], c.get("value"), ttl=ttl, expected_version=c.get("expected_version"))
        return {"version": version}
    if op == "state_incr":
        if isinstance(c.get("by"), int):
            return await ss.state.increment(c["key"], c["by"])
        return await ss.state.increment(c["key"])
    if op == "state_delete":
        return await ss.state.delete(c["key"])
    if op == "lock":
        wait = ms(c["wait_ms"]) if isinstance(c.get("wait_ms"), int) else None
        lock = await ss.state.lock(c["key"], ms(c["ttl_ms"]), wait=wait)
        return {"granted": False} if lock is None else {"granted": True, "token": lock.token}
    if op == "release_lock":
        await ss.state.release_lock(c["key"], int(c["token"]))
        return None
    if op == "configure_queue":
        queue = ss.queue(c["queue"])
        return queue_json(
            await queue.configure(
                concurrency_limit=c.get("concurrency_limit"), key_concurrency_limit=c.get("key_concurrency_limit")
            )
        )
    if op == "pause_queue":
        return queue_json(await ss.queue(c["queue"]).pause())
    if op == "resume_queue":
        return queue_json(await ss.queue(c["queue"]).resume())
    if op == "get_queue":
        return queue_json(await ss.queue(c["queue"]).get())
    raise ValueError(f"unknown op {op}")


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main() -> None:
    worker = client.worker(
        queues=[os.environ["CONFORMANCE_QUEUE"]],
        concurrency=int(os.environ["CONFORMANCE_CONCURRENCY"]),
        shutdown_grace=int(os.environ["CONFORMANCE_SHUTDOWN_GRACE_MS"]) / 1000,
    )
    async with worker:
        send({"ready": True, "sdk": "python"})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            try:
                command = json.loads(line)
            except ValueError:
                continue
            op = str(command.get("op", ""))
            if op == "shutdown":
                break
            try:
                send({"id": command.get("id"), "ok": await client_op(op, command)})
            except StackShiftError as e:
                error: dict[str, Any] = {"code": e.code, "type": type(e).__name__, "message": e.message}
                if isinstance(e, ConflictError):
                    error["reason"] = e.reason
                send({"id": command.get("id"), "error": error})
            except Exception as e:  # not a typed SDK error: reported as such
                send({"id": command.get("id"), "error": {"code": "UNKNOWN", "type": "", "message": str(e)}})
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
