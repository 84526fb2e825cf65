/**
 * End-to-end tests of state, durable sleeps, event waits, run logs and timelines, events and
 * queue management against the real server binary.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { StackShift, ConflictError, FailedPreconditionError, NotFoundError, InvalidArgumentError } from "../src/index.js";
import { startServer, type TestServer } from "./server.js";

let server: TestServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

const fast = { retryPolicy: { maxAttempts: 3, initialInterval: 50 } };
const unique = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;

test("client state: set/get/delete, TTL, counters, compare-and-set conflicts, listing", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const p = `t:${unique()}:`;
  const v1 = await ss.state.set(`${p}progress`, { processed: 100, total: 500 });
  assert.ok(v1 > 0);
  assert.deepEqual(await ss.state.get(`${p}progress`), { processed: 100, total: 500 });
  const entry = await ss.state.getEntry<{ processed: number }>(`${p}progress`);
  assert.equal(entry?.version, v1);
  assert.equal(entry?.expiresAt, undefined);

  await assert.rejects(ss.state.set(`${p}progress`, 1, { expectedVersion: v1 + 12345 }), (e: unknown) => {
    assert.ok(e instanceof ConflictError);
    assert.ok(e instanceof FailedPreconditionError);
    assert.equal(e.reason, "VERSION_MISMATCH");
    assert.equal(e.code, "FAILED_PRECONDITION");
    return true;
  });
  const v2 = await ss.state.set(`${p}progress`, { processed: 500, total: 500 }, { expectedVersion: v1 });
  assert.ok(v2 > v1);

  const marker = new Date(Date.now() + 7 * 24 * 60 * 60 * 1000);
  await ss.state.set(`${p}marker`, { processed: true }, { expiresAt: marker });
  const m = await ss.state.getEntry(`${p}marker`);
  assert.equal(Math.round((m?.expiresAt?.getTime() ?? 0) / 1000), Math.round(marker.getTime() / 1000));
  await ss.state.set(`${p}short`, "x", { ttl: "1s" });
  await new Promise((r) => setTimeout(r, 1_300));
  assert.equal(await ss.state.get(`${p}short`), null, "an expired key reads as absent");

  assert.equal(await ss.state.increment(`${p}count`), 1);
  assert.equal(await ss.state.increment(`${p}count`, 41), 42);
  assert.equal(await ss.state.increment(`${p}count`, -2), 40);
  await assert.rejects(ss.state.increment(`${p}progress`), (e: unknown) => e instanceof ConflictError && e.reason === "NOT_AN_INTEGER");

  const page = await ss.state.list(p);
  assert.deepEqual(page.keys.map((k) => k.key), [`${p}count`, `${p}marker`, `${p}progress`]);
  assert.equal(await ss.state.delete(`${p}progress`), true);
  assert.equal(await ss.state.delete(`${p}progress`), false);
  assert.equal(await ss.state.get(`${p}progress`), null);
  await assert.rejects(ss.state.set("", 1), InvalidArgumentError);
});

test("client locks: fencing tokens grow, a busy lock is refused, a stale token is LOCK_NOT_HELD", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const key = `lock:${unique()}`;
  const first = await ss.state.lock(key, { ttl: "10s" });
  assert.ok(first);
  assert.equal(await ss.state.lock(key, { ttl: "10s" }), null, "held by the first owner");
  await first.extend("20s");
  await first.release();
  const second = await ss.state.lock(key, { ttl: "10s", wait: "1s" });
  assert.ok(second && second.token > first.token);
  await assert.rejects(first.release(), (e: unknown) => e instanceof ConflictError && e.reason === "LOCK_NOT_HELD");
  await second.release();
});

test("state inside a run is journaled: an increment is applied once across retries", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const key = `rows:${unique()}`;
  const seen: unknown[] = [];
  ss.job<{ key: string }>("state-journal", async ({ payload, state, attempt }) => {
    const after = await state.increment(payload.key, 5);
    await state.set(`${payload.key}:last`, { attempt });
    const last = await state.get<{ attempt: number }>(`${payload.key}:last`);
    seen.push([attempt, after, last]);
    if (attempt === 1) throw new Error("crash after the increment");
    try {
      await state.set(`${payload.key}:last`, 0, { expectedVersion: 1 });
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      return { after, reason: e.reason };
    }
    return { after };
  });
  const worker = ss.work({ queues: ["state-journal"] });
  try {
    const started = await ss.start("state-journal", { key }, { ...fast, queueName: "state-journal" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.deepEqual(run.result, { after: 5, reason: "VERSION_MISMATCH" });
    // The retry replayed the recorded results: same counter, and the read of attempt 1.
    assert.deepEqual(seen, [
      [1, 5, { attempt: 1 }],
      [2, 5, { attempt: 1 }],
    ]);
    assert.equal(await ss.state.get(key), 5, "applied once");
    assert.deepEqual(
      run.steps.filter((s) => s.kind === "state").map((s) => s.id),
      ["state:1", "state:2", "state:3", "state:4"],
    );
  } finally {
    await worker.shutdown();
  }
});

test("step.sleep suspends the run durably and resumes it in the same attempt", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  let before = 0;
  ss.job("sleeper", async ({ step }) => {
    await step.run("before", () => ++before);
    await step.sleep("nap", "300ms");
    await step.sleep("nap", 0);
    await step.sleepUntil("until", new Date(Date.now() - 1000));
    return "woke";
  });
  const worker = ss.work({ queues: ["sleeper"] });
  try {
    const started = await ss.start("sleeper", null, { queueName: "sleeper" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.equal(run.result, "woke");
    assert.equal(run.attempt, 1, "a sleep is not a retry");
    assert.equal(before, 1, "the step before the sleep ran once");
    assert.deepEqual(
      run.steps.map((s) => [s.id, s.kind]),
      [
        ["before", "step"],
        ["nap", "sleep"],
        ["nap#2", "sleep"],
        ["until", "sleep"],
      ],
    );
    const kinds = run.timeline.map((t) => t.kind);
    for (const k of ["CREATED", "ATTEMPT_STARTED", "WAITING", "TIMER_FIRED", "ATTEMPT_RESUMED", "COMPLETED"]) assert.ok(kinds.includes(k), `timeline has ${k}: ${kinds.join(",")}`);
  } finally {
    await worker.shutdown();
  }
});

test("step.waitForEvent receives an early event, a late event, and null on timeout", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const key = `pay_${unique()}`;
  ss.job<{ key: string; timeout: number }>("waiter", async ({ payload, step }) => {
    const event = await step.waitForEvent<{ amount: number }>("wait-for-payment", { event: "payment.confirmed", key: payload.key, timeout: payload.timeout });
    return event === null ? { timedOut: true } : { amount: event.payload.amount, key: event.key, name: event.name };
  });
  // Not started: a worker shut down just before a start can be handed the new run through
  // its cancelled poll (see the lock test below).
  const worker = ss.worker({ queues: ["waiter"] });
  try {
    // Early: published before any worker reached the wait.
    await worker.shutdown();
    const early = await ss.start("waiter", { key: `${key}-early`, timeout: 30_000 }, { queueName: "waiter" });
    const p1 = await ss.events.publish("payment.confirmed", { amount: 1 }, { key: `${key}-early`, id: `evt-${key}-early` });
    assert.equal(p1.resumedRunCount, 0);
    assert.equal(p1.duplicate, false);
    const again = await ss.events.publish("payment.confirmed", { amount: 1 }, { key: `${key}-early`, id: `evt-${key}-early` });
    assert.equal(again.duplicate, true);
    const worker2 = ss.work({ queues: ["waiter"] });
    try {
      const r1 = await ss.waitForRun(early.id, { timeout: "20s" });
      assert.deepEqual(r1.result, { amount: 1, key: `${key}-early`, name: "payment.confirmed" });

      // Late: the run is waiting when the event is published.
      const late = await ss.start("waiter", { key: `${key}-late`, timeout: 30_000 }, { queueName: "waiter" });
      for (let i = 0; i < 200 && (await ss.getRun(late.id)).status !== "waiting"; i++) await new Promise((r) => setTimeout(r, 50));
      const waiting = await ss.getRun(late.id);
      assert.equal(waiting.status, "waiting");
      assert.equal(waiting.wait?.kind, "event");
      assert.equal(waiting.wait?.eventName, "payment.confirmed");
      const p2 = await ss.events.publish("payment.confirmed", { amount: 2 }, { key: `${key}-late` });
      assert.equal(p2.resumedRunCount, 1);
      assert.deepEqual(p2.resumedRunIds, [late.id]);
      const r2 = await ss.waitForRun(late.id, { timeout: "20s" });
      assert.deepEqual(r2.result, { amount: 2, key: `${key}-late`, name: "payment.confirmed" });
      assert.ok(r2.timeline.some((t) => t.kind === "EVENT_MATCHED"));

      // Timeout: nothing is published.
      const lonely = await ss.start("waiter", { key: `${key}-none`, timeout: 300 }, { queueName: "waiter" });
      const r3 = await ss.waitForRun(lonely.id, { timeout: "20s" });
      assert.deepEqual(r3.result, { timedOut: true });
      assert.equal(r3.attempt, 1);

      const listed = await ss.events.list({ name: "payment.confirmed", key: `${key}-late` });
      assert.equal(listed.events.length, 1);
      assert.deepEqual(listed.events[0]?.payload, { amount: 2 });
    } finally {
      await worker2.shutdown();
    }
  } finally {
    await worker.shutdown();
  }
});

test("ctx.log lines are flushed before the outcome and shown on the run with their step", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  ss.job("logger", async ({ step, log, attempt }) => {
    log.info("starting", { attempt });
    await step.run("charge", () => {
      log.debug("inside the step", { amountCents: 4200 });
      return 1;
    });
    log.warn("the provider was slow");
    if (attempt === 1) {
      log.error("failing attempt 1");
      throw new Error("boom");
    }
    return "done";
  });
  const worker = ss.work({ queues: ["logger"] });
  try {
    const started = await ss.start("logger", null, { ...fast, queueName: "logger" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.deepEqual(
      run.logs.map((l) => [l.level, l.message, l.stepId, l.attempt, l.fields]),
      [
        ["info", "starting", "", 1, { attempt: 1 }],
        ["debug", "inside the step", "charge", 1, { amountCents: 4200 }],
        ["warn", "the provider was slow", "", 1, {}],
        ["error", "failing attempt 1", "", 1, {}],
        ["info", "starting", "", 2, { attempt: 2 }],
        ["warn", "the provider was slow", "", 2, {}],
      ],
    );
    const kinds = run.timeline.map((t) => t.kind);
    assert.deepEqual(kinds.slice(0, 2), ["CREATED", "ATTEMPT_STARTED"]);
    assert.ok(kinds.includes("RETRY_SCHEDULED"));
    assert.equal(kinds.at(-1), "COMPLETED");
    assert.ok(run.timeline.some((t) => t.kind === "STEP_COMPLETED" && t.stepId === "charge"));
  } finally {
    await worker.shutdown();
  }
});

test("queues: configure, get, pause/resume, list; start options delay, runAt, priority, concurrencyKey", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const name = `q-${unique()}`;
  const queue = ss.queue(name);
  await assert.rejects(queue.get(), NotFoundError);
  const configured = await queue.configure({
    concurrencyLimit: 2,
    keyConcurrencyLimit: 1,
    rateLimit: { limit: 100, period: "1m" },
    retryPolicy: { maxAttempts: 4 },
    leaseTimeout: "2m",
  });
  assert.equal(configured.name, name);
  assert.equal(configured.paused, false);
  assert.deepEqual(configured.config, { concurrencyLimit: 2, keyConcurrencyLimit: 1, rateLimit: { limit: 100, period: 60_000 }, retryPolicy: { maxAttempts: 4 }, leaseTimeout: 120_000 });
  assert.equal((await queue.pause()).paused, true);

  const delayed = await queue.enqueue("echo", { n: 1 }, { delay: "1h", priority: 5, concurrencyKey: "cus_1" });
  assert.equal(delayed.run.priority, 5);
  assert.equal(delayed.run.concurrencyKey, "cus_1");
  assert.ok((delayed.run.nextAttemptAt?.getTime() ?? 0) > Date.now() + 50 * 60_000);
  const at = new Date(Date.now() + 2 * 3600_000);
  const scheduled = await queue.enqueue("echo", { n: 2 }, { runAt: at });
  assert.equal(Math.round((scheduled.run.nextAttemptAt?.getTime() ?? 0) / 1000), Math.round(at.getTime() / 1000));
  await assert.rejects(queue.enqueue("echo", null, { priority: 5000 }), InvalidArgumentError);

  const stats = (await queue.get()).stats;
  assert.equal(stats.queued, 2);
  assert.equal(stats.delayed, 2);
  assert.equal((await queue.resume()).paused, false);
  let found = false;
  let token: string | undefined;
  do {
    const page = await ss.listQueues({ pageSize: 100, ...(token ? { pageToken: token } : {}) });
    found ||= page.queues.some((q) => q.name === name);
    token = page.nextPageToken;
  } while (token !== undefined);
  assert.ok(found, "listQueues includes the queue");
  for (const id of [delayed.id, scheduled.id]) await ss.cancelRun(id);
});

test("a lock taken in a run is released with the run; a waiting run can be cancelled", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const key = `lock:${unique()}`;
  ss.job<{ key: string }>("locker", async ({ payload, state }) => {
    const lock = await state.lock(payload.key, { ttl: "1m" });
    const page = await state.list("lock:none:");
    return { token: lock?.token ?? null, keys: page.keys.length };
  });
  ss.job("idle-waiter", async ({ step }) => {
    await step.waitForEvent("never", { event: "never.happens", timeout: "1h" });
    return "unreachable";
  });
  const worker = ss.work({ queues: ["locker"] });
  try {
    const started = await ss.start("locker", { key }, { queueName: "locker" });
    const run = await ss.waitForRun(started.id, { timeout: "20s" });
    assert.equal(run.status, "completed");
    const { token } = run.result as { token: number };
    assert.ok(token > 0);
    // Not released by the handler, but by the run's completion: a client takes it at once.
    const lock = await ss.state.lock(key, { ttl: "10s" });
    assert.ok(lock && lock.token > token);
    await lock.release();

    // The same worker runs the waiter: starting a run right after a worker shut down can hand
    // it to that worker's cancelled poll when the server has not yet seen the stream reset
    // (the run is then delivered again only once its lease expires).
    const w2 = worker;
    const waiting = await ss.start("idle-waiter", null, { queueName: "locker" });
    try {
      let status = "";
      for (let i = 0; i < 200 && status !== "waiting"; i++) {
        status = (await ss.getRun(waiting.id)).status;
        if (status !== "waiting") await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(status, "waiting");
      assert.equal(w2.activeTasks, 0, "a waiting run holds no slot");
      const cancelled = await ss.cancelRun(waiting.id, "no longer needed");
      assert.equal(cancelled.status, "cancelled");
    } finally {
      await w2.shutdown();
    }
  } finally {
    await worker.shutdown();
  }
});
