/**
 * Human-friendly durations, as accepted by every StackShift SDK: `'30d'`, `'24h'`, `'1h30m'`,
 * `'500ms'`. One or more `<integer><unit>` parts with no spaces between them; units `ms`, `s`,
 * `m`, `h`, `d` (24 h) and `w` (7 d). Options that take a duration also accept a number of
 * milliseconds.
 *
 * @module
 */

import type { Duration } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError } from "./errors.js";

/** A duration: milliseconds as a number, or a string such as `'30d'` or `'1h30m'`. */
export type DurationInput = number | string;

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/**
 * Parses `'30d'`, `'1h30m'`, `'500ms'`, ... into milliseconds.
 *
 * @throws {InvalidArgumentError} when the string does not follow the grammar.
 */
export function parseDuration(input: string): number {
  const fail = (reason: string): never => {
    throw new InvalidArgumentError(
      `invalid duration ${JSON.stringify(input)}: ${reason} (expected e.g. '30d', '24h', '1h30m', '500ms'; units ms, s, m, h, d, w)`,
    );
  };
  const s = input.trim();
  if (s === "") fail("it is empty");
  let total = 0;
  const part = /^(\d+)([a-zA-Z]+)/;
  let rest = s;
  while (rest.length > 0) {
    const m = part.exec(rest);
    if (m === null) {
      fail(/^\d+$/.test(rest) ? "a number is missing its unit" : "expected a number");
      break;
    }
    const [whole, digits, unit] = m as unknown as [string, string, string];
    const perUnit = UNIT_MS[unit];
    if (perUnit === undefined) fail("unknown unit");
    total += Number(digits) * (perUnit as number);
    if (!Number.isSafeInteger(total)) fail("duration is too large");
    rest = rest.slice(whole.length);
  }
  return total;
}

/** A {@link DurationInput} in milliseconds (validated: finite and not negative). */
export function toMillis(input: DurationInput, what = "duration"): number {
  if (typeof input === "string") return parseDuration(input);
  if (typeof input !== "number" || !Number.isFinite(input) || input < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative number of milliseconds or a string like '30d', got ${String(input)}`);
  }
  return input;
}

/** Milliseconds as a `google.protobuf.Duration`. */
export function durationFromMillis(ms: number): Duration {
  const whole = Math.floor(ms);
  return create(DurationSchema, {
    seconds: BigInt(Math.floor(whole / 1000)),
    nanos: (whole % 1000) * 1_000_000 + Math.round((ms - whole) * 1_000_000),
  });
}

/** A `google.protobuf.Duration` in milliseconds. */
export function millisFromDuration(d: Duration | undefined): number | undefined {
  if (d === undefined) return undefined;
  return Number(d.seconds) * 1000 + Math.floor(d.nanos / 1_000_000);
}
