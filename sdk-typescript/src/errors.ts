/**
 * Errors.
 *
 * - Client calls reject with a {@link StackShiftError} subclass per gRPC status a caller can
 *   act on ({@link NotFoundError}, {@link InvalidArgumentError}, ...); `error.code` is the
 *   status name (`'NOT_FOUND'`), the same string in every StackShift SDK.
 * - Handlers throw {@link NonRetryableError} to fail a run at once; `step.run` rejects with
 *   {@link StepFailedError} when it replays a step's recorded terminal failure, and with
 *   {@link AttemptInterruptedError} once the run was cancelled or the lease was lost.
 *
 * @module
 */

import { Code, ConnectError } from "@connectrpc/connect";
import type { Failure } from "./run.js";

/** The gRPC status names, as used in {@link StackShiftError.code}. */
export type StatusCode =
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

const CODE_NAMES: Record<number, StatusCode> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** An error from a StackShift client call. `code` is the gRPC status name. */
export class StackShiftError extends Error {
  override name = "StackShiftError";
  /** The gRPC status name, e.g. `'NOT_FOUND'`. */
  readonly code: StatusCode;

  constructor(code: StatusCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** True when retrying the same call later may succeed (the server was unreachable). */
  get isTransient(): boolean {
    return this.code === "UNAVAILABLE";
  }
}

/** `INVALID_ARGUMENT`: a malformed request (bad name, unparsable duration, bad JSON, ...). */
export class InvalidArgumentError extends StackShiftError {
  override name = "InvalidArgumentError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("INVALID_ARGUMENT", message, options);
  }
}
/** `NOT_FOUND`: the run does not exist (in the caller's namespace). */
export class NotFoundError extends StackShiftError {
  override name = "NotFoundError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("NOT_FOUND", message, options);
  }
}
/** `ALREADY_EXISTS`. */
export class AlreadyExistsError extends StackShiftError {
  override name = "AlreadyExistsError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("ALREADY_EXISTS", message, options);
  }
}
/** `FAILED_PRECONDITION`: the operation does not fit the run's status, or a stale lease. */
export class FailedPreconditionError extends StackShiftError {
  override name = "FailedPreconditionError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("FAILED_PRECONDITION", message, options);
  }
}
/**
 * `FAILED_PRECONDITION` with a reason: the state store refused the call because of the state
 * it found, e.g. a compare-and-set on a version that is no longer current. `reason` is one of
 * `VERSION_MISMATCH`, `NOT_AN_INTEGER`, `COUNTER_OVERFLOW`, `LOCK_NOT_HELD` (from the server's
 * `stackshift-error-reason` trailer). Inside a run the refusal is journaled: a replay gets the
 * same refusal.
 *
 * ```ts
 * try {
 *   await state.set('config', next, { expectedVersion: entry.version })
 * } catch (e) {
 *   if (e instanceof ConflictError && e.reason === 'VERSION_MISMATCH') { ... }
 *   throw e
 * }
 * ```
 */
export class ConflictError extends FailedPreconditionError {
  override name = "ConflictError";
  /** The machine-readable reason, e.g. `'LOCK_NOT_HELD'`. */
  readonly reason: string;
  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/** The trailing metadata naming the reason of a state conflict. */
export const REASON_METADATA = "stackshift-error-reason";

/** The state-conflict reason carried by `err`, if it is a `FAILED_PRECONDITION` with one. */
export function conflictReason(err: ConnectError): string | undefined {
  if (err.code !== Code.FailedPrecondition) return undefined;
  const reason = err.metadata.get(REASON_METADATA);
  return reason === null || reason === "" ? undefined : reason;
}

/** `UNAUTHENTICATED`: the API key is missing, unknown or revoked. */
export class UnauthenticatedError extends StackShiftError {
  override name = "UnauthenticatedError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("UNAUTHENTICATED", message, options);
  }
}
/** `PERMISSION_DENIED`. */
export class PermissionDeniedError extends StackShiftError {
  override name = "PermissionDeniedError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("PERMISSION_DENIED", message, options);
  }
}
/** `RESOURCE_EXHAUSTED`: a limit was exceeded, e.g. a payload over the server's size limit. */
export class ResourceExhaustedError extends StackShiftError {
  override name = "ResourceExhaustedError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("RESOURCE_EXHAUSTED", message, options);
  }
}
/** `ABORTED`: e.g. a worker write to a cancelled run. */
export class AbortedError extends StackShiftError {
  override name = "AbortedError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("ABORTED", message, options);
  }
}
/** `UNAVAILABLE`: the server could not be reached. Retrying later is safe. */
export class UnavailableError extends StackShiftError {
  override name = "UnavailableError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("UNAVAILABLE", message, options);
  }
}
/** `DEADLINE_EXCEEDED`: the call timed out. */
export class DeadlineExceededError extends StackShiftError {
  override name = "DeadlineExceededError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("DEADLINE_EXCEEDED", message, options);
  }
}
/** `CANCELLED`: the call was cancelled (e.g. through an `AbortSignal`). */
export class CancelledError extends StackShiftError {
  override name = "CancelledError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("CANCELLED", message, options);
  }
}

/** Converts anything a Connect call rejected with into the matching {@link StackShiftError}. */
export function fromConnectError(err: unknown): StackShiftError {
  if (err instanceof StackShiftError) return err;
  const ce = ConnectError.from(err);
  const message = ce.rawMessage;
  const opts = { cause: err };
  // Node reports TLS failures (untrusted certificate, a client certificate the server refused)
  // as plain errors, which Connect maps to UNKNOWN; they are connection failures like in the
  // other SDKs.
  if ((ce.code === Code.Unknown || ce.code === Code.Internal) && tlsHint(message) !== message) {
    return new UnavailableError(tlsHint(message), opts);
  }
  switch (ce.code) {
    case Code.InvalidArgument:
      return new InvalidArgumentError(message, opts);
    case Code.NotFound:
      return new NotFoundError(message, opts);
    case Code.AlreadyExists:
      return new AlreadyExistsError(message, opts);
    case Code.FailedPrecondition: {
      const reason = conflictReason(ce);
      return reason === undefined ? new FailedPreconditionError(message, opts) : new ConflictError(reason, message, opts);
    }
    case Code.Unauthenticated:
      return new UnauthenticatedError(message, opts);
    case Code.PermissionDenied:
      return new PermissionDeniedError(message, opts);
    case Code.ResourceExhausted:
      return new ResourceExhaustedError(message, opts);
    case Code.Aborted:
      return new AbortedError(message, opts);
    case Code.Unavailable:
      return new UnavailableError(tlsHint(message) || "the server did not answer", opts);
    case Code.DeadlineExceeded:
      return new DeadlineExceededError(message, opts);
    case Code.Canceled:
      return new CancelledError(message, opts);
    default:
      return new StackShiftError(CODE_NAMES[ce.code] ?? "UNKNOWN", message, opts);
  }
}

/**
 * Thrown from a handler, fails the run at once instead of retrying it. Thrown from a
 * `step.run` body, it is also recorded as the step's terminal failure, so a replay re-raises
 * it (as {@link StepFailedError}) without running the step again.
 *
 * ```ts
 * if (payment.status === 'declined') throw new NonRetryableError('payment was declined')
 * ```
 */
export class NonRetryableError extends Error {
  override name = "NonRetryableError";
  /** Always true; any error with `nonRetryable === true` is treated the same way. */
  readonly nonRetryable = true;
  /** Optional JSON details recorded with the failure. */
  readonly details: unknown;

  constructor(message: string, options?: { cause?: unknown; details?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.details = options?.details;
  }
}

/**
 * A step's recorded terminal failure, re-raised by `step.run` on replay (the step body is not
 * run again). It keeps the failure's `nonRetryable` flag, so letting it propagate fails the run.
 */
export class StepFailedError extends Error {
  override name = "StepFailedError";
  /** The step id, with its occurrence suffix. */
  readonly stepId: string;
  /** The failure recorded when the step first failed. */
  readonly failure: Failure;

  constructor(stepId: string, failure: Failure) {
    super(`step ${stepId} failed: ${failure.message}`);
    this.stepId = stepId;
    this.failure = failure;
  }

  /** Mirrors the recorded failure's flag. */
  get nonRetryable(): boolean {
    return this.failure.nonRetryable;
  }
}

/**
 * The attempt was interrupted: the run was cancelled, or the worker lost the lease (it expired
 * or a newer attempt superseded it), or the worker is shutting down. `step.run` rejects with it
 * instead of running or recording anything; the worker then reports nothing, since the server
 * has already moved on. Let it propagate.
 */
export class AttemptInterruptedError extends Error {
  override name = "AttemptInterruptedError";
  /** Why the attempt was interrupted. */
  readonly reason: string;

  constructor(reason: string) {
    super(`attempt interrupted: ${reason}`);
    this.reason = reason;
  }
}

/** Walks `err` and its `cause` chain (at most 32 links). */
function* chain(err: unknown): Generator<unknown> {
  let cur: unknown = err;
  for (let i = 0; i < 32 && cur !== undefined && cur !== null; i++) {
    yield cur;
    cur = typeof cur === "object" ? (cur as { cause?: unknown }).cause : undefined;
  }
}

/** True when `err` (or an error in its `cause` chain) is non-retryable. */
export function isNonRetryable(err: unknown): boolean {
  for (const e of chain(err)) {
    if (typeof e === "object" && e !== null && (e as { nonRetryable?: unknown }).nonRetryable === true) return true;
  }
  return false;
}

/** True when `err` (or an error in its `cause` chain) is an {@link AttemptInterruptedError}. */
export function isInterrupted(err: unknown): boolean {
  for (const e of chain(err)) if (e instanceof AttemptInterruptedError) return true;
  return false;
}

/** The longest stack trace sent with a failure. */
const MAX_STACK_TRACE = 8 * 1024;

/** Renders a thrown value as a structured {@link Failure}. */
export function failureFromError(err: unknown): Failure {
  const nonRetryable = isNonRetryable(err);
  if (err instanceof StepFailedError) {
    return { ...err.failure, message: err.message, nonRetryable };
  }
  if (err instanceof Error) {
    const details = (err as { details?: unknown }).details;
    let stack = typeof err.stack === "string" ? err.stack : undefined;
    if (stack !== undefined && stack.length > MAX_STACK_TRACE) stack = `${stack.slice(0, MAX_STACK_TRACE)}\n... (truncated)`;
    return {
      message: err.message,
      type: err.name || err.constructor.name,
      nonRetryable,
      ...(details === undefined ? {} : { details }),
      ...(stack === undefined ? {} : { stackTrace: stack }),
    };
  }
  return { message: typeof err === "string" ? err : safeStringify(err), type: typeof err, nonRetryable };
}

function safeStringify(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Words in an `UNAVAILABLE` message that point at TLS (handshake, certificates, or a server that
 * closed the connection of a client it did not accept). */
const TLS_SIGNS = ["ssl", "tls", "certificate", "handshake", "socket hang up", "econnreset", "epipe", "self-signed", "unable to verify"];

/** Adds what to check to a connection failure that looks like TLS. */
function tlsHint(message: string): string {
  const lower = message.toLowerCase();
  if (!TLS_SIGNS.some((s) => lower.includes(s))) return message;
  return (
    `${message} (the TLS connection failed or was closed by the server: check the CA for the server certificate ` +
    "(tlsCa or STACKSHIFT_TLS_CA), and, if the server requires mutual TLS (--tls-client-ca), a client certificate " +
    "and key signed by its client CA (tlsClientCert/tlsClientKey or STACKSHIFT_TLS_CLIENT_CERT/STACKSHIFT_TLS_CLIENT_KEY))"
  );
}
