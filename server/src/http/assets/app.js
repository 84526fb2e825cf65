// StackShift dashboard: a small single-page app over the JSON API (/api/...).
// Plain JavaScript, no dependencies. Every value from the server is inserted as text
// (never as HTML). Routes: #/runs, #/runs/<id>, #/queues, #/events.
"use strict";

const KEY_STORAGE = "stackshift.apiKey";
const STATUSES = ["queued", "running", "waiting", "completed", "failed", "cancelled"];
let refreshTimer = null;
let renderSeq = 0;

// ---- helpers --------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
// Replaces the page content (nested arrays flattened, null/false skipped).
function show(app, ...children) {
  app.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "");
const badge = (status) => el("span", { class: "badge " + status, "data-status": status }, status);
const pretty = (v) => (v === null || v === undefined ? "null" : JSON.stringify(v, null, 2));

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = "Bearer " + key;
  const resp = await fetch(path, Object.assign({ headers }, options || {}));
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    const err = (body && body.error) || {};
    throw new ApiError(resp.status, err.code || "http_" + resp.status, err.message || resp.statusText);
  }
  return body;
}

function askForKey(message) {
  const dialog = document.getElementById("key-dialog");
  document.getElementById("key-error").textContent = message || "";
  if (!dialog.open) dialog.showModal();
}

document.getElementById("key-form").addEventListener("submit", () => {
  sessionStorage.setItem(KEY_STORAGE, document.getElementById("key-input").value.trim());
  document.getElementById("key-input").value = "";
  route();
});

function showError(app, e) {
  if (e instanceof ApiError && e.status === 401) {
    const had = !!sessionStorage.getItem(KEY_STORAGE);
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey(had ? "That key was rejected: " + e.message : "");
    show(app, el("p", { class: "muted" }, "Sign in with an API key to continue."));
    return;
  }
  show(app, el("p", { class: "error", id: "page-error" }, "Error: " + e.message));
}

// ---- pages ----------------------------------------------------------------------------
async function runsPage(app, params) {
  const q = new URLSearchParams();
  for (const k of ["job", "queue", "status"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("page_size", "100");
  const data = await api("/api/runs?" + q);
  const input = (name, placeholder) =>
    el("input", { name, placeholder, value: params.get(name) || "", id: "filter-" + name });
  const status = el("select", { name: "status", id: "filter-status" },
    el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s, selected: params.get("status") === s }, s)));
  const form = el("form", { class: "filters", id: "run-filters", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) f.set(k, v);
    location.hash = "#/runs" + (f.toString() ? "?" + f : "");
  } }, input("job", "job"), input("queue", "queue"), status, el("button", { type: "submit" }, "Filter"));
  const rows = data.runs.map((r) => el("tr", {
    class: "clickable", "data-run-id": r.id, onclick: () => { location.hash = "#/runs/" + r.id; },
  },
  el("td", { class: "mono" }, el("a", { href: "#/runs/" + r.id }, r.id)),
  el("td", {}, r.job), el("td", {}, r.queue), el("td", {}, badge(r.status)),
  el("td", {}, r.attempt + "/" + r.max_attempts), el("td", {}, fmtTime(r.created_at)),
  el("td", {}, fmtTime(r.finished_at))));
  show(app, 
    el("h1", {}, "Runs"), form,
    rows.length === 0 ? el("p", { class: "muted", id: "no-runs" }, "No runs match.") :
      el("table", { id: "runs-table" },
        el("thead", {}, el("tr", {}, ["Run", "Job", "Queue", "Status", "Attempt", "Created", "Finished"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows)),
    data.next_page_token ? el("p", { class: "muted" }, "Showing the newest 100 runs.") : null);
}

// The run's history. Uses the server's `timeline` when it sends one; otherwise derives it
// from what GetRun has: creation, attempts, steps, the current wait and the final status.
function timelineOf(run) {
  if (Array.isArray(run.timeline)) {
    return run.timeline.map((e) => ({
      at: e.at || e.time || e.timestamp,
      kind: e.kind || e.type || "",
      text: e.message || e.detail || e.description || JSON.stringify(e),
    }));
  }
  const out = [{ at: run.created_at, kind: "created", text: "run created on queue " + run.queue }];
  for (const a of run.attempts || []) {
    out.push({ at: a.started_at, kind: "attempt", text: "attempt " + a.number + " started on " + a.worker_id });
    if (a.ended_at) out.push({ at: a.ended_at, kind: a.error ? "attempt failed" : "attempt ended",
      text: "attempt " + a.number + (a.error ? " failed: " + a.error.message : " ended") });
  }
  for (const s of run.steps || []) {
    out.push({ at: s.completed_at, kind: s.kind, text: s.kind + " " + s.id + (s.error ? " failed: " + s.error.message : " completed") });
  }
  if (run.wait) {
    out.push({ at: run.wait.since, kind: "waiting", text: "waiting on " + run.wait.kind + " " + run.wait.step_id +
      (run.wait.event_name ? " (event " + run.wait.event_name + ")" : "") + (run.wait.wake_at ? " until " + fmtTime(run.wait.wake_at) : "") });
  }
  if (run.finished_at) out.push({ at: run.finished_at, kind: run.status, text: "run " + run.status + (run.error ? ": " + run.error.message : "") });
  return out.sort((x, y) => String(x.at).localeCompare(String(y.at)));
}

async function runPage(app, id) {
  const { run } = await api("/api/runs/" + encodeURIComponent(id));
  const act = (label, path, cls, id) => el("button", { class: cls, id, onclick: async (ev) => {
    ev.target.disabled = true;
    try { await api("/api/runs/" + encodeURIComponent(run.id) + "/" + path, { method: "POST" }); route(); }
    catch (e) { document.getElementById("action-error").textContent = e.message; ev.target.disabled = false; }
  } }, label);
  const final = ["completed", "failed", "cancelled"].includes(run.status);
  const kv = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
  const steps = (run.steps || []).map((s) => el("tr", { "data-step-id": s.id },
    el("td", { class: "mono" }, s.id), el("td", {}, s.kind), el("td", {}, s.attempt),
    el("td", {}, fmtTime(s.completed_at)),
    el("td", {}, s.error ? el("span", { class: "error" }, s.error.message) : el("code", {}, JSON.stringify(s.output)))));
  const logs = Array.isArray(run.logs) ? run.logs : null;
  show(app, 
    el("p", {}, el("a", { href: "#/runs" }, "← all runs")),
    el("h1", {}, "Run ", el("span", { class: "mono", id: "run-id" }, run.id), " ", el("span", { id: "run-status" }, badge(run.status))),
    el("div", { class: "actions" },
      final ? null : act("Cancel run", "cancel", "danger", "cancel-btn"),
      run.status === "failed" || run.status === "cancelled" ? act("Retry run", "retry", "", "retry-btn") : null,
      el("span", { class: "error", id: "action-error" })),
    el("dl", { class: "kv" },
      kv("Job", run.job), kv("Queue", run.queue), kv("Attempt", run.attempt + " of " + run.max_attempts),
      kv("Priority", run.priority), kv("Concurrency key", run.concurrency_key || "—"),
      kv("Idempotency key", run.idempotency_key || "—"), kv("Created", fmtTime(run.created_at)),
      kv("Updated", fmtTime(run.updated_at)), kv("Finished", fmtTime(run.finished_at) || "—")),
    el("h2", {}, "Timeline"),
    el("ol", { class: "timeline", id: "timeline" }, timelineOf(run).map((e) =>
      el("li", {}, el("span", { class: "muted" }, fmtTime(e.at)), el("b", {}, e.kind), el("span", {}, e.text)))),
    el("h2", {}, "Steps"),
    steps.length ? el("table", { id: "steps" }, el("thead", {}, el("tr", {}, ["Step", "Kind", "Attempt", "Completed", "Output"].map((h) => el("th", {}, h)))), el("tbody", {}, steps))
      : el("p", { class: "muted", id: "steps" }, "No steps recorded."),
    logs ? [el("h2", {}, "Logs"), el("table", { id: "logs" }, el("tbody", {}, logs.map((l) =>
      el("tr", {}, el("td", { class: "muted" }, fmtTime(l.at || l.time || l.timestamp)), el("td", {}, l.level || ""), el("td", { class: "mono" }, l.message || JSON.stringify(l))))))] : null,
    el("div", { class: "grid2" },
      el("div", {}, el("h2", {}, "Payload"), el("pre", { id: "payload" }, pretty(run.payload))),
      el("div", {}, el("h2", {}, run.error ? "Error" : "Result"),
        el("pre", { id: run.error ? "error" : "result", class: run.error ? "error" : "" },
          run.error ? (run.error.type ? run.error.type + ": " : "") + run.error.message + (run.error.stack_trace ? "\n\n" + run.error.stack_trace : "") : pretty(run.result)))));
  if (!final) schedule(() => route(), 2000);
}

async function queuesPage(app) {
  const data = await api("/api/queues?page_size=100");
  const stat = (n, label) => el("div", {}, el("b", {}, n), el("span", { class: "muted" }, label));
  show(app, el("h1", {}, "Queues"),
    data.queues.length === 0 ? el("p", { class: "muted" }, "No queues yet (a queue appears when configured or first used).") :
      el("div", { class: "cards", id: "queues" }, data.queues.map((q) => el("div", { class: "card", "data-queue": q.name },
        el("h3", {}, q.name, " ", q.paused ? el("span", { class: "badge waiting" }, "paused") : null),
        el("div", { class: "stats" }, stat(q.stats.queued, "queued"), stat(q.stats.running, "running"),
          stat(q.stats.waiting, "waiting"), stat(q.stats.delayed, "delayed"), stat(q.stats.completed, "completed"),
          stat(q.stats.failed, "failed"), stat(q.stats.cancelled, "cancelled"),
          stat(q.stats.oldest_queued_age_ms === null ? "—" : Math.round(q.stats.oldest_queued_age_ms / 1000) + "s", "oldest")),
        el("p", { class: "muted" }, "concurrency " + (q.concurrency_limit ?? "∞") + (q.rate_limit ? ", rate " + q.rate_limit.limit + "/" + q.rate_limit.period_ms + "ms" : ""))))),
    el("p", { class: "muted" }, "Live: refreshed every 2 seconds."));
  schedule(() => route(), 2000);
}

async function eventsPage(app, params) {
  const q = new URLSearchParams({ page_size: "100" });
  if (params.get("name")) q.set("name", params.get("name"));
  const data = await api("/api/events?" + q);
  const form = el("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const name = new FormData(form).get("name");
    location.hash = "#/events" + (name ? "?name=" + encodeURIComponent(name) : "");
  } }, el("input", { name: "name", placeholder: "event name", value: params.get("name") || "" }), el("button", { type: "submit" }, "Filter"));
  show(app, el("h1", {}, "Events"), form,
    data.events.length === 0 ? el("p", { class: "muted" }, "No events.") :
      el("table", { id: "events" }, el("thead", {}, el("tr", {}, ["Published", "Name", "Correlation key", "Id", "Payload"].map((h) => el("th", {}, h)))),
        el("tbody", {}, data.events.map((e) => el("tr", {}, el("td", {}, fmtTime(e.published_at)), el("td", {}, e.name),
          el("td", {}, e.correlation_key || "—"), el("td", { class: "mono" }, e.id), el("td", {}, el("code", {}, JSON.stringify(e.payload))))))));
}

// ---- router ---------------------------------------------------------------------------
function schedule(fn, ms) {
  clearTimeout(refreshTimer);
  const seq = renderSeq;
  refreshTimer = setTimeout(() => { if (seq === renderSeq && !document.getElementById("key-dialog").open) fn(); }, ms);
}

async function route() {
  clearTimeout(refreshTimer);
  const seq = ++renderSeq;
  const app = document.getElementById("app");
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, qs] = hash.split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  try {
    const session = await api("/api/session");
    document.getElementById("session").textContent = "namespace " + session.namespace;
    if (seq !== renderSeq) return;
    if (parts[0] === "runs" && parts[1]) await runPage(app, decodeURIComponent(parts[1]));
    else if (parts[0] === "queues") await queuesPage(app);
    else if (parts[0] === "events") await eventsPage(app, params);
    else await runsPage(app, params);
  } catch (e) {
    if (seq === renderSeq) showError(app, e);
  }
}

window.addEventListener("hashchange", route);
route();
