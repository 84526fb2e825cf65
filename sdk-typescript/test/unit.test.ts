/** Unit tests of the pure parts: durations, occurrence suffixes, errors, JSON. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { parseDuration, Occurrences, NonRetryableError, StepFailedError, isNonRetryable, InvalidArgumentError, NotFoundError } from "../src/index.js";
import { failureFromError, fromConnectError, UnavailableError } from "../src/errors.js";
import { jsonRoundTrip, encodeJson, decodeJson } from "../src/json.js";
import { durationFromMillis, millisFromDuration } from "../src/duration.js";

test("durations parse like every SDK", () => {
  assert.equal(parseDuration("30d"), 30 * 86_400_000);
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration(" 500ms "), 500);
  assert.equal(parseDuration("2w"), 14 * 86_400_000);
  assert.equal(parseDuration("1d12h"), 36 * 3_600_000);
  for (const bad of ["", "soon", "10", "5x", "1h 30m", "-1s"]) assert.throws(() => parseDuration(bad), InvalidArgumentError, bad);
  assert.equal(millisFromDuration(durationFromMillis(90_061_001)), 90_061_001);
});

test("occurrence suffixes", () => {
  const o = new Occurrences();
  const ids = ["download", "import-batch", "import-batch", "import-batch", "mark"].map((id) => o.next(id));
  assert.deepEqual(ids, ["download", "import-batch", "import-batch#2", "import-batch#3", "mark"]);
  const p = new Occurrences();
  assert.deepEqual(["a", "b", "a", "b", "a"].map((id) => p.next(id)), ["a", "b", "a#2", "b#2", "a#3"]);
});

test("an explicit id colliding with a suffix is refused", () => {
  const o = new Occurrences();
  assert.equal(o.next("a#2"), "a#2");
  assert.equal(o.next("a"), "a");
  assert.throws(() => o.next("a"), NonRetryableError);
});

test("non-retryable errors are found through causes and flags", () => {
  assert.ok(isNonRetryable(new NonRetryableError("declined")));
  assert.ok(isNonRetryable(new Error("wrapped", { cause: new NonRetryableError("declined") })));
  assert.ok(isNonRetryable(Object.assign(new Error("flagged"), { nonRetryable: true })));
  assert.ok(!isNonRetryable(new Error("plain")));
  const replayed = new StepFailedError("s", { message: "m", nonRetryable: true, type: "NonRetryableError" });
  assert.ok(isNonRetryable(replayed));
  const f = failureFromError(new NonRetryableError("declined", { details: { reason: "card" } }));
  assert.equal(f.type, "NonRetryableError");
  assert.equal(f.nonRetryable, true);
  assert.deepEqual(f.details, { reason: "card" });
  assert.equal(failureFromError("a string").message, "a string");
  assert.equal(failureFromError(new TypeError("t")).type, "TypeError");
});

test("gRPC codes map to typed errors", () => {
  const nf = fromConnectError(new ConnectError("run x not found", Code.NotFound));
  assert.ok(nf instanceof NotFoundError);
  assert.equal(nf.code, "NOT_FOUND");
  assert.equal(nf.message, "run x not found");
  assert.ok(fromConnectError(new ConnectError("", Code.Unavailable)) instanceof UnavailableError);
  assert.equal(fromConnectError(new ConnectError("x", Code.Internal)).code, "INTERNAL");
});

test("JSON round trips like a replay", () => {
  assert.deepEqual(jsonRoundTrip({ d: new Date(0), u: undefined, s: "ü€😀" }), { d: "1970-01-01T00:00:00.000Z", s: "ü€😀" });
  assert.equal(decodeJson(encodeJson(undefined)), null);
  assert.equal(decodeJson(new Uint8Array()), null);
  assert.throws(() => encodeJson({ n: 1n }), InvalidArgumentError);
});

test("a FAILED_PRECONDITION with a reason trailer is a ConflictError; without one a plain FailedPreconditionError", async () => {
  const { ConflictError, FailedPreconditionError } = await import("../src/index.js");
  const withReason = new ConnectError("version is 7", Code.FailedPrecondition, { "stackshift-error-reason": "VERSION_MISMATCH" });
  const conflict = fromConnectError(withReason);
  assert.ok(conflict instanceof ConflictError);
  assert.ok(conflict instanceof FailedPreconditionError);
  assert.equal((conflict as InstanceType<typeof ConflictError>).reason, "VERSION_MISMATCH");
  assert.equal(conflict.code, "FAILED_PRECONDITION");
  const stale = fromConnectError(new ConnectError("stale lease", Code.FailedPrecondition));
  assert.ok(stale instanceof FailedPreconditionError);
  assert.ok(!(stale instanceof ConflictError));
});

test("a journaled event wait decodes to the event, or null on timeout", async () => {
  const { eventFromJournal } = await import("../src/events.js");
  assert.equal(eventFromJournal({ timedOut: true }), null);
  const event = eventFromJournal({
    timedOut: false,
    event: { id: "e1", name: "payment.confirmed", correlationKey: "pay_1", payload: { amount: 42 }, publishedAt: 1763700000000 },
  });
  assert.deepEqual(event, { id: "e1", name: "payment.confirmed", key: "pay_1", payload: { amount: 42 }, publishedAt: new Date(1763700000000) });
  assert.throws(() => eventFromJournal(null));
});

test("waits share the step id space; state: ids are reserved", async () => {
  const { Step } = await import("../src/index.js");
  const { Lease } = await import("../src/worker/lease.js");
  const { JournalEntryKind } = await import("../src/gen/stackshift/v1/common_pb.js");
  const lease = new Lease("r1", "t", 1000);
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const journal = new Map([
    ["a", { output: enc(1) }],
    ["nap", { wait: JournalEntryKind.SLEEP, output: enc(null) }],
    ["nap#2", { wait: JournalEntryKind.SLEEP, output: enc(null) }],
    ["w", { wait: JournalEntryKind.EVENT, output: enc({ timedOut: true }) }],
  ]);
  const step = new Step(undefined as never, lease, journal);
  assert.equal(await step.run("a", () => 2), 1, "replayed");
  await step.sleep("nap", "1h");
  await step.sleep("nap", 5);
  assert.equal(await step.waitForEvent("w", { event: "x", timeout: "1h" }), null);
  // A handler that changed its order: the journal's kinds no longer match the calls.
  const changed = new Step(undefined as never, lease, journal);
  await assert.rejects(changed.run("nap", () => 1), /recorded as a sleep/);
  await assert.rejects(changed.waitForEvent("a", { event: "x", timeout: 1 }), /recorded as a step/);
  await assert.rejects(changed.sleep("w", 1), /recorded as a event wait/);
  await assert.rejects(step.run("state:1", () => 1), NonRetryableError);
  await assert.rejects(step.sleep("x", "soon"), NonRetryableError);
});

test("child-wait, any and all journal outputs decode like every SDK", async () => {
  const { outcomesFromJournal, childResult, ChildFailedError } = await import("../src/children.js");
  const { anyFromJournal, allFromJournal } = await import("../src/waits.js");
  const outcomes = outcomesFromJournal({
    children: [
      { runId: "a", job: "j", status: "completed", result: { n: 2 } },
      { runId: "b", job: "j", status: "failed", failure: { message: "boom", errorType: "E", nonRetryable: true } },
      { runId: "c", job: "j", status: "cancelled", failure: { message: "parent run p was cancelled", errorType: "ParentCancelled", nonRetryable: false } },
    ],
  });
  assert.deepEqual(childResult(outcomes[0]!), { n: 2 });
  assert.throws(
    () => childResult(outcomes[1]!),
    (e: unknown) => e instanceof ChildFailedError && e.runId === "b" && e.status === "failed" && e.failure.type === "E" && isNonRetryable(e) && e.message === "child run b (j) failed: boom",
  );
  assert.throws(() => childResult(outcomes[2]!), (e: unknown) => e instanceof ChildFailedError && e.status === "cancelled" && /was cancelled/.test(e.message));
  assert.throws(() => outcomesFromJournal({ children: [{ runId: "x", status: "weird" }] }));

  const event = { id: "e1", name: "n", correlationKey: "k", payload: { a: 1 }, publishedAt: 1_700_000_000_000 };
  const any = anyFromJournal({ timedOut: false, index: 1, output: { timedOut: false, event } });
  assert.ok(!any.timedOut && any.index === 1 && any.result.kind === "event" && any.result.event.key === "k");
  assert.deepEqual(anyFromJournal({ timedOut: true }), { timedOut: true });
  assert.deepEqual(anyFromJournal({ timedOut: false, index: 0, output: null }), { timedOut: false, index: 0, result: { kind: "slept" } });
  const all = allFromJournal({ timedOut: true, outputs: [{ timedOut: false, event }, null, null], resolved: [true, true, false] });
  assert.equal(all.timedOut, true);
  assert.equal(all.items[0]?.kind, "event");
  assert.deepEqual(all.items.slice(1), [{ kind: "slept" }, null]);
});
