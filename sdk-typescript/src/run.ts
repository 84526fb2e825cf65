/**
 * What the SDK returns about runs: {@link Run} with its {@link RunStatus}, attempts, steps
 * and {@link Failure}. Plain objects: JSON values decoded, timestamps as `Date`.
 *
 * @module
 */

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import * as common from "./gen/stackshift/v1/common_pb.js";
import * as jobs from "./gen/stackshift/v1/jobs_pb.js";
import { decodeJson, encodeJson } from "./json.js";
import { millisFromDuration } from "./duration.js";
import { InvalidArgumentError } from "./errors.js";

/** A run's lifecycle state. */
export type RunStatus = "queued" | "running" | "waiting" | "completed" | "failed" | "cancelled";

/** The statuses after which a run changes only through `retryRun`. */
export const FINAL_STATUSES: readonly RunStatus[] = ["completed", "failed", "cancelled"];

/** True for `completed`, `failed` and `cancelled`. */
export function isFinal(status: RunStatus): boolean {
  return FINAL_STATUSES.includes(status);
}

/** A structured error: why a step, an attempt or a run failed. */
export interface Failure {
  /** Human-readable message. */
  message: string;
  /** The error's type name in the worker's language (e.g. `TypeError`). */
  type?: string;
  /** True when the failure ended the run without retries. */
  nonRetryable: boolean;
  /** Optional JSON details. */
  details?: unknown;
  /** Optional stack trace. */
  stackTrace?: string;
}

/** One delivery of a run to a worker. */
export interface AttemptInfo {
  number: number;
  workerId: string;
  startedAt: Date;
  endedAt?: Date;
  failure?: Failure;
}

/** A recorded step result. */
export interface StepInfo {
  /** The step id, with its occurrence suffix (`import-batch#2`). */
  id: string;
  /** The attempt that recorded it. */
  attempt: number;
  startedAt?: Date;
  completedAt?: Date;
  /** Size of the recorded output in bytes. */
  outputSize: number;
  /** The step's output (decoded JSON); `undefined` for a failed step. */
  output?: unknown;
  /** The terminal failure of a step that failed non-retryably. */
  failure?: Failure;
}

/** How failed attempts are retried. Unset fields take the server defaults (5 attempts, 1 s, x2, 5 min). */
export interface RetryPolicy {
  /** Total attempts, the first included (1 = never retry). */
  maxAttempts?: number;
  /** Delay before the second attempt, in ms or as `'1s'`. */
  initialInterval?: number | string;
  /** Multiplier applied after each failed attempt (>= 1). */
  backoffCoefficient?: number;
  /** Upper bound for the delay, in ms or as `'5m'`. */
  maximumInterval?: number | string;
}

/** One execution of a job with a payload. */
export interface Run<P = unknown, R = unknown> {
  id: string;
  job: string;
  queue: string;
  status: RunStatus;
  payload: P;
  /** The handler's result, once completed. */
  result?: R;
  /** Why the run failed, or the cancellation reason. */
  failure?: Failure;
  /** Attempts started so far. */
  attempt: number;
  /** Attempts allowed before the run fails. */
  maxAttempts: number;
  idempotencyKey?: string;
  /** Lease timeout requested at start, in ms. */
  leaseTimeoutMs?: number;
  createdAt: Date;
  updatedAt: Date;
  finishedAt?: Date;
  /** For a queued run: when it becomes deliverable. */
  nextAttemptAt?: Date;
  /** Attempts, oldest first (filled by `getRun` / `waitForRun`). */
  attempts: AttemptInfo[];
  /** Recorded steps in completion order (filled by `getRun` / `waitForRun`). */
  steps: StepInfo[];
}

/** What `start` and `enqueue` return. */
export interface StartedRun {
  /** The run's id. */
  id: string;
  /** The run as created (or as found, for a duplicate). */
  run: Run;
  /** True when the idempotency key matched an existing run and nothing new was created. */
  duplicate: boolean;
}

/** One page of `listRuns`. */
export interface RunPage {
  runs: Run[];
  /** Pass as `pageToken` for the next page; undefined at the end. */
  nextPageToken?: string;
}

const STATUS_FROM_PB: Record<number, RunStatus> = {
  [common.RunStatus.QUEUED]: "queued",
  [common.RunStatus.RUNNING]: "running",
  [common.RunStatus.WAITING]: "waiting",
  [common.RunStatus.COMPLETED]: "completed",
  [common.RunStatus.FAILED]: "failed",
  [common.RunStatus.CANCELLED]: "cancelled",
};

/** The wire enum for a status. */
export function statusToProto(status: RunStatus): common.RunStatus {
  switch (status) {
    case "queued":
      return common.RunStatus.QUEUED;
    case "running":
      return common.RunStatus.RUNNING;
    case "waiting":
      return common.RunStatus.WAITING;
    case "completed":
      return common.RunStatus.COMPLETED;
    case "failed":
      return common.RunStatus.FAILED;
    case "cancelled":
      return common.RunStatus.CANCELLED;
    default:
      throw new InvalidArgumentError(`unknown run status ${JSON.stringify(status)}`);
  }
}

/** A wire status as a {@link RunStatus}. */
export function statusFromProto(s: common.RunStatus): RunStatus {
  const status = STATUS_FROM_PB[s];
  if (status === undefined) throw new Error(`unexpected run status ${s} from the server`);
  return status;
}

function date(ts: Timestamp | undefined): Date | undefined {
  return ts === undefined ? undefined : timestampDate(ts);
}

/** A wire failure as a {@link Failure}. */
export function failureFromProto(f: common.Failure): Failure {
  const out: Failure = { message: f.message, nonRetryable: f.nonRetryable };
  if (f.type !== "") out.type = f.type;
  if (f.details.length > 0) {
    try {
      out.details = decodeJson(f.details);
    } catch {
      // Undecodable details are dropped rather than failing the whole read.
    }
  }
  if (f.stackTrace !== "") out.stackTrace = f.stackTrace;
  return out;
}

/** A {@link Failure} on the wire. */
export function failureToProto(f: Failure): common.Failure {
  return create(common.FailureSchema, {
    message: f.message,
    type: f.type ?? "",
    nonRetryable: f.nonRetryable,
    details: f.details === undefined ? new Uint8Array() : encodeJson(f.details, "failure details"),
    stackTrace: f.stackTrace ?? "",
  });
}

/** A wire run as a {@link Run}. */
export function runFromProto(r: jobs.Run): Run {
  const run: Run = {
    id: r.id,
    job: r.job,
    queue: r.queue,
    status: statusFromProto(r.status),
    payload: decodeJson(r.payload, "payload"),
    attempt: r.attempt,
    maxAttempts: r.maxAttempts,
    createdAt: date(r.createdAt) ?? new Date(0),
    updatedAt: date(r.updatedAt) ?? new Date(0),
    attempts: r.attempts.map((a) => {
      const info: AttemptInfo = { number: a.number, workerId: a.workerId, startedAt: date(a.startedAt) ?? new Date(0) };
      const ended = date(a.endedAt);
      if (ended !== undefined) info.endedAt = ended;
      if (a.failure !== undefined) info.failure = failureFromProto(a.failure);
      return info;
    }),
    steps: r.steps.map((s) => {
      const info: StepInfo = { id: s.id, attempt: s.attempt, outputSize: Number(s.outputSize) };
      const started = date(s.startedAt);
      const completed = date(s.completedAt);
      if (started !== undefined) info.startedAt = started;
      if (completed !== undefined) info.completedAt = completed;
      if (s.failure !== undefined) info.failure = failureFromProto(s.failure);
      else info.output = decodeJson(s.output, "step output");
      return info;
    }),
  };
  if (r.status === common.RunStatus.COMPLETED) run.result = decodeJson(r.result, "result");
  if (r.failure !== undefined) run.failure = failureFromProto(r.failure);
  if (r.idempotencyKey !== "") run.idempotencyKey = r.idempotencyKey;
  const lease = millisFromDuration(r.leaseTimeout);
  if (lease !== undefined) run.leaseTimeoutMs = lease;
  const finished = date(r.finishedAt);
  if (finished !== undefined) run.finishedAt = finished;
  const next = date(r.nextAttemptAt);
  if (next !== undefined) run.nextAttemptAt = next;
  return run;
}
