// Browser test of the web dashboard: the real stackshift-server binary on a temporary
// SQLite database, seeded by `target/debug/examples/dashboard_seed` (a real worker records
// steps), driven in Debian's headless Chromium through playwright-core (no downloaded
// browsers). Run: node --test dashboard-tests/  (after `cargo build --workspace --all-targets`).
// Env: STACKSHIFT_CHROMIUM (default /usr/bin/chromium), STACKSHIFT_SCREENSHOT_DIR (optional).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SERVER = path.join(ROOT, "target/debug/stackshift-server");
const SEED = path.join(ROOT, "target/debug/examples/dashboard_seed");
const CHROMIUM = process.env.STACKSHIFT_CHROMIUM || "/usr/bin/chromium";

let server, base, dir, browser, seeded;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "stackshift-dashboard-"));
  server = spawn(SERVER, ["--database-url", `sqlite://${dir}/dash.db`, "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" },
  });
  base = await new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("server did not start within 30s")), 30000);
    server.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
    server.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/listening on (\S+)/);
      if (m) { clearTimeout(timer); resolve(`http://${m[1]}`); }
    });
  });
  seeded = JSON.parse(execFileSync(SEED, { env: { ...process.env, STACKSHIFT_ENDPOINT: base }, timeout: 120000 }).toString());
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
    // playwright gives every launch a fresh temporary --user-data-dir itself.
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function shot(page, name) {
  if (process.env.STACKSHIFT_SCREENSHOT_DIR) {
    await page.screenshot({ path: path.join(process.env.STACKSHIFT_SCREENSHOT_DIR, name + ".png"), fullPage: true });
  }
}

test("runs page lists runs; a run shows its timeline and steps", async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/");
  await page.locator(`tr[data-run-id="${seeded.completed}"]`).waitFor({ timeout: 15000 });
  assert.equal(await page.locator("tr[data-run-id]").count(), 2);
  await shot(page, "runs");
  // Filters narrow the list.
  await page.selectOption("#filter-status", "queued");
  await page.click("#run-filters button");
  await page.waitForFunction(() => document.querySelectorAll("tr[data-run-id]").length === 1);
  assert.equal(await page.locator("tr[data-run-id]").getAttribute("data-run-id"), seeded.queued);
  await page.goto(base + "/#/runs");
  await page.click(`tr[data-run-id="${seeded.completed}"]`);
  await page.locator("#timeline li").first().waitFor();
  assert.equal(await page.locator("#run-status [data-status]").getAttribute("data-status"), "completed");
  const timeline = await page.locator("#timeline li").allTextContents();
  assert.ok(timeline.some((t) => t.includes("reserve-stock")), timeline.join("\n"));
  assert.ok(timeline.some((t) => t.includes("run completed")), timeline.join("\n"));
  assert.deepEqual(await page.locator("#steps tr[data-step-id]").evaluateAll((rows) => rows.map((r) => r.dataset.stepId)),
    ["reserve-stock", "charge-card"]);
  assert.match(await page.locator("#result").textContent(), /"charged": 4200/);
  assert.match(await page.locator("#payload").textContent(), /ord_1/);
  assert.equal(await page.locator("#cancel-btn").count(), 0, "a completed run has no cancel button");
  assert.equal(await page.locator("#app").evaluate((n) => [...n.childNodes].filter((c) => c.nodeType === 3).length), 0,
    "no stray text nodes (e.g. a rendered null)");
  await shot(page, "run-detail");
  assert.deepEqual(errors, []);
  await page.close();
});

test("cancel button cancels a queued run; queues and events pages render", async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/#/runs/${seeded.queued}`);
  await page.locator("#cancel-btn").waitFor({ timeout: 15000 });
  await page.click("#cancel-btn");
  await page.locator('#run-status [data-status="cancelled"]').waitFor({ timeout: 15000 });
  await page.locator("#retry-btn").waitFor();
  await shot(page, "cancelled");
  const api = await (await fetch(`${base}/api/runs/${seeded.queued}`)).json();
  assert.equal(api.run.status, "cancelled");
  await page.goto(base + "/#/queues");
  await page.locator('[data-queue="shop"]').waitFor({ timeout: 15000 });
  assert.match(await page.locator('[data-queue="backlog"]').textContent(), /1cancelled/);
  await shot(page, "queues");
  await page.goto(base + "/#/events");
  await page.locator("h1", { hasText: "Events" }).waitFor();
  await page.close();
});

test("with API keys configured the dashboard asks for one and uses it", async () => {
  const keyDir = mkdtempSync(path.join(tmpdir(), "stackshift-dashboard-keys-"));
  const db = `sqlite://${keyDir}/keys.db`;
  const secret = execFileSync(SERVER, ["--database-url", db, "keys", "create", "--namespace", "acme", "--name", "dash"],
    { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  assert.match(secret, /^ssk_/);
  const keyed = spawn(SERVER, ["--database-url", db, "--listen", "127.0.0.1:0"],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
  try {
    const keyedBase = await new Promise((resolve, reject) => {
      let buf = "";
      keyed.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
      keyed.stdout.on("data", (d) => {
        buf += d;
        const m = buf.match(/listening on (\S+)/);
        if (m) resolve(`http://${m[1]}`);
      });
    });
    assert.equal((await fetch(keyedBase + "/api/runs")).status, 401);
    const page = await browser.newPage();
    await page.goto(keyedBase + "/");
    await page.locator("#key-dialog[open]").waitFor({ timeout: 15000 });
    await page.fill("#key-input", "ssk_not_a_real_key");
    await page.click("#key-form button");
    await page.waitForFunction(() => document.getElementById("key-error").textContent.includes("rejected"));
    await page.fill("#key-input", secret);
    await page.click("#key-form button");
    await page.waitForFunction(() => document.getElementById("session").textContent === "namespace acme");
    await page.locator("#no-runs").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("stackshift.apiKey")), secret);
    await shot(page, "signed-in");
    await page.close();
  } finally {
    keyed.kill();
    rmSync(keyDir, { recursive: true, force: true });
  }
});
