/**
 * An album pipeline built on event triggers, child runs and a combined wait:
 * - `publishAlbum` declares an event trigger on `album.uploaded`: the worker creates it when it
 *   starts, and every published upload starts a run whose payload is the event envelope
 *   (`TriggeredEvent`);
 * - the run fans out one `resizePhoto` child per photo (`step.invokeAll`), one of which fails,
 *   and gets every outcome in order (a failed child is an outcome, not an error);
 * - it then waits for an editor's approval or one second, whichever comes first
 *   (`step.waitForAny`), and an interval schedule starts `albumDigest` every second.
 *
 * Checks: the publish started exactly one run (`startedRunIds`); the run completed on attempt 1
 * with the resized URLs in order and the failed photo reported; each child records its parent;
 * the approval won the wait; the schedule started a digest run, then was deleted.
 *
 *   cd sdk-typescript && npm run build:dev && node build/examples/fan_out.js
 */
import { StackShift, childResult, type TriggeredEvent } from "../src/index.js";
import { check, finish, uniqueSuffix } from "./check.js";

interface AlbumUploaded {
  albumId: string;
  photos: string[];
}

const suffix = uniqueSuffix();
const queue = `albums-${suffix}`;
const uploaded = `album.uploaded.${suffix}`;
const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY });

stackshift.job<{ photo: string }>("resizePhoto", ({ payload }) => {
  if (payload.photo.endsWith(".gif")) throw new Error(`cannot resize ${payload.photo}`);
  return `https://cdn.example.com/256/${payload.photo}`;
});

stackshift.job<TriggeredEvent<AlbumUploaded>>(
  "publishAlbum",
  async ({ payload, step, log }) => {
    const album = payload.payload;
    log.info("album uploaded", { albumId: album.albumId, photos: album.photos.length });
    const outcomes = await step.invokeAll(
      "resize",
      album.photos.map((photo) => ({ job: "resizePhoto", payload: { photo }, retryPolicy: { maxAttempts: 1 } })),
    );
    const resized = outcomes.filter((o) => o.status === "completed").map((o) => childResult<string>(o));
    const failed = outcomes.filter((o) => o.status !== "completed").map((o) => o.failure?.message ?? "");
    const approval = await step.waitForAny<{ editor: string }>("approval", [{ event: "album.approved", key: album.albumId }, { sleep: "1s" }]);
    const approvedBy = !approval.timedOut && approval.result.kind === "event" ? approval.result.event.payload.editor : null;
    return { resized, failed, approvedBy };
  },
  { triggers: [{ event: uploaded }] },
);

let digests = 0;
stackshift.job("albumDigest", () => ++digests);

// Resolves once the declared trigger exists (rejects if the server refused it).
const worker = await stackshift.startWorker({ queues: [queue], concurrency: 4, shutdownGrace: "5s" });
const scheduleId = `album-digest-${suffix}`;
try {
  const albumId = `alb_${suffix}`;
  // The editor approves before the run reaches its wait: the run's inbox keeps the event.
  const published = await stackshift.events.publish<AlbumUploaded>(uploaded, { albumId, photos: ["a.jpg", "b.gif", "c.png"] });
  console.log(`published ${uploaded}: started ${JSON.stringify(published.startedRunIds)}`);
  check(published.startedRunIds.length === 1, "the upload started exactly one run through the declared trigger");
  await stackshift.events.publish("album.approved", { editor: "ada" }, { key: albumId });
  const run = await stackshift.waitForRun(published.startedRunIds[0]!, { timeout: "30s" });
  console.log(`run ${run.id} is ${run.status}: ${JSON.stringify(run.result ?? run.failure)}`);
  for (const s of run.steps) console.log(`  ${s.kind} ${s.id}`);
  check(run.status === "completed" && run.attempt === 1, "the album run completed on attempt 1");
  const result = run.result as { resized: string[]; failed: string[]; approvedBy: string | null };
  check(
    JSON.stringify(result.resized) === JSON.stringify(["https://cdn.example.com/256/a.jpg", "https://cdn.example.com/256/c.png"]),
    "the resized URLs are in the order given",
  );
  check(result.failed.length === 1 && result.failed[0]!.includes("b.gif"), "the failed photo is an outcome, not an error");
  check(result.approvedBy === "ada", "the approval won the wait");
  const children = await stackshift.listRuns({ queue, job: "resizePhoto" });
  check(children.runs.length === 3 && children.runs.every((c) => c.parentRunId === run.id), "each child records its parent");

  await stackshift.schedules.create(scheduleId, { job: "albumDigest", every: "1s", queueName: queue, catchUp: "skip" });
  let schedule = await stackshift.schedules.get(scheduleId);
  for (let i = 0; i < 100 && schedule.recentRunIds.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    schedule = await stackshift.schedules.get(scheduleId);
  }
  const digest = schedule.recentRunIds[0] === undefined ? undefined : await stackshift.waitForRun(schedule.recentRunIds[0], { timeout: "30s" });
  check(digest?.status === "completed", "the interval schedule started a digest run");
} finally {
  await stackshift.schedules.delete(scheduleId).catch(() => {});
  await worker.shutdown();
}
finish("fan_out");
