/**
 * The state store: durable JSON values by key with optional expiry, atomic counters,
 * compare-and-set, and locks with fencing tokens, scoped to the API key's namespace.
 *
 * {@link State} comes in two flavours with the same methods:
 * - `stackshift.state`, outside runs: every call applies directly.
 * - `state` in a job handler's context: every call is **journaled** like a step, under the
 *   run's lease. Calls get the ids `state:1`, `state:2`, ... in the order the handler makes
 *   them; when an attempt is retried, the replayed handler gets the recorded results back (an
 *   increment is never applied twice, a read returns what it read the first time). So make
 *   state calls in a deterministic order, and do not run two of them concurrently inside one
 *   run. Step ids starting with `state:` are reserved.
 *
 * ```ts
 * stackshift.job<{ importId: string }>('importRows', async ({ payload, state }) => {
 *   const progressKey = `imports:${payload.importId}:progress`
 *   await state.set(progressKey, { processed: 100, total: 500 })
 *   const progress = await state.get<{ processed: number; total: number }>(progressKey)
 *   const processed = await state.increment(`imports:${payload.importId}:processed`)
 * })
 * ```
 *
 * State refusals (`VERSION_MISMATCH`, `NOT_AN_INTEGER`, `COUNTER_OVERFLOW`, `LOCK_NOT_HELD`)
 * reject with {@link ConflictError} (its `reason` says which). Inside a run, a lost lease or a
 * cancelled run rejects with `AttemptInterruptedError`: let it propagate.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ConnectError, type Client } from "@connectrpc/connect";
import {
  AcquireLockRequestSchema,
  DeleteStateRequestSchema,
  ExtendLockRequestSchema,
  GetStateRequestSchema,
  IncrementStateRequestSchema,
  ListStateKeysRequestSchema,
  ReleaseLockRequestSchema,
  RunContextSchema,
  SetStateRequestSchema,
  type RunContext,
  type StateService,
} from "./gen/stackshift/v1/state_pb.js";
import { directCall, type CallOptions } from "./call.js";
import { durationFromMillis, toMillis, type DurationInput } from "./duration.js";
import { conflictReason, fromConnectError, InvalidArgumentError } from "./errors.js";
import { decodeJson, encodeJson } from "./json.js";
import { write, WRITE_TIMEOUT_MS, type Lease } from "./worker/lease.js";

/** Extra time on top of a lock wait before the client gives up on the call, in ms. */
const WAIT_SLACK_MS = 10_000;

/** A live key with its value ({@link State.getEntry}). */
export interface StateEntry<T = unknown> {
  key: string;
  value: T;
  /** Grows with every write; pass it as `expectedVersion` for compare-and-set. */
  version: number;
  /** When the key expires, if it does. */
  expiresAt?: Date;
  /** When the key was last written. */
  updatedAt: Date;
}

/** A live key in a listing, without its value. */
export interface StateKey {
  key: string;
  version: number;
  expiresAt?: Date;
  updatedAt: Date;
  /** Size of the stored JSON value in bytes. */
  valueSize: number;
}

/** One page of {@link State.list}. */
export interface KeyPage {
  /** The keys, in ascending byte order. */
  keys: StateKey[];
  /** Pass as `pageToken` for the next page; undefined on the last page. */
  nextPageToken?: string;
}

/** Options of {@link State.set}. */
export interface SetOptions {
  /** The key expires this long from now (ms or `'7d'`). Not together with `expiresAt`. */
  ttl?: DurationInput;
  /** The key expires at this instant. Not together with `ttl`. */
  expiresAt?: Date;
  /**
   * Compare-and-set: write only if the key is at this version (`0` = only if absent), else
   * reject with {@link ConflictError} (`VERSION_MISMATCH`) and write nothing.
   */
  expectedVersion?: number;
}

/** Options of {@link State.increment}. */
export interface IncrementOptions {
  /** Time to live applied when this increment creates the key; a live key keeps its expiry. */
  ttl?: DurationInput;
}

/** Options of {@link State.lock}. */
export interface LockOptions {
  /** How long the lock is held unless extended or released (more than 0, at most 24 h). */
  ttl: DurationInput;
  /** How long to wait for a held lock to become free (at most 60 s). Default: try once. */
  wait?: DurationInput;
  /** Inside a run: release the lock when the run ends (default `true`). Not allowed outside runs. */
  releaseWithRun?: boolean;
}

/** Options of {@link State.list}. */
export interface ListKeysOptions {
  /** Keys per page (1-1000; default 100). */
  pageSize?: number;
  /** `nextPageToken` of the previous page. */
  pageToken?: string;
}

function date(ts: Timestamp | undefined): Date | undefined {
  return ts === undefined ? undefined : timestampDate(ts);
}

function int64(n: number, what: string): bigint {
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${what} must be an integer, got ${String(n)}`);
  return BigInt(n);
}

/** The run a handler's state journals its calls in. */
interface RunBinding {
  lease: Lease;
  calls: number;
}

/** A request that can carry a run context. */
interface WithRun {
  run?: RunContext | undefined;
}

/**
 * Access to the state store: `stackshift.state` outside runs, `state` in a handler's context
 * (journaled; see the module docs).
 */
export class State {
  /** @internal use `stackshift.state` or the handler context's `state` */
  constructor(
    private readonly client: Client<typeof StateService>,
    private readonly run?: RunBinding,
  ) {}

  /** @internal the journaled state of one execution of a handler */
  static forRun(client: Client<typeof StateService>, lease: Lease): State {
    return new State(client, { lease, calls: 0 });
  }

  /** True for a handler's `state`, whose calls are journaled in the run. */
  get isJournaled(): boolean {
    return this.run !== undefined;
  }

  /**
   * Sends one call: directly, or (inside a run) with the next call id, retried while the
   * lease lasts, with a lost lease turned into `AttemptInterruptedError`.
   */
  private async invoke<Req extends WithRun, Resp>(
    what: string,
    request: Req,
    waitMs: number,
    send: (request: Req, opts: CallOptions) => Promise<Resp>,
  ): Promise<Resp> {
    const extra = waitMs > 0 ? waitMs + WAIT_SLACK_MS : 0;
    const run = this.run;
    if (run === undefined) return directCall((opts) => send(request, opts), extra);
    const lease = run.lease;
    if (lease.interrupted) throw lease.error();
    run.calls += 1;
    request.run = create(RunContextSchema, { runId: lease.runId, leaseToken: lease.token, callId: `state:${run.calls}` });
    // Conflicts are answers, not lost leases: carry them through `write` as values.
    const outcome = await write(lease, what, async () => {
      try {
        return { ok: true as const, value: await send(request, { timeoutMs: WRITE_TIMEOUT_MS + extra }) };
      } catch (e) {
        const err = ConnectError.from(e);
        if (conflictReason(err) !== undefined) return { ok: false as const, error: err };
        throw err;
      }
    });
    if (outcome.ok) {
      if (outcome.value.ok) return outcome.value.value;
      throw fromConnectError(outcome.value.error);
    }
    switch (outcome.kind) {
      case "interrupted":
        throw outcome.error;
      case "gave-up":
        lease.interrupt(`the server stayed unreachable until the lease expired (${outcome.error.rawMessage})`);
        throw lease.error();
      case "rejected":
        throw fromConnectError(outcome.error);
    }
  }

  /**
   * The value of `key`, or `null` when it is absent or expired. `T` describes the stored
   * value; write `get<T | null>` to have the compiler check the absent case.
   */
  async get<T = unknown>(key: string): Promise<T> {
    const entry = await this.getEntry<T>(key);
    return (entry === null ? null : entry.value) as T;
  }

  /** The entry of `key` (value, version, expiry), or `null` when absent or expired. */
  async getEntry<T = unknown>(key: string): Promise<StateEntry<T> | null> {
    const request = create(GetStateRequestSchema, { key });
    const response = await this.invoke("GetState", request, 0, (r, o) => this.client.getState(r, o));
    const e = response.entry;
    if (e === undefined) return null;
    const entry: StateEntry<T> = {
      key: e.key,
      value: decodeJson(e.value, `the value of ${key}`) as T,
      version: Number(e.version),
      updatedAt: date(e.updatedAt) ?? new Date(0),
    };
    const expires = date(e.expiresAt);
    if (expires !== undefined) entry.expiresAt = expires;
    return entry;
  }

  /**
   * Writes `value` (any JSON value) to `key`; resolves to the key's new version. Without
   * `ttl` or `expiresAt` the key never expires (a set replaces an earlier expiry).
   *
   * ```ts
   * await state.set('webhooks:stripe:evt_123', { processed: true }, { ttl: '7d' })
   * ```
   */
  async set<T = unknown>(key: string, value: T, options: SetOptions = {}): Promise<number> {
    if (options.ttl !== undefined && options.expiresAt !== undefined) {
      throw new InvalidArgumentError("set: pass either ttl or expiresAt, not both");
    }
    const request = create(SetStateRequestSchema, { key, value: encodeJson(value, `the value of ${key}`) });
    if (options.ttl !== undefined) request.expiration = { case: "ttl", value: durationFromMillis(toMillis(options.ttl, "ttl")) };
    if (options.expiresAt !== undefined) {
      if (!(options.expiresAt instanceof Date) || Number.isNaN(options.expiresAt.getTime())) {
        throw new InvalidArgumentError("expiresAt must be a valid Date");
      }
      request.expiration = { case: "expiresAt", value: timestampFromDate(options.expiresAt) };
    }
    if (options.expectedVersion !== undefined) request.expectedVersion = int64(options.expectedVersion, "expectedVersion");
    const response = await this.invoke("SetState", request, 0, (r, o) => this.client.setState(r, o));
    return Number(response.version);
  }

  /**
   * Deletes `key`; resolves to whether a live key was deleted. With `expectedVersion`,
   * deletes only at that version (else {@link ConflictError} `VERSION_MISMATCH`).
   */
  async delete(key: string, options: { expectedVersion?: number } = {}): Promise<boolean> {
    const request = create(DeleteStateRequestSchema, { key });
    if (options.expectedVersion !== undefined) request.expectedVersion = int64(options.expectedVersion, "expectedVersion");
    const response = await this.invoke("DeleteState", request, 0, (r, o) => this.client.deleteState(r, o));
    return response.deleted;
  }

  /**
   * Adds `by` (default 1; negative to subtract) to the integer counter at `key`, atomically
   * (an absent key counts as 0), and resolves to the new value. Inside a run, each call is
   * applied once however often the attempt is retried.
   *
   * ```ts
   * const processed = await state.increment(`imports:${payload.importId}:processed`)
   * await state.increment(`files:${payload.fileId}:rows`, batch.length)
   * ```
   */
  async increment(key: string, by?: number, options: IncrementOptions = {}): Promise<number> {
    const request = create(IncrementStateRequestSchema, { key });
    if (by !== undefined) request.by = int64(by, "by");
    if (options.ttl !== undefined) request.ttl = durationFromMillis(toMillis(options.ttl, "ttl"));
    const response = await this.invoke("IncrementState", request, 0, (r, o) => this.client.incrementState(r, o));
    return Number(response.value);
  }

  /** One page of the live keys starting with `prefix` (`''` for all), in byte order. */
  async list(prefix = "", options: ListKeysOptions = {}): Promise<KeyPage> {
    const request = create(ListStateKeysRequestSchema, { prefix, pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" });
    const response = await this.invoke("ListStateKeys", request, 0, (r, o) => this.client.listStateKeys(r, o));
    const page: KeyPage = {
      keys: response.keys.map((k) => {
        const info: StateKey = { key: k.key, version: Number(k.version), updatedAt: date(k.updatedAt) ?? new Date(0), valueSize: Number(k.valueSize) };
        const expires = date(k.expiresAt);
        if (expires !== undefined) info.expiresAt = expires;
        return info;
      }),
    };
    if (response.nextPageToken !== "") page.nextPageToken = response.nextPageToken;
    return page;
  }

  /**
   * Takes the lock `key` for `ttl`, waiting up to `wait` for it to become free. Resolves to
   * the held {@link Lock}, or `null` when it stayed busy. Give locks a short TTL so that work
   * abandoned by a crashed owner recovers, and pass `lock.token` to what the lock protects.
   *
   * ```ts
   * const lock = await state.lock('search-index:cus_1', { ttl: '30s', wait: '5s' })
   * if (lock) {
   *   await rebuildIndex(lock.token)
   *   await lock.release()
   * }
   * ```
   */
  async lock(key: string, options: LockOptions): Promise<Lock | null> {
    const ttlMs = toMillis(options.ttl, "ttl");
    const waitMs = options.wait === undefined ? 0 : toMillis(options.wait, "wait");
    const request = create(AcquireLockRequestSchema, {
      key,
      ttl: durationFromMillis(ttlMs),
      releaseWithRun: options.releaseWithRun ?? this.isJournaled,
    });
    if (waitMs > 0) request.wait = durationFromMillis(waitMs);
    const response = await this.invoke("AcquireLock", request, waitMs, (r, o) => this.client.acquireLock(r, o));
    if (!response.granted) return null;
    return new Lock(this, key, Number(response.fencingToken), date(response.expiresAt) ?? new Date(Date.now() + ttlMs));
  }

  /**
   * Gives the lock `key` held under `token` a new TTL counted from now (what
   * {@link Lock.extend} does). Rejects with {@link ConflictError} (`LOCK_NOT_HELD`) when the
   * token no longer holds it.
   */
  async extendLock(key: string, token: number, ttl: DurationInput): Promise<Date> {
    const request = create(ExtendLockRequestSchema, { key, fencingToken: int64(token, "token"), ttl: durationFromMillis(toMillis(ttl, "ttl")) });
    const response = await this.invoke("ExtendLock", request, 0, (r, o) => this.client.extendLock(r, o));
    return date(response.expiresAt) ?? new Date(0);
  }

  /**
   * Releases the lock `key` held under `token` (what {@link Lock.release} does). Rejects with
   * {@link ConflictError} (`LOCK_NOT_HELD`) when the token no longer holds it.
   */
  async releaseLock(key: string, token: number): Promise<void> {
    const request = create(ReleaseLockRequestSchema, { key, fencingToken: int64(token, "token") });
    await this.invoke("ReleaseLock", request, 0, (r, o) => this.client.releaseLock(r, o));
  }
}

/** A held lock: extend it while working, release it when done. */
export class Lock {
  /** @internal returned by `state.lock` */
  constructor(
    private readonly state: State,
    /** The lock's key. */
    readonly key: string,
    /** The fencing token: larger than every token this lock had before. */
    readonly token: number,
    private expires: Date,
  ) {}

  /** When the lock expires (as of the grant or the last extension). */
  get expiresAt(): Date {
    return this.expires;
  }

  /**
   * Gives the lock a new TTL counted from now. Rejects with {@link ConflictError}
   * (`LOCK_NOT_HELD`) when it expired or was taken by someone else meanwhile.
   */
  async extend(ttl: DurationInput): Promise<Date> {
    this.expires = await this.state.extendLock(this.key, this.token, ttl);
    return this.expires;
  }

  /** Releases the lock. Rejects with {@link ConflictError} (`LOCK_NOT_HELD`) when the token no longer holds it. */
  release(): Promise<void> {
    return this.state.releaseLock(this.key, this.token);
  }
}
