/**
 * What a handler receives: {@link JobContext} (the payload, the run's identity, an abort
 * signal) and {@link Step}, which runs memoized steps.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import { CompleteStepRequestSchema, type WorkerService } from "./gen/stackshift/v1/worker_pb.js";
import { failureFromError, fromConnectError, isInterrupted, isNonRetryable, NonRetryableError, StepFailedError } from "./errors.js";
import { decodeJson, encodeJson } from "./json.js";
import { failureToProto, type Failure } from "./run.js";
import { Lease, write } from "./worker/lease.js";

/** A recorded step outcome from the task's journal. */
export type Recorded = { output: Uint8Array } | { failure: Failure };

/**
 * Assigns effective step ids: `id`, `id#2`, `id#3`, ... per execution, and refuses an
 * effective id already handed out in this execution (an explicit `a#2` followed by a second
 * `a`), since the two steps would share one journal entry. The same rule in every SDK.
 */
export class Occurrences {
  private readonly counts = new Map<string, number>();
  private readonly used = new Set<string>();

  /** The effective id for the next use of `id`. Throws {@link NonRetryableError} on a collision. */
  next(id: string): string {
    const count = (this.counts.get(id) ?? 0) + 1;
    this.counts.set(id, count);
    const effective = count === 1 ? id : `${id}#${count}`;
    if (this.used.has(effective)) {
      throw new NonRetryableError(
        `step id ${JSON.stringify(effective)} is used twice in one execution (an explicit id collides with an occurrence suffix); rename the step`,
      );
    }
    this.used.add(effective);
    return effective;
  }
}

/**
 * Runs memoized steps for one attempt.
 *
 * `step.run(id, fn)` first assigns the *effective* step id: the first use of `id` in this
 * execution of the handler is `id`, the second `id#2`, the third `id#3`, and so on. Then:
 * - if the journal holds that id, the recorded output is returned (or the recorded terminal
 *   failure re-thrown as {@link StepFailedError}) and `fn` is **not** called;
 * - otherwise `fn` runs. Its result is recorded on the server, and `step.run` resolves only
 *   once the server acknowledged it (it is durable). The value returned is the result after a
 *   JSON round trip, exactly what a replay returns. If `fn` throws a non-retryable error
 *   ({@link NonRetryableError}, or any error with `nonRetryable: true`), the failure is
 *   recorded as the step's terminal outcome and re-thrown; any other error is re-thrown
 *   unrecorded: the attempt fails, is retried, and the step runs again then.
 *
 * Once the run is cancelled or the lease is lost, `step.run` rejects with
 * `AttemptInterruptedError` without running `fn`; let it propagate.
 */
export class Step {
  private readonly occurrences = new Occurrences();

  /** @internal */
  constructor(
    private readonly client: Client<typeof WorkerService>,
    private readonly lease: Lease,
    private readonly journal: ReadonlyMap<string, Recorded>,
  ) {}

  /**
   * Runs `fn` as the step `id`, or returns its recorded outcome when an earlier attempt
   * completed it.
   *
   * ```ts
   * const payment = await step.run('verify-payment', () => verifyPayment(payload.paymentId))
   * ```
   */
  async run<T>(id: string, fn: () => T | Promise<T>): Promise<Awaited<T>> {
    if (typeof id !== "string" || id === "") throw new NonRetryableError("step id must be a non-empty string");
    const stepId = this.occurrences.next(id);
    const recorded = this.journal.get(stepId);
    if (recorded !== undefined) {
      if ("failure" in recorded) throw new StepFailedError(stepId, recorded.failure);
      return decodeJson(recorded.output, `the recorded output of step ${stepId}`) as Awaited<T>;
    }
    if (this.lease.interrupted) throw this.lease.error();
    const startedAt = new Date();
    let value: Awaited<T>;
    try {
      value = await fn();
    } catch (err) {
      if (isNonRetryable(err) && !isInterrupted(err)) {
        const failure: Failure = { ...failureFromError(err), nonRetryable: true };
        await this.record(stepId, { failure }, startedAt);
      }
      throw err;
    }
    let output: Uint8Array;
    try {
      output = encodeJson(value, `the output of step ${stepId}`);
    } catch (e) {
      throw new NonRetryableError((e as Error).message, { cause: e });
    }
    await this.record(stepId, { output }, startedAt);
    return decodeJson(output) as Awaited<T>;
  }

  /** Sends `CompleteStep` and waits for the acknowledgement. */
  private async record(stepId: string, outcome: Recorded, startedAt: Date): Promise<void> {
    const lease = this.lease;
    const request = create(CompleteStepRequestSchema, {
      runId: lease.runId,
      leaseToken: lease.token,
      stepId,
      outcome: "output" in outcome ? { case: "output", value: outcome.output } : { case: "failure", value: failureToProto(outcome.failure) },
      startedAt: timestampFromDate(startedAt),
    });
    const result = await write(lease, "CompleteStep", (opts) => this.client.completeStep(request, opts));
    if (result.ok) return;
    switch (result.kind) {
      case "interrupted":
        throw result.error;
      case "gave-up":
        // The server redelivers the run once the lease expires: stop quietly.
        lease.interrupt(`the server stayed unreachable until the lease expired (${result.error.rawMessage})`);
        throw lease.error();
      case "rejected": {
        const error = fromConnectError(result.error);
        const permanent = [Code.InvalidArgument, Code.ResourceExhausted, Code.OutOfRange].includes(result.error.code);
        if (permanent) throw new NonRetryableError(`could not record step ${stepId}: ${error.message}`, { cause: error });
        throw new Error(`could not record step ${stepId}: ${error.message}`, { cause: error });
      }
    }
  }
}

/** The context a handler is called with. */
export interface JobContext<P = unknown> {
  /** The run's payload (decoded JSON). */
  payload: P;
  /** Runs memoized steps. */
  step: Step;
  /** The run's id. */
  runId: string;
  /** This attempt's number, from 1. */
  attempt: number;
  /** Attempts allowed in total. */
  maxAttempts: number;
  /** The job's name. */
  job: string;
  /** The queue the run came from. */
  queue: string;
  /** Aborted when the attempt is interrupted (cancelled, lease lost, worker abandoning). */
  signal: AbortSignal;
  /** True when a failure of this attempt will not be retried. */
  isLastAttempt: boolean;
}

/** A job handler: returns the run's result (any JSON-serializable value). */
export type Handler<P = unknown> = (ctx: JobContext<P>) => unknown;
