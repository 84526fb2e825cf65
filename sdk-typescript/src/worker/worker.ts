/**
 * The worker: creates the event triggers its jobs declare, then long-polls the server for
 * tasks of its registered jobs on its queues, never holding more tasks than it has
 * concurrency slots, runs each handler (replaying recorded steps), heartbeats every third of
 * the lease, and reports outcomes. Shutdown is graceful:
 * polling stops, in-flight handlers get the grace period to finish, and whatever still runs
 * after it is abandoned (the server redelivers those runs when their leases expire).
 *
 * @module
 */

import { ConnectError, Code, type Client } from "@connectrpc/connect";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { WorkerService } from "../gen/stackshift/v1/worker_pb.js";
import type { StateService } from "../gen/stackshift/v1/state_pb.js";
import { durationFromMillis, toMillis, type DurationInput } from "../duration.js";
import { Backoff, sleep } from "./backoff.js";
import { execute, type RegisteredJob, type TaskEnv } from "./task.js";
import { defaultLogger, type Logger } from "./log.js";
import { fromConnectError } from "../errors.js";
import { TriggerDeclarationError, type Triggers } from "../triggers.js";

/** Default number of concurrency slots. */
export const DEFAULT_CONCURRENCY = 10;
/** Default grace period for in-flight handlers at shutdown, in ms. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;
/** Default long-poll wait of one `PollTask` call, in ms. */
export const DEFAULT_POLL_WAIT_MS = 30_000;
/** The most tasks one poll may ask for (the server's limit). */
const MAX_TASKS_PER_POLL = 100;
/** Extra time on top of the poll's wait before the client gives up on the call. */
const POLL_SLACK_MS = 10_000;
/** How long abandoned handlers get after the grace period. */
const ABANDON_WAIT_MS = 2_000;

/** How a worker runs. */
export interface WorkerOptions {
  /** Queues to take tasks from (default `['default']`). */
  queues?: string[];
  /** Handlers that may run at once (default 10). The worker never holds more tasks. */
  concurrency?: number;
  /** Id recorded on attempts (default `<hostname>-<pid>-<random>`). */
  workerId?: string;
  /** How long in-flight handlers may run after shutdown begins (default `'30s'`). */
  shutdownGrace?: DurationInput;
  /** How long one poll waits on the server (default `'30s'`, 1 s to 60 s). */
  pollWait?: DurationInput;
  /** Where to log (default: stderr, warnings and errors; see `STACKSHIFT_LOG`). */
  logger?: Logger;
}

/** A worker. Created by `stackshift.worker()` / `stackshift.work()`. */
export class Worker {
  /** The id this worker reports. */
  readonly workerId: string;
  private readonly queues: string[];
  private readonly concurrency: number;
  private readonly graceMs: number;
  private readonly pollWaitMs: number;
  private readonly log: Logger;
  private readonly stopPolling = new AbortController();
  private readonly abandon = new AbortController();
  private inFlight = 0;
  private slotFreed: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private settleReady!: (error?: unknown) => void;
  private failFast = false;
  /**
   * Resolves once the worker is ready: the jobs' declared triggers exist (created when it
   * starts, retried while the server is unreachable) and it polls. Rejects with
   * {@link TriggerDeclarationError} when the server refuses a declared trigger (and, for a
   * worker from `stackshift.startWorker`, with `UnavailableError` when the server cannot be
   * reached); the worker then stops without polling. Also resolves when the worker is shut
   * down before that.
   */
  readonly ready: Promise<void>;

  /** @internal use `stackshift.worker()` */
  constructor(
    private readonly client: Client<typeof WorkerService>,
    private readonly stateClient: Client<typeof StateService>,
    private readonly triggers: Triggers,
    private readonly jobs: ReadonlyMap<string, RegisteredJob>,
    options: WorkerOptions = {},
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleReady = (error?: unknown) => (error === undefined ? resolve() : reject(error));
    });
    // A rejection nobody awaits is logged by the worker, not an unhandled rejection.
    this.ready.catch(() => {});
    this.queues = options.queues && options.queues.length > 0 ? [...options.queues] : ["default"];
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? DEFAULT_CONCURRENCY));
    this.workerId = options.workerId ?? defaultWorkerId();
    this.graceMs = toMillis(options.shutdownGrace ?? DEFAULT_SHUTDOWN_GRACE_MS, "shutdownGrace");
    this.pollWaitMs = Math.min(Math.max(toMillis(options.pollWait ?? DEFAULT_POLL_WAIT_MS, "pollWait"), 1_000), 60_000);
    this.log = options.logger ?? defaultLogger();
  }

  /** Starts polling in the background; returns `this`. Calling it twice is a no-op. */
  start(): this {
    this.loop ??= this.pollLoop();
    return this;
  }

  /**
   * @internal for `stackshift.startWorker`: like `start`, but an unreachable server while
   * creating the declared triggers rejects `ready` (and stops the worker) instead of retrying.
   */
  startFailFast(): this {
    if (this.loop === undefined) this.failFast = true;
    return this.start();
  }

  /** True while the worker polls (after `start`, before `shutdown` completes). */
  get running(): boolean {
    return this.loop !== undefined && !this.stopPolling.signal.aborted;
  }

  /** Handlers currently running. */
  get activeTasks(): number {
    return this.inFlight;
  }

  /**
   * Stops polling, lets in-flight handlers finish within the grace period, abandons the rest
   * (they are redelivered when their leases expire), and resolves once the worker stopped.
   */
  async shutdown(): Promise<void> {
    this.stopPolling.abort();
    await this.loop;
  }

  /**
   * Runs the worker until `until` resolves or aborts (default: SIGINT or SIGTERM), then shuts
   * it down gracefully. Rejects with {@link TriggerDeclarationError} when the server refuses
   * a declared trigger.
   */
  async runUntil(until?: Promise<unknown> | AbortSignal): Promise<void> {
    this.start();
    const done = new AbortController();
    let waitUntil: Promise<unknown>;
    if (until === undefined) {
      waitUntil = new Promise<void>((resolve) => {
        const stop = () => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          resolve();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        done.signal.addEventListener("abort", stop, { once: true });
      });
    } else if (until instanceof AbortSignal) {
      waitUntil = sleep(2 ** 31 - 1, until);
    } else {
      waitUntil = until;
    }
    // Never resolves once ready; rejects when a declared trigger is refused.
    const failed = this.ready.then(() => new Promise<never>(() => {}));
    try {
      await Promise.race([waitUntil, failed]);
    } finally {
      done.abort();
      await this.shutdown();
    }
  }

  /**
   * Creates the jobs' declared triggers (idempotent `CreateEventTrigger`), retrying while the
   * server is unreachable. Returns false when the worker must not poll (a declaration was
   * refused, or the worker was shut down meanwhile).
   */
  private async declareTriggers(stop: AbortSignal): Promise<boolean> {
    const backoff = new Backoff();
    for (const [job, registered] of this.jobs) {
      for (const declared of registered.triggers ?? []) {
        const options = { ...declared, job, queueName: declared.queueName ?? this.queues[0] ?? "default" };
        for (;;) {
          if (stop.aborted) return false;
          try {
            const { trigger, created } = await this.triggers.create(options);
            this.log.info(created ? "declared trigger created" : "declared trigger already exists", { job, event: declared.event, triggerId: trigger.id });
            backoff.reset();
            break;
          } catch (e) {
            const typed = fromConnectError(e);
            if ((typed.code === "UNAVAILABLE" || typed.code === "DEADLINE_EXCEEDED") && this.failFast) {
              this.log.error("worker not started: the server is unreachable", { job, event: declared.event, code: typed.code, error: typed.message });
              this.settleReady(typed);
              return false;
            }
            if (typed.code === "UNAVAILABLE" || typed.code === "DEADLINE_EXCEEDED") {
              const delay = backoff.next();
              this.log.warn("cannot reach the server to create a declared trigger; retrying", { job, event: declared.event, retryInMs: Math.round(delay) });
              await sleep(delay, stop);
              continue;
            }
            const error = new TriggerDeclarationError(job, declared.event, declared.key ?? "", options.queueName, typed);
            this.log.error("worker not started: a declared trigger was refused", { job, event: declared.event, code: typed.code, error: typed.message });
            this.settleReady(error);
            return false;
          }
        }
      }
    }
    return true;
  }

  private async pollLoop(): Promise<void> {
    const jobs = [...this.jobs].map(([name, job]) => ({
      name,
      ...(job.leaseTimeoutMs === undefined ? {} : { leaseTimeout: durationFromMillis(job.leaseTimeoutMs) }),
    }));
    if (jobs.length === 0) {
      this.log.error("worker has no jobs registered; it will not poll");
      this.settleReady();
      return;
    }
    const env: TaskEnv = { client: this.client, stateClient: this.stateClient, jobs: this.jobs, abandon: this.abandon.signal, log: this.log };
    const stop = this.stopPolling.signal;
    if (!(await this.declareTriggers(stop))) {
      this.settleReady();
      this.stopPolling.abort();
      return;
    }
    this.log.info("worker started", { workerId: this.workerId, queues: this.queues, jobs: jobs.map((j) => j.name), concurrency: this.concurrency });
    this.settleReady();
    const backoff = new Backoff();
    while (!stop.aborted) {
      await this.freeSlot(stop);
      if (stop.aborted) break;
      const free = Math.min(this.concurrency - this.inFlight, MAX_TASKS_PER_POLL);
      const started = Date.now();
      let delay: number | undefined;
      try {
        const answer = await this.client.pollTask(
          { workerId: this.workerId, queues: this.queues, jobs, maxTasks: free, wait: durationFromMillis(this.pollWaitMs) },
          { timeoutMs: this.pollWaitMs + POLL_SLACK_MS, signal: stop },
        );
        backoff.reset();
        if (answer.tasks.length > free) this.log.error("server sent more tasks than asked for; dropping the extra ones", { asked: free, got: answer.tasks.length });
        for (const task of answer.tasks.slice(0, free)) {
          this.inFlight++;
          void execute(env, task)
            .catch((e: unknown) => this.log.error("task execution failed unexpectedly", { runId: task.runId, error: String(e) }))
            .finally(() => {
              this.inFlight--;
              this.slotFreed?.();
            });
        }
        // An empty answer long before the wait passed must not become a busy loop.
        if (answer.tasks.length === 0 && Date.now() - started < this.pollWaitMs / 2) delay = 50 + Math.random() * 100;
      } catch (e) {
        if (stop.aborted) break;
        const err = ConnectError.from(e);
        delay = backoff.next();
        const fields = { code: Code[err.code], error: err.rawMessage, retryInMs: Math.round(delay) };
        if (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied) {
          this.log.error("server refused the worker's credentials; check STACKSHIFT_API_KEY", fields);
        } else if (err.code === Code.InvalidArgument || err.code === Code.Unimplemented || err.code === Code.Internal) {
          this.log.error("poll failed", fields);
        } else {
          this.log.warn("cannot reach the server; reconnecting", fields);
        }
      }
      if (delay !== undefined) await sleep(delay, stop);
    }
    await this.drain();
  }

  /** Resolves once at least one slot is free (or `stop` aborts). */
  private async freeSlot(stop: AbortSignal): Promise<void> {
    while (this.inFlight >= this.concurrency && !stop.aborted) {
      let onStop: () => void = () => {};
      await new Promise<void>((resolve) => {
        this.slotFreed = resolve;
        onStop = () => resolve();
        stop.addEventListener("abort", onStop, { once: true });
      });
      // One listener per wait would pile up on a busy worker with few slots.
      stop.removeEventListener("abort", onStop);
      this.slotFreed = undefined;
    }
  }

  /** Waits up to the grace period for in-flight tasks, then abandons the rest. */
  private async drain(): Promise<void> {
    const waitIdle = async (ms: number) => {
      const until = Date.now() + ms;
      while (this.inFlight > 0 && Date.now() < until) await sleep(Math.min(50, until - Date.now()));
    };
    if (this.inFlight > 0) this.log.info("worker stopping; waiting for running handlers", { inFlight: this.inFlight, graceMs: this.graceMs });
    await waitIdle(this.graceMs);
    if (this.inFlight > 0) {
      this.log.warn("shutdown grace period over; abandoning running handlers", { abandoned: this.inFlight });
      this.abandon.abort();
      await waitIdle(ABANDON_WAIT_MS);
    }
    this.log.info("worker stopped", { workerId: this.workerId });
  }
}

/** `<hostname>-<pid>-<6 random hex digits>`, at most 128 characters. */
function defaultWorkerId(): string {
  const host = (hostname() || "worker").replace(/[^A-Za-z0-9._-]/g, "").slice(0, 100) || "worker";
  return `${host}-${process.pid}-${randomBytes(3).toString("hex")}`;
}
