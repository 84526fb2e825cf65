//! The case file format: `conformance-tests/cases/<area>/<behaviour>.yaml`.
//!
//! A case names the adapter settings it needs and lists the runner's actions in order. Every
//! field is documented in `docs/conformance.md`; unknown fields are errors, so a typo in a
//! case fails loudly instead of silently checking nothing.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;

/// One conformance case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case checks, in a sentence or two.
    pub description: String,
    /// Adapter (worker) settings.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Limit for the whole case (default `60s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// The runner's actions, in order.
    pub actions: Vec<Action>,
}

/// How the adapter's worker runs for a case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Concurrency slots (default 4).
    pub concurrency: Option<u32>,
    /// Shutdown grace period (default `5s`).
    pub shutdown_grace: Option<String>,
    /// Start the adapter before the first action (default true).
    pub autostart: Option<bool>,
}

/// One step of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Start runs through the raw gRPC API (the runner, not the SDK).
    Start(StartAction),
    /// Perform a client operation through the SDK under test (via its adapter).
    Client(ClientAction),
    /// Wait until runs reach a status.
    Await(AwaitAction),
    /// Check a run through `GetRun`.
    ExpectRun(Box<ExpectRun>),
    /// Check the side-effect ledger of a run.
    ExpectLedger(ExpectLedger),
    /// Wait until the ledger shows a step execution.
    WaitLedger(WaitLedger),
    /// Control the adapter process.
    Adapter(AdapterAction),
    /// Sleep for a duration (`500ms`, `3s`).
    Sleep(String),
    /// Cancel runs through the raw API.
    Cancel(CancelAction),
    /// `RetryRun` through the raw API.
    Retry(RunRef),
    /// Claim a task through the raw worker API (the runner acts as a worker).
    RawPoll(RawPoll),
    /// Call a worker RPC for a raw-claimed task.
    RawCall(RawCall),
    /// Check how many executions of a step overlapped in time.
    ExpectMaxConcurrency(MaxConcurrency),
    /// `PublishEvent` through the raw API.
    Publish(PublishAction),
    /// Check that values picked from saved answers and run results strictly increase.
    ExpectIncreasing(Vec<ValueRef>),
    /// Check the time between two moments of a run (creation, ledger lines).
    ExpectElapsed(ExpectElapsed),
    /// Check the order in which runs first started a step (ledger).
    ExpectOrder(ExpectOrder),
    /// Name a run (or a group) whose id comes from a saved answer (`$saved.path`).
    Bind(BindAction),
}

/// `start`: create runs with `StartRun`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartAction {
    /// Name for the run (or the group of `count` runs).
    #[serde(rename = "as")]
    pub name: String,
    /// Job name (default `conf.script`).
    #[serde(default = "default_job")]
    pub job: String,
    /// The payload (default `null`).
    #[serde(default)]
    pub payload: Value,
    /// How many runs (default 1).
    pub count: Option<u32>,
    /// Queue: omitted = the case's queue; `raw` = a queue no adapter serves.
    pub queue: Option<String>,
    pub idempotency_key: Option<String>,
    pub max_attempts: Option<i32>,
    pub initial_interval: Option<String>,
    pub backoff_coefficient: Option<f64>,
    pub lease_timeout: Option<String>,
    /// Delay before the first delivery (`1s`).
    pub delay: Option<String>,
    /// `run_at` = now + this duration (`1s`).
    pub run_at_in: Option<String>,
    pub priority: Option<i32>,
    pub concurrency_key: Option<String>,
}

fn default_job() -> String {
    "conf.script".to_owned()
}

/// `client`: one SDK client operation through the adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAction {
    /// `start`, `get_run`, `wait_run`, `cancel_run`, `retry_run`, `list_runs`,
    /// `publish_event`, `state_get`, `state_set`, `state_incr`, `state_delete`, `lock`,
    /// `release_lock`, `configure_queue`, `pause_queue`, `resume_queue`, `get_queue`.
    pub op: String,
    /// Arguments; string values `$name` are replaced by run ids, `$queue` by the case queue,
    /// `$saved.path` by a saved value, `$in:DURATION` by a time that far from now.
    #[serde(default)]
    pub args: serde_json::Map<String, Value>,
    /// For `start`: the name under which the returned run id is stored.
    #[serde(rename = "as")]
    pub name: Option<String>,
    /// `wrong` (an unknown key) or `other` (a valid key of another namespace).
    pub api_key: Option<String>,
    /// Every field given must equal the same field of the answer (after `$name` substitution);
    /// a key with dots is a path (`outputs.0.status`).
    pub expect: Option<serde_json::Map<String, Value>>,
    /// The gRPC status name the SDK's typed error must carry.
    pub expect_error: Option<String>,
    /// With `expect_error`: the conflict reason the typed error must carry.
    pub expect_reason: Option<String>,
    /// The whole answer must equal this (after substitution).
    pub expect_ok: Option<Value>,
    /// The answer's `timeline` must contain these entries in this order (a subsequence).
    pub expect_timeline: Option<Vec<TimelineMatch>>,
    /// The answer's `logs` must be exactly these lines (only given fields compared).
    pub expect_logs: Option<Vec<LogMatch>>,
    /// Name under which the answer is saved (`$name.path` in later arguments).
    pub save: Option<String>,
    /// Field (dot-separated path) -> the length the list (or string) there must have.
    pub expect_len: Option<BTreeMap<String, usize>>,
    /// Field (dot-separated path) -> the least length the list there must have.
    pub expect_min_len: Option<BTreeMap<String, usize>>,
    /// Field (dot-separated path) -> a value the answer's field must differ from.
    pub expect_not: Option<serde_json::Map<String, Value>>,
    /// Field (dot-separated path) -> values the list there must contain.
    pub expect_includes: Option<BTreeMap<String, Vec<Value>>>,
    /// Field (dot-separated path) -> values the list there must not contain.
    pub expect_excludes: Option<BTreeMap<String, Vec<Value>>>,
    /// Repeat the call (every 100 ms) until every check passes, for at most this long
    /// (`5s`); the last answer's failure is reported.
    pub eventually: Option<String>,
}

/// `bind`: names a run, or a group of runs, by ids taken from a saved answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindAction {
    /// The name for the run(s), usable as `run:` and `$name` afterwards.
    #[serde(rename = "as")]
    pub name: String,
    /// `$saved.path` naming a run id (string) or a list of run ids (a group).
    pub id: String,
}

/// A timeline entry to find: a kind name (`ATTEMPT_STARTED`) or `{kind, attempt, step_id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimelineMatch {
    Kind(String),
    Entry {
        kind: String,
        attempt: Option<i32>,
        step_id: Option<String>,
    },
}

/// A log line's expected fields; omitted fields are not compared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMatch {
    pub level: Option<String>,
    pub message: Option<String>,
    pub fields: Option<Value>,
    pub step_id: Option<String>,
    pub attempt: Option<i32>,
}

/// `publish`: a raw `PublishEvent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishAction {
    pub name: String,
    #[serde(default)]
    pub payload: Value,
    pub key: Option<String>,
    pub event_id: Option<String>,
    /// Expected `resumed_run_count`.
    pub matched: Option<i64>,
    /// Expected `duplicate`.
    pub duplicate: Option<bool>,
    /// Expected number of runs started by event triggers (`started_run_ids`).
    pub started: Option<usize>,
    /// Name under which `{event_id, duplicate, matched, started_run_ids}` is saved.
    pub save: Option<String>,
}

/// A value picked from a saved client answer (`saved`) or a run's result (`run`), by a
/// dot-separated `path` of keys and indices (`outputs.0.token`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRef {
    pub saved: Option<String>,
    pub run: Option<String>,
    #[serde(default)]
    pub path: String,
}

/// `expect_elapsed`: milliseconds from `from` to `to` within bounds. A moment is `created`
/// (the run's creation, server clock) or `STEP:start` / `STEP:end` (the first such ledger
/// line of the run).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectElapsed {
    pub run: String,
    pub from: String,
    pub to: String,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// `expect_order`: the runs first started `step` in exactly this order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectOrder {
    pub step: String,
    pub runs: Vec<String>,
}

/// `await`: poll `GetRun` until the status matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitAction {
    pub run: String,
    pub status: String,
    /// Default `20s`.
    pub timeout: Option<String>,
}

/// `expect_run`: fields of `GetRun`'s answer. Only given fields are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectRun {
    pub run: String,
    pub status: Option<String>,
    pub attempt: Option<i32>,
    pub max_attempts: Option<i32>,
    /// The parent run (`$name`), or `""` for a run no parent started.
    pub parent_run_id: Option<String>,
    /// Exact JSON equality.
    pub result: Option<Value>,
    /// Parts of the result: dot-separated path (`outputs.0.granted`) -> exact JSON value.
    pub result_at: Option<BTreeMap<String, Value>>,
    pub payload: Option<Value>,
    pub failure: Option<ExpectFailure>,
    /// Step ids in recorded order (exact).
    pub step_ids: Option<Vec<String>>,
    /// Details of individual steps, by id.
    pub steps: Option<BTreeMap<String, ExpectStep>>,
    /// Number of attempts listed.
    pub attempts_count: Option<usize>,
    /// Per-attempt checks, in order (a prefix is fine).
    pub attempts: Option<Vec<ExpectAttempt>>,
    /// Minimum gap in ms between the end of attempt N and the start of attempt N+1.
    pub min_retry_gap_ms: Option<i64>,
    /// Entries the timeline must contain in this order (a subsequence).
    pub timeline: Option<Vec<TimelineMatch>>,
    /// Kinds the timeline must not contain.
    pub timeline_excludes: Option<Vec<String>>,
    /// The run's log lines, exactly (only given fields compared).
    pub logs: Option<Vec<LogMatch>>,
}

/// A failure's expected fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFailure {
    pub message: Option<String>,
    pub message_contains: Option<String>,
    pub non_retryable: Option<bool>,
    /// True: the failure carries a non-empty error type name.
    pub has_type: Option<bool>,
    /// Exact error type name (only for SDK-independent types such as `ResultRejected`).
    #[serde(rename = "type")]
    pub error_type: Option<String>,
    pub details: Option<Value>,
}

/// A step's expected fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    pub attempt: Option<i32>,
    pub output: Option<Value>,
    pub failure: Option<ExpectFailure>,
}

/// An attempt's expected fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectAttempt {
    pub failure: Option<ExpectFailure>,
    /// True: the attempt has no failure.
    pub succeeded: Option<bool>,
}

/// `expect_ledger`: which attempts executed each step body (sorted lists).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectLedger {
    pub run: String,
    /// Step id -> attempts that started the body (one entry per execution).
    #[serde(default)]
    pub started: BTreeMap<String, Vec<i32>>,
    /// Step id -> attempts whose body ran to its end.
    #[serde(default)]
    pub ended: BTreeMap<String, Vec<i32>>,
    /// True: no step other than those in `started` executed.
    #[serde(default)]
    pub exhaustive: bool,
}

/// `wait_ledger`: until a step execution shows up in the ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitLedger {
    pub run: String,
    pub step: String,
    pub attempt: Option<i32>,
    /// `start` (default) or `end`.
    pub phase: Option<String>,
    pub timeout: Option<String>,
}

/// `adapter`: process control.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterAction {
    /// Start the adapter (after `kill` or `shutdown`, or with `autostart: false`).
    Start,
    /// Freeze it (SIGSTOP): no heartbeats, no writes.
    Freeze,
    /// Resume a frozen adapter (SIGCONT).
    Thaw,
    /// SIGKILL it.
    Kill,
    /// Graceful worker shutdown (the SDK's own), then the process exits.
    Shutdown,
}

/// `cancel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelAction {
    pub run: String,
    pub reason: Option<String>,
    pub expect_error: Option<String>,
}

/// A reference to a named run, with an optional expected error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRef {
    pub run: String,
    pub expect_error: Option<String>,
}

/// `raw_poll`: the runner claims a task as a worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    /// Name for the claimed task.
    #[serde(rename = "as")]
    pub name: String,
    /// Queue (default `raw`, see [`StartAction::queue`]).
    pub queue: Option<String>,
    /// Job (default `conf.script`).
    pub job: Option<String>,
    /// Lease timeout declared for the job (default `30s`).
    pub lease_timeout: Option<String>,
}

/// `raw_call`: a worker RPC for a raw-claimed task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    pub task: String,
    /// `heartbeat`, `complete_step`, `complete_run` or `fail_run`.
    pub rpc: String,
    /// `valid` (default) or `tampered`.
    pub token: Option<String>,
    pub step_id: Option<String>,
    pub output: Option<Value>,
    /// Expected gRPC status name; omitted = the call must succeed.
    pub expect_error: Option<String>,
    /// For `heartbeat`: the expected `cancel_requested`.
    pub cancel_requested: Option<bool>,
}

/// `expect_max_concurrency`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxConcurrency {
    /// A run (group) name or a list of them.
    pub runs: RunNames,
    pub step: String,
    pub max: usize,
    /// At least this much overlap must have happened (shows the slots are used).
    pub min: Option<usize>,
}

/// One name or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RunNames {
    One(String),
    Many(Vec<String>),
}

impl RunNames {
    /// The names as a list.
    pub fn names(&self) -> Vec<String> {
        match self {
            RunNames::One(n) => vec![n.clone()],
            RunNames::Many(v) => v.clone(),
        }
    }
}

/// A case file with its name (`area/behaviour`).
#[derive(Debug, Clone)]
pub struct NamedCase {
    pub name: String,
    pub case: Case,
}

/// Loads every `*.yaml` under `dir` whose name matches `pattern` (a glob on `area/behaviour`).
pub fn load_cases(dir: &Path, pattern: &str) -> anyhow::Result<Vec<NamedCase>> {
    let matcher =
        glob::Pattern::new(pattern).with_context(|| format!("bad --cases pattern {pattern:?}"))?;
    let mut out = Vec::new();
    let files = glob::glob(&format!("{}/**/*.yaml", dir.display())).context("listing cases")?;
    for file in files {
        let path = file?;
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let name = rel.with_extension("").to_string_lossy().replace('\\', "/");
        if !matcher.matches(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        // YAML -> JSON value -> Case: serde_json's externally tagged enums read `- start: {...}`
        // maps (serde_yaml_ng would want `!start` tags instead).
        let value: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing case {name}"))?;
        let case: Case =
            serde_json::from_value(value).with_context(|| format!("reading case {name}"))?;
        if case.actions.is_empty() {
            anyhow::bail!("case {name} has no actions");
        }
        out.push(NamedCase { name, case });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A known-failing entry: allowed only with a reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFailing {
    pub case: String,
    pub reason: String,
}

/// `conformance-tests/known-failing/<sdk>.yaml`: `known_failing: [{case, reason}]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFailingFile {
    #[serde(default)]
    pub known_failing: Vec<KnownFailing>,
}

/// Loads the known-failing list of an SDK (empty when the file does not exist).
pub fn load_known_failing(dir: &Path, sdk: &str) -> anyhow::Result<Vec<KnownFailing>> {
    let path = dir.join(format!("{sdk}.yaml"));
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path)?;
    let file: KnownFailingFile =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for entry in &file.known_failing {
        if entry.reason.trim().is_empty() {
            anyhow::bail!(
                "{}: known-failing entry {} has no reason",
                path.display(),
                entry.case
            );
        }
    }
    Ok(file.known_failing)
}

/// Parses `500ms`, `3s`, `1m` with the SDK's grammar.
pub fn duration(s: &str) -> anyhow::Result<std::time::Duration> {
    stackshift::parse_duration(s).map_err(|e| anyhow::anyhow!("{e}"))
}
