/**
 * The lease an attempt runs under, and the write path every worker RPC takes.
 *
 * {@link Lease} holds the run id, the lease token, a local estimate of the deadline (extended
 * by each heartbeat) and the interrupt switch that stops the attempt. {@link write} sends one
 * worker RPC: it retries `UNAVAILABLE` (and timeouts, broken connections) with backoff until
 * the lease deadline has passed, turns `ABORTED`, `FAILED_PRECONDITION` and `NOT_FOUND` into
 * an interruption (the run was cancelled or the lease is gone), and reports anything else as
 * rejected. Identical rules in every StackShift SDK.
 *
 * @module
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { AttemptInterruptedError } from "../errors.js";
import { Backoff, sleep } from "./backoff.js";

/** Deadline of one worker write RPC, in ms. */
export const WRITE_TIMEOUT_MS = 10_000;

/** One attempt's lease. */
export class Lease {
  private deadlineMs: number;
  private readonly controller = new AbortController();
  private reasonText: string | undefined;
  private suspendedFlag = false;

  constructor(
    readonly runId: string,
    readonly token: string,
    readonly timeoutMs: number,
  ) {
    this.deadlineMs = Date.now() + timeoutMs;
  }

  /** The local estimate of the lease deadline (epoch ms). */
  get deadline(): number {
    return this.deadlineMs;
  }

  /** Records a successful heartbeat sent at `sentAt` (epoch ms). */
  extended(sentAt: number): void {
    this.deadlineMs = Math.max(this.deadlineMs, sentAt + this.timeoutMs);
  }

  /** Aborted once the attempt is interrupted; handlers may pass it to their own I/O. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /**
   * Stops the attempt: nothing more is run or written. The first reason wins. `suspended`
   * marks the interruption as the run's own suspension (a sleep or an event wait).
   */
  interrupt(reason: string, suspended = false): void {
    if (this.reasonText === undefined) {
      this.reasonText = reason;
      this.suspendedFlag = suspended;
    }
    if (!this.controller.signal.aborted) this.controller.abort(this.error());
  }

  /** True when the attempt stopped because the run suspended on a sleep or an event wait. */
  get suspended(): boolean {
    return this.suspendedFlag;
  }

  /** True once {@link Lease.interrupt} was called. */
  get interrupted(): boolean {
    return this.controller.signal.aborted;
  }

  /** The error `step.run` throws once the attempt is interrupted. */
  error(): AttemptInterruptedError {
    return new AttemptInterruptedError(this.reasonText ?? "the attempt was stopped");
  }
}

/** Why a worker write did not go through. */
export type WriteFailure =
  | { kind: "interrupted"; error: AttemptInterruptedError }
  | { kind: "gave-up"; error: ConnectError }
  | { kind: "rejected"; error: ConnectError };

/** The outcome of {@link write}. */
export type WriteResult<T> = { ok: true; value: T } | ({ ok: false } & WriteFailure);

/** `ABORTED` (cancelled), `FAILED_PRECONDITION` (stale/expired lease), `NOT_FOUND` (run gone). */
export function isLeaseLost(code: Code): boolean {
  return code === Code.Aborted || code === Code.FailedPrecondition || code === Code.NotFound;
}

/** Failures worth retrying while the lease lasts (every write is idempotent under its token). */
export function isTransient(code: Code): boolean {
  return code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Unknown || code === Code.Canceled;
}

/** A human-readable reason for an interruption caused by `err`. */
export function lostReason(err: ConnectError): string {
  const what =
    err.code === Code.Aborted
      ? "the run was cancelled"
      : err.code === Code.FailedPrecondition
        ? "the lease is no longer valid"
        : err.code === Code.NotFound
          ? "the run no longer exists"
          : "the attempt was stopped";
  return err.rawMessage === "" ? what : `${what} (${err.rawMessage})`;
}

/**
 * Sends one worker write, retrying transient failures with backoff until the lease deadline.
 * `call` gets an `AbortSignal` and the per-call timeout to pass to the Connect client.
 */
export async function write<T>(
  lease: Lease,
  what: string,
  call: (opts: { timeoutMs: number }) => Promise<T>,
  log: (msg: string) => void = () => {},
): Promise<WriteResult<T>> {
  const backoff = new Backoff();
  for (;;) {
    if (lease.interrupted) return { ok: false, kind: "interrupted", error: lease.error() };
    let err: ConnectError;
    try {
      return { ok: true, value: await call({ timeoutMs: WRITE_TIMEOUT_MS }) };
    } catch (e) {
      err = ConnectError.from(e);
    }
    if (isLeaseLost(err.code)) {
      lease.interrupt(lostReason(err));
      return { ok: false, kind: "interrupted", error: lease.error() };
    }
    if (!isTransient(err.code)) return { ok: false, kind: "rejected", error: err };
    const now = Date.now();
    if (now >= lease.deadline) return { ok: false, kind: "gave-up", error: err };
    const delay = Math.min(backoff.next(), lease.deadline - now);
    log(`${what} failed (${Code[err.code]}: ${err.rawMessage}); retrying in ${Math.round(delay)} ms while the lease lasts`);
    await sleep(delay, lease.signal);
  }
}
