/**
 * Queue management types: {@link QueueConfig} (limits, retry policy, lease timeout),
 * {@link QueueInfo} (configuration, pause switch and live {@link QueueStats}), and their wire
 * conversions. The methods live on `Queue` (`stackshift.queue(name).configure(...)`, `get`,
 * `pause`, `resume`) and `stackshift.listQueues()`.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { RetryPolicySchema, type RetryPolicy as PbRetryPolicy } from "./gen/stackshift/v1/common_pb.js";
import { QueueConfigSchema, RateLimitSchema, type Queue as PbQueue, type QueueConfig as PbQueueConfig } from "./gen/stackshift/v1/queues_pb.js";
import { durationFromMillis, millisFromDuration, toMillis, type DurationInput } from "./duration.js";
import type { RetryPolicy } from "./run.js";

/** At most `limit` attempts start per sliding window of `period`. */
export interface RateLimit {
  /** Attempts allowed per period (1-100000). */
  limit: number;
  /** The window: ms or `'1m'`-style (1 s to 24 h). */
  period: DurationInput;
}

/**
 * A queue's configuration. Every field is optional; an unset field means "no limit" or "the
 * server default". `configure` replaces the whole configuration.
 */
export interface QueueConfig {
  /** Most runs of the queue holding a lease at once, across all workers (1-100000). */
  concurrencyLimit?: number;
  /** Most runs holding a lease at once per `concurrencyKey` given at start (1-100000). */
  keyConcurrencyLimit?: number;
  /** Attempts started per period. */
  rateLimit?: RateLimit;
  /** Retry policy for runs started on this queue without one. */
  retryPolicy?: RetryPolicy;
  /** Lease timeout for runs that set none at start: ms or `'2m'`-style (1 s to 1 h). */
  leaseTimeout?: DurationInput;
}

/** Options of `queue(name).configure(...)`. */
export interface ConfigureQueueOptions extends QueueConfig {
  /** Also sets the pause switch. Default: leave it as it is (a new queue is not paused). */
  paused?: boolean;
}

/** A queue's live counts. */
export interface QueueStats {
  queued: number;
  /** Queued runs not deliverable yet (a delay, a `runAt`, or a retry backoff). */
  delayed: number;
  running: number;
  waiting: number;
  completed: number;
  failed: number;
  cancelled: number;
  /** How long the oldest deliverable queued run has been deliverable, in ms. */
  oldestQueuedAgeMs?: number;
  /** The concurrency keys with the most running runs (at most 20), most first. */
  runningByKey: { key: string; running: number }[];
  /** Attempts started within the current rate-limit window. */
  rateWindowStarted: number;
}

/** A queue's configuration and state. */
export interface QueueInfo {
  name: string;
  /** The configuration, with `rateLimit.period` and `leaseTimeout` in ms. */
  config: QueueConfig;
  paused: boolean;
  stats: QueueStats;
  createdAt?: Date;
  updatedAt?: Date;
}

/** One page of `listQueues`. */
export interface QueuePage {
  /** In name order. */
  queues: QueueInfo[];
  /** Pass as `pageToken` for the next page; undefined at the end. */
  nextPageToken?: string;
}

/** A {@link RetryPolicy} on the wire. */
export function retryPolicyToProto(p: RetryPolicy): PbRetryPolicy {
  const policy = create(RetryPolicySchema, { maxAttempts: p.maxAttempts ?? 0, backoffCoefficient: p.backoffCoefficient ?? 0 });
  if (p.initialInterval !== undefined) policy.initialInterval = durationFromMillis(toMillis(p.initialInterval, "initialInterval"));
  if (p.maximumInterval !== undefined) policy.maximumInterval = durationFromMillis(toMillis(p.maximumInterval, "maximumInterval"));
  return policy;
}

/** A wire retry policy as a {@link RetryPolicy} (unset fields left out). */
export function retryPolicyFromProto(p: PbRetryPolicy): RetryPolicy {
  const policy: RetryPolicy = {};
  if (p.maxAttempts !== 0) policy.maxAttempts = p.maxAttempts;
  if (p.backoffCoefficient !== 0) policy.backoffCoefficient = p.backoffCoefficient;
  const initial = millisFromDuration(p.initialInterval);
  const maximum = millisFromDuration(p.maximumInterval);
  if (initial !== undefined) policy.initialInterval = initial;
  if (maximum !== undefined) policy.maximumInterval = maximum;
  return policy;
}

/** A {@link QueueConfig} on the wire. */
export function queueConfigToProto(c: QueueConfig): PbQueueConfig {
  const config = create(QueueConfigSchema, {});
  if (c.concurrencyLimit !== undefined) config.concurrencyLimit = c.concurrencyLimit;
  if (c.keyConcurrencyLimit !== undefined) config.keyConcurrencyLimit = c.keyConcurrencyLimit;
  if (c.rateLimit !== undefined) {
    config.rateLimit = create(RateLimitSchema, { limit: c.rateLimit.limit, period: durationFromMillis(toMillis(c.rateLimit.period, "rateLimit.period")) });
  }
  if (c.retryPolicy !== undefined) config.retryPolicy = retryPolicyToProto(c.retryPolicy);
  if (c.leaseTimeout !== undefined) config.leaseTimeout = durationFromMillis(toMillis(c.leaseTimeout, "leaseTimeout"));
  return config;
}

/** A wire queue as a {@link QueueInfo}. */
export function queueFromProto(q: PbQueue): QueueInfo {
  const config: QueueConfig = {};
  const c = q.config;
  if (c !== undefined) {
    if (c.concurrencyLimit !== undefined) config.concurrencyLimit = c.concurrencyLimit;
    if (c.keyConcurrencyLimit !== undefined) config.keyConcurrencyLimit = c.keyConcurrencyLimit;
    if (c.rateLimit !== undefined) config.rateLimit = { limit: c.rateLimit.limit, period: millisFromDuration(c.rateLimit.period) ?? 0 };
    if (c.retryPolicy !== undefined) config.retryPolicy = retryPolicyFromProto(c.retryPolicy);
    const lease = millisFromDuration(c.leaseTimeout);
    if (lease !== undefined) config.leaseTimeout = lease;
  }
  const s = q.stats;
  const stats: QueueStats = {
    queued: Number(s?.queued ?? 0n),
    delayed: Number(s?.delayed ?? 0n),
    running: Number(s?.running ?? 0n),
    waiting: Number(s?.waiting ?? 0n),
    completed: Number(s?.completed ?? 0n),
    failed: Number(s?.failed ?? 0n),
    cancelled: Number(s?.cancelled ?? 0n),
    runningByKey: (s?.runningByKey ?? []).map((k) => ({ key: k.key, running: Number(k.running) })),
    rateWindowStarted: Number(s?.rateWindowStarted ?? 0n),
  };
  const age = millisFromDuration(s?.oldestQueuedAge);
  if (age !== undefined) stats.oldestQueuedAgeMs = age;
  const info: QueueInfo = { name: q.name, config, paused: q.paused, stats };
  if (q.createdAt !== undefined) info.createdAt = timestampDate(q.createdAt);
  if (q.updatedAt !== undefined) info.updatedAt = timestampDate(q.updatedAt);
  return info;
}
