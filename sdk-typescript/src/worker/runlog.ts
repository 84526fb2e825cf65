/**
 * {@link RunLogger}: the handler's run-scoped logger (`ctx.log`). Lines carry a level, a
 * message and structured fields, and are tied to the run, the attempt and the step executing
 * when they were logged. They are buffered and sent in batches (`AppendLogs`): when 100 lines
 * are waiting, one second after the first waiting line, and always before the attempt
 * reports its outcome or suspends. Logging never fails the handler: lines that cannot be sent
 * (the lease is gone, the server is unreachable) are dropped.
 *
 * The server keeps at most 1,000 lines and 1 MiB per run, then stores one truncation marker
 * and drops the rest (see docs/observability.md).
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { LogEntrySchema, type LogEntry } from "../gen/stackshift/v1/observability_pb.js";
import type { WorkerService } from "../gen/stackshift/v1/worker_pb.js";
import { logLevelToProto, type LogLevel } from "../run.js";
import { write, type Lease } from "./lease.js";

/** Lines buffered before a batch is sent at once. */
export const FLUSH_LINES = 100;
/** Longest a line waits in the buffer, in ms. */
export const FLUSH_INTERVAL_MS = 1_000;

/** The step whose body is executing (set by `step.run`). */
export const currentStep = new AsyncLocalStorage<string>();

const encoder = new TextEncoder();

/** Fields as JSON bytes (empty bytes for none; unserializable fields replaced by an error note). */
function encodeFields(fields: Record<string, unknown> | undefined): Uint8Array {
  if (fields === undefined || Object.keys(fields).length === 0) return new Uint8Array();
  try {
    return encoder.encode(JSON.stringify(fields));
  } catch (e) {
    return encoder.encode(JSON.stringify({ fieldsError: `unserializable fields: ${(e as Error).message}` }));
  }
}

/**
 * The run-scoped logger of a handler (`ctx.log`).
 *
 * ```ts
 * stackshift.job('charge', async ({ payload, step, log }) => {
 *   log.info('charging the card', { amountCents: 4200, currency: 'EUR' })
 *   await step.run('charge', () => charge(payload))
 *   log.warn('the provider was slow')
 * })
 * ```
 */
export class RunLogger {
  private buffer: LogEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Serializes sends so batches arrive in order. */
  private sending: Promise<void> = Promise.resolve();

  /** @internal built by the worker for each attempt */
  constructor(
    private readonly client: Client<typeof WorkerService>,
    private readonly lease: Lease,
  ) {}

  /** Logs at debug level. */
  debug(message: string, fields?: Record<string, unknown>): void {
    this.log("debug", message, fields);
  }

  /** Logs at info level. */
  info(message: string, fields?: Record<string, unknown>): void {
    this.log("info", message, fields);
  }

  /** Logs at warn level. */
  warn(message: string, fields?: Record<string, unknown>): void {
    this.log("warn", message, fields);
  }

  /** Logs at error level. */
  error(message: string, fields?: Record<string, unknown>): void {
    this.log("error", message, fields);
  }

  /** Logs one line at `level`. */
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (this.lease.interrupted) return;
    this.buffer.push(
      create(LogEntrySchema, {
        level: logLevelToProto(level),
        message: String(message),
        fields: encodeFields(fields),
        stepId: currentStep.getStore() ?? "",
        at: timestampFromDate(new Date()),
      }),
    );
    if (this.buffer.length >= FLUSH_LINES) {
      void this.flush();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => void this.flush(), FLUSH_INTERVAL_MS);
      this.timer.unref();
    }
  }

  /**
   * Sends every buffered line now. The worker calls it before it reports the attempt's
   * outcome or suspends; handlers rarely need it. Never rejects.
   */
  flush(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const lines = this.buffer;
    this.buffer = [];
    const next = this.sending.then(() => this.send(lines)).catch(() => {
      // Logging never fails the handler: lines that cannot be sent are dropped.
    });
    this.sending = next;
    return next;
  }

  private async send(lines: LogEntry[]): Promise<void> {
    const lease = this.lease;
    // At most 1,000 lines per request.
    for (let i = 0; i < lines.length; i += 1_000) {
      const entries = lines.slice(i, i + 1_000);
      const result = await write(lease, "AppendLogs", (opts) =>
        this.client.appendLogs({ runId: lease.runId, leaseToken: lease.token, entries }, opts),
      );
      if (!result.ok) return; // the lease is gone or the server unreachable: drop the lines
    }
  }
}
