/**
 * Event triggers: {@link Triggers} (`stackshift.triggers`) subscribes a job to an event name,
 * so that every published event of that name (optionally only with one correlation key)
 * starts one run of the job, in the same transaction as the event. A job can also declare
 * its triggers itself (`stackshift.job(name, handler, { triggers: [...] })`): the worker
 * creates them when it starts. A triggered run's payload is the event envelope,
 * {@link TriggeredEvent}. See docs/schedules.md.
 *
 * ```ts
 * await stackshift.triggers.create({ event: 'user.signed_up', job: 'send-welcome-email' })
 * stackshift.job<TriggeredEvent<{ userId: string }>>('send-welcome-email', async ({ payload, step }) => {
 *   await step.run('send', () => sendWelcome(payload.payload.userId))
 * })
 * ```
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { CreateEventTriggerRequestSchema, type EventTrigger as PbEventTrigger, type TriggerService } from "./gen/stackshift/v1/triggers_pb.js";
import type { CallRunner } from "./call.js";
import { durationFromMillis, millisFromDuration, toMillis, type DurationInput } from "./duration.js";
import { InvalidArgumentError, NonRetryableError, StackShiftError } from "./errors.js";
import { retryPolicyFromProto, retryPolicyToProto } from "./queues.js";
import type { RetryPolicy } from "./run.js";

/**
 * The payload of a run started by an event trigger: the event that started it, as JSON
 * (`publishedAt` in epoch milliseconds). Use it as the job's payload type.
 */
export interface TriggeredEvent<T = unknown> {
  /** The event's id. */
  id: string;
  /** The event's name. */
  name: string;
  /** The event's correlation key (`''` when none). */
  correlationKey: string;
  /** The event's payload (`null` when published without one). */
  payload: T;
  /** When the event was published, in milliseconds since the Unix epoch. */
  publishedAt: number;
}

/**
 * Checks that `payload` (a handler's payload) is a {@link TriggeredEvent} and returns it typed;
 * throws a {@link NonRetryableError} otherwise (the run was not started by a trigger).
 */
export function triggeredEvent<T = unknown>(payload: unknown): TriggeredEvent<T> {
  const p = payload as Partial<TriggeredEvent<T>> | null;
  if (
    typeof p !== "object" ||
    p === null ||
    typeof p.id !== "string" ||
    typeof p.name !== "string" ||
    typeof p.correlationKey !== "string" ||
    typeof p.publishedAt !== "number" ||
    !("payload" in p)
  ) {
    throw new NonRetryableError("the run's payload is not a triggered event {id, name, correlationKey, payload, publishedAt}");
  }
  return p as TriggeredEvent<T>;
}

/** Options of the runs a trigger starts. */
export interface TriggerRunOptions {
  /** The queue of the runs (default `'default'`; for a job-declared trigger, the worker's first queue). */
  queueName?: string;
  /** Retry policy overrides of the runs. */
  retryPolicy?: RetryPolicy;
  /** Lease timeout of the runs' attempts: ms or `'30s'`-style (1 s to 1 h). */
  leaseTimeout?: DurationInput;
  /** Delivery priority of the runs, -1000 to 1000 (default 0). */
  priority?: number;
}

/** A trigger a job declares: `stackshift.job(name, handler, { triggers: [{ event: 'user.signed_up' }] })`. */
export interface TriggerDeclaration extends TriggerRunOptions {
  /** The event name. */
  event: string;
  /** Only events with exactly this correlation key start a run (default: any key). */
  key?: string;
}

/** Options of {@link Triggers.create}. */
export interface CreateTriggerOptions extends TriggerDeclaration {
  /** The job each event starts. */
  job: string;
}

/** A stored trigger. */
export interface EventTrigger {
  /** The trigger's id (assigned by the server). */
  id: string;
  /** The event name. */
  event: string;
  /** The correlation key filter; undefined = any key. */
  key?: string;
  /** The job started. */
  job: string;
  /** The queue of the runs. */
  queue: string;
  /** Retry overrides of the runs. */
  retryPolicy?: RetryPolicy;
  /** Lease timeout of the runs, in ms. */
  leaseTimeoutMs?: number;
  /** Delivery priority of the runs. */
  priority: number;
  /** When it was created. */
  createdAt: Date;
}

/** What {@link Triggers.create} did. */
export interface CreatedTrigger {
  /** The trigger as stored. */
  trigger: EventTrigger;
  /** False when the same trigger (event, key, job, options) already existed. */
  created: boolean;
}

/** One page of {@link Triggers.list}. */
export interface TriggerPage {
  /** The triggers, by id. */
  triggers: EventTrigger[];
  /** Pass as `pageToken` for the next page; undefined at the end. */
  nextPageToken?: string;
}

/**
 * The server refused a trigger a job declares (e.g. `ALREADY_EXISTS`: a trigger for the same
 * event, key and job exists with other options): the worker does not start. `code` is the
 * server's code; `cause` the underlying error.
 */
export class TriggerDeclarationError extends StackShiftError {
  override name = "TriggerDeclarationError";
  /** The job that declares the trigger. */
  readonly job: string;
  /** The declared event name. */
  readonly event: string;
  /** The declared correlation key (`''` = any key). */
  readonly key: string;
  /** The queue the declaration resolved to. */
  readonly queue: string;

  constructor(job: string, event: string, key: string, queue: string, cause: StackShiftError) {
    super(
      cause.code,
      `job ${job} declares a trigger on event ${JSON.stringify(event)}${key === "" ? "" : ` (key ${JSON.stringify(key)})`} for queue ${queue} that the server refused: ${cause.message}`,
      { cause },
    );
    this.job = job;
    this.event = event;
    this.key = key;
    this.queue = queue;
  }
}

/** A wire trigger as an {@link EventTrigger}. */
export function triggerFromProto(t: PbEventTrigger): EventTrigger {
  const trigger: EventTrigger = {
    id: t.id,
    event: t.eventName,
    job: t.job,
    queue: t.queue,
    priority: t.priority,
    createdAt: t.createdAt === undefined ? new Date(0) : timestampDate(t.createdAt),
  };
  if (t.correlationKey !== "") trigger.key = t.correlationKey;
  if (t.retryPolicy !== undefined) trigger.retryPolicy = retryPolicyFromProto(t.retryPolicy);
  const lease = millisFromDuration(t.leaseTimeout);
  if (lease !== undefined) trigger.leaseTimeoutMs = lease;
  return trigger;
}

/** Manages event triggers: `stackshift.triggers`. */
export class Triggers {
  /** @internal use `stackshift.triggers` */
  constructor(
    private readonly client: Client<typeof TriggerService>,
    private readonly call: CallRunner,
  ) {}

  /**
   * Creates a trigger: every event `event` (with exactly `key`, when given) starts a run of
   * `job`. Idempotent: the same event, key and job with the same options returns the stored
   * trigger with `created: false`; other options reject with `AlreadyExistsError`.
   */
  async create(options: CreateTriggerOptions): Promise<CreatedTrigger> {
    if (options.priority !== undefined && !Number.isInteger(options.priority)) {
      throw new InvalidArgumentError(`priority must be an integer from -1000 to 1000, got ${options.priority}`);
    }
    const request = create(CreateEventTriggerRequestSchema, {
      eventName: options.event,
      correlationKey: options.key ?? "",
      job: options.job,
      queue: options.queueName ?? "",
      priority: options.priority ?? 0,
    });
    if (options.retryPolicy !== undefined) request.retryPolicy = retryPolicyToProto(options.retryPolicy);
    if (options.leaseTimeout !== undefined) request.leaseTimeout = durationFromMillis(toMillis(options.leaseTimeout, "leaseTimeout"));
    const response = await this.call((opts) => this.client.createEventTrigger(request, opts));
    if (response.trigger === undefined) throw new Error("unexpected response from server: CreateEventTrigger without a trigger");
    return { trigger: triggerFromProto(response.trigger), created: response.created };
  }

  /** One page of triggers by id, optionally of one event name and/or job (`pageSize` 1 to 1000, default 50). */
  async list(options: { event?: string; job?: string; pageSize?: number; pageToken?: string } = {}): Promise<TriggerPage> {
    const response = await this.call((opts) =>
      this.client.listEventTriggers(
        { eventName: options.event ?? "", job: options.job ?? "", pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" },
        opts,
      ),
    );
    const page: TriggerPage = { triggers: response.triggers.map(triggerFromProto) };
    if (response.nextPageToken !== "") page.nextPageToken = response.nextPageToken;
    return page;
  }

  /** Deletes a trigger (`NotFoundError` for an unknown id). */
  async delete(triggerId: string): Promise<void> {
    await this.call((opts) => this.client.deleteEventTrigger({ triggerId }, opts));
  }
}
