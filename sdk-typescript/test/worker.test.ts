/** End-to-end tests of the client and worker against the real server binary. */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  StackShift,
  NonRetryableError,
  StepFailedError,
  NotFoundError,
  InvalidArgumentError,
  FailedPreconditionError,
  ResourceExhaustedError,
  AttemptInterruptedError,
} from "../src/index.js";
import { startServer, type TestServer } from "./server.js";

let server: TestServer;
before(async () => {
  server = await startServer(["--max-payload-bytes", "65536"]);
});
after(async () => {
  await server.stop();
});

const fast = { retryPolicy: { maxAttempts: 3, initialInterval: 50 } };

test("steps are memoized across retries, with occurrence suffixes", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const executions: string[] = [];
  ss.job<{ n: number }>("memo", async ({ payload, step, attempt }) => {
    const first = await step.run("first", () => {
      executions.push(`first@${attempt}`);
      return { at: attempt };
    });
    for (let i = 0; i < payload.n; i++) await step.run("loop", () => i * 10);
    await step.run("flaky", () => {
      executions.push(`flaky@${attempt}`);
      if (attempt === 1) throw new Error("transient");
      return "ok";
    });
    return { first };
  });
  const worker = ss.work({ queues: ["memo"] });
  try {
    const started = await ss.start("memo", { n: 3 }, { ...fast, queueName: "memo" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.equal(run.attempt, 2);
    assert.deepEqual(run.result, { first: { at: 1 } });
    assert.deepEqual(executions, ["first@1", "flaky@1", "flaky@2"]);
    assert.deepEqual(run.steps.map((s) => s.id), ["first", "loop", "loop#2", "loop#3", "flaky"]);
    assert.equal(run.attempts[0]?.failure?.message, "transient");
  } finally {
    await worker.shutdown();
  }
});

test("a step with retries is retried in place within one attempt, logging a warn line per failed try", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  let tries = 0;
  ss.job("inplace", async ({ step, attempt }) =>
    step.run(
      "flaky",
      () => {
        tries++;
        if (tries < 3) throw new Error(`transient ${tries}`);
        return attempt;
      },
      { retries: 3, retryDelay: "10ms" },
    ),
  );
  const worker = ss.work({ queues: ["inplace"] });
  try {
    const started = await ss.start("inplace", null, { ...fast, queueName: "inplace" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.equal(run.attempt, 1);
    assert.equal(run.result, 1);
    assert.equal(tries, 3);
    assert.deepEqual(
      run.logs.map((l) => [l.level, l.message, l.stepId]),
      [
        ["warn", "step flaky failed (try 1 of 4): transient 1; retrying in 10ms", "flaky"],
        ["warn", "step flaky failed (try 2 of 4): transient 2; retrying in 20ms", "flaky"],
      ],
    );
  } finally {
    await worker.shutdown();
  }
});

test("a non-retryable step failure is recorded, replayed as StepFailedError, and fails the run at once", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  let bodyRuns = 0;
  ss.job("nonretry", async ({ step }) => {
    try {
      await step.run("charge", () => {
        bodyRuns++;
        throw new NonRetryableError("card declined");
      });
    } catch (e) {
      assert.ok(e instanceof NonRetryableError);
    }
    // The same id again gets a suffix; a fresh step. Then replay the first through a retry.
    await step.run("charge", () => {
      throw new NonRetryableError("declined again", { details: { code: 51 } });
    });
  });
  const worker = ss.work({ queues: ["nonretry"] });
  try {
    const started = await ss.start("nonretry", null, { ...fast, queueName: "nonretry" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "failed");
    assert.equal(run.attempt, 1, "no retry after a non-retryable failure");
    assert.equal(run.failure?.nonRetryable, true);
    assert.equal(run.failure?.type, "NonRetryableError");
    assert.equal(bodyRuns, 1);
    assert.deepEqual(run.steps.map((s) => [s.id, s.failure?.message]), [["charge", "card declined"], ["charge#2", "declined again"]]);
    assert.deepEqual(run.steps[1]?.failure?.details, { code: 51 });

    // RetryRun: the recorded failures are replayed, not re-executed.
    let replayed: unknown;
    ss.job("nonretry", async ({ step }) => {
      try {
        await step.run("charge", () => "should not run");
      } catch (e) {
        replayed = e;
      }
      return "done";
    });
    const w2 = ss.work({ queues: ["nonretry"] });
    await ss.retryRun(run.id);
    const again = await ss.waitForRun(run.id, { timeout: "20s" });
    await w2.shutdown();
    assert.equal(again.status, "completed");
    assert.ok(replayed instanceof StepFailedError);
    assert.equal(replayed.stepId, "charge");
    assert.equal(replayed.failure.message, "card declined");
  } finally {
    await worker.shutdown();
  }
});

test("cancelling a running run stops the handler without reporting", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  let sawInterrupt: unknown;
  let entered!: () => void;
  const inside = new Promise<void>((r) => (entered = r));
  ss.job("cancel", async ({ step, signal }) => {
    await step.run("wait", async () => {
      entered();
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      return "woke";
    }).catch((e: unknown) => {
      sawInterrupt = e;
      throw e;
    });
  }, { leaseTimeout: "1500ms" });
  const worker = ss.work({ queues: ["cancel"] });
  try {
    const started = await ss.start("cancel", {}, { queueName: "cancel" });
    await inside;
    const cancelled = await ss.cancelRun(started.id, "changed my mind");
    assert.equal(cancelled.status, "cancelled");
    // The heartbeat (every 500 ms) notices the cancellation and aborts the signal.
    const deadline = Date.now() + 5_000;
    while (sawInterrupt === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(sawInterrupt instanceof AttemptInterruptedError, String(sawInterrupt));
    const run = await ss.getRun(started.id);
    assert.equal(run.status, "cancelled");
    assert.equal(run.failure?.message, "changed my mind");
    assert.equal(run.steps.length, 0);
    assert.equal(worker.activeTasks, 0);
  } finally {
    await worker.shutdown();
  }
});

test("client errors are typed", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  await assert.rejects(ss.getRun("01a1fe3c-5ee9-7389-ad76-75dfd472f0b9"), NotFoundError);
  await assert.rejects(ss.getRun("not-a-uuid"), InvalidArgumentError);
  await assert.rejects(ss.start("bad name!", {}), InvalidArgumentError);
  await assert.rejects(ss.start("job", {}, { idempotencyTtl: "forever" }), InvalidArgumentError);
  await assert.rejects(ss.start("job", { blob: "x".repeat(70_000) }), ResourceExhaustedError);
  const started = await ss.start("never-served", {}, { queueName: "typed" });
  await ss.cancelRun(started.id);
  await assert.rejects(ss.cancelRun(started.id), FailedPreconditionError);
  const retried = await ss.retryRun(started.id);
  assert.equal(retried.status, "queued");
  const page = await ss.listRuns({ queue: "typed", status: "queued" });
  assert.deepEqual(page.runs.map((r) => r.id), [started.id]);
});

test("shutdown lets in-flight handlers finish within the grace period", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  let entered!: () => void;
  const inside = new Promise<void>((r) => (entered = r));
  ss.job("graceful", async ({ step }) => {
    entered();
    await new Promise((r) => setTimeout(r, 300));
    return step.run("after-pause", () => "done");
  });
  const worker = ss.work({ queues: ["graceful"], shutdownGrace: "5s" });
  const started = await ss.start("graceful", {}, { queueName: "graceful" });
  await inside;
  await worker.shutdown();
  const run = await ss.getRun(started.id);
  assert.equal(run.status, "completed");
  assert.equal(run.result, "done");
});
