"""Payment provisioning that waits for the payment provider's webhook: the job creates an
invoice, then waits (durably, without holding a worker slot) for the event
``payment.confirmed`` correlated by the payment id, with a timeout, then provisions the
customer.

It runs the three ways the webhook can go:

1. **Before the wait is reached**: the event is published right after the run starts, before
   any worker ran the handler. The run's inbox keeps it, and the wait returns it at once.
2. **After the wait is reached**: the run is ``waiting`` when the event is published; the
   publish resumes exactly that run (and reports it).
3. **Never**: the wait times out, ``wait_for_event`` returns ``None`` and the job fails
   non-retryably.

Checks: runs 1 and 2 completed on attempt 1 with the confirmed amount; the early publish resumed
no run and the late one resumed exactly run 2; an event for another payment id resumed nothing;
the webhook delivered twice was stored once; ``create-invoice`` ran once per run (replayed after
the resume); run 3 failed with the timeout. Run against a server at STACKSHIFT_ENDPOINT (default
http://127.0.0.1:7447)::

    python sdk-python/examples/payment_confirmation.py
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from _check import check, finish, unique_suffix

from stackshift import JobContext, NonRetryableError, PublishedEvent, Run, StackShift

calls: Counter[str] = Counter()


async def create_invoice(payment_id: str) -> str:
    calls[f"invoice:{payment_id}"] += 1
    print(f"  billing: invoice created for {payment_id}")
    return f"inv_{payment_id}"


async def provision_customer_resources(customer_id: str) -> str:
    calls[f"provision:{customer_id}"] += 1
    print(f"  infrastructure: provisioned {customer_id}")
    return f"cl_{customer_id}"


stackshift = StackShift()


@stackshift.job("provisionAfterPaymentConfirmed")
async def provision_after_payment(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
    order = ctx.payload
    await ctx.step.run("create-invoice", lambda: create_invoice(order["paymentId"]))

    ctx.log.info("waiting for the payment", payment_id=order["paymentId"])
    payment = await ctx.step.wait_for_event(
        "wait-for-payment", "payment.confirmed", key=order["paymentId"], timeout=order.get("timeout", "1h")
    )
    if payment is None:
        raise NonRetryableError(f"payment {order['paymentId']} was not confirmed in time")
    amount = payment.payload["amount"]
    ctx.log.info("payment confirmed", amount=amount)

    await ctx.step.run("provision-customer-resources", lambda: provision_customer_resources(order["customerId"]))
    return {"provisioned": True, "amount": amount}


def confirmed(payment_id: str, amount: int) -> Any:
    # The provider's event id: a webhook delivered twice is stored once.
    return stackshift.events.publish(
        "payment.confirmed", {"paymentId": payment_id, "amount": amount}, key=payment_id, id=f"provider:{payment_id}"
    )


def order(suffix: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"paymentId": f"pay_{suffix}_{n}", "customerId": f"cus_{suffix}_{n}", **extra}


async def wait_until_waiting(run_id: str) -> bool:
    for _ in range(300):
        run = await stackshift.get_run(run_id)
        if run.status == "waiting":
            if run.wait is not None:
                print(f"run {run_id} is waiting at {run.wait.step_id} for {run.wait.event_name} {run.wait.key}")
            return True
        await asyncio.sleep(0.1)
    return False


def report(run: Run) -> None:
    print(f"run {run.id} is {run.status} after {run.attempt} attempt(s); result {run.result}")
    for step in run.steps:
        print(f"  {step.kind} {step.id} recorded by attempt {step.attempt}")


async def main() -> None:
    job = "provisionAfterPaymentConfirmed"
    suffix = unique_suffix()
    async with stackshift:
        # 1. The webhook arrives before the run reaches its wait (no worker runs it yet).
        early = order(suffix, 1)
        run1 = await stackshift.start(job, early)
        published: PublishedEvent = await confirmed(early["paymentId"], 4_200)
        print(f"webhook for {early['paymentId']} published early: resumed {published.resumed_run_count} run(s)")
        check(published.resumed_run_count == 0, "the early event resumed nothing (the run was not waiting yet)")

        async with stackshift.worker(concurrency=2, shutdown_grace="5s"):
            done1 = await stackshift.wait_for_run(run1.id, timeout="30s")
            report(done1)

            # 2. The webhook arrives after the run reached its wait.
            late = order(suffix, 2)
            run2 = await stackshift.start(job, late)
            check(await wait_until_waiting(run2.id), "run 2 is waiting for its payment")
            other: PublishedEvent = await confirmed(f"pay_{suffix}_unrelated", 1)
            check(other.resumed_run_count == 0, "an event for another payment id resumed nothing")
            published = await confirmed(late["paymentId"], 9_900)
            print(f"webhook for {late['paymentId']} published late: resumed {published.resumed_run_ids}")
            check(published.resumed_run_ids == [run2.id], "the late event resumed exactly run 2")
            again: PublishedEvent = await confirmed(late["paymentId"], 9_900)
            check(again.duplicate and again.resumed_run_count == 0, "the webhook delivered twice was stored once")
            done2 = await stackshift.wait_for_run(run2.id, timeout="30s")
            report(done2)

            # 3. The webhook never arrives: the wait times out.
            never = order(suffix, 3, timeout="1s")
            run3 = await stackshift.start(job, never)
            done3 = await stackshift.wait_for_run(run3.id, timeout="30s")
            report(done3)

    for n, run, o, amount in ((1, done1, early, 4_200), (2, done2, late, 9_900)):
        check(
            run.status == "completed" and run.result == {"provisioned": True, "amount": amount},
            f"run {n} completed with amount {amount}",
        )
        check(run.attempt == 1 and len(run.attempts) == 1, f"run {n} took one attempt (waiting is not a retry)")
        wait = run.step("wait-for-payment")
        check(wait is not None and wait.kind == "event", f"run {n}'s journal shows the event it received")
        check(calls[f"invoice:{o['paymentId']}"] == 1, f"run {n} created its invoice once")
        check(
            [e.message for e in run.logs][-1:] == ["payment confirmed"],
            f"run {n}'s logs end with the confirmation",
        )
    check(
        done3.status == "failed" and done3.failure is not None and "not confirmed in time" in done3.failure.message,
        "run 3 failed when its wait timed out",
    )
    check("WAIT_TIMED_OUT" in [t.kind for t in done3.timeline], "run 3's timeline shows the timeout")
    check(calls[f"provision:{never['customerId']}"] == 0, "run 3 provisioned nothing")
    finish("payment_confirmation")


if __name__ == "__main__":
    asyncio.run(main())
