"""Seed "File processing pipeline": ``processUpload`` downloads a file, parses it into batches,
imports each batch, and marks the file complete, returning ``{"rows": N}``.

Each batch import is a step with the same id, ``import-batch``, so the SDK assigns occurrence
suffixes: ``import-batch``, ``import-batch#2``, ``import-batch#3``. The database connection drops
during the third batch on the first attempt; the retry replays the download, the parse and the
two imported batches and continues with the third.

STATE STORE PENDING: the seed also counts rows with
``await state.increment(f"files:{file_id}:rows", len(batch))``; ``ctx.state`` joins the handler
context when the state-store branch lands. Until then each batch import is its own step, which
keeps it exactly-once.

    python sdk-python/examples/file_import.py
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from _check import check, finish, unique_suffix

from stackshift import JobContext, RetryPolicy, StackShift

BATCH_SIZE = 4
ROWS = 10
log: dict[str, Any] = {"downloads": 0, "import_calls": 0, "imported": [], "completed": 0}


async def download_file(file_id: str) -> str:
    log["downloads"] += 1
    lines = ["email,plan"] + [f"user{i}@example.com,{'pro' if i % 3 == 0 else 'free'}" for i in range(1, ROWS + 1)]
    return "\n".join(lines)


async def parse_csv(csv: str) -> dict[str, Any]:
    rows = [dict(zip(("email", "plan"), line.split(","))) for line in csv.splitlines()[1:] if line]
    batches = [rows[i : i + BATCH_SIZE] for i in range(0, len(rows), BATCH_SIZE)]
    return {"batches": batches, "totalRows": len(rows)}


async def import_rows(index: int, batch: list[Any]) -> int:
    log["import_calls"] += 1
    if log["import_calls"] == 3:
        raise ConnectionResetError("database connection reset (simulated crash)")
    log["imported"].append(index)
    print(f"  database: imported batch {index + 1} ({len(batch)} rows)")
    return len(batch)


async def mark_file_complete(file_id: str) -> dict[str, Any]:
    log["completed"] += 1
    return {"fileId": file_id, "complete": True}


stackshift = StackShift()


@stackshift.job("processUpload")
async def process_upload(ctx: JobContext[dict[str, str]]) -> dict[str, int]:
    file_id = ctx.payload["fileId"]
    file = await ctx.step.run("download-file", lambda: download_file(file_id))
    parsed = await ctx.step.run("parse-file", lambda: parse_csv(file))

    for index, batch in enumerate(parsed["batches"]):
        await ctx.step.run("import-batch", functools.partial(import_rows, index, batch))
        # STATE STORE PENDING: await ctx.state.increment(f"files:{file_id}:rows", len(batch))

    await ctx.step.run("mark-complete", lambda: mark_file_complete(file_id))

    return {"rows": parsed["totalRows"]}


async def main() -> None:
    async with stackshift, stackshift.worker(concurrency=4, shutdown_grace="5s"):
        started = await stackshift.start(
            "processUpload",
            {"fileId": f"file_{unique_suffix()}"},
            retry_policy=RetryPolicy(max_attempts=3, initial_interval="200ms"),
        )
        run = await stackshift.wait_for_run(started.id, timeout="20s")
    step_ids = [s.id for s in run.steps]
    print(f"run {run.id} is {run.status} after {run.attempt} attempt(s); result {run.result}")
    print(f"  steps: {', '.join(step_ids)}")
    check(run.status == "completed", "the run completed")
    check(run.attempt == 2, "it took exactly two attempts")
    check(run.result == {"rows": ROWS}, f"the result is {{'rows': {ROWS}}}")
    check(log["downloads"] == 1, "the file was downloaded once")
    check(log["imported"] == [0, 1, 2], "every batch was imported exactly once, in order")
    check(log["completed"] == 1, "the file was marked complete once")
    check(
        step_ids == ["download-file", "parse-file", "import-batch", "import-batch#2", "import-batch#3", "mark-complete"],
        "step ids carry occurrence suffixes (import-batch, import-batch#2, import-batch#3)",
    )
    finish("file_import")


if __name__ == "__main__":
    asyncio.run(main())
