/**
 * The TypeScript SDK's conformance adapter: a worker built on `@stackshift-cloud/jobs` that
 * registers the fixed job catalogue (`conf.script`, `conf.echo`) and answers client commands
 * on stdin, following the protocol in docs/conformance.md. Started by
 * `cargo run -p stackshift-conformance -- --sdk typescript`.
 */
import { appendFileSync } from "node:fs";
import { createInterface } from "node:readline";
import {
  StackShift,
  StackShiftError,
  NonRetryableError,
  StepFailedError,
  AttemptInterruptedError,
  ConflictError,
  ChildFailedError,
  type ChildOutcome,
  type ItemResult,
  type JobContext,
  type Schedule,
  type WaitItem,
  type Lock,
  type QueueInfo,
  type Run,
  type RunStatus,
  type StartOptions,
} from "../src/index.js";

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const env = (name: string): string => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const ledgerPath = env("CONFORMANCE_LEDGER");

/** Appends one ledger line (synchronously, so lines never interleave). */
function record(runId: string, step: string, attempt: number, phase: "start" | "end"): void {
  appendFileSync(ledgerPath, `${JSON.stringify({ run_id: runId, step, attempt, phase, t: performance.timeOrigin + performance.now() })}\n`);
}

/** Sleeps `ms`, or throws the interruption once the attempt is interrupted. */
async function interruptibleSleep(ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new AttemptInterruptedError("interrupted");
}

interface ScriptState {
  outputs: Json[];
  caught: Json[];
}

/** The body of a script step: ledger start, optional sleep, optional failure, ledger end. */
async function stepBody(ctx: JobContext<Obj>, id: string, op: Obj, tryNo = 1): Promise<Json> {
  record(ctx.runId, id, ctx.attempt, "start");
  if (typeof op["sleep_ms"] === "number") await interruptibleSleep(op["sleep_ms"], ctx.signal);
  const message = typeof op["message"] === "string" ? op["message"] : undefined;
  if (typeof op["fail_until_attempt"] === "number" && ctx.attempt <= op["fail_until_attempt"]) {
    throw new Error(message ?? `step ${id} failed on attempt ${ctx.attempt}`);
  }
  if (typeof op["fail_until_try"] === "number" && tryNo <= op["fail_until_try"]) {
    throw new Error(message ?? `step ${id} failed on try ${tryNo}`);
  }
  if (op["non_retryable"] === true) throw new NonRetryableError(message ?? `step ${id} failed permanently`);
  record(ctx.runId, id, ctx.attempt, "end");
  if (typeof op["output_bytes"] === "number") return "x".repeat(op["output_bytes"]);
  return "output" in op ? (op["output"] as Json) : { step: id, attempt: ctx.attempt };
}

/** `step_failed` (replayed terminal failure), `non_retryable` or `error`, with the message. */
function errorKind(e: unknown): [string, string] {
  if (e instanceof StepFailedError) return ["step_failed", e.failure.message];
  if (e instanceof NonRetryableError) return ["non_retryable", e.message];
  return ["error", e instanceof Error ? e.message : String(e)];
}

/** Runs `f`; with `catch: true`, a state refusal is appended to `caught` instead of thrown. */
async function caughtConflict(op: Obj, key: string, state: ScriptState, f: () => Promise<void>): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (op["catch"] === true && e instanceof ConflictError) {
      state.caught.push({ step: key, kind: "conflict", reason: e.reason });
      return;
    }
    throw e;
  }
}

/** The `state_*`, `lock`, `sleep`, `wait_event` and `log` ops; false when `op` is none of them. */
async function runStateOp(ctx: JobContext<Obj>, op: Obj, state: ScriptState): Promise<boolean> {
  if (typeof op["sleep"] === "string") {
    await ctx.step.sleep(op["sleep"], Number(op["ms"] ?? 0));
  } else if (typeof op["wait_event"] === "string") {
    const event = await ctx.step.waitForEvent(op["wait_event"], {
      event: String(op["event"] ?? ""),
      key: typeof op["key"] === "string" ? op["key"] : "",
      timeout: Number(op["timeout_ms"] ?? 0),
    });
    state.outputs.push(event === null ? { received: false } : { received: true, payload: event.payload as Json });
  } else if (typeof op["state_set"] === "string") {
    const key = op["state_set"];
    await caughtConflict(op, key, state, async () => {
      await ctx.state.set(key, op["value"] ?? null, typeof op["ttl_ms"] === "number" ? { ttl: op["ttl_ms"] } : {});
    });
  } else if (typeof op["state_get"] === "string") {
    const key = op["state_get"];
    await caughtConflict(op, key, state, async () => {
      state.outputs.push((await ctx.state.get<Json>(key)) ?? null);
    });
  } else if (typeof op["state_incr"] === "string") {
    const key = op["state_incr"];
    await caughtConflict(op, key, state, async () => {
      state.outputs.push(typeof op["by"] === "number" ? await ctx.state.increment(key, op["by"]) : await ctx.state.increment(key));
    });
  } else if (typeof op["state_delete"] === "string") {
    const key = op["state_delete"];
    await caughtConflict(op, key, state, async () => {
      state.outputs.push(await ctx.state.delete(key));
    });
  } else if (typeof op["lock"] === "string") {
    const key = op["lock"];
    await caughtConflict(op, key, state, async () => {
      const lock = await ctx.state.lock(key, {
        ttl: Number(op["ttl_ms"] ?? 0),
        ...(typeof op["wait_ms"] === "number" ? { wait: op["wait_ms"] } : {}),
      });
      if (lock === null) {
        state.outputs.push({ granted: false });
        return;
      }
      state.outputs.push({ granted: true, token: lock.token });
      if (typeof op["hold_ms"] === "number") await interruptibleSleep(op["hold_ms"], ctx.signal);
      if (op["release"] !== false) await lock.release();
    });
  } else if (typeof op["log"] === "string") {
    const level = typeof op["level"] === "string" ? op["level"] : "info";
    if (level !== "debug" && level !== "info" && level !== "warn" && level !== "error") throw new NonRetryableError(`unknown log level ${level}`);
    const fields = typeof op["fields"] === "object" && op["fields"] !== null && !Array.isArray(op["fields"]) ? (op["fields"] as Obj) : undefined;
    ctx.log[level](op["log"], fields);
  } else {
    return false;
  }
  return true;
}

/** A combined wait's `ITEM` as a {@link WaitItem}. */
function waitItem(raw: Json): WaitItem {
  const item = raw as Obj;
  if (typeof item["event"] === "string") return { event: item["event"], key: typeof item["key"] === "string" ? item["key"] : "" };
  if (typeof item["sleep_ms"] === "number") return { sleep: item["sleep_ms"] };
  throw new NonRetryableError(`unknown wait item ${JSON.stringify(item)}`);
}

/** An item's output `O`: `{name, key, payload}` for an event, `null` for a sleep. */
function itemOutput(result: ItemResult | null): Json {
  if (result === null || result.kind === "slept") return null;
  return { name: result.event.name, key: result.event.key, payload: result.event.payload as Json };
}

/** A child's outcome as `invoke_all` appends it. */
function childJson(o: ChildOutcome): Json {
  return o.status === "completed" ? { status: o.status, result: (o.result ?? null) as Json } : { status: o.status, message: o.failure?.message ?? "" };
}

/** The `invoke`, `invoke_all`, `wait_any` and `wait_all` ops; false when `op` is none of them. */
async function runChildOrWaitOp(ctx: JobContext<Obj>, op: Obj, state: ScriptState): Promise<boolean> {
  const timeout = typeof op["timeout_ms"] === "number" ? { timeout: op["timeout_ms"] } : {};
  if (typeof op["invoke"] === "string") {
    try {
      state.outputs.push(await ctx.step.invoke<Json>(op["invoke"], String(op["job"] ?? ""), op["payload"] ?? null));
    } catch (e) {
      if (!(e instanceof ChildFailedError) || op["propagate"] === true) throw e;
      state.outputs.push({ child_failed: true, status: e.status, message: e.failure.message });
    }
  } else if (typeof op["invoke_all"] === "string") {
    const children = ((op["children"] as Json[]) ?? []).map((c) => ({ job: String((c as Obj)["job"] ?? ""), payload: (c as Obj)["payload"] ?? null }));
    state.outputs.push((await ctx.step.invokeAll(op["invoke_all"], children)).map(childJson));
  } else if (typeof op["wait_any"] === "string") {
    const got = await ctx.step.waitForAny(op["wait_any"], ((op["items"] as Json[]) ?? []).map(waitItem), timeout);
    state.outputs.push(got.timedOut ? { timed_out: true } : { timed_out: false, index: got.index, output: itemOutput(got.result) });
  } else if (typeof op["wait_all"] === "string") {
    const all = await ctx.step.waitForAll(op["wait_all"], ((op["items"] as Json[]) ?? []).map(waitItem), timeout);
    state.outputs.push({ timed_out: all.timedOut, outputs: all.items.map(itemOutput), resolved: all.items.map((i) => i !== null) });
  } else {
    return false;
  }
  return true;
}

async function runOps(ctx: JobContext<Obj>, ops: Json[], state: ScriptState): Promise<void> {
  for (const raw of ops) {
    const op = raw as Obj;
    if (await runStateOp(ctx, op, state)) continue;
    if (await runChildOrWaitOp(ctx, op, state)) continue;
    if (typeof op["step"] === "string") {
      const id = op["step"];
      try {
        if ("retries" in op || "retry_delay_ms" in op) {
          let tries = 0;
          const options = {
            ...(typeof op["retries"] === "number" ? { retries: op["retries"] } : {}),
            ...(typeof op["retry_delay_ms"] === "number" ? { retryDelay: op["retry_delay_ms"] } : {}),
          };
          state.outputs.push(await ctx.step.run(id, () => stepBody(ctx, id, op, ++tries), options));
        } else {
          state.outputs.push(await ctx.step.run(id, () => stepBody(ctx, id, op)));
        }
      } catch (e) {
        if (op["catch"] !== true || e instanceof AttemptInterruptedError) throw e;
        const [kind, message] = errorKind(e);
        state.caught.push({ step: id, kind, message });
      }
    } else if (typeof op["repeat"] === "number") {
      for (let i = 0; i < op["repeat"]; i++) await runOps(ctx, (op["ops"] as Json[]) ?? [], state);
    } else if (typeof op["fail"] === "string") {
      const until = op["until_attempt"];
      if (typeof until !== "number" || ctx.attempt <= until) {
        throw op["non_retryable"] === true ? new NonRetryableError(op["fail"]) : new Error(op["fail"]);
      }
    } else if (typeof op["sleep_ms"] === "number") {
      await interruptibleSleep(op["sleep_ms"], ctx.signal);
    } else {
      throw new NonRetryableError(`unknown script op ${JSON.stringify(op)}`);
    }
  }
}

const client = new StackShift();
/** Locks taken by the `lock` client op, by key and token, for `release_lock`. */
const locks = new Map<string, Lock>();
client.job<Obj>("conf.script", async (ctx) => {
  const state: ScriptState = { outputs: [], caught: [] };
  await runOps(ctx, (ctx.payload["ops"] as Json[]) ?? [], state);
  if (typeof ctx.payload["result_bytes"] === "number") return "x".repeat(ctx.payload["result_bytes"]);
  if ("result" in ctx.payload) return ctx.payload["result"];
  return { outputs: state.outputs, caught: state.caught };
});
client.job("conf.echo", ({ payload }) => payload);
// Declared with an event trigger through the job-definition API: the worker creates it when
// it starts, before it polls (so before `ready` is printed).
client.job("conf.on_event", ({ payload }) => payload, {
  triggers: [{ event: `conf.triggered.${env("CONFORMANCE_QUEUE")}`, queueName: env("CONFORMANCE_QUEUE") }],
});

const worker = await client.startWorker({
  queues: [env("CONFORMANCE_QUEUE")],
  concurrency: Number(env("CONFORMANCE_CONCURRENCY")),
  shutdownGrace: Number(env("CONFORMANCE_SHUTDOWN_GRACE_MS")),
});

/** A run with its timeline and logs, as `get_run` / `wait_run` answer it. */
function fullRunJson(run: Run): Obj {
  return {
    ...runJson(run),
    parent_run_id: run.parentRunId ?? "",
    timeline: run.timeline.map((t) => ({ kind: t.kind, attempt: t.attempt, step_id: t.stepId })),
    logs: run.logs.map((l) => ({ level: l.level, message: l.message, fields: l.fields as Obj, step_id: l.stepId, attempt: l.attempt })),
  };
}

/** A queue as the queue ops answer it. */
function queueJson(q: QueueInfo): Obj {
  return {
    name: q.name,
    paused: q.paused,
    concurrency_limit: q.config.concurrencyLimit ?? null,
    key_concurrency_limit: q.config.keyConcurrencyLimit ?? null,
  };
}

/** A schedule as the schedule ops answer it. */
function scheduleJson(s: Schedule): Obj {
  return { schedule_id: s.id, job: s.job, paused: s.paused, recent_run_ids: s.recentRunIds };
}

function runJson(run: Run): Obj {
  return {
    run_id: run.id,
    status: run.status,
    attempt: run.attempt,
    queue: run.queue,
    result: (run.result ?? null) as Json,
    failure: run.failure ? { message: run.failure.message, non_retryable: run.failure.nonRetryable } : null,
  };
}

/** One client command through the SDK's public API. */
async function clientOp(op: string, c: Obj): Promise<Json> {
  const ss = typeof c["api_key"] === "string" ? new StackShift({ apiKey: c["api_key"] }) : client;
  const runId = String(c["run_id"] ?? "");
  switch (op) {
    case "start": {
      const opts: StartOptions = {};
      if (typeof c["idempotency_key"] === "string") opts.idempotencyKey = c["idempotency_key"];
      if (typeof c["idempotency_ttl"] === "string") opts.idempotencyTtl = c["idempotency_ttl"];
      if (typeof c["lease_timeout"] === "string") opts.leaseTimeout = c["lease_timeout"];
      if (typeof c["delay_ms"] === "number") opts.delay = c["delay_ms"];
      if (typeof c["run_at"] === "string") opts.runAt = new Date(c["run_at"]);
      if (typeof c["priority"] === "number") opts.priority = c["priority"];
      if (typeof c["concurrency_key"] === "string") opts.concurrencyKey = c["concurrency_key"];
      if (typeof c["max_attempts"] === "number" || typeof c["initial_interval"] === "string") {
        opts.retryPolicy = {};
        if (typeof c["max_attempts"] === "number") opts.retryPolicy.maxAttempts = c["max_attempts"];
        if (typeof c["initial_interval"] === "string") opts.retryPolicy.initialInterval = c["initial_interval"];
      }
      const payload = typeof c["payload_bytes"] === "number" ? "x".repeat(c["payload_bytes"]) : (c["payload"] ?? null);
      const queue = typeof c["queue"] === "string" ? c["queue"] : "default";
      const job = String(c["job"] ?? "");
      const started = c["via_queue"] === true ? await ss.queue(queue).enqueue(job, payload, opts) : await ss.start(job, payload, { ...opts, queueName: queue });
      return { run_id: started.id, duplicate: started.duplicate, status: started.run.status };
    }
    case "get_run":
      return fullRunJson(await ss.getRun(runId));
    case "wait_run":
      return fullRunJson(await ss.waitForRun(runId, { timeout: typeof c["timeout"] === "string" ? c["timeout"] : "20s" }));
    case "publish_event": {
      const published = await ss.events.publish(String(c["name"] ?? ""), c["payload"] ?? null, {
        ...(typeof c["key"] === "string" ? { key: c["key"] } : {}),
        ...(typeof c["event_id"] === "string" ? { id: c["event_id"] } : {}),
      });
      return { event_id: published.event.id, duplicate: published.duplicate, matched: published.resumedRunCount, started_run_ids: published.startedRunIds };
    }
    case "state_get":
      return (await ss.state.get<Json>(String(c["key"] ?? ""))) ?? null;
    case "state_set": {
      const version = await ss.state.set(String(c["key"] ?? ""), c["value"] ?? null, {
        ...(typeof c["ttl_ms"] === "number" ? { ttl: c["ttl_ms"] } : {}),
        ...(typeof c["expected_version"] === "number" ? { expectedVersion: c["expected_version"] } : {}),
      });
      return { version };
    }
    case "state_incr": {
      const key = String(c["key"] ?? "");
      return typeof c["by"] === "number" ? await ss.state.increment(key, c["by"]) : await ss.state.increment(key);
    }
    case "state_delete":
      return await ss.state.delete(String(c["key"] ?? ""));
    case "lock": {
      const lock = await ss.state.lock(String(c["key"] ?? ""), {
        ttl: Number(c["ttl_ms"] ?? 0),
        ...(typeof c["wait_ms"] === "number" ? { wait: c["wait_ms"] } : {}),
      });
      if (lock === null) return { granted: false };
      locks.set(`${lock.key}\u0000${lock.token}`, lock);
      return { granted: true, token: lock.token };
    }
    case "release_lock": {
      const key = String(c["key"] ?? "");
      const token = Number(c["token"]);
      // A lock this adapter took is released through its handle; any other token through a
      // handle rebuilt from the key and token (a stale token must answer LOCK_NOT_HELD).
      const lock = locks.get(`${key}\u0000${token}`);
      if (lock !== undefined) {
        locks.delete(`${key}\u0000${token}`);
        await lock.release();
      } else {
        await ss.state.releaseLock(key, token);
      }
      return null;
    }
    case "configure_queue": {
      const queue = ss.queue(String(c["queue"] ?? ""));
      return queueJson(
        await queue.configure({
          ...(typeof c["concurrency_limit"] === "number" ? { concurrencyLimit: c["concurrency_limit"] } : {}),
          ...(typeof c["key_concurrency_limit"] === "number" ? { keyConcurrencyLimit: c["key_concurrency_limit"] } : {}),
        }),
      );
    }
    case "pause_queue":
      return queueJson(await ss.queue(String(c["queue"] ?? "")).pause());
    case "resume_queue":
      return queueJson(await ss.queue(String(c["queue"] ?? "")).resume());
    case "get_queue":
      return queueJson(await ss.queue(String(c["queue"] ?? "")).get());
    case "cancel_run":
      return runJson(await ss.cancelRun(runId, typeof c["reason"] === "string" ? c["reason"] : ""));
    case "retry_run":
      return runJson(await ss.retryRun(runId));
    case "list_runs": {
      const page = await ss.listRuns({
        ...(typeof c["queue"] === "string" ? { queue: c["queue"] } : {}),
        ...(typeof c["job"] === "string" ? { job: c["job"] } : {}),
        ...(typeof c["status"] === "string" ? { status: c["status"] as RunStatus } : {}),
      });
      return { run_ids: page.runs.map((r) => r.id) };
    }
    case "create_schedule": {
      const catchUp = c["catch_up"];
      const created = await ss.schedules.create(String(c["schedule_id"] ?? ""), {
        job: String(c["job"] ?? ""),
        payload: c["payload"] ?? null,
        ...(typeof c["queue"] === "string" ? { queueName: c["queue"] } : {}),
        ...(typeof c["cron"] === "string" ? { cron: c["cron"] } : {}),
        ...(typeof c["time_zone"] === "string" ? { timeZone: c["time_zone"] } : {}),
        ...(typeof c["every_ms"] === "number" ? { every: c["every_ms"] } : {}),
        ...(catchUp === "skip" || catchUp === "latest" || catchUp === "all" ? { catchUp } : {}),
        ...(typeof c["paused"] === "boolean" ? { paused: c["paused"] } : {}),
      });
      return { ...scheduleJson(created.schedule), created: created.created };
    }
    case "get_schedule":
      return scheduleJson(await ss.schedules.get(String(c["schedule_id"] ?? "")));
    case "pause_schedule":
      return scheduleJson(await ss.schedules.pause(String(c["schedule_id"] ?? "")));
    case "resume_schedule":
      return scheduleJson(await ss.schedules.resume(String(c["schedule_id"] ?? "")));
    case "delete_schedule":
      await ss.schedules.delete(String(c["schedule_id"] ?? ""));
      return null;
    case "list_schedules": {
      const ids: string[] = [];
      let pageToken: string | undefined;
      do {
        const page = await ss.schedules.list(pageToken === undefined ? {} : { pageToken });
        ids.push(...page.schedules.map((s) => s.id));
        pageToken = page.nextPageToken;
      } while (pageToken !== undefined);
      return { schedule_ids: ids };
    }
    case "create_trigger": {
      const created = await ss.triggers.create({
        event: String(c["event"] ?? ""),
        job: String(c["job"] ?? ""),
        ...(typeof c["queue"] === "string" ? { queueName: c["queue"] } : {}),
        ...(typeof c["key"] === "string" ? { key: c["key"] } : {}),
      });
      return { trigger_id: created.trigger.id, created: created.created };
    }
    case "list_triggers": {
      const ids: string[] = [];
      let pageToken: string | undefined;
      do {
        const page = await ss.triggers.list({
          ...(typeof c["event"] === "string" ? { event: c["event"] } : {}),
          ...(typeof c["job"] === "string" ? { job: c["job"] } : {}),
          ...(pageToken === undefined ? {} : { pageToken }),
        });
        ids.push(...page.triggers.map((t) => t.id));
        pageToken = page.nextPageToken;
      } while (pageToken !== undefined);
      return { trigger_ids: ids };
    }
    case "delete_trigger":
      await ss.triggers.delete(String(c["trigger_id"] ?? ""));
      return null;
    default:
      throw new Error(`unknown op ${op}`);
  }
}

function send(message: Obj): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

send({ ready: true, sdk: "typescript" });
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let command: Obj;
  try {
    command = JSON.parse(line) as Obj;
  } catch {
    continue;
  }
  const op = String(command["op"] ?? "");
  if (op === "shutdown") break;
  try {
    send({ id: command["id"] ?? null, ok: await clientOp(op, command) });
  } catch (e) {
    const typed = e instanceof StackShiftError;
    const error: Obj = { code: typed ? e.code : "UNKNOWN", type: typed ? e.constructor.name : "", message: e instanceof Error ? e.message : String(e) };
    if (e instanceof ConflictError) error["reason"] = e.reason;
    send({ id: command["id"] ?? null, error });
  }
}
lines.close();
await worker.shutdown();
process.exit(0);
