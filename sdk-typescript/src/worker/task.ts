/**
 * Executing one task: build the lease and the step journal, heartbeat every third of the lease
 * timeout, run the handler (stopping as soon as the run is cancelled, the lease is lost or the
 * worker abandons its work at shutdown), then report the outcome with `CompleteRun` or
 * `FailRun`, unless the attempt was interrupted.
 *
 * @module
 */

import { ConnectError, type Client } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { JournalEntryKind } from "../gen/stackshift/v1/common_pb.js";
import type { Task, WorkerService } from "../gen/stackshift/v1/worker_pb.js";
import type { StateService } from "../gen/stackshift/v1/state_pb.js";
import { Step, type Handler, type JobContext, type Recorded } from "../context.js";
import { State } from "../state.js";
import { RunLogger } from "./runlog.js";
import { failureFromError, isInterrupted } from "../errors.js";
import { decodeJson, encodeJson } from "../json.js";
import { failureFromProto, failureToProto, statusFromProto, type Failure } from "../run.js";
import { millisFromDuration } from "../duration.js";
import { isLeaseLost, Lease, lostReason, write, type WriteResult } from "./lease.js";
import { sleep } from "./backoff.js";
import type { Logger } from "./log.js";
import type { TriggerDeclaration } from "../triggers.js";

/** The lease timeout assumed when a task names none. */
const DEFAULT_LEASE_TIMEOUT_MS = 30_000;

/** A job registered on a worker. */
export interface RegisteredJob {
  handler: Handler<any>;
  /** Lease timeout for runs that did not set one at start, in ms. */
  leaseTimeoutMs?: number;
  /** Event triggers the job declares; the worker creates them when it starts. */
  triggers?: TriggerDeclaration[];
}

/** What the worker shares with every task it executes. */
export interface TaskEnv {
  client: Client<typeof WorkerService>;
  stateClient: Client<typeof StateService>;
  jobs: ReadonlyMap<string, RegisteredJob>;
  /** Aborted when the shutdown grace period is over: running handlers are abandoned. */
  abandon: AbortSignal;
  log: Logger;
}

type Ending =
  | { kind: "completed"; result: unknown }
  | { kind: "failed"; error: unknown }
  | { kind: "interrupted" };

/** Executes `task` to its end (the caller holds the concurrency slot meanwhile). */
export async function execute(env: TaskEnv, task: Task): Promise<void> {
  const fields = { runId: task.runId, job: task.job, attempt: task.attempt };
  const deadline = task.leaseDeadline === undefined ? undefined : timestampDate(task.leaseDeadline).getTime() - Date.now();
  const timeoutMs = millisFromDuration(task.leaseTimeout) || (deadline !== undefined && deadline > 0 ? deadline : DEFAULT_LEASE_TIMEOUT_MS);
  const lease = new Lease(task.runId, task.leaseToken, timeoutMs);
  env.log.debug("task received", { ...fields, journaled: task.journal.length });

  const job = env.jobs.get(task.job);
  if (job === undefined) {
    await failRun(env, lease, { message: `this worker has no handler for job ${task.job}`, nonRetryable: false });
    return;
  }
  let payload: unknown;
  try {
    payload = decodeJson(task.payload, "payload");
  } catch (e) {
    await failRun(env, lease, { message: (e as Error).message, type: "PayloadMismatch", nonRetryable: true });
    return;
  }

  const stopHeartbeat = new AbortController();
  const onAbandon = () => lease.interrupt("the worker shut down before the handler finished; the run is redelivered when its lease expires");
  env.abandon.addEventListener("abort", onAbandon, { once: true });
  void heartbeatLoop(env, lease, stopHeartbeat.signal);
  const logger = new RunLogger(env.client, lease);
  try {
    const ctx: JobContext<unknown> = {
      payload,
      step: new Step(env.client, lease, journalOf(task), logger),
      state: State.forRun(env.stateClient, lease),
      log: logger,
      runId: task.runId,
      attempt: task.attempt,
      maxAttempts: task.maxAttempts,
      job: task.job,
      queue: task.queue,
      signal: lease.signal,
      isLastAttempt: task.maxAttempts > 0 && task.attempt >= task.maxAttempts,
    };
    const handled: Promise<Ending> = Promise.resolve()
      .then(() => job.handler(ctx))
      .then(
        (result): Ending => ({ kind: "completed", result }),
        (error: unknown): Ending => ({ kind: "failed", error }),
      );
    const interrupted = new Promise<Ending>((resolve) => {
      if (lease.interrupted) resolve({ kind: "interrupted" });
      lease.signal.addEventListener("abort", () => resolve({ kind: "interrupted" }), { once: true });
    });
    const ending = await Promise.race([handled, interrupted]);
    if (!lease.interrupted) await logger.flush();
    stopHeartbeat.abort();

    if (lease.suspended) {
      env.log.debug("run suspended; slot freed", { ...fields, reason: lease.error().reason });
    } else if (ending.kind === "interrupted" || lease.interrupted) {
      env.log.info("attempt interrupted; not reporting", { ...fields, reason: lease.error().reason });
    } else if (ending.kind === "completed") {
      let result: Uint8Array;
      try {
        result = encodeJson(ending.result, "the run's result");
      } catch (e) {
        await failRun(env, lease, { message: (e as Error).message, type: "ResultRejected", nonRetryable: true });
        return;
      }
      await completeRun(env, lease, result);
    } else if (isInterrupted(ending.error)) {
      env.log.info("attempt interrupted; not reporting", { ...fields, reason: String(ending.error) });
    } else {
      const failure = failureFromError(ending.error);
      env.log.info("handler failed", { ...fields, error: failure.message, nonRetryable: failure.nonRetryable });
      await failRun(env, lease, failure);
    }
  } finally {
    stopHeartbeat.abort();
    env.abandon.removeEventListener("abort", onAbandon);
  }
}

/** Journal kinds recorded by a wait (`SuspendRun`), replayed by `suspend`. */
const WAIT_KINDS: readonly JournalEntryKind[] = [
  JournalEntryKind.SLEEP,
  JournalEntryKind.EVENT,
  JournalEntryKind.CHILD,
  JournalEntryKind.ANY,
  JournalEntryKind.ALL,
];

/**
 * The journal's step and wait (sleep, event, child, any, all) entries by id. State calls (`state:N`) are replayed by
 * the server, which answers a journaled call id with the recorded result.
 */
function journalOf(task: Task): Map<string, Recorded> {
  const journal = new Map<string, Recorded>();
  for (const entry of task.journal) {
    if (WAIT_KINDS.includes(entry.kind)) {
      journal.set(entry.id, { wait: entry.kind, output: entry.outcome.case === "output" ? entry.outcome.value : new Uint8Array() });
      continue;
    }
    if (entry.kind !== JournalEntryKind.STEP) continue;
    switch (entry.outcome.case) {
      case "failure":
        journal.set(entry.id, { failure: failureFromProto(entry.outcome.value) });
        break;
      case "output":
        journal.set(entry.id, { output: entry.outcome.value });
        break;
      default:
        journal.set(entry.id, { output: new Uint8Array() });
    }
  }
  return journal;
}

/** Extends the lease every third of its timeout until stopped; interrupts on cancel or loss. */
async function heartbeatLoop(env: TaskEnv, lease: Lease, stop: AbortSignal): Promise<void> {
  const interval = Math.max(lease.timeoutMs / 3, 100);
  let next = interval;
  for (;;) {
    await sleep(next, stop);
    if (stop.aborted || lease.interrupted) return;
    const sentAt = Date.now();
    try {
      const answer = await env.client.heartbeat(
        { runId: lease.runId, leaseToken: lease.token },
        { timeoutMs: Math.max(interval, 1000), signal: stop },
      );
      lease.extended(sentAt);
      next = interval;
      if (answer.cancelRequested) {
        lease.interrupt("the run was cancelled");
        return;
      }
    } catch (e) {
      if (stop.aborted) return;
      const err = ConnectError.from(e);
      if (isLeaseLost(err.code)) {
        lease.interrupt(lostReason(err));
        return;
      }
      if (Date.now() >= lease.deadline) {
        lease.interrupt(`the lease expired: no heartbeat reached the server in time (${err.rawMessage})`);
        return;
      }
      env.log.warn("heartbeat failed; retrying", { runId: lease.runId, code: Code[err.code], error: err.rawMessage });
      next = Math.max(interval / 2, 100);
    }
  }
}

/** Reports the handler's result. */
async function completeRun(env: TaskEnv, lease: Lease, result: Uint8Array): Promise<void> {
  const outcome = await write(lease, "CompleteRun", (opts) =>
    env.client.completeRun({ runId: lease.runId, leaseToken: lease.token, result }, opts),
  );
  if (outcome.ok) {
    env.log.info("run completed", { runId: lease.runId });
    return;
  }
  if (outcome.kind === "rejected" && (outcome.error.code === Code.InvalidArgument || outcome.error.code === Code.ResourceExhausted)) {
    // The result itself is unacceptable (e.g. over the size limit): retrying would produce it
    // again, so fail the run instead of leaving it to time out.
    await failRun(env, lease, {
      message: `the run's result could not be recorded: ${outcome.error.rawMessage}`,
      type: "ResultRejected",
      nonRetryable: true,
    });
    return;
  }
  logWriteFailure(env, lease, "CompleteRun", outcome);
}

/** Reports a failed attempt. */
async function failRun(env: TaskEnv, lease: Lease, failure: Failure): Promise<void> {
  const outcome = await write(lease, "FailRun", (opts) =>
    env.client.failRun({ runId: lease.runId, leaseToken: lease.token, failure: failureToProto(failure) }, opts),
  );
  if (outcome.ok) {
    env.log.info("attempt failure recorded", { runId: lease.runId, status: statusFromProto(outcome.value.status) });
    return;
  }
  logWriteFailure(env, lease, "FailRun", outcome);
}

function logWriteFailure(env: TaskEnv, lease: Lease, rpc: string, outcome: WriteResult<unknown> & { ok: false }): void {
  const fields = { runId: lease.runId, rpc };
  if (outcome.kind === "interrupted") env.log.info("outcome not recorded", { ...fields, reason: outcome.error.reason });
  else if (outcome.kind === "gave-up") env.log.warn("server unreachable until the lease expired; the run will be redelivered", fields);
  else env.log.error("server rejected the outcome", { ...fields, code: Code[outcome.error.code], error: outcome.error.rawMessage });
}
