/**
 * Durable sleeps, event waits, child-run waits and combined (any/all) waits: `SuspendRun`. The server either resolves the wait at once
 * (the sleep's time has passed, or a matching event is already in the run's inbox) and the
 * handler continues under the same lease (SATISFIED), or stores the wait and releases the
 * lease (SUSPENDED), in which case the attempt is interrupted: the worker stops the handler,
 * frees its slot and reports nothing. When the wait ends the run is delivered again, and the
 * replay returns the journaled result at the same call.
 *
 * @module
 */

import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { JournalEntryKind } from "../gen/stackshift/v1/common_pb.js";
import {
  ChildWaitSchema,
  CombinedWaitSchema,
  EventWaitSchema,
  SleepWaitSchema,
  SuspendOutcome,
  SuspendRunRequestSchema,
  type ChildRunSpec,
  type SuspendRunRequest,
  type WaitItem,
  type WorkerService,
} from "../gen/stackshift/v1/worker_pb.js";
import { durationFromMillis, type DurationInput } from "../duration.js";
import { fromConnectError, NonRetryableError } from "../errors.js";
import type { Recorded } from "../context.js";
import { write, type Lease } from "./lease.js";
import type { RunLogger } from "./runlog.js";

/** How a journal kind is named in messages. */
export function kindName(kind: JournalEntryKind): string {
  switch (kind) {
    case JournalEntryKind.STEP:
      return "step";
    case JournalEntryKind.SLEEP:
      return "sleep";
    case JournalEntryKind.EVENT:
      return "event wait";
    case JournalEntryKind.STATE:
      return "state call";
    case JournalEntryKind.CHILD:
      return "child-run wait";
    case JournalEntryKind.ANY:
      return "wait for any";
    case JournalEntryKind.ALL:
      return "wait for all";
    default:
      return "journal entry of an unknown kind";
  }
}

/** Options of `step.waitForEvent`. */
export interface WaitForEventOptions {
  /** The event name to wait for, e.g. `payment.confirmed`. */
  event: string;
  /** The correlation key to match exactly. Default: none (only events published without a key). */
  key?: string;
  /** How long to wait: ms or `'1h'`-style (0 to 365 days). Required. */
  timeout: DurationInput;
}

/** What to wait for. */
export type WaitSpec =
  | { case: "sleep"; value: { ms: number } | { until: Date } }
  | { case: "event"; value: { name: string; key: string; timeoutMs: number } }
  | { case: "child"; value: ChildRunSpec[] }
  | { case: "any" | "all"; value: { items: WaitItem[]; timeoutMs?: number } };

/** What a wait needs from its `Step`. */
export interface WaitEnv {
  client: Client<typeof WorkerService>;
  lease: Lease;
  journal: ReadonlyMap<string, Recorded>;
  logger?: RunLogger;
}

/**
 * Replays a journaled wait, or sends `SuspendRun`. Resolves to the wait's journaled output
 * (JSON bytes); when the run suspends, interrupts the attempt and rejects with the
 * interruption.
 */
export async function suspend(env: WaitEnv, stepId: string, kind: JournalEntryKind, spec: WaitSpec, what: string): Promise<Uint8Array> {
  const mismatch = (found: JournalEntryKind) =>
    new NonRetryableError(
      `step id ${stepId} is recorded as a ${kindName(found)} in this run's journal, not as a ${kindName(kind)}: the handler no longer calls its steps in the recorded order`,
    );
  const recorded = env.journal.get(stepId);
  if (recorded !== undefined) {
    if ("wait" in recorded) {
      if (recorded.wait !== kind) throw mismatch(recorded.wait);
      return recorded.output;
    }
    throw mismatch(JournalEntryKind.STEP);
  }

  const lease = env.lease;
  if (lease.interrupted) throw lease.error();
  await env.logger?.flush();
  const request: SuspendRunRequest = create(SuspendRunRequestSchema, { runId: lease.runId, leaseToken: lease.token, stepId });
  if (spec.case === "sleep") {
    request.wait = {
      case: "sleep",
      value: create(SleepWaitSchema, "ms" in spec.value ? { duration: durationFromMillis(spec.value.ms) } : { until: timestampFromDate(spec.value.until) }),
    };
  } else if (spec.case === "event") {
    request.wait = {
      case: "event",
      value: create(EventWaitSchema, { eventName: spec.value.name, correlationKey: spec.value.key, timeout: durationFromMillis(spec.value.timeoutMs) }),
    };
  } else if (spec.case === "child") {
    request.wait = { case: "child", value: create(ChildWaitSchema, { children: spec.value }) };
  } else {
    const combined = create(CombinedWaitSchema, { items: spec.value.items });
    if (spec.value.timeoutMs !== undefined) combined.timeout = durationFromMillis(spec.value.timeoutMs);
    request.wait = { case: spec.case, value: combined };
  }
  const result = await write(lease, "SuspendRun", (opts) => env.client.suspendRun(request, opts));
  if (!result.ok) {
    switch (result.kind) {
      case "interrupted":
        throw result.error;
      case "gave-up":
        lease.interrupt(`the server stayed unreachable until the lease expired (${result.error.rawMessage})`);
        throw lease.error();
      case "rejected": {
        const error = fromConnectError(result.error);
        const message = `could not start ${what} (${stepId}): ${error.message}`;
        const permanent = [Code.InvalidArgument, Code.ResourceExhausted, Code.OutOfRange].includes(result.error.code);
        throw permanent ? new NonRetryableError(message, { cause: error }) : new Error(message, { cause: error });
      }
    }
  }
  const response = result.value;
  if (response.outcome === SuspendOutcome.SATISFIED) {
    const entry = response.entry;
    if (entry === undefined) throw new Error("SuspendRun answered SATISFIED without an entry");
    if (entry.kind !== kind) throw mismatch(entry.kind);
    return entry.outcome.case === "output" ? entry.outcome.value : new TextEncoder().encode("null");
  }
  if (response.outcome === SuspendOutcome.SUSPENDED) {
    const until = response.wakeAt === undefined ? "" : ` until ${timestampDate(response.wakeAt).toISOString()}`;
    lease.interrupt(`the run is ${what} (${stepId})${until}`, true);
    throw lease.error();
  }
  throw new Error(`SuspendRun answered an unknown outcome ${response.outcome}`);
}
