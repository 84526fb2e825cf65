/**
 * Schedules: {@link Schedules} (`stackshift.schedules`) creates, reads, lists, pauses,
 * resumes and deletes schedules, each starting a run of a job with a fixed payload at every
 * time of a cron expression (in a time zone) or of a fixed interval. See docs/schedules.md.
 *
 * ```ts
 * // Every weekday at 09:00 Paris time.
 * await stackshift.schedules.create('morning-report', {
 *   job: 'build-report', payload: { kind: 'daily' },
 *   cron: '0 9 * * MON-FRI', timeZone: 'Europe/Paris', catchUp: 'latest',
 * })
 * // Every 30 seconds.
 * await stackshift.schedules.create('sync', { job: 'sync-crm', every: '30s' })
 * ```
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import {
  CreateScheduleRequestSchema,
  ScheduleActionSchema,
  ScheduleCatchUp,
  ScheduleSpecSchema,
  type Schedule as PbSchedule,
  type ScheduleService,
} from "./gen/stackshift/v1/schedules_pb.js";
import type { CallRunner } from "./call.js";
import { durationFromMillis, millisFromDuration, toMillis, type DurationInput } from "./duration.js";
import { InvalidArgumentError } from "./errors.js";
import { decodeJson, encodeJson } from "./json.js";
import { retryPolicyFromProto, retryPolicyToProto } from "./queues.js";
import type { RetryPolicy } from "./run.js";

/**
 * What a schedule does about times that passed while no server could fire it: `'skip'`
 * starts nothing for them (a time noticed at most 5 s late still fires), `'latest'` (the
 * default) starts one run for the most recent one, `'all'` one run per missed time (at most
 * the 100 most recent).
 */
export type CatchUp = "skip" | "latest" | "all";

/** Options of {@link Schedules.create}: when it fires (exactly one of `cron` / `every`) and the run it starts. */
export interface CreateScheduleOptions<P = unknown> {
  /** The job every run starts. Required. */
  job: string;
  /** The payload of every run (any JSON value; default `null`). */
  payload?: P;
  /** A cron expression: 5 fields (`0 9 * * MON-FRI`), or 6 with seconds first. */
  cron?: string;
  /** The IANA time zone of `cron`, e.g. `Europe/Paris` (default UTC). */
  timeZone?: string;
  /** A fixed interval instead of `cron`: ms or `'30s'`-style (1 s to 366 days), aligned to the Unix epoch. */
  every?: DurationInput;
  /** The queue of the runs (default `'default'`). */
  queueName?: string;
  /** Retry policy overrides of the runs. */
  retryPolicy?: RetryPolicy;
  /** Lease timeout of the runs' attempts: ms or `'30s'`-style (1 s to 1 h). */
  leaseTimeout?: DurationInput;
  /** Delivery priority of the runs, -1000 to 1000 (default 0). */
  priority?: number;
  /** The catch-up policy (default `'latest'`). */
  catchUp?: CatchUp;
  /** Creates the schedule paused. */
  paused?: boolean;
}

/** A schedule as stored by the server. */
export interface Schedule<P = unknown> {
  /** The schedule's id. */
  id: string;
  /** The cron expression, for a cron schedule. */
  cron?: string;
  /** The time zone of a cron schedule (always set for one, `UTC` by default). */
  timeZone?: string;
  /** The interval in ms, for an interval schedule. */
  everyMs?: number;
  /** The job it starts. */
  job: string;
  /** The payload of every run. */
  payload: P;
  /** The queue of the runs. */
  queue: string;
  /** Retry overrides of the runs. */
  retryPolicy?: RetryPolicy;
  /** Lease timeout of the runs, in ms. */
  leaseTimeoutMs?: number;
  /** Delivery priority of the runs. */
  priority: number;
  /** The catch-up policy. */
  catchUp: CatchUp;
  /** True while paused. */
  paused: boolean;
  /** The next scheduled time it fires at (while not paused). */
  nextFireTime?: Date;
  /** The scheduled time of the newest run it started. */
  lastFireTime?: Date;
  /** Ids of the most recent runs it started, newest first (at most 10). */
  recentRunIds: string[];
  /** When it was created. */
  createdAt: Date;
  /** When it was last changed (paused, resumed or fired). */
  updatedAt: Date;
}

/** What {@link Schedules.create} did. */
export interface CreatedSchedule<P = unknown> {
  /** The schedule as stored. */
  schedule: Schedule<P>;
  /** False when it already existed with the same definition (nothing changed). */
  created: boolean;
}

/** One page of {@link Schedules.list}. */
export interface SchedulePage {
  /** The schedules, by id. */
  schedules: Schedule[];
  /** Pass as `pageToken` for the next page; undefined at the end. */
  nextPageToken?: string;
}

const CATCH_UP_TO_PB: Record<CatchUp, ScheduleCatchUp> = {
  skip: ScheduleCatchUp.SKIP,
  latest: ScheduleCatchUp.LATEST,
  all: ScheduleCatchUp.ALL,
};

/** A wire catch-up policy as a {@link CatchUp}. */
function catchUpFromProto(c: ScheduleCatchUp): CatchUp {
  switch (c) {
    case ScheduleCatchUp.SKIP:
      return "skip";
    case ScheduleCatchUp.ALL:
      return "all";
    default:
      return "latest";
  }
}

/** A wire schedule as a {@link Schedule}. */
export function scheduleFromProto(s: PbSchedule): Schedule {
  const action = s.action;
  const schedule: Schedule = {
    id: s.id,
    job: action?.job ?? "",
    payload: decodeJson(action?.payload ?? new Uint8Array(), "schedule payload"),
    queue: action?.queue ?? "",
    priority: action?.priority ?? 0,
    catchUp: catchUpFromProto(s.catchUp),
    paused: s.paused,
    recentRunIds: [...s.recentRunIds],
    createdAt: s.createdAt === undefined ? new Date(0) : timestampDate(s.createdAt),
    updatedAt: s.updatedAt === undefined ? new Date(0) : timestampDate(s.updatedAt),
  };
  const spec = s.spec?.spec;
  if (spec?.case === "cron") {
    schedule.cron = spec.value.expression;
    schedule.timeZone = spec.value.timeZone === "" ? "UTC" : spec.value.timeZone;
  } else if (spec?.case === "interval") {
    schedule.everyMs = millisFromDuration(spec.value.interval) ?? 0;
  }
  if (action?.retryPolicy !== undefined) schedule.retryPolicy = retryPolicyFromProto(action.retryPolicy);
  const lease = millisFromDuration(action?.leaseTimeout);
  if (lease !== undefined) schedule.leaseTimeoutMs = lease;
  if (s.nextFireTime !== undefined) schedule.nextFireTime = timestampDate(s.nextFireTime);
  if (s.lastFireTime !== undefined) schedule.lastFireTime = timestampDate(s.lastFireTime);
  return schedule;
}

/** Manages schedules: `stackshift.schedules`. */
export class Schedules {
  /** @internal use `stackshift.schedules` */
  constructor(
    private readonly client: Client<typeof ScheduleService>,
    private readonly call: CallRunner,
  ) {}

  /**
   * Creates the schedule `id` (1-128 characters of `A-Z a-z 0-9 _ - . : /`). Creating an id
   * that exists with the same definition (everything but `paused`) returns the stored
   * schedule with `created: false`; with a different definition it rejects with
   * `AlreadyExistsError` (schedules are never silently replaced: delete the old one first).
   * A bad cron expression, time zone or interval rejects with `InvalidArgumentError`.
   */
  async create<P = unknown>(id: string, options: CreateScheduleOptions<P>): Promise<CreatedSchedule<P>> {
    const hasCron = options.cron !== undefined;
    const hasEvery = options.every !== undefined;
    if (hasCron === hasEvery) throw new InvalidArgumentError(`schedule ${JSON.stringify(id)}: set exactly one of cron and every`);
    if (!hasCron && options.timeZone !== undefined) throw new InvalidArgumentError(`schedule ${JSON.stringify(id)}: timeZone applies to a cron schedule only`);
    const spec = hasCron
      ? create(ScheduleSpecSchema, { spec: { case: "cron", value: { expression: options.cron ?? "", timeZone: options.timeZone ?? "" } } })
      : create(ScheduleSpecSchema, { spec: { case: "interval", value: { interval: durationFromMillis(toMillis(options.every ?? 0, "every")) } } });
    if (options.priority !== undefined && !Number.isInteger(options.priority)) {
      throw new InvalidArgumentError(`priority must be an integer from -1000 to 1000, got ${options.priority}`);
    }
    const action = create(ScheduleActionSchema, {
      job: options.job,
      payload: encodeJson(options.payload ?? null, "schedule payload"),
      queue: options.queueName ?? "",
      priority: options.priority ?? 0,
    });
    if (options.retryPolicy !== undefined) action.retryPolicy = retryPolicyToProto(options.retryPolicy);
    if (options.leaseTimeout !== undefined) action.leaseTimeout = durationFromMillis(toMillis(options.leaseTimeout, "leaseTimeout"));
    let catchUp = ScheduleCatchUp.UNSPECIFIED;
    if (options.catchUp !== undefined) {
      const c = CATCH_UP_TO_PB[options.catchUp];
      if (c === undefined) throw new InvalidArgumentError(`catchUp must be 'skip', 'latest' or 'all', got ${JSON.stringify(options.catchUp)}`);
      catchUp = c;
    }
    const request = create(CreateScheduleRequestSchema, { scheduleId: id, spec, action, catchUp, paused: options.paused ?? false });
    const response = await this.call((opts) => this.client.createSchedule(request, opts));
    return { schedule: this.answer(response) as Schedule<P>, created: response.created };
  }

  /** Reads a schedule (`NotFoundError` for an unknown id). */
  async get<P = unknown>(id: string): Promise<Schedule<P>> {
    return this.answer(await this.call((opts) => this.client.getSchedule({ scheduleId: id }, opts))) as Schedule<P>;
  }

  /** One page of schedules by id (`pageSize` 1 to 1000, default 50). */
  async list(options: { pageSize?: number; pageToken?: string } = {}): Promise<SchedulePage> {
    const response = await this.call((opts) =>
      this.client.listSchedules({ pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" }, opts),
    );
    const page: SchedulePage = { schedules: response.schedules.map(scheduleFromProto) };
    if (response.nextPageToken !== "") page.nextPageToken = response.nextPageToken;
    return page;
  }

  /** Pauses a schedule: it starts nothing until resumed (a no-op when already paused). */
  async pause(id: string): Promise<Schedule> {
    return this.answer(await this.call((opts) => this.client.pauseSchedule({ scheduleId: id }, opts)));
  }

  /** Resumes a paused schedule from its first time after now (a no-op when active). */
  async resume(id: string): Promise<Schedule> {
    return this.answer(await this.call((opts) => this.client.resumeSchedule({ scheduleId: id }, opts)));
  }

  /** Deletes a schedule (the runs it started are kept; `NotFoundError` for an unknown id). */
  async delete(id: string): Promise<void> {
    await this.call((opts) => this.client.deleteSchedule({ scheduleId: id }, opts));
  }

  private answer(response: { schedule?: PbSchedule | undefined }): Schedule {
    if (response.schedule === undefined) throw new Error("unexpected response from server: a schedule answer without a schedule");
    return scheduleFromProto(response.schedule);
  }
}
