"""Seed "Payment to provisioning workflow": ``provisionAfterPayment`` verifies the payment,
provisions resources, enables the plan and sends a receipt, each in a step. Provisioning times
out on the first attempt; the retry replays ``verify-payment`` from the journal instead of
charging the payment provider again.

    python sdk-python/examples/payment_provisioning.py
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from _check import check, finish, unique_suffix

from stackshift import JobContext, RetryPolicy, StackShift

calls: Counter[str] = Counter()


async def verify_payment(payment_id: str) -> dict[str, Any]:
    calls["verify_payment"] += 1
    return {"id": payment_id, "status": "paid", "customerEmail": "ada@example.com"}


async def provision_customer_resources(customer_id: str) -> dict[str, str]:
    calls["provision_customer_resources"] += 1
    if calls["provision_customer_resources"] == 1:
        raise TimeoutError(f"provisioning API timed out for {customer_id} (simulated)")
    return {"workspace": f"ws_{customer_id}"}


async def enable_paid_plan(customer_id: str) -> dict[str, str]:
    calls["enable_paid_plan"] += 1
    return {"customerId": customer_id, "plan": "pro"}


async def send_receipt(email: str) -> dict[str, str]:
    calls["send_receipt"] += 1
    return {"to": email}


stackshift = StackShift()


@stackshift.job("provisionAfterPayment")
async def provision_after_payment(ctx: JobContext[dict[str, str]]) -> dict[str, bool]:
    payload, step = ctx.payload, ctx.step
    payment = await step.run("verify-payment", lambda: verify_payment(payload["paymentId"]))

    if payment["status"] != "paid":
        raise RuntimeError("Payment is not complete")

    await step.run("provision-customer-resources", lambda: provision_customer_resources(payload["customerId"]))
    await step.run("enable-plan", lambda: enable_paid_plan(payload["customerId"]))
    await step.run("send-receipt", lambda: send_receipt(payment["customerEmail"]))

    return {"provisioned": True}


async def main() -> None:
    payment_id = f"pay_{unique_suffix()}"
    async with stackshift, stackshift.worker(queues=["payments"], shutdown_grace="5s"):
        started = await stackshift.start(
            "provisionAfterPayment",
            {"paymentId": payment_id, "customerId": "cus_42"},
            queue_name="payments",
            idempotency_key=f"provision:{payment_id}",
            idempotency_ttl="30d",
            retry_policy=RetryPolicy(max_attempts=3, initial_interval="200ms"),
        )
        run = await stackshift.wait_for_run(started.id, timeout="20s")
    print(f"run {run.id} is {run.status} after {run.attempt} attempt(s); result {run.result}")
    for s in run.steps:
        print(f"  step {s.id} recorded by attempt {s.attempt}")
    check(run.status == "completed", "the run completed")
    check(run.attempt == 2, "it took exactly two attempts")
    check(run.result == {"provisioned": True}, "the result is {'provisioned': True}")
    check(calls["verify_payment"] == 1, "verify-payment ran once (replayed on attempt 2)")
    check(calls["provision_customer_resources"] == 2, "provisioning ran twice (failed, then succeeded)")
    check(calls["enable_paid_plan"] == 1 and calls["send_receipt"] == 1, "enable-plan and send-receipt ran once")
    verify = run.step("verify-payment")
    check(verify is not None and verify.attempt == 1, "verify-payment was recorded by attempt 1")
    finish("payment_provisioning")


if __name__ == "__main__":
    asyncio.run(main())
