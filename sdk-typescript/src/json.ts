/**
 * JSON on the wire: payloads, results and step outputs travel as UTF-8 JSON bytes. An empty
 * byte string means `null`. `undefined` is sent as `null`, like `JSON.stringify` does inside
 * arrays.
 *
 * @module
 */

import { InvalidArgumentError } from "./errors.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** `value` as UTF-8 JSON bytes. */
export function encodeJson(value: unknown, what = "value"): Uint8Array {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    throw new InvalidArgumentError(`${what} is not JSON-serializable: ${(e as Error).message}`, { cause: e });
  }
  return encoder.encode(text ?? "null");
}

/** UTF-8 JSON bytes as a value (`null` for empty bytes). */
export function decodeJson(bytes: Uint8Array, what = "value"): unknown {
  if (bytes.length === 0) return null;
  try {
    return JSON.parse(decoder.decode(bytes)) as unknown;
  } catch (e) {
    throw new InvalidArgumentError(`${what} is not valid UTF-8 JSON: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * `value` as it reads back after a JSON round trip (what a replay returns), so that a step
 * returns the same thing on its first execution and on every replay.
 */
export function jsonRoundTrip<T>(value: T, what = "value"): T {
  return decodeJson(encodeJson(value, what), what) as T;
}
