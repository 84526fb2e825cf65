/**
 * What a handler receives: {@link JobContext} (the payload, the run's identity, an abort
 * signal, the run's `state` and `log`) and {@link Step}, which runs memoized steps, durable
 * sleeps, event waits, child runs (`invoke`, `invokeAll`, `invokeChild`) and combined waits
 * (`waitForAny`, `waitForAll`).
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import { CompleteStepRequestSchema, type WorkerService } from "./gen/stackshift/v1/worker_pb.js";
import { JournalEntryKind } from "./gen/stackshift/v1/common_pb.js";
import type { State } from "./state.js";
import { currentStep, type RunLogger } from "./worker/runlog.js";
import { kindName, suspend, type WaitForEventOptions } from "./worker/suspend.js";
import { eventFromJournal, type Event } from "./events.js";
import { childResult, childToProto, MAX_CHILDREN, outcomesFromJournal, type ChildOutcome, type ChildRun } from "./children.js";
import { allFromJournal, anyFromJournal, combinedToProto, type AllResult, type AnyResult, type CombinedWaitOptions, type WaitItem } from "./waits.js";
import { toMillis, type DurationInput } from "./duration.js";
import { failureFromError, fromConnectError, isInterrupted, isNonRetryable, NonRetryableError, StepFailedError } from "./errors.js";
import { decodeJson, encodeJson } from "./json.js";
import { failureToProto, type Failure } from "./run.js";
import { Lease, write } from "./worker/lease.js";

/** The largest `retries` a step accepts. */
export const MAX_STEP_RETRIES = 100;
/** The default delay before a step's first in-place retry, in ms. */
export const DEFAULT_STEP_RETRY_DELAY_MS = 200;
/** The longest delay between two tries of a step, in ms. */
export const MAX_STEP_RETRY_DELAY_MS = 5_000;

/**
 * Options of {@link Step.run}: the step's in-place retry policy. A retryable error from the
 * body runs it again within the same attempt, up to `retries` more times, waiting
 * `retryDelay` (doubled each try, capped at 5 s) in between.
 */
export interface StepOptions {
  /** Extra tries of the body after a retryable error, 0 to 100 (default 0). */
  retries?: number;
  /** The wait before the first retry: ms or `'500ms'`-style (default 200 ms). */
  retryDelay?: DurationInput;
}

/** Validates {@link StepOptions}; a bad value is a non-retryable error. */
function stepRetryPolicy(options: StepOptions | undefined): { retries: number; retryDelayMs: number } {
  const retries = options?.retries ?? 0;
  if (!Number.isInteger(retries) || retries < 0 || retries > MAX_STEP_RETRIES) {
    throw new NonRetryableError(`step retries must be an integer between 0 and ${MAX_STEP_RETRIES}, got ${String(retries)}`);
  }
  let retryDelayMs = DEFAULT_STEP_RETRY_DELAY_MS;
  if (options?.retryDelay !== undefined) {
    try {
      retryDelayMs = toMillis(options.retryDelay, "retryDelay");
    } catch (e) {
      throw new NonRetryableError(`invalid step retry delay: ${(e as Error).message}`, { cause: e });
    }
  }
  return { retries, retryDelayMs };
}

/** The wait after failed try `k` (from 1): `base * 2^(k-1)`, capped at 5 s. */
export function stepRetryDelayMs(baseMs: number, k: number): number {
  return Math.min(baseMs * 2 ** Math.min(k - 1, 30), MAX_STEP_RETRY_DELAY_MS);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function interruptibleDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** A recorded outcome from the task's journal: a step's output or failure, or a wait's result. */
export type Recorded = { output: Uint8Array } | { failure: Failure } | { wait: JournalEntryKind; output: Uint8Array };

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
 * Runs memoized steps, durable sleeps ({@link Step.sleep}) and event waits
 * ({@link Step.waitForEvent}) for one attempt.
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
 * With `step.run(id, fn, { retries: 3, retryDelay: '500ms' })` a retryable error from `fn`
 * runs it again in place (same attempt) up to 3 more times, waiting 500 ms, 1 s, 2 s
 * (doubling, capped at 5 s) in between; each failed try logs a `warn` line
 * `step ID failed (try K of N): MESSAGE; retrying in Dms`. Non-retryable errors are not
 * retried, cancellation ends the wait at once, and once the last try fails the error is
 * handled exactly as without retries.
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
    private readonly logger?: RunLogger,
  ) {}

  /** Validates `id` and assigns its effective id (shared by steps, sleeps and waits). */
  private effectiveId(id: string): string {
    if (typeof id !== "string" || id === "") throw new NonRetryableError("step id must be a non-empty string");
    if (id.startsWith("state:")) throw new NonRetryableError(`step id ${JSON.stringify(id)} is reserved: ids starting with 'state:' name state calls`);
    return this.occurrences.next(id);
  }

  /**
   * Sleeps durably for `duration` (ms or `'1h30m'`-style; at most 365 days), counted from when
   * the server receives the call.
   *
   * The run turns `waiting` and holds no worker slot while it sleeps; it survives worker and
   * server restarts and is delivered again when the sleep ends (the same attempt, so sleeping
   * never uses up retries). In that execution, and in every later replay, this call returns
   * at once. The id follows the occurrence-suffix rules of {@link Step.run} and shares its
   * id space. When the run suspends, this rejects with `AttemptInterruptedError`: let it
   * propagate (the worker stops the handler without reporting anything).
   *
   * ```ts
   * await step.sleep('cool-down', '10m')
   * ```
   */
  async sleep(id: string, duration: DurationInput): Promise<void> {
    const stepId = this.effectiveId(id);
    let ms: number;
    try {
      ms = toMillis(duration, "duration");
    } catch (e) {
      throw new NonRetryableError(`step.sleep(${JSON.stringify(id)}): ${(e as Error).message}`, { cause: e });
    }
    await suspend(this.waitEnv(), stepId, JournalEntryKind.SLEEP, { case: "sleep", value: { ms } }, "sleeping");
  }

  /** Sleeps durably until `time` (at most 365 days ahead; a past time returns at once). Otherwise like {@link Step.sleep}. */
  async sleepUntil(id: string, time: Date): Promise<void> {
    const stepId = this.effectiveId(id);
    if (!(time instanceof Date) || Number.isNaN(time.getTime())) throw new NonRetryableError(`step.sleepUntil(${JSON.stringify(id)}): time must be a valid Date`);
    await suspend(this.waitEnv(), stepId, JournalEntryKind.SLEEP, { case: "sleep", value: { until: time } }, "sleeping");
  }

  /**
   * Waits for the event `options.event` with exactly the correlation key `options.key` (default
   * none: only events published without a key), for at most `options.timeout` (ms or `'24h'`;
   * 0 to 365 days). Resolves to the {@link Event}, or to `null` once the timeout passed.
   *
   * The run's inbox decides: the first matching event published **after the run was created**
   * that this run has not received yet matches, even when it was published before the handler
   * reached this call (a webhook that lands early is never lost). While no event is there, the
   * run turns `waiting` and holds no worker slot. Ids, replay and interruption behave as for
   * {@link Step.sleep}.
   *
   * ```ts
   * const payment = await step.waitForEvent<{ amount: number }>('wait-for-payment', {
   *   event: 'payment.confirmed', key: payload.paymentId, timeout: '1h',
   * })
   * if (payment === null) throw new NonRetryableError('payment not confirmed within an hour')
   * ```
   */
  async waitForEvent<T = unknown>(id: string, options: WaitForEventOptions): Promise<Event<T> | null> {
    const stepId = this.effectiveId(id);
    let timeoutMs: number;
    try {
      if (typeof options?.event !== "string" || options.event === "") throw new Error("options.event (the event name) is required");
      if (options.timeout === undefined) throw new Error("options.timeout is required");
      timeoutMs = toMillis(options.timeout, "timeout");
    } catch (e) {
      throw new NonRetryableError(`step.waitForEvent(${JSON.stringify(id)}): ${(e as Error).message}`, { cause: e });
    }
    const output = await suspend(
      this.waitEnv(),
      stepId,
      JournalEntryKind.EVENT,
      { case: "event", value: { name: options.event, key: options.key ?? "", timeoutMs } },
      `waiting for event ${options.event}`,
    );
    try {
      return eventFromJournal(decodeJson(output, `the recorded result of wait ${stepId}`)) as Event<T> | null;
    } catch (e) {
      throw new NonRetryableError(`the recorded result of wait ${stepId}: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Starts a child run of `job` with `payload` on the parent's queue and waits durably for its
   * result. Rejects with {@link ChildFailedError} when the child failed or was cancelled
   * (non-retryable: letting it propagate fails the parent without retries).
   *
   * The child is started once per run and id: a replay finds the same child. While the child
   * runs, the parent is `waiting` and holds no worker slot, so a worker with a single slot can
   * run both. Cancelling the parent cancels the child. Ids, replay and interruption behave as
   * for {@link Step.sleep}.
   *
   * ```ts
   * const url = await step.invoke<string>('thumbnail', 'resize-image', { image: 'cat.png', width: 128 })
   * ```
   */
  async invoke<R = unknown, P = unknown>(id: string, job: string, payload: P): Promise<R> {
    return childResult(await this.invokeChild<R>(id, { job, payload }));
  }

  /**
   * Like {@link Step.invoke} with the child's options (queue, priority, lease timeout,
   * concurrency key, retry policy), returning its raw {@link ChildOutcome}: a failed child is
   * an outcome here, not an error (use `childResult(outcome)` to get the value or the error).
   */
  async invokeChild<R = unknown>(id: string, child: ChildRun): Promise<ChildOutcome<R>> {
    const outcomes = await this.invokeAll<R>(id, [child]);
    const outcome = outcomes[0];
    if (outcome === undefined) throw new NonRetryableError(`the recorded child wait ${id} has no child`);
    return outcome;
  }

  /**
   * Fan-out: starts every child (1 to 1,000) and waits durably until all of them are final.
   * Resolves to their outcomes in the order given; a failed or cancelled child is an outcome
   * (`status: 'failed'`), not an error.
   *
   * ```ts
   * const outcomes = await step.invokeAll('chunks', chunks.map((chunk) => ({ job: 'process-chunk', payload: { chunk } })))
   * const total = outcomes.reduce((sum, o) => sum + childResult<number>(o), 0)
   * ```
   */
  async invokeAll<R = unknown>(id: string, children: ChildRun[]): Promise<ChildOutcome<R>[]> {
    const stepId = this.effectiveId(id);
    const what = `step.invokeAll(${JSON.stringify(id)})`;
    if (!Array.isArray(children) || children.length === 0) throw new NonRetryableError(`${what} needs at least one child run`);
    if (children.length > MAX_CHILDREN) throw new NonRetryableError(`${what} takes at most ${MAX_CHILDREN} child runs, got ${children.length}`);
    const specs = children.map((c, i) => childToProto(c, `${what}: child ${i}`));
    const output = await suspend(this.waitEnv(), stepId, JournalEntryKind.CHILD, { case: "child", value: specs }, "waiting for child runs");
    return this.decodeWait(stepId, output, outcomesFromJournal) as ChildOutcome<R>[];
  }

  /**
   * Waits durably until the **first** of `items` resolves (events and sleeps), or until
   * `options.timeout` (for the whole wait; optional only when a sleep item bounds it) passes.
   * When several items can resolve at once, the lowest index wins; event items of other
   * indexes do not consume their events. While nothing resolved, the run is `waiting` and
   * holds no worker slot. Ids, replay and interruption behave as for {@link Step.sleep}.
   *
   * ```ts
   * const got = await step.waitForAny('approval', [{ event: 'order.approved', key: orderId }, { sleep: '1d' }])
   * if (!got.timedOut && got.result.kind === 'event') console.log('approved', got.result.event.payload)
   * ```
   */
  async waitForAny<T = unknown>(id: string, items: WaitItem[], options: CombinedWaitOptions = {}): Promise<AnyResult<T>> {
    const stepId = this.effectiveId(id);
    const value = combinedToProto(`step.waitForAny(${JSON.stringify(id)})`, items, options);
    const output = await suspend(this.waitEnv(), stepId, JournalEntryKind.ANY, { case: "any", value }, "waiting for any of several items");
    return this.decodeWait(stepId, output, anyFromJournal) as AnyResult<T>;
  }

  /**
   * Waits durably until **every** one of `items` resolved, or until `options.timeout` (for
   * the whole wait; required unless every item is a sleep) passes: then `timedOut` is true
   * and unresolved items are `null`. Two items for the same event name and key take two
   * successive events. Otherwise like {@link Step.waitForAny}.
   *
   * ```ts
   * const all = await step.waitForAll('signatures', [
   *   { event: 'contract.signed', key: buyerId }, { event: 'contract.signed', key: sellerId },
   * ], { timeout: '7d' })
   * if (all.timedOut) throw new NonRetryableError('not signed by both within a week')
   * ```
   */
  async waitForAll<T = unknown>(id: string, items: WaitItem[], options: CombinedWaitOptions = {}): Promise<AllResult<T>> {
    const stepId = this.effectiveId(id);
    const value = combinedToProto(`step.waitForAll(${JSON.stringify(id)})`, items, options);
    const output = await suspend(this.waitEnv(), stepId, JournalEntryKind.ALL, { case: "all", value }, "waiting for all of several items");
    return this.decodeWait(stepId, output, allFromJournal) as AllResult<T>;
  }

  /** Decodes a wait's journaled output; an undecodable one is a non-retryable error. */
  private decodeWait<T>(stepId: string, output: Uint8Array, decode: (v: unknown) => T): T {
    try {
      return decode(decodeJson(output, `the recorded result of wait ${stepId}`));
    } catch (e) {
      throw new NonRetryableError(`the recorded result of wait ${stepId}: ${(e as Error).message}`, { cause: e });
    }
  }

  private waitEnv() {
    return { client: this.client, lease: this.lease, journal: this.journal, ...(this.logger ? { logger: this.logger } : {}) };
  }

  /**
   * Runs `fn` as the step `id`, or returns its recorded outcome when an earlier attempt
   * completed it.
   *
   * ```ts
   * const payment = await step.run('verify-payment', () => verifyPayment(payload.paymentId))
   * const rate = await step.run('fetch-rate', () => fetchRate(), { retries: 3, retryDelay: '500ms' })
   * ```
   */
  async run<T>(id: string, fn: () => T | Promise<T>, options?: StepOptions): Promise<Awaited<T>> {
    const { retries, retryDelayMs } = stepRetryPolicy(options);
    const stepId = this.effectiveId(id);
    const recorded = this.journal.get(stepId);
    if (recorded !== undefined) {
      if ("wait" in recorded) {
        throw new NonRetryableError(
          `step id ${stepId} is recorded as a ${kindName(recorded.wait)} in this run's journal, not as a step: the handler no longer calls its steps in the recorded order`,
        );
      }
      if ("failure" in recorded) throw new StepFailedError(stepId, recorded.failure);
      return decodeJson(recorded.output, `the recorded output of step ${stepId}`) as Awaited<T>;
    }
    if (this.lease.interrupted) throw this.lease.error();
    const startedAt = new Date();
    let value: Awaited<T>;
    for (let attemptTry = 1; ; attemptTry++) {
      try {
        value = await currentStep.run(stepId, fn);
        break;
      } catch (err) {
        if (attemptTry <= retries && !isNonRetryable(err) && !isInterrupted(err) && !this.lease.interrupted) {
          const delay = stepRetryDelayMs(retryDelayMs, attemptTry);
          const message = err instanceof Error ? err.message : String(err);
          currentStep.run(stepId, () =>
            this.logger?.warn(`step ${stepId} failed (try ${attemptTry} of ${retries + 1}): ${message}; retrying in ${delay}ms`),
          );
          await interruptibleDelay(delay, this.lease.signal);
          if (this.lease.interrupted) throw this.lease.error();
          continue;
        }
        if (isNonRetryable(err) && !isInterrupted(err)) {
          const failure: Failure = { ...failureFromError(err), nonRetryable: true };
          await this.record(stepId, { failure }, startedAt);
        }
        throw err;
      }
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
  /** Runs memoized steps, durable sleeps and event waits. */
  step: Step;
  /**
   * The state store, journaled in this run: each call is recorded like a step (ids `state:1`,
   * `state:2`, ... by call order), so a retried attempt gets the recorded results back and an
   * increment is applied once.
   */
  state: State;
  /** The run's logger: lines are tied to the run, this attempt and the executing step. */
  log: RunLogger;
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
