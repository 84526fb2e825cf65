/**
 * How client calls are sent: a deadline on every call, and errors converted to the SDK's
 * typed errors ({@link fromConnectError}).
 *
 * @module
 */

import { fromConnectError } from "./errors.js";

/** Deadline for ordinary client calls, in ms. */
export const CALL_TIMEOUT_MS = 30_000;

/** Per-call options passed to the generated Connect clients. */
export interface CallOptions {
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Sends one call with a deadline (`CALL_TIMEOUT_MS` + `extraMs`), throwing typed errors. */
export type CallRunner = <T>(f: (opts: CallOptions) => Promise<T>, extraMs?: number, signal?: AbortSignal) => Promise<T>;

/** The {@link CallRunner} of client-side calls. */
export const directCall: CallRunner = async <T>(f: (opts: CallOptions) => Promise<T>, extraMs = 0, signal?: AbortSignal): Promise<T> => {
  const opts: CallOptions = { timeoutMs: CALL_TIMEOUT_MS + extraMs };
  if (signal !== undefined) opts.signal = signal;
  try {
    return await f(opts);
  } catch (e) {
    throw fromConnectError(e);
  }
};
