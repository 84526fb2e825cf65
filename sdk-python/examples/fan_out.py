"""Issue 10 in Python: a job declared with an event trigger fans out to child runs.

Publishing ``user.signed_up`` starts ``onboardUser`` (the worker created its trigger when it
started); the job fans out one ``provisionResource`` child per resource with
``step.invoke_all``, then waits for either an ``onboarding.approved`` event or a short
timeout with ``step.wait_for_any``. A schedule (every second) starts ``heartbeatReport``.

Run against a server at STACKSHIFT_ENDPOINT (default http://127.0.0.1:7447)::

    python sdk-python/examples/fan_out.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from _check import check, finish, unique_suffix

from stackshift import ChildRun, JobContext, StackShift, TriggeredEvent, WaitItem

SUFFIX = unique_suffix()
QUEUE = f"onboarding-{SUFFIX}"
SIGNED_UP = f"user.signed_up.{SUFFIX}"

stackshift = StackShift()


@stackshift.job("provisionResource")
def provision_resource(ctx: JobContext[dict[str, str]]) -> str:
    return f"{ctx.payload['resource']}:{ctx.payload['user']}"


@stackshift.job("onboardUser", triggers=[SIGNED_UP])
async def onboard_user(ctx: JobContext[Any]) -> dict[str, Any]:
    event = TriggeredEvent.from_payload(ctx.payload)
    user = event.payload["user"]
    outcomes = await ctx.step.invoke_all(
        "provision", [ChildRun("provisionResource", {"resource": r, "user": user}) for r in ("mailbox", "drive", "chat")]
    )
    approval = await ctx.step.wait_for_any(
        "approval", [WaitItem.event("onboarding.approved", key=user), WaitItem.sleep("2s")]
    )
    return {
        "user": user,
        "resources": [o.result_or_raise() for o in outcomes],
        "approved": approval.index == 0,
    }


@stackshift.job("heartbeatReport")
def heartbeat_report(ctx: JobContext[dict[str, str]]) -> str:
    return f"report for {ctx.payload['team']}"


async def main() -> None:
    user = f"user_{SUFFIX}"
    schedule_id = f"heartbeat-{SUFFIX}"
    async with stackshift, stackshift.worker(queues=[QUEUE], shutdown_grace="5s"):
        published = await stackshift.events.publish(SIGNED_UP, {"user": user})
        check(len(published.started_run_ids) == 1, "the event started one onboardUser run through the declared trigger")
        await stackshift.events.publish("onboarding.approved", {"by": "ops"}, key=user)
        run = await stackshift.wait_for_run(published.started_run_ids[0], timeout="30s")

        await stackshift.schedules.create(schedule_id, "heartbeatReport", {"team": "ops"}, every="1s", queue_name=QUEUE)
        schedule = await stackshift.schedules.get(schedule_id)
        for _ in range(100):
            schedule = await stackshift.schedules.get(schedule_id)
            if schedule.recent_run_ids:
                break
            await asyncio.sleep(0.1)
        report = await stackshift.wait_for_run(schedule.recent_run_ids[-1], timeout="20s") if schedule.recent_run_ids else None
        await stackshift.schedules.delete(schedule_id)
        children = (await stackshift.list_runs(queue=QUEUE, job="provisionResource")).runs
    print(f"run {run.id} is {run.status}; result {run.result}")
    check(run.status == "completed", "onboardUser completed")
    check(
        run.result == {"user": user, "resources": [f"mailbox:{user}", f"drive:{user}", f"chat:{user}"], "approved": True},
        "three children provisioned in order and the approval event won the wait",
    )
    check(len(children) == 3 and all(c.parent_run_id == run.id for c in children), "the children name their parent")
    check(report is not None and report.status == "completed" and report.result == "report for ops", "the schedule fired")
    finish("fan_out")


if __name__ == "__main__":
    asyncio.run(main())
