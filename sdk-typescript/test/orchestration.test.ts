/**
 * End-to-end tests of schedules, event triggers (client-created and job-declared), child runs
 * (`step.invoke`, `invokeAll`, `invokeChild`) and combined waits (`waitForAny`, `waitForAll`)
 * against the real server binary.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  StackShift,
  AlreadyExistsError,
  ChildFailedError,
  InvalidArgumentError,
  NonRetryableError,
  NotFoundError,
  TriggerDeclarationError,
  UnavailableError,
  childResult,
  triggeredEvent,
  type Run,
  type TriggeredEvent,
} from "../src/index.js";
import { startServer, type TestServer } from "./server.js";

let server: TestServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

const unique = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `getRun` until the run is `waiting` (or fails the test after ~10 s). */
async function untilWaiting(ss: StackShift, runId: string): Promise<Run> {
  for (let i = 0; i < 200; i++) {
    const run = await ss.getRun(runId);
    if (run.status === "waiting") return run;
    await pause(50);
  }
  assert.fail(`run ${runId} never reached waiting`);
}

test("schedules: create is idempotent, refuses another definition and a bad cron; get, list, pause, resume, delete", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const id = `report-${unique()}`;
  const created = await ss.schedules.create(id, {
    job: "build-report",
    payload: { kind: "daily" },
    cron: "0 9 * * MON-FRI",
    timeZone: "Europe/Paris",
    queueName: `reports-${unique()}`,
    catchUp: "skip",
    priority: 5,
    leaseTimeout: "2m",
  });
  assert.equal(created.created, true);
  const s = created.schedule;
  assert.equal(s.id, id);
  assert.equal(s.cron, "0 9 * * MON-FRI");
  assert.equal(s.timeZone, "Europe/Paris");
  assert.equal(s.everyMs, undefined);
  assert.deepEqual(s.payload, { kind: "daily" });
  assert.equal(s.catchUp, "skip");
  assert.equal(s.priority, 5);
  assert.equal(s.leaseTimeoutMs, 120_000);
  assert.equal(s.paused, false);
  assert.ok(s.nextFireTime !== undefined && s.nextFireTime.getTime() > Date.now());
  assert.deepEqual(s.recentRunIds, []);

  const again = await ss.schedules.create(id, { ...{ job: "build-report", payload: { kind: "daily" }, cron: "0 9 * * MON-FRI" }, timeZone: "Europe/Paris", queueName: s.queue, catchUp: "skip", priority: 5, leaseTimeout: 120_000 });
  assert.equal(again.created, false, "the same definition answers the stored schedule");
  await assert.rejects(ss.schedules.create(id, { job: "build-report", cron: "0 10 * * *" }), (e: unknown) => e instanceof AlreadyExistsError && e.code === "ALREADY_EXISTS");
  await assert.rejects(ss.schedules.create(`bad-${unique()}`, { job: "j", cron: "not a cron" }), (e: unknown) => e instanceof InvalidArgumentError && e.code === "INVALID_ARGUMENT");
  await assert.rejects(ss.schedules.create(`both-${unique()}`, { job: "j", cron: "* * * * *", every: "1m" }), InvalidArgumentError);

  assert.equal((await ss.schedules.get(id)).job, "build-report");
  const paused = await ss.schedules.pause(id);
  assert.equal(paused.paused, true);
  assert.equal((await ss.schedules.resume(id)).paused, false);

  const other = `report-${unique()}`;
  await ss.schedules.create(other, { job: "build-report", every: "1h", paused: true });
  const ids: string[] = [];
  let pageToken: string | undefined;
  do {
    const page = await ss.schedules.list({ pageSize: 1, ...(pageToken === undefined ? {} : { pageToken }) });
    assert.ok(page.schedules.length <= 1);
    ids.push(...page.schedules.map((x) => x.id));
    pageToken = page.nextPageToken;
  } while (pageToken !== undefined);
  assert.ok(ids.includes(id) && ids.includes(other), `listed: ${ids.join(",")}`);

  await ss.schedules.delete(id);
  await assert.rejects(ss.schedules.get(id), NotFoundError);
  await assert.rejects(ss.schedules.delete(id), NotFoundError);
  await ss.schedules.delete(other);
});

test("an interval schedule fires: its runs start on its queue and complete", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const queue = `tick-${unique()}`;
  const seen: unknown[] = [];
  ss.job("tick", ({ payload }) => {
    seen.push(payload);
    return { ticked: true };
  });
  const worker = await ss.startWorker({ queues: [queue] });
  const id = `tick-${unique()}`;
  try {
    await ss.schedules.create(id, { job: "tick", payload: { n: 1 }, every: "1s", queueName: queue, catchUp: "skip" });
    let schedule = await ss.schedules.get(id);
    for (let i = 0; i < 100 && schedule.recentRunIds.length === 0; i++) {
      await pause(100);
      schedule = await ss.schedules.get(id);
    }
    const runId = schedule.recentRunIds[0];
    assert.ok(runId !== undefined, "the schedule started a run within 10 s");
    assert.ok(schedule.lastFireTime !== undefined);
    const run = await ss.waitForRun(runId, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.equal(run.queue, queue);
    assert.deepEqual(run.result, { ticked: true });
    assert.deepEqual(seen[0], { n: 1 });
  } finally {
    await ss.schedules.delete(id);
    await worker.shutdown();
  }
});

test("client-created triggers start runs whose payload is the event envelope; list and delete", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const queue = `trig-${unique()}`;
  const event = `user.signed_up.${unique()}`;
  ss.job<TriggeredEvent<{ userId: string }>>("welcome", ({ payload }) => {
    const e = triggeredEvent<{ userId: string }>(payload);
    return { user: e.payload.userId, name: e.name, key: e.correlationKey, id: e.id, at: e.publishedAt };
  });
  ss.job("welcome-vip", () => "vip");
  const worker = await ss.startWorker({ queues: [queue] });
  try {
    const { trigger, created } = await ss.triggers.create({ event, job: "welcome", queueName: queue });
    assert.equal(created, true);
    assert.equal(trigger.event, event);
    assert.equal(trigger.key, undefined, "no key filter: any key");
    assert.equal(trigger.queue, queue);
    assert.equal((await ss.triggers.create({ event, job: "welcome", queueName: queue })).created, false);
    await assert.rejects(ss.triggers.create({ event, job: "welcome", queueName: `${queue}-other` }), AlreadyExistsError);
    const keyed = await ss.triggers.create({ event, job: "welcome-vip", queueName: queue, key: "vip" });
    assert.equal(keyed.trigger.key, "vip");

    const published = await ss.events.publish(event, { userId: "u1" }, { key: "k1" });
    assert.equal(published.startedRunIds.length, 1, "the keyed trigger does not match key k1");
    const run = await ss.waitForRun(published.startedRunIds[0]!, { timeout: "20s" });
    assert.equal(run.status, "completed");
    assert.deepEqual(run.result, { user: "u1", name: event, key: "k1", id: published.event.id, at: published.event.publishedAt.getTime() });
    assert.equal(run.parentRunId, undefined);

    const vip = await ss.events.publish(event, { userId: "u2" }, { key: "vip" });
    assert.equal(vip.startedRunIds.length, 2, "both triggers match key vip");
    const vipRuns = await Promise.all(vip.startedRunIds.map((id) => ss.waitForRun(id, { timeout: "20s" })));
    assert.deepEqual(vipRuns.map((r) => r.job).sort(), ["welcome", "welcome-vip"]);

    const listed = await ss.triggers.list({ event });
    assert.deepEqual(listed.triggers.map((t) => t.id).sort(), [trigger.id, keyed.trigger.id].sort());
    assert.equal((await ss.triggers.list({ event, job: "nobody" })).triggers.length, 0);
    await ss.triggers.delete(trigger.id);
    await ss.triggers.delete(keyed.trigger.id);
    await assert.rejects(ss.triggers.delete(trigger.id), NotFoundError);
    assert.deepEqual((await ss.events.publish(event, { userId: "u3" })).startedRunIds, []);
  } finally {
    await worker.shutdown();
  }
});

test("job-declared triggers are created when the worker starts; a refused declaration fails the start", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const queue = `decl-${unique()}`;
  const event = `order.placed.${unique()}`;
  ss.job<TriggeredEvent<{ orderId: string }>>("on-order", ({ payload }) => ({ order: payload.payload.orderId }), { triggers: [{ event }] });
  const worker = await ss.startWorker({ queues: [queue] });
  try {
    const listed = await ss.triggers.list({ event, job: "on-order" });
    assert.equal(listed.triggers.length, 1, "the worker created the declared trigger before it was ready");
    assert.equal(listed.triggers[0]?.queue, queue, "a declared trigger defaults to the worker's first queue");
    const published = await ss.events.publish(event, { orderId: "o1" });
    assert.equal(published.startedRunIds.length, 1);
    const run = await ss.waitForRun(published.startedRunIds[0]!, { timeout: "20s" });
    assert.deepEqual(run.result, { order: "o1" });
    // A second worker declaring the same trigger: idempotent.
    const second = await ss.startWorker({ queues: [queue] });
    await second.shutdown();
    assert.equal((await ss.triggers.list({ event })).triggers.length, 1);
  } finally {
    await worker.shutdown();
  }

  // The same declaration with other options (another queue) is refused: the worker does not start.
  const refused = new StackShift({ endpoint: server.endpoint });
  refused.job("on-order", () => null, { triggers: [{ event, queueName: `${queue}-elsewhere` }] });
  await assert.rejects(refused.startWorker({ queues: [queue] }), (e: unknown) => {
    assert.ok(e instanceof TriggerDeclarationError, String(e));
    assert.equal(e.code, "ALREADY_EXISTS");
    assert.equal(e.job, "on-order");
    assert.equal(e.event, event);
    return true;
  });
  const w = refused.work({ queues: [queue] });
  await assert.rejects(w.runUntil(new Promise(() => {})), TriggerDeclarationError);
  assert.equal(w.running, false);
  assert.throws(() => refused.job("x", () => null, { triggers: [{ event: "" }] }), InvalidArgumentError);

  // startWorker fails fast when the server cannot be reached (work() would keep retrying).
  const offline = new StackShift({ endpoint: "http://127.0.0.1:1" });
  offline.job("on-order", () => null, { triggers: [{ event }] });
  await assert.rejects(offline.startWorker({ queues: [queue] }), (e: unknown) => e instanceof UnavailableError);
});

test("step.invoke returns the child's result; a failed child is a ChildFailedError; the parent holds no slot", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const queue = `inv-${unique()}`;
  ss.job<{ n: number }>("double", ({ payload }) => payload.n * 2);
  ss.job("explode", () => {
    throw new NonRetryableError("boom");
  });
  ss.job<{ propagate: boolean }>("parent", async ({ payload, step }) => {
    const doubled = await step.invoke<number>("double", "double", { n: 21 });
    try {
      await step.invoke("explode", "explode", null);
      return { doubled, caught: null };
    } catch (e) {
      if (!(e instanceof ChildFailedError) || payload.propagate) throw e;
      return { doubled, caught: { status: e.status, message: e.failure.message, job: e.job } };
    }
  });
  // One slot: the child can only run because the waiting parent holds none.
  const worker = await ss.startWorker({ queues: [queue], concurrency: 1 });
  try {
    const fast = { queueName: queue, retryPolicy: { maxAttempts: 2, initialInterval: 50 } };
    const caught = await ss.start("parent", { propagate: false }, fast);
    const done = await ss.waitForRun(caught.id, { timeout: "30s" });
    assert.equal(done.status, "completed", JSON.stringify(done.failure));
    assert.deepEqual(done.result, { doubled: 42, caught: { status: "failed", message: "boom", job: "explode" } });
    assert.deepEqual(
      done.steps.map((s) => [s.id, s.kind]),
      [
        ["double", "child"],
        ["explode", "child"],
      ],
    );
    assert.equal(done.attempt, 1, "child waits use up no attempts");
    const children = await ss.listRuns({ queue, job: "double" });
    const child = children.runs.find((r) => r.parentRunId === caught.id);
    assert.ok(child, "the child run records its parent");
    assert.equal(child.parentStepId, "double");

    const propagated = await ss.start("parent", { propagate: true }, { ...fast, retryPolicy: { maxAttempts: 5, initialInterval: 50 } });
    const failed = await ss.waitForRun(propagated.id, { timeout: "30s" });
    assert.equal(failed.status, "failed");
    assert.equal(failed.attempt, 1, "a propagated ChildFailedError is not retried");
    assert.equal(failed.failure?.nonRetryable, true);
    assert.match(failed.failure?.message ?? "", /child run .* \(explode\) failed: boom/);
    assert.equal(failed.failure?.type, "ChildFailedError");
  } finally {
    await worker.shutdown();
  }
});

test("step.invokeAll fans out and returns every outcome in order; invokeChild takes options", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const queue = `fan-${unique()}`;
  const other = `fan-other-${unique()}`;
  ss.job<{ i: number }>("square", ({ payload }) => {
    if (payload.i === 2) throw new Error(`chunk ${payload.i} is bad`);
    return payload.i * payload.i;
  });
  ss.job("fan", async ({ step }) => {
    const outcomes = await step.invokeAll<number>(
      "chunks",
      [0, 1, 2, 3].map((i) => ({ job: "square", payload: { i }, retryPolicy: { maxAttempts: 1 } })),
    );
    const elsewhere = await step.invokeChild<number>("elsewhere", { job: "square", payload: { i: 5 }, queueName: other, priority: 3 });
    return {
      statuses: outcomes.map((o) => o.status),
      results: outcomes.map((o) => (o.status === "completed" ? childResult(o) : o.failure?.message)),
      elsewhere: childResult(elsewhere),
    };
  });
  const worker = await ss.startWorker({ queues: [queue, other], concurrency: 2 });
  try {
    const started = await ss.start("fan", null, { queueName: queue });
    const run = await ss.waitForRun(started.id, { timeout: "30s" });
    assert.equal(run.status, "completed", JSON.stringify(run.failure));
    assert.deepEqual(run.result, { statuses: ["completed", "completed", "failed", "completed"], results: [0, 1, "chunk 2 is bad", 9], elsewhere: 25 });
    const onOther = await ss.listRuns({ queue: other });
    assert.equal(onOther.runs.length, 1);
    assert.equal(onOther.runs[0]?.priority, 3);
  } finally {
    await worker.shutdown();
  }
});

test("step.waitForAny: an event wins, a sleep wins, or the wait times out", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const queue = `any-${unique()}`;
  ss.job<{ key: string; sleep: number; timeout?: number; withSleep: boolean }>("any", async ({ payload, step }) => {
    const items = payload.withSleep ? [{ event: "order.approved", key: payload.key }, { sleep: payload.sleep }] : [{ event: "order.approved", key: payload.key }];
    const got = await step.waitForAny<{ by: string }>("approval", items, payload.timeout === undefined ? {} : { timeout: payload.timeout });
    if (got.timedOut) return { timedOut: true };
    return { index: got.index, kind: got.result.kind, by: got.result.kind === "event" ? got.result.event.payload.by : null };
  });
  const worker = await ss.startWorker({ queues: [queue] });
  try {
    const key = `o-${unique()}`;
    const eventRun = await ss.start("any", { key, sleep: 60_000, withSleep: true }, { queueName: queue });
    const waiting = await untilWaiting(ss, eventRun.id);
    assert.equal(waiting.wait?.kind, "any");
    const published = await ss.events.publish("order.approved", { by: "alice" }, { key });
    assert.deepEqual(published.resumedRunIds, [eventRun.id]);
    const r1 = await ss.waitForRun(eventRun.id, { timeout: "20s" });
    assert.deepEqual(r1.result, { index: 0, kind: "event", by: "alice" });
    assert.equal(r1.steps[0]?.kind, "any");

    const sleepRun = await ss.start("any", { key: `${key}-none`, sleep: 300, withSleep: true }, { queueName: queue });
    const r2 = await ss.waitForRun(sleepRun.id, { timeout: "20s" });
    assert.deepEqual(r2.result, { index: 1, kind: "slept", by: null });

    const timeoutRun = await ss.start("any", { key: `${key}-none`, sleep: 0, withSleep: false, timeout: 300 }, { queueName: queue });
    const r3 = await ss.waitForRun(timeoutRun.id, { timeout: "20s" });
    assert.deepEqual(r3.result, { timedOut: true });

    // Unbounded (an event item and no timeout) is refused: the run fails without retries.
    const unbounded = await ss.start("any", { key, sleep: 0, withSleep: false }, { queueName: queue, retryPolicy: { maxAttempts: 3 } });
    const r4 = await ss.waitForRun(unbounded.id, { timeout: "20s" });
    assert.equal(r4.status, "failed");
    assert.equal(r4.failure?.nonRetryable, true);
  } finally {
    await worker.shutdown();
  }
});

test("step.waitForAll: every item resolves, or the timeout reports the unresolved ones as null", async () => {
  const ss = new StackShift({ endpoint: server.endpoint });
  const queue = `all-${unique()}`;
  ss.job<{ key: string; timeout: number }>("all", async ({ payload, step }) => {
    const all = await step.waitForAll<{ who: string }>(
      "signatures",
      [{ event: "contract.signed", key: payload.key }, { event: "contract.signed", key: payload.key }, { sleep: 200 }],
      { timeout: payload.timeout },
    );
    return { timedOut: all.timedOut, items: all.items.map((i) => (i === null ? null : i.kind === "event" ? i.event.payload.who : "slept")) };
  });
  const worker = await ss.startWorker({ queues: [queue] });
  try {
    const key = `c-${unique()}`;
    const run = await ss.start("all", { key, timeout: 60_000 }, { queueName: queue });
    await ss.events.publish("contract.signed", { who: "buyer" }, { key });
    await untilWaiting(ss, run.id);
    await ss.events.publish("contract.signed", { who: "seller" }, { key });
    const r1 = await ss.waitForRun(run.id, { timeout: "20s" });
    assert.deepEqual(r1.result, { timedOut: false, items: ["buyer", "seller", "slept"] }, "two items for one name and key take two events");

    const lonely = await ss.start("all", { key: `${key}-lonely`, timeout: 500 }, { queueName: queue });
    await untilWaiting(ss, lonely.id);
    await ss.events.publish("contract.signed", { who: "buyer" }, { key: `${key}-lonely` });
    const r2 = await ss.waitForRun(lonely.id, { timeout: "20s" });
    assert.deepEqual(r2.result, { timedOut: true, items: ["buyer", null, "slept"] });
  } finally {
    await worker.shutdown();
  }
});
