//! Executes one case: starts the adapter, performs the actions in order, and checks outcomes
//! through `GetRun` and the side-effect ledger.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use stackshift::proto as pb;
use stackshift::{ClientOptions, StackShift};

mod checks;
mod client;
mod extra;

use crate::adapter::{Adapter, AdapterSpec};
use crate::case::{self, Action, Case};
use crate::ledger;
use crate::server::Server;
use checks::{check_ledger, check_run, status_name, summarize};

/// Deadline of one adapter command.
const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything one case execution needs.
pub struct CaseRun<'a> {
    pub server: &'a Server,
    pub spec: &'a AdapterSpec,
    pub case: &'a Case,
    /// Scratch directory of this case (ledger, adapter log).
    pub dir: PathBuf,
    /// The case's own queue (no other case uses it).
    pub queue: String,
    pub ledger: PathBuf,
    runs: HashMap<String, Vec<String>>,
    tasks: HashMap<String, pb::Task>,
    /// Client answers saved with `save`.
    saved: HashMap<String, Value>,
    adapter: Option<Adapter>,
    client: StackShift,
}

impl<'a> CaseRun<'a> {
    /// Prepares a case run (nothing is started yet).
    pub fn new(
        server: &'a Server,
        spec: &'a AdapterSpec,
        case: &'a Case,
        dir: PathBuf,
        queue: String,
    ) -> anyhow::Result<Self> {
        let client = StackShift::new(
            ClientOptions::new(server.endpoint.clone()).api_key(server.api_key.clone()),
        )?;
        let ledger = dir.join("ledger.jsonl");
        std::fs::write(&ledger, b"")?;
        Ok(Self {
            server,
            spec,
            case,
            dir,
            queue,
            ledger,
            runs: HashMap::new(),
            tasks: HashMap::new(),
            saved: HashMap::new(),
            adapter: None,
            client,
        })
    }

    /// Runs every action; the adapter is stopped afterwards whatever happened.
    pub async fn execute(&mut self) -> anyhow::Result<()> {
        let result = self.execute_actions().await;
        if let Some(adapter) = self.adapter.take() {
            let stopped = adapter.shutdown(Duration::from_secs(20)).await;
            if result.is_ok() {
                stopped.context("stopping the adapter at the end of the case")?;
            }
        }
        result
    }

    /// The adapter's log, for failure reports.
    pub fn adapter_log(&self) -> PathBuf {
        self.dir.join("adapter.log")
    }

    async fn execute_actions(&mut self) -> anyhow::Result<()> {
        if self.case.worker.autostart.unwrap_or(true) {
            self.start_adapter().await?;
        }
        for (index, action) in self.case.actions.iter().enumerate() {
            self.action(action)
                .await
                .with_context(|| format!("action #{} ({})", index + 1, describe(action)))?;
        }
        Ok(())
    }

    async fn start_adapter(&mut self) -> anyhow::Result<()> {
        ensure!(self.adapter.is_none(), "the adapter is already running");
        let grace = self
            .case
            .worker
            .shutdown_grace
            .as_deref()
            .map(case::duration)
            .transpose()?
            .unwrap_or(Duration::from_secs(5));
        let env = vec![
            (
                "STACKSHIFT_ENDPOINT".to_owned(),
                self.server.endpoint.clone(),
            ),
            ("STACKSHIFT_API_KEY".to_owned(), self.server.api_key.clone()),
            (
                "CONFORMANCE_LEDGER".to_owned(),
                self.ledger.display().to_string(),
            ),
            ("CONFORMANCE_QUEUE".to_owned(), self.queue.clone()),
            (
                "CONFORMANCE_CONCURRENCY".to_owned(),
                self.case.worker.concurrency.unwrap_or(4).to_string(),
            ),
            (
                "CONFORMANCE_SHUTDOWN_GRACE_MS".to_owned(),
                grace.as_millis().to_string(),
            ),
        ];
        self.adapter = Some(Adapter::spawn(self.spec, &env, self.adapter_log()).await?);
        Ok(())
    }

    fn queue_name(&self, queue: Option<&str>) -> String {
        match queue {
            None => self.queue.clone(),
            Some(q) => format!("{}-{q}", self.queue),
        }
    }

    fn run_ids(&self, name: &str) -> anyhow::Result<Vec<String>> {
        self.runs
            .get(name)
            .cloned()
            .with_context(|| format!("no run named {name:?} (name runs with `as`)"))
    }

    fn run_id(&self, name: &str) -> anyhow::Result<String> {
        let ids = self.run_ids(name)?;
        ensure!(
            ids.len() == 1,
            "{name:?} names {} runs; this action needs exactly one",
            ids.len()
        );
        Ok(ids[0].clone())
    }

    /// Replaces `$name` strings by run ids, `$queue` by the case queue, `$saved.path` by a
    /// value from a saved answer and `$in:DURATION` by the RFC 3339 time that far from now,
    /// recursively.
    fn substitute(&self, value: &Value) -> Value {
        match value {
            Value::String(s) if s.starts_with("$in:") => match case::duration(&s[4..]) {
                Ok(d) => Value::String(
                    (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ),
                Err(_) => value.clone(),
            },
            Value::String(s)
                if s.starts_with('$')
                    && s[1..]
                        .split_once('.')
                        .is_some_and(|(name, _)| self.saved.contains_key(name)) =>
            {
                let (name, path) = s[1..].split_once('.').unwrap_or_default();
                checks::pick(&self.saved[name], path).unwrap_or(Value::Null)
            }
            Value::String(s)
                if s.starts_with('$')
                    && self.runs.get(&s[1..]).is_some_and(|ids| ids.len() == 1) =>
            {
                Value::String(self.runs[&s[1..]][0].clone())
            }
            Value::String(s) if s.contains("$queue") => {
                Value::String(s.replace("$queue", &self.queue))
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.substitute(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    async fn get_run(&self, run_id: &str, wait: Option<Duration>) -> anyhow::Result<pb::Run> {
        let request = pb::GetRunRequest {
            run_id: run_id.to_owned(),
            wait: wait.map(proto_duration),
        };
        let run = self
            .client
            .jobs_client()
            .get_run(request)
            .await
            .map_err(status_error)?
            .into_inner()
            .run;
        run.context("GetRun returned no run")
    }

    async fn action(&mut self, action: &Action) -> anyhow::Result<()> {
        match action {
            Action::Start(a) => self.start(a).await?,
            Action::Client(a) => self.client_action(a).await?,
            Action::Await(a) => {
                let timeout = a
                    .timeout
                    .as_deref()
                    .map(case::duration)
                    .transpose()?
                    .unwrap_or(Duration::from_secs(20));
                for id in self.run_ids(&a.run)? {
                    let until = tokio::time::Instant::now() + timeout;
                    loop {
                        let run = self.get_run(&id, Some(Duration::from_millis(500))).await?;
                        let status = status_name(run.status);
                        if status == a.status {
                            break;
                        }
                        if tokio::time::Instant::now() >= until {
                            bail!(
                                "run {id} ({}) is still {status} after {timeout:?}; expected {}: {}",
                                a.run,
                                a.status,
                                summarize(&run)
                            );
                        }
                        if pb::RunStatus::try_from(run.status).is_ok_and(is_final_status) {
                            bail!(
                                "run {id} ({}) ended {status}, expected {}: {}",
                                a.run,
                                a.status,
                                summarize(&run)
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            Action::ExpectRun(e) => {
                for id in self.run_ids(&e.run)? {
                    let run = self.get_run(&id, None).await?;
                    check_run(e, &run, |v| self.substitute(v))
                        .with_context(|| format!("run {} = {}", e.run, summarize(&run)))?;
                }
            }
            Action::ExpectLedger(e) => {
                let run_id = self.run_id(&e.run)?;
                let entries = ledger::read(&self.ledger)?;
                check_ledger(e, &run_id, &entries)?;
            }
            Action::WaitLedger(w) => {
                let run_id = self.run_id(&w.run)?;
                let phase = w.phase.clone().unwrap_or_else(|| "start".to_owned());
                let timeout = w
                    .timeout
                    .as_deref()
                    .map(case::duration)
                    .transpose()?
                    .unwrap_or(Duration::from_secs(20));
                let until = tokio::time::Instant::now() + timeout;
                loop {
                    let found = ledger::read(&self.ledger)?.iter().any(|e| {
                        e.run_id == run_id
                            && e.step == w.step
                            && e.phase == phase
                            && w.attempt.is_none_or(|a| e.attempt == a)
                    });
                    if found {
                        break;
                    }
                    ensure!(
                        tokio::time::Instant::now() < until,
                        "the ledger shows no {phase} of step {} within {timeout:?}",
                        w.step
                    );
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            Action::Adapter(a) => match a {
                case::AdapterAction::Start => self.start_adapter().await?,
                case::AdapterAction::Freeze => {
                    self.adapter
                        .as_ref()
                        .context("no adapter running")?
                        .signal("STOP")
                        .await?
                }
                case::AdapterAction::Thaw => {
                    self.adapter
                        .as_ref()
                        .context("no adapter running")?
                        .signal("CONT")
                        .await?
                }
                case::AdapterAction::Kill => {
                    self.adapter
                        .take()
                        .context("no adapter running")?
                        .kill()
                        .await
                }
                case::AdapterAction::Shutdown => {
                    self.adapter
                        .take()
                        .context("no adapter running")?
                        .shutdown(Duration::from_secs(30))
                        .await?
                }
            },
            Action::Sleep(d) => tokio::time::sleep(case::duration(d)?).await,
            Action::Cancel(c) => {
                for id in self.run_ids(&c.run)? {
                    let request = pb::CancelRunRequest {
                        run_id: id,
                        reason: c.reason.clone().unwrap_or_default(),
                    };
                    let result = self.client.jobs_client().cancel_run(request).await;
                    expect_status(result.map(|_| ()), c.expect_error.as_deref())?;
                }
            }
            Action::Retry(r) => {
                for id in self.run_ids(&r.run)? {
                    let result = self
                        .client
                        .jobs_client()
                        .retry_run(pb::RetryRunRequest { run_id: id })
                        .await;
                    expect_status(result.map(|_| ()), r.expect_error.as_deref())?;
                }
            }
            Action::RawPoll(p) => {
                let lease = p
                    .lease_timeout
                    .as_deref()
                    .map(case::duration)
                    .transpose()?
                    .unwrap_or(Duration::from_secs(30));
                let request = pb::PollTaskRequest {
                    worker_id: "conformance-raw-worker".into(),
                    queues: vec![self.queue_name(Some(p.queue.as_deref().unwrap_or("raw")))],
                    jobs: vec![pb::JobSpec {
                        name: p.job.clone().unwrap_or_else(|| "conf.script".into()),
                        lease_timeout: Some(proto_duration(lease)),
                    }],
                    max_tasks: 1,
                    wait: Some(proto_duration(Duration::from_secs(5))),
                };
                let tasks = self
                    .client
                    .worker_client()
                    .poll_task(request)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .tasks;
                ensure!(tasks.len() == 1, "expected one task, got {}", tasks.len());
                self.tasks
                    .insert(p.name.clone(), tasks.into_iter().next().context("task")?);
            }
            Action::RawCall(c) => self.raw_call(c).await?,
            Action::Publish(p) => self.publish(p).await?,
            Action::ExpectIncreasing(refs) => self.expect_increasing(refs).await?,
            Action::ExpectElapsed(e) => self.expect_elapsed(e).await?,
            Action::ExpectOrder(o) => self.expect_order(o)?,
            Action::Bind(b) => self.bind(b)?,
            Action::ExpectMaxConcurrency(m) => {
                let mut ids = BTreeSet::new();
                for name in m.runs.names() {
                    ids.extend(self.run_ids(&name)?);
                }
                let entries = ledger::read(&self.ledger)?;
                let overlap = ledger::max_overlap(&entries, &ids, &m.step)?;
                ensure!(
                    overlap <= m.max,
                    "{overlap} executions of {} overlapped; expected at most {}",
                    m.step,
                    m.max
                );
                if let Some(min) = m.min {
                    ensure!(
                        overlap >= min,
                        "only {overlap} executions of {} overlapped; expected at least {min}",
                        m.step
                    );
                }
            }
        }
        Ok(())
    }

    async fn raw_call(&mut self, c: &case::RawCall) -> anyhow::Result<()> {
        let task = self
            .tasks
            .get(&c.task)
            .with_context(|| format!("no task named {:?}", c.task))?;
        let token = match c.token.as_deref().unwrap_or("valid") {
            "valid" => task.lease_token.clone(),
            "tampered" => tamper(&task.lease_token),
            other => bail!("token must be `valid` or `tampered`, not {other:?}"),
        };
        let run_id = task.run_id.clone();
        let mut client = self.client.worker_client();
        let result = match c.rpc.as_str() {
            "heartbeat" => client
                .heartbeat(pb::HeartbeatRequest {
                    run_id,
                    lease_token: token,
                })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    Some(r.cancel_requested)
                }),
            "complete_step" => client
                .complete_step(pb::CompleteStepRequest {
                    run_id,
                    lease_token: token,
                    step_id: c.step_id.clone().unwrap_or_else(|| "raw-step".into()),
                    outcome: Some(pb::complete_step_request::Outcome::Output(
                        serde_json::to_vec(c.output.as_ref().unwrap_or(&Value::Null))?,
                    )),
                    started_at: None,
                })
                .await
                .map(|_| None),
            "complete_run" => client
                .complete_run(pb::CompleteRunRequest {
                    run_id,
                    lease_token: token,
                    result: serde_json::to_vec(c.output.as_ref().unwrap_or(&Value::Null))?,
                })
                .await
                .map(|_| None),
            "fail_run" => client
                .fail_run(pb::FailRunRequest {
                    run_id,
                    lease_token: token,
                    failure: Some(pb::Failure {
                        message: "raw failure".into(),
                        ..Default::default()
                    }),
                })
                .await
                .map(|_| None),
            other => bail!("unknown rpc {other:?}"),
        };
        if let (Ok(Some(cancel)), Some(want)) = (&result, c.cancel_requested) {
            ensure!(
                *cancel == want,
                "heartbeat cancel_requested = {cancel}, expected {want}"
            );
        }
        expect_status(result.map(|_| ()), c.expect_error.as_deref())
    }
}

/// A token of the same shape that is not the attempt's.
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == '0' { '1' } else { '0' };
    } else {
        chars.push('0');
    }
    chars.into_iter().collect()
}

fn expect_status(result: Result<(), tonic::Status>, expected: Option<&str>) -> anyhow::Result<()> {
    match (result, expected) {
        (Ok(()), None) => Ok(()),
        (Ok(()), Some(code)) => bail!("expected {code}, but the call succeeded"),
        (Err(status), None) => Err(status_error(status)),
        (Err(status), Some(code)) => {
            let got = code_name(status.code());
            ensure!(
                got == code,
                "expected {code}, got {got}: {}",
                status.message()
            );
            Ok(())
        }
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(status.code()), status.message())
}

/// The canonical gRPC status name (`NOT_FOUND`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn is_final_status(s: pb::RunStatus) -> bool {
    matches!(
        s,
        pb::RunStatus::Completed | pb::RunStatus::Failed | pb::RunStatus::Cancelled
    )
}

fn describe(action: &Action) -> String {
    match action {
        Action::Start(a) => format!("start {} as {}", a.job, a.name),
        Action::Client(a) => format!("client {}", a.op),
        Action::Await(a) => format!("await {} {}", a.run, a.status),
        Action::ExpectRun(e) => format!("expect_run {}", e.run),
        Action::ExpectLedger(e) => format!("expect_ledger {}", e.run),
        Action::WaitLedger(w) => format!("wait_ledger {} {}", w.run, w.step),
        Action::Adapter(a) => format!("adapter {a:?}"),
        Action::Sleep(d) => format!("sleep {d}"),
        Action::Cancel(c) => format!("cancel {}", c.run),
        Action::Retry(r) => format!("retry {}", r.run),
        Action::RawPoll(p) => format!("raw_poll as {}", p.name),
        Action::RawCall(c) => format!("raw_call {} {}", c.rpc, c.task),
        Action::ExpectMaxConcurrency(m) => {
            format!("expect_max_concurrency {:?} {}", m.runs.names(), m.step)
        }
        Action::Publish(p) => format!("publish {}", p.name),
        Action::ExpectIncreasing(_) => "expect_increasing".to_owned(),
        Action::ExpectElapsed(e) => format!("expect_elapsed {} {} -> {}", e.run, e.from, e.to),
        Action::ExpectOrder(o) => format!("expect_order {}", o.step),
        Action::Bind(b) => format!("bind {} to {}", b.name, b.id),
    }
}
