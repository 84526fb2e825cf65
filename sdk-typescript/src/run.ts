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
import * as obs from "./gen/stackshift/v1/observability_pb.js";
import type * as events from "./gen/stackshift/v1/events_pb.js";
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

/**
 * What produced a journal entry: `step.run`, `step.sleep`, `step.waitForEvent`, a `state`
 * call, `step.invoke`/`invokeAll`/`invokeChild` (`child`), `step.waitForAny` or `step.waitForAll`.
 */
export type StepKind = "step" | "sleep" | "event" | "state" | "child" | "any" | "all";

/** A recorded step result. */
export interface StepInfo {
  /** The step id, with its occurrence suffix (`import-batch#2`; `state:3` for a state call). */
  id: string;
  /** What produced it. */
  kind: StepKind;
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

/**
 * What happened to a run at one instant (`GetRun` timeline). `kind` is the proto enum name
 * without its prefix: `CREATED`, `ATTEMPT_STARTED`, `ATTEMPT_RESUMED`, `STEP_COMPLETED`,
 * `STEP_FAILED`, `WAITING`, `EVENT_MATCHED`, `TIMER_FIRED`, `WAIT_TIMED_OUT`,
 * `RETRY_SCHEDULED`, `LEASE_EXPIRED`, `COMPLETED`, `FAILED`, `CANCELLED`, `RETRIED`,
 * `LOGS_TRUNCATED` (see docs/observability.md).
 */
export interface TimelineEntry {
  /** Position in the timeline (increasing, not contiguous). */
  id: number;
  /** When it happened (server clock). */
  at: Date;
  kind: string;
  /** The attempt it belongs to; 0 when none. */
  attempt: number;
  /** The step it concerns; `''` when none. */
  stepId: string;
  /** For `RETRY_SCHEDULED`: when the retry is due; for `WAITING`: when the wait ends. */
  scheduledAt?: Date;
  /** Extra facts (a JSON object; never payloads or outputs). */
  detail: Record<string, unknown>;
}

/** The level of a run's log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** A line the handler logged through `ctx.log`. */
export interface LogEntry {
  /** Position in the run's logs. */
  id: number;
  level: LogLevel;
  message: string;
  /** Structured fields (`{}` when none). */
  fields: Record<string, unknown>;
  /** The step whose body was executing; `''` outside steps. */
  stepId: string;
  /** When the handler logged it (worker clock). */
  at?: Date;
  /** The attempt that logged it. */
  attempt: number;
  /** True for the marker the server stores when the run reached its log cap. */
  truncated: boolean;
}

/** What a `waiting` run is suspended on. */
export interface RunWait {
  /** The wait's step id (`step.sleep`, `step.waitForEvent`, `step.invoke`, ...), with its occurrence suffix. */
  stepId: string;
  /** `child` for `step.invoke`/`invokeAll`/`invokeChild`, `any`/`all` for `step.waitForAny`/`waitForAll`. */
  kind: "sleep" | "event" | "child" | "any" | "all";
  /** For an event wait: the event name. */
  eventName?: string;
  /** For an event wait: the correlation key (`''` = none). */
  correlationKey?: string;
  /** When the sleep ends or the event wait times out. */
  wakeAt?: Date;
  /** When the run suspended. */
  since?: Date;
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
  /** Delivery priority within the queue (higher first). */
  priority: number;
  /** The concurrency key given at start. */
  concurrencyKey?: string;
  /** What a `waiting` run waits for (filled by `getRun` / `waitForRun`). */
  wait?: RunWait;
  /** Everything that happened to the run, oldest first (filled by `getRun` / `waitForRun`). */
  timeline: TimelineEntry[];
  /** The lines the handler logged, oldest first (filled by `getRun` / `waitForRun`). */
  logs: LogEntry[];
  /** For a child run (`step.invoke`): the parent's run id; undefined for a run started otherwise. */
  parentRunId?: string;
  /** For a child run: the parent's step id that started it. */
  parentStepId?: string;
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

const STEP_KINDS: Record<number, StepKind> = {
  [common.JournalEntryKind.STEP]: "step",
  [common.JournalEntryKind.SLEEP]: "sleep",
  [common.JournalEntryKind.EVENT]: "event",
  [common.JournalEntryKind.STATE]: "state",
  [common.JournalEntryKind.CHILD]: "child",
  [common.JournalEntryKind.ANY]: "any",
  [common.JournalEntryKind.ALL]: "all",
};

const LOG_LEVELS: Record<number, LogLevel> = {
  [obs.LogLevel.DEBUG]: "debug",
  [obs.LogLevel.INFO]: "info",
  [obs.LogLevel.WARN]: "warn",
  [obs.LogLevel.ERROR]: "error",
};

/** A {@link LogLevel} on the wire. */
export function logLevelToProto(level: LogLevel): obs.LogLevel {
  switch (level) {
    case "debug":
      return obs.LogLevel.DEBUG;
    case "warn":
      return obs.LogLevel.WARN;
    case "error":
      return obs.LogLevel.ERROR;
    default:
      return obs.LogLevel.INFO;
  }
}

/** A JSON object from bytes; `{}` for empty or undecodable bytes and for non-objects. */
function jsonObject(bytes: Uint8Array): Record<string, unknown> {
  if (bytes.length === 0) return {};
  try {
    const v = decodeJson(bytes);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** A wire timeline entry as a {@link TimelineEntry}. */
export function timelineEntryFromProto(t: obs.TimelineEntry): TimelineEntry {
  const entry: TimelineEntry = {
    id: Number(t.id),
    at: date(t.at) ?? new Date(0),
    kind: obs.TimelineEntryKind[t.kind] ?? `UNKNOWN_${t.kind}`,
    attempt: t.attempt,
    stepId: t.stepId,
    detail: jsonObject(t.detail),
  };
  const scheduled = date(t.scheduledAt);
  if (scheduled !== undefined) entry.scheduledAt = scheduled;
  return entry;
}

/** A wire log line as a {@link LogEntry}. */
export function logEntryFromProto(l: obs.LogEntry): LogEntry {
  const entry: LogEntry = {
    id: Number(l.id),
    level: LOG_LEVELS[l.level] ?? "info",
    message: l.message,
    fields: jsonObject(l.fields),
    stepId: l.stepId,
    attempt: l.attempt,
    truncated: l.truncated,
  };
  const at = date(l.at);
  if (at !== undefined) entry.at = at;
  return entry;
}

function waitFromProto(w: events.RunWait): RunWait {
  const kind = STEP_KINDS[w.kind];
  const wait: RunWait = { stepId: w.stepId, kind: kind === "event" || kind === "child" || kind === "any" || kind === "all" ? kind : "sleep" };
  if (wait.kind === "event") {
    wait.eventName = w.eventName;
    wait.correlationKey = w.correlationKey;
  }
  const wake = date(w.wakeAt);
  const since = date(w.since);
  if (wake !== undefined) wait.wakeAt = wake;
  if (since !== undefined) wait.since = since;
  return wait;
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
      const info: StepInfo = { id: s.id, kind: STEP_KINDS[s.kind] ?? "step", attempt: s.attempt, outputSize: Number(s.outputSize) };
      const started = date(s.startedAt);
      const completed = date(s.completedAt);
      if (started !== undefined) info.startedAt = started;
      if (completed !== undefined) info.completedAt = completed;
      if (s.failure !== undefined) info.failure = failureFromProto(s.failure);
      else info.output = decodeJson(s.output, "step output");
      return info;
    }),
    priority: r.priority,
    timeline: r.timeline.map(timelineEntryFromProto),
    logs: r.logs.map(logEntryFromProto),
  };
  if (r.concurrencyKey !== "") run.concurrencyKey = r.concurrencyKey;
  if (r.parentRunId !== "") run.parentRunId = r.parentRunId;
  if (r.parentStepId !== "") run.parentStepId = r.parentStepId;
  if (r.wait !== undefined) run.wait = waitFromProto(r.wait);
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
