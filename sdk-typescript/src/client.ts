/**
 * The client: {@link StackShift} starts, inspects, waits for, lists, cancels and retries runs,
 * registers job handlers, creates workers, and gives access to the state store
 * (`stackshift.state`) and events (`stackshift.events`); {@link Queue} enqueues onto a named
 * queue and configures, pauses and resumes it.
 *
 * @module
 */

import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { JobsService, StartRunRequestSchema } from "./gen/stackshift/v1/jobs_pb.js";
import { RunStatus as PbRunStatus } from "./gen/stackshift/v1/common_pb.js";
import { WorkerService } from "./gen/stackshift/v1/worker_pb.js";
import { StateService } from "./gen/stackshift/v1/state_pb.js";
import { EventsService } from "./gen/stackshift/v1/events_pb.js";
import { QueuesService, UpsertQueueRequestSchema, type Queue as PbQueue } from "./gen/stackshift/v1/queues_pb.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ScheduleService } from "./gen/stackshift/v1/schedules_pb.js";
import { TriggerService } from "./gen/stackshift/v1/triggers_pb.js";
import { State } from "./state.js";
import { Schedules } from "./schedules.js";
import { Triggers, type TriggerDeclaration, type TriggeredEvent, type TriggerDeclarationError } from "./triggers.js";
import { Events } from "./events.js";
import { directCall } from "./call.js";
import { queueConfigToProto, queueFromProto, retryPolicyToProto, type ConfigureQueueOptions, type QueueInfo, type QueuePage } from "./queues.js";
import { durationFromMillis, toMillis, type DurationInput } from "./duration.js";
import { fromConnectError, InvalidArgumentError } from "./errors.js";
import { encodeJson } from "./json.js";
import { isFinal, runFromProto, statusToProto, type RetryPolicy, type Run, type RunPage, type RunStatus, type StartedRun } from "./run.js";
import type { Handler } from "./context.js";
import type { RegisteredJob } from "./worker/task.js";
import { Worker, type WorkerOptions } from "./worker/worker.js";
import { sleep } from "./worker/backoff.js";

/** The endpoint used when none is configured. */
export const DEFAULT_ENDPOINT = "http://127.0.0.1:7447";
/** SDK version, sent in the user agent. */
export const SDK_VERSION = "0.1.0";

/** Deadline for ordinary calls, in ms. */
const CALL_TIMEOUT_MS = 30_000;
/** The longest wait the server accepts for one `GetRun` long-poll, in ms. */
const MAX_SERVER_WAIT_MS = 60_000;
/** Extra time on top of a long-poll's wait before the client gives up, in ms. */
const LONG_POLL_SLACK_MS = 10_000;

/** How to reach the server. Unset fields come from the environment. */
export interface StackShiftOptions {
  /** API key, sent as `authorization: Bearer <key>`. Default: `STACKSHIFT_API_KEY`. */
  apiKey?: string;
  /** Server URL (`http://host:port`). Default: `STACKSHIFT_ENDPOINT`, else `http://127.0.0.1:7447`. */
  endpoint?: string;
  /**
   * CA certificate(s) trusted for an `https://` endpoint instead of the system roots: PEM bytes
   * (`Uint8Array`/`Buffer`) or the path of a PEM file. Default: the file named by
   * `STACKSHIFT_TLS_CA`.
   */
  tlsCa?: Uint8Array | string;
  /**
   * Client certificate for mutual TLS (with {@link tlsClientKey}; both or neither): PEM bytes or
   * a path. Default: the file named by `STACKSHIFT_TLS_CLIENT_CERT`.
   */
  tlsClientCert?: Uint8Array | string;
  /** Client private key for mutual TLS: PEM bytes or a path. Default: `STACKSHIFT_TLS_CLIENT_KEY`. */
  tlsClientKey?: Uint8Array | string;
  /** A custom Connect transport (advanced; `endpoint` and the TLS options are then ignored). */
  transport?: Transport;
}

/** PEM bytes as given, or read from a path; `undefined` when unset. */
function pem(field: string, value: Uint8Array | string | undefined): Buffer | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string") return Buffer.from(value);
  try {
    return readFileSync(value);
  } catch (e) {
    throw new InvalidArgumentError(`invalid TLS settings: ${field}: cannot read ${JSON.stringify(value)}: ${(e as Error).message}`);
  }
}

/** Options for `start` and `enqueue`. */
export interface StartOptions {
  /** The queue to run on (default `'default'`). */
  queueName?: string;
  /** A duplicate start with this key within its TTL returns the existing run. */
  idempotencyKey?: string;
  /** How long the key is remembered: ms or `'30d'`-style (default 24 h, at most 365 d). */
  idempotencyTtl?: DurationInput;
  /** Overrides the default retry policy for this run. */
  retryPolicy?: RetryPolicy;
  /** Lease timeout of this run's attempts: ms or `'30s'`-style (1 s to 1 h). */
  leaseTimeout?: DurationInput;
  /** Delays the first delivery: ms or `'10m'`-style (at most 365 d). Not together with `runAt`. */
  delay?: DurationInput;
  /** Delivers the run no earlier than this instant (at most 365 d ahead). Not together with `delay`. */
  runAt?: Date;
  /** Delivery priority within the queue, -1000 to 1000 (default 0; higher first). */
  priority?: number;
  /** Concurrency key (e.g. a customer id), limited by the queue's `keyConcurrencyLimit`. */
  concurrencyKey?: string;
  /** Aborts the call. */
  signal?: AbortSignal;
}

/** Filters for `listRuns`. Results are newest first. */
export interface ListRunsOptions {
  job?: string;
  queue?: string;
  status?: RunStatus;
  /** 1 to 1000 (default 50). */
  pageSize?: number;
  /** `nextPageToken` of the previous page. */
  pageToken?: string;
}

/** Per-job settings for `stackshift.job(name, handler, options)`. */
export interface JobOptions {
  /** Lease timeout for runs that set none at start: ms or `'2m'`-style (default 30 s). */
  leaseTimeout?: DurationInput;
  /**
   * Event triggers of the job: each published event of the name (with exactly `key`, when
   * given) starts a run of this job, whose payload is the {@link TriggeredEvent}. A worker
   * running the job creates them (idempotently) when it starts, before it polls; the runs go
   * to the worker's first queue unless a declaration names `queueName`. A declaration the
   * server refuses (e.g. the same trigger exists with other options) stops the worker with a
   * {@link TriggerDeclarationError} (see `worker.ready` and `stackshift.startWorker`).
   */
  triggers?: TriggerDeclaration[];
}

/** A registered job. */
export interface JobDefinition<P = unknown> {
  /** The job's name. */
  readonly name: string;
  /** Starts a run of this job (same as `stackshift.start(name, payload, options)`). */
  start(payload: P, options?: StartOptions): Promise<StartedRun>;
}

/**
 * A StackShift client, and the registry of job handlers its workers run.
 *
 * ```ts
 * const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY! })
 * stackshift.job<{ userId: string }>('sendVerificationEmail', async ({ payload, step }) => {
 *   await step.run('send', () => sendEmail(payload.userId))
 *   return { sent: true }
 * })
 * const worker = stackshift.work({ queues: ['emails'] })
 * await stackshift.queue('emails').enqueue('sendVerificationEmail', { userId: 'user_123' })
 * ```
 */
export class StackShift {
  /** The generated `JobsService` client (raw access). */
  readonly jobs: Client<typeof JobsService>;
  /** The generated `WorkerService` client (raw access). */
  readonly workerService: Client<typeof WorkerService>;
  /** The generated `QueuesService` client (raw access). */
  readonly queuesService: Client<typeof QueuesService>;
  /** The generated `StateService` client (raw access). */
  readonly stateService: Client<typeof StateService>;
  /**
   * The state store, outside runs (calls apply directly, not journaled). Inside a handler use
   * the context's `state`, which journals its calls in the run.
   *
   * ```ts
   * await stackshift.state.set('webhooks:stripe:evt_123', { processed: true }, { ttl: '7d' })
   * const marker = await stackshift.state.get<{ processed: boolean } | null>('webhooks:stripe:evt_123')
   * ```
   */
  readonly state: State;
  /** Publishes and lists events: `stackshift.events.publish(name, payload, { key, id })`. */
  readonly events: Events;
  /**
   * Creates, reads, lists, pauses, resumes and deletes schedules (cron or fixed interval).
   *
   * ```ts
   * await stackshift.schedules.create('sync', { job: 'sync-crm', every: '30s' })
   * ```
   */
  readonly schedules: Schedules;
  /**
   * Creates, lists and deletes event triggers (a job started by every event of a name).
   *
   * ```ts
   * await stackshift.triggers.create({ event: 'user.signed_up', job: 'send-welcome-email' })
   * ```
   */
  readonly triggers: Triggers;
  /** The server URL this client talks to. */
  readonly endpoint: string;
  private readonly registry = new Map<string, RegisteredJob>();

  constructor(options: StackShiftOptions = {}) {
    const env = (name: string) => {
      const v = process.env[name];
      return v === undefined || v.trim() === "" ? undefined : v.trim();
    };
    this.endpoint = (options.endpoint ?? env("STACKSHIFT_ENDPOINT") ?? DEFAULT_ENDPOINT).trim();
    const apiKey = options.apiKey ?? env("STACKSHIFT_API_KEY");
    if (apiKey !== undefined && !/^[\x21-\x7e]+$/.test(apiKey)) {
      throw new InvalidArgumentError("apiKey must be non-empty printable ASCII without spaces");
    }
    let transport = options.transport;
    if (transport === undefined) {
      let url: URL;
      try {
        url = new URL(this.endpoint);
      } catch {
        throw new InvalidArgumentError(`invalid endpoint ${JSON.stringify(this.endpoint)}: expected e.g. http://127.0.0.1:7447`);
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new InvalidArgumentError(`endpoint ${JSON.stringify(this.endpoint)} must start with http:// or https://`);
      }
      const auth: Interceptor = (next) => (req) => {
        if (apiKey !== undefined) req.header.set("authorization", `Bearer ${apiKey}`);
        req.header.set("user-agent", `stackshift-sdk-typescript/${SDK_VERSION}`);
        return next(req);
      };
      const ca = pem("tlsCa", options.tlsCa ?? env("STACKSHIFT_TLS_CA"));
      const cert = pem("tlsClientCert", options.tlsClientCert ?? env("STACKSHIFT_TLS_CLIENT_CERT"));
      const key = pem("tlsClientKey", options.tlsClientKey ?? env("STACKSHIFT_TLS_CLIENT_KEY"));
      if ((cert === undefined) !== (key === undefined)) {
        throw new InvalidArgumentError("invalid TLS settings: set both tlsClientCert and tlsClientKey for mutual TLS, or neither");
      }
      const nodeOptions = url.protocol === "https:" ? { ...(ca && { ca }), ...(cert && key && { cert, key }) } : undefined;
      transport = createGrpcTransport({
        baseUrl: this.endpoint,
        ...(nodeOptions && { nodeOptions }),
        interceptors: [auth],
        pingIntervalMs: 30_000,
        pingTimeoutMs: 10_000,
        readMaxBytes: 64 * 1024 * 1024,
      });
    }
    this.jobs = createClient(JobsService, transport);
    this.workerService = createClient(WorkerService, transport);
    this.queuesService = createClient(QueuesService, transport);
    this.stateService = createClient(StateService, transport);
    this.state = new State(this.stateService);
    this.events = new Events(createClient(EventsService, transport), directCall);
    this.schedules = new Schedules(createClient(ScheduleService, transport), directCall);
    this.triggers = new Triggers(createClient(TriggerService, transport), directCall);
  }

  /**
   * Starts a run of `job` with `payload` (any JSON value). With an `idempotencyKey` already
   * used within its TTL, returns the existing run with `duplicate: true` instead.
   *
   * ```ts
   * await stackshift.start('send-verification-email', { userId: 'user_123' }, {
   *   queueName: 'emails', idempotencyKey: 'verify:user_123', idempotencyTtl: '30d',
   * })
   * ```
   */
  async start<P = unknown>(job: string, payload: P, options: StartOptions = {}): Promise<StartedRun> {
    const request = create(StartRunRequestSchema, {
      job,
      payload: encodeJson(payload, "payload"),
      queue: options.queueName ?? "",
      idempotencyKey: options.idempotencyKey ?? "",
    });
    if (options.idempotencyTtl !== undefined) request.idempotencyTtl = durationFromMillis(toMillis(options.idempotencyTtl, "idempotencyTtl"));
    if (options.leaseTimeout !== undefined) request.leaseTimeout = durationFromMillis(toMillis(options.leaseTimeout, "leaseTimeout"));
    if (options.retryPolicy !== undefined) request.retryPolicy = retryPolicyToProto(options.retryPolicy);
    if (options.delay !== undefined && options.runAt !== undefined) throw new InvalidArgumentError("pass either delay or runAt, not both");
    if (options.delay !== undefined) request.delay = durationFromMillis(toMillis(options.delay, "delay"));
    if (options.runAt !== undefined) {
      if (!(options.runAt instanceof Date) || Number.isNaN(options.runAt.getTime())) throw new InvalidArgumentError("runAt must be a valid Date");
      request.runAt = timestampFromDate(options.runAt);
    }
    if (options.priority !== undefined) {
      if (!Number.isInteger(options.priority)) throw new InvalidArgumentError(`priority must be an integer from -1000 to 1000, got ${options.priority}`);
      request.priority = options.priority;
    }
    if (options.concurrencyKey !== undefined) request.concurrencyKey = options.concurrencyKey;
    const response = await this.call(() => this.jobs.startRun(request, this.callOptions(options.signal)));
    if (response.run === undefined) throw new Error("unexpected response from server: StartRun without a run");
    const run = runFromProto(response.run);
    return { id: run.id, run, duplicate: response.duplicate };
  }

  /** A handle on a named queue: `stackshift.queue('emails').enqueue(job, payload, options)`. */
  queue(name: string): Queue {
    return new Queue(this, name);
  }

  /** A run with its attempts and steps. Rejects with `NotFoundError` for an unknown id. */
  async getRun(runId: string, options: { signal?: AbortSignal } = {}): Promise<Run> {
    const response = await this.call(() => this.jobs.getRun({ runId }, this.callOptions(options.signal)));
    if (response.run === undefined) throw new Error("unexpected response from server: GetRun without a run");
    return runFromProto(response.run);
  }

  /**
   * Waits until the run is completed, failed or cancelled, or until `timeout` (default
   * `'60s'`) passes, and returns the run as it then is (check `run.status`).
   */
  async waitForRun(runId: string, options: { timeout?: DurationInput; signal?: AbortSignal } = {}): Promise<Run> {
    const until = Date.now() + toMillis(options.timeout ?? 60_000, "timeout");
    for (;;) {
      const left = until - Date.now();
      const waitMs = Math.max(0, Math.min(left, MAX_SERVER_WAIT_MS));
      const response = await this.call(() =>
        this.jobs.getRun(
          { runId, ...(waitMs > 0 ? { wait: durationFromMillis(waitMs) } : {}) },
          { timeoutMs: waitMs + LONG_POLL_SLACK_MS, ...(options.signal ? { signal: options.signal } : {}) },
        ),
      );
      if (response.run === undefined) throw new Error("unexpected response from server: GetRun without a run");
      const run = runFromProto(response.run);
      if (isFinal(run.status) || Date.now() >= until) return run;
      if (options.signal?.aborted) return run;
      // The server answered early without a final status (e.g. it restarted); try again.
      if (waitMs < 1_000) await sleep(100, options.signal);
    }
  }

  /** One page of runs, newest first. */
  async listRuns(options: ListRunsOptions = {}): Promise<RunPage> {
    const response = await this.call(() =>
      this.jobs.listRuns(
        {
          job: options.job ?? "",
          queue: options.queue ?? "",
          status: options.status === undefined ? PbRunStatus.UNSPECIFIED : statusToProto(options.status),
          pageSize: options.pageSize ?? 0,
          pageToken: options.pageToken ?? "",
        },
        this.callOptions(),
      ),
    );
    const page: RunPage = { runs: response.runs.map(runFromProto) };
    if (response.nextPageToken !== "") page.nextPageToken = response.nextPageToken;
    return page;
  }

  /** Cancels a queued, running or waiting run (`FailedPreconditionError` on a final run). */
  async cancelRun(runId: string, reason = ""): Promise<Run> {
    const response = await this.call(() => this.jobs.cancelRun({ runId, reason }, this.callOptions()));
    if (response.run === undefined) throw new Error("unexpected response from server: CancelRun without a run");
    return runFromProto(response.run);
  }

  /** Gives a failed or cancelled run new attempts; its completed steps stay memoized. */
  async retryRun(runId: string): Promise<Run> {
    const response = await this.call(() => this.jobs.retryRun({ runId }, this.callOptions()));
    if (response.run === undefined) throw new Error("unexpected response from server: RetryRun without a run");
    return runFromProto(response.run);
  }

  /**
   * Registers `handler` for the job `name`; workers created by this client run it.
   * Registering a name twice keeps the last handler.
   *
   * ```ts
   * stackshift.job<{ fileId: string }>('processUpload', async ({ payload, step }) => {
   *   const file = await step.run('download-file', () => downloadFile(payload.fileId))
   *   return { bytes: file.length }
   * })
   * ```
   */
  job<P = unknown>(name: string, handler: Handler<P>, options: JobOptions = {}): JobDefinition<P> {
    if (typeof handler !== "function") throw new InvalidArgumentError(`the handler of job ${name} must be a function`);
    const job: RegisteredJob = { handler: handler as Handler<any> };
    if (options.leaseTimeout !== undefined) job.leaseTimeoutMs = toMillis(options.leaseTimeout, "leaseTimeout");
    if (options.triggers !== undefined) {
      if (!Array.isArray(options.triggers)) throw new InvalidArgumentError(`the triggers of job ${name} must be an array`);
      for (const t of options.triggers) {
        if (typeof t !== "object" || t === null || typeof t.event !== "string" || t.event === "") {
          throw new InvalidArgumentError(`each trigger of job ${name} needs an event name: { event: 'user.signed_up', key?, queueName? }`);
        }
      }
      job.triggers = options.triggers.map((t) => ({ ...t }));
    }
    this.registry.set(name, job);
    return { name, start: (payload: P, startOptions?: StartOptions) => this.start(name, payload, startOptions) };
  }

  /** The names of the registered jobs. */
  get registeredJobs(): string[] {
    return [...this.registry.keys()];
  }

  /** One page of the namespace's queues in name order, with configuration and live statistics. */
  async listQueues(options: { pageSize?: number; pageToken?: string } = {}): Promise<QueuePage> {
    const response = await this.call(() =>
      this.queuesService.listQueues({ pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" }, this.callOptions()),
    );
    const page: QueuePage = { queues: response.queues.map(queueFromProto) };
    if (response.nextPageToken !== "") page.nextPageToken = response.nextPageToken;
    return page;
  }

  /** A worker for every job registered so far (not started; call `start()` or `runUntil()`). */
  worker(options: WorkerOptions = {}): Worker {
    return new Worker(this.workerService, this.stateService, this.triggers, new Map(this.registry), options);
  }

  /**
   * Creates a worker for every job registered so far and starts it. Stop it with `shutdown()`.
   * It first creates the jobs' declared triggers; `await worker.ready` to know they exist (or
   * use {@link StackShift.startWorker}).
   */
  work(options: WorkerOptions = {}): Worker {
    return this.worker(options).start();
  }

  /**
   * Creates and starts a worker, and resolves once it is ready: the jobs' declared triggers
   * exist and it polls. Rejects, with the worker stopped, with {@link TriggerDeclarationError}
   * when the server refuses a declared trigger, or with `UnavailableError` when the server
   * cannot be reached to create them (like Rust's `Worker::try_start`; `work()` retries in the
   * background instead).
   *
   * ```ts
   * const worker = await stackshift.startWorker({ queues: ['emails'] })
   * ```
   */
  async startWorker(options: WorkerOptions = {}): Promise<Worker> {
    const worker = this.worker(options).startFailFast();
    await worker.ready;
    return worker;
  }

  /** @internal sends one call with the default deadline, throwing typed errors */
  call<T>(f: () => Promise<T>): Promise<T> {
    return this.callTyped(f);
  }

  /** @internal */
  callOptions(signal?: AbortSignal): { timeoutMs: number; signal?: AbortSignal } {
    return signal === undefined ? { timeoutMs: CALL_TIMEOUT_MS } : { timeoutMs: CALL_TIMEOUT_MS, signal };
  }

  private async callTyped<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      throw fromConnectError(e);
    }
  }
}

/** A named queue. `queue(name).enqueue(job, payload, opts)` is `start(job, payload, { queueName: name, ...opts })`. */
export class Queue {
  /** @internal use `stackshift.queue(name)` */
  constructor(
    private readonly client: StackShift,
    /** The queue's name. */
    readonly name: string,
  ) {}

  /** Starts a run of `job` on this queue. */
  enqueue<P = unknown>(job: string, payload: P, options: Omit<StartOptions, "queueName"> = {}): Promise<StartedRun> {
    return this.client.start(job, payload, { ...options, queueName: this.name });
  }

  /**
   * Creates the queue or replaces its whole configuration (unset fields become unlimited or
   * default). Runs already queued are delivered under the new limits from the next claim on.
   *
   * ```ts
   * await stackshift.queue('emails').configure({
   *   concurrencyLimit: 10, keyConcurrencyLimit: 1, rateLimit: { limit: 100, period: '1m' },
   *   retryPolicy: { maxAttempts: 3 }, leaseTimeout: '2m',
   * })
   * ```
   */
  async configure(options: ConfigureQueueOptions = {}): Promise<QueueInfo> {
    const request = create(UpsertQueueRequestSchema, { name: this.name, config: queueConfigToProto(options) });
    if (options.paused !== undefined) request.paused = options.paused;
    return this.answer(await this.client.call(() => this.client.queuesService.upsertQueue(request, this.client.callOptions())));
  }

  /** The queue's configuration and live statistics (`NotFoundError` for an unknown queue). */
  async get(): Promise<QueueInfo> {
    return this.answer(await this.client.call(() => this.client.queuesService.getQueue({ name: this.name }, this.client.callOptions())));
  }

  /** Stops delivery from the queue (running runs continue; new starts wait). The queue must exist. */
  async pause(): Promise<QueueInfo> {
    return this.answer(await this.client.call(() => this.client.queuesService.pauseQueue({ name: this.name }, this.client.callOptions())));
  }

  /** Restarts delivery from a paused queue. */
  async resume(): Promise<QueueInfo> {
    return this.answer(await this.client.call(() => this.client.queuesService.resumeQueue({ name: this.name }, this.client.callOptions())));
  }

  private answer(response: { queue?: PbQueue | undefined }): QueueInfo {
    if (response.queue === undefined) throw new Error("unexpected response from server: a queue answer without a queue");
    return queueFromProto(response.queue);
  }
}
