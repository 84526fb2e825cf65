"""Seed "File processing pipeline": ``processUpload`` downloads a file, parses it into batches,
imports each batch and counts its rows with ``state.increment(f"files:{file_id}:rows",
len(batch))``, and marks the file complete, returning ``{"rows": N}``.

Each batch import is a step with the same id, ``import-batch``, so the SDK assigns occurrence
suffixes: ``import-batch``, ``import-batch#2``, ``import-batch#3``. The counter is incremented
through the handler's ``ctx.state``, so each increment is journaled like a step (``state:1``,
``state:2``, ``state:3``). The database connection drops during the third batch on the first
attempt; the retry replays the download, the parse, the two imported batches and their two
increments (not applied again) and continues with the third.

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
    state = ctx.state
    file = await ctx.step.run("download-file", lambda: download_file(file_id))
    parsed = await ctx.step.run("parse-file", lambda: parse_csv(file))

    for index, batch in enumerate(parsed["batches"]):
        await ctx.step.run("import-batch", functools.partial(import_rows, index, batch))
        await state.increment(f"files:{file_id}:rows", len(batch))

    await ctx.step.run("mark-complete", lambda: mark_file_complete(file_id))

    return {"rows": parsed["totalRows"]}


async def main() -> None:
    async with stackshift, stackshift.worker(concurrency=4, shutdown_grace="5s"):
        file_id = f"file_{unique_suffix()}"
        started = await stackshift.start(
            "processUpload",
            {"fileId": file_id},
            retry_policy=RetryPolicy(max_attempts=3, initial_interval="200ms"),
        )
        run = await stackshift.wait_for_run(started.id, timeout="20s")
        counted = await stackshift.state.get(f"files:{file_id}:rows")
    state_calls = sorted((s.id, s.attempt) for s in run.steps if s.kind == "state")
    step_ids = [s.id for s in run.steps if s.kind != "state"]
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
    check(counted == ROWS, f"the row counter in the state store is {ROWS} (each increment applied once)")
    check(
        state_calls == [("state:1", 1), ("state:2", 1), ("state:3", 2)],
        "the increments are journaled once each (state:1-2 by attempt 1, state:3 by attempt 2)",
    )
    finish("file_import")


if __name__ == "__main__":
    asyncio.run(main())
