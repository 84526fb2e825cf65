/**
 * Child runs: the types of `step.invoke`, `step.invokeAll` and `step.invokeChild`
 * ({@link ChildRun}, {@link ChildOutcome}, {@link ChildFailedError}) and the decoding of the
 * journal entry the server records when every child of a wait is final. See docs/children.md.
 *
 * ```ts
 * const url = await step.invoke<string>('thumbnail', 'resize-image', { image: 'cat.png', width: 128 })
 * const outcomes = await step.invokeAll('chunks', chunks.map((chunk) => ({ job: 'process-chunk', payload: { chunk } })))
 * const total = outcomes.reduce((sum, o) => sum + childResult<number>(o), 0) // a failed chunk throws ChildFailedError
 * ```
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { ChildRunSpecSchema, type ChildRunSpec } from "./gen/stackshift/v1/worker_pb.js";
import { durationFromMillis, toMillis, type DurationInput } from "./duration.js";
import { NonRetryableError } from "./errors.js";
import { encodeJson } from "./json.js";
import { retryPolicyToProto } from "./queues.js";
import type { Failure, RetryPolicy } from "./run.js";

/** The most children one wait may start. */
export const MAX_CHILDREN = 1_000;

/** One child run to start with `step.invokeAll` or `step.invokeChild`. */
export interface ChildRun<P = unknown> {
  /** The child's job. */
  job: string;
  /** Its payload (any JSON value; default `null`). */
  payload?: P;
  /** Its queue (default: the parent's queue). */
  queueName?: string;
  /** Its lease timeout: ms or `'30s'`-style (1 s to 1 h). */
  leaseTimeout?: DurationInput;
  /** Its delivery priority within its queue, -1000 to 1000 (default 0). */
  priority?: number;
  /** Its concurrency key. */
  concurrencyKey?: string;
  /** Retry policy overrides (default: the queue's). */
  retryPolicy?: RetryPolicy;
}

/** How a child run ended. */
export type ChildStatus = "completed" | "failed" | "cancelled";

/** The recorded outcome of one child run. */
export interface ChildOutcome<R = unknown> {
  /** The child's run id. */
  runId: string;
  /** The child's job. */
  job: string;
  /** How it ended. */
  status: ChildStatus;
  /** Its result, when completed (decoded JSON). */
  result?: R;
  /** Its failure (or the cancellation reason), when failed or cancelled. */
  failure?: Failure;
}

/**
 * A child run started by `step.invoke` failed or was cancelled: `step.invoke` rejects with it
 * instead of returning the child's result. It is non-retryable: letting it propagate out of
 * the handler fails the parent without retries (the child's outcome is journaled, so a retry
 * would see the same failure). To try again, invoke with a new id, or catch it and handle it.
 *
 * ```ts
 * try {
 *   await step.invoke('charge', 'charge-card', { orderId })
 * } catch (e) {
 *   if (!(e instanceof ChildFailedError)) throw e
 *   await step.run('notify', () => notifyFailure(orderId, e.failure.message))
 * }
 * ```
 */
export class ChildFailedError extends Error {
  override name = "ChildFailedError";
  /** Always true: propagating it fails the parent without retries. */
  readonly nonRetryable = true;
  /** The child's run id. */
  readonly runId: string;
  /** The child's job. */
  readonly job: string;
  /** `failed` or `cancelled`. */
  readonly status: Exclude<ChildStatus, "completed">;
  /** The child's failure, or the cancellation reason. */
  readonly failure: Failure;

  constructor(runId: string, job: string, status: Exclude<ChildStatus, "completed">, failure: Failure) {
    super(`child run ${runId} (${job}) ${status === "cancelled" ? "was cancelled" : "failed"}: ${failure.message}`);
    this.runId = runId;
    this.job = job;
    this.status = status;
    this.failure = failure;
  }
}

/** The child's result, or throws {@link ChildFailedError} when it failed or was cancelled. */
export function childResult<R = unknown>(outcome: ChildOutcome<unknown>): R {
  if (outcome.status === "completed") return (outcome.result ?? null) as R;
  throw new ChildFailedError(outcome.runId, outcome.job, outcome.status, outcome.failure ?? { message: "", nonRetryable: false });
}

/** A {@link ChildRun} on the wire; a bad option is a non-retryable error naming the child. */
export function childToProto(child: ChildRun, what: string): ChildRunSpec {
  if (typeof child !== "object" || child === null || typeof child.job !== "string") {
    throw new NonRetryableError(`${what}: a child run needs a job name`);
  }
  try {
    const spec = create(ChildRunSpecSchema, {
      job: child.job,
      payload: encodeJson(child.payload ?? null, `${what}: the child's payload`),
      queue: child.queueName ?? "",
      priority: child.priority ?? 0,
      concurrencyKey: child.concurrencyKey ?? "",
    });
    if (child.priority !== undefined && !Number.isInteger(child.priority)) {
      throw new Error(`priority must be an integer from -1000 to 1000, got ${child.priority}`);
    }
    if (child.leaseTimeout !== undefined) spec.leaseTimeout = durationFromMillis(toMillis(child.leaseTimeout, "leaseTimeout"));
    if (child.retryPolicy !== undefined) spec.retryPolicy = retryPolicyToProto(child.retryPolicy);
    return spec;
  } catch (e) {
    throw new NonRetryableError(`${what}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The outcomes a child wait journaled:
 * `{"children":[{"runId","job","status","result"?,"failure"?:{"message","errorType","nonRetryable"}}]}`.
 */
export function outcomesFromJournal(output: unknown): ChildOutcome[] {
  const children = (output as { children?: unknown } | null)?.children;
  if (!Array.isArray(children)) throw new Error("the journaled child wait has no children list");
  return children.map((raw: unknown, i) => {
    if (typeof raw !== "object" || raw === null) throw new Error(`child ${i} is not an object`);
    const c = raw as Record<string, unknown>;
    const status = c["status"];
    if (status !== "completed" && status !== "failed" && status !== "cancelled") throw new Error(`unknown child status ${JSON.stringify(status)}`);
    const outcome: ChildOutcome = { runId: String(c["runId"] ?? ""), job: String(c["job"] ?? ""), status };
    if (status === "completed") outcome.result = c["result"] ?? null;
    const f = c["failure"];
    if (typeof f === "object" && f !== null) {
      const rf = f as Record<string, unknown>;
      const failure: Failure = { message: String(rf["message"] ?? ""), nonRetryable: rf["nonRetryable"] === true };
      if (typeof rf["errorType"] === "string" && rf["errorType"] !== "") failure.type = rf["errorType"];
      outcome.failure = failure;
    }
    return outcome;
  });
}
