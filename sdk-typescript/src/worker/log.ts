/**
 * The SDK's logger. By default warnings and errors go to `console.error`; set
 * `STACKSHIFT_LOG=info` (or `debug`) for more, or pass your own {@link Logger}.
 * Payloads and API keys are never logged.
 *
 * @module
 */

/** Where the worker reports what it does. */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const LEVELS = ["debug", "info", "warn", "error"] as const;

/** A logger writing to stderr at `STACKSHIFT_LOG` level or above (default `warn`). */
export function defaultLogger(): Logger {
  const wanted = (process.env["STACKSHIFT_LOG"] ?? "warn").toLowerCase();
  const min = Math.max(0, LEVELS.indexOf(wanted as (typeof LEVELS)[number]));
  const at =
    (level: number) =>
    (message: string, fields?: Record<string, unknown>): void => {
      if (level < min) return;
      const extra = fields === undefined ? "" : ` ${JSON.stringify(fields)}`;
      console.error(`stackshift ${LEVELS[level]}: ${message}${extra}`);
    };
  return { debug: at(0), info: at(1), warn: at(2), error: at(3) };
}
