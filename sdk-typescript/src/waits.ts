/**
 * Combined waits: the types of `step.waitForAny` and `step.waitForAll` ({@link WaitItem},
 * {@link ItemResult}, {@link AnyResult}, {@link AllResult}) and the decoding of their journal
 * entries. See docs/events.md, "Waiting for any or all of several things".
 *
 * ```ts
 * // Approval, or a reminder after a day, whichever comes first.
 * const got = await step.waitForAny('approval', [{ event: 'order.approved', key: orderId }, { sleep: '1d' }])
 * if (!got.timedOut && got.result.kind === 'event') approve(got.result.event.payload)
 * else await step.run('remind', () => sendReminder(orderId))
 * ```
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { WaitItemSchema, type WaitItem as PbWaitItem } from "./gen/stackshift/v1/worker_pb.js";
import { durationFromMillis, toMillis, type DurationInput } from "./duration.js";
import { eventFromJournal, type Event } from "./events.js";
import { NonRetryableError } from "./errors.js";

/**
 * One item of a combined wait: an event (the first event `event` with exactly the
 * correlation key `key`, default none, from the run's inbox), a sleep of a duration (ms or
 * `'1h'`-style, counted from when the server receives the wait), or a sleep until a time.
 */
export type WaitItem = { event: string; key?: string } | { sleep: DurationInput } | { sleepUntil: Date };

/** What one item resolved with: the event it received, or its sleep ended. */
export type ItemResult<T = unknown> = { kind: "event"; event: Event<T> } | { kind: "slept" };

/** The result of `step.waitForAny`: the first item that resolved, or the timeout. */
export type AnyResult<T = unknown> =
  | { timedOut: false; /** The item's position in the list given. */ index: number; result: ItemResult<T> }
  | { timedOut: true };

/** The result of `step.waitForAll`: each item's result in the order given. */
export interface AllResult<T = unknown> {
  /** True when the wait's timeout passed before every item resolved. */
  timedOut: boolean;
  /** Each item's result; `null` for an item that had not resolved at the timeout. */
  items: (ItemResult<T> | null)[];
}

/** Options of `step.waitForAny` / `step.waitForAll`. */
export interface CombinedWaitOptions {
  /**
   * The timeout of the whole wait: ms or `'7d'`-style (0 to 365 days). Required unless a
   * sleep item bounds the wait (any: one sleep item; all: sleep items only).
   */
  timeout?: DurationInput;
}

/** The items and timeout on the wire; a bad item is a non-retryable error naming it. */
export function combinedToProto(what: string, items: WaitItem[], options: CombinedWaitOptions): { items: PbWaitItem[]; timeoutMs?: number } {
  if (!Array.isArray(items)) throw new NonRetryableError(`${what}: items must be an array`);
  const out = items.map((item, i) => {
    const name = `${what}: items[${i}]`;
    if (typeof item !== "object" || item === null) throw new NonRetryableError(`${name} must be an object`);
    if ("event" in item) {
      if (typeof item.event !== "string") throw new NonRetryableError(`${name}.event must be a string`);
      return create(WaitItemSchema, { item: { case: "event", value: { eventName: item.event, correlationKey: item.key ?? "" } } });
    }
    if ("sleep" in item) {
      let ms: number;
      try {
        ms = toMillis(item.sleep, "sleep");
      } catch (e) {
        throw new NonRetryableError(`${name}: ${(e as Error).message}`, { cause: e });
      }
      return create(WaitItemSchema, { item: { case: "sleep", value: { duration: durationFromMillis(ms) } } });
    }
    if ("sleepUntil" in item) {
      if (!(item.sleepUntil instanceof Date) || Number.isNaN(item.sleepUntil.getTime())) throw new NonRetryableError(`${name}.sleepUntil must be a valid Date`);
      return create(WaitItemSchema, { item: { case: "sleep", value: { until: timestampFromDate(item.sleepUntil) } } });
    }
    throw new NonRetryableError(`${name} must be {event, key?}, {sleep} or {sleepUntil}`);
  });
  if (options.timeout === undefined) return { items: out };
  try {
    return { items: out, timeoutMs: toMillis(options.timeout, "timeout") };
  } catch (e) {
    throw new NonRetryableError(`${what}: ${(e as Error).message}`, { cause: e });
  }
}

/** An item's journaled output: an EVENT wait output, or `null` for a sleep. */
function itemResult(output: unknown): ItemResult {
  if (output === null || output === undefined) return { kind: "slept" };
  const event = eventFromJournal(output);
  if (event === null) throw new Error("an item is recorded as timed out");
  return { kind: "event", event };
}

/** `{"timedOut":false,"index":I,"output":O}` or `{"timedOut":true}`. */
export function anyFromJournal(output: unknown): AnyResult {
  if (typeof output !== "object" || output === null) throw new Error("the journaled wait result is not an object");
  const o = output as { timedOut?: unknown; index?: unknown; output?: unknown };
  if (o.timedOut === true) return { timedOut: true };
  if (typeof o.index !== "number") throw new Error("the journaled wait result has no index");
  return { timedOut: false, index: o.index, result: itemResult(o.output) };
}

/** `{"timedOut":B,"outputs":[O,...],"resolved":[B,...]}`. */
export function allFromJournal(output: unknown): AllResult {
  if (typeof output !== "object" || output === null) throw new Error("the journaled wait result is not an object");
  const o = output as { timedOut?: unknown; outputs?: unknown; resolved?: unknown };
  if (!Array.isArray(o.outputs)) throw new Error("the journaled wait result has no outputs");
  const resolved = Array.isArray(o.resolved) ? (o.resolved as unknown[]) : [];
  return {
    timedOut: o.timedOut === true,
    items: (o.outputs as unknown[]).map((out, i) => (resolved[i] === false ? null : itemResult(out))),
  };
}
