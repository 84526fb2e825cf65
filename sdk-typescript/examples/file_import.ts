/**
 * Seed "File processing pipeline": `processUpload` downloads a file, parses it into batches,
 * imports each batch and counts its rows with
 * `await state.increment(`files:${payload.fileId}:rows`, batch.length)`, and marks the file
 * complete, returning `{ rows }`.
 *
 * Each batch import is a step with the same id, `import-batch`, so the SDK assigns occurrence
 * suffixes: `import-batch`, `import-batch#2`, `import-batch#3`. The row counter is incremented
 * through the handler's `state`, so each increment is journaled like a step (`state:1`,
 * `state:2`, `state:3`). The database connection drops during the third batch on the first
 * attempt; the retry replays the download, the parse, the two imported batches and their two
 * increments from the journal (the increments are not applied again) and continues with the
 * third. The durable row counter ends at 10, not the 18 a re-applied increment would give.
 *
 *   cd sdk-typescript && npm run build:dev && node build/examples/file_import.js
 */
import { StackShift } from "../src/index.js";
import { check, finish, uniqueSuffix } from "./check.js";

const BATCH_SIZE = 4;
const ROWS = 10;
let downloads = 0;
let importCalls = 0;
const imported: number[] = [];
let completed = 0;

async function downloadFile(fileId: string): Promise<string> {
  downloads++;
  console.log(`  storage: downloaded ${fileId}`);
  const lines = ["email,plan"];
  for (let i = 1; i <= ROWS; i++) lines.push(`user${i}@example.com,${i % 3 === 0 ? "pro" : "free"}`);
  return lines.join("\n");
}
async function parseCsv(csv: string) {
  const rows = csv.split("\n").slice(1).filter(Boolean).map((line) => {
    const [email, plan] = line.split(",");
    return { email: email ?? "", plan: plan ?? "" };
  });
  const batches: (typeof rows)[] = [];
  for (let i = 0; i < rows.length; i += BATCH_SIZE) batches.push(rows.slice(i, i + BATCH_SIZE));
  return { batches, totalRows: rows.length };
}
async function importRows(index: number, batch: unknown[]): Promise<number> {
  importCalls++;
  if (importCalls === 3) throw new Error("database connection reset (simulated crash)");
  imported.push(index);
  console.log(`  database: imported batch ${index + 1} (${batch.length} rows)`);
  return batch.length;
}
async function markFileComplete(fileId: string) {
  completed++;
  return { fileId, complete: true };
}

const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY });

stackshift.job<{ fileId: string }>("processUpload", async ({ payload, step, state }) => {
  const file = await step.run("download-file", () => downloadFile(payload.fileId));
  const parsed = await step.run("parse-file", () => parseCsv(file));

  for (const [index, batch] of parsed.batches.entries()) {
    await step.run("import-batch", () => importRows(index, batch));
    await state.increment(`files:${payload.fileId}:rows`, batch.length);
  }

  await step.run("mark-complete", () => markFileComplete(payload.fileId));

  return { rows: parsed.totalRows };
});

const worker = stackshift.work({ concurrency: 4, shutdownGrace: "5s" });
try {
  const fileId = `file_${uniqueSuffix()}`;
  const started = await stackshift.start("processUpload", { fileId }, { retryPolicy: { maxAttempts: 3, initialInterval: "200ms" } });
  const run = await stackshift.waitForRun(started.id, { timeout: "20s" });
  console.log(`run ${run.id} is ${run.status} after ${run.attempt} attempt(s); result ${JSON.stringify(run.result)}`);
  const stepIds = run.steps.filter((s) => s.kind === "step").map((s) => s.id);
  console.log(`  steps: ${stepIds.join(", ")}`);

  check(run.status === "completed", "the run completed");
  check(run.attempt === 2, "it took exactly two attempts");
  check(JSON.stringify(run.result) === JSON.stringify({ rows: ROWS }), `the result is { rows: ${ROWS} }`);
  check(downloads === 1, "the file was downloaded once");
  check(JSON.stringify(imported) === "[0,1,2]", "every batch was imported exactly once, in order");
  check(completed === 1, "the file was marked complete once");
  check(
    JSON.stringify(stepIds) === JSON.stringify(["download-file", "parse-file", "import-batch", "import-batch#2", "import-batch#3", "mark-complete"]),
    "step ids carry occurrence suffixes (import-batch, import-batch#2, import-batch#3)",
  );
  const counted = await stackshift.state.get<number | null>(`files:${fileId}:rows`);
  check(counted === ROWS, `the durable row counter is ${ROWS} (got ${counted})`);
  const stateCalls = run.steps.filter((s) => s.kind === "state").map((s) => `${s.id}@${s.attempt}`);
  check(
    JSON.stringify(stateCalls) === JSON.stringify(["state:1@1", "state:2@1", "state:3@2"]),
    `the increments are journaled once each (state:1-2 by attempt 1, state:3 by attempt 2): ${stateCalls.join(", ")}`,
  );
} finally {
  await worker.shutdown();
}
finish("file_import");
