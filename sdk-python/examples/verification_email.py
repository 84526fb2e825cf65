"""Seed "Send verification email": enqueue ``sendVerificationEmail`` on the ``emails`` queue with
an idempotency key, enqueue it again with the same key, and check that the second call is a
duplicate of the same run and that exactly one email went out.

Run against a server at STACKSHIFT_ENDPOINT (default http://127.0.0.1:7447)::

    python sdk-python/examples/verification_email.py
"""

from __future__ import annotations

import asyncio
from collections import Counter

from _check import check, finish, unique_suffix

from stackshift import JobContext, StackShift

outbox: Counter[str] = Counter()


async def send_mail(to: str, subject: str) -> str:
    """Stands in for the mail provider's API."""
    outbox[to] += 1
    print(f"  mail provider: sent {subject!r} to {to}")
    return f"msg_{unique_suffix()}"


stackshift = StackShift()


@stackshift.job("sendVerificationEmail")
async def send_verification_email(ctx: JobContext[dict[str, str]]) -> dict[str, str]:
    message_id = await ctx.step.run(
        "send-verification-email", lambda: send_mail(ctx.payload["email"], "Verify your email address")
    )
    return {"messageId": message_id}


async def main() -> None:
    user_id = f"user_{unique_suffix()}"
    email = f"{user_id}@example.com"
    async with stackshift, stackshift.worker(queues=["emails"], shutdown_grace="5s"):
        # The seed, in Python:
        first = await stackshift.queue("emails").enqueue(
            "sendVerificationEmail",
            {"userId": user_id, "email": email},
            idempotency_key=f"verify:{user_id}",
        )
        second = await stackshift.queue("emails").enqueue(
            "sendVerificationEmail",
            {"userId": user_id, "email": email},
            idempotency_key=f"verify:{user_id}",
        )
        run = await stackshift.wait_for_run(first.id, timeout="20s")
    print(f"run {run.id} is {run.status}; result {run.result}")
    check(not first.duplicate, "the first enqueue created a run")
    check(second.duplicate and second.id == first.id, "the second enqueue is a duplicate of the same run")
    check(run.status == "completed", "the run completed")
    check(run.queue == "emails", "the run ran on the emails queue")
    check(outbox[email] == 1, "exactly one email was sent")
    finish("verification_email")


if __name__ == "__main__":
    asyncio.run(main())
